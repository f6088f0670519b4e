/**
 * The timing cache: what `compile --tune` measured, kept as JSON so the next compile for the same device reuses it
 * instead of timing again (TensorRT's timing cache, in the same spirit).
 *
 * Keyed first by device — the adapter's vendor, architecture, device and description (the driver), the features and
 * every limit, hashed — then by kernel signature (the family and the spec that decides its code: shape, form, weight
 * format, the plan's token count). Each entry keeps the winner, its time, and every candidate's time, so a report can
 * say why.
 *
 * The file is data from disk: {@link TimingCache.parse} checks every field and throws `ModelFormatError` naming
 * the field; a variant it holds can only pick among the candidates the schedule rules allow for the signature
 * (`chooseScheduledVariant`), so a hostile or stale cache costs speed, never correctness.
 * @module
 */
import { ModelFormatError } from '../errors.js';
import type { DeviceInfo } from '../runtime/device.js';
import { sha256Hex } from '../util/sha256.js';

/** The file's `format` field. */
export const TIMING_CACHE_FORMAT = 'tensorwright-timing-cache';
/** The version this code writes and reads. */
export const TIMING_CACHE_VERSION = 1;

/** One candidate's measured time. */
export interface CandidateTiming {
  /** The variant, as canonical JSON. */
  readonly variant: string;
  /** Best GPU time of one step's launches of this signature, in milliseconds. */
  readonly ms: number;
}

/** What was measured for one kernel signature on one device. */
export interface TimingEntry {
  /** The winner, as canonical JSON (one of `candidates`). */
  readonly variant: string;
  /** The winner's time (ms). */
  readonly ms: number;
  /** The schedule rules' own pick's time (ms): `ms / heuristicMs` is what tuning bought. */
  readonly heuristicMs: number;
  /** Every candidate timed. */
  readonly candidates: readonly CandidateTiming[];
  /** When it was measured (ISO 8601). */
  readonly measuredAt: string;
}

/** The entries of one device. */
export interface DeviceTimings {
  /** The adapter, for people reading the file. */
  readonly adapter: string;
  /** Kernel signature → entry. */
  readonly entries: Record<string, TimingEntry>;
}

/** The JSON form of a timing cache. */
export interface TimingCacheFile {
  /** Always {@link TIMING_CACHE_FORMAT}. */
  readonly format: string;
  /** {@link TIMING_CACHE_VERSION}. */
  readonly version: number;
  /** Device key → its entries. */
  readonly devices: Record<string, DeviceTimings>;
}

/** Most devices and entries per device a cache file may hold (a bound on what a file can make us allocate). */
const MAX_DEVICES = 256;
const MAX_ENTRIES = 65536;
const MAX_CANDIDATES = 1024;

/**
 * The key of a device in a timing cache: a hash of the adapter's identity, the enabled features and every limit, so
 * a driver update or a device with other limits gets its own entries.
 */
export async function deviceTimingKey(info: DeviceInfo): Promise<string> {
  const a = info.adapter;
  const limits = Object.keys(info.limits).sort().map((k) => [k, info.limits[k]]);
  const identity = JSON.stringify({ vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description, backend: info.backend, features: [...info.features].sort(), limits, subgroupSize: info.subgroupSize ?? null });
  const hash = await sha256Hex(new TextEncoder().encode(identity));
  return `${a.vendor || 'unknown'}/${a.architecture || 'unknown'}#${hash.slice(0, 16)}`;
}

/** A timing cache in memory. */
export class TimingCache {
  private readonly devices: Map<string, { adapter: string; entries: Map<string, TimingEntry> }>;

  constructor(file?: TimingCacheFile) {
    this.devices = new Map(Object.entries(file?.devices ?? {}).map(([k, d]) => [k, { adapter: d.adapter, entries: new Map(Object.entries(d.entries)) }]));
  }

  /**
   * Reads a cache file's text, checking every field.
   * @param source What the text is (a path), for error messages.
   * @throws {@link errors!ModelFormatError | ModelFormatError} naming the field that is wrong.
   */
  static parse(text: string, source: string): TimingCache {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new ModelFormatError(source, 0, `the timing cache is not JSON: ${(e as Error).message}`);
    }
    const fail = (field: string, why: string): never => {
      throw new ModelFormatError(source, 0, `timing cache field '${field}' ${why}`);
    };
    const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
    const str = (x: unknown, field: string): string => (typeof x === 'string' && x.length > 0 && x.length <= 1 << 16 ? x : fail(field, 'must be a non-empty string'));
    const ms = (x: unknown, field: string): number => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : fail(field, 'must be a finite number ≥ 0'));
    if (!isObj(v)) return fail('(root)', 'must be an object');
    if (v.format !== TIMING_CACHE_FORMAT) fail('format', `must be "${TIMING_CACHE_FORMAT}"`);
    if (v.version !== TIMING_CACHE_VERSION) fail('version', `must be ${TIMING_CACHE_VERSION} (this is a cache of another tensorwright version: delete it to re-tune)`);
    if (!isObj(v.devices)) return fail('devices', 'must be an object');
    const devices = Object.entries(v.devices);
    if (devices.length > MAX_DEVICES) fail('devices', `holds ${devices.length} devices, more than ${MAX_DEVICES}`);
    const out: Record<string, DeviceTimings> = {};
    for (const [key, d] of devices) {
      const p = `devices.${key}`;
      if (!isObj(d)) return fail(p, 'must be an object');
      if (!isObj(d.entries)) return fail(`${p}.entries`, 'must be an object');
      const entries = Object.entries(d.entries);
      if (entries.length > MAX_ENTRIES) fail(`${p}.entries`, `holds ${entries.length} entries, more than ${MAX_ENTRIES}`);
      const checked: Record<string, TimingEntry> = {};
      for (const [sig, e] of entries) {
        const q = `${p}.entries[${JSON.stringify(sig.slice(0, 80))}]`;
        if (!isObj(e)) return fail(q, 'must be an object');
        if (!Array.isArray(e.candidates) || e.candidates.length === 0 || e.candidates.length > MAX_CANDIDATES) return fail(`${q}.candidates`, `must be an array of 1 to ${MAX_CANDIDATES} timings`);
        const candidates = e.candidates.map((c, i) => (isObj(c) ? { variant: str(c.variant, `${q}.candidates[${i}].variant`), ms: ms(c.ms, `${q}.candidates[${i}].ms`) } : fail(`${q}.candidates[${i}]`, 'must be an object')));
        const variant = str(e.variant, `${q}.variant`);
        if (!candidates.some((c) => c.variant === variant)) fail(`${q}.variant`, 'must be one of its candidates');
        checked[sig] = { variant, ms: ms(e.ms, `${q}.ms`), heuristicMs: ms(e.heuristicMs, `${q}.heuristicMs`), candidates, measuredAt: str(e.measuredAt, `${q}.measuredAt`) };
      }
      out[key] = { adapter: typeof d.adapter === 'string' ? d.adapter : '', entries: checked };
    }
    return new TimingCache({ format: TIMING_CACHE_FORMAT, version: TIMING_CACHE_VERSION, devices: out });
  }

  /** The measured picks for a device: signature → variant (canonical JSON), what a compile's `tuning.table` takes. */
  table(deviceKey: string): Map<string, string> {
    return new Map([...(this.devices.get(deviceKey)?.entries ?? new Map<string, TimingEntry>())].map(([sig, e]) => [sig, e.variant]));
  }

  /** The entry of a signature on a device, if measured. */
  entry(deviceKey: string, signature: string): TimingEntry | undefined {
    return this.devices.get(deviceKey)?.entries.get(signature);
  }

  /** Signatures measured for a device. */
  size(deviceKey: string): number {
    return this.devices.get(deviceKey)?.entries.size ?? 0;
  }

  /** Records what was measured for a signature on a device (the fastest candidate wins). */
  record(deviceKey: string, adapter: string, signature: string, candidates: readonly CandidateTiming[], heuristic: string): TimingEntry {
    if (candidates.length === 0) throw new RangeError(`no timings for ${signature}`);
    const best = candidates.reduce((a, c) => (c.ms < a.ms ? c : a));
    const entry: TimingEntry = { variant: best.variant, ms: best.ms, heuristicMs: candidates.find((c) => c.variant === heuristic)?.ms ?? best.ms, candidates: [...candidates], measuredAt: new Date().toISOString() };
    let d = this.devices.get(deviceKey);
    if (!d) this.devices.set(deviceKey, (d = { adapter, entries: new Map() }));
    d.entries.set(signature, entry);
    return entry;
  }

  /** The JSON form (what {@link TimingCache.parse} reads back). */
  toJSON(): TimingCacheFile {
    return {
      format: TIMING_CACHE_FORMAT,
      version: TIMING_CACHE_VERSION,
      devices: Object.fromEntries([...this.devices].map(([k, d]) => [k, { adapter: d.adapter, entries: Object.fromEntries(d.entries) }])),
    };
  }
}
