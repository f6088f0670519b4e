/**
 * Output discipline for the CLI: results to stdout, progress and logs to stderr, errors as one typed line.
 * @module
 */
import { TensorwrightError } from '../errors.js';

/** Writes a progress or log line to stderr. */
export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Formats any thrown value as the CLI's one-line error: `error [CODE] Name: message`. */
export function errorLine(e: unknown): string {
  if (e instanceof TensorwrightError) return `error [${e.code}] ${e.name}: ${e.message.replace(/\s*\n\s*/g, ' | ')}`;
  if (e instanceof Error) return `error [INTERNAL] ${e.name}: ${e.message.replace(/\s*\n\s*/g, ' | ')}`;
  return `error [INTERNAL] ${String(e)}`;
}
