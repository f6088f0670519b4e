/**
 * Head windows: a slice of heads (axis 2 of a `[B, S, heads, D]` tensor) that a kernel reads in place from the wider
 * tensor, such as q, k or v of a merged QKV projection. Graph stages that decide to read in place (rope lowering,
 * paged-KV lowering) and the kernels that do it share this one definition.
 * @module
 */
import { isOp } from './attrs.js';
import type { Node } from './node.js';

/**
 * A window of heads inside a wider `[S, numHeads, D]` tensor: a head slice that a kernel reads in place.
 * @internal
 */
export interface HeadWindow {
  /** Heads per token in the wider tensor. */
  readonly numHeads: number;
  /** The wider tensor's head that is the window's head 0. */
  readonly firstHead: number;
}

/**
 * The head window `n` reads when it is a slice of heads (axis 2 of a rank-4 tensor, step 1, static bounds), such as
 * q, k or v of a merged QKV projection; `undefined` for any other node.
 * @internal
 */
export function headSliceWindow(n: Node): HeadWindow | undefined {
  if (!isOp(n, 'slice') || n.rank !== 4) return undefined;
  const { axes, starts, steps } = n.attrs;
  const total = n.inputs[0].shape[2];
  const heads = n.shape[2];
  const first = starts[0];
  if (axes.length !== 1 || axes[0] !== 2 || steps[0] !== 1 || typeof total !== 'number' || typeof heads !== 'number') return undefined;
  if (typeof first !== 'number' || !Number.isInteger(first) || first < 0 || first + heads > total) return undefined;
  return { numHeads: total, firstHead: first };
}
