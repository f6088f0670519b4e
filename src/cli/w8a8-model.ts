/**
 * W8A8 (optionally after SmoothQuant) for the command line: calibrating a loaded model on a text
 * ({@link calibrateModelW8A8}) and the model whose every build applies the plan ({@link w8a8Model}), which `eval`
 * scores on the CPU reference or WebGPU and `quantize --method smoothquant|w8a8` reports.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { tokenWindows } from '../compress/capture.js';
import type { Calibrator } from '../compress/calibrators.js';
import { applyW8A8, calibrateW8A8, type W8A8Activations, type W8A8Options, type W8A8Plan } from '../compress/w8a8.js';
import type { LoadedModel } from '../frontends/load.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { log } from './output.js';

/** The W8A8 choices of a command. */
export interface W8A8Choice {
  /** Activation scales. */
  readonly activations: W8A8Activations;
  /** SmoothQuant's α (absent: plain W8A8). */
  readonly alpha?: number;
  /** Static scales: the calibrator (default min-max). */
  readonly calibrator?: Calibrator;
  /** `calibrator: 'percentile'`: the percentile (default 99.99). */
  readonly percentile?: number;
  /** Calibration text file. */
  readonly calib: string;
  /** Most calibration tokens. */
  readonly calibTokens?: number;
  /** Outlier input channels kept in f32: `max|x_j|` over `T ×` the median channel's ({@link W8A8Options.outliers}). */
  readonly outliers?: number;
}

/** Calibrates W8A8 for `model` on the text `choice.calib` (tokenized by `tokenizer`), on the CPU reference backend. */
export async function calibrateModelW8A8(model: LoadedModel, tokenizer: TextTokenizer, choice: W8A8Choice): Promise<W8A8Plan> {
  const ids = tokenizer.encode(await readFile(choice.calib, 'utf8'));
  const windows = tokenWindows(ids, model.bosId, model.maxPositions, choice.calibTokens ?? Infinity);
  if (!windows.length || windows[0].length < 2) throw new UsageError(`--calib ${choice.calib} has no tokens to calibrate on`);
  log(`w8a8: ${choice.alpha !== undefined ? `SmoothQuant (alpha ${choice.alpha}) then ` : ''}W8A8 with ${choice.activations} activation scales${choice.activations === 'static' ? ` (${choice.calibrator ?? 'minmax'} calibration)` : ''}${choice.outliers !== undefined ? `, outlier channels (max|x| > ${choice.outliers} × median) in f32` : ''}; calibrating on ${windows.reduce((a, w) => a + w.length, 0)} positions of ${choice.calib}`);
  return calibrateW8A8(model.build({ lastTokenLogitsOnly: false }), windows, { activations: choice.activations, smoothQuantAlpha: choice.alpha, calibrator: choice.calibrator, percentile: choice.percentile, ...(choice.outliers !== undefined ? { outliers: { threshold: choice.outliers } } : {}), onProgress: log });
}

/** `model`, every graph it builds rewritten by `plan` (the calibration's weights and W8A8 matmuls). */
export function w8a8Model(model: LoadedModel, plan: W8A8Plan): LoadedModel {
  return { ...model, build: (opts) => applyW8A8(model.build(opts), plan) };
}
