// Pruning (src/compress): masks keep exactly the pattern's share of the best-scoring weights in each unit; Wanda's
// input norms against a hand computation; SNIP's gradient against finite differences of the loss; GraSP's
// Hessian-gradient product and the Fisher scores against closed forms on a quadratic loss; masked fine-tuning keeps
// pruned weights at zero and lowers the loss; SparseGPT's reconstruction has lower output error than Wanda's mask alone; structured pruning computes what the original model computes with the
// removed channels' and heads' outputs zeroed; typed errors for bad sparsities, shapes and head counts.
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { captureMatmulInputs } from '../src/compress/capture.js';
import { gradientSaliencies, hessianGradientProduct } from '../src/compress/gradient-saliency.js';
import { maskedFinetune } from '../src/compress/masked-finetune.js';
import { nextTokenBatches, nextTokenLossGraph, ParameterGradients } from '../src/compress/parameter-gradients.js';
import { prunableWeights, pruneGraph } from '../src/compress/prune-graph.js';
import { sparseGptPrune } from '../src/compress/sparsegpt.js';
import { relativeOutputError } from '../src/compress/layer-error.js';
import { pruneStructured } from '../src/models/llama-structured-prune.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { windowInputs } from '../src/compress/capture.js';
import { parsePrunePattern, patternSparsity, selectMasks, type ScoredMatrix } from '../src/compress/prune-mask.js';
import { inputChannelNorms, wandaSaliency } from '../src/compress/saliency.js';
import { expectThrown } from './support/expect-thrown.js';

const rng = new Rng(7);
const scored = (name: string, rows: number, cols: number): ScoredMatrix => ({ name, rows, cols, scores: rng.uniforms(rows * cols, -1, 1) });
const count = (m: Uint8Array, from = 0, to = m.length): number => m.subarray(from, to).reduce((a, x) => a + x, 0);
/** Every kept score is at least every pruned score among `idx`. */
function keepsBest(scores: ArrayLike<number>, mask: Uint8Array, idx: number[]): boolean {
  const kept = idx.filter((i) => mask[i]).map((i) => scores[i]);
  const pruned = idx.filter((i) => !mask[i]).map((i) => scores[i]);
  return !kept.length || !pruned.length || Math.min(...kept) >= Math.max(...pruned);
}
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_v, i) => a + i);

describe('pruning masks', () => {
  const ws = [scored('a', 8, 16), scored('b', 12, 8), scored('c', 4, 24)];

  it('unstructured: exactly round((1 − S)·size) of the best kept per layer, per row, or over all layers', () => {
    for (const s of [0, 0.3, 0.5, 0.9]) {
      const layer = selectMasks(ws, { kind: 'unstructured' }, s, 'layer');
      ws.forEach((w, i) => {
        expect(count(layer[i])).toBe(Math.round((1 - s) * w.rows * w.cols));
        expect(keepsBest(w.scores, layer[i], range(0, w.rows * w.cols))).toBe(true);
      });
      const row = selectMasks(ws, { kind: 'unstructured' }, s, 'row');
      ws.forEach((w, i) => {
        for (let r = 0; r < w.rows; r++) {
          expect(count(row[i], r * w.cols, (r + 1) * w.cols)).toBe(Math.round((1 - s) * w.cols));
          expect(keepsBest(w.scores, row[i], range(r * w.cols, (r + 1) * w.cols))).toBe(true);
        }
      });
      const global = selectMasks(ws, { kind: 'unstructured' }, s, 'global');
      const total = ws.reduce((a, w) => a + w.scores.length, 0);
      expect(global.reduce((a, m) => a + count(m), 0)).toBe(Math.round((1 - s) * total));
      const all = ws.flatMap((w) => Array.from(w.scores));
      const flat = Uint8Array.from(global.flatMap((m) => Array.from(m)));
      expect(keepsBest(all, flat, range(0, total))).toBe(true);
    }
  });

  it('N:M: exactly N of every M consecutive weights along K, the best of each group', () => {
    for (const [n, m] of [[2, 4], [1, 4], [4, 8]]) {
      const masks = selectMasks(ws, { kind: 'nm', n, m }, 1 - n / m);
      ws.forEach((w, i) => {
        for (let g = 0; g < w.scores.length; g += m) {
          expect(count(masks[i], g, g + m)).toBe(n);
          expect(keepsBest(w.scores, masks[i], range(g, g + m))).toBe(true);
        }
      });
    }
  });

  it('block<B>: whole B×B blocks, exactly round((1 − S)·blocks) per layer, by the sum of their scores', () => {
    const B = 4;
    for (const s of [0.25, 0.5, 0.75]) {
      const masks = selectMasks(ws, { kind: 'block', block: B }, s, 'layer');
      ws.forEach((w, i) => {
        const C = w.cols / B;
        const sums: number[] = [];
        const kept: boolean[] = [];
        for (let br = 0; br < w.rows / B; br++)
          for (let bc = 0; bc < C; bc++) {
            let [sum, on] = [0, 0];
            for (let r = 0; r < B; r++)
              for (let c = 0; c < B; c++) {
                const at = (br * B + r) * w.cols + bc * B + c;
                sum += w.scores[at];
                on += masks[i][at];
              }
            expect([0, B * B]).toContain(on);
            sums.push(sum);
            kept.push(on > 0);
          }
        expect(kept.filter(Boolean)).toHaveLength(Math.round((1 - s) * sums.length));
        expect(keepsBest(sums, Uint8Array.from(kept, Number), range(0, sums.length))).toBe(true);
      });
      const global = selectMasks(ws, { kind: 'block', block: B }, s, 'global');
      const blocks = ws.reduce((a, w) => a + (w.rows * w.cols) / (B * B), 0);
      expect(global.reduce((a, m) => a + count(m), 0)).toBe(Math.round((1 - s) * blocks) * B * B);
    }
  });

  it('bad sparsities, patterns and shapes are typed errors naming the weight or the flag', () => {
    for (const s of [1, 1.5, -0.1, NaN]) expect(expectThrown(() => selectMasks(ws, { kind: 'unstructured' }, s), InputError).message).toMatch(/sparsity must be in \[0, 1\)/);
    expect(expectThrown(() => selectMasks([scored('w', 2, 6)], { kind: 'nm', n: 2, m: 4 }, 0.5), InputError).message).toMatch(/'w' has rows of 6 \(K\), not a multiple of M = 4/);
    expect(expectThrown(() => selectMasks([scored('w', 6, 8)], { kind: 'block', block: 4 }, 0.5), InputError).message).toMatch(/'w' is \[6, 8\].*4x4 blocks/);
    expect(expectThrown(() => selectMasks(ws, { kind: 'block', block: 4 }, 0.5, 'row'), InputError).message).toMatch(/scope row/);
    expect(expectThrown(() => patternSparsity({ kind: 'nm', n: 2, m: 4 }, 0.6), InputError).message).toMatch(/disagrees with --pattern 2:4/);
    expect(expectThrown(() => patternSparsity({ kind: 'unstructured' }, undefined), InputError).message).toMatch(/needs --sparsity/);
    for (const p of ['3:2', '0:4', 'block0', 'blocks', '2:4:8']) expect(() => parsePrunePattern(p), p).toThrow(InputError);
    expect(parsePrunePattern('2:4')).toEqual({ kind: 'nm', n: 2, m: 4 });
    expect(parsePrunePattern('block16')).toEqual({ kind: 'block', block: 16 });
  });
});

const tiny: LlamaConfig = { dim: 8, hiddenDim: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 12, seqLen: 16, sharedClassifier: true };
const tinyWindows = [
  [1, 4, 7, 2, 9, 3],
  [1, 5, 5, 8, 2, 11, 6],
];

describe('saliencies against independent computations', () => {
  it("Wanda's input norms are the L2 norms over all positions of each channel of the normalized embeddings", () => {
    const weights = randomLlamaWeights(tiny, 3);
    const g = buildLlama(tiny, weights);
    const wq = prunableWeights(g).find((w) => w.attrs.name === 'layers.0.wq')!;
    const stats = captureMatmulInputs(g, tinyWindows).get(wq.attrs.id as string)!.stats;
    // by hand: wq reads rmsnorm(embedding) with unit norm weights
    const want = new Float64Array(tiny.dim);
    for (const w of tinyWindows)
      for (const t of w) {
        const e = (weights.tokenEmbedding as Float32Array).subarray(t * tiny.dim, (t + 1) * tiny.dim);
        const rms = Math.sqrt(e.reduce((a, x) => a + x * x, 0) / tiny.dim + 1e-5);
        e.forEach((x, j) => (want[j] += (x / rms) ** 2));
      }
    const norms = inputChannelNorms(stats);
    want.forEach((v, j) => expect(norms[j]).toBeCloseTo(Math.sqrt(v), 4));
    const W = [1, -2, 0.5, 3];
    expect(Array.from(wandaSaliency(W, 2, 2, [2, 10]))).toEqual([2, 20, 1, 30]);
  });

  it("SNIP's gradient matches central finite differences of the calibration loss", () => {
    const g = buildLlama(tiny, randomLlamaWeights(tiny, 4));
    const names = ['layers.0.w1', 'layers.0.wq'];
    const pg = new ParameterGradients(nextTokenLossGraph(g), { loss: 'loss', params: names });
    const batches = nextTokenBatches(g, tinyWindows);
    const snip = gradientSaliencies(pg, batches, 'snip');
    const meanLoss = (values: Record<string, Float32Array>): number => batches.reduce((a, b) => a + pg.evaluate(b, values).loss, 0) / batches.length;
    const r = new Rng(9);
    const checked: number[] = [];
    for (const name of names)
      for (let k = 0; k < 6; k++) {
        const i = r.int(pg.initial[name].length);
        const h = 1e-2;
        const at = (d: number): Record<string, Float32Array> => ({ ...pg.initial, [name]: Float32Array.from(pg.initial[name], (v, j) => (j === i ? v + d : v)) });
        const fd = (meanLoss(at(h)) - meanLoss(at(-h))) / (2 * h);
        const w = pg.initial[name][i];
        // the finite difference in float32 is good to about 1e-3 of the gradient's scale
        expect(Math.abs(snip[name][i] - Math.abs(w * fd)), `${name}[${i}]: ${snip[name][i]} vs ${Math.abs(w * fd)}`).toBeLessThan(2e-2 * Math.abs(w * fd) + 1e-5 * Math.abs(w));
        checked.push(Math.abs(w * fd));
      }
    // not vacuous: the scores checked are not all tiny
    expect(Math.max(...checked)).toBeGreaterThan(1e-3);
  });

  // a quadratic loss L = ½‖x·Wᵀ − t‖²: ∂L/∂W = (xWᵀ − t)ᵀx and H·V = V·xᵀx, computed here in float64
  const [R, N, K] = [5, 3, 4];
  const quadratic = (): { pg: ParameterGradients; batches: Record<string, Tensor>[]; W: number[]; xs: number[][]; ts: number[][] } => {
    const b = new GraphBuilder();
    const r = new Rng(11);
    const W = r.uniforms(N * K, -1, 1);
    const x = b.input('x', 'f32', [R, K]);
    const t = b.input('t', 'f32', [R, N]);
    const d = b.sub(b.matmul(x, b.weight('W', [N, K], W), { transB: true }), t);
    const graph = b.build({ loss: b.mul(b.sum(b.mul(d, d), [0, 1]), 0.5) });
    const xs = [r.uniforms(R * K, -1, 1), r.uniforms(R * K, -1, 1)].map((a) => Array.from(a));
    const ts = [r.uniforms(R * N, -1, 1), r.uniforms(R * N, -1, 1)].map((a) => Array.from(a));
    const batches = xs.map((xv, i) => ({ x: Tensor.from('f32', [R, K], xv), t: Tensor.from('f32', [R, N], ts[i]) }));
    return { pg: new ParameterGradients(graph, { loss: 'loss', params: ['W'] }), batches, W: Array.from(W), xs, ts };
  };
  const gradByHand = (W: number[], x: number[], t: number[]): number[] => {
    const g = new Array<number>(N * K).fill(0);
    for (let r = 0; r < R; r++)
      for (let n = 0; n < N; n++) {
        let y = -t[r * N + n];
        for (let k = 0; k < K; k++) y += x[r * K + k] * W[n * K + k];
        for (let k = 0; k < K; k++) g[n * K + k] += y * x[r * K + k];
      }
    return g;
  };

  it("GraSP's finite-difference H·g equals g·xᵀx on a quadratic loss, and its score is W ⊙ Hg", () => {
    const { pg, batches, W, xs, ts } = quadratic();
    const gs = xs.map((x, i) => gradByHand(W, x, ts[i]));
    const g = gs[0].map((v, i) => (v + gs[1][i]) / 2);
    // H of the mean loss: the mean of the batches' xᵀx
    const hg = new Array<number>(N * K).fill(0);
    for (const x of xs)
      for (let n = 0; n < N; n++)
        for (let k = 0; k < K; k++) for (let j = 0; j < K; j++) for (let r = 0; r < R; r++) hg[n * K + k] += (g[n * K + j] * x[r * K + j] * x[r * K + k]) / xs.length;
    const got = hessianGradientProduct(pg, batches);
    got.grad.W.forEach((v, i) => expect(v).toBeCloseTo(g[i], 4));
    got.hessianGrad.W.forEach((v, i) => expect(v).toBeCloseTo(hg[i], 2));
    const scores = gradientSaliencies(pg, batches, 'grasp').W;
    scores.forEach((v, i) => expect(v).toBeCloseTo(W[i] * hg[i], 2));
  });

  it('Fisher is ½·mean(g_b²)·W² over the batches', () => {
    const { pg, batches, W, xs, ts } = quadratic();
    const gs = xs.map((x, i) => gradByHand(W, x, ts[i]));
    const scores = gradientSaliencies(pg, batches, 'fisher').W;
    scores.forEach((v, i) => expect(v).toBeCloseTo((0.5 * (gs[0][i] ** 2 + gs[1][i] ** 2) * W[i] ** 2) / 2, 4));
  });
});

describe('pruneGraph and masked fine-tuning on a tiny Llama', () => {
  it('prunes the layer matmuls only, to the pattern, and fine-tuning keeps pruned weights at zero while the loss falls', () => {
    const g = buildLlama(tiny, randomLlamaWeights(tiny, 5));
    expect(prunableWeights(g).map((w) => w.attrs.name)).toEqual(['layers.0.wq', 'layers.0.wk', 'layers.0.wv', 'layers.0.wo', 'layers.0.w1', 'layers.0.w3', 'layers.0.w2']);
    for (const method of ['magnitude', 'wanda', 'snip', 'grasp', 'fisher', 'sparsegpt'] as const) {
      const r = pruneGraph(g, tinyWindows, { method, pattern: { kind: 'nm', n: 2, m: 4 } });
      expect(r.layers.every((l) => l.sparsity === 0.5), method).toBe(true);
      expect(r.sparsity).toBe(0.5);
    }
    expect(expectThrown(() => pruneGraph(g, tinyWindows, { method: 'magnitude', pattern: { kind: 'nm', n: 1, m: 3 } }), InputError).message).toMatch(/'layers\.0\.wq' has rows of 8 \(K\), not a multiple of M = 3/);

    const r = pruneGraph(g, tinyWindows, { method: 'wanda', pattern: { kind: 'unstructured' }, sparsity: 0.5 });
    const params = r.graph.weights.all().map((e) => e.name);
    const pg = new ParameterGradients(nextTokenLossGraph(r.graph), { loss: 'loss', params });
    const batches = nextTokenBatches(r.graph, tinyWindows);
    const ft = maskedFinetune(pg, batches, pg.initial, r.masks, { steps: 40, adam: { lr: 1e-2 } });
    for (const [name, m] of r.masks) ft.values[name].forEach((v, i) => (m[i] ? undefined : expect(v).toBe(0)));
    const meanLoss = (values: Record<string, Float32Array>): number => batches.reduce((a, b) => a + pg.evaluate(b, values).loss, 0) / batches.length;
    expect(meanLoss(ft.values)).toBeLessThan(0.8 * meanLoss(pg.initial));
    // the kept weights did move
    const wq = r.masks.get('layers.0.wq')!;
    expect(ft.values['layers.0.wq'].some((v, i) => wq[i] && v !== pg.initial['layers.0.wq'][i])).toBe(true);
  });
});

describe('structured pruning', () => {
  const gqa: LlamaConfig = { dim: 16, hiddenDim: 12, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 12, seqLen: 16, sharedClassifier: false };

  it('the shrunk model computes what the original computes with the removed FFN channels and GQA groups zeroed', () => {
    const weights = randomLlamaWeights(gqa, 8);
    const g = buildLlama(gqa, weights);
    for (const method of ['magnitude', 'wanda'] as const) {
      const r = pruneStructured(g, tinyWindows, { method, ffnChannels: 5, heads: 2 });
      expect(r.config).toMatchObject({ hiddenDim: 7, nHeads: 2, nKvHeads: 1, headDim: 4, dim: 16 });
      expect(r.report.layers.every((l) => l.removedChannels.length === 5 && l.removedKvHeads.length === 1)).toBe(true);
      // the reference: the original weights with the down projection's removed columns and the output projection's
      // columns of the removed query heads set to zero (a removed KV head then feeds nothing)
      const hs = 4;
      const zeroed = {
        ...weights,
        layers: weights.layers.map((L, l) => {
          const { removedChannels, removedKvHeads } = r.report.layers[l];
          const w2 = Float32Array.from(L.w2 as Float32Array);
          const wo = Float32Array.from(L.wo as Float32Array);
          for (let row = 0; row < gqa.dim; row++) {
            for (const c of removedChannels) w2[row * gqa.hiddenDim + c] = 0;
            for (const kv of removedKvHeads) for (let j = kv * 2 * hs; j < (kv + 1) * 2 * hs; j++) wo[row * gqa.dim + j] = 0;
          }
          return { ...L, w2, wo };
        }),
      };
      const ref = buildLlama(gqa, zeroed);
      for (const w of tinyWindows) {
        const want = runGraph(ref, windowInputs(ref, w)).logits.toArray();
        const got = runGraph(r.graph, windowInputs(r.graph, w)).logits.toArray();
        got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 4));
      }
      // the matmuls did shrink
      const shapes = new Map(r.graph.weights.all().map((e) => [e.name, e.shape]));
      expect(shapes.get('layers.0.w1')).toEqual([7, 16]);
      expect(shapes.get('layers.0.w2')).toEqual([16, 7]);
      expect(shapes.get('layers.0.wq')).toEqual([8, 16]);
      expect(shapes.get('layers.0.wk')).toEqual([4, 16]);
      expect(shapes.get('layers.0.wo')).toEqual([16, 8]);
    }
  });

  it('head counts that split a GQA group, or remove everything, are typed errors', () => {
    const g = buildLlama(gqa, randomLlamaWeights(gqa, 8));
    expect(expectThrown(() => pruneStructured(g, tinyWindows, { method: 'magnitude', heads: 1 }), InputError).message).toMatch(/whole GQA groups of 2 query heads.*multiple of 2/);
    expect(expectThrown(() => pruneStructured(g, tinyWindows, { method: 'magnitude', heads: 4 }), InputError).message).toMatch(/--heads 4: must remove 0\.\.3 of the 4 query heads/);
    expect(expectThrown(() => pruneStructured(g, tinyWindows, { method: 'magnitude', ffnChannels: 12 }), InputError).message).toMatch(/--ffn-channels 12: must remove 0\.\.11/);
  });
});

describe('SparseGPT', () => {
  it('keeps the pattern exactly and has a lower output error on the calibration inputs than Wanda and magnitude masks', () => {
    const [rows, cols, n] = [16, 32, 200];
    const r = new Rng(21);
    // correlated inputs with uneven channel scales, as activations are
    const base = r.normals(n * 4);
    const mix = r.normals(4 * cols);
    const scale = Float32Array.from({ length: cols }, (_v, j) => 0.2 + 3 * ((j * 7) % 5));
    const x = new Float64Array(n * cols);
    for (let t = 0; t < n; t++) for (let j = 0; j < cols; j++) x[t * cols + j] = scale[j] * (0.3 * r.normal() + mix.reduce((a, _m, k) => (k < 4 ? a + base[t * 4 + k] * mix[k * cols + j] : a), 0));
    const h = new Float64Array(cols * cols);
    for (let t = 0; t < n; t++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] += x[t * cols + i] * x[t * cols + j];
    const w = r.normals(rows * cols);
    const norms = Float64Array.from({ length: cols }, (_v, j) => Math.sqrt(h[j * cols + j]));
    for (const pattern of [{ kind: 'nm', n: 2, m: 4 }, { kind: 'unstructured' }] as const) {
      const sg = sparseGptPrune('w', w, rows, cols, h, pattern, 0.5);
      if (pattern.kind === 'nm') for (let g = 0; g < w.length; g += 4) expect(count(sg.mask, g, g + 4)).toBe(2);
      else expect(count(sg.mask)).toBe(rows * cols * 0.5);
      sg.values.forEach((v, k) => (sg.mask[k] ? undefined : expect(v).toBe(0)));
      const masked = (scores: ArrayLike<number>): Float32Array => {
        const [m] = selectMasks([{ name: 'w', rows, cols, scores }], pattern, 0.5, 'layer');
        return Float32Array.from(w, (v, k) => (m[k] ? v : 0));
      };
      const err = (v: ArrayLike<number>): number => relativeOutputError(w, v, rows, cols, h);
      const [eSg, eWanda, eMag] = [err(sg.values), err(masked(wandaSaliency(w, rows, cols, norms))), err(masked(Float64Array.from(w, Math.abs)))];
      expect(eSg, pattern.kind).toBeLessThan(eWanda);
      expect(eWanda, pattern.kind).toBeLessThan(eMag);
    }
    // nothing to prune: the weights come back as they were
    const none = sparseGptPrune('w', w, rows, cols, h, { kind: 'unstructured' }, 0);
    expect(Array.from(none.values)).toEqual(Array.from(w));
    expect(() => sparseGptPrune('w', w, rows, cols, h, { kind: 'block', block: 4 }, 0.5)).toThrow(/sparsegpt prunes unstructured or N:M patterns, not block4/);
  });
});
