// Autotuning with a timing cache (issue #13 item 1): how a timing table picks among the schedule rules' candidates,
// the cache file's checks, and `compile --tune` on stories260K: a first run times the candidates on the device, a
// second is served from the cache, and the tuned engine still reproduces run.c's ids. No timing is asserted.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTarget } from '../src/codegen/target.js';
import { chooseMatmulVariant, matmulCandidates } from '../src/codegen/schedule/matmul.js';
import { chooseScheduledVariant, kernelSignature, variantKey } from '../src/codegen/schedule/tuning.js';
import { ModelFormatError } from '../src/errors.js';
import { loadModel } from '../src/frontends/load.js';
import { TimingCache, deviceTimingKey } from '../src/tune/timing-cache.js';
import { tuneModel } from '../src/tune/tune-model.js';
import { describeGPU, gpuHas } from './helpers/webgpu.js';
import { runCli } from './support/cli.js';
import { hasShared, sharedPath } from './support/shared.js';

const LONG = 600_000;

describe('chooseScheduledVariant', () => {
  const heuristic = { kind: 'a', n: 1 };
  const others = [{ kind: 'a', n: 2 }, { n: 1, kind: 'a' }, { kind: 'b' }];
  const sig = 'matmul:{"K":8}';

  it('without tuning takes the rule\'s pick and does not enumerate candidates', () => {
    let asked = 0;
    const r = chooseScheduledVariant(sig, heuristic, () => (asked++, others), undefined);
    expect(r.variant).toBe(heuristic);
    expect(r.schedule).toEqual({ source: 'heuristic', signature: sig, variant: variantKey(heuristic), candidate: 0 });
    expect(asked).toBe(0);
  });

  it('takes a table\'s pick when it is a candidate (keys compared canonically), and ignores a stale one', () => {
    const r = chooseScheduledVariant(sig, heuristic, () => others, { table: new Map([[sig, variantKey({ kind: 'b' })]]) });
    expect(r.variant).toEqual({ kind: 'b' });
    expect(r.schedule).toMatchObject({ source: 'tuned', candidate: 2, candidates: 3 }); // {n:1,kind:'a'} is the heuristic again
    const stale = chooseScheduledVariant(sig, heuristic, () => others, { table: new Map([[sig, '{"kind":"gone"}']]) });
    expect(stale.variant).toBe(heuristic);
    expect(stale.schedule.source).toBe('heuristic');
  });

  it('explores candidate r in round r, and keeps the rule\'s pick past the end of the list or for measured signatures', () => {
    expect(chooseScheduledVariant(sig, heuristic, () => others, { explore: 1 }).variant).toEqual({ kind: 'a', n: 2 });
    expect(chooseScheduledVariant(sig, heuristic, () => others, { explore: 5 }).schedule).toMatchObject({ source: 'heuristic', candidate: 0 });
    const measured = chooseScheduledVariant(sig, heuristic, () => others, { explore: 1, table: new Map([[sig, variantKey(heuristic)]]) });
    expect(measured.schedule).toMatchObject({ source: 'tuned', candidate: 0 });
  });

  it('signatures ignore node labels and write epilogue builders out as text', () => {
    const a = kernelSignature('matmul', { M: 1, N: 4, nodes: ['%1 = matmul'], epilogue: { expr: (acc: string) => `${acc} + 1.0` } });
    const b = kernelSignature('matmul', { M: 1, N: 4, nodes: ['%9 = matmul'], epilogue: { expr: (acc: string) => `${acc} + 1.0` } });
    const c = kernelSignature('matmul', { M: 1, N: 4, nodes: [], epilogue: { expr: (acc: string) => `${acc} * 2.0` } });
    expect(a).toBe(b);
    expect(a).not.toBe(c);
  });

  it('the matmul rules list candidates in the regime of their own pick, for both device classes', () => {
    for (const cls of ['lavapipe', 'discrete'] as const) {
      const target = createTarget(cls);
      for (const M of [1, 64]) {
        const spec = { M, N: 256, K: 128, transB: true, expectedM: M };
        const pick = chooseMatmulVariant(spec, target);
        const kinds = new Set(matmulCandidates(spec, target).map((v) => v.kind));
        expect(kinds.size).toBeGreaterThan(0);
        if (pick.kind === 'gemv') expect([...kinds]).toEqual(['gemv']);
        else expect(kinds.has('gemv')).toBe(false);
      }
    }
  });
});

describe('TimingCache', () => {
  const entry = { variant: '{"k":1}', ms: 1, heuristicMs: 2, candidates: [{ variant: '{"k":1}', ms: 1 }, { variant: '{"k":0}', ms: 2 }], measuredAt: '2026-12-05T00:00:00.000Z' };
  const file = { format: 'tensorwright-timing-cache', version: 1, devices: { d: { adapter: 'x', entries: { s: entry } } } };

  it('round-trips, and records the fastest candidate with the rule\'s time beside it', () => {
    const c = TimingCache.parse(JSON.stringify(file), 'c.json');
    expect(c.table('d')).toEqual(new Map([['s', '{"k":1}']]));
    const e = c.record('d', 'x', 't', [{ variant: 'h', ms: 3 }, { variant: 'f', ms: 1.5 }], 'h');
    expect(e).toMatchObject({ variant: 'f', ms: 1.5, heuristicMs: 3 });
    expect(TimingCache.parse(JSON.stringify(c.toJSON()), 'c.json').table('d').get('t')).toBe('f');
  });

  it('names the field that is wrong', () => {
    const bad = (mutate: (f: typeof file & Record<string, unknown>) => unknown, field: RegExp): void => {
      const f = JSON.parse(JSON.stringify(file));
      mutate(f);
      expect(() => TimingCache.parse(JSON.stringify(f), 'c.json')).toThrow(ModelFormatError);
      expect(() => TimingCache.parse(JSON.stringify(f), 'c.json')).toThrow(field);
    };
    bad((f) => (f.version = 2), /'version'/);
    bad((f) => (f.format = 'x'), /'format'/);
    bad((f) => ((f.devices.d.entries.s as { ms: unknown }).ms = -1), /entries\["s"\]\.ms/);
    bad((f) => ((f.devices.d.entries.s as { variant: unknown }).variant = '{"k":7}'), /must be one of its candidates/);
    bad((f) => ((f.devices.d.entries.s as { candidates: unknown }).candidates = []), /candidates/);
    expect(() => TimingCache.parse('{', 'c.json')).toThrow(/not JSON/);
  });
});

describeGPU('compile --tune on stories260K', (gpu) => {
  it('times the candidates once, then serves the same compile from the cache; the tuned engine keeps run.c\'s ids', async (ctx) => {
    if (!hasShared || !gpuHas(gpu(), 'timestamp-query')) return ctx.skip();
    const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    const cache = new TimingCache();
    const lines: string[] = [];
    const first = await tuneModel(model, { gpu: gpu(), cache, repeats: 1, prefillChunk: 8, onProgress: (l) => lines.push(l) });
    expect(first.rounds).toBeGreaterThan(1);
    const measured = first.signatures.filter((s) => s.measured);
    expect(measured.length).toBeGreaterThan(0);
    // each signature keeps the fastest of the candidates it timed (a property of the pick, not a timing threshold)
    const key = await deviceTimingKey(gpu().info);
    for (const s of measured) {
      const e = cache.entry(key, s.signature)!;
      expect(e.variant).toBe(e.candidates.reduce((a, c) => (c.ms < a.ms ? c : a)).variant);
    }
    const kernels = first.engine.manifest.kernels;
    expect(kernels.filter((k) => k.schedule?.source === 'tuned').length).toBeGreaterThan(0);
    expect(kernels.some((k) => k.schedule?.source === 'explore')).toBe(false);
    expect(cache.size(key)).toBe(measured.length);

    const second = await tuneModel(model, { gpu: gpu(), cache, repeats: 1, prefillChunk: 8 });
    expect(second.rounds).toBe(0);
    expect(second.signatures.every((s) => !s.measured)).toBe(true);
    expect(second.engine.manifest.kernels.map((k) => k.wgsl)).toEqual(kernels.map((k) => k.wgsl));

    const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-0.json'), 'utf8')) as { prompt_ids: number[]; generated_ids: number[] };
    const session = await second.engine.createSession({ device: gpu() });
    try {
      const r = await session.generate(gold.prompt_ids, { steps: 40, temperature: 0, topp: 1, seed: 1 });
      expect(r.generated).toEqual(gold.generated_ids.slice(0, r.generated.length));
      expect(r.generated.length).toBeGreaterThan(20);
    } finally {
      await session.destroy();
    }

    // the CLI over the same cache: nothing to time, and the saved engine shows its tuned kernels
    const dir = mkdtempSync(join(tmpdir(), 'tw-tune-'));
    const cachePath = join(dir, 'cache.json');
    writeFileSync(cachePath, JSON.stringify(cache.toJSON()));
    const r = await runCli(['compile', '--model', sharedPath('models/stories260K/stories260K.bin'), '-o', join(dir, 'engine'), '--prefill-chunk', '8', '--tune', '--timing-cache', cachePath, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/served from the timing cache/);
    const summary = JSON.parse(r.stdout) as { tuned_kernels: number; tuning: { rounds: number; measured: number } };
    expect(summary.tuning).toMatchObject({ rounds: 0, measured: 0 });
    const saved = JSON.parse(readFileSync(join(dir, 'engine', 'engine.json'), 'utf8')) as { kernels: { schedule?: { source: string } }[] };
    expect(saved.kernels.filter((k) => k.schedule?.source === 'tuned').length).toBe(summary.tuned_kernels);
    expect(summary.tuned_kernels).toBeGreaterThan(0);
  }, LONG);

  it('tunes a batch-invariant engine (what serve runs) at its batchTokens rows; the tuned engine keeps run.c\'s ids', async (ctx) => {
    if (!hasShared || !gpuHas(gpu(), 'timestamp-query')) return ctx.skip();
    const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    const cache = new TimingCache();
    const opts = { gpu: gpu(), cache, repeats: 1, prefillChunk: 8, batchInvariant: true, batchTokens: 4 };
    const r = await tuneModel(model, opts);
    expect(r.rounds).toBeGreaterThan(1);
    // one kernel per signature for every plan (batch invariance), scheduled for the 4 rows the tuner timed
    const kernels = r.engine.manifest.kernels;
    const tuned = kernels.filter((k) => k.schedule?.source === 'tuned');
    expect(tuned.length).toBeGreaterThan(0);
    for (const k of tuned) expect(k.schedule!.signature).toMatch(/"expectedM":4\b|"expectedSeq":4\b|"M":4\b|"rows":4\b/);
    const again = await tuneModel(model, opts);
    expect(again.rounds).toBe(0);
    const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-0.json'), 'utf8')) as { prompt_ids: number[]; generated_ids: number[] };
    const session = await r.engine.createSession({ device: gpu() });
    try {
      const g = await session.generate(gold.prompt_ids, { steps: 40, temperature: 0, topp: 1, seed: 1 });
      expect(g.generated).toEqual(gold.generated_ids.slice(0, g.generated.length));
      expect(g.generated.length).toBeGreaterThan(20);
    } finally {
      await session.destroy();
    }
  }, LONG);
});
