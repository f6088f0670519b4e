/**
 * Repacking quantized weights, losslessly, into the layout the encoded-weight kernels read: the `dequant-matmul`
 * family reads B stored `[N, K]` (`transB`) with f32 scales, the `dequant-gather` family a table with f32 scales.
 * Importers keep a file's own layout (ONNX stores MatMul weights `[K, N]`; f16 models carry f16 scales), so:
 *
 * - `matmul(x, transpose(W))` over a quantized `W` becomes `matmul(x, W)` with the other `transB` (ONNX Q/DQ imports
 *   store per-column and row-blocked scales transposed; `simplify` does the same at O1 and above);
 * - `matmul(x, W)` over a quantized `W` stored `[K, N]` whose groups survive a transpose (one group for the whole
 *   tensor) gets a transposed `[N, K]` copy of the integers, read with `transB`. Groups along N (per-row or blocked
 *   along the stored last axis) cannot be regrouped along K without one scale per element: such a weight stays as it
 *   is, and kernel selection names it;
 * - a quantized matmul weight or embedding table with f16 scales gets f32 scales (every f16 value is exact in f32).
 *
 * The integers, scales, zero points and offsets are the same values: decoding the new entry gives exactly the old
 * values (transposed). Each weight is repacked once, however many nodes read it.
 * @module
 */
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { halfToFloat, packBits, unpackBits, WeightStore, type QuantizedEncoding, type WeightEntry } from '../ir/weights.js';
import { countMatches, type Pass } from './pass.js';
import { rewriteGraph, type RewriteContext, type RewriteRule } from './rewrite.js';

/** A quantized entry's scales as f32 (stored f32 already, or half bits). */
function f32Scales(e: WeightEntry): Float32Array {
  const s = e.data.scales;
  return s instanceof Float32Array ? s : Float32Array.from(s, (h) => halfToFloat(h));
}

/**
 * The entry with f32 scales (the same entry when they are).
 * @internal
 */
export function withF32Scales(e: WeightEntry): WeightEntry {
  const enc = e.encoding as QuantizedEncoding;
  if (enc.scaleDType === 'f32') return e;
  return WeightStore.entry(e.name, e.dtype, e.shape, { ...e.data, scales: f32Scales(e) }, { ...enc, scaleDType: 'f32' });
}

/**
 * Whether a `[K, N]` quantized weight can be stored `[N, K]` with the same groups: one group for the whole tensor.
 * @internal
 */
export function transposableGroups(e: WeightEntry): boolean {
  const enc = e.encoding as QuantizedEncoding;
  return e.shape.length === 2 && enc.groupSize === e.shape[0] * e.shape[1];
}

/**
 * A `[K, N]` quantized weight (one group) as a `[N, K]` one: the integers transposed, scales (as f32) and zero point kept.
 * @internal
 */
export function transposeQuantized(e: WeightEntry): WeightEntry {
  const enc = e.encoding as QuantizedEncoding;
  const [K, N] = e.shape;
  const packed = e.data.packed as Uint8Array;
  const q = new Uint8Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) q[n * K + k] = unpackBits(packed, k * N + n, enc.bits);
  return WeightStore.entry(`${e.name}^T`, e.dtype, [N, K], { ...e.data, packed: packBits(q, enc.bits), scales: f32Scales(e) }, { ...enc, scaleDType: 'f32' });
}

function isQuantized(w: Node, rctx: RewriteContext): boolean {
  return isOp(w, 'weight') && rctx.weights.get(w.attrs.id).encoding.kind === 'quantized';
}

/** The `repack-quantized-weights` pass. */
export const repackQuantizedWeightsPass: Pass = {
  name: 'repack-quantized-weights',
  description: 'store quantized matmul weights [N, K] (transposing [K, N] ones whose groups allow it) with f32 scales, as the dequantizing kernels read them',
  run(graph, ctx) {
    const done = new Map<string, Node>();
    // the repacked weight node for `w` (undefined when it needs nothing or cannot be repacked)
    const repacked = (w: Node, transpose: boolean, rctx: RewriteContext): Node | undefined => {
      if (!isOp(w, 'weight')) return undefined;
      const e = rctx.weights.get(w.attrs.id);
      if (e.encoding.kind !== 'quantized') return undefined;
      if (transpose && !transposableGroups(e)) return undefined;
      if (!transpose && e.encoding.scaleDType === 'f32') return undefined;
      const key = `${e.id}:${transpose ? 'nk' : 'f32'}`;
      let n = done.get(key);
      if (!n) done.set(key, (n = rctx.addWeight(transpose ? transposeQuantized(e) : withF32Scales(e))));
      return n;
    };
    const rules: RewriteRule[] = [
      {
        name: 'quantized-matmul-weight-nk',
        root: 'matmul',
        apply({ node }, rctx) {
          const [x, b] = node.inputs;
          if (b.rank !== 2) return undefined;
          // a transposed weight (ONNX Q/DQ imports store per-column scales so) is read with the other transB
          const swapped = isOp(b, 'transpose') && isOp(b.inputs[0], 'weight');
          const w = swapped ? b.inputs[0] : b;
          const transB = attrsOf(node, 'matmul').transB !== swapped;
          const q = repacked(w, !transB, rctx) ?? (swapped && transB && isQuantized(w, rctx) ? w : undefined);
          return q && makeNode('matmul', [x, q], { ...node.attrs, transB: true });
        },
      },
      {
        name: 'quantized-table-f32-scales',
        root: 'gather',
        apply({ node }, rctx) {
          const [table, ids] = node.inputs;
          const q = repacked(table, false, rctx);
          return q && makeNode('gather', [q, ids], node.attrs);
        },
      },
    ];
    const r = rewriteGraph(graph, rules, { options: ctx.options });
    countMatches(ctx, r.matches);
    if (done.size) ctx.report.add({ pass: 'repack-quantized-weights', kind: 'layout', message: `${done.size} quantized weight(s) repacked (${Object.entries(r.matches).map(([k, v]) => `${k} ×${v}`).join(', ')})` });
    return r.graph;
  },
};
