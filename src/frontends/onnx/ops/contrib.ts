/**
 * onnxruntime's `com.microsoft` contrib ops that carry block-quantized weights: `MatMulNBits` and
 * `GatherBlockQuantized`. Both become one quantized weight ({@link QuantizedEncoding}) that the encoded-weight kernels
 * read as stored, never a dense float copy:
 *
 * - `MatMulNBits(A, B, scales, zero_points?, g_idx?, bias?)`: B is `[N, ceil(K / block_size), block_size · bits / 8]`
 *   `uint8`, each row of K integers packed little-endian (low bits first), which is the encoding's own packing, so
 *   the bytes are kept as they are: a weight of logical shape `[N, K]` (groups of `block_size` along K) read by a
 *   `matmul` with `transB`. Packed `uint8` zero points are unpacked per block (absent: `2^(bits-1)`); float zero
 *   points that are whole numbers become integer zero points, others a per-block offset `zero_point · scale`.
 * - `GatherBlockQuantized(data, indices, scales, zero_points?)` with `gather_axis` 0 and `quantize_axis` the last
 *   axis: the table is stored `[d0, d1 · … · dn]` (row-major groups unchanged) and the looked-up rows reshaped back.
 *
 * Bad input is a {@link ModelFormatError} naming the node and the constraint (B's shape, `block_size` a power of two
 * of at least 16, scale and zero-point counts); what the encoding cannot hold (`bits` other than 2, 4 or 8, `g_idx`,
 * K no multiple of `block_size`, weights computed at run time) is reported unsupported, naming the node.
 * @module
 */
import { isFloat, type DType } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import { packBits, unpackBits, WeightStore, type WeightArray } from '../../../ir/weights.js';
import type { OpContext } from '../context.js';
import { narrowIntBits, OnnxType } from '../tensor.js';
import type { Converter } from './types.js';

/** The values of a constant input, or an unsupported-node error saying the input must be an initializer. */
function constantInput(c: OpContext, i: number, what: string): ArrayLike<number> {
  const n = c.x(i);
  const v = c.readValues(n);
  if (!v) c.unsupported(`${what} ('${c.node.input[i]}') must be an initializer (a constant): it is read as a quantized weight`);
  return v;
}

function staticShape(c: OpContext, n: Node, what: string): number[] {
  if (!n.shape.every((d) => typeof d === 'number')) throw c.malformed(`${what} must have a static shape, got [${n.shape.join(', ')}]`);
  return n.shape as number[];
}

/** Per-group integer zero points, or offsets (`zero_point · scale`) for float zero points that are not whole numbers. */
function floatZeroPoints(zp: ArrayLike<number>, scales: Float32Array): { zeroPoints?: Int32Array; mins?: Float32Array } {
  if (Array.from(zp).every((z) => Number.isInteger(z))) return { zeroPoints: Int32Array.from(zp) };
  return { mins: Float32Array.from(scales, (s, g) => zp[g] * s) };
}

const matMulNBits: Converter = (c: OpContext) => {
  const K = c.int('K');
  const N = c.int('N');
  const bits = c.int('bits', 4);
  const block = c.int('block_size');
  if (!(Number.isInteger(K) && K > 0 && Number.isInteger(N) && N > 0)) throw c.malformed(`K (${K}) and N (${N}) must be positive`);
  if (!(block >= 16 && (block & (block - 1)) === 0)) throw c.malformed(`block_size ${block} must be a power of two of at least 16`);
  if (bits !== 2 && bits !== 4 && bits !== 8) c.unsupported(`bits ${bits}: tensorwright reads 2-, 4- and 8-bit MatMulNBits weights`);
  if (c.hasInput(4)) c.unsupported(`g_idx ('${c.node.input[4]}'): act-order (a permuted K) is not supported`);
  const a = c.x(0);
  const dtype: DType = a.dtype;
  if (!isFloat(dtype)) throw c.malformed(`A must be float, got ${dtype}`);
  if (a.rank < 1 || a.shape[a.rank - 1] !== K) throw c.malformed(`A [${a.shape.join(', ')}] must end in K = ${K}`);
  const blocks = Math.ceil(K / block);
  const blobBytes = (block * bits) / 8;
  const bShape = staticShape(c, c.x(1), 'B');
  if (c.type(1) !== OnnxType.UINT8 || bShape.length !== 3 || bShape[0] !== N || bShape[1] !== blocks || bShape[2] !== blobBytes)
    throw c.malformed(`B must be uint8 [N, ceil(K / block_size), block_size · bits / 8] = [${N}, ${blocks}, ${blobBytes}], got [${bShape.join(', ')}]`);
  if (K % block !== 0) c.unsupported(`K ${K} is no multiple of block_size ${block} (padded blocks are not supported)`);
  const packed = Uint8Array.from(constantInput(c, 1, 'B'));
  const s = constantInput(c, 2, 'scales');
  if (s.length !== N * blocks) throw c.malformed(`scales must hold N · ceil(K / block_size) = ${N * blocks} values, got ${s.length}`);
  const scales = Float32Array.from(s);
  const data: Record<string, WeightArray> = { packed, scales };
  if (c.hasInput(3) && isFloat(c.x(3).dtype)) {
    const zp = constantInput(c, 3, 'zero_points');
    if (zp.length !== N * blocks) throw c.malformed(`float zero_points must hold N · ceil(K / block_size) = ${N * blocks} values, got ${zp.length}`);
    Object.assign(data, floatZeroPoints(zp, scales));
  } else if (c.hasInput(3)) {
    const rowBytes = Math.ceil((blocks * bits) / 8);
    const zp = constantInput(c, 3, 'zero_points');
    if (c.type(3) !== OnnxType.UINT8 || zp.length !== N * rowBytes) throw c.malformed(`packed zero_points must be uint8 with N · ceil(ceil(K / block_size) · bits / 8) = ${N * rowBytes} bytes, got ${zp.length}`);
    const bytes = Uint8Array.from(zp);
    data.zeroPoints = Int32Array.from({ length: N * blocks }, (_v, g) => unpackBits(bytes.subarray(Math.floor(g / blocks) * rowBytes), g % blocks, bits));
  } else data.zeroPoints = new Int32Array(N * blocks).fill(1 << (bits - 1));
  const name = c.node.input[1];
  const entry = WeightStore.entry(name, dtype, [N, K], data, {
    kind: 'quantized',
    bits,
    signed: false,
    groupSize: block,
    hasZeroPoint: !!data.zeroPoints,
    scaleDType: dtype === 'f16' ? 'f16' : 'f32',
    ...(data.mins ? { hasMin: true } : {}),
  });
  let y = c.op('matmul', [a.rank === 1 ? c.reshape(a, [1, K]) : a, c.addWeight(entry)], { transA: false, transB: true });
  if (a.rank === 1) y = c.reshape(y, [N]);
  const bias = c.opt(5);
  if (bias) {
    if (bias.rank !== 1 || bias.shape[0] !== N) throw c.malformed(`bias must be [N] = [${N}], got [${bias.shape.join(', ')}]`);
    y = c.op('add', [y, bias]);
  }
  return [c.out(y, c.type(0))];
};

const gatherBlockQuantized: Converter = (c: OpContext) => {
  const data = c.x(0);
  const shape = staticShape(c, data, 'data');
  const rank = shape.length;
  const norm = (axis: number): number => (axis < 0 ? axis + rank : axis);
  const gatherAxis = norm(c.int('gather_axis', 0));
  const quantizeAxis = norm(c.int('quantize_axis', 1));
  const block = c.int('block_size', 128);
  if (!(block >= 16 && (block & (block - 1)) === 0)) throw c.malformed(`block_size ${block} must be a power of two of at least 16`);
  if (rank < 2 || gatherAxis !== 0 || quantizeAxis !== rank - 1)
    c.unsupported(`gather_axis ${gatherAxis} with quantize_axis ${quantizeAxis} on rank ${rank}: only gather_axis 0 over blocks along the last axis is supported`);
  const type = c.type(0);
  const nb = narrowIntBits(type);
  const packedBytes = type === OnnxType.UINT8;
  const bits = packedBytes ? c.int('bits', 4) : nb?.bits;
  if (bits !== 4 && bits !== 8) return c.unsupported(`data of ${bits ?? 'this'}-bit integers: 4 and 8 bits are supported`);
  const signed = !packedBytes && !!nb?.signed;
  const last = shape[rank - 1];
  // uint8 data with bits 4 packs two integers per byte along the last axis; int4/uint4 initializers decode to one each
  const logicalLast = packedBytes ? (last * 8) / bits : last;
  if (logicalLast % block !== 0) c.unsupported(`the quantized axis (${logicalLast} values) is no multiple of block_size ${block}`);
  const q = constantInput(c, 0, 'data');
  const rows = shape[0];
  const cols = (shape.slice(1, -1).reduce((p, d) => p * d, 1) * logicalLast) as number;
  const groups = (rows * cols) / block;
  const s = constantInput(c, 2, 'scales');
  if (s.length !== groups) throw c.malformed(`scales must hold one value per block (${groups}), got ${s.length}`);
  const scales = Float32Array.from(s);
  const payload: Record<string, WeightArray> = { packed: packedBytes ? Uint8Array.from(q) : packBits(q, bits), scales };
  if (c.hasInput(3)) {
    const z = constantInput(c, 3, 'zero_points');
    const zp = packedBytes ? Int32Array.from({ length: groups }, (_v, g) => unpackBits(Uint8Array.from(z), g, bits)) : Int32Array.from(z);
    if (zp.length !== groups) throw c.malformed(`zero_points must hold one value per block (${groups}), got ${zp.length}`);
    payload.zeroPoints = zp;
  } else if (packedBytes) payload.zeroPoints = new Int32Array(groups).fill(1 << (bits - 1));
  const dtype: DType = c.x(2).dtype === 'f16' ? 'f16' : 'f32';
  const entry = WeightStore.entry(c.node.input[0], dtype, [rows, cols], payload, {
    kind: 'quantized',
    bits,
    signed,
    groupSize: block,
    hasZeroPoint: !!payload.zeroPoints,
    scaleDType: dtype === 'f16' ? 'f16' : 'f32',
  });
  const ids = c.x(1);
  const y = c.op('gather', [c.addWeight(entry), ids], { axis: 0 });
  return [c.out(c.reshape(y, [...ids.shape, ...shape.slice(1, -1), logicalLast]), c.type(2))];
};

/** The `com.microsoft` converters, by op type. */
export const MICROSOFT_CONVERTERS: Readonly<Record<string, Converter>> = {
  MatMulNBits: matMulNBits,
  GatherBlockQuantized: gatherBlockQuantized,
};
