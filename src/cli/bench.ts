/**
 * `tensorwright bench`: end-to-end throughput of a model on a backend, in the style of llama-bench and trtexec. It
 * compiles (or, on the CPU, optimizes) the model once, runs one untimed warm-up run (lavapipe and drivers compile
 * pipelines on first use), then `repeat` timed runs of a `prompt-tokens` prefill followed by `gen-tokens` greedy
 * decode steps, each on a fresh sequence. Every figure is the median over the repeats:
 *
 * - `prefill_tokens_per_s`: prompt tokens over the prefill time (until the first new token is known);
 * - `ttft_ms`: time to the first new token;
 * - `decode_tokens_per_s`: decode steps over their time (tokens after the first);
 * - `tpot_ms_p50`, `tpot_ms_p95`: time per output token, percentiles over one run's decode steps.
 *
 * The prompt is `prompt-tokens` ids drawn with a seeded generator (BOS first), or, with a tokenizer, a fixed English
 * text tokenized and repeated to that length. Progress goes to stderr and one JSON object to stdout.
 * @module
 */
import { InputError, UsageError } from '../errors.js';
import { cpuProfile } from '../ir/device-profile.js';
import { weightTotals } from '../ir/stats.js';
import { runPasses } from '../passes/pipeline.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';
import { describeDevice, requestGPUDevice } from '../runtime/device.js';
import { XorShiftRng } from '../util/random.js';
import { compile, compressionOf } from '../compile.js';
import type { PrecisionPolicy } from '../ir/target.js';
import { quantile } from './eval.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { openModel, pickBackend } from './model-input.js';
import { log } from './output.js';
import { requireFile, requireFileOrFolder } from './file-arguments.js';

/** Options of the `bench` command. */
export interface BenchCommandOptions {
  /** Model file. */
  model: string;
  /** Tokenizer (optional: the prompt is then real text). */
  tokenizer?: string;
  /** Weight quantization scheme (default none). */
  quant?: string;
  /** Weight sparsity (default none). */
  sparsity?: string;
  /** Backend. */
  backend: 'cpu' | 'webgpu' | 'auto';
  /** Prompt length in tokens (default 128). */
  promptTokens: number;
  /** Tokens to generate (default 64). */
  genTokens: number;
  /** Timed runs (default 3). */
  repeat: number;
  /** Precision policy of the WebGPU engine (default `auto`). */
  precision?: PrecisionPolicy;
  /** Print the JSON object only (without it a summary line goes to stderr too). */
  json: boolean;
}

/** The JSON object `bench` prints. */
export interface BenchResult {
  model: string;
  backend: 'cpu' | 'webgpu';
  device: string;
  quant: string;
  sparsity: string;
  prompt_tokens: number;
  gen_tokens: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  ttft_ms: number;
  tpot_ms_p50: number;
  tpot_ms_p95: number;
  weight_bytes: number;
  compile_ms: number;
  load_ms: number;
}

/** One forward step that returns the greedy next token. */
type GreedyStep = (tokens: readonly number[]) => Promise<number>;

const BENCH_TEXT =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball under a tree and ran to get it. ';

/** The benchmark prompt: BOS then seeded ids, or the fixed text tokenized and repeated. */
export function benchPrompt(n: number, vocab: number, bos: number, tokenizer?: TextTokenizer): number[] {
  if (tokenizer) {
    const piece = tokenizer.encode(BENCH_TEXT).slice(1);
    const ids = [bos];
    while (ids.length < n) ids.push(...piece.slice(0, n - ids.length));
    return ids;
  }
  const rng = new XorShiftRng(42n);
  const ids = [bos];
  while (ids.length < n) ids.push(3 + Math.floor(rng.nextF32() * (vocab - 3)));
  return ids;
}

function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** Runs the command; resolves to the result (also printed). */
export async function benchCommand(o: BenchCommandOptions): Promise<BenchResult> {
  for (const [flag, v, min] of [['--prompt-tokens', o.promptTokens, 1], ['--gen-tokens', o.genTokens, 1], ['--repeat', o.repeat, 1]] as const)
    if (!(Number.isInteger(v) && v >= min)) throw new UsageError(`${flag} must be an integer >= ${min}, got ${v}`);
  requireFileOrFolder('--model', o.model);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  const { model, tokenizer } = await openModel(o.model, o.tokenizer);
  if (o.promptTokens + o.genTokens > model.maxPositions)
    throw new InputError(`--prompt-tokens ${o.promptTokens} + --gen-tokens ${o.genTokens} exceed the model's ${model.maxPositions} positions`);
  const prompt = benchPrompt(o.promptTokens, model.config.vocabSize, model.bosId, tokenizer);
  const backend = await pickBackend(o.backend);
  const t0 = performance.now();
  let step: GreedyStep;
  let reset: () => void;
  let close = async (): Promise<void> => {};
  let device: string;
  let weightBytes: number;
  let compileMs: number;
  if (backend === 'cpu') {
    const optimized = runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile, options: compressionOf(o) });
    compileMs = performance.now() - t0;
    const lm = new CpuCausalLM(optimized.graph, model.maxPositions);
    step = async (ids) => {
      const logits = lm.step(ids);
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      return best;
    };
    reset = () => lm.reset();
    device = 'cpu (reference interpreter)';
    weightBytes = weightTotals(optimized.graph).bytes;
  } else {
    const handle = await requestGPUDevice();
    const engine = await compile(model, { device: handle.info, quant: o.quant, sparsity: o.sparsity, precision: o.precision, prefillChunk: Math.min(128, o.promptTokens), onProgress: log });
    compileMs = performance.now() - t0;
    const session = await engine.createSession({ device: handle });
    step = (ids) => session.step(ids, { temperature: 0, topp: 1, coin: 0 });
    reset = () => session.reset();
    close = async () => {
      await session.destroy();
      await handle.destroy();
    };
    device = describeDevice(handle.info);
    weightBytes = engine.manifest.weights.reduce((a, w) => a + w.parts.reduce((b, p) => b + p.byteLength, 0), 0);
  }
  const loadMs = performance.now() - t0 - compileMs;
  log(`bench: ${backend} on ${device}; compile ${compileMs.toFixed(0)} ms, load ${loadMs.toFixed(0)} ms`);

  const runs: { ttft: number; prefillTps: number; decodeTps: number; p50: number; p95: number }[] = [];
  try {
    for (let r = -1; r < o.repeat; r++) {
      reset();
      const a = performance.now();
      let next = await step(prompt);
      const ttft = performance.now() - a;
      const tpot: number[] = [];
      // the warm-up run (r = -1) is a whole run: it builds every pipeline and touches every KV-cache page the timed
      // runs use (a software rasterizer's first touch of fresh memory is slow)
      for (let i = 1; i < o.genTokens; i++) {
        const b = performance.now();
        next = await step([next]);
        tpot.push(performance.now() - b);
      }
      if (r < 0) {
        log(`bench: warm-up done (${(performance.now() - a).toFixed(0)} ms)`);
        continue;
      }
      const decodeMs = tpot.reduce((x, y) => x + y, 0);
      runs.push({ ttft, prefillTps: (1000 * prompt.length) / ttft, decodeTps: tpot.length ? (1000 * tpot.length) / decodeMs : NaN, p50: quantile(tpot, 0.5), p95: quantile(tpot, 0.95) });
      log(`bench: run ${r + 1}/${o.repeat}: prefill ${runs[r].prefillTps.toFixed(1)} tok/s, decode ${runs[r].decodeTps.toFixed(2)} tok/s`);
    }
  } finally {
    await close();
  }
  const res: BenchResult = {
    model: o.model,
    backend,
    device,
    quant: o.quant ?? 'none',
    sparsity: o.sparsity ?? 'none',
    prompt_tokens: prompt.length,
    gen_tokens: o.genTokens,
    prefill_tokens_per_s: round2(median(runs.map((r) => r.prefillTps))),
    decode_tokens_per_s: round2(median(runs.map((r) => r.decodeTps))),
    ttft_ms: round2(median(runs.map((r) => r.ttft))),
    tpot_ms_p50: round2(median(runs.map((r) => r.p50))),
    tpot_ms_p95: round2(median(runs.map((r) => r.p95))),
    weight_bytes: weightBytes,
    compile_ms: Math.round(compileMs),
    load_ms: Math.round(loadMs),
  };
  process.stdout.write(`${JSON.stringify(res)}\n`);
  if (!o.json) log(`bench [${backend}, ${res.quant}]: prefill ${res.prefill_tokens_per_s} tok/s, decode ${res.decode_tokens_per_s} tok/s, TTFT ${res.ttft_ms} ms, TPOT p50 ${res.tpot_ms_p50} ms`);
  return res;
}
