/**
 * Structured pruning of a Llama-family graph: whole FFN channels and whole attention heads are removed, so the
 * matmuls physically shrink, and the graph is rebuilt with {@link buildLlama} at the smaller sizes, which keeps it
 * consistent by construction:
 *
 * - **FFN channels** (`ffnChannels` removed per layer): channel `c` is row `c` of the gate (`w1`) and up (`w3`)
 *   projections and column `c` of the down projection (`w2`); `hiddenDim` shrinks by that many.
 * - **Attention heads** (`heads` query heads removed per layer): under GQA a KV head serves `G = nHeads / nKvHeads`
 *   query heads, so heads go in whole groups (`heads` must be a multiple of G): a group is its KV head's rows of
 *   `wk`/`wv` (and biases) and its G query heads' rows of `wq` and columns of `wo`. `nHeads` and `nKvHeads` shrink,
 *   and the head size is written into the config (`headDim`) since `dim / nHeads` no longer gives it.
 *
 * Every layer loses the same count (the config has one `hiddenDim` and one head count). Which ones, per layer, goes by
 * a score (lowest removed, ties to the later index):
 *
 * | method | FFN channel `c` | KV group `g` (columns `C_g` of `wo`) |
 * | --- | --- | --- |
 * | `magnitude` | `‖w1[c,:]‖ · ‖w3[c,:]‖ · ‖w2[:,c]‖` | `sqrt(Σ_{j∈C_g} ‖wo[:,j]‖²) · ‖wv[g rows]‖` |
 * | `wanda` | `‖h_c‖ · ‖w2[:,c]‖`, `h` = w2's input on the calibration text | `sqrt(Σ_{j∈C_g} ‖a_j‖² · ‖wo[:,j]‖²)`, `a` = wo's input |
 *
 * (norms `‖x_j‖` of a matmul input over every calibration position, from {@link captureMatmulInputs}.)
 *
 * It lives with the Llama builder rather than in `src/compress` because it rebuilds a Llama at new sizes.
 * @module
 */
import { InputError } from '../errors.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import { ggufLlamaTensorName } from '../export/gguf/llama.js';
import { decodeWeight } from '../ir/weights.js';
import { buildLlama, llamaHeadSize, type LlamaConfig, type LlamaLayerWeights, type LlamaWeights } from './llama.js';
import { captureMatmulInputs } from '../compress/capture.js';
import { inputChannelNorms } from '../compress/saliency.js';

/** Options of {@link pruneStructured}. */
export interface StructuredPruneOptions {
  /** FFN channels removed per layer (default 0). */
  readonly ffnChannels?: number;
  /** Query heads removed per layer, a multiple of the GQA group size (default 0). */
  readonly heads?: number;
  /** Scores: weight norms, or weight norms times calibration activation norms. */
  readonly method: 'magnitude' | 'wanda';
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
}

/** What {@link pruneStructured} removed. */
export interface StructuredPruneReport {
  /** FFN hidden size before and after. */
  readonly hiddenDim: readonly [number, number];
  /** Query heads before and after. */
  readonly heads: readonly [number, number];
  /** KV heads before and after. */
  readonly kvHeads: readonly [number, number];
  /** Per layer: the FFN channels and the KV groups removed (indices in the original model). */
  readonly layers: readonly { readonly removedChannels: readonly number[]; readonly removedKvHeads: readonly number[] }[];
}

/** The `[rows, cols]` sub-matrix of `w` with the given rows and columns (in order). */
function take(w: Float32Array, cols: number, rows: readonly number[], keepCols: readonly number[]): Float32Array {
  const out = new Float32Array(rows.length * keepCols.length);
  rows.forEach((r, i) => keepCols.forEach((c, j) => (out[i * keepCols.length + j] = w[r * cols + c])));
  return out;
}

const range = (n: number): number[] => Array.from({ length: n }, (_v, i) => i);

/** The `count` indices of lowest score (ties: the later index goes first), ascending. */
function lowest(scores: readonly number[], count: number): number[] {
  return range(scores.length)
    .sort((a, b) => scores[a] - scores[b] || b - a)
    .slice(0, count)
    .sort((a, b) => a - b);
}

function rowNorm(w: Float32Array, cols: number, r: number): number {
  let s = 0;
  for (let c = 0; c < cols; c++) s += w[r * cols + c] ** 2;
  return Math.sqrt(s);
}

function colNormSq(w: Float32Array, rows: number, cols: number, c: number): number {
  let s = 0;
  for (let r = 0; r < rows; r++) s += w[r * cols + c] ** 2;
  return s;
}

/**
 * Removes `opts.ffnChannels` FFN channels and `opts.heads` query heads (whole GQA groups) from every layer of `graph`,
 * a Llama graph as {@link buildLlama} makes it (its `meta.config`; weights named by the builder, `layers.<l>.<w>`, or
 * by llama.cpp, `blk.<l>.…`), calibrating on
 * `windows` for `wanda`. Returns the rebuilt graph (logits at every position) and its config.
 * @throws InputError for a graph that is not such a Llama graph, counts that are negative, would remove every channel
 * or head, or split a GQA group.
 */
export function pruneStructured(graph: Graph, windows: readonly (readonly number[])[], opts: StructuredPruneOptions): { graph: Graph; config: LlamaConfig; report: StructuredPruneReport } {
  const c = graph.meta.config as LlamaConfig | undefined;
  if (graph.meta.family !== 'llama' || !c) throw new InputError('structured pruning needs a Llama-family graph (its config in graph.meta)');
  const removeChannels = opts.ffnChannels ?? 0;
  const removeHeads = opts.heads ?? 0;
  const group = c.nHeads / c.nKvHeads;
  if (!(Number.isInteger(removeChannels) && removeChannels >= 0 && removeChannels < c.hiddenDim))
    throw new InputError(`--ffn-channels ${removeChannels}: must remove 0..${c.hiddenDim - 1} of the ${c.hiddenDim} FFN channels per layer`);
  if (!(Number.isInteger(removeHeads) && removeHeads >= 0 && removeHeads < c.nHeads)) throw new InputError(`--heads ${removeHeads}: must remove 0..${c.nHeads - 1} of the ${c.nHeads} query heads per layer`);
  if (removeHeads % group !== 0)
    throw new InputError(`--heads ${removeHeads}: heads go in whole GQA groups of ${group} query heads sharing a KV head (${c.nHeads} query heads, ${c.nKvHeads} KV heads), so it must be a multiple of ${group}`);
  const progress = opts.onProgress ?? ((): void => {});

  // every weight the graph reads, by llama.cpp name (builder names `layers.0.wq` and GGUF names both map to it)
  const canonical = (name: string): string => ggufLlamaTensorName(name) ?? name;
  const byName = new Map<string, { id: string }>();
  for (const n of graph.nodes()) if (isOp(n, 'weight')) byName.set(canonical(attrsOf(n, 'weight').name), { id: attrsOf(n, 'weight').id });
  const get = (name: string): Float32Array => {
    const e = byName.get(canonical(name));
    if (!e) throw new InputError(`structured pruning: the graph has no weight '${name}' (it needs a Llama graph with builder weight names)`);
    return Float32Array.from(decodeWeight(graph.weights.get(e.id)));
  };
  const has = (name: string): boolean => byName.has(canonical(name));
  const norms = opts.method === 'wanda' ? captureMatmulInputs(graph, windows, { onProgress: progress }) : undefined;
  const inputNorms = (name: string): Float64Array => inputChannelNorms(norms!.get(byName.get(canonical(name))!.id)!.stats);

  const hs = llamaHeadSize(c);
  const [dim, hidden] = [c.dim, c.hiddenDim];
  const layers: LlamaLayerWeights[] = [];
  const report: { removedChannels: number[]; removedKvHeads: number[] }[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `layers.${l}.`;
    const [w1, w2, w3, wq, wk, wv, wo] = ['w1', 'w2', 'w3', 'wq', 'wk', 'wv', 'wo'].map((n) => get(p + n));
    // FFN channels
    const h = norms ? inputNorms(`${p}w2`) : undefined;
    const channelScores = range(hidden).map((ch) => (h ? h[ch] * Math.sqrt(colNormSq(w2, dim, hidden, ch)) : rowNorm(w1, dim, ch) * rowNorm(w3, dim, ch) * Math.sqrt(colNormSq(w2, dim, hidden, ch))));
    const removedChannels = lowest(channelScores, removeChannels);
    const keptChannels = range(hidden).filter((ch) => !removedChannels.includes(ch));
    // KV groups
    const qDim = c.nHeads * hs;
    const a = norms ? inputNorms(`${p}wo`) : undefined;
    const groupScores = range(c.nKvHeads).map((g) => {
      let s = 0;
      for (let j = g * group * hs; j < (g + 1) * group * hs; j++) s += (a ? a[j] ** 2 : 1) * colNormSq(wo, dim, qDim, j);
      if (a) return Math.sqrt(s);
      let v = 0;
      for (let r = g * hs; r < (g + 1) * hs; r++) v += rowNorm(wv, dim, r) ** 2;
      return Math.sqrt(s) * Math.sqrt(v);
    });
    const removedKvHeads = lowest(groupScores, removeHeads / group);
    const keptGroups = range(c.nKvHeads).filter((g) => !removedKvHeads.includes(g));
    const kvRows = keptGroups.flatMap((g) => range(hs).map((i) => g * hs + i));
    const qRows = keptGroups.flatMap((g) => range(group * hs).map((i) => g * group * hs + i));
    const bias = (n: string, rows: number[]): Float32Array | undefined => (has(p + n) ? take(get(p + n), 1, rows, [0]) : undefined);
    layers.push({
      rmsAtt: get(`${p}attention_norm`),
      wq: take(wq, dim, qRows, range(dim)),
      wk: take(wk, dim, kvRows, range(dim)),
      wv: take(wv, dim, kvRows, range(dim)),
      wo: take(wo, qDim, range(dim), qRows),
      rmsFfn: get(`${p}ffn_norm`),
      w1: take(w1, dim, keptChannels, range(dim)),
      w2: take(w2, hidden, range(dim), keptChannels),
      w3: take(w3, dim, keptChannels, range(dim)),
      ...(has(`${p}bq`) ? { bq: bias('bq', qRows), bk: bias('bk', kvRows), bv: bias('bv', kvRows) } : {}),
    });
    report.push({ removedChannels, removedKvHeads });
    progress(`structured: layer ${l}: removed FFN channels [${removedChannels.join(', ')}], KV heads [${removedKvHeads.join(', ')}]`);
  }
  const weights: LlamaWeights = { tokenEmbedding: get('tok_embeddings'), layers, rmsFinal: get('norm'), ...(c.sharedClassifier ? {} : { wcls: get('output') }) };
  const config: LlamaConfig = {
    ...c,
    hiddenDim: hidden - removeChannels,
    nHeads: c.nHeads - removeHeads,
    nKvHeads: c.nKvHeads - removeHeads / group,
    ...(removeHeads ? { headDim: hs } : {}),
  };
  return {
    graph: buildLlama(config, weights, { lastTokenLogitsOnly: false }),
    config,
    report: { hiddenDim: [hidden, config.hiddenDim], heads: [c.nHeads, config.nHeads], kvHeads: [c.nKvHeads, config.nKvHeads], layers: report },
  };
}
