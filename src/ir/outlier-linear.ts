/**
 * The mixed decomposition of a linear layer that keeps a few outlier input channels in f32 (LLM.int8-style):
 *
 * `y = x·Wᵀ + gather(x, indices, last axis)·W_outᵀ`
 *
 * `W` (`[N, K]`, typically quantized) is the layer's stored weight, `W_out` (`[N, indices.length]`, f32) holds the
 * outlier channels' correction, and `indices` is a small i32 constant. The Llama builder (`OutlierChannels`) and the
 * compressor (`src/compress/outliers.ts`) both build this one form, so a compressed graph and the graph rebuilt from
 * its GGUF file are the same nodes.
 * @module
 */
import type { ActivationQuant } from './attrs.js';
import { makeNode, type Node } from './node.js';

/**
 * `x·Wᵀ + x[…, indices]·W_outᵀ` (both matmuls with `transB`; no bias). With `actQuant` (W8A8,
 * `src/compress/w8a8.ts`) the main matmul quantizes its activations; the side matmul reads the outlier channels of `x`
 * unquantized.
 */
export function outlierLinear(x: Node, weight: Node, outlierWeight: Node, indices: readonly number[], actQuant?: ActivationQuant): Node {
  const idx = makeNode('constant', [], { dtype: 'i32', shape: [indices.length], values: [...indices] });
  const picked = makeNode('gather', [x, idx], { axis: x.shape.length - 1 });
  const mm = (a: Node, w: Node, q?: ActivationQuant): Node => makeNode('matmul', [a, w], { transA: false, transB: true, ...(q ? { actQuant: q } : {}) });
  return makeNode('add', [mm(x, weight, actQuant), mm(picked, outlierWeight)]);
}
