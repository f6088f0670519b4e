/**
 * The LLM decode benchmark: our engine against llama.cpp (the CPU peer) on the same GGUF files, in the same run.
 *
 * The model is the synthetic 110M llama2.c checkpoint (`../shared/tools/synth-llama2c-checkpoint.mjs 768 2048 12 12 12
 * 32000 1024`, written to the temporary folder when missing), rewritten as GGUF F32 and Q4_0 ({@link llama2cGguf}).
 * Rows:
 *
 * - `F32`: our engine (`bench --backend webgpu` on the F32 file) and llama.cpp on the F32 file;
 * - `Q4_0`: our engine on the Q4_0 file (Q4_0 weights read as int4 group 32) and llama.cpp on the Q4_0 file;
 * - `int4-g32`: our engine quantizing the F32 file (`--quant int4-g32`), against llama.cpp's Q4_0 row.
 *
 * Each row gives decode tok/s and our decode rate as a ratio to llama.cpp's, with the measurement contract's figures
 * (`weight_read_fraction`, GPU and host ms per token). llama.cpp runs on `threads` CPU threads; our engine runs on
 * whatever WebGPU adapter the process gets (on lavapipe set `LP_NUM_THREADS` to the same count; `bench/run.ts` does
 * when it is unset). Where node-llama-cpp's prebuilt binary cannot load, the llama.cpp rows are skipped with one
 * line on stderr saying why, and our rows still run.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { benchPrompt, runBench, type BenchResult } from '../src/cli/bench.js';
import { benchLlamaCpp, loadLlamaCpp, type LlamaCppBenchResult } from './llama-cpp.js';
import { llama2cGguf, llama2cVocabSize } from './llama2c-gguf.js';

/** Options of {@link runLlmBench}. */
export interface LlmBenchOptions {
  /** `../shared` (for the checkpoint tool). */
  readonly sharedDir: string;
  /** The llama2.c checkpoint (default: the synthetic 110M one in the temporary folder, written when missing). */
  readonly checkpoint?: string;
  /** llama.cpp's threads (default 2). */
  readonly threads?: number;
  /** Prompt tokens (default 16). */
  readonly promptTokens?: number;
  /** Tokens generated per run (default 32; 16 with `quick`). */
  readonly genTokens?: number;
  /** Timed runs (default 2). */
  readonly repeat?: number;
  /** Shorter runs. */
  readonly quick?: boolean;
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/** One row: our engine's figures and llama.cpp's on the same file (or its quantized peer). */
export interface LlmBenchRow {
  /** `F32`, `Q4_0` or `int4-g32`. */
  readonly case: string;
  /** The GGUF file our engine ran. */
  readonly file: string;
  /** `--quant` given to our engine. */
  readonly quant: string;
  /** Our `bench` result (its JSON fields). */
  readonly ours: BenchResult;
  /** llama.cpp's figures on the peer file (absent when its binary did not load). */
  readonly llamaCpp?: LlamaCppBenchResult;
  /** Our decode tok/s over llama.cpp's. */
  readonly decodeRatio?: number;
}

/** What {@link runLlmBench} returns. */
export interface LlmBenchResult {
  /** The checkpoint the GGUF files were written from. */
  readonly checkpoint: string;
  /** llama.cpp's build and threads, or why its rows are missing. */
  readonly llamaCpp: string;
  /** The rows. */
  readonly rows: LlmBenchRow[];
}

/** The synthetic 110M checkpoint's shape (stories110M's): dim, hidden, layers, heads, KV heads, vocab, positions. */
const SYNTH_110M = ['768', '2048', '12', '12', '12', '32000', '1024'];

/** Runs the LLM benchmark (see the module doc); undefined when `../shared` (the checkpoint tool) is absent. */
export async function runLlmBench(o: LlmBenchOptions): Promise<LlmBenchResult | undefined> {
  const threads = o.threads ?? 2;
  const promptTokens = o.promptTokens ?? 16;
  const genTokens = o.genTokens ?? (o.quick ? 16 : 32);
  const repeat = o.repeat ?? 2;
  let checkpoint = o.checkpoint;
  if (!checkpoint) {
    checkpoint = join(tmpdir(), 'synth110m.bin');
    if (!existsSync(checkpoint)) {
      const tool = resolve(o.sharedDir, 'tools/synth-llama2c-checkpoint.mjs');
      if (!existsSync(tool)) {
        o.log(`llm benchmark skipped: ${tool} is absent`);
        return undefined;
      }
      o.log(`llm: writing the synthetic 110M checkpoint to ${checkpoint}`);
      execFileSync(process.execPath, [tool, ...SYNTH_110M, checkpoint], { stdio: ['ignore', 'ignore', 'inherit'] });
    }
  }
  const dir = join(tmpdir(), 'tensorwright-bench');
  mkdirSync(dir, { recursive: true });
  const base = checkpoint.replace(/^.*[\\/]/, '').replace(/\.bin$/, '');
  const files = { F32: join(dir, `${base}-F32.gguf`), Q4_0: join(dir, `${base}-Q4_0.gguf`) };
  for (const [type, file] of Object.entries(files) as ['F32' | 'Q4_0', string][]) {
    o.log(`llm: ${type} GGUF ${file}`);
    llama2cGguf(checkpoint, file, type);
  }

  const vocab = llama2cVocabSize(checkpoint);
  const llama = await loadLlamaCpp(threads);
  const describe = llama.ok ? llama.describe : `skipped: node-llama-cpp's prebuilt llama.cpp did not load (${llama.reason})`;
  if (!llama.ok) o.log(`!!! llama.cpp rows SKIPPED: node-llama-cpp's prebuilt binary did not load: ${llama.reason}`);
  else o.log(`llm: ${describe}`);

  // llama.cpp first, on each file once (its Q4_0 row serves both Q4_0 and int4-g32)
  const peers = new Map<string, LlamaCppBenchResult>();
  if (llama.ok) {
    try {
      for (const [type, file] of Object.entries(files)) {
        o.log(`llm: llama.cpp on ${type}`);
        // the same prompt length and decode steps as our runs (the ids differ: ours come from the file's tokenizer)
        const prompt = benchPrompt(promptTokens, vocab, 1);
        peers.set(type, await benchLlamaCpp(llama.llama, file, { prompt, genTokens, repeat, threads, log: o.log }));
      }
    } finally {
      await llama.llama.dispose();
    }
  }
  const rows: LlmBenchRow[] = [];
  for (const [name, file, quant, peer] of [
    ['F32', files.F32, 'none', 'F32'],
    ['Q4_0', files.Q4_0, 'none', 'Q4_0'],
    ['int4-g32', files.F32, 'int4-g32', 'Q4_0'],
  ] as const) {
    o.log(`llm: ours on ${name}`);
    const ours = await runBench({ model: file, backend: 'webgpu', quant: quant === 'none' ? undefined : quant, promptTokens, genTokens, repeat, json: true });
    const p = peers.get(peer);
    rows.push({ case: name, file, quant, ours, ...(p ? { llamaCpp: p, decodeRatio: ours.decode_tokens_per_s / p.decodeTokensPerS } : {}) });
  }
  return { checkpoint, llamaCpp: describe, rows };
}

function fmt(x: number | null | undefined, digits = 2): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);
}

/** The rows as an aligned text table. */
export function formatLlmBench(r: LlmBenchResult): string {
  const head = ['case', 'ours tok/s', 'llama.cpp tok/s', 'ours/llama.cpp', 'weight read frac', 'copy GB/s', 'gpu ms/tok', 'host ms/tok', 'weight MB'];
  const body = r.rows.map((x) => [
    x.case + (x.quant !== 'none' ? ` (F32 file, --quant ${x.quant}; peer Q4_0)` : ''),
    fmt(x.ours.decode_tokens_per_s),
    fmt(x.llamaCpp?.decodeTokensPerS),
    fmt(x.decodeRatio, 3),
    fmt(x.ours.weight_read_fraction, 3),
    fmt(x.ours.device_copy_read_gbps),
    fmt(x.ours.gpu_ms_per_token),
    fmt(x.ours.host_ms_per_token),
    fmt(x.ours.weight_bytes / 1e6, 1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  return [`checkpoint ${r.checkpoint}; ${r.llamaCpp}`, ...[head, ...body].map((cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd())].join('\n');
}
