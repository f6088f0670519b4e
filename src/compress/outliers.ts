/**
 * Outlier channels kept in f32 beside a compressed matmul weight, as a mixed decomposition (LLM.int8-style, for
 * weight-only quantization): `y = x·W_qᵀ + x[…, I]·W_outᵀ` ({@link outlierLinear}).
 *
 * **Which channels.** For a matmul reading `X` (`[M, K]`, all calibration positions), channel `k`'s activation RMS is
 * `r_k = sqrt(H_kk / M)` (`H = XᵀX`, the calibration Hessian). Channel `k` is an outlier when `r_k > T · median(r)`:
 * the threshold `T` is relative to the median channel, so it means the same on every layer and model. At most
 * `⌈maxFraction · K⌉` channels (default 2%) are kept per matrix, the largest `r_k` first.
 *
 * **What is kept.** The main weight stays exactly as the method rounded it (all `K` columns, so the GGUF tensor is the
 * usual one and any reader can read it); `W_out[:, j] = W[:, I_j] − W_q[:, I_j]` holds the rounding error of the
 * outlier columns in f32, so the effective weight `W_q + W_out` scattered back has the outlier columns exactly f32
 * and every other column quantized. This works after any method (RTN, GPTQ); AWQ is excluded because its matmuls read
 * rescaled activations (`x / s`) whose f32 weights are not the model's.
 * @module
 */
import { InputError } from '../errors.js';
import { weightNode } from '../ir/builder.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { topoOrder, type Graph } from '../ir/graph.js';
import { withInputs, type Node } from '../ir/node.js';
import { outlierLinear } from '../ir/outlier-linear.js';
import { decodeWeight, WeightStore, type WeightEntry } from '../ir/weights.js';
import type { CapturedMatmul, InputStatistics } from './capture.js';
import type { CompressResult, LayerReport } from './compress-graph.js';
import { relativeOutputError } from './layer-error.js';

/** Options of {@link addOutlierChannels}. */
export interface OutlierOptions {
  /** `T`: a channel whose activation RMS exceeds `T ×` the median channel's is an outlier (T > 0). */
  readonly threshold: number;
  /** Most outlier channels per matrix as a fraction of K, rounded up (default 0.02). */
  readonly maxFraction?: number;
}

/** What {@link addOutlierChannels} did to one matmul weight. */
export interface OutlierReport {
  /** Outlier channels kept in f32 (their indices). */
  readonly indices: readonly number[];
  /** The layer's relative output error on the calibration inputs with the outlier columns exact. */
  readonly relativeError: number;
}

/**
 * The outlier channels of one matmul input: `r_k > threshold · median(r)`, at most `maxCount`, largest first,
 * returned in increasing order.
 */
export function selectOutlierChannels(stats: InputStatistics, threshold: number, maxCount: number): number[] {
  const k = stats.channels;
  const rms = Array.from({ length: k }, (_, i) => Math.sqrt(Math.max(0, stats.hessian[i * k + i]) / Math.max(1, stats.rows)));
  const sorted = [...rms].sort((a, b) => a - b);
  const median = k % 2 ? sorted[(k - 1) / 2] : (sorted[k / 2 - 1] + sorted[k / 2]) / 2;
  const over = rms.map((r, i) => [r, i] as const).filter(([r]) => r > threshold * median);
  over.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return over.slice(0, maxCount).map(([, i]) => i).sort((a, b) => a - b);
}

/** The outlier channels of a captured matmul under `opts` (what {@link addOutlierChannels} keeps). */
export function outlierChannelsOf(m: CapturedMatmul, opts: OutlierOptions): number[] {
  return selectOutlierChannels(m.stats, opts.threshold, Math.ceil((opts.maxFraction ?? 0.02) * m.cols));
}

/** The suffix of the f32 side weight's name (`layers.0.wq.outlier_weight`). */
export const OUTLIER_WEIGHT_SUFFIX = '.outlier_weight';

/**
 * Adds outlier channels to every compressed matmul of `compressed` whose input has outliers in `captured` (the
 * calibration of the f32 graph `f32`; weights are matched by name).
 * @throws InputError for a threshold that is not positive or a fraction outside (0, 1].
 */
export function addOutlierChannels(
  f32: Graph,
  compressed: Graph,
  captured: ReadonlyMap<string, CapturedMatmul>,
  opts: OutlierOptions,
): { graph: Graph; reports: Map<string, OutlierReport> } {
  const { threshold } = opts;
  const maxFraction = opts.maxFraction ?? 0.02;
  if (!(threshold > 0 && Number.isFinite(threshold))) throw new InputError(`outlier threshold must be a positive number, got ${threshold}`);
  if (!(maxFraction > 0 && maxFraction <= 1)) throw new InputError(`outlier fraction must be in (0, 1], got ${maxFraction}`);
  const byName = new Map<string, CapturedMatmul>();
  for (const m of captured.values()) byName.set(attrsOf(m.weight, 'weight').name, m);

  const reports = new Map<string, OutlierReport>();
  const sides = new Map<string, { node: Node; indices: number[] }>(); // by compressed weight id
  const added: WeightEntry[] = [];
  for (const n of compressed.nodes()) {
    if (!isOp(n, 'matmul') || !attrsOf(n, 'matmul').transB || attrsOf(n, 'matmul').transA || !isOp(n.inputs[1], 'weight')) continue;
    const id = attrsOf(n.inputs[1], 'weight').id;
    const e = compressed.weights.get(id);
    const m = byName.get(e.name);
    if (sides.has(id) || !m || e.encoding.kind === 'dense') continue;
    const [rows, cols] = e.shape as [number, number];
    if (m.cols !== cols) continue;
    const indices = outlierChannelsOf(m, opts);
    if (!indices.length) continue;
    const exact = decodeWeight(f32.weights.get(attrsOf(m.weight, 'weight').id));
    const effective = Float32Array.from(decodeWeight(e));
    const side = new Float32Array(rows * indices.length);
    for (let r = 0; r < rows; r++)
      indices.forEach((c, j) => {
        side[r * indices.length + j] = exact[r * cols + c] - effective[r * cols + c];
        effective[r * cols + c] = exact[r * cols + c];
      });
    const entry = WeightStore.entry(`${e.name}${OUTLIER_WEIGHT_SUFFIX}`, 'f32', [rows, indices.length], { values: side });
    added.push(entry);
    sides.set(id, { node: weightNode(entry), indices });
    reports.set(e.name, { indices, relativeError: relativeOutputError(exact, effective, rows, cols, m.stats.hessian) });
  }
  if (!sides.size) return { graph: compressed, reports };

  const rebuilt = new Map<Node, Node>();
  for (const n of topoOrder(compressed.outputNodes)) {
    const inputs = n.inputs.map((i) => rebuilt.get(i)!);
    const side = isOp(n, 'matmul') && attrsOf(n, 'matmul').transB && !attrsOf(n, 'matmul').transA && isOp(n.inputs[1], 'weight') ? sides.get(attrsOf(n.inputs[1], 'weight').id) : undefined;
    rebuilt.set(n, side ? outlierLinear(inputs[0], inputs[1], side.node, side.indices) : withInputs(n, inputs));
  }
  const graph = compressed.withOutputs(
    compressed.outputs.map((o) => ({ ...o, node: rebuilt.get(o.node)! })),
    compressed.weights.with(...added),
  );
  return { graph, reports };
}

/**
 * {@link addOutlierChannels} applied to a {@link compressGraph} result: the graph with its outlier matmuls and the
 * report with each decomposed layer's `outlierChannels` (0 for the others it rounded) and its `relativeError` with
 * the outlier columns exact.
 * @throws InputError for AWQ results (see the module comment) and bad options.
 */
export function compressWithOutliers(f32: Graph, r: CompressResult, method: string, opts: OutlierOptions): CompressResult {
  if (method === 'awq') throw new InputError('outlier channels are not combined with AWQ (its matmuls read rescaled activations): use rtn or gptq');
  const { graph, reports } = addOutlierChannels(f32, r.graph, r.captured, opts);
  const layers = r.layers.map((l): LayerReport => {
    if (l.method === 'f32') return l;
    const o = reports.get(l.name);
    return o ? { ...l, relativeError: o.relativeError, outlierChannels: o.indices.length } : { ...l, outlierChannels: 0 };
  });
  return { ...r, graph, layers };
}
