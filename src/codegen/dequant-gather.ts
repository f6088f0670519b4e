/**
 * The `dequant-embedding` kernel: an embedding lookup over a quantized `[V, D]` table (8, 4 or 2 bits, any group
 * size the weight store allows — dividing D, or the whole table — with optional zero points and offsets). Each
 * invocation computes one output element: it reads the packed `u32` word holding the element, extracts the integer
 * and dequantizes it with its group's parameters in registers (the helpers of `dequant.ts`, shared with the
 * dequantizing matmuls), then stores it as f32 or f16. Rows need not start on word boundaries, so any D works.
 *
 * Ids are read as the dense embedding kernel reads them ({@link embeddingRowLines}): negative ids count from the end,
 * and an id still out of range gives a zero row (default) or the nearest row.
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { addDequantBindings, dequantExpr, dequantFormatTag, qAtFn, type DequantWeightFormat } from './dequant.js';
import { embeddingRowLines, flatKernel, type EmbeddingSpec } from './gather.js';
import { KernelParams, type KernelBinding, type KernelSource } from './kernel.js';
import { storageType } from './wgsl.js';

/** What {@link generateDequantEmbeddingKernel} builds: the dense lookup's spec, with the table's storage. */
export interface DequantEmbeddingSpec extends Omit<EmbeddingSpec, 'dtype'> {
  /** Storage type of out (the table is dequantized in f32, then stored as this). */
  readonly dtype: 'f32' | 'f16';
  /** The table's storage. */
  readonly weight: DequantWeightFormat;
}

/**
 * Generates the `dequant-embedding` kernel: `out[t, d] = W[ids[t], d]`, W dequantized from its packed integers.
 * Bindings: `packed` (u32 words), `scales` (f32), then `zeroPoints` (i32) and `mins` (f32) when the format has them,
 * `ids` `[count]`, `out` `[count, D]`; params: count when dynamic.
 * @throws {@link ShapeError} for an empty table; {@link InputError} for a bit width or group size the weight store
 * does not allow.
 */
export function generateDequantEmbeddingKernel(spec: DequantEmbeddingSpec): KernelSource {
  const { vocab: V, dim: D, weight: w } = spec;
  if (!Number.isInteger(V) || V < 1 || !Number.isInteger(D) || D < 1) throw new ShapeError('gather', `table must be [V >= 1, D >= 1], got [${V}, ${D}]`);
  if (![8, 4, 2].includes(w.bits)) throw new InputError(`dequant-embedding: ${w.bits}-bit tables are not supported`);
  if (!(Number.isInteger(w.groupSize) && w.groupSize >= 1 && (D % w.groupSize === 0 || w.groupSize === V * D)))
    throw new InputError(`dequant-embedding: group size ${w.groupSize} must divide the row (${D}) or cover all ${V * D} elements`);
  const WG = spec.workgroupSize ?? 64;
  const params = new KernelParams();
  const count = spec.count ?? 'seq';
  const countRef = params.ref(count);
  const countGrid = params.grid(count);
  const st = storageType(spec.dtype);
  const idt = spec.indexDType ?? 'i32';
  const oor = spec.outOfRange ?? 'zero';
  const decls: string[] = [];
  const bindings: KernelBinding[] = [];
  addDequantBindings(w, decls, bindings);
  decls.push(`@group(0) @binding(${bindings.length}) var<storage, read> ids: array<${storageType(idt)}>; // [count]`);
  bindings.push({ name: 'ids', access: 'read' });
  decls.push(`@group(0) @binding(${bindings.length}) var<storage, read_write> out: array<${st}>; // [count, DIM]`);
  bindings.push({ name: 'out', access: 'read_write' });
  const value = dequantExpr(w, 'q', { scale: 'scales[g]', zeroPoint: 'f32(zero_points[g])', min: 'mins[g]' });
  const body = [
    '  let t = i / DIM;',
    '  let d = i % DIM;',
    ...embeddingRowLines(idt, oor, `${st}(0)`),
    '  let e = row * DIM + d; // flat index of the element in [VOCAB, DIM]',
    '  let g = e / GROUP_SIZE;',
    '  let q = q_at(packed[e / PER_WORD], (e % PER_WORD) * BITS);',
    `  out[i] = ${st === 'f32' ? value : `${st}(${value})`};`,
  ];
  const perTensor = w.groupSize === V * D && D % w.groupSize !== 0;
  return flatKernel({
    family: 'dequant-gather',
    variant: `dequant-embedding-${dequantFormatTag(w)}-${oor}-wg${WG}`,
    title: `embedding rows of a quantized [${V}, ${D}] table at ${count} ${idt} ids; out-of-range ids ${oor === 'zero' ? 'give zero rows' : 'clamp'}`,
    header: [
      `//   W: ${w.bits}-bit ${w.signed ? 'signed' : 'unsigned'} integers packed in u32 words, W = ${dequantExpr(w, 'q', { scale: 'scale', zeroPoint: 'zero_point', min: 'min' })} per group of ${w.groupSize}${perTensor ? ' (the whole table)' : ''}; out ${st}`,
    ],
    nodes: spec.nodes,
    dtypes: [spec.dtype],
    decls,
    bindings,
    params,
    consts: [`const VOCAB: u32 = ${V}u;`, `const DIM: u32 = ${D}u;`, `const BITS: u32 = ${w.bits}u;`, `const PER_WORD: u32 = ${32 / w.bits}u; // integers per packed word`, `const GROUP_SIZE: u32 = ${w.groupSize}u;`],
    functions: [...qAtFn(w), ''],
    total: `${countRef} * DIM`,
    totalGrid: typeof countGrid === 'number' ? countGrid * D : { mul: [countGrid, D] },
    body,
    workgroupSize: WG,
  });
}
