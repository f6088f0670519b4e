/**
 * The `codebook-gemm-subgroup` kernel, for prefill (larger M) over a codebook B stored `[N, K]`: `dequant-gemm-subgroup`'s
 * structure (no workgroup memory for A; each lane loads its A rows once per step and shares them with the subgroup
 * through `subgroupBroadcast`; each lane keeps a `subgroupSize·rowsPerLane x colsPerLane` output tile), with each
 * lane looking its own columns' packed indices up in the table once per step, for all the tile's rows. The table is
 * kept as `codebook-gemv` keeps it (`src/codegen/codebook.ts`). Needs whole-word steps (see {@link codebookByWord})
 * and a device with one fixed subgroup size.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { bookFns, codebookConsts, codebookFormatTag, codebookValueText, tableBaseExpr, tableLoadLines, tablePlacement, tableVars } from '../codebook.js';
import { assemble, checkPositiveInt, gridOf, makeCtx, matmulFeatures, sizeLets, storeFn, tileIndexLines } from './common.js';
import { codebookBindings, codebookByWord, codebookMatmulProblem, type CodebookMatmulSpec } from './codebook-gemv.js';
import { aQuadFn } from './dequant-gemv.js';
import type { DequantGemmSubgroupVariant } from './dequant-gemm.js';

/** Tuning of the `codebook-gemm-subgroup` kernel: `dequant-gemm-subgroup`'s fields. */
export interface CodebookGemmSubgroupVariant extends Omit<DequantGemmSubgroupVariant, 'kind'> {
  /** Variant kind. */
  readonly kind: 'codebook-gemm-subgroup';
}

/**
 * Generates the `codebook-gemm-subgroup` kernel for `spec` (bindings as `generateCodebookGemvKernel`'s).
 * @throws {@link InputError} when B cannot be read by whole words, for a form `codebook-gemv` also rejects, or for
 * inconsistent tuning.
 */
export function generateCodebookGemmSubgroupKernel(spec: CodebookMatmulSpec, v: CodebookGemmSubgroupVariant): KernelSource {
  const w = spec.weight;
  if (!spec.transB) throw new InputError('codebook-gemm-subgroup: the codebook B must be stored [N, K] (transB)');
  if (!codebookByWord(spec.K, w)) throw new InputError(`codebook-gemm-subgroup: K (${spec.K}) and the scale group size must be multiples of ${32 / w.indexBits}`);
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('codebook-gemm-subgroup: a codebook B is one [N, K] matrix shared by every batch');
  const problem = codebookMatmulProblem(c.N, c.K, w);
  if (problem) throw new InputError(`codebook-gemm-subgroup: ${problem}`);
  const SG = v.subgroupSize ?? 8;
  const R = v.rowsPerLane ?? 1;
  const C = v.colsPerLane ?? 4;
  const S = v.subgroupsPerWorkgroup ?? 8;
  for (const [n, x] of [['subgroupSize', SG], ['rowsPerLane', R], ['colsPerLane', C], ['subgroupsPerWorkgroup', S]] as const) checkPositiveInt(n, x);
  const EPW = 32 / w.indexBits;
  const QUADS = EPW / 4;
  const tileM = SG * R;
  const tileN = S * SG * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const scaled = w.scaleGroupSize !== undefined;
  const halves = gated ? ['acc', 'up'] : ['acc'];
  const aVec4 = !c.transA && c.strideA.mult4;
  const { decls, list } = codebookBindings(c, w, aVec4);
  const cols: { name: string; acc: string; cc: number; rowExpr: string }[] = [];
  halves.forEach((h, g) => {
    for (let cc = 0; cc < C; cc++) cols.push({ name: `${g ? 'u' : 'b'}${cc}`, acc: h, cc, rowExpr: `col_${cc}${g ? ' + N_OUT' : ''}` });
  });
  const body: string[] = [
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {`,
    ...tableLoadLines(w, 'li', 'WORKGROUP_SIZE'),
    ...sizeLets(c),
    ...tileIndexLines(tileM),
    `  let sg = li / SUBGROUP_SIZE;`,
    `  let row0 = tile_m * TILE_M;`,
    `  // this lane's first output column; its columns are col0 .. col0 + COLS_PER_LANE - 1`,
    `  let col0 = (tile_n * SUBGROUPS + sg) * SUBGROUP_TILE_N + lane * COLS_PER_LANE;`,
    ...Array.from({ length: C }, (_, cc) => `  let col_${cc} = min(col0 + ${cc}u, N_OUT - 1u);`),
    `  // the A rows this lane loads (clamped: rows past M compute garbage that is never stored)`,
    ...Array.from({ length: R }, (_, r) => `  let a_row_${r} = min(row0 + ${r * SG}u + lane, M - 1u);`),
    ...(w.tables > 1 ? cols.map(({ name, rowExpr }) => `  let t_${name} = ${tableBaseExpr(w, `(${rowExpr}) * K`)}; // its table (tables cover whole rows)`) : []),
    `  // accumulators: <acc|up>_<row j>_<column> for output row row0 + j`,
  ];
  for (const h of halves) for (let j = 0; j < R * SG; j++) body.push(`  ${Array.from({ length: C }, (_, cc) => `var ${h}_${j}_${cc} = 0.0;`).join(' ')}`);
  body.push(`  for (var s = 0u; s < WORDS * one; s++) { // one packed word (${EPW} k) per step`, `    let k0 = s * ${EPW}u;`);
  for (let r = 0; r < R; r++) for (let t = 0; t < QUADS; t++) body.push(`    let a_${r}_${t} = a_quad(a_base, a_row_${r}, s * ${QUADS}u + ${t}u, M); // loaded once, shared by broadcast`);
  for (const { name, rowExpr } of cols) {
    body.push(`    let e_${name} = (${rowExpr}) * K + k0;`, `    let w_${name} = indices[e_${name} / ${EPW}u];`);
    if (scaled) body.push(`    let s_${name} = scales[e_${name} / SCALE_GROUP];`);
    for (let t = 0; t < QUADS; t++) body.push(`    let v_${name}_${t} = book_quad(w_${name}, ${t}u, ${w.tables > 1 ? `t_${name}` : '0u'});`);
  }
  for (let r = 0; r < R; r++)
    for (let l = 0; l < SG; l++) {
      const j = r * SG + l;
      for (let t = 0; t < QUADS; t++) body.push(`    let x${j}_${t} = subgroupBroadcast(a_${r}_${t}, ${l}u);`);
      for (const { name, acc, cc } of cols) {
        const dots = Array.from({ length: QUADS }, (_, t) => `dot(x${j}_${t}, v_${name}_${t})`).join(' + ');
        body.push(`    ${acc}_${j}_${cc} += ${scaled ? `s_${name} * (${dots})` : dots};`);
      }
    }
  body.push(`  }`);
  for (let j = 0; j < R * SG; j++)
    for (let cc = 0; cc < C; cc++) body.push(`  store_out(out_base, row0 + ${j}u, col0 + ${cc}u, M, acc_${j}_${cc}${gated ? `, up_${j}_${cc}` : ''});`);
  body.push(`}`);
  const name = `codebook-gemm-subgroup-${codebookFormatTag(w)}-sg${SG}-r${R}-c${C}-s${S}`;
  return {
    family: 'codebook-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: true,
      header: [
        `// tensorwright kernel: codebook matmul (${name})`,
        `//   out[b, m, n] = ${gated ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * W[n, k]`,
        `//   W [${c.N}, ${c.K}]: ${codebookValueText(w)}, table(s) read from ${tablePlacement(w)} memory`,
        `//   each lane looks up one word of each of its ${C} column(s) per step and uses it for ${tileM} rows (A shared by subgroupBroadcast, subgroup size ${SG})`,
      ],
      consts: [
        `const SUBGROUP_SIZE: u32 = ${SG}u; // must equal the device's subgroup size`,
        `const SUBGROUPS: u32 = ${S}u;`,
        `const WORKGROUP_SIZE: u32 = ${S * SG}u;`,
        `const COLS_PER_LANE: u32 = ${C}u;`,
        `const TILE_M: u32 = ${tileM}u; // rows per workgroup`,
        `const SUBGROUP_TILE_N: u32 = ${SG * C}u; // columns per subgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        ...codebookConsts(w),
        `const WORDS: u32 = ${c.K / EPW}u; // packed words per B row`,
      ],
      decls,
      fns: [...aQuadFn(c, aVec4), ...bookFns(w, true), '', ...storeFn(c)],
      workgroupVars: tableVars(w),
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, tileM),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, true),
  };
}
