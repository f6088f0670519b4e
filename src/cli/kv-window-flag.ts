/**
 * The `--kv-window SINKS,RECENT` flag of `generate`, `serve` and `eval`: a malformed value is a usage error (exit 2);
 * the window's fit to the model (blocks, context) is checked later, where the model is known.
 * @module
 */
import { TensorwrightError, UsageError } from '../errors.js';
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
