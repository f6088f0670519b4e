/**
 * `tensorwright compile`: model file → saved engine directory (manifest, kernels' WGSL, weights in kernel layout,
 * and the tokenizer when one is found).
 * @module
 */
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { wholeStepOf } from './bench.js';
import type { KvCacheDType, PrecisionPolicy } from '../ir/target.js';
import { findTokenizerFor, loadModel } from '../frontends/load.js';
import { Llama2cTokenizer } from '../tokenizers/llama2c.js';
import { keyOffsetModel } from './key-offset-model.js';
import { describeDevice, requestGPUDevice } from '../runtime/device.js';
import { log } from './output.js';
import { compileWithTimingCache } from './tuned-compile.js';
import { requireFile, requireFileOrFolder, requireOutputFolder } from './file-arguments.js';

/** Options of the `compile` command. */
export interface CompileCommandOptions {
  /** Model file. */
  model: string;
  /** Output directory. */
  output: string;
  /** Tokenizer to store with the engine (default: found beside the model). */
  tokenizer?: string;
  /** Pass pipeline. */
  passes: string;
  /** Print one JSON summary. */
  json: boolean;
  /** Precision policy (default `auto`). */
  precision?: PrecisionPolicy;
  /** Tokens per KV-cache block (default 16). */
  kvBlockSize?: number;
  /** Element type of the KV cache (default f32). */
  kvDtype?: KvCacheDType;
  /** The whole-step decode kernel (`--whole-step`): `auto` (default) lets the cost model decide. */
  wholeStep?: 'auto' | 'on' | 'off';
  /** Center the cached keys and values and balance the key channels on statistics of this text (`--kv-calib`; for int8/int4 KV caches). */
  kvCalib?: string;
  /** Weight quantization scheme (`none`, `int8`, `int4-g32`, …); the engine stores the quantized weights. */
  quant?: string;
  /** Weight sparsity pattern (`none`, `2:4`, `block32-0.1`, …). */
  sparsity?: string;
  /** Most positions the model is compiled for: a file's declared context is capped to it (default 8192). */
  maxContext?: number;
  /** Most tokens one step runs (default min(context, 128)). */
  prefillChunk?: number;
  /** Time the candidate variants of tunable kernels on this device and keep the fastest (in the timing cache). */
  tune?: boolean;
  /** The timing cache file (default: the user cache directory's); used when present, written by `--tune`. */
  timingCache?: string;
}

/** Runs the command. */
export async function compileCommand(o: CompileCommandOptions): Promise<Record<string, unknown>> {
  // the files first: an output path that is an existing file must not cost a whole compile
  requireFileOrFolder('--model', o.model);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  requireOutputFolder('--output', o.output);
  const loaded = await loadModel(o.model, { maxContext: o.maxContext });
  let model = loaded;
  if (o.kvCalib) {
    const tokPath = o.tokenizer ?? findTokenizerFor(o.model, loaded.config.vocabSize);
    model = await keyOffsetModel(loaded, tokPath ? await Llama2cTokenizer.fromFile(tokPath, loaded.config.vocabSize) : loaded.tokenizer, o.kvCalib);
  }
  const handle = await requestGPUDevice();
  try {
    log(`compiling for ${describeDevice(handle.info)}`);
    const t0 = performance.now();
    const options = { passes: o.passes, prefillChunk: o.prefillChunk, quant: o.quant, sparsity: o.sparsity, precision: o.precision, kv: { blockSize: o.kvBlockSize, dtype: o.kvDtype }, wholeStep: wholeStepOf(o.wholeStep), onProgress: log };
    const { engine, tuning } = await compileWithTimingCache(model, options, handle, o, log);
    await engine.save(o.output);
    const tok = o.tokenizer ?? findTokenizerFor(o.model, model.config.vocabSize);
    if (tok) await copyFile(tok, join(o.output, 'tokenizer.bin'));
    const m = engine.manifest;
    const summary = {
      engine: o.output,
      model: o.model,
      device: m.device.description,
      quant: o.quant ?? 'none',
      sparsity: o.sparsity ?? 'none',
      kernels: m.kernels.length,
      plans: m.plans.map((p) => ({ name: p.name, max_seq: p.maxSeq, dispatches: p.dispatches.length })),
      weight_bytes: engine.weightsByteLength ?? 0,
      activation_bytes: [...m.slots, ...(m.scratch ?? [])].reduce((a, b) => a + b, 0),
      tokenizer: tok ? 'tokenizer.bin' : null,
      compile_ms: Math.round(performance.now() - t0),
      tuned_kernels: m.kernels.filter((k) => k.schedule?.source === 'tuned').length,
      ...(tuning ? { tuning } : {}),
    };
    if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else log(`engine written to ${o.output}: ${summary.kernels} kernels, ${summary.plans.map((p) => `${p.name} ${p.dispatches} dispatches`).join(', ')}, ${(summary.weight_bytes / 1048576).toFixed(2)} MiB of weights`);
    return summary;
  } finally {
    await handle.destroy();
  }
}
