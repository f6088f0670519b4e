/**
 * Activation capture for weight compression: teacher-forces calibration token windows through a causal-LM graph on
 * the CPU reference backend and, through the interpreter's observer hook ({@link RunOptions.observe}), accumulates
 * for every matmul weight what GPTQ and AWQ need from its inputs `X` (all positions of all windows, `[M, K]`):
 *
 * - the Hessian `XᵀX` (`K × K`, accumulated in float64);
 * - the per-input-channel mean `|x|`.
 *
 * Matmuls that share an input (q, k and v; gate and up) share one accumulation. Weights are the `weight` operands of
 * `matmul(x, W)` with `transB` (stored `[N, K]`, as every builder and importer of a causal LM lays them out).
 * @module
 */
import { InputError } from '../errors.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { runGraph, type RunOptions } from '../runtime/cpu/interpreter.js';
import { Tensor } from '../runtime/cpu/tensor.js';

/** What calibration saw at one matmul input. */
export interface InputStatistics {
  /** Input channels (K). */
  readonly channels: number;
  /** Rows seen (positions over all windows). */
  rows: number;
  /** `XᵀX`, row-major `K × K`. */
  readonly hessian: Float64Array;
  /** Σ|x| per channel (divide by {@link InputStatistics.rows} for the mean). */
  readonly absSum: Float64Array;
}

/** A matmul weight and the statistics of its input. */
export interface CapturedMatmul {
  /** The `weight` node. */
  readonly weight: Node;
  /** The matmul's input node (shared by the matmuls that read the same activations). */
  readonly input: Node;
  /** Output channels (N, rows of the stored weight). */
  readonly rows: number;
  /** Input channels (K). */
  readonly cols: number;
  /** The input's statistics (the same object for every matmul reading that input). */
  readonly stats: InputStatistics;
}

/** Options of {@link captureMatmulInputs}. */
export interface CaptureOptions {
  /** Progress lines (one per window). */
  readonly onProgress?: (line: string) => void;
  /** Every matmul input as it is computed (name of a weight reading it, values row-major `[rows, K]`). */
  readonly onActivation?: (weightName: string, values: Float32Array, channels: number) => void;
}

/**
 * The matmuls of `graph` whose right operand is a 2-D float weight read with `transB` (stored `[N, K]`).
 * @internal
 */
export function weightMatmuls(graph: Graph): { matmul: Node; weight: Node; input: Node }[] {
  const out: { matmul: Node; weight: Node; input: Node }[] = [];
  for (const n of graph.nodes()) {
    if (!isOp(n, 'matmul') || !attrsOf(n, 'matmul').transB || attrsOf(n, 'matmul').transA) continue;
    const [x, w] = n.inputs;
    if (!isOp(w, 'weight') || w.shape.length !== 2 || (w.dtype !== 'f32' && w.dtype !== 'f16')) continue;
    out.push({ matmul: n, weight: w, input: x });
  }
  return out;
}

/** The graph inputs of one teacher-forced window from position 0: tokens, positions and empty KV caches. */
export function windowInputs(graph: Graph, tokens: readonly number[]): Record<string, Tensor> {
  const inputs: Record<string, Tensor> = {
    tokens: Tensor.from('i32', [1, tokens.length], tokens),
    positions: Tensor.from('i32', [tokens.length], tokens.map((_t, i) => i)),
  };
  for (const inp of graph.inputs) {
    const name = inp.attrs.name;
    if (name in inputs) continue;
    if (!name.startsWith('past_')) throw new InputError(`calibration cannot feed graph input '${name}' (only tokens, positions and past_* caches)`);
    inputs[name] = Tensor.zeros(inp.dtype, inp.shape.map((d) => (typeof d === 'number' ? d : 0)));
  }
  return inputs;
}

/** Adds the rows of `x` (`[rows, k]`) to `s`. */
function accumulate(s: InputStatistics, x: Float32Array, rows: number): void {
  const k = s.channels;
  const h = s.hessian;
  for (let r = 0; r < rows; r++) {
    const o = r * k;
    for (let i = 0; i < k; i++) {
      const xi = x[o + i];
      s.absSum[i] += Math.abs(xi);
      if (xi === 0) continue;
      const hi = i * k;
      for (let j = i; j < k; j++) h[hi + j] += xi * x[o + j];
    }
  }
  s.rows += rows;
}

/**
 * Runs each window of token ids through `graph` (positions from 0, empty caches) and returns the statistics of every
 * weight matmul's input, by weight id.
 * @throws InputError when there are no windows or a window is empty.
 */
export function captureMatmulInputs(graph: Graph, windows: readonly (readonly number[])[], opts: CaptureOptions = {}): Map<string, CapturedMatmul> {
  if (!windows.length || windows.some((w) => !w.length)) throw new InputError('calibration needs at least one non-empty token window');
  const matmuls = weightMatmuls(graph);
  const byInput = new Map<Node, InputStatistics>();
  const names = new Map<Node, string>();
  const out = new Map<string, CapturedMatmul>();
  for (const { weight, input } of matmuls) {
    const [rows, cols] = weight.shape as number[];
    let stats = byInput.get(input);
    if (!stats) {
      stats = { channels: cols, rows: 0, hessian: new Float64Array(cols * cols), absSum: new Float64Array(cols) };
      byInput.set(input, stats);
      names.set(input, attrsOf(weight, 'weight').name);
    }
    out.set(attrsOf(weight, 'weight').id, { weight, input, rows, cols, stats });
  }
  const observe: RunOptions['observe'] = (node, value) => {
    const s = byInput.get(node);
    if (!s) return;
    const x = value.data instanceof Float32Array ? value.data : Float32Array.from(value.data as ArrayLike<number>);
    const rows = x.length / s.channels;
    accumulate(s, x, rows);
    opts.onActivation?.(names.get(node)!, x, s.channels);
  };
  windows.forEach((w, i) => {
    runGraph(graph, windowInputs(graph, w), { observe });
    opts.onProgress?.(`calibration: window ${i + 1}/${windows.length} (${w.length} tokens)`);
  });
  // the upper triangle was accumulated: mirror it
  for (const s of byInput.values()) {
    const k = s.channels;
    for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) s.hessian[i * k + j] = s.hessian[j * k + i];
  }
  return out;
}

/**
 * Cuts a token sequence into windows of at most `length` tokens, each starting with `bos` (the sequence's own BOS is
 * dropped), at most `maxTokens` text tokens in all.
 */
export function tokenWindows(ids: readonly number[], bos: number, length: number, maxTokens = Infinity): number[][] {
  if (!(Number.isInteger(length) && length >= 2)) throw new InputError(`calibration windows need at least 2 positions, got ${length}`);
  const text = ids[0] === bos ? ids.slice(1) : ids.slice();
  const total = Math.min(text.length, maxTokens);
  const out: number[][] = [];
  for (let at = 0; at < total; at += length - 1) out.push([bos, ...text.slice(at, Math.min(total, at + length - 1))]);
  return out;
}
