/**
 * Waiting for submitted GPU work without starving the GPU of CPU time.
 *
 * dawn.node (the `webgpu` package) turns the JS thread into a busy-polling loop while any GPU promise is pending
 * (`mapAsync`, `onSubmittedWorkDone`). On a software device such as lavapipe the "GPU" is the CPU's other threads,
 * so that loop takes a whole core from them: on the 2-core machine we test on, a 4096x4096 decode GEMV ran in
 * 13–17 ms when the JS thread slept until the work was nearly done and in 20–45 ms when it awaited at once.
 *
 * {@link GpuWaiter} keeps, per kind of work, an estimate of how long a submit takes to finish; it sleeps on a plain
 * timer (no GPU promise pending, so no polling, and the event loop stays free) for most of that time and only then
 * awaits the GPU promise. The estimate follows what it observes: the first wait of a kind teaches nothing (it
 * includes what the driver does on a pipeline's first use: lavapipe compiles shaders then, which took seconds where
 * the step itself takes milliseconds, and an estimate learned from it made every later step sleep seconds); a wait
 * that finds the work already done on waking halves it (timers fire late, so sleeping longer than needed must not
 * feed back into the estimate, and how much earlier the work finished is unknown); a wait that has to poll sets it
 * to the time observed. On a real GPU, or in a browser, nothing
 * competes for the GPU's time and waits are short, so the default there is to await at once.
 * @module
 */
import { isSoftwareAdapter, type DeviceInfo } from '../device.js';

/** How {@link GpuWaiter} waits. */
export type GpuWaitMode =
  /** Sleep on a timer for most of the expected time, then await the GPU promise (for dawn.node on software devices). */
  | 'sleep-then-poll'
  /** Await the GPU promise at once. */
  | 'poll';

/** Options of {@link GpuWaiter}. */
export interface GpuWaiterOptions {
  /** How to wait. Default: {@link defaultGpuWaitMode}. */
  readonly mode?: GpuWaitMode;
  /** Share of the expected time spent sleeping before the GPU promise is awaited (0 < f < 1). Default 0.9. */
  readonly sleepFraction?: number;
  /**
   * Work expected to take less than this many milliseconds is awaited at once. Default 4: a timer fires ~1 ms late,
   * and on lavapipe short steps (small dispatches that keep few of its threads busy) gained nothing from sleeping.
   */
  readonly minSleepMs?: number;
}

/**
 * The default wait mode for a device: `sleep-then-poll` for dawn.node (which busy-polls) on a software adapter,
 * `poll` otherwise.
 */
export function defaultGpuWaitMode(info: Pick<DeviceInfo, 'backend' | 'adapter'>): GpuWaitMode {
  const software = isSoftwareAdapter(info.adapter) || info.adapter.isFallbackAdapter;
  return info.backend === 'node-dawn' && software ? 'sleep-then-poll' : 'poll';
}

/** A GPU promise that resolves within this many milliseconds of being awaited found its work already done. */
const ALREADY_DONE_MS = 0.5;

/** Waits for GPU work the way {@link GpuWaitMode} says, learning per key how long the work takes. */
export class GpuWaiter {
  /** The wait mode. */
  readonly mode: GpuWaitMode;
  private readonly fraction: number;
  private readonly minSleepMs: number;
  private readonly expectedMs = new Map<string, number>();
  private readonly seen = new Set<string>();

  constructor(options: GpuWaiterOptions = {}) {
    this.mode = options.mode ?? 'poll';
    this.fraction = options.sleepFraction ?? 0.9;
    this.minSleepMs = options.minSleepMs ?? 4;
    if (!(this.fraction > 0 && this.fraction < 1)) throw new RangeError(`sleepFraction must be in (0, 1), got ${this.fraction}`);
    if (!(this.minSleepMs >= 0)) throw new RangeError(`minSleepMs must be ≥ 0, got ${this.minSleepMs}`);
  }

  /**
   * Awaits `done()` for work of kind `key` that was submitted at `submittedAt` (a `performance.now()` value). In
   * `sleep-then-poll` mode it first sleeps for the learned share of the expected time, then calls `done` (which
   * should return the GPU promise, e.g. a `mapAsync`), and records how long the work took.
   */
  async wait<T>(key: string, submittedAt: number, done: () => Promise<T>): Promise<T> {
    if (this.mode === 'poll') return done();
    const expected = this.expectedMs.get(key);
    let woke = -1;
    if (expected !== undefined && expected >= this.minSleepMs) {
      const sleep = this.fraction * expected - (performance.now() - submittedAt);
      if (sleep >= 1) {
        await new Promise<void>((resolve) => setTimeout(resolve, sleep));
        woke = performance.now() - submittedAt;
      }
    }
    const result = await done();
    const took = performance.now() - submittedAt;
    if (!this.seen.has(key)) {
      this.seen.add(key); // the first wait of a kind is a warm-up (see the module comment): learn nothing from it
      return result;
    }
    // Work found finished on waking took at most `woke` (timers fire late, so the sleep itself says little): probe
    // at half of it. Work that had to be polled for took about `took`: a shorter time is taken at once, a longer one only a
    // quarter of the way (one slow step on a busy machine must not make the next steps oversleep; sleeping too long
    // costs latency, polling only costs some throughput).
    const alreadyDone = woke >= 0 && took - woke < ALREADY_DONE_MS;
    const next = alreadyDone ? 0.5 * Math.min(expected!, woke) : expected === undefined || took < expected ? took : expected + (took - expected) / 4;
    this.expectedMs.set(key, next);
    return result;
  }

  /** The learned time of `key` in milliseconds (undefined before its second wait: the first is a warm-up). */
  expected(key: string): number | undefined {
    return this.expectedMs.get(key);
  }
}
