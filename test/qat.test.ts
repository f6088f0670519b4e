// Quantization-aware training (src/compress/qat.ts, `quantize --method qat`): the distillation loss is KL(teacher ‖
// model) plus the teacher's entropy, with the closed-form gradient (softmax − teacher) / positions; with no steps QAT is
// RTN exactly; one step moves each latent weight by Adam's first step along the straight-through gradient that
// `gradientGraph(..., { encodedWeights: 'ste' })` gives on the RTN graph; on stories260K a short 2-bit QAT run has lower
// KL to f32 than RTN 2-bit on eval tokens (RTN's figure from `quantize --method rtn`), and the GGUF it writes scores
// the same KL under `eval --reference`, so it decodes to the weights QAT evaluated.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { gradientGraph, gradientName } from '../src/autodiff/gradient.js';
import { windowInputs } from '../src/compress/capture.js';
import { compressGraph } from '../src/compress/compress-graph.js';
import { distillationLossGraph, qatGraph } from '../src/compress/qat.js';
import { ParameterGradients } from '../src/compress/parameter-gradients.js';
import { InputError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { attrsOf, isOp } from '../src/ir/attrs.js';
import type { Graph } from '../src/ir/graph.js';
import { decodeWeight } from '../src/ir/weights.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { expectThrown } from './support/expect-thrown.js';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('QAT on stories260K');

const softmax = (z: ArrayLike<number>, at: number, n: number): number[] => {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, z[at + i]);
  const e = Array.from({ length: n }, (_v, i) => Math.exp(z[at + i] - max));
  const s = e.reduce((a, x) => a + x, 0);
  return e.map((x) => x / s);
};

/** Decoded weights by name. */
function weightsOf(g: Graph): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const n of g.nodes()) if (isOp(n, 'weight')) out.set(attrsOf(n, 'weight').name, decodeWeight(g.weights.get(attrsOf(n, 'weight').id)));
  return out;
}

describe('distillation loss', () => {
  it('is KL(teacher ‖ softmax(logits)) plus the teacher entropy, with gradient (softmax − teacher) / positions', () => {
    const [T, V] = [3, 5];
    const rng = new Rng(11);
    const z = Float32Array.from(rng.uniforms(T * V, -2, 2));
    const b = new GraphBuilder();
    const w = b.weight('z', [1, T, V], z);
    const g = distillationLossGraph(b.build({ logits: b.add(w, b.constant(0)) }));
    const teacher = new Float32Array(T * V);
    for (let t = 0; t < T; t++) softmax(rng.uniforms(V, -1, 1), 0, V).forEach((p, v) => (teacher[t * V + v] = p));
    let [kl, entropy] = [0, 0];
    for (let t = 0; t < T; t++) {
      const q = softmax(z, t * V, V);
      for (let v = 0; v < V; v++) {
        const p = teacher[t * V + v];
        kl += (p * Math.log(p / q[v])) / T;
        entropy -= (p * Math.log(p)) / T;
      }
    }
    const pg = new ParameterGradients(g, { loss: 'loss', params: ['z'] });
    const r = pg.evaluate({ teacher: new Tensor('f32', [1, T, V], teacher) });
    expect(r.loss).toBeCloseTo(kl + entropy, 5);
    for (let t = 0; t < T; t++) {
      const q = softmax(z, t * V, V);
      for (let v = 0; v < V; v++) expect(r.grads.z[t * V + v]).toBeCloseTo((q[v] - teacher[t * V + v]) / T, 6);
    }
  });
});

describe('QAT on a small random Llama', () => {
  // K = 32 and 64: every matmul and the table take a group of 32
  const cfg: LlamaConfig = { dim: 32, hiddenDim: 64, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 16, seqLen: 16, sharedClassifier: true };
  const windows = [
    [1, 4, 7, 2, 9, 3, 12, 5],
    [1, 5, 5, 8, 2, 11, 6, 15],
  ];
  const spec = { bits: 2, groupSize: 32, symmetric: false } as const;
  const g = buildLlama(cfg, randomLlamaWeights(cfg, 9));

  it('with no steps is RTN exactly', () => {
    const q = qatGraph(g, windows, { spec, steps: 0 });
    const rtn = weightsOf(compressGraph(g, windows, { method: 'rtn', spec }).graph);
    const got = weightsOf(q.graph);
    expect([...got.keys()].sort()).toEqual([...rtn.keys()].sort());
    for (const [name, v] of rtn) expect(Array.from(got.get(name)!), name).toEqual(Array.from(v));
    expect(q.layers.filter((l) => l.method === 'qat').length).toBeGreaterThan(0);
  });

  it("one step is Adam's first step along the straight-through gradient of the RTN graph", () => {
    const lr = 1e-4;
    const q = qatGraph(g, windows.slice(0, 1), { spec, steps: 1, adam: { lr }, trainFloat: false });
    const onGrid = q.layers.filter((l) => l.method === 'qat').map((l) => l.name);
    expect(Object.keys(q.latent).sort()).toEqual([...onGrid].sort());
    // the gradient at the rounded weights, through the encoded weights' straight-through rule
    const rtn = compressGraph(g, windows, { method: 'rtn', spec }).graph;
    const inputs = windowInputs(g, windows[0].slice(0, -1));
    const logits = runGraph(g, inputs).logits;
    const V = cfg.vocabSize;
    const teacher = new Float32Array(logits.data.length);
    for (let at = 0; at < teacher.length; at += V) softmax(logits.data as Float32Array, at, V).forEach((p, v) => (teacher[at + v] = p));
    // by id: the RTN graph's store still holds the replaced f32 entries under the same names
    const idOf = new Map<string, string>();
    for (const n of rtn.nodes()) if (isOp(n, 'weight')) idOf.set(attrsOf(n, 'weight').name, attrsOf(n, 'weight').id);
    const wrt = onGrid.map((name) => idOf.get(name)!);
    const grads = runGraph(gradientGraph(distillationLossGraph(rtn), { wrt, loss: 'loss', encodedWeights: 'ste' }), { ...inputs, teacher: new Tensor('f32', logits.shape, teacher) });
    const f32 = weightsOf(g);
    let moved = 0;
    for (const name of onGrid) {
      const gr = grads[gradientName(idOf.get(name)!)].data as Float32Array;
      const w0 = f32.get(name)!;
      q.latent[name].forEach((w1, i) => {
        // Adam's first step: −lr · g / (|g| + eps)
        const want = w0[i] - (lr * gr[i]) / (Math.abs(gr[i]) + 1e-8);
        expect(Math.abs(w1 - want), `${name}[${i}]`).toBeLessThan(1e-6);
        if (gr[i] !== 0) moved++;
      });
    }
    expect(moved).toBeGreaterThan(100);
  });

  it('rejects a negative step count', () => {
    expect(expectThrown(() => qatGraph(g, windows, { spec, steps: -1 }), InputError).message).toMatch(/steps/);
  });
});

describe.skipIf(!hasShared)('quantize --method qat on stories260K', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tw-qat-'));
  const model = sharedPath('models/stories260K/stories260K.bin');
  const tokenizer = sharedPath('models/stories260K/tok512.bin');
  const calib = sharedPath('data/stories260K-calib.txt');
  const evalText = sharedPath('data/stories260K-eval-public.txt');
  // two training windows of 128 positions; the first 128 tokens of the eval text
  const common = ['--model', model, '--tokenizer', tokenizer, '--calib', calib, '--calib-tokens', '254', '--bits', '2', '--eval', evalText, '--eval-tokens', '128', '--json'];

  it('a short 2-bit QAT run has lower KL to f32 than RTN 2-bit, and its GGUF decodes to the weights it evaluated', async () => {
    const out = join(dir, 'qat2.gguf');
    const r = await runCli(['quantize', '--method', 'qat', '--steps', '6', '--lr', '3e-3', '-o', out, ...common]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/qat: step 6\/6, mean KL/);
    const q = JSON.parse(r.stdout.trim());
    expect(q.losses).toHaveLength(6);
    const rr = await runCli(['quantize', '--method', 'rtn', '-o', join(dir, 'rtn2.gguf'), ...common]);
    expect(rr.code, rr.stderr).toBe(0);
    const rtn = JSON.parse(rr.stdout.trim());
    expect(q.eval_rtn.kl_mean).toBe(rtn.eval.kl_mean);
    expect(q.eval.kl_mean, `QAT ${q.eval.kl_mean}, RTN ${rtn.eval.kl_mean}`).toBeLessThan(0.8 * rtn.eval.kl_mean);
    const e = await runCli(['eval', '--model', out, '--tokenizer', tokenizer, '--reference', model, '--text', evalText, '--max-tokens', '128', '--backend', 'cpu', '--json']);
    expect(e.code, e.stderr).toBe(0);
    const scored = JSON.parse(e.stdout.trim());
    expect(scored.kl_mean).toBe(q.eval.kl_mean);
    expect(scored.ppl).toBe(q.eval.ppl);
  }, 600_000);

  it('rejects impossible requests with usage errors', async () => {
    const order = await runCli(['quantize', '--model', model, '--calib', calib, '--method', 'qat', '--bits', '2', '--act-order', '-o', join(dir, 'x.gguf')]);
    expect(order.code).toBe(2);
    expect(order.stderr).toMatch(/GPTQ option/);
    const noOut = await runCli(['quantize', '--model', model, '--calib', calib, '--method', 'qat', '--bits', '2']);
    expect(noOut.code).toBe(2);
    expect(noOut.stderr).toMatch(/-o <file>/);
    const steps = await runCli(['quantize', '--model', model, '--calib', calib, '--method', 'qat', '--bits', '2', '--steps', '-3', '-o', join(dir, 'x.gguf')]);
    expect(steps.code).toBe(2);
  });
});
