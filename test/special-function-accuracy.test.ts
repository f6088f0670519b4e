// Accuracy of erf and GELU (erf and tanh forms) over the whole f32 range, on the CPU reference backend and through
// WGSL kernels on the WebGPU device (lavapipe in CI): a dense sweep (log-spaced magnitudes from the smallest subnormal
// up, in both tails, and a fine linear grid over [-16, 8]) against references computed here in double precision by
// formulas the implementations do not use.
//
// The bound, "2 ulp-equivalent": for an exact value e (the double-precision reference at the f32 input),
//   |e| >= 2^-126 (f32 normal range): |got - e| <= 2 · ulp(e), ulp(e) = 2^(floor(log2 |e|) - 23), the f32 spacing at e;
//   |e| <  2^-126 (the result underflows f32): got is ±0 (WGSL lets devices flush subnormals) or |got - e| <= 2 · 2^-149.
// The CPU backend computes in double and rounds once (Math.fround), so it is held to 0.501 ulp. lavapipe's own `exp`
// errs by up to ~60 ulp (WGSL allows 3 + 2|x|); the WGSL helpers do not use it, so no range needs a looser bound.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Node } from '../src/ir/node.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { generateElementwiseKernel } from '../src/codegen/elementwise.js';
import { generateMatmulKernel } from '../src/codegen/matmul/index.js';
import { runKernelOnce } from '../src/runtime/webgpu/one-shot.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { readBindings, runOutput } from './support/run-kernel.js';

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

// --- double-precision references (independent of src/runtime/cpu/math.ts and of the WGSL helpers) ---

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/** erf(x) for |x| < 0.5 by the all-positive series (2/√π) e^(-x²) Σ 2^n x^(2n+1) / (1·3·…·(2n+1)). */
function erfByPositiveSeries(x: number): number {
  const x2 = x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < 60 && Math.abs(term) >= 1e-18 * Math.abs(sum); n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
}

/**
 * erfc(t) for t >= 0.5 by Craig's integral (2/π) ∫_0^{π/2} exp(-t²/sin²θ) dθ with the midpoint rule: the integrand is
 * smooth and periodic (all its derivatives vanish at 0), so 200 points give ~1e-15 relative error; the terms are
 * positive, so the relative accuracy holds far into the tail.
 */
function erfcByCraig(t: number): number {
  const n = 200;
  const h = Math.PI / 2 / n;
  let s = 0;
  for (let i = 1; i <= n; i++) {
    const sn = Math.sin((i - 0.5) * h);
    s += Math.exp(-(t * t) / (sn * sn));
  }
  return (s * h * 2) / Math.PI;
}

function erfcRef(t: number): number {
  if (t < 0) return 2 - erfcRef(-t);
  return t < 0.5 ? 1 - erfByPositiveSeries(t) : erfcByCraig(t);
}

function erfRef(x: number): number {
  if (Number.isNaN(x) || x === 0) return x;
  const a = Math.abs(x);
  if (a < 0.5) return erfByPositiveSeries(x);
  return Math.sign(x) * (1 - (a > 27 ? 0 : erfcByCraig(a)));
}

/** GELU, erf form: x/2 · erfc(-x/√2); gelu(-∞) = -0, its limit. */
function geluErfRef(x: number): number {
  if (!Number.isFinite(x)) return x < 0 ? -0 : x;
  return 0.5 * x * erfcRef(-x * Math.SQRT1_2);
}

/** GELU, tanh form (onnxruntime's approximate='tanh'): x/2 (1 + tanh(u)), as x e^(2u) / (1 + e^(2u)) where that cancels. */
function geluTanhRef(x: number): number {
  if (!Number.isFinite(x)) return x < 0 ? -0 : x;
  const u = Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x);
  if (u >= -1) return 0.5 * x * (1 + Math.tanh(u));
  const e = Math.exp(2 * u);
  return (x * e) / (1 + e);
}

/** The error of `got` in units of the bound's ulp (see the top of the file); NaN and ±inf must match exactly. */
function ulpError(got: number, exact: number): number {
  if (Number.isNaN(exact)) return Number.isNaN(got) ? 0 : Infinity;
  if (!Number.isFinite(exact)) return got === exact ? 0 : Infinity;
  const a = Math.abs(exact);
  if (a < 2 ** -126) return got === 0 ? 0 : Math.abs(got - exact) / 2 ** -149;
  return Math.abs(got - exact) / 2 ** (Math.floor(Math.log2(a)) - 23);
}

// --- the sweep ---

/** f32 inputs: ±10^k log-spaced over k ∈ [-45, 3) (subnormals to 1000), a linear grid over [-16, 8], edge cases. */
function sweep(): Float32Array {
  const xs: number[] = [];
  const logN = 50_000;
  for (let i = 0; i < logN; i++) {
    const m = 10 ** (-45 + (48 * i) / logN);
    xs.push(m, -m);
  }
  const linN = 100_000;
  for (let i = 0; i <= linN; i++) xs.push(-16 + (24 * i) / linN);
  const edges = [0, -0, Infinity, -Infinity, NaN, 3.4028234663852886e38, 2 ** -149, 2 ** -126, 0.75, 4, 12, 16, 13.1, 10.3];
  for (const e of edges) xs.push(e, -e, Math.fround(e * (1 + 2 ** -23)), Math.fround(e * (1 - 2 ** -24)));
  return Float32Array.from(xs);
}

interface Fn {
  readonly name: string;
  readonly build: (b: GraphBuilder, x: Node) => Node;
  readonly ref: (x: number) => number;
}

const FNS: readonly Fn[] = [
  { name: 'gelu (erf form)', build: (b, x) => b.gelu(x), ref: geluErfRef },
  { name: 'gelu (tanh form)', build: (b, x) => b.gelu(x, 'tanh'), ref: geluTanhRef },
  { name: 'erf', build: (b, x) => b.erf(x), ref: erfRef },
];

/** The worst error over the sweep, with where it happened. */
function worst(xs: Float32Array, got: ArrayLike<number>, exact: Float64Array): { err: number; x: number; got: number; exact: number } {
  let w = { err: -1, x: NaN, got: NaN, exact: NaN };
  for (let i = 0; i < xs.length; i++) {
    const err = ulpError(got[i], exact[i]);
    if (!(err <= w.err)) w = { err: Number.isNaN(err) ? Infinity : err, x: xs[i], got: got[i], exact: exact[i] };
  }
  return w;
}

const xs = sweep();
const exactOf = new Map<string, Float64Array>();
function exact(f: Fn): Float64Array {
  let e = exactOf.get(f.name);
  if (!e) exactOf.set(f.name, (e = Float64Array.from(xs, f.ref)));
  return e;
}

describe('the references', () => {
  it('agree with each other where they meet and with tabulated values', () => {
    for (let t = 0.5; t <= 0.7; t += 0.01) expect(Math.abs(erfcByCraig(t) / (1 - erfByPositiveSeries(t)) - 1)).toBeLessThan(1e-14);
    expect(erfRef(1)).toBeCloseTo(0.8427007929497149, 15);
    expect(Math.abs(erfcRef(5) / 1.5374597944280349e-12 - 1)).toBeLessThan(1e-14); // Abramowitz & Stegun table 7.1
    expect(Math.abs(erfcRef(10) / 2.0884875837625448e-45 - 1)).toBeLessThan(1e-14);
    expect(geluTanhRef(-10)).toBeLessThan(0); // a normal f32 (-1.2e-37), which 1 + tanh(u) would lose
  });
});

describe('erf and GELU accuracy', () => {
  it.for(FNS.map((f) => [f.name, f] as const))('%s on the CPU backend: correctly rounded (≤ 0.501 ulp)', ([, f]) => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [xs.length]);
    const got = runGraph(b.build({ y: f.build(b, x) }), { x: new Tensor('f32', [xs.length], xs) }).y.numbers;
    const w = worst(xs, got, exact(f));
    expect(w.err, `worst at x = ${w.x}: got ${w.got}, exact ${w.exact}`).toBeLessThanOrEqual(0.501);
  });

  it.for(FNS.map((f) => [f.name, f] as const))('%s in a WGSL elementwise kernel: ≤ 2 ulp', async ([, f], ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [xs.length]);
    const y = f.build(b, x);
    const kernel = generateElementwiseKernel(y);
    const [got] = await runKernelOnce(gpu.device, kernel, [new Tensor('f32', [xs.length], xs), { dtype: 'f32', shape: [xs.length] }]);
    const w = worst(xs, got.numbers, exact(f));
    expect(w.err, `worst at x = ${w.x}: got ${w.got}, exact ${w.exact}`).toBeLessThanOrEqual(2);
  });

  it('GELU as a matmul epilogue keeps the same accuracy in the tails', async (ctx) => {
    if (!gpu) return ctx.skip();
    // acc[m, n] = A[m, 0] · 1 = A[m, 0] exactly: a column of tail and near-zero values through K = 1
    const rows = Float32Array.from({ length: 512 }, (_v, i) => (i % 2 ? -1 : 1) * 10 ** (-3 + (i / 512) * 4.2));
    const ones = Tensor.from('f32', [1, 4], [1, 1, 1, 1]);
    for (const [helper, ref] of [['gelu_erf', geluErfRef], ['gelu_tanh', geluTanhRef]] as const) {
      const kernel = generateMatmulKernel({
        M: rows.length, N: 4, K: 1, variant: { kind: 'naive' }, nodes: [],
        epilogue: { operands: [], expr: (acc) => `tw_${helper}(${acc})`, helpers: [helper] },
      });
      const got = await runOutput(gpu.device, kernel, readBindings(kernel, [new Tensor('f32', [rows.length, 1], rows), ones]), { dtype: 'f32', shape: [rows.length, 4], fill: 'nan' });
      const inputs = Float32Array.from({ length: rows.length * 4 }, (_v, i) => rows[i >> 2]);
      const w = worst(inputs, got.numbers, Float64Array.from(inputs, ref));
      expect(w.err, `${helper}: worst at x = ${w.x}: got ${w.got}, exact ${w.exact}`).toBeLessThanOrEqual(2);
    }
  });
});
