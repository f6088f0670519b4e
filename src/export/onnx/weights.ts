/**
 * Weights as ONNX initializers. Dense weights are written as they are (`raw_data`). Quantized weights keep their
 * packed integers where onnxruntime has an op that reads them:
 *
 * - `matmul(x, W)` with `W` stored `[N, K]` (`transB`) becomes `com.microsoft::MatMulNBits`: B is
 *   `uint8 [N, K / block_size, block_size · bits / 8]`, the encoding's own packing (integers little-endian, low bits
 *   first, rows of K), scales `[N, K / block_size]`, and zero points `uint8 [N, ceil(blocks · bits / 8)]` packed per
 *   row the same way (absent: onnxruntime's default `2^(bits-1)`);
 * - `gather(T, ids)` over a `[V, D]` table becomes `com.microsoft::GatherBlockQuantized` (`uint8` data packed along
 *   the last axis, `gather_axis` 0, `quantize_axis` 1, explicit zero points).
 *
 * Signed (symmetric) integers are stored unsigned with their sign bit flipped (`q + 2^(bits-1)`), the zero point
 * moving by the same amount, so every value `(q - zero_point) · scale` is the same number. What these ops cannot
 * hold (2-bit integers in a gather, a per-group offset (`hasMin`), blocks that are no power of two of at least 16,
 * zero points out of range), codebooks and sparse encodings are written as dense tensors of their decoded values —
 * the numbers the CPU reference backend computes with — and the export's notes say which.
 * @module
 */
import { decodeWeight, floatToHalf, type QuantizedEncoding, type WeightEntry } from '../../ir/weights.js';
import { OnnxDataType, onnxDataType, type OnnxGraphWriter } from './graph-writer.js';

/** The payload of a quantized weight in onnxruntime's block layout. */
export interface BlockQuantized {
  /** Packed unsigned integers, rows of K. */
  readonly packed: Uint8Array;
  /** f32 scales, one per block, row-major `[N, blocks]`. */
  readonly scales: Float32Array;
  /** Packed unsigned zero points, `ceil(blocks · bits / 8)` bytes per row, or absent for the default `2^(bits-1)`. */
  readonly zeroPoints?: Uint8Array;
  /** Bits per integer. */
  readonly bits: 2 | 4 | 8;
  /** Elements per block (the encoding's group size). */
  readonly blockSize: number;
  /** Rows (N, or V for a table). */
  readonly rows: number;
  /** Row length (K, or D for a table). */
  readonly cols: number;
}

/**
 * `e` in onnxruntime's block layout, or why it cannot be: a 2-D quantized weight with groups along its rows that are a
 * power of two of at least 16, no per-group offset, and zero points that fit the stored bits once unsigned.
 */
export function blockQuantized(e: WeightEntry): BlockQuantized | string {
  const enc = e.encoding;
  if (enc.kind !== 'quantized') return `${enc.kind} storage has no onnxruntime op`;
  if (e.shape.length !== 2) return `a quantized weight of rank ${e.shape.length} (2 needed)`;
  if (e.dtype !== 'f32') return `logical dtype ${e.dtype} (f32 needed)`;
  const [rows, cols] = e.shape;
  const block = enc.groupSize;
  if (cols % block !== 0) return `groups of ${block} do not run along rows of ${cols}`;
  if (!(block >= 16 && (block & (block - 1)) === 0)) return `group size ${block} is no power of two of at least 16 (block_size)`;
  if (enc.hasMin) return 'per-group offsets (hasMin) have no zero-point form';
  const packed = unsignedPacked(e, enc);
  const blocks = cols / block;
  const half = 1 << (enc.bits - 1);
  const zps = e.data.zeroPoints as Int32Array | undefined;
  const shift = enc.signed ? half : 0;
  const zpOf = (g: number): number => (enc.hasZeroPoint && zps ? zps[g] : 0) + shift;
  let defaultZp = true;
  for (let g = 0; g < rows * blocks; g++) {
    const z = zpOf(g);
    if (!(Number.isInteger(z) && z >= 0 && z < 1 << enc.bits)) return `zero point ${z} of group ${g} does not fit ${enc.bits} unsigned bits`;
    if (z !== half) defaultZp = false;
  }
  const scales = e.data.scales instanceof Float32Array ? e.data.scales.subarray(0, rows * blocks) : Float32Array.from(e.data.scales.subarray(0, rows * blocks));
  let zeroPoints: Uint8Array | undefined;
  if (!defaultZp) {
    const rowBytes = Math.ceil((blocks * enc.bits) / 8);
    zeroPoints = new Uint8Array(rows * rowBytes);
    for (let r = 0; r < rows; r++)
      for (let b = 0; b < blocks; b++) {
        const bit = b * enc.bits;
        zeroPoints[r * rowBytes + (bit >> 3)] |= zpOf(r * blocks + b) << (bit & 7);
      }
  }
  return { packed, scales, ...(zeroPoints ? { zeroPoints } : {}), bits: enc.bits, blockSize: block, rows, cols };
}

/** The packed integers of `e` as unsigned ones: signed values get their sign bit flipped (`q + 2^(bits-1)`). */
function unsignedPacked(e: WeightEntry, enc: QuantizedEncoding): Uint8Array {
  const n = e.shape.reduce((a, b) => a * b, 1);
  const src = (e.data.packed as Uint8Array).subarray(0, Math.ceil((n * enc.bits) / 8));
  if (!enc.signed) return src;
  const mask = enc.bits === 8 ? 0x80 : enc.bits === 4 ? 0x88 : 0xaa;
  return Uint8Array.from(src, (b) => b ^ mask);
}

/** Emits the dense initializer of `e` (decoded values for encoded weights) and returns its name. */
export function denseInitializer(w: OnnxGraphWriter, e: WeightEntry): string {
  const enc = e.encoding;
  const dims = [...e.shape];
  if (enc.kind === 'dense') {
    const v = e.data.values;
    const n = dims.reduce((a, b) => a * b, 1);
    return w.initializer(e.name, onnxDataType(e.dtype), dims, v.subarray(0, n));
  }
  const values = decodeWeight(e);
  if (e.dtype === 'f16') return w.initializer(e.name, OnnxDataType.FLOAT16, dims, Uint16Array.from(values, floatToHalf));
  return w.initializer(e.name, OnnxDataType.FLOAT, dims, values);
}

/** Emits `com.microsoft::MatMulNBits(a, B)` for `a · Wᵀ` with `W` = `q`; returns the output name. */
export function emitMatMulNBits(w: OnnxGraphWriter, a: string, name: string, q: BlockQuantized): string {
  const blocks = q.cols / q.blockSize;
  const b = w.initializer(`${name}.qweight`, OnnxDataType.UINT8, [q.rows, blocks, (q.blockSize * q.bits) / 8], q.packed);
  const s = w.initializer(`${name}.scales`, OnnxDataType.FLOAT, [q.rows, blocks], q.scales);
  const inputs = [a, b, s];
  if (q.zeroPoints) inputs.push(w.initializer(`${name}.zero_points`, OnnxDataType.UINT8, [q.zeroPoints.byteLength], q.zeroPoints));
  return w.op('MatMulNBits', inputs, { K: q.cols, N: q.rows, bits: q.bits, block_size: q.blockSize }, 'com.microsoft');
}

/**
 * Emits `com.microsoft::GatherBlockQuantized(table, ids)` for rows `ids` of the `[V, D]` table `q` (4- or 8-bit,
 * explicit zero points); returns the output name.
 */
export function emitGatherBlockQuantized(w: OnnxGraphWriter, ids: string, name: string, q: BlockQuantized): string {
  const blocks = q.cols / q.blockSize;
  const data = w.initializer(`${name}.qdata`, OnnxDataType.UINT8, [q.rows, (q.cols * q.bits) / 8], q.packed);
  const s = w.initializer(`${name}.scales`, OnnxDataType.FLOAT, [q.rows, blocks], q.scales);
  const rowBytes = Math.ceil((blocks * q.bits) / 8);
  const zp = q.zeroPoints ?? defaultZeroPoints(q, blocks, rowBytes);
  const z = w.initializer(`${name}.zero_points`, OnnxDataType.UINT8, [q.rows, rowBytes], zp);
  return w.op('GatherBlockQuantized', [data, ids, s, z], { gather_axis: 0, quantize_axis: 1, block_size: q.blockSize, bits: q.bits }, 'com.microsoft');
}

function defaultZeroPoints(q: BlockQuantized, blocks: number, rowBytes: number): Uint8Array {
  const out = new Uint8Array(q.rows * rowBytes);
  const half = 1 << (q.bits - 1);
  for (let r = 0; r < q.rows; r++)
    for (let b = 0; b < blocks; b++) {
      const bit = b * q.bits;
      out[r * rowBytes + (bit >> 3)] |= half << (bit & 7);
    }
  return out;
}
