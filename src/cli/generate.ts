/**
 * `tensorwright generate`: text generation from a model file or a saved engine, on the CPU reference backend or on
 * WebGPU, with run.c-compatible step counting and sampling.
 * @module
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { loadTokenizer } from '../runtime/tokenizer-loader.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';
import { generateTokens } from '../runtime/generate.js';
import { validateSampling } from '../runtime/sampling.js';
import { runPasses } from '../passes/pipeline.js';
import { cpuProfile } from '../ir/device-profile.js';
import { countKernels } from '../ir/stats.js';
import { Engine, formatLoadTimings, type KernelTiming } from '../runtime/engine.js';
import { requestGPUDevice, describeDevice } from '../runtime/device.js';
import { openModel, pickBackend } from './model-input.js';
import { compile, compressionOf } from '../compile.js';
import type { KvCacheDType, PrecisionPolicy } from '../ir/target.js';
import { log } from './output.js';
import { requireEngineFolder, requireFile, requireFileOrFolder } from './file-arguments.js';

/** Options of the `generate` command (as parsed from the command line). */
export interface GenerateCommandOptions {
  /** Model file (or use `engine`). */
  model?: string;
  /** A saved engine directory (from `tensorwright compile`). */
  engine?: string;
  /** Tokenizer file (default: the model's own, from a GGUF file or a Hugging Face folder; else found beside the model, or in the engine directory). */
  tokenizer?: string;
  /** Prompt text. */
  prompt?: string;
  /** Positions to run, prompt included. */
  steps: number;
  /** Sampling temperature (0 = greedy). */
  temperature: number;
  /** Nucleus sampling threshold. */
  topp: number;
  /** Keep only the k most likely tokens before top-p (0 or absent = off). */
  topk?: number;
  /** RNG seed. */
  seed: number;
  /** Backend (`auto`: WebGPU when an adapter exists, else the CPU). */
  backend: 'cpu' | 'webgpu' | 'auto';
  /** Print one JSON object instead of text. */
  json: boolean;
  /** Pass pipeline (default `O3`). */
  passes?: string;
  /** Print the IR after these passes (or `all`). */
  printIrAfter?: readonly string[] | 'all';
  /** Print a per-kernel GPU time table (WebGPU, with `timestamp-query`). */
  profile?: boolean;
  /** Precision policy of the WebGPU engine (default `auto`). */
  precision?: PrecisionPolicy;
  /** Tokens per KV-cache block of the WebGPU engine (default 16). */
  kvBlockSize?: number;
  /** Element type of the KV cache (default f32). */
  kvDtype?: KvCacheDType;
  /** Weight quantization scheme (`none`, `int8`, `int4-g32`, …). */
  quant?: string;
  /** Weight sparsity pattern (`none`, `2:4`, `block32-0.1`, …). */
  sparsity?: string;
}

export type { TextTokenizer };

/** The JSON object `generate --json` prints. */
export interface GenerateJson {
  /** Backend that ran the model. */
  backend: string;
  /** Prompt token ids, BOS first. */
  prompt_ids: number[];
  /** New token ids only. */
  generated_ids: number[];
  /** Decoded prompt and generation. */
  text: string;
  /** Timings and counts. */
  metrics: Record<string, number | string | boolean>;
  /**
   * With `--profile`: the GPU time of each dispatch of the last step, in dispatch order (empty on the CPU backend and
   * on devices without `timestamp-query`).
   */
  profile?: GenerateProfileRow[];
}

/** One dispatch of the last step in `generate --json --profile`. */
export interface GenerateProfileRow {
  /** Dispatch label (the graph nodes it runs). */
  label: string;
  /** Kernel family and variant. */
  kernel: string;
  /** GPU time in milliseconds. */
  ms: number;
  /** Bytes of the weights it binds, as stored. */
  weight_bytes: number;
  /** Bytes of the activation buffers it binds. */
  activation_bytes: number;
}

/**
 * Formats a per-kernel profile table: kernels summed by family/variant, sorted by time, with the weight and
 * activation bytes their dispatches bind and the weight bandwidth that makes (weight bytes over GPU time).
 */
export function profileTable(rows: readonly KernelTiming[]): string {
  const by = new Map<string, { ms: number; n: number; w: number; a: number }>();
  for (const r of rows) {
    const e = by.get(r.kernel) ?? { ms: 0, n: 0, w: 0, a: 0 };
    e.ms += r.ms;
    e.n += 1;
    e.w += r.weightBytes;
    e.a += r.activationBytes;
    by.set(r.kernel, e);
  }
  const total = rows.reduce((a, r) => a + r.ms, 0);
  const mib = (b: number): string => (b / 2 ** 20).toFixed(2);
  const gbs = (b: number, ms: number): string => (ms > 0 && b > 0 ? (b / ms / 1e6).toFixed(1) : '-');
  const line = (k: string, n: number, ms: number, share: string, w: number, a: number): string =>
    `  ${k.padEnd(56)} ${String(n).padStart(5)} ${ms.toFixed(3).padStart(10)} ms ${share.padStart(7)} ${mib(w).padStart(10)} ${mib(a).padStart(9)} ${gbs(w, ms).padStart(8)}`;
  const lines = [...by].sort((a, b) => b[1].ms - a[1].ms).map(([k, e]) => line(k, e.n, e.ms, `${((100 * e.ms) / Math.max(total, 1e-9)).toFixed(1)}%`, e.w, e.a));
  const sum = (f: (r: KernelTiming) => number): number => rows.reduce((a, r) => a + f(r), 0);
  return [
    `  ${'kernel'.padEnd(56)} ${'calls'.padStart(5)} ${'time'.padStart(13)} ${'share'.padStart(7)} ${'weight MiB'.padStart(10)} ${'act MiB'.padStart(9)} ${'w GB/s'.padStart(8)}`,
    ...lines,
    line('total', rows.length, total, '', sum((r) => r.weightBytes), sum((r) => r.activationBytes)),
  ].join('\n');
}

/** Runs the command; resolves to the JSON result (also printed). */
export async function generateCommand(o: GenerateCommandOptions): Promise<GenerateJson> {
  if (!['cpu', 'webgpu', 'auto'].includes(o.backend)) throw new UsageError(`--backend must be cpu or webgpu, got ${o.backend}`);
  if (!o.model === !o.engine) throw new UsageError('give exactly one of --model <file> and --engine <dir>');
  const t0 = performance.now();
  if (o.engine && o.backend === 'cpu') throw new UsageError('a saved engine runs on WebGPU; use --model for the CPU backend');
  // everything that can be checked without loading anything is checked first: settings (a saved engine takes any
  // valid ones), then files
  validateSampling(o);
  if (o.model) requireFileOrFolder('--model', o.model);
  if (o.engine) requireEngineFolder('--engine', o.engine);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  const engineFromDisk = o.engine ? await Engine.load(o.engine) : undefined;
  const opened = o.model ? await openModel(o.model, o.tokenizer) : undefined;
  const model = opened?.model;
  const engineTokenizer = o.tokenizer ?? (existsSync(join(o.engine ?? '', 'tokenizer.bin')) ? join(o.engine!, 'tokenizer.bin') : undefined);
  const tokenizer: TextTokenizer | undefined = opened ? opened.tokenizer : engineTokenizer ? await loadTokenizer(engineTokenizer, { vocabSize: engineFromDisk!.manifest.lm!.vocabSize, bosId: engineFromDisk!.manifest.lm!.bosId, eosIds: engineFromDisk!.manifest.lm!.stopTokens }) : undefined;
  if (!tokenizer && o.prompt) throw new UsageError(`a --prompt needs a tokenizer: pass --tokenizer <file> (none found beside the ${o.model ? 'model' : 'engine'})`);
  if (!tokenizer) log('no tokenizer given or found: generating from BOS, ids only');
  const bos = model ? model.bosId : engineFromDisk!.manifest.lm!.bosId;
  const promptIds = tokenizer ? tokenizer.encode(o.prompt ?? '') : [bos];
  const positions = Math.min(o.steps, model ? model.maxPositions : engineFromDisk!.manifest.lm!.maxPositions);
  if (promptIds.length > positions) throw new InputError(`the prompt has ${promptIds.length} tokens, more than --steps allows (${positions} positions${positions < o.steps ? ", the model's context" : ''})`);
  // only now (the inputs are valid) look for a GPU, which may print driver notes
  const backend = o.engine ? 'webgpu' : await pickBackend(o.backend);
  const passes = o.passes ?? 'O3';
  // the prompt is echoed with the first generated token (or at the end, when none is): by then the model, the
  // engine and the settings have all been accepted, so nothing reaches stdout before an error could
  let echoed = o.json;
  const echoPrompt = (): void => {
    if (!echoed) process.stdout.write(tokenizer ? tokenizer.decode(promptIds) : '');
    echoed = true;
  };
  let prev = promptIds[promptIds.length - 1];
  const onToken = (id: number): void => {
    echoPrompt();
    if (!o.json && tokenizer) process.stdout.write(tokenizer.decodePiece(prev, id));
    prev = id;
  };
  let r: { generated: number[]; prefillSeconds: number; decodeSeconds: number; stopped: boolean };
  const extra: Record<string, number | string | boolean> = {};
  let profile: { device: string; rows: readonly KernelTiming[] } | undefined;
  if (backend === 'cpu') {
    const optimized = runPasses(model!.build({ lastTokenLogitsOnly: true }), passes, { device: cpuProfile, options: compressionOf(o), printIrAfter: o.printIrAfter, print: (text) => process.stderr.write(`${text}\n`) });
    extra.compile_ms = round(optimized.timings.reduce((a, t) => a + t.ms, 0));
    extra.kernels_per_forward = countKernels(optimized.graph);
    const lm = new CpuCausalLM(optimized.graph, model!.maxPositions);
    extra.load_ms = round(performance.now() - t0);
    r = await generateTokens(lm, promptIds, { steps: o.steps, temperature: o.temperature, topp: o.topp, topk: o.topk, seed: o.seed, stopTokens: model!.stopTokens, onToken });
    if (o.profile) log('--profile: the CPU backend has no kernel profile (it is for --backend webgpu)');
  } else {
    const handle = await requestGPUDevice();
    try {
      const tc = performance.now();
      // an engine built for this one prompt: its prefill plan is sized to it (smaller kernels compile faster)
      const prefillChunk = Math.min(128, Math.max(8, promptIds.length));
      const engine = engineFromDisk ?? (await compile(model!, { device: handle.info, passes, prefillChunk, quant: o.quant, sparsity: o.sparsity, precision: o.precision, kv: { blockSize: o.kvBlockSize, dtype: o.kvDtype }, printIrAfter: o.printIrAfter, print: (text) => process.stderr.write(`${text}\n`), onProgress: log }));
      extra.compile_ms = round(performance.now() - tc);
      const session = await engine.createSession({ device: handle, profile: o.profile, onProgress: (p) => p.stage === 'done' && log(formatLoadTimings(p.timings)) });
      extra.load_ms = round(performance.now() - t0);
      extra.device = describeDevice(handle.info);
      extra.dispatches_per_token = engine.manifest.plans[0].dispatches.length + 1;
      try {
        r = await session.generate(promptIds, { steps: o.steps, temperature: o.temperature, topp: o.topp, topk: o.topk, seed: o.seed, onToken });
        if (o.profile) profile = { device: describeDevice(handle.info), rows: [...session.lastProfile] };
      } finally {
        await session.destroy();
      }
    } finally {
      await handle.destroy();
    }
  }
  echoPrompt();
  if (!o.json) process.stdout.write('\n');
  // the profile comes after the text's closing newline, so it starts on its own line
  if (profile) {
    if (profile.rows.length) log(`per-kernel GPU time of the last step (${profile.device}):\n${profileTable(profile.rows)}`);
    else log('--profile: this device has no timestamp-query feature; no kernel times');
  }
  const text = tokenizer ? tokenizer.decode([...promptIds, ...r.generated]) : '';
  const decodeTokens = Math.max(r.generated.length - 1, 0);
  const metrics = {
    model: o.model ?? o.engine!,
    format: model ? model.format : 'engine',
    prompt_tokens: promptIds.length,
    generated_tokens: r.generated.length,
    prefill_ms: round(r.prefillSeconds * 1000),
    decode_ms: round(r.decodeSeconds * 1000),
    prefill_tokens_per_s: round(promptIds.length / Math.max(r.prefillSeconds, 1e-9)),
    decode_tokens_per_s: round(decodeTokens / Math.max(r.decodeSeconds, 1e-9)),
    stopped_at_stop_token: r.stopped,
    seed: o.seed,
    temperature: o.temperature,
    topp: o.topp,
    topk: o.topk ?? 0,
    steps: o.steps,
    passes,
    ...extra,
  };
  const result: GenerateJson = { backend, prompt_ids: promptIds, generated_ids: r.generated, text, metrics };
  if (o.profile) result.profile = (profile?.rows ?? []).map((t) => ({ label: t.label, kernel: t.kernel, ms: t.ms, weight_bytes: t.weightBytes, activation_bytes: t.activationBytes }));
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else log(`[${backend}] prompt ${promptIds.length} tokens in ${metrics.prefill_ms} ms; ${r.generated.length} tokens generated, ${metrics.decode_tokens_per_s} tok/s`);
  return result;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
