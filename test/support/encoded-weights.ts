// What the encoded-weight kernel tests (dequant, codebook, N:M and block sparse) share: an element-wise comparison
// with the CPU reference, and a chunked decode of a whole model on WebGPU against the CPU reference's logits.
import { expect } from 'vitest';
import type { CpuCausalLM } from '../../src/runtime/cpu/lm.js';

/** Every element of `got` within 1e-4 (absolute plus relative) of the CPU reference's `want`. */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const tol = 1e-4 + 1e-4 * Math.abs(want[i]);
    if (!(Math.abs(got[i] - want[i]) <= tol)) expect.fail(`${what}: element ${i}: got ${got[i]}, want ${want[i]}`);
  }
}

/** A WebGPU session's steps: a chunk of tokens in, the last position's logits out. */
interface LogitsSession {
  step(tokens: number[], sampling: { temperature: number; topp: number; coin: number }): Promise<unknown>;
  lastLogits(): Promise<ArrayLike<number>>;
}

/**
 * Feeds the same chunks (a chunked prefill of 11 tokens, then 1, 2 and 1) to `session` and to the CPU reference and
 * expects the last logits within 1e-3 after each.
 */
export async function expectDecodeMatchesCpu(session: LogitsSession, cpu: CpuCausalLM): Promise<void> {
  for (const chunk of [[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41], [3], [4, 8], [60]]) {
    await session.step(chunk, { temperature: 0, topp: 0.9, coin: 0 });
    const got = await session.lastLogits();
    const want = cpu.step(chunk);
    let diff = 0;
    for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(got[i] - want[i]));
    expect(diff, `after ${chunk.length} token(s)`).toBeLessThan(1e-3);
  }
}
