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
import { cpuTarget, engineTarget, speculativeGenerate, type SpeculativeStats } from '../runtime/speculative/speculative-generate.js';
import { NgramDrafter } from '../runtime/speculative/ngram-drafter.js';
import { cpuDraftModel, engineDraftModel, ModelDrafter } from '../runtime/speculative/model-drafter.js';
import type { Drafter } from '../runtime/speculative/drafter.js';
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
import { keyOffsetModel } from './key-offset-model.js';
import { requireEngineFolder, requireFile, requireFileOrFolder } from './file-arguments.js';
import type { BatchExecutor } from '../runtime/serving/batch-executor.js';
import { BatchedEngineExecutor } from '../runtime/serving/batched-engine-executor.js';
import { CpuPagedExecutor } from '../runtime/serving/cpu-paged-executor.js';
import { kvEvictionBlocks, type KvEviction } from '../runtime/serving/kv-eviction.js';
import { kvWindowBlocks, type KvWindow } from '../runtime/serving/kv-window.js';
import { kvH2oFlag, kvWindowFlag, refuseKvH2o } from './kv-window-flag.js';
import { ServingSession, type ServingRequest } from '../runtime/serving/serving-session.js';

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
  /** Center the cached keys and values and balance the key channels on statistics of this text (`--kv-calib`; for int8/int4 KV caches). */
  kvCalib?: string;
  /** Weight quantization scheme (`none`, `int8`, `int4-g32`, …). */
  quant?: string;
  /** Weight sparsity pattern (`none`, `2:4`, `block32-0.1`, …). */
  sparsity?: string;
  /** Most positions the model is compiled for: a file's declared context is capped to it (default 8192). */
  maxContext?: number;
  /**
   * `SINKS,RECENT`: keep only the first SINKS and the last RECENT tokens' K/V (StreamingLLM sliding window with
   * attention sinks, rounded to KV blocks), so `steps` may exceed the model's context. Runs through the serving
   * scheduler (CPU paged executor, or the WebGPU engine's batched session); sampling coins come from the request's
   * seed as in `serve`, so sampled output differs from the plain path's (greedy output does not, until the window
   * first slides).
   */
  kvWindow?: string;
  /**
   * `BUDGET,RECENT`: keep at most BUDGET tokens' K/V under H2O heavy-hitter eviction (the last RECENT tokens and the
   * blocks that received the most attention, rounded to KV blocks), so `steps` may exceed the model's context. CPU
   * backend unless `backend` is `webgpu` (or an engine is given), through the serving scheduler like `kvWindow`.
   */
  kvH2o?: string;
  /** Speculative decoding: drafts from n-gram lookup in the context, or from a draft model (absent: off). */
  speculative?: 'ngram' | 'draft';
  /** The draft model file of `speculative: 'draft'` (default: the `model` itself, quantized by `draftQuant`). */
  draftModel?: string;
  /** Weight quantization of the draft model (default `int4-g32` when the draft model is the target's file, else none). */
  draftQuant?: string;
  /** Draft length to start from (default 4); drafts adapt up to max(8, this). */
  draftLen?: number;
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
  const spec = speculativeSettings(o);
  const kvWindow = kvWindowFlag(o.kvWindow);
  if (kvWindow && o.kvCalib) throw new UsageError('--kv-window does not go with --kv-calib: centered keys do not rotate with their offsets');
  if (kvWindow && spec) throw new UsageError('--kv-window and --speculative do not go together yet');
  if (kvWindow && (o.kvDtype === 'int8' || o.kvDtype === 'int4')) throw new UsageError(`--kv-window needs an f32 or f16 KV cache (no key shift of ${o.kvDtype} blocks yet)`);
  const kvH2o = kvH2oFlag(o.kvH2o);
  if (kvH2o) refuseKvH2o(o);
  if (o.model) requireFileOrFolder('--model', o.model);
  if (o.draftModel) requireFileOrFolder('--draft-model', o.draftModel);
  if (o.engine) requireEngineFolder('--engine', o.engine);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  const engineFromDisk = o.engine ? await Engine.load(o.engine) : undefined;
  if (spec && engineFromDisk && engineFromDisk.manifest.plans.reduce((a, p) => Math.max(a, p.maxSeq), 1) < spec.verifyTokens)
    throw new UsageError(`--speculative verifies ${spec.verifyTokens} tokens a step; this engine's steps take at most ${engineFromDisk.manifest.plans.reduce((a, p) => Math.max(a, p.maxSeq), 1)} (compile it with a larger prefill chunk)`);
  const opened = o.model ? await openModel(o.model, o.tokenizer, { maxContext: o.maxContext }) : undefined;
  const model = opened && o.kvCalib ? await keyOffsetModel(opened.model, opened.tokenizer, o.kvCalib) : opened?.model;
  const engineTokenizer = o.tokenizer ?? (existsSync(join(o.engine ?? '', 'tokenizer.bin')) ? join(o.engine!, 'tokenizer.bin') : undefined);
  const tokenizer: TextTokenizer | undefined = opened ? opened.tokenizer : engineTokenizer ? await loadTokenizer(engineTokenizer, { vocabSize: engineFromDisk!.manifest.lm!.vocabSize, bosId: engineFromDisk!.manifest.lm!.bosId, eosIds: engineFromDisk!.manifest.lm!.stopTokens }) : undefined;
  if (!tokenizer && o.prompt) throw new UsageError(`a --prompt needs a tokenizer: pass --tokenizer <file> (none found beside the ${o.model ? 'model' : 'engine'})`);
  if (!tokenizer) log('no tokenizer given or found: generating from BOS, ids only');
  const bos = model ? model.bosId : engineFromDisk!.manifest.lm!.bosId;
  const promptIds = tokenizer ? tokenizer.encode(o.prompt ?? '') : [bos];
  const positions = kvWindow || kvH2o ? o.steps : Math.min(o.steps, model ? model.maxPositions : engineFromDisk!.manifest.lm!.maxPositions);
  if (promptIds.length > positions) throw new InputError(`the prompt has ${promptIds.length} tokens, more than --steps allows (${positions} positions${positions < o.steps ? ", the model's context" : ''})`);
  // only now (the inputs are valid) look for a GPU, which may print driver notes
  // H2O runs on the CPU reference unless --backend webgpu (or --engine) asks for the GPU
  const backend = o.engine ? 'webgpu' : kvH2o && o.backend !== 'webgpu' ? 'cpu' : await pickBackend(o.backend, { model: model!, quant: o.quant, sparsity: o.sparsity, kvDtype: o.kvDtype });
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
  let specStats: SpeculativeStats | undefined;
  const sampling = { steps: o.steps, temperature: o.temperature, topp: o.topp, topk: o.topk, seed: o.seed, onToken };
  // the draft model (a file, or the target's own) is opened only now: the inputs are valid
  const draftSource = spec?.kind === 'draft' ? (o.draftModel ? (await openModel(o.draftModel, undefined, { maxContext: o.maxContext })).model : model) : undefined;
  if (spec?.kind === 'draft') {
    const vocab = model ? model.config.vocabSize : engineFromDisk!.manifest.lm!.vocabSize;
    if (!draftSource) throw new UsageError('--speculative draft with --engine needs a --draft-model <file>');
    if (draftSource.config.vocabSize !== vocab) throw new InputError(`the draft model's vocabulary has ${draftSource.config.vocabSize} tokens, the target's ${vocab}: they must share the tokenizer`);
  }
  if (kvWindow || kvH2o) {
    const blockSize = o.kvBlockSize ?? 16;
    const maxPositions = model ? model.maxPositions : engineFromDisk!.manifest.lm!.maxPositions;
    // the pool a bounded cache needs: the window's sinks and recent blocks, or H2O's budget
    const poolBlocks = (bs: number): number => (kvH2o ? kvEvictionBlocks(kvH2o, bs, maxPositions).budgetBlocks : ((w) => w.sinkBlocks + w.recentBlocks)(kvWindowBlocks(kvWindow!, bs, maxPositions)));
    const bound = kvH2o ? { kvEviction: kvH2o } : { kvWindow: kvWindow! };
    poolBlocks(blockSize); // a bad policy fails here, before anything is compiled or loaded
    const request = { promptIds, maxTokens: Math.max(1, o.steps - promptIds.length + 1), temperature: o.temperature, topP: o.topp, topK: o.topk ?? 0, seed: o.seed };
    if (backend === 'cpu') {
      const optimized = runPasses(model!.build({ lastTokenLogitsOnly: true }), passes, { device: cpuProfile, options: { ...compressionOf(o), kvCache: o.kvDtype } });
      extra.compile_ms = round(optimized.timings.reduce((a, t) => a + t.ms, 0));
      const executor = new CpuPagedExecutor(optimized.graph, { numBlocks: poolBlocks(blockSize), blockSize, maxPositions, stopTokens: model!.stopTokens });
      extra.load_ms = round(performance.now() - t0);
      r = await generateInWindow(executor, request, bound, onToken);
    } else {
      const handle = await requestGPUDevice();
      try {
        const tc = performance.now();
        const engine = engineFromDisk ?? (await compile(model!, { device: handle.info, passes, prefillChunk: Math.min(128, Math.max(8, promptIds.length)), quant: o.quant, sparsity: o.sparsity, precision: o.precision, kv: { blockSize, dtype: o.kvDtype }, onProgress: log }));
        extra.compile_ms = round(performance.now() - tc);
        if (engineFromDisk && engine.manifest.kv?.blockSize !== blockSize) log(`--kv-block-size ${blockSize}: the saved engine's blocks hold ${engine.manifest.kv?.blockSize} tokens; using those`);
        const ebs = engine.manifest.kv?.blockSize ?? blockSize;
        const session = await engine.createSession({ device: handle, kvBlocks: poolBlocks(ebs) });
        try {
          extra.load_ms = round(performance.now() - t0);
          extra.device = describeDevice(handle.info);
          const lm = engine.manifest.lm!;
          r = await generateInWindow(new BatchedEngineExecutor(session, { maxPositions: lm.maxPositions, vocabSize: lm.vocabSize, stopTokens: lm.stopTokens }), request, bound, onToken);
        } finally {
          await session.destroy();
        }
      } finally {
        await handle.destroy();
      }
    }
    if (kvH2o) extra.kv_h2o = `${kvH2o.budgetTokens},${kvH2o.recentTokens}`;
    else extra.kv_window = `${kvWindow!.sinkTokens},${kvWindow!.windowTokens}`;
  } else if (spec && backend === 'cpu') {
    const target = runPasses(model!.build({}), passes, { device: cpuProfile, options: { ...compressionOf(o), kvCache: o.kvDtype } });
    extra.compile_ms = round(target.timings.reduce((a, t) => a + t.ms, 0));
    const stopTokens = model!.stopTokens;
    let drafter: Drafter = new NgramDrafter();
    if (spec.kind === 'draft') {
      const draft = runPasses(draftSource!.build({ lastTokenLogitsOnly: true }), passes, { device: cpuProfile, options: { ...compressionOf({ quant: spec.draftQuant }), kvCache: o.kvDtype } });
      drafter = new ModelDrafter(cpuDraftModel(new CpuCausalLM(draft.graph, draftSource!.maxPositions)));
    }
    extra.load_ms = round(performance.now() - t0);
    const sr = await speculativeGenerate(cpuTarget(new CpuCausalLM(target.graph, model!.maxPositions), model!.config.vocabSize, spec.verifyTokens), drafter, promptIds, { ...sampling, stopTokens, draftLength: spec.draftLen });
    r = sr;
    specStats = sr.stats;
  } else if (backend === 'cpu') {
    const optimized = runPasses(model!.build({ lastTokenLogitsOnly: true }), passes, { device: cpuProfile, options: { ...compressionOf(o), kvCache: o.kvDtype }, printIrAfter: o.printIrAfter, print: (text) => process.stderr.write(`${text}\n`) });
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
      const prefillChunk = Math.max(Math.min(128, Math.max(8, promptIds.length)), spec ? spec.verifyTokens + 1 : 0);
      const engine = engineFromDisk ?? (await compile(model!, { device: handle.info, passes, prefillChunk, quant: o.quant, sparsity: o.sparsity, precision: o.precision, kv: { blockSize: o.kvBlockSize, dtype: o.kvDtype }, printIrAfter: o.printIrAfter, print: (text) => process.stderr.write(`${text}\n`), onProgress: log }));
      extra.compile_ms = round(performance.now() - tc);
      const session = await engine.createSession({ device: handle, profile: o.profile, onProgress: (p) => p.stage === 'done' && log(formatLoadTimings(p.timings)) });
      extra.load_ms = round(performance.now() - t0);
      extra.device = describeDevice(handle.info);
      extra.dispatches_per_token = engine.manifest.plans[0].dispatches.length + 1;
      const drafts: { destroy(): Promise<void> }[] = [];
      try {
        if (spec) {
          let drafter: Drafter = new NgramDrafter();
          if (spec.kind === 'draft') {
            const td = performance.now();
            const draftEngine = await compile(draftSource!, { device: handle.info, passes, prefillChunk, quant: spec.draftQuant, precision: o.precision, kv: { blockSize: o.kvBlockSize, dtype: o.kvDtype }, onProgress: (line) => log(`draft ${line}`) });
            const draftSession = await draftEngine.createSession({ device: handle });
            drafts.push(draftSession);
            extra.draft_compile_ms = round(performance.now() - td);
            drafter = new ModelDrafter(engineDraftModel(draftSession));
          }
          const target = engineTarget(session);
          const sr = await speculativeGenerate(target, drafter, promptIds, { ...sampling, stopTokens: engine.manifest.lm!.stopTokens, draftLength: Math.min(spec.draftLen, target.maxVerifyTokens - 1) });
          r = sr;
          specStats = sr.stats;
        } else r = await session.generate(promptIds, sampling);
        if (o.profile) profile = { device: describeDevice(handle.info), rows: [...session.lastProfile] };
      } finally {
        for (const d of drafts) await d.destroy();
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
    ...(spec && specStats ? speculativeMetrics(spec, specStats) : {}),
  };
  const result: GenerateJson = { backend, prompt_ids: promptIds, generated_ids: r.generated, text, metrics };
  if (o.profile) result.profile = (profile?.rows ?? []).map((t) => ({ label: t.label, kernel: t.kernel, ms: t.ms, weight_bytes: t.weightBytes, activation_bytes: t.activationBytes }));
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else log(`[${backend}] prompt ${promptIds.length} tokens in ${metrics.prefill_ms} ms; ${r.generated.length} tokens generated, ${metrics.decode_tokens_per_s} tok/s`);
  if (!o.json && specStats) log(`[speculative ${spec!.kind}] acceptance ${(100 * specStats.acceptanceRate).toFixed(1)}% of ${specStats.draftedTokens} drafted tokens, ${specStats.tokensPerTargetStep.toFixed(2)} tokens per target step (${specStats.targetSteps} steps), mean draft ${specStats.meanDraftLength.toFixed(2)}`);
  return result;
}

/** What `--speculative` asks for, checked before anything loads (undefined when off). */
interface SpeculativeSettings {
  readonly kind: 'ngram' | 'draft';
  readonly draftQuant?: string;
  readonly draftLen: number;
  /** Tokens one verification runs: the longest draft and one more. */
  readonly verifyTokens: number;
}

function speculativeSettings(o: GenerateCommandOptions): SpeculativeSettings | undefined {
  if (o.speculative === undefined) {
    for (const [flag, v] of [['--draft-model', o.draftModel], ['--draft-quant', o.draftQuant], ['--draft-len', o.draftLen]] as const)
      if (v !== undefined) throw new UsageError(`${flag} needs --speculative`);
    return undefined;
  }
  if (o.speculative !== 'ngram' && o.speculative !== 'draft') throw new UsageError(`--speculative must be ngram or draft, got ${String(o.speculative)}`);
  if (o.speculative === 'ngram' && (o.draftModel !== undefined || o.draftQuant !== undefined)) throw new UsageError('--draft-model and --draft-quant go with --speculative draft');
  const draftLen = o.draftLen ?? 4;
  if (!(Number.isInteger(draftLen) && draftLen >= 1 && draftLen <= 64)) throw new UsageError(`--draft-len must be an integer from 1 to 64, got ${draftLen}`);
  const draftQuant = o.draftQuant ?? (o.speculative === 'draft' && !o.draftModel ? 'int4-g32' : undefined);
  compressionOf({ quant: draftQuant }); // a bad scheme is an error now
  return { kind: o.speculative, draftQuant, draftLen, verifyTokens: Math.max(8, draftLen) + 1 };
}

function speculativeMetrics(spec: SpeculativeSettings, s: SpeculativeStats): Record<string, number | string> {
  return {
    speculative: spec.kind,
    ...(spec.draftQuant ? { draft_quant: spec.draftQuant } : {}),
    acceptance_rate: Math.round(s.acceptanceRate * 10_000) / 10_000,
    tokens_per_target_step: round(s.tokensPerTargetStep),
    target_steps: s.targetSteps,
    drafted_tokens: s.draftedTokens,
    accepted_tokens: s.acceptedTokens,
    mean_draft_length: round(s.meanDraftLength),
    draft_ms: round(s.draftSeconds * 1000),
    verify_ms: round(s.verifySeconds * 1000),
  };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

/**
 * One request through a serving session with a bounded KV cache (a sliding window or H2O eviction); timings as
 * `generateTokens` reports them.
 */
async function generateInWindow(
  executor: BatchExecutor,
  request: ServingRequest,
  bound: { kvWindow?: KvWindow; kvEviction?: KvEviction },
  onToken: (id: number) => void,
): Promise<{ generated: number[]; prefillSeconds: number; decodeSeconds: number; stopped: boolean }> {
  const session = new ServingSession(executor, { ...bound, maxBatchTokens: 512 });
  const t0 = performance.now();
  let first: number | undefined;
  const generated: number[] = [];
  let stopped = false;
  for await (const ev of session.submit(request)) {
    if (ev.type === 'token') {
      first ??= performance.now();
      generated.push(ev.id);
      onToken(ev.id);
    } else stopped = ev.reason === 'stop';
  }
  const end = performance.now();
  return { generated, prefillSeconds: ((first ?? end) - t0) / 1000, decodeSeconds: (end - (first ?? end)) / 1000, stopped };
}
