// The file fuzzer (scripts/fuzz-files, also `npm run fuzz:files`) over every input format: mutated llama2.c
// checkpoints and tokenizers, GGUF files, Hugging Face folders, ONNX models and engine folders, each loaded as a user
// loads it, must load or fail with a TensorwrightError: no other exception, no hang, no allocation beyond the budget.
// FUZZ_FILE_RUNS (default 300 per format) and FUZZ_FILE_SEED override the size and the seed of the run.
import { afterAll, describe, expect, it } from 'vitest';
import { FUZZ_FORMATS } from '../scripts/fuzz-files/corpus.js';
import { FileFuzzer, type FileFuzzSummary } from '../scripts/fuzz-files/harness.js';

const runs = Number(process.env.FUZZ_FILE_RUNS ?? 300);
const seed = Number(process.env.FUZZ_FILE_SEED ?? 20261205);

// the slow seeds (a 32000-piece tokenizer, the largest ONNX graphs) are left to `npm run fuzz:files`
const fuzzer = new FileFuzzer({ workers: 2, corpus: 'quick' });
afterAll(() => fuzzer.close());

/** Every failure class with the case that shows it and the command that reproduces it. */
function report(s: FileFuzzSummary): string {
  return [
    `${s.format} (seed ${s.seed}): ${s.crashes} crashes, ${s.hangs} hangs, ${s.over_budget} over budget in ${s.runs} runs`,
    ...s.failures.map((f) => `${f.kind} x${f.count}: ${f.signature}\n  case ${f.first.index} (${f.first.seedName}): ${f.first.description.join('; ')}\n  ${f.first.error}\n  reproduce: npm run fuzz:files -- --format ${s.format} --seed ${s.seed} --only ${f.first.index}`),
  ].join('\n');
}

describe('fuzzing every input format', () => {
  for (const format of FUZZ_FORMATS) {
    it(`${format}: ${runs} mutated files each load or throw a typed error (seed ${seed})`, async () => {
      const s = await fuzzer.run(format, runs, seed);
      const detail = report(s);
      expect(s.crashes, detail).toBe(0);
      expect(s.hangs, detail).toBe(0);
      expect(s.over_budget, detail).toBe(0);
      expect(s.ok + s.typed_errors).toBe(runs);
      // the mutations reach past the headers: some files still load, and the others fail in more than one place
      expect(s.ok, `${format}: no mutated file loaded`).toBeGreaterThan(0);
      expect(s.typed_errors, `${format}: every mutated file loaded`).toBeGreaterThan(0);
    }, 180_000);
  }
});
