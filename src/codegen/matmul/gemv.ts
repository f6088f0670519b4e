/**
 * The `gemv` matmul variant for small M (decode): lane groups split K for a block of output columns and reduce
 * with `subgroupAdd` or in workgroup memory.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import type { GemvVariant } from './spec.js';
import { Ctx, accDecls, accOf, assemble, bindingsOf, checkPositiveInt, chunkMac, columnLines, fragmentConsts, fragments, gridOf, header, matmulFeatures, sizeLets, storeFn, tileIndexLines } from './common.js';

export function genGemv(c: Ctx, v: GemvVariant): KernelSource {
  const WG = v.workgroupSize ?? 64;
  const L = v.lanesPerColumn ?? 8;
  let C = v.colsPerGroup ?? 4;
  const R = v.rowsPerBlock ?? 1;
  const SG = v.subgroupSize ?? 8;
  for (const [n, x] of [['workgroupSize', WG], ['lanesPerColumn', L], ['colsPerGroup', C], ['rowsPerBlock', R]] as const) checkPositiveInt(n, x);
  if ((L & (L - 1)) !== 0 || WG % L !== 0) throw new InputError(`gemv: lanesPerColumn (${L}) must be a power of two dividing the workgroup size (${WG})`);
  const reduction = L === 1 ? 'none' : v.reduction ?? 'subgroup';
  if (reduction === 'subgroup' && L !== SG) throw new InputError(`gemv: subgroup reduction needs lanesPerColumn (${L}) = subgroupSize (${SG})`);
  const f = fragments(c, C % 4 === 0);
  if (f.bQuads && C % 4 !== 0) C = 4 * Math.ceil(C / 4);
  const groups = WG / L;
  const tileN = groups * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const nAcc = R * c.G * C;
  const rowVals = Array.from({ length: R }, (_, r) => `a_chunk(a_base, a_row_${r}, kc, M)`);
  const tailVals = Array.from({ length: R }, (_, r) => `a_tail(a_base, a_row_${r}, M)`);
  const { decls, list } = bindingsOf(c, f.aVec4, f.bVec4);
  const body: string[] = [];
  const builtins = [
    '@builtin(workgroup_id) wg: vec3<u32>',
    '@builtin(num_workgroups) nwg: vec3<u32>',
    '@builtin(local_invocation_index) li: u32',
  ];
  body.push(
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(${builtins.join(', ')}) {`,
    ...sizeLets(c),
    ...tileIndexLines(R),
    `  let group = li / LANES_PER_COLUMN;`,
    `  let lane = li % LANES_PER_COLUMN; // lanes of a group split K: lane takes chunks lane, lane + LANES_PER_COLUMN, …`,
    `  let row0 = tile_m * ROWS;`,
    `  let col0 = (tile_n * GROUPS + group) * COLS;`,
    ...columnLines(f, C, '  '),
    ...Array.from({ length: R }, (_, r) => `  let a_row_${r} = min(row0 + ${r}u, M - 1u);`),
    ...(R > 1 ? [`  let rows_here = min(ROWS, M - row0); // rows of this block inside the matrix: the others skip their multiply-adds`] : []),
    ...accDecls(c, f, R, C, '  '),
  );
  const fullIters = Math.floor(f.kChunks / L);
  const remChunks = f.kChunks % L;
  if (fullIters > 0) {
    body.push(`  for (var i = 0u; i < ${fullIters}u * one; i++) {`, `    let kc = i * LANES_PER_COLUMN + lane;`);
    if (f.bQuads) body.push(`    let k = kc * 4u;`);
    body.push(...chunkMac(c, f, rowVals, C, false, '    ', R > 1 ? 'rows_here' : undefined), `  }`);
  }
  if (remChunks > 0) {
    body.push(`  if (lane < ${remChunks}u) { // the last ${remChunks} chunk(s)`, `    let kc = ${fullIters}u * LANES_PER_COLUMN + lane;`);
    if (f.bQuads) body.push(`    let k = kc * 4u;`);
    body.push(...chunkMac(c, f, rowVals, C, false, '    ', R > 1 ? 'rows_here' : undefined), `  }`);
  }
  if (f.kTail > 0) {
    body.push(`  if (lane == ${f.kChunks % L}u) { // the last ${f.kTail} k (the lane whose turn the next chunk would be)`);
    body.push(...chunkMac(c, f, tailVals, C, true, '    ', R > 1 ? 'rows_here' : undefined), `  }`);
  }
  // reduction across the lanes of a group
  const accNames: string[] = [];
  for (let g = 0; g < c.G; g++) for (let j = 0; j < R; j++) for (let cc = 0; cc < C; cc++) accNames.push(accOf(c, f, g, j, cc));
  const finals = accNames.map((_, i) => `s${i}`);
  const workgroupVars: string[] = [];
  if (reduction === 'none') {
    accNames.forEach((a, i) => body.push(`  let s${i} = ${a};`));
  } else if (reduction === 'subgroup') {
    body.push(`  // sum over the group's lanes (one subgroup)`);
    accNames.forEach((a, i) => body.push(`  let s${i} = subgroupAdd(${a});`));
  } else {
    workgroupVars.push(`var<workgroup> partial: array<f32, ${WG * nAcc}>; // [accumulator][invocation]`);
    accNames.forEach((a, i) => body.push(`  partial[${i}u * WORKGROUP_SIZE + li] = ${a};`));
    body.push(`  workgroupBarrier();`);
    if (L <= 16) {
      // few lanes: one barrier, then the group's first lane adds the partial sums (barriers are costly on CPUs)
      body.push(`  // the group's first lane sums its ${L} lanes' partial sums from workgroup memory`);
      body.push(`  ${accNames.map((_, i) => `var s${i} = 0.0;`).join(' ')}`, `  if (lane == 0u) {`);
      accNames.forEach((_, i) =>
        body.push(`    s${i} = ${Array.from({ length: L }, (_, j) => `partial[${i}u * WORKGROUP_SIZE + li + ${j}u]`).join(' + ')};`),
      );
      body.push(`  }`);
    } else {
      body.push(`  // tree reduction over the group's lanes in workgroup memory`);
      for (let stride = L / 2; stride >= 1; stride /= 2) {
        body.push(`  if (lane < ${stride}u) {`);
        accNames.forEach((_, i) => body.push(`    partial[${i}u * WORKGROUP_SIZE + li] += partial[${i}u * WORKGROUP_SIZE + li + ${stride}u];`));
        body.push(`  }`, `  workgroupBarrier();`);
      }
      accNames.forEach((_, i) => body.push(`  let s${i} = partial[${i}u * WORKGROUP_SIZE + li];`));
    }
  }
  body.push(L > 1 ? `  if (lane == 0u) {` : `  {`);
  let i = 0;
  const perG = R * C;
  for (let j = 0; j < R; j++)
    for (let cc = 0; cc < C; cc++) {
      body.push(`    store_out(out_base, row0 + ${j}u, col0 + ${cc}u, M, ${finals[i]}${gated ? `, ${finals[i + perG]}` : ''});`);
      i++;
    }
  body.push(`  }`, `}`);
  const name = `gemv-l${L}-c${C}-r${R}-wg${WG}${reduction === 'none' ? '' : `-${reduction}`}`;
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: reduction === 'subgroup',
      header: header(c, name, [
        `groups of ${L} lane(s) split K (chunks of 4) for ${C} output columns x ${R} row(s); ${groups} groups per workgroup`,
        reduction === 'none' ? 'no cross-lane reduction' : `partial sums combined by ${reduction === 'subgroup' ? 'subgroupAdd' : 'a workgroup-memory tree'}`,
      ]),
      consts: [
        `const WORKGROUP_SIZE: u32 = ${WG}u;`,
        `const LANES_PER_COLUMN: u32 = ${L}u;`,
        `const GROUPS: u32 = ${groups}u; // lane groups per workgroup`,
        `const COLS: u32 = ${C}u; // output columns per group`,
        `const ROWS: u32 = ${R}u; // output rows per workgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        ...(gated ? [`const H: u32 = ${c.nOut}u; // offset of the up half in B's columns`, ...(f.bQuads ? [`const H_VEC4: u32 = ${c.nOut / 4}u;`] : [])] : []),
        ...fragmentConsts(c),
      ],
      decls,
      fns: [...f.fns, '', ...storeFn(c)],
      workgroupVars,
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, R),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, reduction === 'subgroup'),
  };
}
