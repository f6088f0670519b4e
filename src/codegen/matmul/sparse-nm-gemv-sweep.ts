/**
 * The `sparse-nm-gemv-sweep` kernel: decode GEMV over an N:M-sparse B with quantized kept values, groups of 4
 * (`1:4`, `2:4`), for software rasterizers — `dequant-gemv-sweep`'s structure over the sparse encoding. One subgroup
 * is one workgroup; its lanes split K into units of `UNIT_WORDS` packed words of kept values (and the words of their
 * positions), each lane loads its units' A values once into a private array, then the subgroup sweeps `COLS` output
 * columns, reading per lane, column and unit one load of packed values, one of positions, the group's scale and zero
 * point, and picking each kept value's A element by its position from the private A values.
 *
 * Why: on lavapipe storage loads are what costs (see `dequant-gemv-sweep`); per unit of k this reads half the
 * values of the dense sweep plus their positions. Units past the end of the row read clamped weights against zero A
 * values, so they add nothing. Correct for any M (one row per workgroup along the grid's rows), the gate and the
 * epilogue (`store_out`).
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { dequantFormatTag, dequantPartBindings, qQuadFn } from '../dequant.js';
import { wgslComment } from '../wgsl.js';
import { assemble, checkPositiveInt, encodedWeightBindings, gridOf, makeCtx, matmulFeatures, storeFn, sweepClosing, sweepHalves, sweepOpening } from './common.js';
import { aQuadFn } from './dequant-gemv.js';
import { SWEEP_MAX_VALUES_PER_LANE } from './dequant-gemv-sweep.js';
import type { SparseNMMatmulSpec } from './sparse-nm-gemv.js';

/** Tuning of the `sparse-nm-gemv-sweep` kernel. */
export interface SparseNMGemvSweepVariant {
  /** Variant kind. */
  readonly kind: 'sparse-nm-gemv-sweep';
  /** The device's fixed subgroup size: the workgroup size, and the lanes splitting K. */
  readonly subgroupSize: number;
  /** Output columns each workgroup sweeps. */
  readonly colsPerWorkgroup: number;
}

const VEC: Readonly<Record<number, string>> = { 1: 'u32', 2: 'vec2<u32>', 4: 'vec4<u32>' };

/**
 * Packed words of kept values per unit (4, 2 or 1) for `spec` with `lanes` lanes, or `undefined` where the sweep does
 * not compute it: the values must be quantized (without offsets) in groups of whole words, `m` must be 4 with `n`
 * dividing 4, a unit must neither straddle a row nor a group and its positions must fill 1, 2 or 4 whole words, and
 * a lane's slice of K must not exceed {@link SWEEP_MAX_VALUES_PER_LANE}.
 */
export function sparseNMSweepUnitWords(spec: Pick<SparseNMMatmulSpec, 'K' | 'N' | 'weight' | 'transB'>, lanes: number): 1 | 2 | 4 | undefined {
  const { weight: w, K, N } = spec;
  const q = w.values;
  if (!spec.transB || !q || q.hasMin || w.m !== 4 || 4 % w.n !== 0 || K % 4 !== 0 || Math.ceil(K / lanes) > SWEEP_MAX_VALUES_PER_LANE) return undefined;
  const perWord = 32 / q.bits;
  const kept = (K / 4) * w.n;
  const rowWords = kept / perWord;
  const groupWords = q.groupSize === N * kept ? rowWords : q.groupSize / perWord;
  if (!Number.isInteger(rowWords) || !Number.isInteger(groupWords)) return undefined;
  return ([4, 2, 1] as const).find((u) => rowWords % u === 0 && groupWords % u === 0 && [1, 2, 4].includes((u * perWord * w.indexBits) / 32));
}

/**
 * Generates the `sparse-nm-gemv-sweep` kernel for `spec`. Bindings as `sparse-nm-gemv`'s over quantized values: `a`,
 * `packed` (read as units of 1, 2 or 4 words), `scales`, `zeroPoints` when the format has them, `indices` (read as
 * units too), the epilogue operands, `out`, and the params uniform when a size is a dim expression. Needs subgroups.
 * @throws {@link InputError} for a form it does not compute ({@link sparseNMSweepUnitWords}), a batched B, or bad tuning.
 */
export function generateSparseNMGemvSweepKernel(spec: SparseNMMatmulSpec, v: SparseNMGemvSweepVariant): KernelSource {
  const w = spec.weight;
  const q = w.values;
  const LANES = v.subgroupSize;
  const COLS = v.colsPerWorkgroup;
  checkPositiveInt('subgroupSize', LANES);
  checkPositiveInt('colsPerWorkgroup', COLS);
  const U = sparseNMSweepUnitWords(spec, LANES);
  if (!q || U === undefined) throw new InputError(`sparse-nm-gemv-sweep: B [${spec.N}, ${spec.K}] (${w.n}:${w.m}${q ? `, ${q.bits}-bit values in groups of ${q.groupSize}` : ', f32 values'}) is not one it sweeps`);
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('sparse-nm-gemv-sweep: a sparse B is one [N, K] matrix shared by every batch');
  const EPW = 32 / q.bits; // kept values per packed word
  const unitValues = U * EPW;
  const IW = (unitValues * w.indexBits) / 32; // position words per unit
  const quadsPerUnit = unitValues / w.n; // groups of 4 k (one A vec4 each) per unit
  const units = (c.K / 4) * w.n / unitValues;
  const unitsPerLane = Math.ceil(units / LANES);
  const nTiles = Math.ceil(c.nOut / COLS);
  const gated = c.G === 2;
  const aVec4 = !c.transA && c.strideA.mult4;
  const component = (unit: string, words: number, i: number): string => (words === 1 ? unit : `${unit}.${'xyzw'[i]}`);
  const parts = [
    ...dequantPartBindings(q).map((p) => (p.name === 'packed' ? { ...p, type: `array<${VEC[U]}>`, comment: `${p.comment}, read ${U} word(s) at a time` } : p)),
    { name: 'indices', wgslName: 'indices', type: `array<${VEC[IW]}>`, comment: `their positions in the group, INDEX_BITS each, read ${IW} word(s) at a time` },
  ];
  const { decls, list } = encodedWeightBindings(c, aVec4, parts);
  const halves = sweepHalves(c);
  const body: string[] = sweepOpening(c, { unitsPerLane, quads: quadsPerUnit, sums: false });
  for (const h of halves) {
    const p = h.acc;
    body.push(
      `      let e_${p} = (col${h.rowOffset}) * UNITS + u; // the unit's index in the weight`,
      `      let w_${p} = packed[e_${p}];`,
      `      let i_${p} = indices[e_${p}];`,
      `      let g_${p} = (e_${p} * UNIT_VALUES) / GROUP_SIZE;`,
    );
    const terms: string[] = [];
    for (let i = 0; i < U; i++)
      for (let t = 0; t < EPW / 4; t++) {
        const first = i * EPW + t * 4; // the quad's first kept value in the unit
        // each kept value's A element: its group's A quad, picked by the position's two low bits (a select tree;
        // positions in groups of 4 are below 4)
        const xs = [0, 1, 2, 3].map((jj) => {
          const bit = (first + jj) * w.indexBits;
          const word = component(`i_${p}`, IW, Math.floor(bit / 32));
          const quad = `x[j * QUADS + ${Math.floor((first + jj) / w.n)}u]`;
          const b0 = `(${word} & ${(1 << bit % 32) >>> 0}u) != 0u`;
          const b1 = `(${word} & ${(1 << ((bit % 32) + 1)) >>> 0}u) != 0u`;
          return `select(select(${quad}.x, ${quad}.y, ${b0}), select(${quad}.z, ${quad}.w, ${b0}), ${b1})`;
        });
        const qz = `q_quad(${component(`w_${p}`, U, i)}, ${t}u)${q.hasZeroPoint ? ` - z_${p}` : ''}`;
        terms.push(`dot(${qz}, vec4<f32>(${xs.join(', ')}))`);
      }
    if (q.hasZeroPoint) body.push(`      let z_${p} = vec4<f32>(f32(zero_points[g_${p}]));`);
    body.push(`      ${p} += scales[g_${p}] * (${terms.join(' + ')});`);
  }
  body.push(...sweepClosing(c));
  const name = `sparse-nm-gemv-sweep-${w.n}of${w.m}-i${w.indexBits}-${dequantFormatTag(q)}-u${U}-c${COLS}-sg${LANES}`;
  return {
    family: 'sparse-nm-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: true,
      header: [
        `// tensorwright kernel: N:M-sparse matmul (${name})`,
        `//   out[b, m, n] = ${gated ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * W[n, k]`,
        `//   W ${wgslComment(`[${c.N}, ${c.K}]`)}: ${w.n} of every 4 k kept, ${q.bits}-bit ${q.signed ? 'signed' : 'unsigned'} values (q${q.hasZeroPoint ? ' - zero_point' : ''}) * scale per group of ${q.groupSize} kept values, ${w.indexBits}-bit positions`,
        `//   one subgroup per workgroup: lanes hold a slice of the A row and sweep ${COLS} output columns; f32 accumulation`,
      ],
      consts: [
        `const LANES: u32 = ${LANES}u; // the subgroup, and the workgroup`,
        `const COLS: u32 = ${COLS}u; // output columns per workgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N`,
        `const BITS: u32 = ${q.bits}u;`,
        `const INDEX_BITS: u32 = ${w.indexBits}u;`,
        `const GROUP_SIZE: u32 = ${q.groupSize}u; // kept values per scale`,
        `const UNIT_VALUES: u32 = ${unitValues}u; // kept values per unit (${U} packed word(s), ${IW} position word(s))`,
        `const UNITS: u32 = ${units}u; // units per B row`,
        `const UNITS_PER_LANE: u32 = ${unitsPerLane}u;`,
        `const QUADS: u32 = ${quadsPerUnit}u; // vec4s of A (groups of 4 k) per unit`,
      ],
      decls,
      fns: [...aQuadFn(c, aVec4), ...qQuadFn(q), '', ...storeFn(c)],
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, 1),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, true),
  };
}
