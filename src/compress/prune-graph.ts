/**
 * Pruning a whole causal-LM graph: scores every prunable matmul weight with one saliency (`saliency.ts`,
 * `gradient-saliency.ts`) on calibration token windows, selects masks under a pattern ({@link selectMasks}), zeroes
 * the pruned weights (they stay dense f32: a `--sparsity` compile of the result re-encodes them), or prunes and
 * reconstructs with SparseGPT ({@link sparseGptPrune}, `method: 'sparsegpt'`), and optionally
 * fine-tunes with the masks fixed ({@link maskedFinetune}).
 *
 * **Pruned weights**: the 2-D f32 weights read by `matmul(x, W)` with `transB` (`[N, K]`), except embedding tables
 * (weights a `gather` reads, which covers a classifier tied to the embedding) and the classifier (a matmul whose N is
 * the vocabulary of the `logits` output), which pruning papers leave dense too.
 *
 * **Calibration**: Wanda's input norms come from {@link captureMatmulInputs} (the interpreter's observer hook, CPU
 * reference backend); SNIP, GraSP and Fisher from gradients of the mean next-token cross-entropy of each window
 * ({@link nextTokenLossGraph}) through reverse-mode autodiff; fine-tuning uses the same windows as batches, cycling.
 * @module
 */
import type { AdamOptions } from '../autodiff/adam.js';
import { withWeightValues } from '../autodiff/weights-as-inputs.js';
import { InputError } from '../errors.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { decodeWeight, WeightStore, type WeightEntry } from '../ir/weights.js';
import { Tensor } from '../runtime/cpu/tensor.js';
import { captureMatmulInputs, weightMatmuls } from './capture.js';
import { replaceWeights } from './compress-graph.js';
import { gradientSaliencies } from './gradient-saliency.js';
import { maskedFinetune } from './masked-finetune.js';
import { nextTokenBatches, nextTokenLossGraph, ParameterGradients } from './parameter-gradients.js';
import { patternName, patternSparsity, selectMasks, type PrunePattern, type PruneScope } from './prune-mask.js';
import { inputChannelNorms, magnitudeSaliency, needsGradients, SALIENCY_METHODS, wandaSaliency, type SaliencyMethod } from './saliency.js';
import { sparseGptPrune } from './sparsegpt.js';

/** A pruning method: a saliency, or SparseGPT. */
export type PruneMethod = SaliencyMethod | 'sparsegpt';

/** The methods, for help texts. */
export const PRUNE_METHODS: readonly PruneMethod[] = [...SALIENCY_METHODS, 'sparsegpt'];

/** Options of {@link pruneGraph}. */
export interface PruneOptions {
  /** The saliency, or `sparsegpt` (mask and reconstruction: {@link sparseGptPrune}). */
  readonly method: PruneMethod;
  /** The pattern. */
  readonly pattern: PrunePattern;
  /** Share of weights pruned, in [0, 1) (implied by an N:M pattern). */
  readonly sparsity?: number;
  /** Which weights compete (default: `row` for Wanda, as its paper compares per output, else `layer`). */
  readonly scope?: PruneScope;
  /** Fine-tuning steps after pruning (default 0). */
  readonly finetuneSteps?: number;
  /** Adam's hyper-parameters for fine-tuning (default lr 5e-4). */
  readonly adam?: AdamOptions;
  /** GraSP's finite-difference step (see `gradient-saliency.ts`). */
  readonly graspStep?: number;
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
}

/** One pruned weight in the report. */
export interface PrunedLayer {
  /** The weight's name. */
  readonly name: string;
  /** `[N, K]`. */
  readonly shape: readonly [number, number];
  /** Weights kept. */
  readonly kept: number;
  /** Weights in all. */
  readonly total: number;
  /** Achieved sparsity: `1 − kept / total`. */
  readonly sparsity: number;
}

/** The result of {@link pruneGraph}. */
export interface PruneResult {
  /** The graph with the pruned weights zeroed (and fine-tuned, with `finetuneSteps`). */
  readonly graph: Graph;
  /** The masks (1 = kept), by weight name. */
  readonly masks: ReadonlyMap<string, Uint8Array>;
  /** One row per pruned weight, in graph order. */
  readonly layers: readonly PrunedLayer[];
  /** The scope the masks were selected in (absent when nothing was masked). */
  readonly scope?: PruneScope;
  /** Achieved sparsity over every pruned weight together. */
  readonly sparsity: number;
  /** Calibration positions (tokens fed, over every window). */
  readonly calibrationTokens: number;
  /** Fine-tuning: the loss of each step (absent without fine-tuning). */
  readonly finetuneLosses?: readonly number[];
}

/**
 * The weights {@link pruneGraph} prunes (see the module comment), in graph order, one node per weight.
 * @internal
 */
export function prunableWeights(graph: Graph): Node[] {
  const tables = new Set<string>();
  for (const n of graph.nodes()) if (isOp(n, 'gather') && isOp(n.inputs[0], 'weight')) tables.add(attrsOf(n.inputs[0], 'weight').id);
  const logits = graph.outputs.find((o) => o.name === 'logits')?.node;
  const vocab = logits?.shape[logits.rank - 1];
  const out: Node[] = [];
  const seen = new Set<string>();
  for (const { weight } of weightMatmuls(graph)) {
    const id = attrsOf(weight, 'weight').id;
    if (seen.has(id) || tables.has(id) || weight.dtype !== 'f32' || weight.shape[0] === vocab) continue;
    seen.add(id);
    out.push(weight);
  }
  return out;
}

/** `graph` with a store holding only the weights its nodes read (a rewrite keeps replaced entries; names stay unique). */
function withLiveWeights(graph: Graph): Graph {
  const used = new Set<string>();
  for (const n of graph.nodes()) if (isOp(n, 'weight')) used.add(attrsOf(n, 'weight').id);
  return graph.withOutputs(graph.outputs, graph.weights.only(used));
}

/**
 * Prunes `graph` (a causal LM with logits at every position, taking `tokens`, `positions` and optional `past_*`
 * caches) with `opts`, calibrating on `windows` (token ids, each from position 0, BOS first).
 * @throws InputError for a bad sparsity or pattern (see {@link selectMasks}), no windows, or no prunable weight.
 */
export function pruneGraph(graph: Graph, windows: readonly (readonly number[])[], opts: PruneOptions): PruneResult {
  const progress = opts.onProgress ?? ((): void => {});
  const sparsity = patternSparsity(opts.pattern, opts.pattern.kind === 'nm' ? undefined : opts.sparsity);
  if (opts.pattern.kind === 'nm' && opts.sparsity !== undefined) patternSparsity(opts.pattern, opts.sparsity);
  const scope: PruneScope = opts.scope ?? (opts.method === 'wanda' && opts.pattern.kind === 'unstructured' ? 'row' : 'layer');
  if (opts.method === 'sparsegpt' && opts.scope && opts.scope !== 'layer') throw new InputError(`sparsegpt chooses its mask per layer, in blocks of columns; --scope ${opts.scope} does not apply`);
  if (!windows.length || windows.every((w) => w.length < 2)) throw new InputError('pruning needs calibration windows of at least 2 tokens');
  const targets = prunableWeights(graph);
  if (!targets.length) throw new InputError('the model has no matmul weight to prune (embedding tables and the classifier stay dense)');
  const entries: WeightEntry[] = targets.map((w) => graph.weights.get(attrsOf(w, 'weight').id));
  const values: Float32Array[] = entries.map((e) => Float32Array.from(decodeWeight(e)));
  const calibrationTokens = windows.reduce((a, w) => a + w.length, 0);
  progress(`prune: ${opts.method}, ${patternName(opts.pattern)}, sparsity ${sparsity.toFixed(4)} (${scope} scope), ${targets.length} weights, ${calibrationTokens} calibration positions`);

  let scores: ArrayLike<number>[] = [];
  let masks: Uint8Array[];
  if (opts.method === 'sparsegpt') {
    // mask and reconstructed values at once, from each weight's input Hessian
    const captured = captureMatmulInputs(graph, windows, { onProgress: progress });
    masks = targets.map((w, i) => {
      const [rows, cols] = w.shape as number[];
      const r = sparseGptPrune(entries[i].name, values[i], rows, cols, captured.get(attrsOf(w, 'weight').id)!.stats.hessian, opts.pattern, sparsity);
      values[i] = r.values;
      progress(`sparsegpt: ${i + 1}/${targets.length} ${entries[i].name} [${rows}x${cols}]`);
      return r.mask;
    });
  } else if (opts.method === 'magnitude') scores = values.map((v) => magnitudeSaliency(v));
  else if (opts.method === 'wanda') {
    const captured = captureMatmulInputs(graph, windows, { onProgress: progress });
    scores = targets.map((w, i) => {
      const [rows, cols] = w.shape as number[];
      return wandaSaliency(values[i], rows, cols, inputChannelNorms(captured.get(attrsOf(w, 'weight').id)!.stats));
    });
  } else if (needsGradients(opts.method)) {
    const pg = new ParameterGradients(nextTokenLossGraph(graph), { loss: 'loss', params: entries.map((e) => e.name) });
    const byName = gradientSaliencies(pg, nextTokenBatches(graph, windows), opts.method, { graspStep: opts.graspStep, onProgress: progress });
    scores = entries.map((e) => byName[e.name]);
  } else throw new InputError(`unknown pruning method '${opts.method as string}'`);

  if (opts.method !== 'sparsegpt')
    masks = selectMasks(
      targets.map((w, i) => ({ name: entries[i].name, rows: w.shape[0] as number, cols: w.shape[1] as number, scores: scores[i] })),
      opts.pattern,
      sparsity,
      scope,
    );
  const replacements = new Map<string, WeightEntry>();
  const layers: PrunedLayer[] = [];
  const maskByName = new Map<string, Uint8Array>();
  let [keptAll, totalAll] = [0, 0];
  targets.forEach((w, i) => {
    const e = entries[i];
    const m = masks[i];
    const pruned = Float32Array.from(values[i], (v, j) => (m[j] ? v : 0));
    const kept = m.reduce((a, x) => a + x, 0);
    keptAll += kept;
    totalAll += m.length;
    layers.push({ name: e.name, shape: [w.shape[0] as number, w.shape[1] as number], kept, total: m.length, sparsity: 1 - kept / m.length });
    maskByName.set(e.name, m);
    replacements.set(e.id, WeightStore.entry(e.name, 'f32', e.shape, { values: pruned }));
  });
  let out = withLiveWeights(replaceWeights(graph, replacements));
  progress(`prune: kept ${keptAll} of ${totalAll} weights (sparsity ${(1 - keptAll / totalAll).toFixed(4)})`);

  const tuned = opts.finetuneSteps ? finetuneMasked(out, windows, maskByName, opts.finetuneSteps, opts.adam, progress) : undefined;
  return { graph: tuned?.graph ?? out, masks: maskByName, layers, scope, sparsity: 1 - keptAll / totalAll, calibrationTokens, ...(tuned ? { finetuneLosses: tuned.finetuneLosses } : {}) };
}

/** Fine-tunes every dense f32 weight of `graph` on `windows`, holding the weights in `masks` to their masks. */
function finetuneMasked(graph: Graph, windows: readonly (readonly number[])[], masks: ReadonlyMap<string, Uint8Array>, steps: number, adam: AdamOptions | undefined, progress: (l: string) => void): { graph: Graph; finetuneLosses: number[] } {
  const params = graph.weights.all().filter((e) => e.dtype === 'f32' && e.encoding.kind === 'dense').map((e) => e.name);
  const pg = new ParameterGradients(nextTokenLossGraph(graph), { loss: 'loss', params });
  const r = maskedFinetune(pg, nextTokenBatches(graph, windows), pg.initial, masks, { steps, adam, onProgress: progress });
  const tensors: Record<string, Tensor> = {};
  for (const name of params) tensors[name] = new Tensor('f32', pg.graph.inputs.find((x) => x.attrs.name === name)!.shape as number[], r.values[name]);
  return { graph: withLiveWeights(withWeightValues(graph, tensors)), finetuneLosses: [...r.losses] };
}

/**
 * Fine-tunes every dense f32 weight of `graph` (a causal LM as {@link pruneGraph} takes) on `windows` with no masks:
 * what structured pruning alone is followed by. Zero steps return the graph as it is.
 */
export function finetuneOnly(graph: Graph, windows: readonly (readonly number[])[], steps: number, adam?: AdamOptions, onProgress?: (line: string) => void): { graph: Graph; finetuneLosses?: readonly number[] } {
  if (!steps) return { graph };
  return finetuneMasked(withLiveWeights(graph), windows, new Map(), steps, adam, onProgress ?? ((): void => {}));
}
