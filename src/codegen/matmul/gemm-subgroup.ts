/**
 * The `gemm-subgroup` matmul variant: no workgroup memory; A values shared across a subgroup with
 * `subgroupBroadcast`, a register-blocked output tile per lane (fast on lavapipe).
 * @module
 */
import type { KernelSource } from '../kernel.js';
import type { SubgroupGemmVariant } from './spec.js';
import { Ctx, accDecls, accOf, assemble, bindingsOf, checkPositiveInt, chunkMac, columnLines, fragmentConsts, fragments, gridOf, header, matmulFeatures, sizeLets, storeFn, tileIndexLines } from './common.js';

export function genSubgroupGemm(c: Ctx, v: SubgroupGemmVariant): KernelSource {
  const SG = v.subgroupSize ?? 8;
  const R = v.rowsPerLane ?? 1;
  const S = v.subgroupsPerWorkgroup ?? 8;
  let C = v.colsPerLane ?? 4;
  for (const [n, x] of [['subgroupSize', SG], ['rowsPerLane', R], ['colsPerLane', C], ['subgroupsPerWorkgroup', S]] as const) checkPositiveInt(n, x);
  const f = fragments(c, C % 4 === 0);
  if (f.bQuads && C % 4 !== 0) C = 4 * Math.ceil(C / 4);
  const tileM = SG * R;
  const tileN = S * SG * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const rowVals: string[] = [];
  for (let r = 0; r < R; r++) for (let s = 0; s < SG; s++) rowVals.push(`subgroupBroadcast(a_${r}, ${s}u)`);
  const { decls, list } = bindingsOf(c, f.aVec4, f.bVec4);
  const body: string[] = [];
  body.push(
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(tileM),
    `  let sg = li / SUBGROUP_SIZE;`,
    `  let row0 = tile_m * TILE_M;`,
    `  // rows of this tile inside the matrix: the others skip their multiply-adds (one row costs what a GEMV's does)`,
    `  let rows_here = min(TILE_M, M - row0);`,
    `  // this lane's first output column; its columns are col0 .. col0 + COLS_PER_LANE - 1`,
    `  let col0 = (tile_n * SUBGROUPS + sg) * SUBGROUP_TILE_N + lane * COLS_PER_LANE;`,
    ...columnLines(f, C, '  '),
    `  // the A rows this lane loads (clamped: rows past M compute garbage that is never stored)`,
    ...Array.from({ length: R }, (_, r) => `  let a_row_${r} = min(row0 + ${r * SG}u + lane, M - 1u);`),
    `  // accumulators: <acc|up>_<row j>_<column> for output row row0 + j`,
    ...accDecls(c, f, R * SG, C, '  '),
  );
  if (f.kChunks > 0) {
    body.push(`  for (var kc = 0u; kc < K_CHUNKS * one; kc++) {`);
    if (f.bQuads) body.push(`    let k = kc * 4u;`);
    body.push(...Array.from({ length: R }, (_, r) => `    let a_${r} = a_chunk(a_base, a_row_${r}, kc, M); // loaded once, shared by broadcast`));
    body.push(...chunkMac(c, f, rowVals, C, false, '    ', 'rows_here'));
    body.push(`  }`);
  }
  if (f.kTail > 0) {
    body.push(`  { // the last ${f.kTail} k`);
    body.push(...Array.from({ length: R }, (_, r) => `    let a_${r} = a_tail(a_base, a_row_${r}, M);`));
    body.push(...chunkMac(c, f, rowVals, C, true, '    ', 'rows_here'));
    body.push(`  }`);
  }
  for (let j = 0; j < R * SG; j++)
    for (let cc = 0; cc < C; cc++)
      body.push(`  store_out(out_base, row0 + ${j}u, col0 + ${cc}u, M, ${accOf(c, f, 0, j, cc)}${gated ? `, ${accOf(c, f, 1, j, cc)}` : ''});`);
  body.push(`}`);
  const name = `gemm-subgroup-sg${SG}-r${R}-c${C}-s${S}`;
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: true,
      header: header(c, name, [
        `each lane loads ${R} A row(s) per k chunk once and shares them by subgroupBroadcast (subgroup size ${SG});`,
        `each lane accumulates a ${R * SG} x ${C} output tile; ${S} subgroups per workgroup side by side along N`,
      ]),
      consts: [
        `const SUBGROUP_SIZE: u32 = ${SG}u; // must equal the device's subgroup size`,
        `const SUBGROUPS: u32 = ${S}u;`,
        `const WORKGROUP_SIZE: u32 = ${S * SG}u;`,
        `const COLS_PER_LANE: u32 = ${C}u;`,
        `const TILE_M: u32 = ${tileM}u; // rows per workgroup`,
        `const SUBGROUP_TILE_N: u32 = ${SG * C}u; // columns per subgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        ...(gated ? [`const H: u32 = ${c.nOut}u; // offset of the up half in B's columns`, ...(f.bQuads ? [`const H_VEC4: u32 = ${c.nOut / 4}u;`] : [])] : []),
        ...fragmentConsts(c),
      ],
      decls,
      fns: [...f.fns, '', ...storeFn(c)],
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, tileM),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, true),
  };
}
