// GpuWaiter: the host-side wait that keeps dawn.node from busy-polling for the whole of a GPU step. The "GPU work"
// here is a timer that resolves a fixed time after submit, so the tests check the waiter's logic, not a device. The
// clock is vitest's fake one (`setTimeout` and `performance`), so every time below is exact and the tests do not
// depend on how loaded the machine is.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { defaultGpuWaitMode, GpuWaiter } from '../src/runtime/webgpu/gpu-wait.js';
import { isSoftwareAdapter } from '../src/runtime/device.js';

/** Work that finishes `ms` after `submittedAt`; records when the waiter first asked for the GPU promise. */
function fakeWork(submittedAt: number, ms: number, calls: number[]): () => Promise<string> {
  return () => {
    calls.push(performance.now() - submittedAt);
    const left = submittedAt + ms - performance.now();
    if (left <= 0) return Promise.resolve('done'); // already finished: resolves at once, as Dawn does
    return new Promise((resolve) => setTimeout(() => resolve('done'), left));
  };
}

/** Runs the fake clock until every timer has fired, then returns what `p` resolved to. */
async function settle<T>(p: Promise<T>): Promise<T> {
  await vi.runAllTimersAsync();
  return p;
}

describe('GpuWaiter', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('in poll mode asks for the GPU promise at once and learns nothing', async () => {
    const w = new GpuWaiter({ mode: 'poll' });
    for (let i = 0; i < 3; i++) {
      const calls: number[] = [];
      const t = performance.now();
      expect(await settle(w.wait('k', t, fakeWork(t, 10, calls)))).toBe('done');
      expect(calls[0]).toBe(0);
    }
    expect(w.expected('k')).toBeUndefined();
  });

  it('in sleep-then-poll mode polls only after sleeping most of the learned time', async () => {
    const w = new GpuWaiter({ mode: 'sleep-then-poll' });
    // the first wait is a warm-up (a pipeline's first use includes the driver compiling it): 5 s, learned from nothing
    const warm: number[] = [];
    let t = performance.now();
    await settle(w.wait('step', t, fakeWork(t, 5000, warm)));
    expect(warm[0]).toBe(0);
    expect(w.expected('step')).toBeUndefined();
    const first: number[] = [];
    t = performance.now();
    await settle(w.wait('step', t, fakeWork(t, 30, first)));
    expect(first[0]).toBe(0); // nothing learned yet: await at once
    expect(w.expected('step')).toBe(30);
    const calls: number[] = [];
    t = performance.now();
    await settle(w.wait('step', t, fakeWork(t, 30, calls)));
    expect(calls[0]).toBeGreaterThanOrEqual(0.85 * 30 - 1); // slept before asking for the GPU promise
    expect(calls[0]).toBeLessThan(30);
    expect(w.expected('other')).toBeUndefined(); // keys learn separately
  });

  it('halves its estimate when the work is found done on waking, so late timers do not feed back', async () => {
    const w = new GpuWaiter({ mode: 'sleep-then-poll' });
    let t = performance.now();
    await settle(w.wait('k', t, fakeWork(t, 40, []))); // warm-up
    t = performance.now();
    await settle(w.wait('k', t, fakeWork(t, 40, [])));
    const learned = w.expected('k')!;
    // the work becomes much faster: every wait now finds it done and the estimate falls by at least the fraction
    let previous = learned;
    for (let i = 0; i < 4; i++) {
      t = performance.now();
      await settle(w.wait('k', t, fakeWork(t, 1, [])));
      const now = w.expected('k')!;
      expect(now).toBeLessThan(previous);
      previous = now;
    }
    expect(previous).toBeLessThan(0.1 * learned);
  });

  it('rises only a quarter of the way after one slow step', async () => {
    const w = new GpuWaiter({ mode: 'sleep-then-poll', minSleepMs: 1000 }); // never sleeps: every wait polls
    let t = performance.now();
    await settle(w.wait('k', t, fakeWork(t, 10, []))); // warm-up
    t = performance.now();
    await settle(w.wait('k', t, fakeWork(t, 10, [])));
    const base = w.expected('k')!;
    t = performance.now();
    await settle(w.wait('k', t, fakeWork(t, 90, [])));
    const after = w.expected('k')!;
    expect(after).toBeGreaterThan(base);
    expect(after).toBeLessThan(base + (90 - base) / 2);
  });

  it('passes rejections through', async () => {
    const w = new GpuWaiter({ mode: 'sleep-then-poll' });
    await expect(w.wait('k', 0, () => Promise.reject(new Error('device lost')))).rejects.toThrow('device lost');
  });

  it('checks its options', () => {
    expect(() => new GpuWaiter({ sleepFraction: 1 })).toThrow(RangeError);
    expect(() => new GpuWaiter({ minSleepMs: -1 })).toThrow(RangeError);
  });

  it('defaults to sleep-then-poll only for dawn.node on a software adapter', () => {
    const lavapipe = { vendor: 'mesa', architecture: '', device: 'llvmpipe (LLVM 15.0.6, 256 bits)', description: 'llvmpipe: Mesa 25.0.7', isFallbackAdapter: false };
    const gpu = { vendor: 'nvidia', architecture: 'hopper', device: 'NVIDIA H100', description: 'NVIDIA driver', isFallbackAdapter: false };
    expect(isSoftwareAdapter(lavapipe)).toBe(true);
    expect(isSoftwareAdapter(gpu)).toBe(false);
    expect(isSoftwareAdapter({ architecture: 'software' })).toBe(true);
    expect(defaultGpuWaitMode({ backend: 'node-dawn', adapter: lavapipe })).toBe('sleep-then-poll');
    expect(defaultGpuWaitMode({ backend: 'node-dawn', adapter: { ...gpu, isFallbackAdapter: true } })).toBe('sleep-then-poll');
    expect(defaultGpuWaitMode({ backend: 'node-dawn', adapter: gpu })).toBe('poll');
    expect(defaultGpuWaitMode({ backend: 'browser', adapter: lavapipe })).toBe('poll');
  });
});
