/**
 * The `--kv-window SINKS,RECENT` and `--kv-h2o BUDGET,RECENT` flags of `generate`, `serve` and `eval`: a malformed
 * value is a usage error (exit 2);
 * the window's fit to the model (blocks, context) is checked later, where the model is known.
 * @module
 */
import { TensorwrightError, UsageError } from '../errors.js';
import { parseKvH2o, type KvEviction } from '../runtime/serving/kv-eviction.js';
import { parseKvWindow, type KvWindow } from '../runtime/serving/kv-window.js';

/** Parses the flag (undefined when absent). */
export function kvWindowFlag(text: string | undefined): KvWindow | undefined {
  if (text === undefined) return undefined;
  try {
    return parseKvWindow(text);
  } catch (e) {
    throw e instanceof TensorwrightError ? new UsageError(e.message) : e;
  }
}

/** Parses `--kv-h2o BUDGET,RECENT` (undefined when absent); a malformed value is a usage error. */
export function kvH2oFlag(text: string | undefined): KvEviction | undefined {
  if (text === undefined) return undefined;
  try {
    return parseKvH2o(text);
  } catch (e) {
    throw e instanceof TensorwrightError ? new UsageError(e.message) : e;
  }
}

/**
 * The combinations `--kv-h2o` does not take, as usage errors naming the option: H2O needs an f32 KV cache whose keys
 * it can shift and the attention mass the backend computes (the CPU reference, or a WebGPU engine's attention-mass
 * observers; an engine from disk without them is refused when it is loaded).
 */
export function refuseKvH2o(o: { kvWindow?: string; kvCalib?: string; kvDtype?: string; speculative?: string }): void {
  if (o.kvWindow !== undefined) throw new UsageError('--kv-h2o and --kv-window do not go together: pick one way of bounding the KV cache');
  if (o.kvCalib) throw new UsageError('--kv-h2o does not go with --kv-calib: centered keys do not rotate with their offsets');
  if (o.kvDtype && o.kvDtype !== 'f32') throw new UsageError(`--kv-h2o takes an f32 KV cache (no key shift or attention mass of ${o.kvDtype} blocks)`);
  if (o.speculative) throw new UsageError('--kv-h2o and --speculative do not go together');
}
