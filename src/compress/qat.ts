/**
 * Quantization-aware training (QAT) of a causal LM onto a weight grid, with the straight-through estimator, on the
 * CPU reference backend.
 *
 * Every weight that RTN rounds ({@link compressGraph} with `rtn`: matmul weights and embedding tables whose rows are a
 * multiple of the group) gets a latent f32 copy, initialised from the f32 model's values (the source weights of the
 * RTN solution). Each step re-rounds every latent weight onto its min-max grid of the same spec ({@link roundToNearest},
 * grids recomputed from the latent values, exactly as RTN computes them), runs the forward and backward pass with the
 * rounded values fed in place of the weights ({@link ParameterGradients}), and hands the gradient with respect to the
 * rounded values to Adam as the latent weights' gradient: the straight-through estimator (the rounding counts as the
 * identity). The weights that stay f32 (norms, matrices whose rows are no multiple of the group) train directly. The
 * result is the latent weights rounded once more, encoded as {@link encodeGridWeight} does for RTN, so the model
 * written is exactly the one the last step's rounding describes.
 *
 * The loss is **distillation**: KL(f32 model ‖ model) of the next-token distributions, averaged over the positions of
 * a window, with the f32 model's distributions computed once per window before training (`loss: 'ce'` trains on
 * the next-token cross-entropy of the text instead). The KL objective is the figure `eval` reports.
 * @module
 */
import { Adam, type AdamOptions } from '../autodiff/adam.js';
import { logSoftmax } from '../autodiff/losses.js';
import { InputError } from '../errors.js';
import { GraphBuilder } from '../ir/builder.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { Graph } from '../ir/graph.js';
import { makeNode } from '../ir/node.js';
import { WeightStore, type WeightEntry } from '../ir/weights.js';
import { runGraph } from '../runtime/cpu/interpreter.js';
import { Tensor } from '../runtime/cpu/tensor.js';
import { captureMatmulInputs, windowInputs } from './capture.js';
import { compressGraph, relativeWeightError, replaceWeights, type LayerReport } from './compress-graph.js';
import { dequantizeGridWeight, encodeGridWeight, roundToNearest, type GridSpec, type GridWeight } from './grid.js';
import { relativeOutputError } from './layer-error.js';
import { nextTokenBatches, nextTokenLossGraph, ParameterGradients, type Batch } from './parameter-gradients.js';

/** The training objective of {@link qatGraph}. */
export type QatLoss = 'kl' | 'ce';

/** Options of {@link qatGraph}. */
export interface QatOptions {
  /** The grid (as RTN's). */
  readonly spec: GridSpec;
  /** Adam steps, one window each, cycling through the windows in order. */
  readonly steps: number;
  /** Objective (default `kl`: distillation from the f32 model's next-token distributions). */
  readonly loss?: QatLoss;
  /** Adam's hyper-parameters (default lr 1e-3). */
  readonly adam?: AdamOptions;
  /** Also train the weights that stay f32 (norms, matrices the grid cannot take); default true. */
  readonly trainFloat?: boolean;
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
  /** Report progress every this many steps (default 10). */
  readonly progressEvery?: number;
}

/** The result of {@link qatGraph}. */
export interface QatResult {
  /** The trained graph: quantized weights encoded as RTN's are, f32 weights (trained or not) dense. */
  readonly graph: Graph;
  /** The RTN graph on the same grid (the starting point), for comparison. */
  readonly rtnGraph: Graph;
  /**
   * One row per matmul weight and table, as {@link compressGraph} reports them: `method: 'qat'` rows give the trained
   * weight's error against the f32 weight on the first window's inputs (`rtnRelativeError`: RTN's on the same inputs).
   */
  readonly layers: readonly LayerReport[];
  /** The loss of each step, before its update, evaluated at the rounded weights (KL in nats for `kl`). */
  readonly losses: readonly number[];
  /** Positions of the training windows. */
  readonly calibrationTokens: number;
  /** The trained latent values of every trained weight, by name (before the final rounding). */
  readonly latent: Readonly<Record<string, Float32Array>>;
}

const b = new GraphBuilder();

/**
 * `graph` (logits `[1, T, V]`) with an input `teacher` (probabilities, the logits' shape) and a scalar output `loss`:
 * the mean over positions of the cross-entropy `−Σ_v teacher · log softmax(logits)`, which is KL(teacher ‖ model)
 * plus the teacher's entropy (a constant of the batch).
 */
export function distillationLossGraph(graph: Graph): Graph {
  const logits = graph.output('logits');
  if (graph.inputs.some((i) => i.attrs.name === 'teacher')) throw new InputError("distillation: the graph already has an input 'teacher'");
  const teacher = makeNode('input', [], { name: 'teacher', dtype: 'f32', shape: [...logits.shape] });
  const perPosition = b.neg(b.sum(b.mul(logSoftmax(logits), teacher), [-1]));
  const loss = b.mean(perPosition, perPosition.shape.map((_d, i) => i));
  return new Graph([...graph.inputs, teacher], [...graph.outputs, { name: 'loss', node: loss }], graph.weights, graph.meta);
}

/** A distillation batch and the teacher's mean entropy over its positions (subtracted to report KL). */
interface DistillBatch {
  readonly batch: Batch;
  readonly entropy: number;
}

/** The f32 model's next-token distributions on each window (without its last token, as {@link nextTokenBatches}). */
function distillationBatches(graph: Graph, windows: readonly (readonly number[])[]): DistillBatch[] {
  return windows
    .filter((w) => w.length >= 2)
    .map((w) => {
      const inputs = windowInputs(graph, w.slice(0, -1));
      const logits = runGraph(graph, inputs).logits;
      const vocab = logits.shape[logits.shape.length - 1];
      const z = logits.data as Float32Array;
      const p = new Float32Array(z.length);
      let entropy = 0;
      const rows = z.length / vocab;
      for (let r = 0; r < rows; r++) {
        const at = r * vocab;
        let max = -Infinity;
        for (let v = 0; v < vocab; v++) max = Math.max(max, z[at + v]);
        let sum = 0;
        for (let v = 0; v < vocab; v++) sum += Math.exp(z[at + v] - max);
        const logSum = Math.log(sum);
        for (let v = 0; v < vocab; v++) {
          const lp = z[at + v] - max - logSum;
          p[at + v] = Math.exp(lp);
          entropy -= p[at + v] * lp;
        }
      }
      return { batch: { ...inputs, teacher: new Tensor('f32', logits.shape, p) }, entropy: entropy / rows };
    });
}

/**
 * Trains `graph` (a causal LM with `logits` at every position, as `build({ lastTokenLogitsOnly: false })` makes it)
 * onto `opts.spec` on token `windows` (each from position 0, BOS first) for `opts.steps` steps; see the module comment.
 * @throws InputError for a bad step count, no windows, or a graph with no weight that the grid can take.
 */
export function qatGraph(graph: Graph, windows: readonly (readonly number[])[], opts: QatOptions): QatResult {
  if (!(Number.isInteger(opts.steps) && opts.steps >= 0)) throw new InputError(`QAT steps must be a non-negative integer, got ${opts.steps}`);
  const progress = opts.onProgress ?? ((): void => {});
  const rtn = compressGraph(graph, windows.slice(0, 1), { method: 'rtn', spec: opts.spec });
  const onGrid = new Set(rtn.layers.filter((l) => l.method === 'rtn').map((l) => l.name));
  const entries = graph.weights.all().filter((e) => e.dtype === 'f32' && e.encoding.kind === 'dense');
  // one entry per name, weights read by some node only
  const live = new Set<string>();
  for (const n of graph.nodes()) if (isOp(n, 'weight')) live.add(attrsOf(n, 'weight').id);
  const params = entries.filter((e) => live.has(e.id) && (onGrid.has(e.name) || opts.trainFloat !== false)).map((e) => e.name);
  const shapeOf = new Map(entries.map((e) => [e.name, e.shape as readonly number[]]));

  const kl = (opts.loss ?? 'kl') === 'kl';
  const batches: DistillBatch[] = kl ? distillationBatches(graph, windows) : nextTokenBatches(graph, windows).map((batch) => ({ batch, entropy: 0 }));
  if (opts.steps > 0 && !batches.length) throw new InputError('QAT: no training windows of 2 tokens or more');
  const pg = new ParameterGradients(kl ? distillationLossGraph(graph) : nextTokenLossGraph(graph), { loss: 'loss', params });

  const latent: Record<string, Float32Array> = {};
  for (const name of params) latent[name] = Float32Array.from(pg.initial[name]);
  const round = (name: string): GridWeight => {
    const [rows, cols] = shapeOf.get(name)! as [number, number];
    return roundToNearest(latent[name], rows, cols, opts.spec);
  };
  const fed = (): Record<string, Float32Array> => {
    const out: Record<string, Float32Array> = {};
    for (const name of params) out[name] = onGrid.has(name) ? dequantizeGridWeight(round(name)) : latent[name];
    return out;
  };
  const adam = new Adam({ lr: 1e-3, ...opts.adam });
  const every = opts.progressEvery ?? 10;
  const losses: number[] = [];
  progress(`qat: ${params.filter((p) => onGrid.has(p)).length} weights on the ${opts.spec.bits}-bit grid, ${params.filter((p) => !onGrid.has(p)).length} f32; ${batches.length} windows, ${opts.steps} steps, loss ${kl ? 'KL to f32' : 'cross-entropy'}`);
  for (let step = 0; step < opts.steps; step++) {
    const { batch, entropy } = batches[step % batches.length];
    const r = pg.evaluate(batch, fed());
    adam.step(latent, r.grads); // straight-through: ∂loss/∂(rounded weight) is the latent weight's gradient
    losses.push(r.loss - entropy);
    if ((step + 1) % every === 0 || step + 1 === opts.steps) {
      const recent = losses.slice(-every);
      progress(`qat: step ${step + 1}/${opts.steps}, mean ${kl ? 'KL' : 'loss'} of the last ${recent.length} ${(recent.reduce((a, x) => a + x, 0) / recent.length).toFixed(5)}`);
    }
  }

  const replacements = new Map<string, WeightEntry>();
  for (const e of entries)
    if (e.name in latent)
      replacements.set(e.id, onGrid.has(e.name) ? encodeGridWeight(e.name, round(e.name)) : WeightStore.entry(e.name, 'f32', e.shape, { values: latent[e.name] }));
  const captured = captureMatmulInputs(graph, windows.slice(0, 1));
  const layers = rtn.layers.map((l): LayerReport => {
    if (l.method !== 'rtn') return l;
    const e = entries.find((x) => x.name === l.name)!;
    const [rows, cols] = l.shape;
    const exact = pg.initial[l.name];
    const h = captured.get(e.id)?.stats.hessian;
    const err = (q: Float32Array): number => (h ? relativeOutputError(exact, q, rows, cols, h) : relativeWeightError(exact, q));
    return { ...l, method: 'qat', relativeError: err(dequantizeGridWeight(round(l.name))), rtnRelativeError: l.relativeError };
  });
  const calibrationTokens = batches.reduce((a, x) => a + (x.batch.tokens.shape[1] as number), 0);
  return { graph: replaceWeights(graph, replacements), rtnGraph: rtn.graph, layers, losses, calibrationTokens, latent };
}
