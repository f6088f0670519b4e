/**
 * Model definitions checked against independent, straightforward float64 reference forward passes written here (plain
 * loops over arrays, no IR and no interpreter), so a mistake in a model builder or in an op cannot hide behind
 * itself.
 */
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors.js';
import { buildBert, randomBertWeights, type BertConfig, type BertWeights } from '../src/models/bert.js';
import { buildGpt2, randomGpt2Weights, type Gpt2Config, type Gpt2Weights } from '../src/models/gpt2.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig, type LlamaWeights, type WeightSource } from '../src/models/llama.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';

const TOL = 1e-4;

// ---------------------------------------------------------------------------------------------------------------
// float64 reference maths

type Rows = Float64Array[];

function arr(src: WeightSource | undefined): Float64Array {
  if (!(src instanceof Float32Array)) throw new Error('reference forward needs dense Float32Array weights');
  return Float64Array.from(src);
}

/** `x · Wᵀ + b` for W stored `[out, in]`, row by row. */
function linear(x: Rows, w: WeightSource, bias?: WeightSource): Rows {
  const W = arr(w);
  const B = bias ? arr(bias) : undefined;
  const inDim = x[0].length;
  const outDim = W.length / inDim;
  return x.map((row) => {
    const o = new Float64Array(outDim);
    for (let r = 0; r < outDim; r++) {
      let s = B ? B[r] : 0;
      for (let i = 0; i < inDim; i++) s += W[r * inDim + i] * row[i];
      o[r] = s;
    }
    return o;
  });
}

function layerNorm(x: Rows, g: WeightSource, b: WeightSource, eps: number): Rows {
  const G = arr(g);
  const Bb = arr(b);
  return x.map((row) => {
    const n = row.length;
    let mean = 0;
    for (const v of row) mean += v;
    mean /= n;
    let variance = 0;
    for (const v of row) variance += (v - mean) ** 2;
    variance /= n;
    const inv = 1 / Math.sqrt(variance + eps);
    return row.map((v, i) => (v - mean) * inv * G[i] + Bb[i]);
  });
}

function rmsNorm(x: Rows, g: WeightSource, eps: number): Rows {
  const G = arr(g);
  return x.map((row) => {
    let ss = 0;
    for (const v of row) ss += v * v;
    const inv = 1 / Math.sqrt(ss / row.length + eps);
    return row.map((v, i) => v * inv * G[i]);
  });
}

function addRows(a: Rows, b: Rows): Rows {
  return a.map((row, t) => row.map((v, i) => v + b[t][i]));
}

function mapRows(x: Rows, f: (v: number) => number): Rows {
  return x.map((row) => row.map(f));
}

/** erf by its Maclaurin series (|x| < 3) and the asymptotic continued fraction beyond: ~1e-14 accurate. */
function erfRef(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      sum += term / (2 * n + 1);
      if (Math.abs(term) < 1e-18) break;
    }
    return (Math.sign(x) * 2 * sum) / Math.sqrt(Math.PI);
  }
  // erfc(x) ≈ exp(-x²)/(x√π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶)) is plenty at |x| >= 3
  const x2 = ax * ax;
  const erfc = (Math.exp(-x2) / (ax * Math.sqrt(Math.PI))) * (1 - 1 / (2 * x2) + 3 / (4 * x2 * x2) - 15 / (8 * x2 * x2 * x2));
  return Math.sign(x) * (1 - erfc);
}

const geluExact = (v: number): number => 0.5 * v * (1 + erfRef(v / Math.SQRT2));
const geluTanh = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
const silu = (v: number): number => v / (1 + Math.exp(-v));

/**
 * Multi-head attention on rows: q `[S][Hq*D]`, k/v `[T][Hkv*D]`; query `i` (at absolute position `offset + i`) sees
 * key `j` when `visible(i, j)`.
 */
function attend(q: Rows, k: Rows, v: Rows, hq: number, hkv: number, hd: number, visible: (i: number, j: number) => boolean): Rows {
  const group = hq / hkv;
  const scale = 1 / Math.sqrt(hd);
  return q.map((qi, i) => {
    const o = new Float64Array(hq * hd);
    for (let h = 0; h < hq; h++) {
      const kh = Math.floor(h / group);
      const scores: number[] = [];
      const idx: number[] = [];
      for (let j = 0; j < k.length; j++) {
        if (!visible(i, j)) continue;
        let dot = 0;
        for (let e = 0; e < hd; e++) dot += qi[h * hd + e] * k[j][kh * hd + e];
        scores.push(dot * scale);
        idx.push(j);
      }
      const mx = Math.max(...scores);
      const ex = scores.map((s) => Math.exp(s - mx));
      const sum = ex.reduce((a, b) => a + b, 0);
      ex.forEach((p, n) => {
        for (let e = 0; e < hd; e++) o[h * hd + e] += (p / sum) * v[idx[n]][kh * hd + e];
      });
    }
    return o;
  });
}

function embedRows(table: WeightSource, ids: readonly number[], d: number): Rows {
  const T = arr(table);
  return ids.map((id) => T.slice(id * d, (id + 1) * d));
}

function maxAbsDiff(actual: ArrayLike<number>, expected: Rows): number {
  const flat = expected.flatMap((r) => Array.from(r));
  expect(actual.length).toBe(flat.length);
  let m = 0;
  for (let i = 0; i < flat.length; i++) m = Math.max(m, Math.abs(actual[i] - flat[i]));
  return m;
}

function rowsOf(t: Tensor, width: number): Rows {
  const out: Rows = [];
  for (let i = 0; i < t.data.length / width; i++) out.push(Float64Array.from(t.data.subarray(i * width, (i + 1) * width) as Float32Array));
  return out;
}

function randomTokens(n: number, vocab: number, seed: number): number[] {
  const r = new Rng(seed);
  return Array.from({ length: n }, () => r.int(vocab));
}

const i32 = (shape: number[], values: readonly number[]): Tensor => Tensor.from('i32', shape, values);
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_x, i) => a + i);
const emptyCache = (heads: number, hd: number): Tensor => Tensor.zeros('f32', [1, 0, heads, hd]);

// ---------------------------------------------------------------------------------------------------------------
// GPT-2

function gpt2Reference(c: Gpt2Config, W: Gpt2Weights, tokens: readonly number[]): Rows {
  const d = c.nEmbd;
  const hd = d / c.nHead;
  const eps = c.layerNormEpsilon ?? 1e-5;
  const act = (c.activation ?? 'gelu_new') === 'gelu_new' ? geluTanh : geluExact;
  let x = addRows(embedRows(W.wte, tokens, d), embedRows(W.wpe, range(0, tokens.length), d));
  for (const L of W.layers) {
    const h = layerNorm(x, L.ln1Weight, L.ln1Bias, eps);
    const qkv = linear(h, L.attnW, L.attnB);
    const q = qkv.map((r) => r.slice(0, d));
    const k = qkv.map((r) => r.slice(d, 2 * d));
    const v = qkv.map((r) => r.slice(2 * d, 3 * d));
    const a = attend(q, k, v, c.nHead, c.nHead, hd, (i, j) => j <= i);
    x = addRows(x, linear(a, L.attnProjW, L.attnProjB));
    const h2 = layerNorm(x, L.ln2Weight, L.ln2Bias, eps);
    x = addRows(x, linear(mapRows(linear(h2, L.fcW, L.fcB), act), L.mlpProjW, L.mlpProjB));
  }
  x = layerNorm(x, W.lnFWeight, W.lnFBias, eps);
  return linear(x, W.wte);
}

function gpt2Inputs(c: Gpt2Config, tokens: readonly number[], start: number, pasts?: Record<string, Tensor>): Record<string, Tensor> {
  const hd = c.nEmbd / c.nHead;
  const inputs: Record<string, Tensor> = { tokens: i32([1, tokens.length], tokens), positions: i32([tokens.length], range(start, start + tokens.length)) };
  for (let l = 0; l < c.nLayer; l++) {
    inputs[`past_k.${l}`] = pasts?.[`present_k.${l}`] ?? emptyCache(c.nHead, hd);
    inputs[`past_v.${l}`] = pasts?.[`present_v.${l}`] ?? emptyCache(c.nHead, hd);
  }
  return inputs;
}

describe('GPT-2', () => {
  const base: Gpt2Config = { vocabSize: 50, nPositions: 16, nEmbd: 32, nLayer: 2, nHead: 4 };
  const tokens = randomTokens(7, base.vocabSize, 11);

  for (const activation of ['gelu_new', 'gelu'] as const) {
    it(`full-sequence logits match a float64 reference (${activation})`, () => {
      const c: Gpt2Config = { ...base, activation };
      const W = randomGpt2Weights(c, 3);
      const g = buildGpt2(c, W);
      const out = runGraph(g, gpt2Inputs(c, tokens, 0));
      expect(out.logits.shape).toEqual([1, 7, c.vocabSize]);
      const ref = gpt2Reference(c, W, tokens);
      expect(maxAbsDiff(out.logits.numbers, ref)).toBeLessThan(TOL);
      // the check has teeth: logits vary across positions and vocabulary
      expect(Math.max(...ref.flatMap((r) => Array.from(r)).map(Math.abs))).toBeGreaterThan(0.5);
      expect(out['present_k.1'].shape).toEqual([1, 7, 4, 8]);
    });
  }

  it('gelu and gelu_new give different logits (the option is wired through)', () => {
    const W = randomGpt2Weights(base, 3);
    const a = runGraph(buildGpt2({ ...base, activation: 'gelu' }, W), gpt2Inputs(base, tokens, 0)).logits.numbers;
    const b = runGraph(buildGpt2({ ...base, activation: 'gelu_new' }, W), gpt2Inputs(base, tokens, 0)).logits.numbers;
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
    expect(m).toBeGreaterThan(1e-4);
  });

  it('prefill 4 tokens then decode 3 one at a time matches the full forward', () => {
    const W = randomGpt2Weights(base, 5);
    const g = buildGpt2(base, W);
    const full = runGraph(g, gpt2Inputs(base, tokens, 0)).logits;
    const fullRows = rowsOf(full, base.vocabSize);
    let out = runGraph(g, gpt2Inputs(base, tokens.slice(0, 4), 0));
    expect(maxAbsDiff(out.logits.numbers, fullRows.slice(0, 4))).toBeLessThan(TOL);
    for (let t = 4; t < 7; t++) {
      out = runGraph(g, gpt2Inputs(base, tokens.slice(t, t + 1), t, out));
      expect(out['present_k.0'].shape).toEqual([1, t + 1, base.nHead, base.nEmbd / base.nHead]);
      expect(maxAbsDiff(out.logits.numbers, fullRows.slice(t, t + 1))).toBeLessThan(TOL);
    }
    // and against the reference directly
    expect(maxAbsDiff(out.logits.numbers, gpt2Reference(base, W, tokens).slice(6))).toBeLessThan(TOL);
  });

  it('lastTokenLogitsOnly returns the last row; kvCache false drops the cache', () => {
    const c: Gpt2Config = { ...base, nInner: 48, layerNormEpsilon: 1e-6 };
    const W = randomGpt2Weights(c, 9);
    const ref = gpt2Reference(c, W, tokens);
    const last = runGraph(buildGpt2(c, W, { lastTokenLogitsOnly: true }), gpt2Inputs(c, tokens, 0));
    expect(last.logits.shape).toEqual([1, 1, c.vocabSize]);
    expect(maxAbsDiff(last.logits.numbers, ref.slice(6))).toBeLessThan(TOL);
    const g = buildGpt2(c, W, { kvCache: false });
    expect(g.inputs.map((i) => i.attrs.name)).toEqual(['tokens', 'positions']);
    expect(g.outputs.map((o) => o.name)).toEqual(['logits']);
    const out = runGraph(g, { tokens: i32([1, 7], tokens), positions: i32([7], range(0, 7)) });
    expect(maxAbsDiff(out.logits.numbers, ref)).toBeLessThan(TOL);
  });

  it('graph signature follows the llama convention', () => {
    const g = buildGpt2(base, randomGpt2Weights(base, 1));
    expect(g.inputs.map((i) => i.attrs.name)).toEqual(['tokens', 'positions', 'past_k.0', 'past_v.0', 'past_k.1', 'past_v.1']);
    expect(g.outputs.map((o) => o.name)).toEqual(['logits', 'present_k.0', 'present_v.0', 'present_k.1', 'present_v.1']);
    expect(g.meta.family).toBe('gpt2');
  });

  it('rejects bad configs and weights', () => {
    expect(() => buildGpt2({ ...base, nHead: 5 }, randomGpt2Weights(base, 1))).toThrow(InputError);
    const W = randomGpt2Weights(base, 1);
    expect(() => buildGpt2(base, { ...W, layers: W.layers.slice(1) })).toThrow(/layers/);
    expect(() => buildGpt2(base, { ...W, wpe: new Float32Array(3) })).toThrow(/wpe/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// BERT

function bertReference(c: BertConfig, W: BertWeights, tokens: readonly number[], types: readonly number[], mask: readonly number[]): { hidden: Rows; pooled?: Float64Array } {
  const d = c.hiddenSize;
  const hd = d / c.numAttentionHeads;
  const eps = c.layerNormEps ?? 1e-12;
  const act = (c.hiddenAct ?? 'gelu') === 'gelu' ? geluExact : geluTanh;
  let x = addRows(addRows(embedRows(W.wordEmbeddings, tokens, d), embedRows(W.tokenTypeEmbeddings, types, d)), embedRows(W.positionEmbeddings, range(0, tokens.length), d));
  x = layerNorm(x, W.embLnW, W.embLnB, eps);
  for (const L of W.layers) {
    const q = linear(x, L.queryW, L.queryB);
    const k = linear(x, L.keyW, L.keyB);
    const v = linear(x, L.valueW, L.valueB);
    const a = attend(q, k, v, c.numAttentionHeads, c.numAttentionHeads, hd, (_i, j) => mask[j] !== 0);
    x = layerNorm(addRows(linear(a, L.attnOutW, L.attnOutB), x), L.attnLnW, L.attnLnB, eps);
    const f = linear(mapRows(linear(x, L.interW, L.interB), act), L.outW, L.outB);
    x = layerNorm(addRows(f, x), L.outLnW, L.outLnB, eps);
  }
  const pooled = W.pooler ? linear([x[0]], W.pooler.weight, W.pooler.bias)[0].map(Math.tanh) : undefined;
  return { hidden: x, pooled };
}

function bertInputs(tokens: readonly number[], types: readonly number[], mask: readonly number[]): Record<string, Tensor> {
  const n = tokens.length;
  return { tokens: i32([1, n], tokens), token_type_ids: i32([1, n], types), attention_mask: i32([1, n], mask), positions: i32([n], range(0, n)) };
}

describe('BERT', () => {
  const base: BertConfig = { vocabSize: 50, hiddenSize: 32, numHiddenLayers: 2, numAttentionHeads: 4, intermediateSize: 64, maxPositionEmbeddings: 16 };
  const tokens = randomTokens(7, base.vocabSize, 21);
  const types = [0, 0, 0, 1, 1, 1, 1];

  for (const hiddenAct of ['gelu', 'gelu_new'] as const) {
    it(`hidden states and pooler match a float64 reference with a padding mask (${hiddenAct})`, () => {
      const c: BertConfig = { ...base, hiddenAct };
      const W = randomBertWeights(c, 4);
      const mask = [1, 1, 1, 1, 1, 0, 0];
      const out = runGraph(buildBert(c, W), bertInputs(tokens, types, mask));
      const ref = bertReference(c, W, tokens, types, mask);
      expect(out.last_hidden_state.shape).toEqual([1, 7, 32]);
      expect(maxAbsDiff(out.last_hidden_state.numbers, ref.hidden)).toBeLessThan(TOL);
      expect(out.pooler_output.shape).toEqual([1, 32]);
      expect(maxAbsDiff(out.pooler_output.numbers, [ref.pooled!])).toBeLessThan(TOL);
    });
  }

  it('padding: unmasked positions equal running the unpadded sequence', () => {
    const W = randomBertWeights(base, 6);
    const g = buildBert(base, W);
    // pad with arbitrary tokens and token types: the mask must make them invisible
    const padded = runGraph(g, bertInputs([...tokens.slice(0, 5), 7, 9], [...types.slice(0, 5), 0, 1], [1, 1, 1, 1, 1, 0, 0]));
    const unpadded = runGraph(g, bertInputs(tokens.slice(0, 5), types.slice(0, 5), [1, 1, 1, 1, 1]));
    const d = base.hiddenSize;
    expect(maxAbsDiff(padded.last_hidden_state.numbers.subarray(0, 5 * d), rowsOf(unpadded.last_hidden_state, d))).toBeLessThan(TOL);
    expect(maxAbsDiff(padded.pooler_output.numbers, rowsOf(unpadded.pooler_output, d))).toBeLessThan(TOL);
    // without the mask the padding changes the result
    const unmasked = runGraph(g, bertInputs([...tokens.slice(0, 5), 7, 9], [...types.slice(0, 5), 0, 1], [1, 1, 1, 1, 1, 1, 1]));
    expect(maxAbsDiff(unmasked.last_hidden_state.numbers.subarray(0, 5 * d), rowsOf(unpadded.last_hidden_state, d))).toBeGreaterThan(1e-3);
    // and the unpadded run matches the reference
    expect(maxAbsDiff(unpadded.last_hidden_state.numbers, bertReference(base, W, tokens.slice(0, 5), types.slice(0, 5), [1, 1, 1, 1, 1]).hidden)).toBeLessThan(TOL);
  });

  it('without pooler weights there is no pooler output; signature and errors', () => {
    const W = randomBertWeights(base, 2, { pooler: false });
    const g = buildBert(base, W);
    expect(g.inputs.map((i) => i.attrs.name)).toEqual(['tokens', 'token_type_ids', 'attention_mask', 'positions']);
    expect(g.outputs.map((o) => o.name)).toEqual(['last_hidden_state']);
    expect(g.meta.family).toBe('bert');
    expect(() => buildBert({ ...base, numAttentionHeads: 5 }, W)).toThrow(InputError);
    expect(() => buildBert(base, { ...W, embLnB: new Float32Array(31) })).toThrow(/LayerNorm\.bias/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Llama

function llamaReference(c: LlamaConfig, W: LlamaWeights, tokens: readonly number[]): Rows {
  const d = c.dim;
  const hd = d / c.nHeads;
  const eps = c.normEps ?? 1e-5;
  const theta = c.ropeTheta ?? 10000;
  const style = c.ropeStyle ?? 'interleaved';
  const rope = (x: Rows, heads: number): Rows =>
    x.map((row, pos) => {
      const o = Float64Array.from(row);
      for (let h = 0; h < heads; h++)
        for (let i = 0; i < hd / 2; i++) {
          const ang = pos / Math.pow(theta, (2 * i) / hd);
          const [a, b] = style === 'half' ? [h * hd + i, h * hd + i + hd / 2] : [h * hd + 2 * i, h * hd + 2 * i + 1];
          o[a] = row[a] * Math.cos(ang) - row[b] * Math.sin(ang);
          o[b] = row[a] * Math.sin(ang) + row[b] * Math.cos(ang);
        }
      return o;
    });
  let x = embedRows(W.tokenEmbedding, tokens, d);
  for (const L of W.layers) {
    const h = rmsNorm(x, L.rmsAtt, eps);
    const q = rope(linear(h, L.wq, L.bq), c.nHeads);
    const k = rope(linear(h, L.wk, L.bk), c.nKvHeads);
    const v = linear(h, L.wv, L.bv);
    x = addRows(x, linear(attend(q, k, v, c.nHeads, c.nKvHeads, hd, (i, j) => j <= i), L.wo));
    const h2 = rmsNorm(x, L.rmsFfn, eps);
    const gate = mapRows(linear(h2, L.w1), silu);
    const up = linear(h2, L.w3);
    x = addRows(x, linear(gate.map((r, t) => r.map((g, i) => g * up[t][i])), L.w2));
  }
  x = rmsNorm(x, W.rmsFinal, eps);
  return linear(x, c.sharedClassifier ? W.tokenEmbedding : W.wcls!);
}

/** Random weights with non-trivial norm scales (and q/k/v biases when the config asks for them). */
function llamaWeights(c: LlamaConfig, seed: number): LlamaWeights {
  const W = randomLlamaWeights(c, seed);
  const r = new Rng(seed + 1000);
  const scale = (n: number): Float32Array => r.normals(n, 0.1).map((v) => 1 + v);
  const kvDim = (c.dim / c.nHeads) * c.nKvHeads;
  return {
    ...W,
    rmsFinal: scale(c.dim),
    layers: W.layers.map((L) => ({
      ...L,
      rmsAtt: scale(c.dim),
      rmsFfn: scale(c.dim),
      ...(c.qkvBias ? { bq: r.normals(c.dim, 0.1), bk: r.normals(kvDim, 0.1), bv: r.normals(kvDim, 0.1) } : {}),
    })),
  };
}

function llamaInputs(c: LlamaConfig, tokens: readonly number[], start: number, pasts?: Record<string, Tensor>): Record<string, Tensor> {
  const hd = c.dim / c.nHeads;
  const inputs: Record<string, Tensor> = { tokens: i32([1, tokens.length], tokens), positions: i32([tokens.length], range(start, start + tokens.length)) };
  for (let l = 0; l < c.nLayers; l++) {
    inputs[`past_k.${l}`] = pasts?.[`present_k.${l}`] ?? emptyCache(c.nKvHeads, hd);
    inputs[`past_v.${l}`] = pasts?.[`present_v.${l}`] ?? emptyCache(c.nKvHeads, hd);
  }
  return inputs;
}

describe('Llama', () => {
  const base: LlamaConfig = { dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 50, seqLen: 16, sharedClassifier: false };
  const tokens = randomTokens(7, base.vocabSize, 31);
  const cases: { name: string; c: LlamaConfig }[] = [
    { name: 'GQA (4q/2kv), interleaved rope, separate classifier', c: base },
    { name: 'MQA (4q/1kv), half rope, separate classifier', c: { ...base, nKvHeads: 1, ropeStyle: 'half' } },
    { name: 'GQA (4q/2kv), half rope, tied classifier, q/k/v biases, theta 500000', c: { ...base, ropeStyle: 'half', sharedClassifier: true, qkvBias: true, ropeTheta: 500000 } },
    { name: 'MHA (4q/4kv), interleaved rope, eps 1e-6', c: { ...base, nKvHeads: 4, normEps: 1e-6 } },
    { name: 'MQA (4q/1kv), interleaved rope, tied classifier', c: { ...base, nKvHeads: 1, sharedClassifier: true } },
  ];

  for (const { name, c } of cases) {
    it(`${name}: logits match a float64 reference`, () => {
      const W = llamaWeights(c, 7);
      const out = runGraph(buildLlama(c, W), llamaInputs(c, tokens, 0));
      expect(out.logits.shape).toEqual([1, 7, c.vocabSize]);
      expect(out['present_k.0'].shape).toEqual([1, 7, c.nKvHeads, c.dim / c.nHeads]);
      const ref = llamaReference(c, W, tokens);
      expect(maxAbsDiff(out.logits.numbers, ref)).toBeLessThan(TOL);
      expect(Math.max(...ref.flatMap((r) => Array.from(r)).map(Math.abs))).toBeGreaterThan(0.5);
    });
  }

  it('rope style and classifier choice matter (the reference is discriminating)', () => {
    const W = llamaWeights(base, 7);
    const out = runGraph(buildLlama(base, W), llamaInputs(base, tokens, 0));
    expect(maxAbsDiff(out.logits.numbers, llamaReference({ ...base, ropeStyle: 'half' }, W, tokens))).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(out.logits.numbers, llamaReference({ ...base, sharedClassifier: true }, W, tokens))).toBeGreaterThan(1e-3);
  });

  it('GQA prefill 4 then decode 3 matches the reference', () => {
    const c: LlamaConfig = { ...base, ropeStyle: 'half' };
    const W = llamaWeights(c, 8);
    const g = buildLlama(c, W);
    const ref = llamaReference(c, W, tokens);
    let out = runGraph(g, llamaInputs(c, tokens.slice(0, 4), 0));
    expect(maxAbsDiff(out.logits.numbers, ref.slice(0, 4))).toBeLessThan(TOL);
    for (let t = 4; t < 7; t++) {
      out = runGraph(g, llamaInputs(c, tokens.slice(t, t + 1), t, out));
      expect(maxAbsDiff(out.logits.numbers, ref.slice(t, t + 1))).toBeLessThan(TOL);
    }
  });
});
