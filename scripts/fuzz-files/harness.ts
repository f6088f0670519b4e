/**
 * The file fuzzer's parent: builds each format's seed corpus once, keeps a pool of worker child processes (so a case
 * that hangs can be killed and its memory measured), hands them case indices, and tallies outcomes:
 *
 * - `ok`: the file loaded; `typed_error`: a `TensorwrightError`; `crash`: anything else thrown, a worker that died,
 *   or a worker past the memory ceiling; `hang`: a case over the time limit (the worker is killed and replaced);
 * - `over_budget`: a case whose memory grew by more than 4× its files' size plus the bytes of the weights the loaded
 *   model declares (bounded by the file) plus a fixed allowance for the loader's own objects.
 *
 * Crashes, hangs and budget violations are grouped by class (error name, message with numbers blanked, and the first
 * frame in `src/`), each with the first case that showed it, so `--seed S --only K` reproduces it.
 * @module
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { makeCase, SeedCache } from './case.js';
import { buildCorpus, type CorpusSize, type FuzzFormat, type Seed } from './corpus.js';
import type { CaseMessage, InitMessage, ReadyMessage, ResultMessage } from './protocol.js';

/** Options of a {@link FileFuzzer}. */
export interface FileFuzzerOptions {
  /** Worker processes (default 2). */
  readonly workers?: number;
  /** Wall-clock limit of one case in milliseconds (default 5000); a case over it is a hang. */
  readonly timeoutMs?: number;
  /** Resident-set ceiling of a worker in bytes (default 3 GiB); a worker over it is killed and the case is a crash. */
  readonly memoryLimit?: number;
  /** Seeds to use (default `full`). */
  readonly corpus?: CorpusSize;
  /** Memory every case may use beyond its budget, for the loader's own objects (default 128 MiB). */
  readonly memorySlack?: number;
}

/** A class of crashes (or hangs, or budget violations) and the first case that showed it. */
export interface FailureClass {
  /** `crash`, `hang` or `over_budget`. */
  readonly kind: 'crash' | 'hang' | 'over_budget';
  /** Error name, message with numbers blanked, first `src/` frame. */
  readonly signature: string;
  /** Cases of the class. */
  count: number;
  /** The first case: its index, seed file, mutations, and the error (with its stack). */
  readonly first: { readonly index: number; readonly seedName: string; readonly description: readonly string[]; readonly error: string; readonly stack?: string };
}

/** The outcome of a run over one format. */
export interface FileFuzzSummary {
  /** The format. */
  readonly format: FuzzFormat;
  /** Cases run. */
  readonly runs: number;
  /** Cases that loaded. */
  readonly ok: number;
  /** Cases that threw a TensorwrightError. */
  readonly typed_errors: number;
  /** Cases that crashed (anything else thrown, a worker that died or outgrew the memory ceiling). */
  readonly crashes: number;
  /** Cases over the time limit. */
  readonly hangs: number;
  /** Largest resident set a worker reached, in MiB. */
  readonly max_rss_mb: number;
  /** The run seed. */
  readonly seed: number;
  /** Cases whose memory grew beyond their budget. */
  readonly over_budget: number;
  /** Crash, hang and budget classes. */
  readonly failures: readonly FailureClass[];
  /** Wall-clock seconds of the run. */
  readonly seconds: number;
}

/** Blanks numbers and quoted names so one bug is one class. */
function signatureOf(name: string, message: string, stack: string | undefined): string {
  const msg = message
    .replace(/'[^']*'|"[^"]*"|`[^`]*`/g, "'…'")
    .replace(/\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N')
    .slice(0, 160);
  const frame = (stack ?? '')
    .split('\n')
    .slice(1)
    .find((l) => l.includes('/src/'));
  const where = frame ? frame.replace(/^.*\/src\//, 'src/').replace(/\)?$/, '').replace(/:\d+$/, '') : '';
  return `${name}: ${msg}${where ? ` at ${where}` : ''}`;
}

const workerPath = join(dirname(fileURLToPath(import.meta.url)), 'worker.ts');
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx').replace(/loader\.cjs$/, 'loader.mjs')).href;

/** Resident set of a process from /proc (Linux), or undefined. */
function rssOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    return Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * 4096;
  } catch {
    return undefined;
  }
}

/** A worker process and what it is doing. */
interface Worker {
  proc: ChildProcess;
  /** Settles when the worker has taken the current format's corpus. */
  ready: Promise<void>;
  /** Resolves `ready`. */
  onReady?: () => void;
  /** The case it runs, with its timer. */
  busy?: { index: number; timer: NodeJS.Timeout; done: (r: ResultMessage | { killed: 'hang' | 'memory' | 'died'; detail: string }) => void };
  /** Last few KiB of its stderr. */
  stderr: string;
  maxRss: number;
  killedFor?: 'hang' | 'memory';
  /** Whether it ever took a corpus (a worker that dies before cannot start at all). */
  started: boolean;
}

/** Runs the file fuzzer over formats, reusing one pool of workers and one corpus per format. */
export class FileFuzzer {
  private readonly opts: Required<FileFuzzerOptions>;
  private readonly root: string;
  private readonly corpora = new Map<FuzzFormat, Seed[]>();
  private workers: Worker[] = [];
  private current: { format: FuzzFormat; seeds: readonly Seed[] } | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  /** Workers that died before they were ready; past 3 the fuzzer gives up. */
  private startFailures = 0;
  private startError: Error | undefined;

  constructor(opts: FileFuzzerOptions = {}) {
    this.opts = { workers: opts.workers ?? 2, timeoutMs: opts.timeoutMs ?? 5000, memoryLimit: opts.memoryLimit ?? 3 * 2 ** 30, corpus: opts.corpus ?? 'full', memorySlack: opts.memorySlack ?? 128 * 2 ** 20 };
    this.root = mkdtempSync(join(tmpdir(), 'tw-fuzz-files-'));
  }

  /** The seeds of a format (built on first use). */
  async corpus(format: FuzzFormat): Promise<Seed[]> {
    let c = this.corpora.get(format);
    if (!c) {
      c = await buildCorpus(format, join(this.root, 'seeds', format), this.opts.corpus);
      this.corpora.set(format, c);
    }
    return c;
  }

  /** The files and mutations of one case, rebuilt in this process (for reports of hangs and dead workers). */
  async describe(format: FuzzFormat, seed: number, index: number): Promise<{ seedName: string; description: readonly string[] }> {
    const c = makeCase(await this.corpus(format), new SeedCache(), seed, index);
    return { seedName: c.seed.name, description: c.description };
  }

  /** Hands a worker the current format's corpus; `ready` settles when it has taken it. */
  private init(w: Worker, slot: number): void {
    const { format, seeds } = this.current!;
    w.ready = new Promise<void>((resolve) => (w.onReady = resolve));
    const init: InitMessage = { type: 'init', format, seeds, caseDir: join(this.root, `worker-${slot}`) };
    w.proc.send(init);
  }

  /** Starts worker `slot` (again, after a kill) for the current format. */
  private spawn(slot: number): Worker {
    const proc = fork(workerPath, [], {
      execArgv: ['--import', tsxLoader, '--expose-gc', '--max-old-space-size=2048'],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
    });
    const w: Worker = { proc, ready: Promise.resolve(), stderr: '', maxRss: 0, started: false };
    proc.stderr?.on('data', (d: Buffer) => {
      w.stderr = (w.stderr + d.toString()).slice(-4096);
    });
    proc.on('message', (m: ReadyMessage | ResultMessage) => {
      if (m.type === 'ready') {
        w.started = true;
        return w.onReady?.();
      }
      const b = w.busy;
      if (b && m.index === b.index) {
        clearTimeout(b.timer);
        w.busy = undefined;
        // the process peak (getrusage) cannot be reset between formats: a case's peak is it only when the case raised it
        const mem = m.memory;
        w.maxRss = Math.max(w.maxRss, mem.maxRssAfter > mem.maxRssBefore ? mem.maxRssAfter : Math.max(mem.rssBefore, mem.rssAfter));
        b.done(m);
      }
    });
    proc.on('exit', (code, signal) => {
      const b = w.busy;
      if (b) {
        clearTimeout(b.timer);
        w.busy = undefined;
        b.done({ killed: w.killedFor ?? 'died', detail: `worker ${signal ? `killed by ${signal}` : `exited with ${code}`}${w.stderr ? `: ${w.stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}` });
      }
      if (!w.started && ++this.startFailures > 3) this.startError = new Error(`file-fuzz workers die before they start: ${w.stderr.trim()}`);
      if (this.workers[slot] === w && !this.startError) this.workers[slot] = this.spawn(slot);
      w.onReady?.();
    });
    this.init(w, slot);
    return w;
  }

  private stopWorkers(): void {
    const old = this.workers;
    this.workers = [];
    for (const w of old) {
      w.proc.removeAllListeners('exit');
      w.proc.kill('SIGKILL');
    }
  }

  /** Runs `runs` cases of `format` (or only case `only`) from run seed `seed`. */
  async run(format: FuzzFormat, runs: number, seed: number, only?: number, onResult?: (r: ResultMessage) => void): Promise<FileFuzzSummary> {
    const t0 = performance.now();
    const seeds = await this.corpus(format);
    this.current = { format, seeds };
    const indices = only !== undefined ? [only] : Array.from({ length: runs }, (_v, i) => i);
    // the workers of an earlier run take the new corpus (starting a worker costs seconds)
    const n = Math.max(1, Math.min(this.opts.workers, indices.length));
    this.workers.forEach((w, slot) => this.init(w, slot));
    while (this.workers.length < n) this.workers.push(this.spawn(this.workers.length));
    this.watchdog = setInterval(() => {
      for (const w of this.workers) {
        const rss = rssOf(w.proc.pid);
        if (rss === undefined) continue;
        w.maxRss = Math.max(w.maxRss, rss);
        if (w.busy && rss > this.opts.memoryLimit) {
          w.killedFor = 'memory';
          w.proc.kill('SIGKILL');
        }
      }
    }, 100);
    const tally = { ok: 0, typed_errors: 0, crashes: 0, hangs: 0, over_budget: 0 };
    const failures = new Map<string, FailureClass>();
    let maxRss = 0;
    const fail = (kind: FailureClass['kind'], signature: string, first: FailureClass['first']): void => {
      const key = `${kind} ${signature}`;
      const f = failures.get(key);
      if (f) f.count++;
      else failures.set(key, { kind, signature, count: 1, first });
    };
    let next = 0;
    const runOne = async (slot: number): Promise<void> => {
      while (next < indices.length) {
        const index = indices[next++];
        let w = this.workers[slot];
        await w.ready;
        // a worker that died while starting was replaced in its slot
        while (w !== this.workers[slot] && !this.startError) {
          w = this.workers[slot];
          await w.ready;
        }
        if (this.startError) throw this.startError;
        const r = await new Promise<ResultMessage | { killed: 'hang' | 'memory' | 'died'; detail: string }>((done) => {
          const timer = setTimeout(() => {
            w.killedFor = 'hang';
            w.proc.kill('SIGKILL');
          }, this.opts.timeoutMs);
          w.busy = { index, timer, done };
          const msg: CaseMessage = { type: 'case', seed, index };
          w.proc.send(msg);
        });
        maxRss = Math.max(maxRss, w.maxRss);
        if ('killed' in r) {
          const d = await this.describe(format, seed, index);
          const first = { index, ...d, error: r.detail };
          if (r.killed === 'hang') {
            tally.hangs++;
            fail('hang', `over ${this.opts.timeoutMs} ms on seed ${d.seedName}`, first);
          } else {
            tally.crashes++;
            fail('crash', r.killed === 'memory' ? `worker past the ${this.opts.memoryLimit / 2 ** 20} MiB memory ceiling` : r.detail.replace(/\d+/g, 'N'), first);
          }
          continue;
        }
        onResult?.(r);
        if (r.outcome === 'ok') tally.ok++;
        else if (r.outcome === 'typed_error') tally.typed_errors++;
        else {
          tally.crashes++;
          fail('crash', signatureOf(r.error!.name, r.error!.message, r.error!.stack), { index, seedName: r.seedName, description: r.description, error: `${r.error!.name}: ${r.error!.message}`, stack: r.error!.stack });
        }
        const m = r.memory;
        const peak = m.maxRssAfter > m.maxRssBefore ? m.maxRssAfter - m.rssBefore : 0;
        const used = Math.max(peak, m.retained);
        const budget = this.opts.memorySlack + 4 * r.bytes + r.declaredBytes;
        if (used > budget) {
          tally.over_budget++;
          fail('over_budget', `grew ${(used / 2 ** 20).toFixed(0)} MiB on seed ${r.seedName}`, { index, seedName: r.seedName, description: r.description, error: `grew ${used} bytes; budget ${budget} (files ${r.bytes}, declared ${r.declaredBytes})` });
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: n }, (_v, slot) => runOne(slot)));
    } finally {
      clearInterval(this.watchdog);
      for (const w of this.workers) {
        maxRss = Math.max(maxRss, w.maxRss);
        w.maxRss = 0;
      }
    }
    return {
      format,
      runs: indices.length,
      ...tally,
      max_rss_mb: Math.round(maxRss / 2 ** 20),
      seed,
      failures: [...failures.values()],
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    };
  }

  /** Stops the workers and removes the corpus and case folders. */
  close(): void {
    this.stopWorkers();
    rmSync(this.root, { recursive: true, force: true });
  }
}
