/**
 * The bridge from a llama-family model graph to the whole-step decode kernel (`decoder-step.ts`): the decoder's
 * shapes from the graph's config, its weights from the graph's weight store (by the names `buildLlama` gives them),
 * and whether the graph is the plain decoder the kernel computes.
 * @module
 */
import { attrsOf, isOp } from './ir/attrs.js';
import type { Graph } from './ir/graph.js';
import { UnsupportedOpError } from './errors.js';
import type { Target } from './ir/target.js';
import { WeightStore, type WeightEntry } from './ir/weights.js';
import { llamaHeadSize, llamaRopeInvFrequencies, type LlamaConfig } from './models/llama.js';
import { generateDecoderStepKernel, packDecoderStepWeights, type DecoderStepSpec, type DecoderStepWeights } from './codegen/decoder-step.js';
import type { KernelSource } from './codegen/kernel.js';
import { decoderStepFit, type DecoderStepChoice, type DecoderStepContext, type DecoderStepShape } from './codegen/schedule/decoder-step.js';
import type { BufferRef, PlanManifest } from './runtime/engine-manifest.js';

/** The plain decoder's weight names per layer (`layers.L.<name>`), and the global ones. */
const LAYER_NAMES = ['attention_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w1', 'w2', 'w3'] as const;
/** Weights a plain decoder may also hold: RoPE tables of scaled RoPE, which the kernel recomputes from the config. */
const IGNORED = new Set(['rope.cos', 'rope.sin']);

/** The decoder shape of a llama graph (`graph.meta.family === 'llama'`), or undefined for other graphs. */
export function decoderStepShapeOf(graph: Graph, maxPositions: number): DecoderStepShape | undefined {
  if (graph.meta.family !== 'llama') return undefined;
  const c = graph.meta.config as LlamaConfig;
  return {
    dim: c.dim,
    hiddenDim: c.hiddenDim,
    layers: c.nLayers,
    heads: c.nHeads,
    kvHeads: c.nKvHeads,
    headDim: llamaHeadSize(c),
    vocab: c.vocabSize,
    maxPositions,
    eps: c.normEps ?? 1e-5,
    ropeStyle: c.ropeStyle ?? 'interleaved',
  };
}

/** The graph's weights by name. */
function weightsByName(graph: Graph): Map<string, WeightEntry> {
  const m = new Map<string, WeightEntry>();
  for (const n of graph.nodes()) if (isOp(n, 'weight')) m.set(attrsOf(n, 'weight').name, graph.weights.get(n.attrs.id));
  return m;
}

/**
 * The decoder's weights as the kernel reads them, or undefined when the graph is not the plain decoder: a weight
 * that is not dense f32, a weight the kernel has no place for (q/k/v biases, outlier channels), or a matmul with
 * quantized activations.
 */
export function decoderStepWeightsOf(graph: Graph): DecoderStepWeights | undefined {
  if (graph.meta.family !== 'llama') return undefined;
  const c = graph.meta.config as LlamaConfig;
  for (const n of graph.nodes()) if (isOp(n, 'matmul') && (n.attrs as { actQuant?: unknown }).actQuant) return undefined;
  const byName = weightsByName(graph);
  const known = new Set([...IGNORED, 'tok_embeddings', 'norm', 'output']);
  for (let l = 0; l < c.nLayers; l++) for (const w of LAYER_NAMES) known.add(`layers.${l}.${w}`);
  for (const [name, e] of byName) if (!known.has(name) || e.encoding.kind !== 'dense' || e.dtype !== 'f32') return undefined;
  const values = (name: string): Float32Array | undefined => {
    const v = byName.get(name)?.data.values;
    return v instanceof Float32Array ? v : undefined;
  };
  const emb = values('tok_embeddings');
  const norm = values('norm');
  const cls = c.sharedClassifier ? emb : values('output');
  if (!emb || !norm || !cls) return undefined;
  const layers: DecoderStepWeights['layers'][number][] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const [attNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3] = LAYER_NAMES.map((w) => values(`layers.${l}.${w}`));
    if (!attNorm || !wq || !wk || !wv || !wo || !ffnNorm || !w1 || !w2 || !w3) return undefined;
    layers.push({ attNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3 });
  }
  return { layers, norm, ropeInv: llamaRopeInvFrequencies(c), cls, emb };
}

/** The rule's choice for a model graph, with the spec and weights when it is used. */
export interface DecoderStepDecision {
  /** The rule's answer. */
  readonly choice: DecoderStepChoice;
  /** What the kernel is generated from, when it is used. */
  readonly chosen?: { readonly spec: DecoderStepSpec; readonly weights: DecoderStepWeights };
}

/**
 * Whether the whole-step kernel replaces the decode plan of `graph` (the model as built, before the graph passes:
 * the kernel reads the weights as the model stores them) on `target`; with the spec and weights when it does.
 */
export function chooseDecoderStep(
  graph: Graph,
  maxPositions: number,
  target: Pick<Target, 'deviceClass' | 'limits' | 'kv'>,
  c: Omit<DecoderStepContext, 'plainWeights'> & {
    /** Whether the compile quantizes or sparsifies the weights (the kernel would read the f32 ones instead). */
    readonly compressed?: boolean;
  },
): DecoderStepDecision | undefined {
  const shape = decoderStepShapeOf(graph, maxPositions);
  if (!shape) return undefined;
  const weights = c.force === false || c.compressed ? undefined : decoderStepWeightsOf(graph);
  const choice = decoderStepFit(shape, target, { ...c, plainWeights: weights !== undefined });
  return choice.use && weights ? { choice, chosen: { spec: choice.spec, weights } } : { choice };
}

/** Where the plan's buffers come from: the compiler's kernel and weight tables, the logits slot, a scratch slot. */
export interface DecoderStepPlanContext {
  /** Adds a kernel to the engine's kernels; its index. */
  readonly addKernel: (k: KernelSource) => number;
  /** Adds a weight to the engine's weights; its index. */
  readonly addWeight: (e: WeightEntry) => number;
  /** The logits output's buffer. */
  readonly logits: BufferRef;
  /** The arena slot for the attention scores (`heads × maxPositions` f32). */
  readonly scoresSlot: number;
}

/** The one-token decode plan: the whole-step kernel, its packed weights, the KV pools, block table and logits. */
export function decoderStepPlanManifest(spec: DecoderStepSpec, weights: DecoderStepWeights, ctx: DecoderStepPlanContext): PlanManifest {
  const kernel = generateDecoderStepKernel(spec);
  const packed = packDecoderStepWeights(spec, weights);
  const weight = ctx.addWeight(WeightStore.entry('decoder-step.weights', 'f32', [packed.length], { values: packed }));
  const bindings: BufferRef[] = kernel.bindings.map(({ name }): BufferRef => {
    if (name === 'w') return { kind: 'weight', weight, part: 'values' };
    if (name === 'tokens' || name === 'positions') return { kind: 'input', name };
    if (name === 'block_table') return { kind: 'block-table' };
    if (name === 'scores') return { kind: 'arena', slot: ctx.scoresSlot, size: spec.heads * spec.maxPositions * 4 };
    if (name === 'logits') return ctx.logits;
    const m = /^([kv])_pool_(\d+)$/.exec(name);
    if (!m) throw new UnsupportedOpError(['decoder-step'], `the whole-step kernel binds '${name}', which the plan does not provide`);
    return { kind: 'kv', layer: Number(m[2]), which: m[1] as 'k' | 'v' };
  });
  return { name: 'decode', maxSeq: 1, dispatches: [{ kernel: ctx.addKernel(kernel), bindings, label: `decoder step (${spec.layers} layers, one workgroup)` }] };
}
