/**
 * `npm run fuzz:files -- --format F --runs N --seed S [--json] [--only K] [--workers W] [--timeout-ms T] [--quick]`:
 * the file fuzzer over every input format (`llama2c`, `llama2c-tokenizer`, `gguf`, `safetensors`, `onnx`, `engine`,
 * or `all`). With `--json` it prints one object per format, `{format, runs, ok, typed_errors, crashes, hangs,
 * max_rss_mb, seed, over_budget, failures, seconds}`; otherwise a readable summary, with each class of crash, hang or
 * budget violation, the case that showed it and the command that reproduces it. Exits 1 when anything crashed, hung
 * or went over its memory budget.
 * @module
 */
import { FUZZ_FORMATS, type FuzzFormat } from './fuzz-files/corpus.js';
import { FileFuzzer, type FileFuzzSummary } from './fuzz-files/harness.js';
import type { ResultMessage } from './fuzz-files/protocol.js';

function usage(msg: string): never {
  process.stderr.write(`fuzz:files: ${msg}\nusage: npm run fuzz:files -- --format ${[...FUZZ_FORMATS, 'all'].join('|')} [--runs N] [--seed S] [--only K] [--workers W] [--timeout-ms T] [--quick] [--json]\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith('--')) usage(`--${name} needs a value`);
  return v;
};
const int = (name: string, dflt: number): number => {
  const v = opt(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) usage(`--${name} must be a non-negative integer, got ${v}`);
  return n;
};
const known = new Set(['--format', '--runs', '--seed', '--only', '--workers', '--timeout-ms', '--json', '--quick']);
for (const a of args) if (a.startsWith('--') && !known.has(a)) usage(`unknown option ${a}`);

const format = opt('format') ?? usage('--format is required');
if (format !== 'all' && !(FUZZ_FORMATS as readonly string[]).includes(format)) usage(`unknown format ${format}`);
const formats: FuzzFormat[] = format === 'all' ? [...FUZZ_FORMATS] : [format as FuzzFormat];
const runs = int('runs', 1000);
const seed = int('seed', 1);
const only = opt('only') === undefined ? undefined : int('only', 0);
const json = args.includes('--json');

function report(s: FileFuzzSummary): string {
  const lines = [
    `${s.format}: ${s.runs} runs in ${s.seconds} s (seed ${s.seed}): ${s.ok} ok, ${s.typed_errors} typed errors, ${s.crashes} crashes, ${s.hangs} hangs, ${s.over_budget} over budget; max RSS ${s.max_rss_mb} MiB`,
  ];
  for (const f of s.failures) {
    lines.push(`  ${f.kind.toUpperCase()} x${f.count}: ${f.signature}`);
    lines.push(`    first: case ${f.first.index} (seed file ${f.first.seedName})`);
    for (const d of f.first.description) lines.push(`      ${d}`);
    lines.push(`    error: ${f.first.error}`);
    if (only !== undefined && f.first.stack) lines.push(...f.first.stack.split('\n').slice(1, 12).map((l) => `      ${l.trim()}`));
    lines.push(`    reproduce: npm run fuzz:files -- --format ${s.format} --seed ${s.seed} --only ${f.first.index}`);
  }
  return lines.join('\n');
}

const fuzzer = new FileFuzzer({ workers: int('workers', 2), timeoutMs: int('timeout-ms', 5000), corpus: args.includes('--quick') ? 'quick' : 'full' });
let bad = false;
try {
  for (const f of formats) {
    // one case: say what it was and how it ended, whatever the outcome
    const show =
      only === undefined || json
        ? undefined
        : (r: ResultMessage): void => {
            process.stdout.write(`case ${r.index} (seed file ${r.seedName}): ${r.outcome} in ${r.ms.toFixed(0)} ms\n${r.description.map((d) => `  ${d}\n`).join('')}`);
            if (r.error) process.stdout.write(`  ${r.outcome === 'crash' && r.error.stack ? r.error.stack : `${r.error.name}: ${r.error.message}`}\n`);
          };
    const s = await fuzzer.run(f, runs, seed, only, show);
    bad ||= s.crashes + s.hangs + s.over_budget > 0;
    process.stdout.write(`${json ? JSON.stringify(s) : report(s)}\n`);
  }
} finally {
  fuzzer.close();
}
process.exit(bad ? 1 : 0);
