/**
 * AWQ (activation-aware weight quantization, Lin et al., 2023): before rounding, each input channel `j` of the
 * matmuls that read one activation is scaled up by `s_j = mean|x_j|^α` (normalised so that `√(max s · min s)` = 1),
 * and the activation down by `1/s_j`, which the graph computes for free by folding `1/s` into the op that produces the
 * activation. Channels with large activations then get finer steps. `α` is searched on a grid of 20 points in
 * [0, 1) (0 is plain RTN), minimising the matmuls' output error on the calibration inputs, `Σ ‖(Q(W·diag s)·diag(1/s)
 * − W) Xᵀ‖²`, computed from the inputs' Hessian.
 *
 * Where `1/s` goes ({@link findAwqFold}):
 * - an `rmsnorm`/`layernorm` producing the activation: its weight (and a layernorm's bias) divided by `s` (q/k/v,
 *   gate/up, an untied classifier);
 * - `mul(a, matmul(h, W_up))` (SwiGLU's product): the rows of `W_up` divided by `s` (the down projection);
 * - `reshape(attention(q, k, v))` with `v = matmul(h, W_v)`: the rows of `W_v` divided by `s` (the output projection);
 *   with grouped KV heads a row of `W_v` feeds several query heads, so `s` is tied across them (one mean per row).
 *
 * A group with no such producer, or whose weights or producer have other users (an embedding table tied to the
 * classifier), keeps `s = 1`.
 *
 * AWQ's second step, the **clipping search** ({@link clippedRoundToNearest}), then rounds each scaled weight: per row
 * and group, the min-max range shrunk by a ratio in {1, 0.95, …, 0.55} that gives the least output error of that
 * group's inputs (`Δ H_gg Δᵀ`, with the Hessian of the scaled inputs).
 * @module
 */
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Node } from '../ir/node.js';
import type { CapturedMatmul } from './capture.js';
import { dequantizeGridWeight, dequantizeOnGrid, minMaxGrid, quantizeOnGrid, roundToNearest, type GridSpec, type GridWeight, type GroupGrid } from './grid.js';
import { outputSquaredError } from './layer-error.js';

/** Where an activation's `1/s` is folded. */
export type AwqFold =
  | {
      /** A norm's weight (and bias) divided by `s`. */
      readonly kind: 'norm';
      /** The norm's weight node. */
      readonly weight: Node;
      /** A layernorm's bias node. */
      readonly bias?: Node;
    }
  | {
      /** Rows of a producing matmul's weight (and bias) divided by `s`. */
      readonly kind: 'rows';
      /** The producing weight node (`[rows, K']`). */
      readonly weight: Node;
      /** Its bias node (added after the matmul). */
      readonly bias?: Node;
      /** Producer row of each activation channel. */
      readonly rowOf: Int32Array;
    };

/** Input channels of a captured matmul (its `K`). */
function channelsOf(m: CapturedMatmul): number {
  return m.cols;
}

/** `matmul(h, W)` with W a weight read with transB, optionally plus a bias weight: W and the bias. */
function projection(n: Node): { weight: Node; bias?: Node; matmul: Node } | undefined {
  let bias: Node | undefined;
  if (isOp(n, 'add')) {
    const [a, b] = n.inputs;
    if (isOp(a, 'matmul') && isOp(b, 'weight')) [n, bias] = [a, b];
    else if (isOp(b, 'matmul') && isOp(a, 'weight')) [n, bias] = [b, a];
    else return undefined;
  }
  if (!isOp(n, 'matmul') || !attrsOf(n, 'matmul').transB || !isOp(n.inputs[1], 'weight')) return undefined;
  return { weight: n.inputs[1], bias, matmul: n };
}

/**
 * The fold of the activation `input` read by the matmuls `group`, or `undefined` when `1/s` has nowhere to go.
 * `users` is the graph's user map.
 */
export function findAwqFold(input: Node, group: readonly CapturedMatmul[], users: Map<Node, Node[]>): AwqFold | undefined {
  const only = (n: Node, allowed: readonly Node[]): boolean => (users.get(n) ?? []).every((u) => allowed.includes(u));
  // the activation feeds only these matmuls, and their weights feed nothing else
  const matmuls = users.get(input) ?? [];
  if (!matmuls.every((u) => isOp(u, 'matmul') && group.some((m) => u.inputs[1] === m.weight))) return undefined;
  if (!group.every((m) => only(m.weight, matmuls))) return undefined;
  const k = channelsOf(group[0]);
  if ((isOp(input, 'rmsnorm') || isOp(input, 'layernorm')) && isOp(input.inputs[1], 'weight')) {
    const bias = isOp(input, 'layernorm') ? input.inputs[2] : undefined;
    if (bias && !isOp(bias, 'weight')) return undefined;
    if (!only(input.inputs[1], [input]) || (bias && !only(bias, [input]))) return undefined;
    return { kind: 'norm', weight: input.inputs[1], bias };
  }
  if (isOp(input, 'mul')) {
    for (const side of input.inputs) {
      const p = projection(side);
      if (!p || p.weight.shape[0] !== k || !only(side, [input]) || !only(p.weight, [p.matmul]) || (p.bias && !only(p.bias, [side]))) continue;
      return { kind: 'rows', weight: p.weight, bias: p.bias, rowOf: Int32Array.from({ length: k }, (_v, i) => i) };
    }
    return undefined;
  }
  if (isOp(input, 'reshape') && isOp(input.inputs[0], 'attention')) {
    const att = input.inputs[0];
    if (!only(att, [input])) return undefined;
    let v = att.inputs[2];
    if (isOp(v, 'concat')) v = v.inputs[v.inputs.length - 1];
    if (!isOp(v, 'reshape')) return undefined;
    const p = projection(v.inputs[0]);
    const [outShape, vShape] = [att.shape, v.shape];
    if (!p || outShape.length !== 4 || vShape.length !== 4) return undefined;
    const [heads, hs, kvHeads] = [outShape[2], outShape[3], vShape[2]];
    if (typeof heads !== 'number' || typeof hs !== 'number' || typeof kvHeads !== 'number' || heads * hs !== k || heads % kvHeads !== 0) return undefined;
    if (p.weight.shape[0] !== kvHeads * hs || !only(p.weight, [p.matmul]) || !only(v.inputs[0], [v]) || (p.bias && !only(p.bias, [v.inputs[0]]))) return undefined;
    const rowOf = Int32Array.from({ length: k }, (_v, j) => Math.floor(Math.floor(j / hs) / (heads / kvHeads)) * hs + (j % hs));
    return { kind: 'rows', weight: p.weight, bias: p.bias, rowOf };
  }
  return undefined;
}

/** The scales for exponent `alpha` from per-channel mean |x| (tied channels averaged by `rowOf`). */
export function awqScales(meanAbs: ArrayLike<number>, alpha: number, rowOf?: Int32Array): Float64Array {
  const k = meanAbs.length;
  let stat = Float64Array.from(meanAbs);
  if (rowOf) {
    const rows = Math.max(...rowOf) + 1;
    const sum = new Float64Array(rows);
    const count = new Float64Array(rows);
    for (let j = 0; j < k; j++) {
      sum[rowOf[j]] += meanAbs[j];
      count[rowOf[j]]++;
    }
    stat = Float64Array.from({ length: k }, (_v, j) => sum[rowOf[j]] / count[rowOf[j]]);
  }
  const s = Float64Array.from(stat, (x) => Math.max(x ** alpha, 1e-4));
  let [lo, hi] = [Infinity, 0];
  for (const x of s) [lo, hi] = [Math.min(lo, x), Math.max(hi, x)];
  const norm = Math.sqrt(lo * hi);
  for (let j = 0; j < k; j++) s[j] = Math.fround(s[j] / norm);
  return s;
}

/** `W · diag(s)` (row-major `[rows, cols]`). */
export function scaleColumns(w: ArrayLike<number>, rows: number, cols: number, s: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = w[r * cols + c] * s[c];
  return out;
}

/** The result of {@link awqSearch}: the best exponent, its scales and the output errors. */
export interface AwqChoice {
  /** The exponent chosen. */
  readonly alpha: number;
  /** The scales (all 1 when `alpha` is 0). */
  readonly scales: Float64Array;
  /** Σ output squared error of the group at `alpha`. */
  readonly error: number;
  /** The same at `alpha = 0` (RTN). */
  readonly rtnError: number;
}

/**
 * Searches `α ∈ {0, 1/n, …, (n−1)/n}` (n = `points`, default 20) for the group of matmuls reading one activation
 * (their weights `weights[i]`, row-major `[group[i].rows, K]`), minimising their summed output error after RTN on
 * `W·diag(s)` and division by `s`.
 */
export function awqSearch(group: readonly CapturedMatmul[], weights: readonly Float32Array[], spec: GridSpec, rowOf?: Int32Array, points = 20): AwqChoice {
  const stats = group[0].stats;
  const k = stats.channels;
  const meanAbs = Float64Array.from(stats.absSum, (x) => x / Math.max(stats.rows, 1));
  let best: AwqChoice | undefined;
  let rtnError = 0;
  for (let i = 0; i < points; i++) {
    const alpha = i / points;
    const s = alpha === 0 ? new Float64Array(k).fill(1) : awqScales(meanAbs, alpha, rowOf);
    let error = 0;
    group.forEach((m, gi) => {
      const w = weights[gi];
      const q = dequantizeGridWeight(roundToNearest(scaleColumns(w, m.rows, k, s), m.rows, k, spec));
      for (let r = 0; r < m.rows; r++) for (let c = 0; c < k; c++) q[r * k + c] /= s[c];
      error += outputSquaredError(w, q, m.rows, k, stats.hessian);
    });
    if (alpha === 0) rtnError = error;
    if (!best || error < best.error) best = { alpha, scales: s, error, rtnError };
  }
  return { ...best!, rtnError };
}

/**
 * Round to nearest with a clipping search per row and group: the grid of the range `[r·min, r·max]` (symmetric:
 * `r·max|w|`) for the ratio `r ∈ {1, 1 − 1/n, …}` (`ratios` of them, n = 20) that minimises the group's output error
 * `Δ H_gg Δᵀ`, `h` being the Hessian of the weight's inputs (`cols × cols`) and `inputScales` the per-channel factors
 * the weight's columns were multiplied by (the inputs were divided by them: the Hessian is `h[i][j] / (s_i s_j)`).
 */
export function clippedRoundToNearest(values: ArrayLike<number>, rows: number, cols: number, spec: GridSpec, h: ArrayLike<number>, inputScales?: ArrayLike<number>, ratios = 10): GridWeight {
  const base = roundToNearest(values, rows, cols, spec);
  const g = spec.groupSize;
  const groups = cols / g;
  const q = Int32Array.from(base.q);
  const grids: GroupGrid[] = [...base.grids];
  const hg = new Float64Array(g * g);
  const delta = new Float64Array(g);
  const scaled = new Float64Array(g);
  for (let s = 0; s < groups; s++) {
    for (let i = 0; i < g; i++)
      for (let j = 0; j < g; j++) {
        const [a, b] = [s * g + i, s * g + j];
        hg[i * g + j] = h[a * cols + b] / (inputScales ? inputScales[a] * inputScales[b] : 1);
      }
    for (let r = 0; r < rows; r++) {
      const at = r * cols + s * g;
      let best: GroupGrid | undefined;
      let bestErr = Infinity;
      for (let k = 0; k < ratios; k++) {
        const ratio = 1 - k / 20;
        for (let i = 0; i < g; i++) scaled[i] = values[at + i] * ratio;
        const grid = minMaxGrid(spec, scaled);
        for (let i = 0; i < g; i++) delta[i] = dequantizeOnGrid(grid, quantizeOnGrid(grid, values[at + i])) - values[at + i];
        let err = 0;
        for (let i = 0; i < g; i++) {
          let t = 0;
          for (let j = 0; j < g; j++) t += hg[i * g + j] * delta[j];
          err += delta[i] * t;
        }
        if (err < bestErr) [best, bestErr] = [grid, err];
      }
      grids[r * groups + s] = best!;
      for (let i = 0; i < g; i++) q[at + i] = quantizeOnGrid(best!, values[at + i]);
    }
  }
  return { rows, cols, spec, q, grids };
}
