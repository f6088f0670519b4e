/**
 * Weight compression of a whole causal-LM graph with one method (RTN, GPTQ or AWQ) onto one grid: calibrates on token
 * windows ({@link captureMatmulInputs}), rounds every matmul weight and embedding table whose rows (K) are a multiple
 * of the group size, and returns the graph with those weights replaced by {@link QuantizedEncoding} entries (named as
 * before, laid out as GGUF Q8_0/Q4_0/Q4_1 blocks: `src/compress/grid.ts`) together with a per-layer report.
 *
 * - `rtn`: min-max grids, round to nearest.
 * - `gptq`: {@link gptqQuantize} with each matmul's input Hessian (all Hessians come from one calibration run of the
 *   f32 model, not layer by layer through the already-quantized layers). An embedding table that is also the
 *   classifier is GPTQ-rounded for the classifier's inputs; a table read only by `gather` has no inputs: RTN.
 * - `awq`: {@link awqSearch} per group of matmuls reading one activation, `1/s` folded as {@link findAwqFold} says
 *   (the folded norms and projections are replaced too), then {@link clippedRoundToNearest} (a table read only by
 *   `gather`: RTN).
 *
 * The report's `relativeError` is the layer's relative output error on the calibration inputs,
 * `‖(W_q − W) Xᵀ‖ / ‖W Xᵀ‖` (for AWQ, `W_q` is the rounded `W·diag(s)` divided by `s`, what the graph computes);
 * for a table read only by `gather` it is the relative weight error `‖W_q − W‖ / ‖W‖` (`errorKind: 'weight'`).
 * @module
 */
import { InputError } from '../errors.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { decodeWeight, WeightStore, type WeightEntry } from '../ir/weights.js';
import { rewriteGraph } from '../passes/rewrite.js';
import { awqSearch, clippedRoundToNearest, findAwqFold, scaleColumns } from './awq.js';
import { captureMatmulInputs, type CapturedMatmul } from './capture.js';
import { gptqQuantize } from './gptq.js';
import { checkGridSpec, dequantizeGridWeight, encodeGridWeight, roundToNearest, type GridSpec, type GridWeight } from './grid.js';
import { relativeOutputError } from './layer-error.js';

/** A weight-rounding method. */
export type CompressMethod = 'rtn' | 'gptq' | 'awq';

/** The methods, for help texts. */
export const COMPRESS_METHODS: readonly CompressMethod[] = ['rtn', 'gptq', 'awq'];

/** Options of {@link compressGraph}. */
export interface CompressOptions {
  /** The method. */
  readonly method: CompressMethod;
  /** The grid. */
  readonly spec: GridSpec;
  /** GPTQ: round columns in order of decreasing Hessian diagonal. */
  readonly actOrder?: boolean;
  /** GPTQ: dampening (default 0.01). */
  readonly dampening?: number;
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
  /**
   * GPTQ: input channels of a matmul that will be kept exact beside the rounded weight (outlier channels,
   * `src/compress/outliers.ts`): their Hessian rows and columns are decoupled from the others (off-diagonal entries
   * zeroed), so the other columns are rounded for the error that remains and spread none of it onto these.
   */
  readonly exactColumns?: (m: CapturedMatmul) => readonly number[];
  /**
   * AWQ only: return the graph with the scales applied and folded but nothing rounded (weights stay f32), which
   * computes the same function as the input graph; for checking the folds.
   * @internal
   */
  readonly scaleOnly?: boolean;
}

/** One weight in the report. */
export interface LayerReport {
  /** The weight's name. */
  readonly name: string;
  /** `[N, K]`. */
  readonly shape: readonly [number, number];
  /** What was done: the method, `rtn` where the method had no inputs to use, `qat` (`src/compress/qat.ts`), or `f32` (kept, see `kept`). */
  readonly method: CompressMethod | 'qat' | 'f32';
  /** Grid bits (absent when kept). */
  readonly bits?: number;
  /** Group size (absent when kept). */
  readonly groupSize?: number;
  /** Relative error (see the module comment); absent when kept. */
  readonly relativeError?: number;
  /** Whether `relativeError` is of the outputs on the calibration inputs or of the weight itself. */
  readonly errorKind?: 'output' | 'weight';
  /** The same error for RTN on the same grid (for comparison); absent for RTN itself and when kept. */
  readonly rtnRelativeError?: number;
  /** AWQ: the exponent chosen (0 = RTN). */
  readonly alpha?: number;
  /** Why the weight stays f32, or where AWQ could not fold its scales. */
  readonly note?: string;
  /** Outlier input channels kept in f32 beside the weight (`src/compress/outliers.ts`); absent without `--outliers`. */
  readonly outlierChannels?: number;
}

/** The result of {@link compressGraph}. */
export interface CompressResult {
  /** The graph with its weights replaced. */
  readonly graph: Graph;
  /** One row per matmul weight and table, in graph order. */
  readonly layers: readonly LayerReport[];
  /** Calibration positions seen. */
  readonly calibrationTokens: number;
  /** The calibration statistics of the input graph's matmuls, by weight id (what `src/compress/outliers.ts` uses). */
  readonly captured: ReadonlyMap<string, CapturedMatmul>;
}

/** Replaces the weight nodes whose ids are keys of `replacements`. */
export function replaceWeights(graph: Graph, replacements: ReadonlyMap<string, WeightEntry>): Graph {
  if (!replacements.size) return graph;
  return rewriteGraph(graph, [
    {
      name: 'replace-compressed-weight',
      root: 'weight',
      apply({ node }, ctx) {
        const e = replacements.get(attrsOf(node, 'weight').id);
        return e && ctx.addWeight(e);
      },
    },
  ]).graph;
}

/** A copy of the `k × k` Hessian `h` whose rows and columns `cols` keep only their diagonal entry. */
function decoupledHessian(h: Float64Array, k: number, cols: readonly number[]): Float64Array {
  const out = Float64Array.from(h);
  for (const c of cols)
    for (let j = 0; j < k; j++)
      if (j !== c) {
        out[c * k + j] = 0;
        out[j * k + c] = 0;
      }
  return out;
}

/** `‖approx − exact‖ / ‖exact‖` (0 for an all-zero `exact`). */
export function relativeWeightError(exact: Float32Array, approx: Float32Array): number {
  let [num, den] = [0, 0];
  for (let i = 0; i < exact.length; i++) {
    num += (approx[i] - exact[i]) ** 2;
    den += exact[i] ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : 0;
}

/**
 * Compresses `graph` (a causal LM taking `tokens`, `positions` and optional `past_*` caches) with `opts.method` on
 * `opts.spec`, calibrating on `windows` (token ids, each from position 0).
 * @throws InputError for a bad grid, no windows, or a graph with no weight that the grid can take.
 */
export function compressGraph(graph: Graph, windows: readonly (readonly number[])[], opts: CompressOptions): CompressResult {
  checkGridSpec(opts.spec);
  const spec = opts.spec;
  const progress = opts.onProgress ?? ((): void => {});
  const captured = captureMatmulInputs(graph, windows, { onProgress: progress });
  const calibrationTokens = captured.size ? [...captured.values()][0].stats.rows : 0;

  // the weights to round: matmul weights and embedding tables, in graph order
  const targets: Node[] = [];
  const seen = new Set<string>();
  for (const n of graph.nodes()) {
    const w = isOp(n, 'matmul') ? n.inputs[1] : isOp(n, 'gather') && attrsOf(n, 'gather').axis === 0 ? n.inputs[0] : undefined;
    if (!w || !isOp(w, 'weight') || w.shape.length !== 2 || (w.dtype !== 'f32' && w.dtype !== 'f16')) continue;
    const id = attrsOf(w, 'weight').id;
    if (isOp(n, 'matmul') && !captured.has(id)) continue; // [K, N] weights: not read with transB
    if (!seen.has(id)) targets.push(w);
    seen.add(id);
  }
  const values = new Map<string, Float32Array>();
  const valueOf = (w: Node): Float32Array => {
    const id = attrsOf(w, 'weight').id;
    let v = values.get(id);
    if (!v) values.set(id, (v = Float32Array.from(decodeWeight(graph.weights.get(id)))));
    return v;
  };
  const fits = (w: Node): boolean => (w.shape[1] as number) % spec.groupSize === 0;
  if (!targets.some(fits)) throw new InputError(`no weight has rows that are a multiple of group ${spec.groupSize} (${targets.map((w) => `${attrsOf(w, 'weight').name} [${w.shape}]`).join(', ')})`);

  // AWQ: scales per group of matmuls reading one activation, folded into the producer; RTN afterwards
  const columnScales = new Map<string, Float64Array>();
  const alphas = new Map<string, number>();
  const notes = new Map<string, string>();
  const changed = new Set<string>();
  if (opts.method === 'awq') {
    const users = graph.users();
    const groups = new Map<Node, CapturedMatmul[]>();
    for (const m of captured.values()) groups.set(m.input, [...(groups.get(m.input) ?? []), m]);
    for (const group of groups.values()) {
      const names = group.map((m) => attrsOf(m.weight, 'weight').name);
      if (!group.every((m) => fits(m.weight))) continue;
      const fold = findAwqFold(group[0].input, group, users);
      if (!fold) {
        for (const n of names) notes.set(n, 'no op to fold 1/s into: RTN');
        continue;
      }
      const choice = awqSearch(group, group.map((m) => valueOf(m.weight)), spec, fold.kind === 'rows' ? fold.rowOf : undefined);
      progress(`awq: ${names.join(', ')}: alpha ${choice.alpha.toFixed(2)}, output error ${choice.error.toExponential(3)} (RTN ${choice.rtnError.toExponential(3)})`);
      for (const m of group) alphas.set(attrsOf(m.weight, 'weight').id, choice.alpha);
      if (choice.alpha === 0) continue;
      const s = choice.scales;
      for (const m of group) {
        const id = attrsOf(m.weight, 'weight').id;
        columnScales.set(id, s);
      }
      const divide = (n: Node, at: (i: number) => number): void => {
        const v = valueOf(n);
        for (let i = 0; i < v.length; i++) v[i] /= at(i);
        changed.add(attrsOf(n, 'weight').id);
      };
      if (fold.kind === 'norm') {
        divide(fold.weight, (i) => s[i]);
        if (fold.bias) divide(fold.bias, (i) => s[i]);
      } else {
        const rowScale = new Float64Array(fold.weight.shape[0] as number);
        fold.rowOf.forEach((row, j) => (rowScale[row] = s[j]));
        const cols = fold.weight.shape[1] as number;
        divide(fold.weight, (i) => rowScale[Math.floor(i / cols)]);
        if (fold.bias) divide(fold.bias, (i) => rowScale[i]);
      }
    }
  }

  const replacements = new Map<string, WeightEntry>();
  const layers: LayerReport[] = [];
  targets.forEach((w, i) => {
    const id = attrsOf(w, 'weight').id;
    const name = attrsOf(w, 'weight').name;
    const [rows, cols] = w.shape as [number, number];
    const shape: [number, number] = [rows, cols];
    if (!fits(w)) {
      layers.push({ name, shape, method: 'f32', note: `rows of ${cols} are no multiple of group ${spec.groupSize}` });
      return;
    }
    const exact = valueOf(w);
    const m = captured.get(id);
    const s = columnScales.get(id);
    if (opts.scaleOnly) {
      if (s) replacements.set(id, WeightStore.entry(name, 'f32', shape, { values: scaleColumns(exact, rows, cols, s) }));
      return;
    }
    let gw: GridWeight;
    let method: CompressMethod = opts.method;
    if (opts.method === 'gptq' && m) {
      const exactCols = opts.exactColumns?.(m) ?? [];
      const hessian = exactCols.length ? decoupledHessian(m.stats.hessian, cols, exactCols) : m.stats.hessian;
      gw = gptqQuantize(exact, rows, cols, hessian, spec, { actOrder: opts.actOrder, dampening: opts.dampening });
    }
    else {
      if (opts.method !== 'rtn' && !(opts.method === 'awq' && m)) method = 'rtn';
      const scaled = s ? scaleColumns(exact, rows, cols, s) : exact;
      gw = opts.method === 'awq' && m ? clippedRoundToNearest(scaled, rows, cols, spec, m.stats.hessian, s) : roundToNearest(scaled, rows, cols, spec);
    }
    const deq = dequantizeGridWeight(gw);
    if (s) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) deq[r * cols + c] /= s[c];
    const rtn = opts.method === 'rtn' ? undefined : dequantizeGridWeight(roundToNearest(exact, rows, cols, spec));
    const err = (q: Float32Array): number => (m ? relativeOutputError(exact, q, rows, cols, m.stats.hessian) : relativeWeightError(exact, q));
    layers.push({
      name,
      shape,
      method,
      bits: spec.bits,
      groupSize: spec.groupSize,
      relativeError: err(deq),
      errorKind: m ? 'output' : 'weight',
      ...(rtn ? { rtnRelativeError: err(rtn) } : {}),
      ...(alphas.has(id) ? { alpha: alphas.get(id) } : {}),
      ...(notes.has(name) ? { note: notes.get(name) } : {}),
    });
    replacements.set(id, encodeGridWeight(name, gw));
    progress(`${opts.method}: ${i + 1}/${targets.length} ${name} [${rows}x${cols}]`);
  });
  // folded norms and projections that stay f32
  for (const id of changed)
    if (!replacements.has(id)) {
      const e = graph.weights.get(id);
      replacements.set(id, WeightStore.entry(e.name, 'f32', e.shape, { values: values.get(id)! }));
    }
  return { graph: replaceWeights(graph, replacements), layers, calibrationTokens, captured };
}
