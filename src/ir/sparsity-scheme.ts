/**
 * Weight sparsity patterns as users name them (`--sparsity 2:4`, `block32-0.1`), parsed once into a
 * {@link SparsityScheme} that the `sparsify-weights` pass applies (magnitude pruning):
 *
 * | name | pattern |
 * | --- | --- |
 * | `none` | dense |
 * | `N:M` (`2:4`, `1:4`, `4:8`) | of every M consecutive values along K, the N of largest magnitude are kept |
 * | `block<B>-<density>` (`block32-0.1`, `block16-25%`) | B×B blocks; the given fraction of blocks, those of largest norm, is kept |
 * @module
 */
import { InputError } from '../errors.js';

/** A magnitude-pruning pattern. */
export type SparsityScheme = NMSparsity | BlockSparsity;

/** N:M sparsity: at most `n` non-zeros in every group of `m` consecutive weights along K. */
export interface NMSparsity {
  /** Discriminant. */
  readonly kind: 'nm';
  /** The spec as written on the command line (`2:4`). */
  readonly name: string;
  /** Non-zeros kept per group. */
  readonly n: number;
  /** Group length along K. */
  readonly m: number;
}

/** Block sparsity: square `block`×`block` tiles, a `density` fraction of them kept. */
export interface BlockSparsity {
  /** Discriminant. */
  readonly kind: 'block';
  /** The spec as written on the command line (`block32-10%`). */
  readonly name: string;
  /** Tile edge in weights. */
  readonly block: number;
  /** Fraction of tiles kept, in (0, 1]. */
  readonly density: number;
}

/** Patterns named in help texts. */
export const SPARSITY_SCHEMES: readonly string[] = ['none', '2:4', '1:4', '4:8', 'N:M', 'block<B>-<density>'];

/**
 * The pattern `spec` names, or `undefined` for `none`.
 * @throws InputError for a name that is no pattern, or N:M / block sizes / densities out of range.
 */
export function parseSparsityScheme(spec: string): SparsityScheme | undefined {
  const s = spec.trim().toLowerCase();
  if (s === 'none' || s === '') return undefined;
  const bad = (why: string): InputError => new InputError(`--sparsity '${spec}' ${why}; use none, N:M (2:4, 1:4, 4:8) or block<B>-<density> (block32-0.1, block16-25%)`);
  const nm = /^(\d+):(\d+)$/.exec(s);
  if (nm) {
    const [n, m] = [Number(nm[1]), Number(nm[2])];
    if (!(m >= 2 && m <= 256 && n >= 1 && n < m)) throw bad(`keeps ${n} of ${m}: N must be 1..M-1 and M 2..256`);
    return { kind: 'nm', name: s, n, m };
  }
  const bl = /^block(\d+)-(\d*\.?\d+)(%?)$/.exec(s);
  if (bl) {
    const block = Number(bl[1]);
    const density = Number(bl[2]) / (bl[3] ? 100 : 1);
    if (!(block >= 1 && block <= 256)) throw bad(`has block size ${block}, not 1..256`);
    if (!(density > 0 && density <= 1)) throw bad(`has density ${bl[2]}${bl[3]}, not in (0, 1]`);
    return { kind: 'block', name: s, block, density };
  }
  throw bad('is no sparsity pattern');
}
