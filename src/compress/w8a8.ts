/**
 * W8A8 of a causal-LM graph: every decoder matmul (`matmul(x, W)` with `transB`, W a 2-D float weight) gets int8
 * weights (per output channel, symmetric) and int8 activations (`actQuant`: per token, or a calibrated per-tensor
 * scale), optionally after SmoothQuant ({@link smoothingFactors}). The classifier (the matmul producing an output, or
 * whose weight is also an embedding table) stays f32, as SmoothQuant keeps its LM head in floating point.
 *
 * {@link calibrateW8A8} runs the calibration windows through the f32 graph on the CPU reference backend, collecting
 * per input channel `max|X_j|` of each matmul input, and returns a {@link W8A8Plan} keyed by weight **name**, so
 * {@link applyW8A8} rewrites any graph built from the same model (logits at every row, at the last row, at listed
 * rows) the same way:
 *
 * - the smoothed and folded f32 weights (norm gains, producer rows) and the int8 matmul weights replace theirs;
 * - each quantized matmul gets its `actQuant`; a static scale is `max|X'| / 127` of its (smoothed) input `X'` over
 *   the calibration rows;
 * - where SmoothQuant found no producer to fold `1/s` into, `x · diag(1/s)` (a per-channel weight) is multiplied in
 *   before the matmuls.
 * @module
 */
import { InputError } from '../errors.js';
import { attrsOf, isOp, type ActivationQuant } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import { makeNode, type Node } from '../ir/node.js';
import { outlierLinear } from '../ir/outlier-linear.js';
import { decodeWeight, quantizeWeight, WeightStore, type WeightEntry } from '../ir/weights.js';
import { rewriteGraph } from '../passes/rewrite.js';
import { runGraph } from '../runtime/cpu/interpreter.js';
import { findAwqFold } from './awq.js';
import { ActivationHistogram, calibrate, type Calibrator } from './calibrators.js';
import { weightMatmuls, windowInputs, type CapturedMatmul } from './capture.js';
import { OUTLIER_WEIGHT_SUFFIX } from './outliers.js';
import { columnAbsMax, smoothingFactors } from './smoothquant.js';

/** How activations are quantized: a scale per token (row), or one calibrated scale per tensor. */
export type W8A8Activations = 'per-token' | 'static';

/** Options of {@link calibrateW8A8}. */
export interface W8A8Options {
  /** Per-token (dynamic) or per-tensor (static, calibrated) activation scales. */
  readonly activations: W8A8Activations;
  /**
   * Static scales: the calibrator choosing each input's clip `t` (scale `t / 127`) from the histogram of its
   * (smoothed) `|x|` over the calibration rows ({@link calibrate}); default `'minmax'` (`t = max|x|`, no histogram).
   * Any other needs the calibration windows ({@link calibrateW8A8}, or `windows` of {@link planW8A8}).
   */
  readonly calibrator?: Calibrator;
  /** `calibrator: 'percentile'`: the percentile of `|x|` (default 99.99). */
  readonly percentile?: number;
  /** SmoothQuant's migration strength α in [0, 1]; absent: no smoothing. */
  readonly smoothQuantAlpha?: number;
  /**
   * Outlier input channels kept in f32 (LLM.int8's mixed decomposition, with static calibrated thresholds): per
   * matmul input, the channels whose calibration `max|x_j|` (of the smoothed input) exceeds `threshold ×` the median
   * channel's, at most `⌈maxFraction · K⌉` of them (default 0.02), largest first. Their weight columns leave the int8
   * weight (zeroed) for an f32 side weight read through {@link outlierLinear}, and every activation statistic (the
   * min-max range, the calibrators' histograms) is of the remaining channels only. Absent: none.
   */
  readonly outliers?: W8A8OutlierOptions;
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
  /**
   * Only smooth: the plan keeps every weight f32 (smoothed) and quantizes nothing, so the graph computes the same
   * function as before (up to rounding); for checking the folds.
   * @internal
   */
  readonly smoothOnly?: boolean;
}

/** Options of W8A8's outlier channels ({@link W8A8Options.outliers}). */
export interface W8A8OutlierOptions {
  /** `T` > 0: a channel whose calibration `max|x_j|` exceeds `T ×` the median channel's is an outlier. */
  readonly threshold: number;
  /** Most outlier channels per input as a fraction of K, rounded up, in (0, 1] (default 0.02). */
  readonly maxFraction?: number;
}

/** One quantized matmul in the report. */
export interface W8A8Layer {
  /** The weight's name. */
  readonly name: string;
  /** `[N, K]`. */
  readonly shape: readonly [number, number];
  /** The activation scale: `'per-token'` or the calibrated value. */
  readonly activationScale: number | 'per-token';
  /** Where SmoothQuant's `1/s` went (absent without SmoothQuant): a norm, a producer's rows, or an explicit multiply. */
  readonly smoothing?: 'norm' | 'rows' | 'explicit';
  /** SmoothQuant: the largest and smallest factor of the input. */
  readonly factorRange?: readonly [number, number];
  /** `max|X|` of the (smoothed) input over the calibration rows, outlier channels excluded. */
  readonly inputMax: number;
  /** With {@link W8A8Options.outliers}: the input channels kept in f32. */
  readonly outlierChannels?: readonly number[];
  /** Static scales: the calibrated clip `t` (`inputMax` for min-max); the scale is `t / 127`. */
  readonly clip?: number;
  /** `max_j max|X_j|` / median_j max|X_j| (over all channels): how much one channel's outliers dominate the per-tensor range. */
  readonly outlierRatio: number;
}

/** What {@link applyW8A8} applies, keyed by weight name. */
export interface W8A8Plan {
  /** Entries replacing the weights of these names (int8 matmul weights, smoothed f32 norms and producers). */
  readonly weights: ReadonlyMap<string, WeightEntry>;
  /** The `actQuant` of the matmul reading each quantized weight. */
  readonly actQuant: ReadonlyMap<string, ActivationQuant>;
  /** Per-channel `1/s` weights multiplied into the input of the matmuls reading each weight (no fold possible). */
  readonly inputScales: ReadonlyMap<string, WeightEntry>;
  /** Outlier channels ({@link W8A8Options.outliers}) by weight name: their indices and the f32 `[N, indices.length]` columns. */
  readonly outliers: ReadonlyMap<string, { readonly indices: readonly number[]; readonly weight: WeightEntry }>;
  /** One row per quantized matmul, in graph order. */
  readonly layers: readonly W8A8Layer[];
  /** Weights left f32 (the classifier), with why. */
  readonly kept: readonly { readonly name: string; readonly why: string }[];
  /** Calibration rows seen. */
  readonly calibrationTokens: number;
}

/** Nodes that only move data: walking back from an output through them finds the op that computed it. */
const MOVES = new Set(['reshape', 'slice', 'transpose', 'cast', 'expand']);

/** The matmuls computing an output (through data movement only): the classifier. */
function outputMatmuls(graph: Graph): Set<Node> {
  const out = new Set<Node>();
  for (const o of graph.outputNodes) {
    let n = o;
    while (MOVES.has(n.op)) n = n.inputs[0];
    if (isOp(n, 'matmul')) out.add(n);
  }
  return out;
}

/** The weights that some `gather` reads (embedding tables). */
function tableWeights(graph: Graph): Set<Node> {
  return new Set(graph.nodes().flatMap((n) => (isOp(n, 'gather') && isOp(n.inputs[0], 'weight') ? [n.inputs[0]] : [])));
}

/** Per input channel `max|x_j|` of each matmul input over the calibration rows ({@link captureInputMaxima}). */
export interface InputMaxima {
  /** By input node (the node the matmuls read). */
  readonly byInput: ReadonlyMap<Node, Float64Array>;
  /** Calibration rows seen. */
  readonly rows: number;
}

/**
 * Runs `windows` of token ids (each from position 0) through `graph` on the CPU reference backend and returns, per
 * input of a weight matmul, the per-channel `max|x_j|` over every row. One capture serves several plans.
 * @throws InputError when there are no windows or one is empty.
 */
export function captureInputMaxima(graph: Graph, windows: readonly (readonly number[])[], onProgress?: (line: string) => void): InputMaxima {
  if (!windows.length || windows.some((w) => !w.length)) throw new InputError('calibration needs at least one non-empty token window');
  const byInput = new Map<Node, Float64Array>();
  for (const { input, weight } of weightMatmuls(graph)) if (!byInput.has(input)) byInput.set(input, new Float64Array(weight.shape[1] as number));
  let rows = 0;
  windows.forEach((w, i) => {
    runGraph(graph, windowInputs(graph, w), {
      observe: (node, value) => {
        const m = byInput.get(node);
        if (!m) return;
        const x = value.numbers;
        const k = m.length;
        for (let r = 0; r < x.length / k; r++) for (let j = 0; j < k; j++) m[j] = Math.max(m[j], Math.abs(x[r * k + j]));
      },
    });
    rows += w.length;
    onProgress?.(`calibration: window ${i + 1}/${windows.length} (${w.length} tokens)`);
  });
  return { byInput, rows };
}

/**
 * Calibrates W8A8 (and SmoothQuant when `opts.smoothQuantAlpha` is set) for `graph`, a causal LM taking `tokens`,
 * `positions` and optional `past_*` caches, on `windows` of token ids (each from position 0): {@link captureInputMaxima}
 * then {@link planW8A8}.
 * @throws InputError for no windows, an α outside [0, 1], or a graph with no matmul to quantize.
 */
export function calibrateW8A8(graph: Graph, windows: readonly (readonly number[])[], opts: W8A8Options): W8A8Plan {
  return planW8A8(graph, captureInputMaxima(graph, windows, opts.onProgress), opts, windows);
}

/**
 * Runs `windows` through `graph` on the CPU reference backend and returns, per input node in `inputs`, the
 * {@link ActivationHistogram} of `|x_j / d_j|` (`d` the input's SmoothQuant factors, or all ones) over its channels
 * `j` not in `exclude` (the outlier channels), its range set from the known `max` so no bins merge.
 */
export function captureInputHistograms(
  graph: Graph,
  windows: readonly (readonly number[])[],
  inputs: ReadonlyMap<Node, { readonly divisor?: ArrayLike<number>; readonly exclude?: readonly number[]; readonly max: number }>,
  onProgress?: (line: string) => void,
): Map<Node, ActivationHistogram> {
  const hists = new Map<Node, ActivationHistogram>();
  for (const [node, { max }] of inputs) {
    const h = new ActivationHistogram();
    h.range = Math.max(max, 1e-30) * (1 + 1e-6);
    hists.set(node, h);
  }
  windows.forEach((w, i) => {
    runGraph(graph, windowInputs(graph, w), {
      observe: (node, value) => {
        const h = hists.get(node);
        if (!h) return;
        const { divisor: d, exclude } = inputs.get(node)!;
        const x = value.numbers;
        if (!d && !exclude?.length) return h.add(x);
        const k = node.shape[node.shape.length - 1] as number;
        const kept = Array.from({ length: k }, (_, j) => j).filter((j) => !exclude?.includes(j));
        const y = new Float64Array((x.length / k) * kept.length);
        let o = 0;
        for (let r = 0; r < x.length; r += k) for (const j of kept) y[o++] = d ? x[r + j] / d[j] : x[r + j];
        h.add(y);
      },
    });
    onProgress?.(`calibration histograms: window ${i + 1}/${windows.length} (${w.length} tokens)`);
  });
  return hists;
}

/**
 * The W8A8 plan of `graph` from its calibration maxima (see the module comment). A static calibrator other than
 * min-max runs `windows` (the calibration windows the maxima came from) once more for the histograms.
 * @throws InputError for an α outside [0, 1], a graph with no matmul to quantize, or a histogram calibrator without
 *   `windows`.
 */
export function planW8A8(graph: Graph, maxima: InputMaxima, opts: W8A8Options, windows?: readonly (readonly number[])[]): W8A8Plan {
  const calibrator = opts.calibrator ?? 'minmax';
  const histogramScales = opts.activations === 'static' && calibrator !== 'minmax' && !opts.smoothOnly;
  if (histogramScales && !windows?.length) throw new InputError(`W8A8: the ${calibrator} calibrator needs the calibration windows for its histograms`);
  const alpha = opts.smoothQuantAlpha;
  if (alpha !== undefined && !(alpha >= 0 && alpha <= 1)) throw new InputError(`SmoothQuant's alpha must be in [0, 1], got ${alpha}`);
  const outlierOpts = opts.smoothOnly ? undefined : opts.outliers;
  if (outlierOpts && !(outlierOpts.threshold > 0 && Number.isFinite(outlierOpts.threshold))) throw new InputError(`W8A8: the outlier threshold must be a positive number, got ${outlierOpts.threshold}`);
  const maxFraction = outlierOpts?.maxFraction ?? 0.02;
  if (outlierOpts && !(maxFraction > 0 && maxFraction <= 1)) throw new InputError(`W8A8: the outlier fraction must be in (0, 1], got ${maxFraction}`);
  const progress = opts.onProgress ?? ((): void => {});
  const classifier = outputMatmuls(graph);
  const tables = tableWeights(graph);
  const kept: { name: string; why: string }[] = [];
  const all = weightMatmuls(graph);
  const chosen = all.filter(({ matmul, weight }) => {
    const name = attrsOf(weight, 'weight').name;
    if (classifier.has(matmul) || tables.has(weight)) {
      if (!kept.some((k) => k.name === name)) kept.push({ name, why: classifier.has(matmul) ? 'classifier (stays f32)' : 'also an embedding table (stays f32)' });
      return false;
    }
    return true;
  });
  if (!chosen.length) throw new InputError('W8A8: the graph has no matmul weight to quantize (2-D float weights read with transB, other than the classifier)');
  const inputMax = new Map<Node, Float64Array>();
  for (const { input } of chosen) {
    const m = maxima.byInput.get(input);
    if (!m) throw new InputError('W8A8: the calibration maxima are not of this graph');
    inputMax.set(input, m);
  }

  // f32 values by weight name, changed in place by smoothing
  const values = new Map<string, Float32Array>();
  const valueOf = (w: Node): Float32Array => {
    const name = attrsOf(w, 'weight').name;
    let v = values.get(name);
    if (!v) values.set(name, (v = Float32Array.from(decodeWeight(graph.weights.get(attrsOf(w, 'weight').id)))));
    return v;
  };
  const changed = new Map<string, Node>();
  const inputScales = new Map<string, WeightEntry>();
  const smoothing = new Map<Node, { kind: 'norm' | 'rows' | 'explicit'; s: Float32Array }>();
  const users = graph.users();
  const groups = new Map<Node, typeof chosen>();
  for (const m of chosen) groups.set(m.input, [...(groups.get(m.input) ?? []), m]);
  if (alpha !== undefined)
    for (const [input, group] of groups) {
      const k = group[0].weight.shape[1] as number;
      // a group with a classifier or table among its readers keeps its input as it is
      const readers = (users.get(input) ?? []).filter((u) => isOp(u, 'matmul'));
      if (readers.some((u) => !group.some((m) => m.matmul === u))) continue;
      const captured = group.map((m): CapturedMatmul => ({ weight: m.weight, input, rows: m.weight.shape[0] as number, cols: k, stats: { channels: k, rows: 0, hessian: new Float64Array(0), absSum: new Float64Array(0) } }));
      const fold = findAwqFold(input, captured, users);
      const wMax = columnAbsMax(group.map((m) => ({ values: valueOf(m.weight), rows: m.weight.shape[0] as number })), k);
      const s = smoothingFactors({ activationMax: inputMax.get(input)!, weightMax: wMax, alpha, rowOf: fold?.kind === 'rows' ? fold.rowOf : undefined });
      for (const m of group) {
        const v = valueOf(m.weight);
        for (let r = 0; r < (m.weight.shape[0] as number); r++) for (let j = 0; j < k; j++) v[r * k + j] *= s[j];
        changed.set(attrsOf(m.weight, 'weight').name, m.weight);
      }
      const divide = (n: Node, at: (i: number) => number): void => {
        const v = valueOf(n);
        for (let i = 0; i < v.length; i++) v[i] /= at(i);
        changed.set(attrsOf(n, 'weight').name, n);
      };
      if (fold?.kind === 'norm') {
        divide(fold.weight, (i) => s[i]);
        if (fold.bias) divide(fold.bias, (i) => s[i]);
      } else if (fold?.kind === 'rows') {
        const rowScale = new Float64Array(fold.weight.shape[0] as number).fill(1);
        fold.rowOf.forEach((row, j) => (rowScale[row] = s[j]));
        const cols = fold.weight.shape[1] as number;
        divide(fold.weight, (i) => rowScale[Math.floor(i / cols)]);
        if (fold.bias) divide(fold.bias, (i) => rowScale[i]);
      } else {
        const inv = WeightStore.entry(`${attrsOf(group[0].weight, 'weight').name}.smooth_inv`, 'f32', [k], { values: Float32Array.from(s, (x) => 1 / x) });
        for (const m of group) inputScales.set(attrsOf(m.weight, 'weight').name, inv);
      }
      smoothing.set(input, { kind: fold?.kind ?? 'explicit', s });
      progress(`smoothquant: ${group.map((m) => attrsOf(m.weight, 'weight').name).join(', ')}: 1/s into ${fold ? `${fold.kind} ${attrsOf(fold.weight, 'weight').name}` : 'an explicit per-channel multiply'}`);
    }

  // the (smoothed) inputs' channel maxima, and their outlier channels
  const smoothedMax = new Map<Node, Float64Array>();
  const outlierChannels = new Map<Node, number[]>();
  for (const input of groups.keys()) {
    const s = smoothing.get(input)?.s;
    const m = Float64Array.from(inputMax.get(input)!, (x, j) => (s ? x / s[j] : x));
    smoothedMax.set(input, m);
    if (outlierOpts) outlierChannels.set(input, selectMaxOutliers(m, outlierOpts.threshold, Math.ceil(maxFraction * m.length)));
  }

  // static scales from a histogram calibrator: one more pass for the histograms of the smoothed inputs
  let clips: Map<Node, number> | undefined;
  if (histogramScales) {
    const inputs = new Map<Node, { divisor?: Float32Array; exclude?: number[]; max: number }>();
    for (const input of groups.keys()) {
      const s = smoothing.get(input)?.s;
      const exclude = outlierChannels.get(input) ?? [];
      const max = Math.max(0, ...smoothedMax.get(input)!.filter((_, j) => !exclude.includes(j)));
      inputs.set(input, { ...(s ? { divisor: s } : {}), ...(exclude.length ? { exclude } : {}), max });
    }
    const hists = captureInputHistograms(graph, windows!, inputs, opts.onProgress);
    clips = new Map([...hists].map(([node, h]) => [node, h.total && h.absMax > 0 ? calibrate(h, calibrator, { bits: 8, percentile: opts.percentile }) : 0]));
    progress(`w8a8: static scales by ${calibrator}${calibrator === 'percentile' ? ` (${opts.percentile ?? 99.99})` : ''} calibration`);
  }

  const weights = new Map<string, WeightEntry>();
  const actQuant = new Map<string, ActivationQuant>();
  const layers: W8A8Layer[] = [];
  const outliers = new Map<string, { indices: readonly number[]; weight: WeightEntry }>();
  for (const { weight, input } of chosen) {
    const name = attrsOf(weight, 'weight').name;
    if (weights.has(name)) continue;
    const [n, k] = weight.shape as [number, number];
    const sm = smoothing.get(input);
    const xMax = smoothedMax.get(input)!;
    const indices = outlierChannels.get(input) ?? [];
    const rangeMax = Math.max(0, ...xMax.filter((_, j) => !indices.includes(j)));
    const sorted = [...xMax].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    const clip = clips ? clips.get(input)! : rangeMax;
    const q: ActivationQuant = opts.activations === 'per-token' ? { scale: 'per-token' } : { scale: Math.fround(Math.max(clip, 1e-8) / 127) };
    if (!opts.smoothOnly) actQuant.set(name, q);
    let w = valueOf(weight);
    if (indices.length) {
      // the outlier columns leave the int8 weight for an f32 side weight
      const side = new Float32Array(n * indices.length);
      w = Float32Array.from(w);
      for (let r = 0; r < n; r++)
        indices.forEach((c, j) => {
          side[r * indices.length + j] = w[r * k + c];
          w[r * k + c] = 0;
        });
      outliers.set(name, { indices, weight: WeightStore.entry(`${name}${OUTLIER_WEIGHT_SUFFIX}`, 'f32', [n, indices.length], { values: side }) });
    }
    weights.set(name, opts.smoothOnly ? WeightStore.entry(name, 'f32', [n, k], { values: w }) : quantizeWeight(name, [n, k], w, { bits: 8, groupSize: k }));
    layers.push({
      name,
      shape: [n, k],
      activationScale: q.scale,
      ...(sm ? { smoothing: sm.kind, factorRange: [Math.max(...sm.s), Math.min(...sm.s)] as const } : {}),
      inputMax: rangeMax,
      ...(outlierOpts ? { outlierChannels: indices } : {}),
      ...(opts.activations === 'static' ? { clip } : {}),
      outlierRatio: median > 0 ? Math.max(...xMax) / median : Infinity,
    });
  }
  // smoothed norms and producers that stay f32
  for (const [name, node] of changed) if (!weights.has(name)) weights.set(name, WeightStore.entry(name, 'f32', node.shape as number[], { values: values.get(name)! }));
  return { weights, actQuant, inputScales, outliers, layers, kept, calibrationTokens: maxima.rows };
}

/**
 * The outlier channels of an input by its channel maxima `m`: `m_j > threshold · median(m)`, at most `maxCount`,
 * largest first, returned in increasing order.
 */
export function selectMaxOutliers(m: ArrayLike<number>, threshold: number, maxCount: number): number[] {
  const sorted = Array.from(m).sort((a, b) => a - b);
  const k = sorted.length;
  const median = k % 2 ? sorted[(k - 1) / 2] : (sorted[k / 2 - 1] + sorted[k / 2]) / 2;
  const over = Array.from(m, (x, j) => [x, j] as const).filter(([x]) => x > threshold * median);
  over.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return over.slice(0, maxCount).map(([, j]) => j).sort((a, b) => a - b);
}

/**
 * Applies `plan` to `graph` (built from the model the plan was calibrated on): weights replaced by name, W8A8 on the
 * matmuls reading the quantized weights, and the explicit smoothing multiplies.
 * @throws InputError when a weight the plan names is missing from the graph.
 */
export function applyW8A8(graph: Graph, plan: W8A8Plan): Graph {
  const names = new Set(graph.nodes().flatMap((n) => (isOp(n, 'weight') ? [attrsOf(n, 'weight').name] : [])));
  for (const name of [...plan.actQuant.keys(), ...plan.inputScales.keys()]) if (!names.has(name)) throw new InputError(`W8A8 plan: the graph has no weight '${name}' (was it built from the model the plan was calibrated on?)`);
  const replaced = rewriteGraph(graph, [
    {
      name: 'w8a8-replace-weight',
      root: 'weight',
      apply({ node }, ctx) {
        const e = plan.weights.get(attrsOf(node, 'weight').name);
        return e && e.id !== attrsOf(node, 'weight').id ? ctx.addWeight(e) : undefined;
      },
    },
  ]).graph;
  return rewriteGraph(replaced, [
    {
      name: 'w8a8-quantize-activations',
      root: 'matmul',
      apply({ node }, ctx) {
        const a = attrsOf(node, 'matmul');
        const [x, w] = node.inputs;
        if (!a.transB || !isOp(w, 'weight')) return undefined;
        const name = attrsOf(w, 'weight').name;
        const q = a.actQuant ? undefined : plan.actQuant.get(name);
        const inv = plan.inputScales.get(name);
        // the explicit 1/s goes in once: the input is then mul(x, 1/s)
        const scaled = inv && !(isOp(x, 'mul') && isOp(x.inputs[1], 'weight') && attrsOf(x.inputs[1], 'weight').id === inv.id);
        if (!q && !scaled) return undefined;
        const input = scaled ? makeNode('mul', [x, ctx.addWeight(inv)]) : x;
        // outlier channels: once, with the activation quantization (the side matmul reads a weight the plan does not name)
        const side = q && !a.transA ? plan.outliers.get(name) : undefined;
        if (side) return outlierLinear(input, w, ctx.addWeight(side.weight), side.indices, q);
        return makeNode('matmul', [input, w], { ...a, ...(q ? { actQuant: q } : {}) });
      },
    },
  ]).graph;
}
