/**
 * The `sparse-nm-gemv` kernel: a matmul whose B is an N:M-sparse weight stored `[N, K]` (`transB`): of every `m`
 * consecutive k of a B row, `n` values are stored (`values`, f32 — or quantized: `packed` integers with per-group
 * `scales` and optional `zeroPoints`, dequantized in registers with the helpers of `src/codegen/dequant.ts`) with
 * their positions in the group (`indices`, `indexBits`-bit integers packed little-endian in `u32` words, as the
 * weight store packs them). The kernel reads only those: per group, `n` values and `n` positions instead of `m`
 * dense values.
 *
 * The structure is `dequant-gemv`'s: groups of `lanesPerColumn` lanes split K for `colsPerGroup` output columns and
 * `rowsPerBlock` rows, then reduce with `subgroupAdd` or in workgroup memory; the gate and the epilogue are the dense
 * family's (`store_out`). A lane's step is `4/n` groups when `n` divides 4 and rows hold whole vec4s of kept values
 * (one vec4 load of values and one word of positions per step: 2:4 → 8 k, 1:4 → 16 k; quantized values: the step's
 * 4 integers from one word and one scale when the quantization group holds whole steps), else one group. When `m` is
 * a multiple of 4 (2:4, 1:4, 4:8), the step's A values are read as vec4s shared by every column, and each column's
 * kept values are scattered into vec4s by position (`select`) and dotted; otherwise each kept value multiplies the
 * A element at its position. Correct for any M; for prefill each weight read serves `rowsPerBlock` rows.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { dequantExpr, dequantFormatTag, dequantPartBindings, qAtFn, qQuadFn, type DequantWeightFormat } from '../dequant.js';
import { wgslComment } from '../wgsl.js';
import { assemble, checkPositiveInt, encodedWeightBindings, gridOf, laneGroupAccumulators, laneGroupPreamble, laneGroupStoreLines, laneReductionLines, makeCtx, matmulFeatures, storeFn, toF32 } from './common.js';
import type { MatmulSpec } from './spec.js';

/** How the N:M-sparse B is stored (from its weight entry's {@link NMSparseEncoding}). */
export interface SparseNMWeightFormat {
  /** Values kept per group. */
  readonly n: number;
  /** Group length along K (divides K). */
  readonly m: number;
  /** Bits per stored position: 2, 4 or 8. */
  readonly indexBits: 2 | 4 | 8;
  /**
   * How the kept values are quantized, over the compacted `[N, K·n/m]` values matrix (groups along its rows); absent:
   * they are f32.
   */
  readonly values?: DequantWeightFormat;
}

/** Tuning of the `sparse-nm-gemv` kernel. */
export interface SparseNMGemvVariant {
  /** Variant kind. */
  readonly kind: 'sparse-nm-gemv';
  /** Invocations per workgroup. Default 64. */
  readonly workgroupSize?: number;
  /** Lanes splitting K's groups for one block of columns (a power of two dividing the workgroup size). Default 8. */
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

/** A matmul with an N:M-sparse B stored `[N, K]`: the dense spec (`transB`, B shared by every batch) and B's format. */
export interface SparseNMMatmulSpec extends Omit<MatmulSpec, 'variant'> {
  /** B's storage. */
  readonly weight: SparseNMWeightFormat;
}

/**
 * Generates the `sparse-nm-gemv` kernel for `spec`. Bindings: `a`, `values` (f32) or the quantized values' parts
 * (`packed`, `scales`, then `zeroPoints` and `mins` when the format has them), `indices` (u32 words), the epilogue
 * operands, `out`, and the params uniform when a size is a dim expression.
 * @throws {@link InputError} for a form it does not compute (B not `[N, K]`, a batched B, `m` not dividing K, a
 * position width that cannot address `m`, a quantization group that neither divides the compacted rows nor covers
 * all kept values) or inconsistent tuning.
 */
export function generateSparseNMGemvKernel(spec: SparseNMMatmulSpec, v: SparseNMGemvVariant): KernelSource {
  const w = spec.weight;
  if (!spec.transB) throw new InputError('sparse-nm-gemv: the sparse B must be stored [N, K] (transB)');
  // B's storage dtype is irrelevant here (its kept values are f32): keep it out of the kernel's features
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('sparse-nm-gemv: a sparse B is one [N, K] matrix shared by every batch');
  if (!(Number.isInteger(w.n) && Number.isInteger(w.m) && w.n >= 1 && w.n <= w.m && c.K % w.m === 0))
    throw new InputError(`sparse-nm-gemv: ${w.n}:${w.m} sparsity needs 1 <= n <= m and m dividing K (${c.K})`);
  if (![2, 4, 8].includes(w.indexBits) || w.m > 1 << w.indexBits) throw new InputError(`sparse-nm-gemv: ${w.indexBits}-bit positions cannot address groups of ${w.m}`);
  const q = w.values;
  const keptPerRow = (c.K / w.m) * w.n;
  if (q && !([8, 4, 2].includes(q.bits) && Number.isInteger(q.groupSize) && q.groupSize > 0 && (keptPerRow % q.groupSize === 0 || q.groupSize === c.N * keptPerRow)))
    throw new InputError(`sparse-nm-gemv: quantized values need 8, 4 or 2 bits and a group size dividing the ${keptPerRow} kept values per row (or covering all ${c.N * keptPerRow}), got ${q.bits} bits, group ${q.groupSize}`);
  const WG = v.workgroupSize ?? 64;
  const L = v.lanesPerColumn ?? 8;
  const C = v.colsPerGroup ?? 4;
  const R = v.rowsPerBlock ?? 1;
  const SG = v.subgroupSize ?? 8;
  for (const [n, x] of [['workgroupSize', WG], ['lanesPerColumn', L], ['colsPerGroup', C], ['rowsPerBlock', R]] as const) checkPositiveInt(n, x);
  if ((L & (L - 1)) !== 0 || WG % L !== 0) throw new InputError(`sparse-nm-gemv: lanesPerColumn (${L}) must be a power of two dividing the workgroup size (${WG})`);
  const reduction = L === 1 ? 'none' : v.reduction ?? 'workgroup';
  if (reduction === 'subgroup' && L !== SG) throw new InputError(`sparse-nm-gemv: subgroup reduction needs lanesPerColumn (${L}) = subgroupSize (${SG})`);
  const groups = WG / L;
  const tileN = groups * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  // a lane's step: GPS consecutive groups; with n dividing 4 and rows of whole vec4s of values, the step's kept values
  // are one vec4 (GPS = 4 / n), else one group's n scalars
  const vecValues = 4 % w.n === 0 && keptPerRow % 4 === 0;
  // quantized: a step's 4 values as one quad of a packed word with one scale (its words never straddle: 4 integers
  // take 8, 16 or 32 bits), when the quantization groups hold whole steps; else each value read on its own
  const quadValues = !!q && vecValues && q.groupSize % 4 === 0;
  const GPS = vecValues ? 4 / w.n : 1;
  const V = w.n * GPS; // kept values per step
  const steps = c.K / (w.m * GPS); // steps per B row
  // a group's A values as vec4s when m is a multiple of 4 (up to 4 of them); else one A element per kept value
  const quadsPerGroup = w.m % 4 === 0 && w.m <= 16 ? w.m / 4 : 0;
  const quads = quadsPerGroup * GPS;
  const aVec4 = quads > 0 && !c.transA && c.strideA.mult4;
  // a step's positions lie in one u32 word when its bits divide 32 (steps never straddle words then)
  const stepBits = V * w.indexBits;
  const oneWord = 32 % stepBits === 0;
  const { decls, list } = encodedWeightBindings(c, aVec4, [
    ...(q
      ? dequantPartBindings(q)
      : [{ name: 'values', wgslName: 'values', type: vecValues ? 'array<vec4<f32>>' : 'array<f32>', comment: `W's kept values, N_KEEP per group, row-major${vecValues ? ` (a vec4 per ${GPS} group(s))` : ''}` }]),
    { name: 'indices', wgslName: 'indices', type: 'array<u32>', comment: 'their positions in the group, INDEX_BITS each, little-endian in u32 words' },
  ]);
  const halves = gated ? ['acc', 'up'] : ['acc'];
  const body: string[] = laneGroupPreamble(c, C, R);
  for (const h of halves) for (let r = 0; r < R; r++) body.push(`  ${Array.from({ length: C }, (_, cc) => `var ${h}_${r}_${cc} = 0.0;`).join(' ')}`);
  body.push(
    `  // lane takes steps (${GPS} N:M group(s) each) lane, lane + LANES_PER_COLUMN, … of each B row`,
    `  // a uniform trip count (subgroupAdd below needs uniform control flow); the opaque 1 keeps compilers from unrolling`,
    `  for (var i = 0u; i < ITERS * one; i++) {`,
    `    let s = i * LANES_PER_COLUMN + lane;`,
    `    if (s < STEPS) { // (no break: it would make the control flow after the loop non-uniform)`,
  );
  if (!quads) body.push(`    let k0 = s * STEP_K; // the step's first k`);
  if (quads) for (let r = 0; r < R; r++) for (let t = 0; t < quads; t++) body.push(`    let x${r}_${t} = a_quad(a_base, a_row_${r}, s * ${quads}u + ${t}u, M);`);
  halves.forEach((h, g) => {
    for (let cc = 0; cc < C; cc++) {
      const name = `${g ? 'u' : 'b'}${cc}`;
      body.push(`    let e_${name} = (col_${cc}${g ? ' + N_OUT' : ''}) * STEPS + s; // the step's index in the weight`);
      if (oneWord) body.push(`    let iw_${name} = indices[(e_${name} * STEP_BITS) / 32u];`, `    let ib_${name} = (e_${name} * STEP_BITS) % 32u;`);
      if (quadValues) {
        // the step's 4 integers: quad e % QUADS_PER_WORD of word e / QUADS_PER_WORD; one group's parameters
        body.push(`    let qg_${name} = (e_${name} * 4u) / GROUP_SIZE;`);
        const deq = dequantExpr(q, `q_quad(packed[e_${name} / QUADS_PER_WORD], e_${name} % QUADS_PER_WORD)`, {
          scale: `scales[qg_${name}]`,
          zeroPoint: `vec4<f32>(f32(zero_points[qg_${name}]))`,
          min: `vec4<f32>(mins[qg_${name}])`,
        });
        body.push(`    let vv_${name} = ${deq};`);
      } else if (vecValues && !q) body.push(`    let vv_${name} = values[e_${name}];`);
      for (let j = 0; j < V; j++) {
        const at = `e_${name} * ${V}u + ${j}u`;
        body.push(
          vecValues && (quadValues || !q)
            ? `    let v_${name}_${j} = vv_${name}.${'xyzw'[j]};`
            : q
              ? `    let v_${name}_${j} = kept_value(${at});`
              : `    let v_${name}_${j} = values[${at}];`,
        );
        body.push(
          oneWord
            ? `    let p_${name}_${j} = extractBits(iw_${name}, ib_${name} + ${j * w.indexBits}u, INDEX_BITS);`
            : `    let p_${name}_${j} = position(e_${name} * ${V}u + ${j}u);`,
        );
      }
      // value j belongs to group j / n of the step
      const groupOf = (j: number): number => Math.floor(j / w.n);
      if (quads) {
        // the kept values scattered to their positions: the step's dense values as vec4s
        for (let t = 0; t < quads; t++) {
          const gq = Math.floor(t / quadsPerGroup);
          const terms = Array.from({ length: V }, (_, j) => j)
            .filter((j) => groupOf(j) === gq)
            .map((j) => `select(vec4<f32>(0.0), vec4<f32>(v_${name}_${j}), vec4<u32>(p_${name}_${j}) == POS_${t % quadsPerGroup})`);
          body.push(`    let w_${name}_${t} = ${terms.join(' + ')};`);
        }
        for (let r = 0; r < R; r++) body.push(`    ${h}_${r}_${cc} += ${Array.from({ length: quads }, (_, t) => `dot(x${r}_${t}, w_${name}_${t})`).join(' + ')};`);
      } else {
        const at = (j: number): string => `k0 + ${groupOf(j) ? `${groupOf(j) * w.m}u + ` : ''}p_${name}_${j}`;
        for (let r = 0; r < R; r++) body.push(`    ${h}_${r}_${cc} += ${Array.from({ length: V }, (_, j) => `v_${name}_${j} * a_at(a_base, a_row_${r}, ${at(j)}, M)`).join(' + ')};`);
      }
    }
  });
  body.push(`    }`, `  }`);
  const { lines: reduce, workgroupVars } = laneReductionLines(laneGroupAccumulators(c, C, R), reduction, WG);
  body.push(...reduce, ...laneGroupStoreLines(c, C, R, L));
  const aElem = (k: string): string => toF32(c.dt.a, c.transA ? `a[base + (${k}) * rows + row]` : `a[base + row * K + ${k}]`);
  const fns: string[] = [];
  if (quads)
    fns.push(
      `// A[row, 4*kq .. 4*kq+3] of the batch at base (rows = M)`,
      `fn a_quad(base: u32, row: u32, kq: u32, rows: u32) -> vec4<f32> {`,
      aVec4 ? `  return ${toF32(c.dt.a, 'a[base / 4u + row * (K / 4u) + kq]', true)};` : `  let k = kq * 4u;\n  return vec4<f32>(${[0, 1, 2, 3].map((i) => aElem(`k + ${i}u`)).join(', ')});`,
      `}`,
    );
  else fns.push(`// A[row, k] of the batch at base (rows = M)`, `fn a_at(base: u32, row: u32, k: u32, rows: u32) -> f32 {`, `  return ${aElem('k')};`, `}`);
  if (q && !quadValues) {
    const g = (part: string): string => `${part}[ev / GROUP_SIZE]`;
    fns.push(
      ...qAtFn(q),
      `// kept value ev (row-major over the compacted values), dequantized with its group's parameters`,
      `fn kept_value(ev: u32) -> f32 {`,
      `  return ${dequantExpr(q, `q_at(packed[ev / ${32 / q.bits}u], (ev % ${32 / q.bits}u) * BITS)`, { scale: g('scales'), zeroPoint: `f32(${g('zero_points')})`, min: g('mins') })};`,
      `}`,
    );
  } else if (q) fns.push(...qQuadFn(q));
  if (!oneWord)
    fns.push(
      `// the position in its group of kept value e (INDEX_BITS bits; widths dividing 32 never straddle words)`,
      `fn position(e: u32) -> u32 {`,
      `  return extractBits(indices[(e * INDEX_BITS) / 32u], (e * INDEX_BITS) % 32u, INDEX_BITS);`,
      `}`,
    );
  fns.push('', ...storeFn(c));
  const name = `sparse-nm-gemv-${w.n}of${w.m}-i${w.indexBits}${q ? `-${dequantFormatTag(q)}` : ''}-l${L}-c${C}-r${R}-wg${WG}${reduction === 'none' ? '' : `-${reduction}`}`;
  return {
    family: 'sparse-nm-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: reduction === 'subgroup',
      header: [
        `// tensorwright kernel: N:M-sparse matmul (${name})`,
        `//   out[b, m, n] = ${gated ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * W[n, k]`,
        `//   W ${wgslComment(`[${c.N}, ${c.K}]`)}: ${w.n} of every ${w.m} k kept (${q ? `${q.bits}-bit ${q.signed ? 'signed' : 'unsigned'} values, (q${q.hasZeroPoint ? ' - zero_point' : ''}) * scale${q.hasMin ? ' - min' : ''} per group of ${q.groupSize} kept values` : 'f32 values'}, ${w.indexBits}-bit positions packed in u32 words)`,
        `//   groups of ${L} lane(s) split K's steps of ${GPS} N:M group(s) for ${C} column(s) x ${R} row(s); ${quads ? 'A read as vec4s, kept values scattered by position' : 'A gathered at the kept positions'}; f32 accumulation`,
      ],
      consts: [
        `const WORKGROUP_SIZE: u32 = ${WG}u;`,
        `const LANES_PER_COLUMN: u32 = ${L}u;`,
        `const GROUPS: u32 = ${groups}u; // lane groups per workgroup`,
        `const COLS: u32 = ${C}u;`,
        `const ROWS: u32 = ${R}u;`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        `const N_KEEP: u32 = ${w.n}u; // values kept per group of ${w.m}`,
        `const INDEX_BITS: u32 = ${w.indexBits}u;`,
        `const STEP_K: u32 = ${GPS * w.m}u; // k per step (${GPS} group(s))`,
        ...(oneWord ? [`const STEP_BITS: u32 = ${stepBits}u; // position bits per step`] : []),
        ...(q ? [`const BITS: u32 = ${q.bits}u; // bits per quantized value`, `const GROUP_SIZE: u32 = ${q.groupSize}u; // kept values per scale`] : []),
        ...(quadValues ? [`const QUADS_PER_WORD: u32 = ${8 / q!.bits}u; // steps of 4 values per packed word`] : []),
        ...Array.from({ length: quadsPerGroup }, (_, t) => `const POS_${t}: vec4<u32> = vec4<u32>(${[0, 1, 2, 3].map((i) => `${4 * t + i}u`).join(', ')});`),
        `const STEPS: u32 = ${steps}u; // steps per B row`,
        `const ITERS: u32 = ${Math.ceil(steps / L)}u; // steps per lane`,
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
