/**
 * Pruning masks: which weights a saliency score keeps, under a sparsity pattern.
 *
 * | pattern | unit | kept per unit |
 * | --- | --- | --- |
 * | `unstructured` | a row (`row` scope), a whole matrix (`layer`), or every pruned matrix together (`global`) | `round((1 − S) · size)` |
 * | `N:M` (`2:4`) | each group of M consecutive weights along K (a row of the stored `[N, K]` weight) | N (so S = 1 − N/M) |
 * | `block<B>` (`block4`) | B×B blocks of a matrix (`layer`), or of every pruned matrix together (`global`) | `round((1 − S) · blocks)` blocks |
 *
 * Within a unit the weights (or blocks, by the sum of their scores) of highest score are kept; ties go to the earlier
 * position, and a NaN score counts as −∞. A mask is 1 where the weight is kept.
 *
 * An N:M mask keeps exactly N weights per group, so the `sparsify-weights` pass (`--sparsity N:M`, magnitude) keeps
 * exactly the weights the mask kept once the pruned ones are zero. A `layer` block mask keeps exactly
 * `round(density · blocks)` blocks, as `--sparsity block<B>-<density>` with `density = 1 − S` does.
 * @module
 */
import { InputError } from '../errors.js';

/** A pruning pattern. */
export type PrunePattern = { readonly kind: 'unstructured' } | { readonly kind: 'nm'; readonly n: number; readonly m: number } | { readonly kind: 'block'; readonly block: number };

/** Which weights compete with each other (N:M patterns ignore it: each group is its own unit). */
export type PruneScope = 'row' | 'layer' | 'global';

/** The pattern names, for help texts. */
export const PRUNE_PATTERNS: readonly string[] = ['unstructured', '2:4', 'N:M', 'block<B>'];

/**
 * The pattern `spec` names: `unstructured`, `N:M` (`2:4`; 1 ≤ N < M ≤ 256) or `block<B>` (`block4`; 1 ≤ B ≤ 256).
 * @throws InputError for anything else.
 */
export function parsePrunePattern(spec: string): PrunePattern {
  const s = spec.trim().toLowerCase();
  if (s === 'unstructured') return { kind: 'unstructured' };
  const nm = /^(\d+):(\d+)$/.exec(s);
  if (nm) {
    const [n, m] = [Number(nm[1]), Number(nm[2])];
    if (!(m >= 2 && m <= 256 && n >= 1 && n < m)) throw new InputError(`--pattern ${spec}: N:M keeps N of every M weights; N must be 1..M-1 and M 2..256`);
    return { kind: 'nm', n, m };
  }
  const bl = /^block(\d+)$/.exec(s);
  if (bl) {
    const block = Number(bl[1]);
    if (!(block >= 1 && block <= 256)) throw new InputError(`--pattern ${spec}: block size must be 1..256`);
    return { kind: 'block', block };
  }
  throw new InputError(`--pattern '${spec}' is no pruning pattern; use ${PRUNE_PATTERNS.join(', ')} (e.g. 2:4, block4)`);
}

/** The pattern as written (`unstructured`, `2:4`, `block4`). */
export function patternName(p: PrunePattern): string {
  return p.kind === 'unstructured' ? 'unstructured' : p.kind === 'nm' ? `${p.n}:${p.m}` : `block${p.block}`;
}

/**
 * The sparsity a pattern prunes to: `sparsity` itself, which must lie in [0, 1); for N:M, `1 − N/M`, and a
 * `sparsity` given with it must equal that.
 * @throws InputError for a sparsity outside [0, 1), missing where the pattern needs one, or disagreeing with N:M.
 */
export function patternSparsity(p: PrunePattern, sparsity: number | undefined): number {
  if (sparsity !== undefined && !(Number.isFinite(sparsity) && sparsity >= 0 && sparsity < 1)) throw new InputError(`--sparsity must be in [0, 1), got ${sparsity}`);
  if (p.kind === 'nm') {
    const implied = 1 - p.n / p.m;
    if (sparsity !== undefined && Math.abs(sparsity - implied) > 1e-9) throw new InputError(`--sparsity ${sparsity} disagrees with --pattern ${p.n}:${p.m}, which prunes ${implied} of the weights`);
    return implied;
  }
  if (sparsity === undefined) throw new InputError(`--pattern ${patternName(p)} needs --sparsity S (the share of weights pruned, in [0, 1))`);
  return sparsity;
}

/** One matrix to mask: its name, stored shape `[rows, cols]` (`[N, K]`) and one score per weight (row-major). */
export interface ScoredMatrix {
  /** Weight name (for errors). */
  readonly name: string;
  /** Output channels N. */
  readonly rows: number;
  /** Input channels K. */
  readonly cols: number;
  /** Saliency per weight: higher is kept first. */
  readonly scores: ArrayLike<number>;
}

/** A score with NaN as −∞. */
function scoreOf(v: number): number {
  return Number.isNaN(v) ? -Infinity : v;
}

/** Marks the `keep` best of `items` (indices into `score`) in `mark`. */
function keepBest(items: number[], score: (i: number) => number, keep: number, mark: (i: number) => void): void {
  items.sort((a, b) => score(b) - score(a) || a - b);
  for (let i = 0; i < keep; i++) mark(items[i]);
}

/** Block scores (sums) of one matrix, block-row-major. */
function blockScores(w: ScoredMatrix, B: number): Float64Array {
  const C = w.cols / B;
  const out = new Float64Array((w.rows / B) * C);
  for (let r = 0; r < w.rows; r++) for (let c = 0; c < w.cols; c++) out[Math.floor(r / B) * C + Math.floor(c / B)] += scoreOf(w.scores[r * w.cols + c]);
  return out;
}

/** Sets the mask of every weight in kept block `b` of `w`. */
function markBlock(mask: Uint8Array, w: ScoredMatrix, B: number, b: number): void {
  const C = w.cols / B;
  const [br, bc] = [Math.floor(b / C), b % C];
  for (let i = 0; i < B; i++) mask.fill(1, (br * B + i) * w.cols + bc * B, (br * B + i) * w.cols + bc * B + B);
}

/**
 * The masks (1 = kept) of `weights` under `pattern` at `sparsity` (see the module comment), in order.
 * @throws InputError for a sparsity outside [0, 1), a shape the pattern does not tile (M not dividing K, B not
 * dividing both dims), a score array of the wrong length, or the `row` scope with a block pattern.
 */
export function selectMasks(weights: readonly ScoredMatrix[], pattern: PrunePattern, sparsity: number, scope: PruneScope = 'layer'): Uint8Array[] {
  const s = patternSparsity(pattern, pattern.kind === 'nm' ? undefined : sparsity);
  for (const w of weights) {
    if (w.scores.length !== w.rows * w.cols) throw new InputError(`weight '${w.name}': ${w.scores.length} scores for [${w.rows}, ${w.cols}]`);
    if (pattern.kind === 'nm' && w.cols % pattern.m !== 0) throw new InputError(`--pattern ${pattern.n}:${pattern.m}: weight '${w.name}' has rows of ${w.cols} (K), not a multiple of M = ${pattern.m}`);
    if (pattern.kind === 'block' && (w.rows % pattern.block !== 0 || w.cols % pattern.block !== 0))
      throw new InputError(`--pattern block${pattern.block}: weight '${w.name}' is [${w.rows}, ${w.cols}] (N, K), not divisible into ${pattern.block}x${pattern.block} blocks`);
  }
  const masks = weights.map((w) => new Uint8Array(w.rows * w.cols));
  const keepOf = (count: number): number => Math.round((1 - s) * count);

  if (pattern.kind === 'nm') {
    const { n, m } = pattern;
    weights.forEach((w, wi) => {
      for (let g = 0; g < w.scores.length; g += m)
        keepBest(Array.from({ length: m }, (_v, i) => g + i), (i) => scoreOf(w.scores[i]), n, (i) => (masks[wi][i] = 1));
    });
    return masks;
  }
  if (pattern.kind === 'block') {
    const B = pattern.block;
    if (scope === 'row') throw new InputError(`--scope row applies to unstructured pruning, not block${B}`);
    const scores = weights.map((w) => blockScores(w, B));
    if (scope === 'layer')
      weights.forEach((w, wi) => keepBest(Array.from(scores[wi].keys()), (b) => scores[wi][b], keepOf(scores[wi].length), (b) => markBlock(masks[wi], w, B, b)));
    else {
      // global: every block of every matrix in one ranking, ties to the earlier matrix
      const offsets = scores.map((_s, i) => scores.slice(0, i).reduce((a, x) => a + x.length, 0));
      const all = scores.flatMap((sc, wi) => Array.from(sc.keys(), (b) => offsets[wi] + b));
      const locate = (k: number): [number, number] => {
        let wi = 0;
        while (wi + 1 < offsets.length && offsets[wi + 1] <= k) wi++;
        return [wi, k - offsets[wi]];
      };
      const flat = new Float64Array(all.length);
      scores.forEach((sc, wi) => flat.set(sc, offsets[wi]));
      keepBest(all, (k) => flat[k], keepOf(all.length), (k) => {
        const [wi, b] = locate(k);
        markBlock(masks[wi], weights[wi], B, b);
      });
    }
    return masks;
  }
  // unstructured
  if (scope === 'row')
    weights.forEach((w, wi) => {
      for (let r = 0; r < w.rows; r++) keepBest(Array.from({ length: w.cols }, (_v, c) => r * w.cols + c), (i) => scoreOf(w.scores[i]), keepOf(w.cols), (i) => (masks[wi][i] = 1));
    });
  else if (scope === 'layer') weights.forEach((w, wi) => keepBest(Array.from({ length: w.scores.length }, (_v, i) => i), (i) => scoreOf(w.scores[i]), keepOf(w.scores.length), (i) => (masks[wi][i] = 1)));
  else {
    const offsets: number[] = [];
    let total = 0;
    for (const w of weights) {
      offsets.push(total);
      total += w.scores.length;
    }
    const flat = new Float64Array(total);
    weights.forEach((w, wi) => {
      for (let i = 0; i < w.scores.length; i++) flat[offsets[wi] + i] = scoreOf(w.scores[i]);
    });
    const keep = new Uint8Array(total);
    keepBest(Array.from({ length: total }, (_v, i) => i), (i) => flat[i], keepOf(total), (i) => (keep[i] = 1));
    weights.forEach((w, wi) => masks[wi].set(keep.subarray(offsets[wi], offsets[wi] + w.scores.length)));
  }
  return masks;
}
