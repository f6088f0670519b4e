/**
 * A file-fuzzer worker process: receives a format's corpus, then runs cases one at a time (build the case's files,
 * write them into a fresh folder, load them as a user would) and reports each outcome with the memory it took. A
 * `TensorwrightError` is a typed error; anything else thrown, or rejected unhandled while a case runs, is a crash.
 * The parent kills and replaces a worker whose case runs too long or grows too large.
 * @module
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TensorwrightError } from '../../src/errors.js';
import { makeCase, SeedCache } from './case.js';
import type { FuzzFormat, Seed } from './corpus.js';
import { loadCase } from './load.js';
import type { CaseMessage, InitMessage, ResultMessage, WorkerOutcome } from './protocol.js';

let format: FuzzFormat | undefined;
let seeds: readonly Seed[] = [];
let caseDir = '';
let cache = new SeedCache();
/** Resident set after the last forced GC. */
let rssAfterGc = 0;
const GC_EVERY_BYTES = 48 * 2 ** 20;
/** Errors that escaped the running case (unhandled rejections, uncaught exceptions). */
let escaped: unknown[] = [];

const send = (m: object): void => {
  process.send!(m);
};

process.on('unhandledRejection', (e) => escaped.push(e));
process.on('uncaughtException', (e) => escaped.push(e));

function errorInfo(e: unknown): ResultMessage['error'] {
  if (e instanceof Error) return { name: e.constructor?.name ?? e.name, message: e.message, stack: e.stack };
  return { name: typeof e, message: String(e) };
}

async function runCase(m: CaseMessage): Promise<void> {
  const c = makeCase(seeds, cache, m.seed, m.index);
  const dir = join(caseDir, 'case');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  let bytes = 0;
  for (const [name, b] of c.files) {
    writeFileSync(join(dir, name), b);
    bytes += b.length;
  }
  // a full GC costs tens of milliseconds: only when garbage has piled up enough to blur the next case's growth
  if (process.memoryUsage().rss > rssAfterGc + GC_EVERY_BYTES) {
    (globalThis as { gc?: () => void }).gc?.();
    rssAfterGc = process.memoryUsage().rss;
  }
  const before = process.memoryUsage();
  const maxRssBefore = process.resourceUsage().maxRSS * 1024;
  escaped = [];
  let outcome: WorkerOutcome = 'ok';
  let error: ResultMessage['error'];
  let declaredBytes = 0;
  let retained = 0;
  const t0 = performance.now();
  try {
    const loaded = await loadCase(format!, dir, c.seed);
    declaredBytes = loaded.declaredBytes;
    const after = process.memoryUsage();
    retained = after.arrayBuffers + after.external - before.arrayBuffers - before.external;
    void loaded.held;
  } catch (e) {
    outcome = e instanceof TensorwrightError ? 'typed_error' : 'crash';
    error = errorInfo(e);
  }
  const ms = performance.now() - t0;
  // let a stray rejection of this case surface before it is reported
  await new Promise((r) => setImmediate(r));
  if (escaped.length) {
    outcome = 'crash';
    error = errorInfo(escaped[0]);
    error = { ...error!, name: `unhandled ${error!.name}` };
  }
  const msg: ResultMessage = {
    type: 'result',
    index: m.index,
    outcome,
    error,
    seedName: c.seed.name,
    description: c.description,
    bytes,
    declaredBytes,
    memory: { rssBefore: before.rss, maxRssBefore, maxRssAfter: process.resourceUsage().maxRSS * 1024, rssAfter: process.memoryUsage().rss, retained },
    ms,
  };
  send(msg);
}

process.on('message', (m: InitMessage | CaseMessage) => {
  if (m.type === 'init') {
    format = m.format;
    seeds = m.seeds;
    caseDir = m.caseDir;
    cache = new SeedCache();
    // the previous format's seeds go, so this format's memory figures start clean
    (globalThis as { gc?: () => void }).gc?.();
    rssAfterGc = process.memoryUsage().rss;
    mkdirSync(caseDir, { recursive: true });
    send({ type: 'ready' });
    return;
  }
  runCase(m).catch((e: unknown) => {
    // a failure of the harness itself (writing files): reported as a crash of the case, with its stack
    send({ type: 'result', index: m.index, outcome: 'crash', error: errorInfo(e), seedName: '?', description: ['(harness failure)'], bytes: 0, declaredBytes: 0, memory: { rssBefore: 0, maxRssBefore: 0, maxRssAfter: 0, rssAfter: 0, retained: 0 }, ms: 0 } satisfies ResultMessage);
  });
});
