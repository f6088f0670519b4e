/**
 * The `dequant-gemv-sweep` kernel: decode GEMV over a quantized B stored `[N, K]` (`transB`) for software
 * rasterizers. One subgroup is one workgroup. Its lanes split K: each lane loads its slice of the A row once —
 * units `lane, lane + LANES, …` of `UNIT_WORDS` packed words each, into a private array — and then the subgroup
 * sweeps `COLS` output columns, reading per lane and column only the unit's packed words (one `vec4<u32>` for 32
 * 4-bit integers), the group's scale and zero point, and combining the lanes' sums with one `subgroupAdd`.
 *
 * Why: on lavapipe every storage load costs about the same per SIMD instruction, whatever its width and whether or
 * not the lanes' addresses agree, and the dequantizing arithmetic is cheap next to it. `dequant-gemv` reloads the
 * A values for every block of columns; here they are loaded once per workgroup, so a column costs only its weight
 * bytes' loads. Measured on lavapipe (2 cores): int4 (g32) 32000x768 at M = 1 in 4.5–6 ms against 9.6 ms for
 * `dequant-gemv` and 13–14 ms for the f32 `gemv`.
 *
 * The zero point and the offset are applied once per unit: `sum_k x_k((q_k - z)s - m) = s(x·q - z·Σx) - m·Σx`.
 * Units past the end of the row hold zero A values, so they add nothing. Correct for any M (one row per workgroup
 * along the grid's rows), the gate and the epilogue (`store_out`), as every matmul kernel is.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { dequantFormatTag, dequantPartBindings, qQuadFn, type DequantWeightFormat } from '../dequant.js';
import { assemble, checkPositiveInt, encodedWeightBindings, gridOf, makeCtx, matmulFeatures, storeFn, sweepClosing, sweepHalves, sweepOpening } from './common.js';
import { aQuadFn, dequantByWord, dequantHeader, type DequantMatmulSpec } from './dequant-gemv.js';

/** Tuning of the `dequant-gemv-sweep` kernel. */
export interface DequantGemvSweepVariant {
  /** Variant kind. */
  readonly kind: 'dequant-gemv-sweep';
  /** The device's fixed subgroup size: the workgroup size, and the lanes splitting K. */
  readonly subgroupSize: number;
  /** Output columns each workgroup sweeps. */
  readonly colsPerWorkgroup: number;
}

/** Most A values one lane holds in its private array: longer rows go to `dequant-gemv`. */
export const SWEEP_MAX_VALUES_PER_LANE = 2048;

/**
 * Packed words per unit (1, 2 or 4, read as one `u32`, `vec2<u32>` or `vec4<u32>`): the most that divide both the
 * words of a row and the words of a group, so a unit never straddles a row or a group.
 */
export function sweepUnitWords(K: number, N: number, w: DequantWeightFormat): 1 | 2 | 4 {
  const perWord = 32 / w.bits;
  const rowWords = K / perWord;
  const groupWords = w.groupSize === N * K ? rowWords : w.groupSize / perWord;
  for (const u of [4, 2] as const) if (rowWords % u === 0 && groupWords % u === 0) return u;
  return 1;
}

/**
 * Whether `dequant-gemv-sweep` computes `spec` with `lanes` lanes: B readable by whole words ({@link dequantByWord}),
 * one B for every batch, and a lane's slice of K no longer than {@link SWEEP_MAX_VALUES_PER_LANE}.
 */
export function sweepFits(spec: Pick<DequantMatmulSpec, 'K' | 'weight' | 'transB'>, lanes: number): boolean {
  return !!spec.transB && dequantByWord(spec.K, spec.weight) && Math.ceil(spec.K / lanes) <= SWEEP_MAX_VALUES_PER_LANE;
}

/**
 * Generates the `dequant-gemv-sweep` kernel for `spec`. Bindings as `dequant-gemv`'s: `a`, `packed` (here read as
 * `u32`, `vec2<u32>` or `vec4<u32>` units), `scales`, then `zeroPoints` and `mins` when the format has them, the
 * epilogue operands, `out`, and the params uniform when a size is a dim expression. Needs subgroups.
 * @throws {@link InputError} for a form it does not compute (B not `[N, K]`, a batched B, B not readable by whole
 * words, a lane slice over {@link SWEEP_MAX_VALUES_PER_LANE}) or bad tuning.
 */
export function generateDequantGemvSweepKernel(spec: DequantMatmulSpec, v: DequantGemvSweepVariant): KernelSource {
  const w = spec.weight;
  const LANES = v.subgroupSize;
  const COLS = v.colsPerWorkgroup;
  checkPositiveInt('subgroupSize', LANES);
  checkPositiveInt('colsPerWorkgroup', COLS);
  if (!spec.transB) throw new InputError('dequant-gemv-sweep: the quantized B must be stored [N, K] (transB)');
  if (![8, 4, 2].includes(w.bits)) throw new InputError(`dequant-gemv-sweep: ${w.bits}-bit weights are not supported`);
  if (!sweepFits(spec, LANES)) throw new InputError(`dequant-gemv-sweep: B [${spec.N}, ${spec.K}] in ${w.bits}-bit groups of ${w.groupSize} is not read by whole words, or a lane's slice of K exceeds ${SWEEP_MAX_VALUES_PER_LANE}`);
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('dequant-gemv-sweep: a quantized B is one [N, K] matrix shared by every batch');
  const EPW = 32 / w.bits; // integers per word
  const U = sweepUnitWords(c.K, c.N, w);
  const unitElems = U * EPW;
  const units = c.K / unitElems;
  const unitsPerLane = Math.ceil(units / LANES);
  const quads = unitElems / 4; // vec4s of A per unit
  const quadsPerWord = EPW / 4;
  const nTiles = Math.ceil(c.nOut / COLS);
  const offsets = w.hasZeroPoint || w.hasMin; // need the unit's sum of A values
  // unsigned integers are masked in place, not shifted down: the A values carry the powers of two instead
  const masked = !w.signed;
  const aVec4 = !c.transA && c.strideA.mult4;
  const unitType = U === 4 ? 'vec4<u32>' : U === 2 ? 'vec2<u32>' : 'u32';
  const parts = dequantPartBindings(w).map((p) => (p.name === 'packed' ? { ...p, type: `array<${unitType}>`, comment: `${p.comment}, read ${U} word(s) at a time` } : p));
  const { decls, list } = encodedWeightBindings(c, aVec4, parts);
  const wordOf = (unit: string, i: number): string => (U === 1 ? unit : `${unit}.${'xyzw'[i]}`);

  const halves = sweepHalves(c);
  const body: string[] = sweepOpening(c, { unitsPerLane, quads, scale: masked ? 'MASK_SCALE' : undefined, sums: offsets });
  for (const h of halves) {
    const p = h.acc;
    body.push(`      let e_${p} = (col${h.rowOffset}) * K + u * UNIT_ELEMS; // flat index of the unit's first element in [N, K]`);
    body.push(`      let w_${p} = packed[e_${p} / UNIT_ELEMS];`, `      let g_${p} = e_${p} / GROUP_SIZE;`);
    // products accumulate as vec4 FMAs in two chains (half the dependent latency), summed once per unit
    const terms: { q: string; x: string }[] = [];
    for (let i = 0; i < U; i++)
      for (let t = 0; t < quadsPerWord; t++) terms.push({ q: `${masked ? 'q_masked' : 'q_quad'}(${wordOf(`w_${p}`, i)}, ${t}u)`, x: `x[j * QUADS + ${i * quadsPerWord + t}u]` });
    const chain = (ts: typeof terms): string => ts.reduce((acc, t) => `fma(${t.q}, ${t.x}, ${acc})`, 'vec4<f32>(0.0)');
    const half = Math.ceil(terms.length / 2);
    body.push(`      let d_${p} = dot(${terms.length > 1 ? `${chain(terms.slice(0, half))} + ${chain(terms.slice(half))}` : chain(terms)}, vec4<f32>(1.0));`);
    const zTerm = w.hasZeroPoint ? ` - f32(zero_points[g_${p}]) * x_sum[j]` : '';
    const mTerm = w.hasMin ? ` - mins[g_${p}] * x_sum[j]` : '';
    body.push(`      ${p} += scales[g_${p}] * (d_${p}${zTerm})${mTerm};`);
  }
  body.push(...sweepClosing(c));
  const fns = [...aQuadFn(c, aVec4), ...(masked ? qMaskedFn(w) : qQuadFn(w)), '', ...storeFn(c)];
  const name = `dequant-gemv-sweep-${dequantFormatTag(w)}-u${U}-c${COLS}-sg${LANES}`;
  return {
    family: 'dequant-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: true,
      header: dequantHeader(c, w, name, `one subgroup per workgroup: lanes hold a slice of the A row and sweep ${COLS} output columns; f32 accumulation`),
      consts: [
        `const LANES: u32 = ${LANES}u; // the subgroup, and the workgroup`,
        `const COLS: u32 = ${COLS}u; // output columns per workgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N`,
        `const BITS: u32 = ${w.bits}u;`,
        `const GROUP_SIZE: u32 = ${w.groupSize}u;`,
        `const UNIT_ELEMS: u32 = ${unitElems}u; // integers per unit (${U} word(s))`,
        `const UNITS: u32 = ${units}u; // units per B row`,
        `const UNITS_PER_LANE: u32 = ${unitsPerLane}u;`,
        `const QUADS: u32 = ${quads}u; // vec4s of A per unit`,
        ...(masked ? [`const MASK_SCALE = ${maskScale(w.bits)}; // A values times the place value that q_masked leaves on each integer`] : []),
      ],
      decls,
      fns,
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, 1),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, true),
  };
}

/** The place values `q_masked` leaves on the 4 integers of a quad, as `1 / 2^shift`: the last one is shifted down when it ends at bit 31. */
function placeShifts(bits: number): number[] {
  return [0, 1, 2, 3].map((j) => (4 * bits === 32 && j === 3 ? 0 : j * bits));
}

/** WGSL `vec4<f32>` of the reciprocal place values (exact powers of two). */
function maskScale(bits: number): string {
  return `vec4<f32>(${placeShifts(bits).map((s) => `${1 / 2 ** s}`).join(', ')})`;
}

/**
 * WGSL `q_masked(word, t) -> vec4<f32>`: unsigned integers `4t .. 4t+3` of a packed word, each masked in place and
 * so times its place value `2^(bits·j)` (exact in f32: at most 8 significant bits) — one shift per quad instead of
 * one per integer. An integer ending at bit 31 is shifted down instead (a u32 with its top bit set converts slowly).
 */
function qMaskedFn(w: DequantWeightFormat): string[] {
  const m = (1 << w.bits) - 1;
  const comps = placeShifts(w.bits).map((sh, j) => (sh === 0 && j > 0 ? `y >> ${j * w.bits}u` : `y & ${(m << sh) >>> 0}u`));
  return [
    `// unsigned integers 4t .. 4t+3 of a packed word in place (integer j times 2^(BITS·j), see MASK_SCALE), as f32`,
    `fn q_masked(word: u32, t: u32) -> vec4<f32> {`,
    `  let y = word >> (t * 4u * BITS);`,
    `  return vec4<f32>(vec4<u32>(${comps.join(', ')}));`,
    `}`,
  ];
}
