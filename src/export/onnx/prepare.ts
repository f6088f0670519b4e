/**
 * Preparing a model's graph for ONNX export: the target-independent part of the optimizer
 * ({@link ONNX_EXPORT_PASSES}: folding, simplification, recognition of norms/activations/RoPE/attention, CSE,
 * projection merging, sparsity and quantization of the weights, DCE — everything before the passes that choose
 * precisions, layouts and kernels for a device), and {@link positionsFromIota}, which makes a causal LM's `positions`
 * input (`0 … seq-1` for a forward without KV cache) a slice of a constant, so the exported model takes token ids only.
 * @module
 */
import { InputError } from '../../errors.js';
import { weightNode } from '../../ir/builder.js';
import { Graph } from '../../ir/graph.js';
import { makeNode, withInputs, type Node } from '../../ir/node.js';
import { WeightStore } from '../../ir/weights.js';
import { runPasses, type PipelineResult } from '../../passes/pipeline.js';
import type { QuantScheme } from '../../ir/quant-scheme.js';
import type { SparsityScheme } from '../../ir/sparsity-scheme.js';

/**
 * The passes run before export: the optimizer up to weight compression (what O2 and O3 share, less `mixed-precision`
 * and `layout`, which choose for a device, and the fusions, whose kernels ONNX has no form of).
 */
export const ONNX_EXPORT_PASSES =
  'fold-constants,simplify,recognize-norms,recognize-activations,recognize-rope,recognize-attention,simplify,fold-constants,cse,merge-projections,sparsify-weights,quantize-weights,dce';

/** Options of {@link prepareForOnnx}. */
export interface PrepareForOnnxOptions {
  /** Pass pipeline (default {@link ONNX_EXPORT_PASSES}); any spec `runPasses` takes (fused nodes export too). */
  readonly passes?: string;
  /** Weight quantization (parsed scheme; absent: none). */
  readonly quant?: QuantScheme;
  /** Weight sparsity (parsed pattern; absent: none). */
  readonly sparsity?: SparsityScheme;
}

/** Runs the export pipeline (with the weight compression asked for) over `graph`. */
export function prepareForOnnx(graph: Graph, opts: PrepareForOnnxOptions = {}): PipelineResult {
  const options = { ...(opts.quant ? { quant: opts.quant } : {}), ...(opts.sparsity ? { sparsity: opts.sparsity } : {}) };
  return runPasses(graph, opts.passes ?? ONNX_EXPORT_PASSES, { options });
}

/**
 * `graph` with its i32 `[seq]` input `input` (default `positions`) replaced by `slice(iota, 0, seq)`, `iota` being an
 * i32 weight `0 … maxPositions-1`: the positions of a forward over the whole sequence. The input is dropped from the
 * graph's inputs.
 * @throws InputError when the graph has no such input, or it is not an i32 vector.
 */
export function positionsFromIota(graph: Graph, maxPositions: number, input = 'positions'): Graph {
  const pos = graph.inputs.find((i) => i.attrs.name === input);
  if (!pos) throw new InputError(`the graph has no '${input}' input (inputs: ${graph.inputs.map((i) => i.attrs.name).join(', ')})`);
  if (pos.dtype !== 'i32' || pos.rank !== 1) throw new InputError(`input '${input}' is ${pos.typeString()}; positions must be i32 [seq]`);
  if (!(Number.isInteger(maxPositions) && maxPositions > 0)) throw new InputError(`maxPositions must be a positive integer, got ${maxPositions}`);
  const iota = WeightStore.entry(`${input}.iota`, 'i32', [maxPositions], { values: Int32Array.from({ length: maxPositions }, (_v, i) => i) });
  const replacement = makeNode('slice', [weightNode(iota)], { axes: [0], starts: [0], ends: [pos.shape[0]], steps: [1] });
  const rebuilt = new Map<Node, Node>([[pos, replacement]]);
  for (const n of graph.nodes()) if (!rebuilt.has(n)) rebuilt.set(n, withInputs(n, n.inputs.map((x) => rebuilt.get(x)!)));
  return new Graph(
    graph.inputs.filter((i) => i !== pos),
    graph.outputs.map((o) => ({ name: o.name, node: rebuilt.get(o.node)! })),
    graph.weights.with(iota),
    graph.meta,
  );
}
