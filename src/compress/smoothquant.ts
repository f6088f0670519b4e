/**
 * SmoothQuant (Xiao et al., 2023): before W8A8, move the activations' outlier channels into the weights. For the
 * matmuls reading one activation `X` (`[rows, K]`), input channel `j` gets the smoothing factor
 *
 *     s_j = max|X_j|^α / max|W_j|^(1−α)
 *
 * (`max|W_j|` over the column `j` of every weight reading `X`; `α` the migration strength, 0.5 by default), and the
 * graph computes `(X · diag(1/s)) · (diag(s) · Wᵀ)`: the same function, with flatter activations and steeper weights.
 * `1/s` is folded into the op producing `X` where one can take it ({@link findAwqFold}: a norm's gain, the rows of
 * the up projection under SwiGLU's product, the rows of `W_v` under attention), otherwise applied by an explicit
 * per-channel multiply before the matmuls. Channels a fold ties together (one row of `W_v` feeding several query
 * heads) share one factor, from their joint maxima.
 * @module
 */

/** The smoothing factors of one activation. */
export interface SmoothingInput {
  /** Per input channel, `max|X_j|` over the calibration rows. */
  readonly activationMax: ArrayLike<number>;
  /** Per input channel, `max|W_j|` over the columns `j` of every weight reading the activation. */
  readonly weightMax: ArrayLike<number>;
  /** Migration strength α in [0, 1]. */
  readonly alpha: number;
  /** Channels tied together (the producer row of each channel, from the fold); absent: none. */
  readonly rowOf?: Int32Array;
}

/** Factors are kept within [1/LIMIT, LIMIT] (a dead channel or an all-zero column gets 1). */
const LIMIT = 1e4;

/** `s_j = max|X_j|^α / max|W_j|^(1−α)` per channel, as f32 values (tied channels share their joint maxima). */
export function smoothingFactors(o: SmoothingInput): Float32Array {
  const k = o.activationMax.length;
  let [xm, wm] = [Float64Array.from(o.activationMax), Float64Array.from(o.weightMax)];
  if (o.rowOf) {
    const rows = Math.max(...o.rowOf) + 1;
    const [xr, wr] = [new Float64Array(rows), new Float64Array(rows)];
    for (let j = 0; j < k; j++) {
      xr[o.rowOf[j]] = Math.max(xr[o.rowOf[j]], xm[j]);
      wr[o.rowOf[j]] = Math.max(wr[o.rowOf[j]], wm[j]);
    }
    xm = Float64Array.from({ length: k }, (_v, j) => xr[o.rowOf![j]]);
    wm = Float64Array.from({ length: k }, (_v, j) => wr[o.rowOf![j]]);
  }
  return Float32Array.from({ length: k }, (_v, j) => {
    if (!(xm[j] > 0 && wm[j] > 0)) return 1;
    const s = xm[j] ** o.alpha / wm[j] ** (1 - o.alpha);
    return Math.min(LIMIT, Math.max(1 / LIMIT, s));
  });
}

/** Per column `j` of row-major `[rows, cols]` weights, `max|W[:, j]|` over all of them. */
export function columnAbsMax(weights: readonly { values: ArrayLike<number>; rows: number }[], cols: number): Float64Array {
  const out = new Float64Array(cols);
  for (const { values, rows } of weights) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c] = Math.max(out[c], Math.abs(values[r * cols + c]));
  return out;
}
