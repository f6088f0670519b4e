/**
 * `tensorwright generate`: text generation from a model file, run.c-compatible step counting and sampling.
 * @module
 */
import { DeviceError, UsageError } from '../errors.js';
import { findTokenizerFor, loadModel } from '../frontends/load.js';
import { Llama2cTokenizer } from '../frontends/llama2c/tokenizer.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';
import { generateTokens } from '../runtime/generate.js';
import { log } from './output.js';
import { runPasses } from '../passes/pipeline.js';
import { cpuProfile } from '../passes/device-profile.js';
import { countKernels } from '../ir/stats.js';

/** Options of the `generate` command (as parsed from the command line). */
export interface GenerateCommandOptions {
  /** Model file. */
  model: string;
  /** Tokenizer file (default: found beside the model). */
  tokenizer?: string;
  /** Prompt text. */
  prompt?: string;
  /** Positions to run, prompt included. */
  steps: number;
  /** Sampling temperature (0 = greedy). */
  temperature: number;
  /** Nucleus sampling threshold. */
  topp: number;
  /** RNG seed. */
  seed: number;
  /** Backend. */
  backend: 'cpu' | 'webgpu';
  /** Print one JSON object instead of text. */
  json: boolean;
  /** Pass pipeline (default `O3`). */
  passes?: string;
  /** Print the IR after these passes (or `all`). */
  printIrAfter?: readonly string[] | 'all';
}

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
}

/** Runs the command; resolves to the JSON result (also printed). */
export async function generateCommand(o: GenerateCommandOptions): Promise<GenerateJson> {
  if (o.backend !== 'cpu' && o.backend !== 'webgpu') throw new UsageError(`--backend must be cpu or webgpu, got ${o.backend}`);
  const t0 = performance.now();
  const model = await loadModel(o.model);
  const tokPath = o.tokenizer ?? findTokenizerFor(o.model, model.config.vocabSize);
  const tokenizer = tokPath ? await Llama2cTokenizer.fromFile(tokPath, model.config.vocabSize) : undefined;
  if (!tokenizer && o.prompt) throw new UsageError(`a --prompt needs a tokenizer: pass --tokenizer <file> (none found beside ${o.model})`);
  if (!tokenizer) log('no tokenizer given or found beside the model: generating from BOS, ids only');
  const promptIds = tokenizer ? tokenizer.encode(o.prompt ?? '') : [model.bosId];
  if (o.backend === 'webgpu')
    throw new DeviceError('DEVICE_ERROR', 'generation on WebGPU is not available in this version (the WGSL runtime is still being built); use --backend cpu');
  const passes = o.passes ?? 'O3';
  const optimized = runPasses(model.build({ lastTokenLogitsOnly: true }), passes, {
    device: cpuProfile,
    printIrAfter: o.printIrAfter,
    print: (text) => process.stderr.write(`${text}\n`),
  });
  const lm = new CpuCausalLM(optimized.graph, model.maxPositions);
  const tLoad = performance.now();
  if (!o.json) process.stdout.write(tokenizer ? tokenizer.decode(promptIds) : '');
  let prev = promptIds[promptIds.length - 1];
  const r = await generateTokens(lm, promptIds, {
    steps: o.steps,
    temperature: o.temperature,
    topp: o.topp,
    seed: o.seed,
    stopTokens: model.stopTokens,
    onToken: (id) => {
      if (!o.json && tokenizer) process.stdout.write(tokenizer.decodePiece(prev, id));
      prev = id;
    },
  });
  if (!o.json) process.stdout.write('\n');
  const text = tokenizer ? tokenizer.decode([...promptIds, ...r.generated]) : '';
  const decodeTokens = Math.max(r.generated.length - 1, 0);
  const metrics = {
    model: o.model,
    format: model.format,
    load_ms: round(tLoad - t0),
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
    steps: o.steps,
    passes,
    compile_ms: round(optimized.timings.reduce((a, t) => a + t.ms, 0)),
    kernels_per_forward: countKernels(optimized.graph),
  };
  const result: GenerateJson = { backend: o.backend, prompt_ids: promptIds, generated_ids: r.generated, text, metrics };
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else log(`[${o.backend}] prompt ${promptIds.length} tokens in ${metrics.prefill_ms} ms; ${r.generated.length} tokens generated, ${metrics.decode_tokens_per_s} tok/s`);
  return result;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
