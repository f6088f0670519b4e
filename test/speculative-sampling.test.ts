// Speculative decoding's exact rejection sampling (#14 item 4): a chi-square goodness-of-fit test of the tokens a
// speculative run produces against the target's exact distribution, on small Markov-chain models where that
// distribution is known in closed form and where tens of thousands of runs are cheap; plus power checks: wrong
// acceptance rules (a misreported draft distribution, a residual ignored) are detected by the same test.
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/util/random.js';
import { samplingProbabilities, type SamplingOptions } from '../src/runtime/sampling.js';
import { speculativeGenerate, type SpeculativeTarget } from '../src/runtime/speculative/speculative-generate.js';
import { ModelDrafter, type DraftModel } from '../src/runtime/speculative/model-drafter.js';
import { NgramDrafter } from '../src/runtime/speculative/ngram-drafter.js';
import type { Drafter } from '../src/runtime/speculative/drafter.js';
import { verifyDraft } from '../src/runtime/speculative/rejection-sampling.js';
import { chiSquareTest } from './support/chi-square.js';

const V = 4;
const GENERATED = 4; // tokens per run whose joint distribution is tested (V^4 = 256 cells)
const RUNS = 24_000;
const ALPHA = 1e-4; // false failure at most this likely (the seeds are fixed, so the outcome is too)

/** Logits of a Markov chain: row `prev` of a seeded random table (the next token depends on the last one only). */
function markovTable(seed: number, scale: number): Float32Array[] {
  const r = new Rng(seed);
  return Array.from({ length: V }, () => Float32Array.from({ length: V }, () => r.normal() * scale));
}

/** A Markov chain as a speculative target: rows of logits after each token; its "KV cache" is the token list. */
function markovTarget(table: Float32Array[]): SpeculativeTarget & { verifies: number } {
  let tokens: number[] = [];
  const t = {
    vocabSize: V,
    maxPositions: 1 << 20,
    maxVerifyTokens: 9,
    verifies: 0,
    get position() {
      return tokens.length;
    },
    reset: () => {
      tokens = [];
    },
    prefill: (xs: readonly number[]) => {
      tokens.push(...xs);
      return Float32Array.from(table[xs[xs.length - 1]]);
    },
    verify: (xs: readonly number[]) => {
      t.verifies++;
      tokens.push(...xs);
      const out = new Float32Array(xs.length * V);
      xs.forEach((x, i) => out.set(table[x], i * V));
      return out;
    },
    truncate: (n: number) => {
      expect(n).toBeLessThanOrEqual(tokens.length);
      tokens.length = n;
    },
  };
  return t;
}

/** A Markov chain as a draft model (its cache length is tracked so the drafter's rollback is exercised). */
function markovDraftModel(table: Float32Array[]): DraftModel {
  let tokens: number[] = [];
  return {
    get position() {
      return tokens.length;
    },
    maxPositions: 1 << 20,
    reset: () => {
      tokens = [];
    },
    truncate: (n) => {
      expect(n).toBeLessThanOrEqual(tokens.length);
      tokens.length = n;
    },
    stepLogits: (xs) => {
      tokens.push(...xs);
      return Float32Array.from(table[xs[xs.length - 1]]);
    },
  };
}

/**
 * Samples the draft model's distribution but reports the uniform one: the acceptance test then uses the wrong q.
 * (Reporting no distribution at all would not be wrong: keeping x with p(x) and drawing the rest from p without x is
 * exact for any x, however it was chosen.)
 */
class MisreportingDrafter implements Drafter {
  readonly kind = 'misreporting';
  constructor(private readonly inner: ModelDrafter) {}
  reset(): void {
    this.inner.reset();
  }
  async draft(...args: Parameters<Drafter['draft']>) {
    const d = await this.inner.draft(...args);
    return { tokens: d.tokens, probs: d.tokens.map(() => new Float32Array(V).fill(1 / V)) };
  }
}

type Settings = Omit<SamplingOptions, 'seed'>;

/** The exact probability of each sequence of GENERATED tokens after `last`, as `tokens.join(',')` keys. */
function exactJoint(table: Float32Array[], last: number, s: Settings): Map<string, number> {
  const rows = table.map((row) => samplingProbabilities(row, s));
  const out = new Map<string, number>();
  const walk = (prev: number, prefix: number[], p: number): void => {
    if (prefix.length === GENERATED) {
      out.set(prefix.join(','), p);
      return;
    }
    for (let v = 0; v < V; v++) if (rows[prev][v] > 0) walk(v, [...prefix, v], p * rows[prev][v]);
  };
  walk(last, [], 1);
  return out;
}

async function sampleJoint(target: SpeculativeTarget, drafter: Drafter, prompt: number[], s: Settings, draftLength: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let seed = 1; seed <= RUNS; seed++) {
    const r = await speculativeGenerate(target, drafter, prompt, { ...s, seed, steps: prompt.length + GENERATED - 1, stopTokens: [], draftLength });
    expect(r.generated.length).toBe(GENERATED);
    const key = r.generated.join(',');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

function test(counts: Map<string, number>, exact: Map<string, number>) {
  return chiSquareTest(counts, new Map([...exact].map(([k, p]) => [k, p * RUNS])));
}

const target = markovTable(11, 1.2);
const draftTable = markovTable(12, 1.2); // a different chain: many rejections
const prompt = [0, 1, 2, 3, 0, 1];
const SETTINGS: Settings[] = [
  { temperature: 1, topp: 1, topk: 0 },
  { temperature: 0.7, topp: 0.9, topk: 3 },
];

describe('speculative decoding keeps the target distribution (Markov chains, chi-square)', () => {
  for (const s of SETTINGS) {
    const name = `T=${s.temperature} top-p=${s.topp} top-k=${s.topk}`;
    it(`draft model (sampled drafts, rejections and residual draws), ${name}`, async () => {
      const t = markovTarget(target);
      const counts = await sampleJoint(t, new ModelDrafter(markovDraftModel(draftTable)), prompt, s, 2);
      const r = test(counts, exactJoint(target, prompt[prompt.length - 1], s));
      expect(r.df).toBeGreaterThan(10);
      expect(r.p, JSON.stringify(r)).toBeGreaterThan(ALPHA);
      // speculation happened: fewer target steps than tokens after the first
      expect(t.verifies).toBeLessThan(RUNS * (GENERATED - 1));
    }, 120_000);
    it(`n-gram drafts (deterministic drafts), ${name}`, async () => {
      const counts = await sampleJoint(markovTarget(target), new NgramDrafter(), prompt, s, 3);
      const r = test(counts, exactJoint(target, prompt[prompt.length - 1], s));
      expect(r.p, JSON.stringify(r)).toBeGreaterThan(ALPHA);
    }, 120_000);
  }

  it('power check: a wrong acceptance rule (the draft distribution misreported as uniform) is detected', async () => {
    const s = SETTINGS[0];
    const counts = await sampleJoint(markovTarget(target), new MisreportingDrafter(new ModelDrafter(markovDraftModel(draftTable))), prompt, s, 2);
    const r = test(counts, exactJoint(target, prompt[prompt.length - 1], s));
    expect(r.p, JSON.stringify(r)).toBeLessThan(ALPHA);
  }, 120_000);

  it('power check: the residual ignored (a rejection resamples the target instead of max(0, p - q)) is detected', async () => {
    // run the real rule and then, on every rejection, redraw from p: the distribution overweights the draft's picks less
    const s = SETTINGS[0];
    const rng = new Rng(5);
    const counts = new Map<string, number>();
    const p = target.map((row) => samplingProbabilities(row, s));
    const q = draftTable.map((row) => samplingProbabilities(row, s));
    const draw = (probs: Float32Array): number => {
      let c = rng.next();
      for (let v = 0; v < V; v++) if ((c -= probs[v]) < 0) return v;
      return V - 1;
    };
    for (let run = 0; run < RUNS; run++) {
      // one position: draft x ~ q(.|last), keep with min(1, p/q), else (wrongly) draw from p
      const last = prompt[prompt.length - 1];
      const x = draw(q[last]);
      const rows = Float32Array.from([...target[last], ...target[x]]);
      const o = verifyDraft(rows, V, { tokens: [x], probs: [q[last]] }, s, () => rng.next());
      const first = o.accepted === 1 ? x : draw(p[last]);
      counts.set(String(first), (counts.get(String(first)) ?? 0) + 1);
    }
    const exact = new Map(Array.from(p[prompt[prompt.length - 1]], (v, i) => [String(i), v * RUNS] as [string, number]));
    expect(chiSquareTest(counts, exact).p).toBeLessThan(ALPHA);
  }, 60_000);
});

describe('verifyDraft', () => {
  it('at temperature 0 keeps drafted tokens while they are the argmax, then returns the argmax', () => {
    const rows = Float32Array.from([0, 5, 1, 0, /* */ 0, 0, 9, 0, /* */ 3, 0, 0, 0, /* */ 0, 0, 0, 1]);
    expect(verifyDraft(rows, V, { tokens: [1, 2, 3] }, { temperature: 0, topp: 1 }, () => 0.5)).toEqual({ accepted: 2, next: 0 });
    expect(verifyDraft(rows, V, { tokens: [1, 2, 0] }, { temperature: 0, topp: 1 }, () => 0.5)).toEqual({ accepted: 3, next: 3 });
  });
  it('rejects a draft the target gives no probability (top-k cuts it) and draws from the rest', () => {
    const rows = Float32Array.from([4, 3, 0, 0, /* */ 0, 0, 0, 0]);
    for (const c of [0, 0.3, 0.99]) {
      const o = verifyDraft(rows, V, { tokens: [2] }, { temperature: 1, topp: 1, topk: 2 }, () => c);
      expect(o.accepted).toBe(0);
      expect([0, 1]).toContain(o.next);
    }
  });
  it('refuses rows that do not match the draft', () => {
    expect(() => verifyDraft(new Float32Array(V), V, { tokens: [1] }, { temperature: 0, topp: 1 }, () => 0)).toThrow(/2 rows/);
  });
});

describe('NgramDrafter', () => {
  it('proposes the continuation of the most recent match of the longest suffix, periodically past the end', () => {
    const d = new NgramDrafter();
    expect(d.draft([5, 6, 7, 8, 1, 6, 7, 9, 6, 7], 3).tokens).toEqual([9, 6, 7]); // "6 7" last seen before 9
    expect(d.draft([1, 2, 3, 1, 2, 3, 1, 2], 5).tokens).toEqual([3, 1, 2, 3, 1]);
    expect(d.draft([4, 4, 4], 3).tokens).toEqual([4, 4, 4]);
    expect(d.draft([1, 2, 3], 3).tokens).toEqual([]);
  });
});
