/**
 * Host-side work that tests bound by bytes and calls but never time: tokenizer encoding, the rewrite driver on a deep
 * graph, and rejecting a file whose header claims a giant model. Median milliseconds of a few runs, measured here
 * (`npm run bench` prints them) rather than asserted in tests, where a loaded machine would make them flaky.
 */
import { resolve } from 'node:path';
import { GraphBuilder } from '../src/ir/builder.js';
import { runPasses } from '../src/passes/pipeline.js';
import { Llama2cTokenizer, parseLlama2cCheckpoint } from '../src/frontends/llama2c/index.js';

/** One timed host task. */
export interface HostBenchRow {
  /** What was timed. */
  readonly case: string;
  /** Median milliseconds. */
  readonly ms: number;
  /** Runs measured. */
  readonly runs: number;
}

function medianMs(runs: number, f: () => void): number {
  f(); // warm-up
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    f();
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[Math.floor(runs / 2)];
}

/** Runs the host benchmarks; `sharedDir` holds the Llama 2 tokenizer (skipped when absent). */
export async function runHostBench(o: { quick: boolean; sharedDir: string }): Promise<HostBenchRow[]> {
  const runs = o.quick ? 3 : 9;
  const rows: HostBenchRow[] = [];
  try {
    const tok = await Llama2cTokenizer.fromFile(resolve(o.sharedDir, 'models/llama2-tokenizer/tokenizer.bin'), 32000);
    const text = 'Once upon a time, there was a little girl named Lily. She loved to play outside. 😀 café\n'.repeat(50);
    rows.push({ case: `llama2 tokenizer: encode ${text.length} chars`, ms: medianMs(runs, () => tok.encode(text)), runs });
  } catch {
    // ../shared absent: the tokenizer row is left out
  }
  const b = new GraphBuilder();
  let h = b.input('x', 'f32', [8]);
  for (let i = 0; i < 2500; i++) h = b.tanh(b.mul(h, 1));
  const g = b.build({ y: h });
  rows.push({ case: `O1 on a ${g.size}-node chain (verify after every pass)`, ms: medianMs(runs, () => runPasses(g, 'O1', { verify: true })), runs });
  const header = new Uint8Array(64);
  const dv = new DataView(header.buffer);
  [2 ** 30, 2 ** 31 - 1, 2 ** 30, 2 ** 20, 2 ** 10, -(2 ** 31), 2 ** 31 - 1].forEach((v, i) => dv.setInt32(4 * i, v, true));
  rows.push({
    case: 'reject a 64-byte llama2.c header claiming a giant model',
    ms: medianMs(runs, () => {
      try {
        parseLlama2cCheckpoint(header);
      } catch {
        // the typed error is what is timed
      }
    }),
    runs,
  });
  return rows;
}

/** The rows as a table. */
export function formatHostBench(rows: readonly HostBenchRow[]): string {
  return rows.map((r) => `  ${r.case.padEnd(64)} ${r.ms.toFixed(2).padStart(9)} ms`).join('\n');
}
