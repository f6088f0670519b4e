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
 * The measurement contract (the figures a decode speed is judged by, all measured in the same process):
 *
 * - `device_copy_read_gbps`: the bandwidth of a plain WGSL copy kernel on the same device, bytes read plus bytes
 *   written per second ({@link measureCopyBandwidth}; the best of the medians measured before compiling and after
 *   the timed runs, each with two host wait modes); null on the CPU;
 * - `weight_read_fraction` = `decode_tokens_per_s × weight_bytes / (device_copy_read_gbps × 1e9)`: how close decode
 *   comes to streaming every weight once per token at the copy's bandwidth (1 is the roofline); null on the CPU;
 * - `gpu_ms_per_token`: the GPU time of one decode step, the sum of its kernels' times from timestamp queries, the
 *   median over the decode steps of one extra run in a profiled session (null without `timestamp-query`, and on the
 *   CPU); `host_ms_per_token` = `tpot_ms_p50 − gpu_ms_per_token` (at least 0): the rest of a step's wall time
 *   (encoding, submitting, waiting for and reading back the token id), or all of it on the CPU; null when the GPU
 *   time is unknown;
 * - `load_ms_by_stage`: `load_ms` by stage of creating the session (`download`, `device`, `buffers`, `weights`,
 *   `shader_modules`, `pipelines`, `bind_groups`, as {@link SessionLoadTimings}); on the CPU one stage,
 *   `interpreter`.
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
import type { SessionLoadTimings } from '../runtime/engine.js';
import { measureCopyBandwidth } from '../runtime/webgpu/copy-bandwidth.js';
import { defaultGpuWaitMode } from '../runtime/webgpu/gpu-wait.js';
import { XorShiftRng } from '../util/random.js';
import { compile, compressionOf } from '../compile.js';
import type { KvCacheDType, PrecisionPolicy } from '../ir/target.js';
import { kvCacheBytes } from '../ir/kv-cache-quant.js';
import { quantile } from './eval.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { openModel, pickBackend } from './model-input.js';
import { log } from './output.js';
import { keyOffsetModel } from './key-offset-model.js';
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
  /** Element type of the KV cache (default f32). */
  kvDtype?: KvCacheDType;
  /** The whole-step decode kernel (`--whole-step`): `auto` (default) lets the cost model decide. */
  wholeStep?: 'auto' | 'on' | 'off';
  /** Center the cached keys and values and balance the key channels on statistics of this text (`--kv-calib`; for int8/int4 KV caches). */
  kvCalib?: string;
  /** Print the JSON object only (without it a summary line goes to stderr too). */
  json: boolean;
  /** Most positions the model is compiled for: a file's declared context is capped to it (default 8192). */
  maxContext?: number;
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
  /** Element type of the KV cache. */
  kv_dtype: KvCacheDType;
  /**
   * Bytes of the WebGPU engine's KV cache for one sequence of the whole context (all layers, K and V, whole blocks);
   * null on the CPU, whose reference backend holds f32 whatever `kv_dtype` says.
   */
  kv_bytes: number | null;
  compile_ms: number;
  load_ms: number;
  /** Bytes read plus bytes written per second by a plain WGSL copy kernel on the device, in GB/s (null on the CPU). */
  device_copy_read_gbps: number | null;
  /** `decode_tokens_per_s × weight_bytes / (device_copy_read_gbps × 1e9)` (null on the CPU). */
  weight_read_fraction: number | null;
  /** `tpot_ms_p50 − gpu_ms_per_token`, at least 0 (all of `tpot_ms_p50` on the CPU; null when the GPU time is unknown). */
  host_ms_per_token: number | null;
  /** GPU time of one decode step from timestamp queries (null without `timestamp-query`, and on the CPU). */
  gpu_ms_per_token: number | null;
  /** `load_ms` by stage, in milliseconds. */
  load_ms_by_stage: Record<string, number>;
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

function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

/** The stage names of `load_ms_by_stage` for the fields of {@link SessionLoadTimings}. */
const LOAD_STAGES: readonly (readonly [string, keyof SessionLoadTimings])[] = [
  ['download', 'downloadMs'],
  ['device', 'deviceMs'],
  ['buffers', 'buffersMs'],
  ['weights', 'weightsMs'],
  ['shader_modules', 'shaderModulesMs'],
  ['pipelines', 'pipelinesMs'],
  ['bind_groups', 'bindGroupsMs'],
];

/** Decode steps the profiled run times (at most; fewer when `gen-tokens` is smaller). */
const PROFILED_STEPS = 8;

/** Runs the benchmark and resolves to its result without printing it (progress goes to stderr). */
export async function runBench(o: BenchCommandOptions): Promise<BenchResult> {
  for (const [flag, v, min] of [['--prompt-tokens', o.promptTokens, 1], ['--gen-tokens', o.genTokens, 1], ['--repeat', o.repeat, 1]] as const)
    if (!(Number.isInteger(v) && v >= min)) throw new UsageError(`${flag} must be an integer >= ${min}, got ${v}`);
  requireFileOrFolder('--model', o.model);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  const opened = await openModel(o.model, o.tokenizer, { maxContext: o.maxContext });
  const tokenizer = opened.tokenizer;
  const model = o.kvCalib ? await keyOffsetModel(opened.model, tokenizer, o.kvCalib) : opened.model;
  if (o.promptTokens + o.genTokens > model.maxPositions)
    throw new InputError(`--prompt-tokens ${o.promptTokens} + --gen-tokens ${o.genTokens} exceed the model's ${model.maxPositions} positions`);
  const prompt = benchPrompt(o.promptTokens, model.config.vocabSize, model.bosId, tokenizer);
  const backend = await pickBackend(o.backend, { model, quant: o.quant, sparsity: o.sparsity, kvDtype: o.kvDtype });
  const t0 = performance.now();
  let step: GreedyStep;
  let reset: () => void;
  let close = async (): Promise<void> => {};
  let device: string;
  let weightBytes: number;
  let kvBytes: number | null = null;
  let compileMs: number;
  let copyGbps: number | null = null;
  let loadMs: number;
  let loadStages: Record<string, number>;
  /** GPU milliseconds of each decode step of one profiled run (undefined: not measurable). */
  let profileDecode: (() => Promise<number[] | undefined>) | undefined;
  /** The copy bandwidth measured again after the timed runs (on a busy machine the bandwidth drifts). */
  let remeasureCopy: (() => Promise<number>) | undefined;
  if (backend === 'cpu') {
    const optimized = runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile, options: { ...compressionOf(o), kvCache: o.kvDtype } });
    compileMs = performance.now() - t0;
    const tl = performance.now();
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
    loadMs = performance.now() - tl;
    loadStages = { interpreter: Math.round(loadMs) };
  } else {
    const handle = await requestGPUDevice();
    const requestMs = performance.now() - t0;
    const wait = defaultGpuWaitMode(handle.info);
    try {
      // the better of awaiting at once and the engine's own wait: busy polling takes a core from a software device,
      // and sleeping before awaiting onSubmittedWorkDone was seen to make the copy ten times slower on lavapipe
      copyGbps = 0;
      for (const mode of new Set(['poll', wait] as const)) copyGbps = Math.max(copyGbps, (await measureCopyBandwidth(handle.device, { wait: mode })).gbps);
    } catch (e) {
      await handle.destroy();
      throw e;
    }
    log(`bench: copy kernel ${copyGbps.toFixed(2)} GB/s (read + write)`);
    remeasureCopy = async () => {
      let best = 0;
      for (const mode of new Set(['poll', wait] as const)) best = Math.max(best, (await measureCopyBandwidth(handle.device, { wait: mode })).gbps);
      return best;
    };
    const tc = performance.now();
    const engine = await compile(model, { device: handle.info, quant: o.quant, sparsity: o.sparsity, precision: o.precision, kv: { dtype: o.kvDtype }, prefillChunk: Math.min(128, o.promptTokens), wholeStep: wholeStepOf(o.wholeStep), onProgress: log });
    kvBytes = kvCacheBytes(engine.manifest.kv!, model.maxPositions);
    compileMs = requestMs + (performance.now() - tc);
    const tl = performance.now();
    let session = await engine.createSession({ device: handle });
    loadMs = performance.now() - tl;
    const timings = { ...session.loadTimings };
    step = (ids) => session.step(ids, { temperature: 0, topp: 1, coin: 0 });
    reset = () => session.reset();
    close = async () => {
      await session.destroy();
      await handle.destroy();
    };
    device = describeDevice(handle.info);
    weightBytes = engine.manifest.weights.reduce((a, w) => a + w.parts.reduce((b, p) => b + p.byteLength, 0), 0);
    loadStages = Object.fromEntries(LOAD_STAGES.map(([name, key]) => [name, Math.round(timings[key])]));
    if (handle.device.features.has('timestamp-query'))
      profileDecode = async () => {
        // a session of its own: timestamp queries put every dispatch in its own pass, which the timed runs must not pay
        await session.destroy();
        session = await engine.createSession({ device: handle, profile: true });
        session.reset();
        let next = await step(prompt);
        const gpu: number[] = [];
        for (let i = 1; i < Math.min(o.genTokens, PROFILED_STEPS + 1); i++) {
          next = await step([next]);
          gpu.push(session.lastProfile.reduce((a, k) => a + k.ms, 0));
        }
        return gpu;
      };
  }
  log(`bench: ${backend} on ${device}; compile ${compileMs.toFixed(0)} ms, load ${loadMs.toFixed(0)} ms`);

  const runs: { ttft: number; prefillTps: number; decodeTps: number; p50: number; p95: number }[] = [];
  let gpuSteps: number[] | undefined;
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
    if (remeasureCopy && copyGbps !== null) {
      const again = await remeasureCopy();
      log(`bench: copy kernel after the runs ${again.toFixed(2)} GB/s`);
      copyGbps = Math.max(copyGbps, again);
    }
    if (profileDecode) {
      gpuSteps = await profileDecode();
      if (gpuSteps?.length) log(`bench: profiled run: GPU ${median(gpuSteps).toFixed(2)} ms per decode step (timestamp queries, ${gpuSteps.length} steps)`);
    }
  } finally {
    await close();
  }
  const decodeTps = round2(median(runs.map((r) => r.decodeTps)));
  const tpotP50 = round2(median(runs.map((r) => r.p50)));
  const copy = copyGbps === null ? null : round2(copyGbps);
  const gpuMs = gpuSteps?.length ? round2(median(gpuSteps)) : null;
  return {
    model: o.model,
    backend,
    device,
    quant: o.quant ?? 'none',
    sparsity: o.sparsity ?? 'none',
    prompt_tokens: prompt.length,
    gen_tokens: o.genTokens,
    prefill_tokens_per_s: round2(median(runs.map((r) => r.prefillTps))),
    decode_tokens_per_s: decodeTps,
    ttft_ms: round2(median(runs.map((r) => r.ttft))),
    tpot_ms_p50: tpotP50,
    tpot_ms_p95: round2(median(runs.map((r) => r.p95))),
    weight_bytes: weightBytes,
    kv_dtype: o.kvDtype ?? 'f32',
    kv_bytes: kvBytes,
    compile_ms: Math.round(compileMs),
    load_ms: Math.round(loadMs),
    // from the rounded figures above, so that the formula holds for the printed numbers
    device_copy_read_gbps: copy,
    weight_read_fraction: copy === null || !(copy > 0) || !Number.isFinite(decodeTps) ? null : round4((decodeTps * weightBytes) / (copy * 1e9)),
    host_ms_per_token: backend === 'cpu' ? tpotP50 : gpuMs === null ? null : round2(Math.max(0, tpotP50 - gpuMs)),
    gpu_ms_per_token: gpuMs,
    load_ms_by_stage: loadStages,
  };
}

/** Runs the command; resolves to the result (also printed: one JSON object on stdout). */
export async function benchCommand(o: BenchCommandOptions): Promise<BenchResult> {
  const res = await runBench(o);
  process.stdout.write(`${JSON.stringify(res)}\n`);
  if (!o.json)
    log(
      `bench [${res.backend}, ${res.quant}]: prefill ${res.prefill_tokens_per_s} tok/s, decode ${res.decode_tokens_per_s} tok/s, TTFT ${res.ttft_ms} ms, TPOT p50 ${res.tpot_ms_p50} ms` +
        (res.weight_read_fraction !== null ? `; weight reads at ${(res.weight_read_fraction * 100).toFixed(0)}% of copy bandwidth (${res.device_copy_read_gbps} GB/s)` : '') +
        (res.gpu_ms_per_token !== null ? `; GPU ${res.gpu_ms_per_token} ms + host ${res.host_ms_per_token} ms per token` : ''),
    );
  return res;
}

/** `--whole-step`'s value as `compile`'s `wholeStep`. */
export function wholeStepOf(mode: 'auto' | 'on' | 'off' | undefined): boolean | undefined {
  return mode === 'on' ? true : mode === 'off' ? false : undefined;
}
