/**
 * What the commands that calibrate on a text share (`quantize` in all its methods, `prune`): checking the files,
 * opening the model with the tokenizer its calibration text needs, refusing models they cannot write back as GGUF
 * llama, and cutting the calibration text into token windows.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { tokenWindows } from '../compress/capture.js';
import type { LoadedModel } from '../frontends/load.js';
import type { LlamaConfig } from '../models/llama.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { requireFile, requireFileOrFolder } from './file-arguments.js';
import { openModel } from './model-input.js';

/** The file arguments of a calibrating command. */
export interface CalibrationFiles {
  /** Model file or folder. */
  readonly model: string;
  /** Tokenizer file (default: the model's own, or one beside it). */
  readonly tokenizer?: string;
  /** Calibration text. */
  readonly calib: string;
  /** Text to score the result on. */
  readonly eval?: string;
  /** Most positions the model is compiled for. */
  readonly maxContext?: number;
}

/**
 * Checks the files of `command`, then opens the model and its tokenizer. With `ggufLlama`, refuses models the command
 * cannot write as a GGUF llama (another family, or half-split RoPE). Throws `UsageError` naming the flag or the model.
 */
export async function openForCalibration(command: string, o: CalibrationFiles, opts: { ggufLlama?: boolean } = {}): Promise<{ model: LoadedModel; tokenizer: TextTokenizer }> {
  requireFileOrFolder('--model', o.model);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  requireFile('--calib', o.calib);
  if (o.eval) requireFile('--eval', o.eval);
  const { model, tokenizer } = await openModel(o.model, o.tokenizer, { maxContext: o.maxContext });
  if (!tokenizer) throw new UsageError(`${command} needs a tokenizer for the calibration text: pass --tokenizer <file> (none found for ${o.model})`);
  if (opts.ggufLlama) {
    if (model.family !== 'llama') throw new UsageError(`${command} writes GGUF llama models; ${o.model} is a ${model.family} model`);
    if (((model.config as LlamaConfig).ropeStyle ?? 'interleaved') !== 'interleaved')
      throw new UsageError(`${command} writes GGUF llama models with interleaved RoPE (llama2.c, GGUF llama); ${o.model} uses half-split RoPE`);
  }
  return { model, tokenizer };
}

/**
 * The calibration text as windows of at most `length` tokens, each starting with BOS, at most `maxTokens` text tokens
 * in all; `UsageError` when it has none.
 */
export async function calibrationWindows(path: string, model: LoadedModel, tokenizer: TextTokenizer, length: number, maxTokens = Infinity): Promise<{ ids: number[]; windows: number[][] }> {
  const ids = tokenizer.encode(await readFile(path, 'utf8'));
  const windows = tokenWindows(ids, model.bosId, Math.min(length, model.maxPositions), maxTokens);
  if (!windows.length || windows[0].length < 2) throw new UsageError(`--calib ${path} has no tokens to calibrate on`);
  return { ids, windows };
}
