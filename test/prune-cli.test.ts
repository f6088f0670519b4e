// Pruning stories260K (`tensorwright prune`, `pruneGraph`): Wanda has lower perplexity and KL to f32 than magnitude
// at 50% unstructured and at 2:4 (the README's claim, on a fixed window: the first 512 calibration tokens, scored on
// the first 255 evaluation tokens); fine-tuning with the masks fixed lowers the loss and the perplexity of a pruned
// model and keeps pruned weights at zero; the CLI writes a GGUF file our importer loads, whose N:M and block patterns a
// `--sparsity` compile keeps exactly; structured pruning (25% of FFN channels, one GQA group) writes a smaller model
// that generates on WebGPU what it generates on the CPU; bad flags are typed errors.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { acquireTestDevice } from './helpers/webgpu.js';
import { evalGraphs } from '../src/cli/eval.js';
import { tokenWindows } from '../src/compress/capture.js';
import { pruneGraph } from '../src/compress/prune-graph.js';
import { ggufLlamaTensorName } from '../src/export/gguf/llama.js';
import { loadModel } from '../src/frontends/load.js';
import { openModel } from '../src/cli/model-input.js';
import { attrsOf, isOp } from '../src/ir/attrs.js';
import type { Graph } from '../src/ir/graph.js';
import { parseSparsityScheme } from '../src/ir/sparsity-scheme.js';
import { decodeWeight } from '../src/ir/weights.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('prune on stories260K');
const gpu = await acquireTestDevice();
afterAll(() => gpu?.destroy());

const LONG = 300_000;
const dir = mkdtempSync(join(tmpdir(), 'tw-prune-'));
const modelPath = sharedPath('models/stories260K/stories260K.bin');
const tokenizerPath = sharedPath('models/stories260K/tok512.bin');
const calib = sharedPath('data/stories260K-calib.txt');
const evalText = sharedPath('data/stories260K-eval-public.txt');

/** The pruned (layer) weights of a graph, by llama.cpp tensor name. */
function layerWeights(g: Graph): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const n of g.nodes())
    if (isOp(n, 'weight')) {
      const e = g.weights.get(attrsOf(n, 'weight').id);
      const name = ggufLlamaTensorName(e.name.replace(/@.*$/, '')) ?? e.name;
      if (/^blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$/.test(name)) out.set(name, decodeWeight(e));
    }
  return out;
}

describe.skipIf(!hasShared)('pruning stories260K', () => {
  const setup = async (windowLength = 128, calibTokens = 512) => {
    const { model, tokenizer } = await openModel(modelPath, tokenizerPath);
    const tok = tokenizer!;
    const f32 = model.build({ lastTokenLogitsOnly: false });
    const windows = tokenWindows(tok.encode(readFileSync(calib, 'utf8')), model.bosId, windowLength, calibTokens);
    const ids = tok.encode(readFileSync(evalText, 'utf8'));
    if (ids[0] !== model.bosId) ids.unshift(model.bosId);
    return { model, f32, windows, ids };
  };

  it('Wanda has lower perplexity and KL to f32 than magnitude, at 50% unstructured and at 2:4', async () => {
    const { model, f32, windows, ids } = await setup();
    const score = async (method: 'magnitude' | 'wanda', pattern: 'unstructured' | '2:4') => {
      const r = pruneGraph(f32, windows, { method, pattern: pattern === '2:4' ? { kind: 'nm', n: 2, m: 4 } : { kind: 'unstructured' }, sparsity: 0.5 });
      expect(r.sparsity).toBe(0.5);
      return evalGraphs(model, ids, f32, r.graph, 255);
    };
    for (const pattern of ['unstructured', '2:4'] as const) {
      const [mag, wanda] = [await score('magnitude', pattern), await score('wanda', pattern)];
      expect(wanda.ppl, pattern).toBeLessThan(mag.ppl);
      expect(wanda.kl_mean, pattern).toBeLessThan(mag.kl_mean);
    }
  }, LONG);

  it('fine-tuning with the masks fixed lowers the loss and the perplexity of a pruned model; pruned weights stay zero', async () => {
    const { model, f32, windows, ids } = await setup(64, 252);
    expect(windows).toHaveLength(4);
    const opts = { method: 'wanda', pattern: { kind: 'nm', n: 2, m: 4 } } as const;
    const pruned = pruneGraph(f32, windows, opts);
    const tuned = pruneGraph(f32, windows, { ...opts, finetuneSteps: 12, adam: { lr: 1e-3 } });
    const losses = tuned.finetuneLosses!;
    expect(losses).toHaveLength(12);
    // the same 4 windows cycle: compare the first pass over them with the last
    const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(losses.slice(-4))).toBeLessThan(mean(losses.slice(0, 4)));
    const w = layerWeights(tuned.graph);
    expect(w.size).toBe(35);
    for (const [name, v] of w) for (let g = 0; g < v.length; g += 4) expect(v.subarray(g, g + 4).filter((x) => x !== 0).length, name).toBeLessThanOrEqual(2);
    const [before, after] = [await evalGraphs(model, ids, f32, pruned.graph, 255), await evalGraphs(model, ids, f32, tuned.graph, 255)];
    expect(after.ppl).toBeLessThan(before.ppl);
  }, LONG);

  it('prune writes a GGUF file that loads, and a --sparsity 2:4 compile of it keeps exactly the kept weights', async () => {
    const out = join(dir, 'wanda-2-4.gguf');
    const r = await runCli(['prune', '--model', modelPath, '--method', 'wanda', '--pattern', '2:4', '--calib', calib, '--calib-tokens', '256', '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/calibration: window 1\//);
    const j = JSON.parse(r.stdout.trim());
    expect(j.layers).toHaveLength(35);
    expect(j.layers.every((l: { sparsity: number }) => l.sparsity === 0.5)).toBe(true);
    expect(j.achieved_sparsity).toBe(0.5);
    const back = (await loadModel(out)).build({ lastTokenLogitsOnly: false });
    const dense = layerWeights(back);
    const orig = layerWeights((await loadModel(modelPath)).build({ lastTokenLogitsOnly: false }));
    for (const [name, v] of dense)
      for (let g = 0; g < v.length; g += 4) {
        expect(v.subarray(g, g + 4).filter((x) => x !== 0).length, name).toBe(2);
        for (let i = g; i < g + 4; i++) if (v[i] !== 0) expect(v[i]).toBe(orig.get(name)![i]); // kept weights are the original values
      }
    const sparse = layerWeights(runPasses(back, 'sparsify-weights', { options: { sparsity: parseSparsityScheme('2:4') } }).graph);
    expect(sparse.size).toBe(35);
    for (const [name, v] of sparse) expect(Array.from(v), name).toEqual(Array.from(dense.get(name)!));
  }, LONG);

  it('a block4 file compiles with --sparsity block4-0.5 to exactly its blocks; a gradient method fine-tunes through the CLI', async () => {
    const out = join(dir, 'fisher-block4.gguf');
    const r = await runCli(['prune', '--model', modelPath, '--method', 'fisher', '--pattern', 'block4', '--sparsity', '0.5', '--calib', calib, '--calib-tokens', '126', '--window', '64', '--finetune', '3', '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout.trim());
    expect(j.finetune_steps).toBe(3);
    expect(j.finetune_loss.first).toBeGreaterThan(0);
    expect(j.layers.every((l: { sparsity: number }) => l.sparsity === 0.5)).toBe(true);
    const back = (await loadModel(out)).build({ lastTokenLogitsOnly: false });
    const dense = layerWeights(back);
    const sparse = layerWeights(runPasses(back, 'sparsify-weights', { options: { sparsity: parseSparsityScheme('block4-0.5') } }).graph);
    for (const [name, v] of sparse) expect(Array.from(v), name).toEqual(Array.from(dense.get(name)!));
  }, LONG);

  it('bad flags are typed errors: sparsity outside [0, 1), M not dividing K, unknown method, missing calib, structured flags', async () => {
    const base = ['prune', '--model', modelPath, '--calib', calib, '-o', join(dir, 'x.gguf')];
    const cases: [string[], number, RegExp][] = [
      [['--method', 'magnitude', '--pattern', 'unstructured', '--sparsity', '1'], 2, /USAGE.*--sparsity must be in \[0, 1\), got 1/],
      [['--method', 'magnitude', '--pattern', 'unstructured', '--sparsity', '-0.5'], 2, /--sparsity must be in \[0, 1\)/],
      [['--method', 'magnitude', '--pattern', 'unstructured'], 2, /--pattern unstructured needs --sparsity/],
      [['--method', 'magnitude', '--pattern', '4:8'], 1, /BAD_INPUT.*'layers\.0\.w2' has rows of 172 \(K\), not a multiple of M = 8/],
      [['--method', 'obd', '--pattern', '2:4'], 2, /--method must be one of magnitude, wanda, snip, grasp, fisher, sparsegpt, got 'obd'/],
      [['--method', 'wanda', '--pattern', 'diagonal', '--sparsity', '0.5'], 2, /--pattern 'diagonal' is no pruning pattern/],
      [['--method', 'wanda', '--heads', '1'], 1, /BAD_INPUT.*--heads 1: heads go in whole GQA groups of 2 query heads/],
      [['--method', 'snip', '--ffn-channels', '32'], 2, /structured pruning .* --method magnitude or wanda, not snip/],
      [['--method', 'wanda'], 2, /--pattern is required/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runCli([...base, ...args, '--calib-tokens', '64']);
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
    const r = await runCli(['prune', '--model', modelPath, '--calib', join(dir, 'no-such.txt'), '--method', 'wanda', '--pattern', '2:4', '-o', join(dir, 'x.gguf')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/BAD_INPUT.*--calib .*no-such\.txt: no such file/);
  }, LONG);

  it.skipIf(!gpu)('structured: 25% of FFN channels and one GQA group per layer gives a smaller model that generates on WebGPU what it generates on the CPU', async () => {
    const out = join(dir, 'structured.gguf');
    const r = await runCli(['prune', '--model', modelPath, '--method', 'wanda', '--ffn-channels', '43', '--heads', '2', '--calib', calib, '--calib-tokens', '256', '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout.trim());
    expect(j.structured).toMatchObject({ hiddenDim: [172, 129], heads: [8, 6], kvHeads: [4, 3] });
    const back = await loadModel(out);
    expect(back.config).toMatchObject({ hiddenDim: 129, nHeads: 6, nKvHeads: 3, headDim: 8 });
    const [small, orig] = [back.build(), (await loadModel(modelPath)).build()];
    const params = (g: Graph): number => g.weights.all().reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1), 0);
    expect(params(small)).toBeLessThan(0.85 * params(orig));
    const generate = async (backend: string): Promise<number[]> => {
      const g = await runCli(['generate', '--model', out, '--tokenizer', tokenizerPath, '--prompt', 'Once upon a time', '--steps', '24', '--temperature', '0', '--backend', backend, '--json']);
      expect(g.code, g.stderr).toBe(0);
      return JSON.parse(g.stdout.trim()).generated_ids;
    };
    const cpu = await generate('cpu');
    expect(cpu.length).toBeGreaterThan(10);
    expect(await generate('webgpu')).toEqual(cpu);
  }, LONG);
});
