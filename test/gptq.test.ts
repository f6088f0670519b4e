// GPTQ against independent references: the lazy-batch Cholesky implementation equals the plain OBS form (one column
// at a time, explicit inverse-Hessian downdates, no Cholesky, no batches) on small matrices, with and without
// act-order; and on correlated inputs it leaves a smaller layer-output error than round-to-nearest at every bit width.
import { describe, expect, it } from 'vitest';
import { dequantizeGridWeight, dequantizeOnGrid, encodeGridWeight, minMaxGrid, quantizeOnGrid, roundToNearest, type GridSpec, type GridWeight, type GroupGrid } from '../src/compress/grid.js';
import { gptqPrepare, gptqQuantize } from '../src/compress/gptq.js';
import { outputSquaredError } from '../src/compress/layer-error.js';
import { cholesky, spdInverse } from '../src/compress/linalg.js';
import { decodeWeight } from '../src/ir/weights.js';
import { Rng } from '../src/util/random.js';

/** Inputs [m, k] with correlated columns (a random mixing of independent normals) and uneven scales. */
function correlatedInputs(rng: Rng, m: number, k: number): Float64Array {
  const mix = rng.normals(k * k);
  const scale = Array.from({ length: k }, () => Math.exp(rng.normal()));
  const x = new Float64Array(m * k);
  for (let r = 0; r < m; r++) {
    const z = rng.normals(k);
    for (let j = 0; j < k; j++) {
      let s = z[j];
      for (let i = 0; i < k; i++) s += 0.5 * z[i] * mix[i * k + j];
      x[r * k + j] = s * scale[j];
    }
  }
  return x;
}

function gram(x: Float64Array, m: number, k: number): Float64Array {
  const h = new Float64Array(k * k);
  for (let r = 0; r < m; r++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) h[i * k + j] += x[r * k + i] * x[r * k + j];
  return h;
}

/** Gauss-Jordan inverse (independent of the Cholesky code under test). */
function gaussJordanInverse(a: Float64Array, n: number): Float64Array {
  const m = Float64Array.from(a);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]) > Math.abs(m[p * n + c])) p = r;
    for (let j = 0; j < n; j++) {
      [m[c * n + j], m[p * n + j]] = [m[p * n + j], m[c * n + j]];
      [inv[c * n + j], inv[p * n + j]] = [inv[p * n + j], inv[c * n + j]];
    }
    const d = m[c * n + c];
    for (let j = 0; j < n; j++) {
      m[c * n + j] /= d;
      inv[c * n + j] /= d;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r * n + c];
      for (let j = 0; j < n; j++) {
        m[r * n + j] -= f * m[c * n + j];
        inv[r * n + j] -= f * inv[c * n + j];
      }
    }
  }
  return inv;
}

/**
 * The plain OBS form of GPTQ: columns in order (storage order, or decreasing diagonal), each rounded and its error
 * spread with the current inverse Hessian, which then drops that column (Hinv -= Hinv[:,i] Hinv[i,:] / Hinv[i][i]).
 */
function plainGptq(weights: Float32Array, rows: number, cols: number, hessian: Float64Array, spec: GridSpec, actOrder: boolean): GridWeight {
  const g = spec.groupSize;
  const { w, h } = gptqPrepare(weights, rows, cols, hessian, 0.01);
  const order = Array.from({ length: cols }, (_v, i) => i);
  if (actOrder) order.sort((a, b) => h[b * cols + b] - h[a * cols + a] || a - b);
  const hinv = gaussJordanInverse(h, cols);
  const grids: GroupGrid[] = new Array(rows * (cols / g));
  if (actOrder) for (let r = 0; r < rows; r++) for (let s = 0; s < cols / g; s++) grids[r * (cols / g) + s] = minMaxGrid(spec, w, r * cols + s * g);
  const q = new Int32Array(rows * cols);
  const done = new Set<number>();
  for (const i of order) {
    if (!actOrder && i % g === 0) for (let r = 0; r < rows; r++) grids[r * (cols / g) + i / g] = minMaxGrid(spec, w, r * cols + i);
    const d = hinv[i * cols + i];
    for (let r = 0; r < rows; r++) {
      const grid = grids[r * (cols / g) + Math.floor(i / g)];
      const x = w[r * cols + i];
      const qi = quantizeOnGrid(grid, x);
      q[r * cols + i] = qi;
      const e = (x - dequantizeOnGrid(grid, qi)) / d;
      for (let j = 0; j < cols; j++) if (j !== i && !done.has(j)) w[r * cols + j] -= e * hinv[i * cols + j];
    }
    done.add(i);
    const col = Array.from({ length: cols }, (_v, r) => hinv[r * cols + i]);
    for (let r = 0; r < cols; r++) for (let j = 0; j < cols; j++) hinv[r * cols + j] -= (col[r] * col[j]) / d;
  }
  return { rows, cols, spec, q, grids };
}

describe('linear algebra', () => {
  it('Cholesky reproduces the matrix and spdInverse inverts it', () => {
    const rng = new Rng(3);
    const k = 12;
    const h = gram(correlatedInputs(rng, 40, k), 40, k);
    const l = cholesky(h, k);
    const inv = spdInverse(h, k);
    for (let i = 0; i < k; i++)
      for (let j = 0; j < k; j++) {
        let s = 0;
        let p = 0;
        for (let t = 0; t < k; t++) {
          s += l[i * k + t] * l[j * k + t];
          p += h[i * k + t] * inv[t * k + j];
        }
        expect(s).toBeCloseTo(h[i * k + j], 8);
        expect(p).toBeCloseTo(i === j ? 1 : 0, 8);
      }
  });
});

describe('GPTQ', () => {
  for (const actOrder of [false, true])
    for (const spec of [{ bits: 4, groupSize: 32, symmetric: false }, { bits: 3, groupSize: 32, symmetric: false }, { bits: 8, groupSize: 64, symmetric: true }] as GridSpec[])
      it(`equals the plain one-column-at-a-time OBS form (${spec.bits} bits, group ${spec.groupSize}${actOrder ? ', act-order' : ''}; blocks of 32)`, () => {
        const rng = new Rng(11 + spec.bits + (actOrder ? 100 : 0));
        const [rows, cols, m] = [6, 128, 400];
        const w = rng.normals(rows * cols, 0.1);
        const h = gram(correlatedInputs(rng, m, cols), m, cols);
        const lazy = gptqQuantize(w, rows, cols, h, spec, { actOrder, blockSize: 32 });
        const plain = plainGptq(w, rows, cols, h, spec, actOrder);
        // identical integers except where float rounding flips an exact tie (none expected at this size)
        let differ = 0;
        for (let i = 0; i < lazy.q.length; i++) if (lazy.q[i] !== plain.q[i]) differ++;
        expect(differ).toBe(0);
        expect(lazy.grids).toEqual(plain.grids);
      });

  for (const bits of [8, 4, 3, 2] as const)
    it(`leaves a smaller layer-output error than RTN on correlated inputs (${bits} bits, group 32${bits > 2 ? ', with and without act-order' : ', act-order'})`, () => {
      const rng = new Rng(20 + bits);
      const [rows, cols, m] = [24, 96, 600];
      const w = rng.normals(rows * cols, 0.05);
      const x = correlatedInputs(rng, m, cols);
      const h = gram(x, m, cols);
      const spec: GridSpec = { bits, groupSize: 32, symmetric: false };
      const rtn = outputSquaredError(w, dequantizeGridWeight(roundToNearest(w, rows, cols, spec)), rows, cols, h);
      const gptq = outputSquaredError(w, dequantizeGridWeight(gptqQuantize(w, rows, cols, h, spec)), rows, cols, h);
      const ordered = outputSquaredError(w, dequantizeGridWeight(gptqQuantize(w, rows, cols, h, spec, { actOrder: true })), rows, cols, h);
      // at 2 bits, storage-order GPTQ's later grids (min-max of the updated weights) widen and it only ties RTN on
      // these inputs (measured: 1.02x); act-order's static grids keep its advantage
      if (bits > 2) expect(gptq).toBeLessThan(0.8 * rtn);
      expect(ordered).toBeLessThan(0.8 * rtn);
      // the error computed from the Hessian is the error of the outputs themselves
      const q = dequantizeGridWeight(gptqQuantize(w, rows, cols, h, spec));
      let direct = 0;
      for (let r = 0; r < m; r++)
        for (let n = 0; n < rows; n++) {
          let s = 0;
          for (let k = 0; k < cols; k++) s += x[r * cols + k] * (q[n * cols + k] - w[n * cols + k]);
          direct += s * s;
        }
      expect(gptq).toBeCloseTo(direct, 6);
    });

  it('encodes onto weights that decode to the grid values (Q8_0, Q4_0 and Q4_1 layouts, 3-bit grid in 4-bit containers)', () => {
    const rng = new Rng(5);
    const w = rng.normals(4 * 128, 0.2);
    for (const spec of [{ bits: 8, groupSize: 32, symmetric: true }, { bits: 4, groupSize: 64, symmetric: true }, { bits: 4, groupSize: 32, symmetric: false }, { bits: 3, groupSize: 128, symmetric: false }, { bits: 2, groupSize: 32, symmetric: true }] as GridSpec[]) {
      const gw = roundToNearest(w, 4, 128, spec);
      const levels = new Set(gw.q);
      expect(levels.size).toBeLessThanOrEqual(1 << spec.bits);
      expect(Array.from(decodeWeight(encodeGridWeight('w', gw)), (v) => v + 0)).toEqual(Array.from(dequantizeGridWeight(gw), (v) => v + 0));
    }
  });
});
