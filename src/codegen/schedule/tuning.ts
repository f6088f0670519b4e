/**
 * Tuned schedule choices: where a family's schedule rules meet measurements. A tunable family lists the candidate
 * variants its rules allow for a kernel signature (the family, the shape and the form it computes, never the graph's
 * names), and {@link chooseScheduledVariant} picks one of them:
 *
 * - `tuned`: a timing table (`compile --tune`, or a timing cache found on disk) measured this signature on this
 *   device and holds one of today's candidates;
 * - `explore`: the tuner's round `r` asks for candidate `r` of every signature the table does not hold yet (signatures
 *   with fewer candidates keep their rule's pick), and times what the round's engine runs;
 * - `heuristic`: otherwise, the rule's own pick (always candidate 0).
 *
 * A table entry naming a variant that is no longer a candidate (the generator changed, a stale cache) is ignored:
 * the heuristic pick stands, so a timing cache can never select a kernel the rules would not allow.
 * @mergeModuleWith compile
 * @module
 */
import type { KernelSchedule } from '../../runtime/kernel-source.js';

/** What a compile knows of tuning: a table of measured picks, and, for the tuner's rounds, which candidate to try. */
export interface TuningRequest {
  /** Measured picks: kernel signature → the chosen variant's canonical JSON ({@link variantKey}). */
  readonly table?: ReadonlyMap<string, string>;
  /** Tuner round: try candidate `explore` of every signature missing from `table` (when it has that many). */
  readonly explore?: number;
}

/** Canonical JSON of a variant (keys sorted), the form timing tables store. */
export function variantKey(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}

/**
 * The signature of a tunable kernel: its family and the spec fields that decide its code (functions, such as an
 * epilogue's expression builder, are written out as the text they produce for placeholder arguments; `nodes` and
 * other labels are left out).
 */
export function kernelSignature(family: string, spec: object): string {
  const plain = (x: unknown): unknown => {
    if (typeof x === 'function') return `fn:${String((x as (a: string, l: (i: number) => string) => string)('ACC', (i) => `L${i}`))}`;
    if (Array.isArray(x)) return x.map(plain);
    if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x as Record<string, unknown>).filter(([k]) => k !== 'nodes').map(([k, v]) => [k, plain(v)]));
    return x;
  };
  return `${family}:${variantKey(plain(spec))}`;
}

/** A tunable kernel's chosen variant and how it was chosen. */
export interface ScheduledVariant<V> {
  /** The variant with its tuning. */
  readonly variant: V;
  /** Who chose it, recorded in the kernel. */
  readonly schedule: KernelSchedule;
}

/**
 * Picks the variant of a tunable kernel: `heuristic` is the schedule rule's pick and `candidates` lists the others its
 * rules allow (the heuristic is made candidate 0 and duplicates are dropped). The list is only built when `tuning`
 * asks for anything, so a plain compile pays nothing for it.
 */
export function chooseScheduledVariant<V>(signature: string, heuristic: V, candidates: () => readonly V[], tuning: TuningRequest | undefined): ScheduledVariant<V> {
  if (!tuning || (tuning.explore === undefined && !tuning.table?.has(signature))) return { variant: heuristic, schedule: { source: 'heuristic', signature, variant: variantKey(heuristic), candidate: 0 } };
  const list: V[] = [heuristic];
  const keys = [variantKey(heuristic)];
  for (const c of candidates()) {
    const k = variantKey(c);
    if (!keys.includes(k)) {
      keys.push(k);
      list.push(c);
    }
  }
  const at = (i: number, source: KernelSchedule['source']): ScheduledVariant<V> => ({ variant: list[i], schedule: { source, signature, variant: keys[i], candidate: i, candidates: list.length } });
  const tuned = tuning.table?.get(signature);
  if (tuned !== undefined) {
    const i = keys.indexOf(tuned);
    if (i >= 0) return at(i, 'tuned');
  }
  if (tuning.explore !== undefined && tuned === undefined && tuning.explore < list.length) return at(tuning.explore, 'explore');
  return at(0, 'heuristic');
}
