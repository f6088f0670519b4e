/**
 * Messages between the file fuzzer's parent and its worker processes.
 * @module
 */
import type { FuzzFormat, Seed } from './corpus.js';

/** Parent → worker: the corpus of a format and where to write cases. */
export interface InitMessage {
  readonly type: 'init';
  readonly format: FuzzFormat;
  readonly seeds: readonly Seed[];
  /** A folder the worker owns; each case's files are written into a fresh subfolder. */
  readonly caseDir: string;
}

/** Parent → worker: run case `index` of run `seed`. */
export interface CaseMessage {
  readonly type: 'case';
  readonly seed: number;
  readonly index: number;
}

/** How a case ended, as the worker saw it. */
export type WorkerOutcome = 'ok' | 'typed_error' | 'crash';

/** Memory figures around one case (bytes). */
export interface CaseMemory {
  /** Resident set before the case (after a GC). */
  readonly rssBefore: number;
  /** The process's peak resident set before the case. */
  readonly maxRssBefore: number;
  /** The process's peak resident set after it. */
  readonly maxRssAfter: number;
  /** Resident set after the case. */
  readonly rssAfter: number;
  /** Growth of ArrayBuffer and external memory while the loaded object was still held. */
  readonly retained: number;
}

/** Worker → parent: the result of one case. */
export interface ResultMessage {
  readonly type: 'result';
  readonly index: number;
  readonly outcome: WorkerOutcome;
  /** The error, for typed errors and crashes. */
  readonly error?: { readonly name: string; readonly message: string; readonly stack?: string };
  /** The seed and the mutations. */
  readonly seedName: string;
  readonly description: readonly string[];
  /** Bytes of the case's files. */
  readonly bytes: number;
  /** Bytes the loaded model declares (0 unless it loaded). */
  readonly declaredBytes: number;
  readonly memory: CaseMemory;
  /** Milliseconds the load took. */
  readonly ms: number;
}

/** Worker → parent: the worker is ready for cases. */
export interface ReadyMessage {
  readonly type: 'ready';
}
