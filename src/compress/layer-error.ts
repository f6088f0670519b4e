/**
 * A layer's output error on its calibration inputs, computed from their Hessian `H = XᵀX` instead of the inputs
 * themselves: `‖(W' − W) Xᵀ‖² = Σₙ Δwₙ H Δwₙᵀ` over the rows `n` of the weight difference.
 * @module
 */

/** `Σₙ aₙ H bₙᵀ` over the rows of `a` and `b` (row-major `[rows, cols]`), `H` being `cols × cols`. */
export function hessianInner(a: ArrayLike<number>, b: ArrayLike<number>, rows: number, cols: number, h: ArrayLike<number>): number {
  let total = 0;
  const hb = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let i = 0; i < cols; i++) {
      let s = 0;
      for (let j = 0; j < cols; j++) s += h[i * cols + j] * b[o + j];
      hb[i] = s;
    }
    for (let i = 0; i < cols; i++) total += a[o + i] * hb[i];
  }
  return total;
}

/** `‖(approx − exact) Xᵀ‖²` for inputs with Hessian `h`. */
export function outputSquaredError(exact: ArrayLike<number>, approx: ArrayLike<number>, rows: number, cols: number, h: ArrayLike<number>): number {
  const d = new Float64Array(rows * cols);
  for (let i = 0; i < d.length; i++) d[i] = approx[i] - exact[i];
  return hessianInner(d, d, rows, cols, h);
}

/** The relative output error `‖(approx − exact) Xᵀ‖ / ‖exact · Xᵀ‖` (0 when the exact output is 0). */
export function relativeOutputError(exact: ArrayLike<number>, approx: ArrayLike<number>, rows: number, cols: number, h: ArrayLike<number>): number {
  const den = hessianInner(exact, exact, rows, cols, h);
  return den > 0 ? Math.sqrt(outputSquaredError(exact, approx, rows, cols, h) / den) : 0;
}
