/**
 * The `dequant-gemv` kernel: a matmul whose B is a quantized weight stored `[N, K]` (`transB`), dequantized in
 * registers as it is read — never into a dense buffer. Packed integers are read as `u32` words (little-endian, as
 * the weight store packs them), unpacked with `extractBits` (which sign-extends signed integers), and turned into
 * `(q - zeroPoint) * scale - min` with the group's parameters (the helpers every dequantizing kernel shares are in
 * `src/codegen/dequant.ts`); accumulation is f32.
 *
 * The structure is the dense `gemv`'s: groups of `lanesPerColumn` lanes split K for a block of `colsPerGroup` output
 * columns and `rowsPerBlock` rows, then reduce with `subgroupAdd` or in workgroup memory; the gate and the epilogue
 * are the dense family's (`store_out`). It is correct for any M (row blocks cover M, a dim expression at run time),
 * so it also serves prefill, where it re-reads each weight block once per row block.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelBinding, KernelSource } from '../kernel.js';
import { dequantExpr, dequantFormatTag, dequantPartBindings, qAtFn, qQuadFn, type DequantWeightFormat } from '../dequant.js';
import { wgslComment } from '../wgsl.js';
import { assemble, checkPositiveInt, encodedWeightBindings, gridOf, laneGroupAccumulators, laneGroupPreamble, laneGroupStoreLines, laneReductionLines, makeCtx, matmulFeatures, storeFn, toF32, type Ctx } from './common.js';
import type { MatmulSpec } from './spec.js';

/** Tuning of the `dequant-gemv` kernel. */
export interface DequantGemvVariant {
  /** Variant kind. */
  readonly kind: 'dequant-gemv';
  /** Invocations per workgroup. Default 64. */
  readonly workgroupSize?: number;
  /** Lanes splitting K for one block of columns (a power of two dividing the workgroup size). Default 8. */
  readonly lanesPerColumn?: number;
  /** Output columns per lane group. Default 4. */
  readonly colsPerGroup?: number;
  /** Output rows per workgroup. Default 1. */
  readonly rowsPerBlock?: number;
  /** How the lanes of a group combine their partial sums (when lanesPerColumn > 1). Default `workgroup`. */
  readonly reduction?: 'subgroup' | 'workgroup';
  /** The device's subgroup size (for `reduction: 'subgroup'`, which needs lanesPerColumn equal to it). Default 8. */
  readonly subgroupSize?: number;
}

/** A matmul with a quantized B stored `[N, K]`: the dense spec (`transB`, B's batch broadcast) and B's format. */
export interface DequantMatmulSpec extends Omit<MatmulSpec, 'variant'> {
  /** B's storage. */
  readonly weight: DequantWeightFormat;
}

/**
 * Generates the `dequant-gemv` kernel for `spec`. Bindings: `a`, `packed` (u32 words), `scales` (f32), then
 * `zeroPoints` (i32) and `mins` (f32) when the format has them, the epilogue operands, `out`, and the params uniform
 * when a size is a dim expression.
 * @throws {@link InputError} for a form it does not compute (B not `[N, K]`, a batched B, a group size that neither
 * divides K nor covers the whole weight) or inconsistent tuning.
 */
export function generateDequantGemvKernel(spec: DequantMatmulSpec, v: DequantGemvVariant): KernelSource {
  const w = spec.weight;
  if (!spec.transB) throw new InputError('dequant-gemv: the quantized B must be stored [N, K] (transB)');
  if (![8, 4, 2].includes(w.bits)) throw new InputError(`dequant-gemv: ${w.bits}-bit weights are not supported`);
  // B's storage dtype is irrelevant here (it is read packed): keep it out of the kernel's features
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('dequant-gemv: a quantized B is one [N, K] matrix shared by every batch');
  if (!(c.K % w.groupSize === 0 || w.groupSize === c.N * c.K)) throw new InputError(`dequant-gemv: group size ${w.groupSize} must divide K (${c.K}) or cover all ${c.N * c.K} elements`);
  const WG = v.workgroupSize ?? 64;
  const L = v.lanesPerColumn ?? 8;
  const C = v.colsPerGroup ?? 4;
  const R = v.rowsPerBlock ?? 1;
  const SG = v.subgroupSize ?? 8;
  for (const [n, x] of [['workgroupSize', WG], ['lanesPerColumn', L], ['colsPerGroup', C], ['rowsPerBlock', R]] as const) checkPositiveInt(n, x);
  if ((L & (L - 1)) !== 0 || WG % L !== 0) throw new InputError(`dequant-gemv: lanesPerColumn (${L}) must be a power of two dividing the workgroup size (${WG})`);
  const reduction = L === 1 ? 'none' : v.reduction ?? 'workgroup';
  if (reduction === 'subgroup' && L !== SG) throw new InputError(`dequant-gemv: subgroup reduction needs lanesPerColumn (${L}) = subgroupSize (${SG})`);
  const EPW = 32 / w.bits; // integers per u32 word
  const byWord = dequantByWord(c.K, w);
  const step = byWord ? EPW : 1;
  const groups = WG / L;
  const tileN = groups * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const aVec4 = byWord && !c.transA && c.strideA.mult4; // A rows read as vec4s
  const { decls, list } = dequantBindings(c, w, aVec4);
  const halves = gated ? ['acc', 'up'] : ['acc'];
  const body: string[] = laneGroupPreamble(c, C, R);
  for (const h of halves) for (let r = 0; r < R; r++) body.push(`  ${Array.from({ length: C }, (_, cc) => `var ${h}_${r}_${cc} = 0.0;`).join(' ')}`);
  body.push(
    `  // lane takes ${byWord ? `words (${EPW} integers each)` : 'elements'} lane, lane + LANES_PER_COLUMN, … of each B row`,
    `  // a uniform trip count (subgroupAdd below needs uniform control flow); the opaque 1 keeps compilers from unrolling`,
    `  for (var i = 0u; i < ITERS * one; i++) {`,
    `    let s = i * LANES_PER_COLUMN + lane;`,
    `    if (s < STEPS) { // (no break: it would make the control flow after the loop non-uniform)`,
    `    let k0 = s * ${step}u;`,
  );
  // per column (and gate half): the B row, its word(s), the group's parameters
  const cols: { name: string; rowExpr: string }[] = [];
  halves.forEach((h, g) => {
    for (let cc = 0; cc < C; cc++) cols.push({ name: `${h === 'acc' ? 'b' : 'u'}${cc}`, rowExpr: `col_${cc}${g ? ' + N_OUT' : ''}` });
  });
  for (const { name, rowExpr } of cols) {
    body.push(`    let e_${name} = (${rowExpr}) * K + k0; // flat index of the first element in [N, K]`);
    if (byWord) body.push(`    let w_${name} = packed[e_${name} / ${EPW}u];`);
    body.push(`    let g_${name} = e_${name} / GROUP_SIZE;`, `    let s_${name} = scales[g_${name}];`);
    if (w.hasZeroPoint) body.push(`    let z_${name} = f32(zero_points[g_${name}]);`);
    if (w.hasMin) body.push(`    let m_${name} = mins[g_${name}];`);
  }
  const QUADS = EPW / 4; // vec4s of integers per word
  if (byWord) {
    // per word: A as QUADS vec4s per row, the integers as QUADS vec4s per column (zero point subtracted, exact in
    // f32), dot products, then one scale (and offset) per word: sum_j x_j * ((q_j - z) * s - m) = s * dot - m * sum x
    for (let r = 0; r < R; r++) {
      for (let t = 0; t < QUADS; t++) body.push(`    let x${r}_${t} = a_quad(a_base, a_row_${r}, s * ${QUADS}u + ${t}u, M);`);
      if (w.hasMin) body.push(`    let xs${r} = ${Array.from({ length: QUADS }, (_, t) => `dot(x${r}_${t}, vec4<f32>(1.0))`).join(' + ')};`);
    }
    for (const { name } of cols) {
      for (let t = 0; t < QUADS; t++) body.push(`    let q_${name}_${t} = q_quad(w_${name}, ${t}u)${w.hasZeroPoint ? ` - vec4<f32>(z_${name})` : ''};`);
      for (let r = 0; r < R; r++) {
        const acc = `${name.startsWith('u') ? 'up' : 'acc'}_${r}_${name.slice(1)}`;
        const dots = Array.from({ length: QUADS }, (_, t) => `dot(x${r}_${t}, q_${name}_${t})`).join(' + ');
        body.push(`    ${acc} += s_${name} * (${dots})${w.hasMin ? ` - m_${name} * xs${r}` : ''};`);
      }
    }
  } else {
    const deq = (name: string, q: string): string => dequantExpr(w, q, { scale: `s_${name}`, zeroPoint: `z_${name}`, min: `m_${name}` });
    body.push(`    let k = k0;`);
    for (const { name } of cols) body.push(`    let v_${name} = ${deq(name, `q_at(packed[e_${name} / ${EPW}u], (e_${name} % ${EPW}u) * BITS)`)};`);
    for (let r = 0; r < R; r++) {
      body.push(`    let x${r} = a_at(a_base, a_row_${r}, k, M);`);
      halves.forEach((h, g) => {
        for (let cc = 0; cc < C; cc++) body.push(`    ${h}_${r}_${cc} += x${r} * v_${g ? 'u' : 'b'}${cc};`);
      });
    }
  }
  body.push(`    }`, `  }`);
  // reduction across the lanes of a group
  const { lines: reduce, workgroupVars } = laneReductionLines(laneGroupAccumulators(c, C, R), reduction, WG);
  body.push(...reduce, ...laneGroupStoreLines(c, C, R, L));
  const aElem = (k: string): string => toF32(c.dt.a, c.transA ? `a[base + (${k}) * rows + row]` : `a[base + row * K + ${k}]`);
  const fns = byWord
    ? dequantWordFns(c, w, aVec4)
    : [
        `// A[row, k] of the batch at base (rows = M)`,
        `fn a_at(base: u32, row: u32, k: u32, rows: u32) -> f32 {`,
        `  return ${aElem('k')};`,
        `}`,
        ...qAtFn(w),
      ];
  fns.push(
    '',
    ...storeFn(c),
  );
  const name = `dequant-gemv-${dequantFormatTag(w)}-l${L}-c${C}-r${R}-wg${WG}${reduction === 'none' ? '' : `-${reduction}`}`;
  return {
    family: 'dequant-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: reduction === 'subgroup',
      header: dequantHeader(c, w, name, `groups of ${L} lane(s) split K (${byWord ? 'whole words' : 'single elements'}) for ${C} column(s) x ${R} row(s); f32 accumulation`),
      consts: [
        `const WORKGROUP_SIZE: u32 = ${WG}u;`,
        `const LANES_PER_COLUMN: u32 = ${L}u;`,
        `const GROUPS: u32 = ${groups}u; // lane groups per workgroup`,
        `const COLS: u32 = ${C}u;`,
        `const ROWS: u32 = ${R}u;`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        `const BITS: u32 = ${w.bits}u;`,
        `const GROUP_SIZE: u32 = ${w.groupSize}u;`,
        `const STEPS: u32 = ${c.K / step}u; // ${byWord ? 'words' : 'elements'} per B row`,
        `const ITERS: u32 = ${Math.ceil(c.K / step / L)}u; // steps per lane`,
      ],
      decls,
      fns,
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

/** The header comment of a dequantizing matmul kernel: its variant, what it computes, W's storage, then `how`. */
export function dequantHeader(c: Ctx, w: DequantWeightFormat, name: string, how: string): string[] {
  return [
    `// tensorwright kernel: dequantizing matmul (${name})`,
    `//   out[b, m, n] = ${c.G === 2 ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * W[n, k]`,
    `//   W ${wgslComment(`[${c.N}, ${c.K}]`)}: ${w.bits}-bit ${w.signed ? 'signed' : 'unsigned'} integers packed in u32 words, W = (q${w.hasZeroPoint ? ' - zero_point' : ''}) * scale${w.hasMin ? ' - min' : ''} per group of ${w.groupSize}`,
    `//   ${how}`,
  ];
}

/**
 * Whether B can be read a whole `u32` word at a time: rows start on word boundaries (K is a multiple of the
 * integers per word) and no word straddles two groups. Otherwise `dequant-gemv` reads one element per step.
 */
export function dequantByWord(K: number, w: DequantWeightFormat): boolean {
  const perWord = 32 / w.bits;
  return K % perWord === 0 && w.groupSize % perWord === 0;
}

/** The word-path helpers: `a_quad` (4 consecutive k of an A row, as f32) and `q_quad` (4 integers of a packed word, as f32). */
export function dequantWordFns(c: Ctx, w: DequantWeightFormat, aVec4: boolean): string[] {
  return [...aQuadFn(c, aVec4), ...qQuadFn(w)];
}

/** WGSL `a_quad(base, row, kq, rows) -> vec4<f32>`: A[row, 4kq .. 4kq+3] of the batch at base, as f32 (read as one vec4 when `aVec4`). */
export function aQuadFn(c: Ctx, aVec4: boolean): string[] {
  const aElem = (k: string): string => toF32(c.dt.a, c.transA ? `a[base + (${k}) * rows + row]` : `a[base + row * K + ${k}]`);
  return [
    `// A[row, 4*kq .. 4*kq+3] of the batch at base (rows = M)`,
    `fn a_quad(base: u32, row: u32, kq: u32, rows: u32) -> vec4<f32> {`,
    aVec4 ? `  return ${toF32(c.dt.a, 'a[base / 4u + row * (K / 4u) + kq]', true)};` : `  let k = kq * 4u;\n  return vec4<f32>(${[0, 1, 2, 3].map((i) => aElem(`k + ${i}u`)).join(', ')});`,
    `}`,
  ];
}

/** Binding declarations and list: a (vec4s when `aVec4`), the weight's parts, epilogue operands, out, params. */
export function dequantBindings(c: Ctx, w: DequantWeightFormat, aVec4: boolean): { decls: string[]; list: KernelBinding[] } {
  return encodedWeightBindings(c, aVec4, dequantPartBindings(w));
}
