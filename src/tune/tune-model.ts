/**
 * `compile --tune`: the candidate variants the schedule rules allow for each tunable kernel, timed on the actual
 * device with the model's own shapes, weights and plans, and the fastest kept in a {@link TimingCache}.
 *
 * How it measures: a compile with the cache's table tells which kernel signatures are not measured yet. Round `r`
 * compiles the model with candidate `r` of every such signature (`explore`: signatures with fewer candidates keep
 * their rule's pick), loads the engine with `timestamp-query` profiling, and runs each plan (one prefill chunk, one
 * decode token) a few times; a signature's time in a round is the least, over the repeats, of the GPU time of all
 * its launches in one step (every layer's). A batch-invariant engine (`batchInvariant`, what `serve` runs) schedules
 * every plan's kernels for `batchTokens` rows, so its steps are timed with that many tokens instead. Rounds stop when no signature has a candidate left. Each signature's
 * fastest candidate goes into the cache, and the engine is compiled once more with the table: its kernels say
 * `tuned` in `schedule.source`. When every signature is in the cache already, nothing is timed: the compile is served
 * from the cache.
 *
 * Timings are of whole launches in the real engine (its buffers, its neighbours), not of a kernel alone: what
 * decode and prefill will see. They need the `timestamp-query` feature.
 * @module
 */
import { compileModel, stepTokensOf, type CompileOptions, type CompiledEngine } from '../compile.js';
import { DeviceError } from '../errors.js';
import type { LoadedModel } from '../frontends/load.js';
import { Engine } from '../runtime/engine.js';
import type { GPUDeviceHandle } from '../runtime/device.js';
import type { KernelSchedule } from '../runtime/kernel-source.js';
import { sha256Hex } from '../util/sha256.js';
import { deviceTimingKey, type CandidateTiming, type TimingCache } from './timing-cache.js';

/** Options of {@link tuneModel}: a compile's, plus the device to time on and the cache. */
export interface TuneOptions extends Omit<CompileOptions, 'device' | 'target' | 'tuning'> {
  /** The device to time on (the engine is compiled for it). */
  readonly gpu: GPUDeviceHandle;
  /** The timing cache to read and to add measurements to. */
  readonly cache: TimingCache;
  /** Timed steps per plan and round; the least time counts (default 3). */
  readonly repeats?: number;
}

/** One kernel signature's outcome. */
export interface TunedSignature {
  /** The kernel signature. */
  readonly signature: string;
  /** The chosen variant (canonical JSON). */
  readonly variant: string;
  /** Its time (ms per step, every launch of the signature). */
  readonly ms: number;
  /** The schedule rules' own pick's time (ms). */
  readonly heuristicMs: number;
  /** Candidates timed. */
  readonly candidates: number;
  /** Whether it was measured now (false: read from the cache). */
  readonly measured: boolean;
}

/** What {@link tuneModel} did. */
export interface TuneResult {
  /** The engine compiled with the tuned picks. */
  readonly engine: Engine;
  /** Its compile (manifest, weights, pipeline). */
  readonly compiled: CompiledEngine;
  /** The device's key in the cache. */
  readonly deviceKey: string;
  /** Rounds run (0 when served from the cache). */
  readonly rounds: number;
  /** Every tunable signature of the engine, measured now or read from the cache. */
  readonly signatures: readonly TunedSignature[];
}

/** The distinct schedules of a manifest's tunable kernels, by signature. */
function schedulesOf(c: CompiledEngine): Map<string, KernelSchedule> {
  const out = new Map<string, KernelSchedule>();
  for (const k of c.manifest.kernels) if (k.schedule && !out.has(k.schedule.signature)) out.set(k.schedule.signature, k.schedule);
  return out;
}

/** Tunes the model's kernels on `o.gpu` (see the module comment) and compiles it with the picks. */
export async function tuneModel(model: LoadedModel, o: TuneOptions): Promise<TuneResult> {
  const { gpu, cache } = o;
  if (!gpu.info.features.includes('timestamp-query'))
    throw new DeviceError('DEVICE_ERROR', `tuning times kernels with the 'timestamp-query' feature, which this device lacks (${gpu.info.adapter.description})`);
  const repeats = Math.max(1, o.repeats ?? 3);
  const key = await deviceTimingKey(gpu.info);
  const adapter = gpu.info.adapter.description;
  const base: CompileOptions = { ...o, device: gpu.info };
  // a batch-invariant engine runs the same kernels for every step, scheduled for `batchTokens` rows: time them there
  const stepRows = o.batchInvariant ? stepTokensOf(o, model.maxPositions).expectedSeq : undefined;
  const compileWith = (explore?: number): CompiledEngine => compileModel(model, { ...base, tuning: { table: cache.table(key), explore } });
  const first = compileWith();
  const missing = new Map([...schedulesOf(first)].filter(([, s]) => s.source !== 'tuned'));
  o.onProgress?.(`tune: ${schedulesOf(first).size - missing.size} kernel signatures from the timing cache, ${missing.size} to measure`);
  const times = new Map<string, Map<number, CandidateTiming>>();
  const heuristic = new Map<string, string>();
  let rounds = 0;
  for (let r = 0; missing.size > 0; r++) {
    const c = r === 0 ? first : compileWith(r); // round 0 times the rules' own picks, which `first` has
    const trial = [...schedulesOf(c)].filter(([sig, s]) => missing.has(sig) && s.candidate === r);
    if (trial.length === 0) break;
    rounds++;
    for (const [sig, s] of trial) if (r === 0) heuristic.set(sig, s.variant);
    o.onProgress?.(`tune: round ${r + 1}: timing ${trial.length} signature${trial.length === 1 ? '' : 's'}`);
    const ms = await timeSignatures(c, gpu, repeats, stepRows);
    for (const [sig, s] of trial) {
      const t = ms.get(sig);
      if (t === undefined) continue; // not launched by any plan step (cannot happen for a plan's own kernels)
      let m = times.get(sig);
      if (!m) times.set(sig, (m = new Map()));
      m.set(s.candidate, { variant: s.variant, ms: t });
    }
  }
  const signatures: TunedSignature[] = [];
  for (const [sig, m] of times) {
    const e = cache.record(key, adapter, sig, [...m.values()], heuristic.get(sig) ?? '');
    signatures.push({ signature: sig, variant: e.variant, ms: e.ms, heuristicMs: e.heuristicMs, candidates: m.size, measured: true });
  }
  const compiled = rounds === 0 ? first : compileWith();
  for (const [sig] of schedulesOf(compiled)) {
    if (times.has(sig)) continue;
    const e = cache.entry(key, sig);
    if (e) signatures.push({ signature: sig, variant: e.variant, ms: e.ms, heuristicMs: e.heuristicMs, candidates: e.candidates.length, measured: false });
  }
  const engine = new Engine({ ...compiled.manifest, weightsSha256: await sha256Hex(compiled.weights) }, compiled.weights);
  return { engine, compiled, deviceKey: key, rounds, signatures };
}

/**
 * GPU time per kernel signature of one step of each plan of `c` (the least over `repeats` steps, after one warm-up
 * step per plan): the sum over the signature's launches in that step. With `stepRows` (a batch-invariant engine,
 * whose plans share their kernels), only steps of that many tokens, on the smallest plan that takes them.
 */
async function timeSignatures(c: CompiledEngine, gpu: GPUDeviceHandle, repeats: number, stepRows?: number): Promise<Map<string, number>> {
  const engine = new Engine(c.manifest, c.weights, { verify: false });
  const session = await engine.createSession({ device: gpu, profile: true });
  const best = new Map<string, number>();
  const greedy = { temperature: 0, topp: 1, coin: 0 };
  const vocab = c.manifest.lm?.vocabSize ?? 1;
  try {
    const plans = stepRows === undefined ? c.manifest.plans : c.manifest.plans.filter((p) => p.maxSeq >= stepRows).sort((a, b) => a.maxSeq - b.maxSeq).slice(0, 1);
    for (const plan of plans) {
      const tokens = Array.from({ length: stepRows ?? plan.maxSeq }, (_, i) => (7 * i + 1) % vocab);
      for (let rep = 0; rep <= repeats; rep++) {
        session.reset();
        await session.step(tokens, greedy);
        if (rep === 0) continue; // warm-up
        const step = new Map<string, number>();
        for (const t of session.lastProfile) {
          const sig = c.manifest.kernels[t.kernelIndex]?.schedule?.signature;
          if (sig) step.set(sig, (step.get(sig) ?? 0) + t.ms);
        }
        for (const [sig, ms] of step) best.set(sig, Math.min(best.get(sig) ?? Infinity, ms));
      }
    }
  } finally {
    await session.destroy();
  }
  return best;
}
