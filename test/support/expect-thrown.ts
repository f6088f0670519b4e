/**
 * `expect(fn).toThrow(Type)` that hands back the error, for checks of its fields.
 * @module
 */
import { expect } from 'vitest';

/**
 * Calls `fn`, expects it to throw an instance of `type` (`what` labels the assertion), and returns the error.
 */
export function expectThrown<E extends Error>(fn: () => unknown, type: abstract new (...args: never[]) => E, what?: string): E {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, what).toBeInstanceOf(type);
  return err as E;
}
