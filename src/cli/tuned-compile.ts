/**
 * Compiling on the device with the timing cache, as `compile` and `serve` do: with `--tune`, the tunable kernels'
 * candidates are timed on the device ({@link tune-model!tuneModel}) and the cache file is updated; without it, the
 * cache's picks for this device are used when the file is there, else the schedule rules decide.
 * @module
 */
import { compile, type CompileOptions } from '../compile.js';
import type { LoadedModel } from '../frontends/load.js';
import type { GPUDeviceHandle } from '../runtime/device.js';
import type { Engine } from '../runtime/engine.js';
import { deviceTimingKey } from '../tune/timing-cache.js';
import { tuneModel, type TunedSignature } from '../tune/tune-model.js';
import { readTimingCache, timingCachePath, writeTimingCache } from './timing-cache-file.js';

/** What the tuner did, as `compile --json` reports it under `tuning`. */
export interface TuningSummary {
  /** The timing cache file. */
  readonly cache: string;
  /** Rounds of timing (0: served from the cache). */
  readonly rounds: number;
  /** Kernel signatures timed now. */
  readonly measured: number;
  /** Kernel signatures read from the cache. */
  readonly from_cache: number;
}

/** The timing-cache flags. */
export interface TimingCacheFlags {
  /** Time the candidates on the device (`--tune`). */
  readonly tune?: boolean;
  /** The timing cache file (`--timing-cache`; default: the user cache directory's). */
  readonly timingCache?: string;
}

/** Compiles `model` for `handle`'s device with the timing cache (see the module comment); `tuning` only with `--tune`. */
export async function compileWithTimingCache(
  model: LoadedModel,
  options: Omit<CompileOptions, 'device' | 'target' | 'tuning'>,
  handle: GPUDeviceHandle,
  flags: TimingCacheFlags,
  log: (line: string) => void,
): Promise<{ engine: Engine; tuning?: TuningSummary }> {
  const cachePath = timingCachePath(flags.timingCache);
  const { cache, existed } = await readTimingCache(cachePath);
  if (flags.tune) {
    const r = await tuneModel(model, { ...options, gpu: handle, cache });
    if (r.rounds > 0) await writeTimingCache(cachePath, cache);
    const measured = r.signatures.filter((s) => s.measured);
    const speedup = (xs: readonly TunedSignature[]): number => xs.reduce((a, s) => a + s.heuristicMs, 0) / Math.max(1e-9, xs.reduce((a, s) => a + s.ms, 0));
    const gain = (speedup(measured) - 1) * 100;
    log(
      r.rounds === 0
        ? `tune: served from the timing cache ${cachePath} (${r.signatures.length} kernel signatures, nothing timed)`
        : `tune: ${measured.length} kernel signatures timed in ${r.rounds} rounds (${gain >= 0 ? '+' : ''}${gain.toFixed(1)}% over the schedule rules' picks), ${r.signatures.length - measured.length} from the cache; cache written to ${cachePath}`,
    );
    return { engine: r.engine, tuning: { cache: cachePath, rounds: r.rounds, measured: measured.length, from_cache: r.signatures.length - measured.length } };
  }
  const table = existed ? cache.table(await deviceTimingKey(handle.info)) : undefined;
  if (table?.size) log(`timing cache ${cachePath}: ${table.size} tuned kernel signatures for this device`);
  return { engine: await compile(model, { device: handle.info, ...options, tuning: table?.size ? { table } : undefined }) };
}
