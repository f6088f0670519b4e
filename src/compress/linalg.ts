/**
 * Dense float64 linear algebra for the weight-compression methods: Cholesky factorisation, the inverse of a symmetric
 * positive definite matrix, and the upper Cholesky factor of that inverse (what GPTQ needs). Matrices are row-major
 * `Float64Array`s of `n × n`.
 * @module
 */
import { InputError } from '../errors.js';

/**
 * The lower Cholesky factor `L` of symmetric positive definite `a` (`a = L Lᵀ`).
 * @throws InputError when `a` is not positive definite (a pivot is not positive).
 */
export function cholesky(a: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j];
    for (let k = 0; k < j; k++) d -= l[j * n + k] * l[j * n + k];
    if (!(d > 0)) throw new InputError(`matrix is not positive definite (pivot ${j} is ${d})`);
    const ljj = Math.sqrt(d);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = s / ljj;
    }
  }
  return l;
}

/** The inverse of a lower triangular matrix (lower triangular). */
export function invertLower(l: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    inv[j * n + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s -= l[i * n + k] * inv[k * n + j];
      inv[i * n + j] = s / l[i * n + i];
    }
  }
  return inv;
}

/** The inverse of symmetric positive definite `a`, through its Cholesky factor (`a⁻¹ = L⁻ᵀ L⁻¹`). */
export function spdInverse(a: Float64Array, n: number): Float64Array {
  const li = invertLower(cholesky(a, n), n);
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < n; k++) s += li[k * n + i] * li[k * n + j];
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  return out;
}

/** The upper Cholesky factor `U` of `a⁻¹` (`a⁻¹ = Uᵀ U`), for symmetric positive definite `a`. */
export function upperCholeskyOfInverse(a: Float64Array, n: number): Float64Array {
  const l = cholesky(spdInverse(a, n), n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) u[j * n + i] = l[i * n + j];
  return u;
}
