/**
 * The `dequant-gemm-subgroup` kernel, for prefill (larger M) over a quantized B stored `[N, K]`: the dense
 * `gemm-subgroup`'s structure (no workgroup memory; each lane loads its A rows once per step and shares them with the
 * subgroup through `subgroupBroadcast`; each lane keeps a `subgroupSize·rowsPerLane x colsPerLane` output tile), with
 * each lane dequantizing its own columns' packed words in registers once per step, for all the tile's rows. Needs
 * whole-word steps (see {@link dequantByWord}) and a device with one fixed subgroup size.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { dequantFormatTag } from '../dequant.js';
import { assemble, checkPositiveInt, gridOf, makeCtx, matmulFeatures, sizeLets, storeFn, tileIndexLines } from './common.js';
import { dequantBindings, dequantByWord, dequantHeader, dequantWordFns, type DequantMatmulSpec } from './dequant-gemv.js';

/** Tuning of the `dequant-gemm-subgroup` kernel. */
export interface DequantGemmSubgroupVariant {
  /** Variant kind. */
  readonly kind: 'dequant-gemm-subgroup';
  /** The device's (fixed) subgroup size. Default 8. */
  readonly subgroupSize?: number;
  /** A rows each lane loads (the subgroup's tile is `subgroupSize * rowsPerLane` rows). Default 1. */
  readonly rowsPerLane?: number;
  /** Output columns per lane. Default 4. */
  readonly colsPerLane?: number;
  /** Subgroups per workgroup, side by side along N. Default 8. */
  readonly subgroupsPerWorkgroup?: number;
}

/**
 * Generates the `dequant-gemm-subgroup` kernel for `spec` (bindings as `generateDequantGemvKernel`'s).
 * @throws {@link InputError} when B cannot be read by whole words, for a form `dequant-gemv` also rejects, or for
 * inconsistent tuning.
 */
export function generateDequantGemmSubgroupKernel(spec: DequantMatmulSpec, v: DequantGemmSubgroupVariant): KernelSource {
  const w = spec.weight;
  if (!spec.transB) throw new InputError('dequant-gemm-subgroup: the quantized B must be stored [N, K] (transB)');
  if (!dequantByWord(spec.K, w)) throw new InputError(`dequant-gemm-subgroup: K (${spec.K}) and the group size (${w.groupSize}) must be multiples of ${32 / w.bits}`);
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('dequant-gemm-subgroup: a quantized B is one [N, K] matrix shared by every batch');
  if (!(c.K % w.groupSize === 0 || w.groupSize === c.N * c.K)) throw new InputError(`dequant-gemm-subgroup: group size ${w.groupSize} must divide K (${c.K}) or cover all ${c.N * c.K} elements`);
  const SG = v.subgroupSize ?? 8;
  const R = v.rowsPerLane ?? 1;
  const C = v.colsPerLane ?? 4;
  const S = v.subgroupsPerWorkgroup ?? 8;
  for (const [n, x] of [['subgroupSize', SG], ['rowsPerLane', R], ['colsPerLane', C], ['subgroupsPerWorkgroup', S]] as const) checkPositiveInt(n, x);
  const EPW = 32 / w.bits;
  const QUADS = EPW / 4;
  const tileM = SG * R;
  const tileN = S * SG * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const halves = gated ? ['acc', 'up'] : ['acc'];
  const aVec4 = !c.transA && c.strideA.mult4;
  const { decls, list } = dequantBindings(c, w, aVec4);
  const body: string[] = [
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(tileM),
    `  let sg = li / SUBGROUP_SIZE;`,
    `  let row0 = tile_m * TILE_M;`,
    `  // this lane's first output column; its columns are col0 .. col0 + COLS_PER_LANE - 1`,
    `  let col0 = (tile_n * SUBGROUPS + sg) * SUBGROUP_TILE_N + lane * COLS_PER_LANE;`,
    ...Array.from({ length: C }, (_, cc) => `  let col_${cc} = min(col0 + ${cc}u, N_OUT - 1u);`),
    `  // the A rows this lane loads (clamped: rows past M compute garbage that is never stored)`,
    ...Array.from({ length: R }, (_, r) => `  let a_row_${r} = min(row0 + ${r * SG}u + lane, M - 1u);`),
    `  // accumulators: <acc|up>_<row j>_<column> for output row row0 + j`,
  ];
  for (const h of halves) for (let j = 0; j < R * SG; j++) body.push(`  ${Array.from({ length: C }, (_, cc) => `var ${h}_${j}_${cc} = 0.0;`).join(' ')}`);
  body.push(`  for (var s = 0u; s < WORDS * one; s++) { // one packed word (${EPW} k) per step`, `    let k0 = s * ${EPW}u;`);
  for (let r = 0; r < R; r++) for (let t = 0; t < QUADS; t++) body.push(`    let a_${r}_${t} = a_quad(a_base, a_row_${r}, s * ${QUADS}u + ${t}u, M); // loaded once, shared by broadcast`);
  const cols: { name: string; acc: string; cc: number; rowExpr: string }[] = [];
  halves.forEach((h, g) => {
    for (let cc = 0; cc < C; cc++) cols.push({ name: `${g ? 'u' : 'b'}${cc}`, acc: h, cc, rowExpr: `col_${cc}${g ? ' + N_OUT' : ''}` });
  });
  for (const { name, rowExpr } of cols) {
    body.push(`    let e_${name} = (${rowExpr}) * K + k0;`, `    let w_${name} = packed[e_${name} / ${EPW}u];`, `    let g_${name} = e_${name} / GROUP_SIZE;`, `    let s_${name} = scales[g_${name}];`);
    if (w.hasZeroPoint) body.push(`    let z_${name} = f32(zero_points[g_${name}]);`);
    if (w.hasMin) body.push(`    let m_${name} = mins[g_${name}];`);
    for (let t = 0; t < QUADS; t++) body.push(`    let q_${name}_${t} = q_quad(w_${name}, ${t}u)${w.hasZeroPoint ? ` - vec4<f32>(z_${name})` : ''};`);
  }
  for (let r = 0; r < R; r++)
    for (let l = 0; l < SG; l++) {
      const j = r * SG + l;
      for (let t = 0; t < QUADS; t++) body.push(`    let x${j}_${t} = subgroupBroadcast(a_${r}_${t}, ${l}u);`);
      if (w.hasMin) body.push(`    let xs${j} = ${Array.from({ length: QUADS }, (_, t) => `dot(x${j}_${t}, vec4<f32>(1.0))`).join(' + ')};`);
      for (const { name, acc, cc } of cols) {
        const dots = Array.from({ length: QUADS }, (_, t) => `dot(x${j}_${t}, q_${name}_${t})`).join(' + ');
        body.push(`    ${acc}_${j}_${cc} += s_${name} * (${dots})${w.hasMin ? ` - m_${name} * xs${j}` : ''};`);
      }
    }
  body.push(`  }`);
  for (let j = 0; j < R * SG; j++)
    for (let cc = 0; cc < C; cc++) body.push(`  store_out(out_base, row0 + ${j}u, col0 + ${cc}u, M, acc_${j}_${cc}${gated ? `, up_${j}_${cc}` : ''});`);
  body.push(`}`);
  const name = `dequant-gemm-subgroup-${dequantFormatTag(w)}-sg${SG}-r${R}-c${C}-s${S}`;
  return {
    family: 'dequant-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: true,
      header: dequantHeader(c, w, name, `each lane dequantizes one word of each of its ${C} column(s) per step and uses it for ${tileM} rows (A shared by subgroupBroadcast, subgroup size ${SG})`),
      consts: [
        `const SUBGROUP_SIZE: u32 = ${SG}u; // must equal the device's subgroup size`,
        `const SUBGROUPS: u32 = ${S}u;`,
        `const WORKGROUP_SIZE: u32 = ${S * SG}u;`,
        `const COLS_PER_LANE: u32 = ${C}u;`,
        `const TILE_M: u32 = ${tileM}u; // rows per workgroup`,
        `const SUBGROUP_TILE_N: u32 = ${SG * C}u; // columns per subgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        `const BITS: u32 = ${w.bits}u;`,
        `const GROUP_SIZE: u32 = ${w.groupSize}u;`,
        `const WORDS: u32 = ${c.K / EPW}u; // packed words per B row`,
      ],
      decls,
      fns: [...dequantWordFns(c, w, aVec4), '', ...storeFn(c)],
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, tileM),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, true),
  };
}
