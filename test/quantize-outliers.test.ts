// Outlier channels kept in f32 beside a quantized weight (`quantize --outliers T`, LLM.int8-style mixed
// decomposition): the channel choice, the decomposed matmul on the CPU reference against a direct computation and on
// WebGPU against the CPU reference, the GGUF round trip (both readers read the file; our importer rebuilds the
// decomposition, and `eval` on the file reproduces the figures quantize reported), typed errors for inconsistent
// outlier tensors, and the README's claim: on a fixed calibration window, `--outliers 2` lowers the KL to f32 of RTN
// int3, RTN int4 and GPTQ int3.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gguf as hfGguf } from '@huggingface/gguf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGraph } from '../src/compile.js';
import { selectOutlierChannels } from '../src/compress/outliers.js';
import { ModelFormatError } from '../src/errors.js';
import { ggufFileBytes, type GgufTensorToWrite } from '../src/export/gguf/writer.js';
import { llamaGguf } from '../src/export/gguf/llama.js';
import { loadGgufModelFromBytes, type GgufLlamaModel } from '../src/frontends/gguf/model.js';
import { loadModel } from '../src/frontends/load.js';
import { GraphBuilder, weightNode } from '../src/ir/builder.js';
import { outlierLinear } from '../src/ir/outlier-linear.js';
import { decodeWeight, quantizeWeight, WeightStore } from '../src/ir/weights.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { runCli } from './support/cli.js';
import { expectThrown } from './support/expect-thrown.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('quantize --outliers on stories260K');

const LONG = 300_000;
const dir = mkdtempSync(join(tmpdir(), 'tw-outliers-'));
const model = sharedPath('models/stories260K/stories260K.bin');
const tokenizer = sharedPath('models/stories260K/tok512.bin');
const calib = sharedPath('data/stories260K-calib.txt');
const evalText = sharedPath('data/stories260K-eval-public.txt');
// a fixed calibration window (the first 511 tokens of the calibration text) and the first 511 tokens of the eval text
const WINDOW = ['--calib-tokens', '511', '--eval', evalText, '--eval-tokens', '511'];

interface Quantized {
  eval: { kl_mean: number; ppl: number; top1_agreement: number };
  layers: { name: string; method: string; outlierChannels?: number }[];
}

async function quantize(args: string[]): Promise<Quantized> {
  const r = await runCli(['quantize', '--model', model, '--tokenizer', tokenizer, '--calib', calib, '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim());
}

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

describe('outlier channel choice', () => {
  const stats = (rms: number[], rows = 4) => {
    const k = rms.length;
    const hessian = new Float64Array(k * k);
    rms.forEach((r, i) => (hessian[i * k + i] = r * r * rows));
    return { channels: k, rows, hessian, absSum: new Float64Array(k) };
  };

  it('takes channels whose activation RMS exceeds T × the median, largest first up to the cap, in increasing order', () => {
    const s = stats([1, 1, 9, 1, 2.5, 1, 1, 30, 1, 4]); // median 1
    expect(selectOutlierChannels(s, 2, 10)).toEqual([2, 4, 7, 9]);
    expect(selectOutlierChannels(s, 3, 10)).toEqual([2, 7, 9]);
    expect(selectOutlierChannels(s, 3, 2)).toEqual([2, 7]); // the two largest
    expect(selectOutlierChannels(s, 50, 10)).toEqual([]);
  });
});

describe('the decomposed matmul x·Wᵀ + x[…, I]·W_outᵀ', () => {
  const [N, K] = [48, 64];
  const indices = [3, 17, 40, 63];
  const wq = quantizeWeight('w', [N, K], new Rng(5).normals(N * K, 0.5), { bits: 4, groupSize: 32, hasZeroPoint: true });
  const side = new Rng(6).normals(N * indices.length, 0.5);
  const graph = () => {
    const b = new GraphBuilder(new WeightStore());
    const x = b.input('x', 'f32', [1, 7, K]);
    const w = b.weight(wq);
    const s = b.weight('w.outlier_weight', [N, indices.length], side);
    return b.build({ y: outlierLinear(x, w, s, indices) });
  };
  const x = Tensor.from('f32', [1, 7, K], new Rng(7).normals(7 * K, 1));

  it('on the CPU reference equals the direct sum over the dequantized weight and the outlier columns', () => {
    const y = runGraph(graph(), { x }).y.data as Float32Array;
    const w = decodeWeight(wq);
    const xs = x.data as Float32Array;
    for (let m = 0; m < 7; m++)
      for (let n = 0; n < N; n++) {
        let want = 0;
        for (let k = 0; k < K; k++) want += xs[m * K + k] * w[n * K + k];
        indices.forEach((c, j) => (want += xs[m * K + c] * side[n * indices.length + j]));
        expect(Math.abs(y[m * N + n] - want)).toBeLessThan(1e-4 * (1 + Math.abs(want)));
      }
  });

  it('on WebGPU matches the CPU reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = graph();
    const engine = await compileGraph(g, {}, { device: gpu.info });
    const session = await engine.createSession({ device: gpu });
    try {
      const want = runGraph(g, { x }).y.data as Float32Array;
      const got = (await session.run({ x })).y.data as Float32Array;
      expect(got.length).toBe(want.length);
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i]), `element ${i}`).toBeLessThan(1e-4 + 1e-4 * Math.abs(want[i]));
    } finally {
      await session.destroy();
    }
  }, LONG);

  it('builds the same nodes in the Llama builder as in the compressor (one form)', () => {
    const b = new GraphBuilder(new WeightStore());
    const xn = b.input('x', 'f32', [1, 7, K]);
    const w = weightNode(wq);
    const s = weightNode(WeightStore.entry('s', 'f32', [N, indices.length], { values: side }));
    expect(outlierLinear(xn, w, s, indices)).toBe(outlierLinear(xn, w, s, [...indices]));
  });
});

describe.skipIf(!hasShared)('quantize --outliers on stories260K', () => {
  it('writes a GGUF file that both readers read, that our importer rebuilds, and that eval scores as quantize did', async () => {
    const out = join(dir, 'rtn3-outliers.gguf');
    const q = await quantize(['--method', 'rtn', '--bits', '3', '--outliers', '2', '-o', out, ...WINDOW]);
    const decomposed = q.layers.filter((l) => (l.outlierChannels ?? 0) > 0);
    expect(decomposed.length).toBeGreaterThan(0);
    // at most ⌈2% of K⌉ channels per matrix (K = 64 here)
    for (const l of decomposed) expect(l.outlierChannels).toBeLessThanOrEqual(2);

    const theirs = await hfGguf(out, { allowLocalFile: true });
    const idx = theirs.tensorInfos.filter((t) => t.name.endsWith('.outlier_idx'));
    const side = theirs.tensorInfos.filter((t) => t.name.endsWith('.outlier_weight'));
    expect(idx).toHaveLength(decomposed.length);
    expect(side).toHaveLength(decomposed.length);
    for (const t of idx) expect(t.dtype).toBe(26); // GGML_TYPE_I32
    for (const t of side) expect(t.dtype).toBe(0); // F32
    expect(theirs.tensorInfos.find((t) => t.name === 'blk.0.attn_q.weight')!.dtype).toBe(3); // the main weight: Q4_1 as without outliers

    const m = (await loadModel(out)) as GgufLlamaModel;
    expect(Object.keys(m.weights.outliers ?? {}).sort()).toEqual(decomposed.map((l) => l.name).sort());
    const r = await runCli(['eval', '--model', out, '--tokenizer', tokenizer, '--reference', model, '--text', evalText, '--max-tokens', '511', '--backend', 'cpu', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const e = JSON.parse(r.stdout.trim());
    expect(e.kl_mean).toBe(q.eval.kl_mean);
    expect(e.ppl).toBe(q.eval.ppl);
  }, LONG);

  it('the file runs on WebGPU with the CPU reference\'s numbers', async (ctx) => {
    if (!gpu) return ctx.skip();
    const out = join(dir, 'gpu-outliers.gguf');
    const q = await quantize(['--method', 'rtn', '--bits', '3', '--outliers', '2', '-o', out, '--calib-tokens', '64']);
    expect(q.layers.some((l) => (l.outlierChannels ?? 0) > 0)).toBe(true);
    const score = async (backend: string): Promise<{ kl_mean: number; ppl: number }> => {
      const r = await runCli(['eval', '--model', out, '--tokenizer', tokenizer, '--reference', model, '--text', evalText, '--max-tokens', '60', '--backend', backend, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout.trim());
    };
    const [cpu, webgpu] = [await score('cpu'), await score('webgpu')];
    expect(cpu.kl_mean).toBeGreaterThan(0.05);
    expect(Math.abs(webgpu.kl_mean - cpu.kl_mean)).toBeLessThan(1e-3);
    expect(Math.abs(webgpu.ppl - cpu.ppl) / cpu.ppl).toBeLessThan(1e-3);
  }, LONG);

  it('--outliers 2 lowers the KL to f32 of RTN int3, RTN int4 and GPTQ int3 (fixed calibration window; the README\'s claim)', async () => {
    const kl = async (...args: string[]): Promise<number> => (await quantize([...args, '-o', join(dir, `kl-${args.join('')}.gguf`), ...WINDOW])).eval.kl_mean;
    for (const base of [['--method', 'rtn', '--bits', '3'], ['--method', 'rtn', '--bits', '4'], ['--method', 'gptq', '--bits', '3', '--act-order']]) {
      const [without, withOutliers] = [await kl(...base), await kl(...base, '--outliers', '2')];
      expect(withOutliers, base.join(' ')).toBeLessThan(without);
    }
  }, LONG);

  it('rejects inconsistent outlier tensors with a typed error naming the tensor and field', async () => {
    const out = join(dir, 'rtn4-outliers.gguf');
    const q = await quantize(['--method', 'rtn', '--bits', '4', '--outliers', '2', '-o', out, '--calib-tokens', '64']);
    expect(q.layers.some((l) => (l.outlierChannels ?? 0) > 0)).toBe(true);
    const m = (await loadModel(out)) as GgufLlamaModel;
    const { metadata, tensors } = llamaGguf(m.build(), { contextLength: m.declaredContext });
    // our writer re-writes what our importer read: the same tensors, byte for byte
    const back = loadGgufModelFromBytes(ggufFileBytes(metadata, tensors));
    expect(Object.keys(back.weights.outliers!)).toEqual(Object.keys(m.weights.outliers!));
    const idxName = tensors.find((t) => t.name.endsWith('.outlier_idx'))!.name;
    const base = idxName.slice(0, -'.outlier_idx'.length);
    const sideName = `${base}.outlier_weight`;
    const n = tensors.find((t) => t.name === idxName)!.shape[0];
    const cols = tensors.find((t) => t.name === base)!.shape[1];
    const edit = (f: (t: GgufTensorToWrite) => GgufTensorToWrite | undefined): Uint8Array =>
      ggufFileBytes(metadata, tensors.map(f).filter((t): t is GgufTensorToWrite => t !== undefined));
    const i32 = (values: number[]): Uint8Array => new Uint8Array(Int32Array.from(values).buffer);
    const cases: [string, Uint8Array, string, RegExp][] = [
      ['missing weight', edit((t) => (t.name === sideName ? undefined : t)), `tensor '${sideName}' presence`, /missing/],
      ['index type', edit((t) => (t.name === idxName ? { ...t, type: 0 } : t)), `tensor '${idxName}' type`, /expected I32/],
      ['index out of range', edit((t) => (t.name === idxName ? { ...t, data: i32([cols, ...Array(n - 1).fill(cols)]) } : t)), `tensor '${idxName}' value 0`, /outside/],
      ['weight shape', edit((t) => (t.name === sideName ? { ...t, shape: [t.shape[0] - 1, t.shape[1]], data: t.data.subarray(0, (t.shape[0] - 1) * t.shape[1] * 4) } : t)), `tensor '${sideName}' shape`, /does not match/],
      ['orphan', edit((t) => (t.name === idxName ? { ...t, name: 'output_norm.weight.outlier_idx' } : t.name === sideName ? { ...t, name: 'output_norm.weight.outlier_weight' } : t)), "tensor 'output_norm.weight.outlier_idx' name", /no linear layer/],
    ];
    if (n > 1) cases.push(['unordered', edit((t) => (t.name === idxName ? { ...t, data: i32(Array(n).fill(0)) } : t)), `tensor '${idxName}' value 1`, /strictly increasing/]);
    for (const [what, bytes, field, message] of cases) {
      const err = expectThrown(() => loadGgufModelFromBytes(bytes), ModelFormatError, what);
      expect(err.field, what).toBe(field);
      expect(err.message, what).toMatch(message);
    }
  }, LONG);

  it('rejects --outliers with AWQ and thresholds that are not positive', async () => {
    const awq = await runCli(['quantize', '--model', model, '--tokenizer', tokenizer, '--calib', calib, '--method', 'awq', '--bits', '4', '--outliers', '2', '-o', join(dir, 'x.gguf')]);
    expect(awq.code).toBe(2);
    expect(awq.stderr).toMatch(/--outliers .*awq/);
    const zero = await runCli(['quantize', '--model', model, '--tokenizer', tokenizer, '--calib', calib, '--method', 'rtn', '--bits', '4', '--outliers', '0', '-o', join(dir, 'x.gguf')]);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/--outliers/);
  });
});
