/**
 * `tensorwright quantize --method smoothquant|w8a8 --bits 8`: calibrates W8A8 (int8 weights per output channel,
 * int8 activations with calibrated per-tensor or per-token scales; SmoothQuant first for `smoothquant`) on `--calib`,
 * prints the per-layer table (activation scale, where SmoothQuant's `1/s` went, the input's range and how much its
 * largest channel dominates it) and with `--eval` scores a text against the f32 model as `eval` does.
 *
 * `--method minmax|percentile|mse|entropy` is `w8a8` with static activation scales by that calibrator
 * (`src/compress/calibrators.ts`); `--calibrator` chooses it for `smoothquant` and `w8a8` (default min-max). With `-o DIR`
 * it writes a Hugging Face folder in the compressed-tensors layout ({@link writeW8A8Folder}), which `eval --model DIR`
 * reads back into the same W8A8 model; `eval --w8a8` runs the same calibration on the CPU reference or WebGPU.
 *
 * `--outliers T` takes LLM.int8's mixed decomposition into W8A8: per matmul input, the channels whose calibration
 * `max|x_j|` exceeds `T ×` the median channel's (at most 2% of K) are computed in f32 against f32 weight columns, and
 * every calibrator sees only the other channels ({@link W8A8Options.outliers}); the table gets an `outl.` column.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { openForCalibration } from './calibration-input.js';
import { UsageError } from '../errors.js';
import type { Calibrator } from '../compress/calibrators.js';
import type { W8A8Layer, W8A8Options } from '../compress/w8a8.js';
import { evalGraphs, type EvalResult } from './eval.js';
import { calibrateModelW8A8, w8a8Model } from './w8a8-model.js';
import { writeW8A8Folder } from './w8a8-file.js';
import type { QuantizeCommandOptions } from './quantize.js';

/** The calibrators of static activation scales; each is also a `--method` meaning W8A8 with it (`--bits 8`). */
export const W8A8_CALIBRATORS: readonly Calibrator[] = ['minmax', 'percentile', 'mse', 'entropy'];

/** The `quantize` methods this command runs. */
export const W8A8_METHODS: readonly string[] = ['smoothquant', 'w8a8', ...W8A8_CALIBRATORS];

/** `quantize` options of the W8A8 methods beyond {@link QuantizeCommandOptions}. */
export interface QuantizeW8A8Options extends QuantizeCommandOptions {
  /** `smoothquant`, `w8a8` with static scales: the calibrator (default `minmax`). */
  calibrator?: string;
  /** The `percentile` calibrator's percentile (default 99.99). */
  percentile?: number;
}

/** The JSON object `quantize --method smoothquant|w8a8|minmax|percentile|mse|entropy --json` prints. */
export interface QuantizeW8A8Result {
  /** Method: a calibrator name is `w8a8` with static scales by it. */
  method: 'smoothquant' | 'w8a8' | Calibrator;
  /** Activation scales. */
  activations: 'static' | 'per-token';
  /** Static scales: the calibrator. */
  calibrator?: Calibrator;
  /** The percentile calibrator's percentile. */
  percentile?: number;
  /** SmoothQuant's α (smoothquant only). */
  alpha?: number;
  /** `--outliers T`: input channels with `max|x_j|` over `T ×` the median channel's kept in f32 (each layer's `outlierChannels`). */
  outliers?: number;
  /** Calibration positions seen. */
  calibration_tokens: number;
  /** The per-layer report. */
  layers: readonly W8A8Layer[];
  /** Weights kept f32, with why. */
  kept: readonly { readonly name: string; readonly why: string }[];
  /** The folder written (with `-o`): `model.safetensors` (compressed-tensors int-quantized) and `config.json`. */
  output?: string;
  /** Bytes of its `model.safetensors`. */
  file_bytes?: number;
  /** Its tensors by safetensors dtype. */
  tensor_types?: Record<string, number>;
  /** `eval` figures against the f32 model (with `--eval`). */
  eval?: EvalResult;
}

/** The per-layer table as text lines. */
export function w8a8Table(layers: readonly W8A8Layer[]): string[] {
  const width = Math.max(5, ...layers.map((l) => l.name.length));
  const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length));
  const outl = layers.some((l) => l.outlierChannels);
  return [
    `${pad('layer', width)}  ${pad('shape', 9)}  ${pad('act.scale', 10)}  ${pad('input max', 9)}  ${pad('max/median', 10)}  ${outl ? 'outl.  ' : ''}smoothing`,
    ...layers.map(
      (l) =>
        `${pad(l.name, width)}  ${pad(l.shape.join('x'), 9)}  ${pad(l.activationScale === 'per-token' ? 'per-token' : l.activationScale.toExponential(3), 10)}  ${pad(l.inputMax.toFixed(3), 9)}  ${pad(l.outlierRatio.toFixed(2), 10)}  ${outl ? pad(String(l.outlierChannels?.length ?? 0), 5) + '  ' : ''}${l.smoothing ? `${l.smoothing} (s ${l.factorRange![1].toFixed(3)}..${l.factorRange![0].toFixed(3)})` : '-'}`,
    ),
    `(input max, max/median: of the smoothed input over the calibration rows${outl ? ', input max without the outlier channels' : ''}; max/median = its largest channel max over the median channel max${outl ? '; outl.: input channels kept in f32' : ''})`,
  ];
}

/** Runs the W8A8 methods of `quantize`; resolves to the result (also printed, as a table or as JSON). */
export async function quantizeW8A8Command(o: QuantizeW8A8Options): Promise<QuantizeW8A8Result> {
  const method = o.method as QuantizeW8A8Result['method'];
  if (!W8A8_METHODS.includes(method)) throw new UsageError(`--method must be one of ${W8A8_METHODS.join(', ')} here, got '${method}'`);
  const byCalibrator = (W8A8_CALIBRATORS as readonly string[]).includes(method);
  if (o.bits !== 8) throw new UsageError(`--method ${method} quantizes weights and activations to int8${byCalibrator ? ' (activation scales by this calibrator)' : ''}: --bits must be 8, got ${o.bits}`);
  const activations = byCalibrator ? 'static' : (o.activations ?? 'static');
  if (activations !== 'static' && activations !== 'per-token') throw new UsageError(`--activations must be static or per-token, got '${activations}'`);
  if (byCalibrator && o.activations !== undefined && o.activations !== 'static') throw new UsageError(`--method ${method} calibrates static activation scales: --activations must be static`);
  if (byCalibrator && o.calibrator !== undefined && o.calibrator !== method) throw new UsageError(`--method ${method} is the calibrator; --calibrator ${o.calibrator} contradicts it`);
  const calibrator = (byCalibrator ? method : (o.calibrator ?? 'minmax')) as Calibrator;
  if (!W8A8_CALIBRATORS.includes(calibrator)) throw new UsageError(`--calibrator must be one of ${W8A8_CALIBRATORS.join(', ')}, got '${calibrator}'`);
  if (activations === 'per-token' && o.calibrator !== undefined) throw new UsageError('--calibrator chooses static activation scales; per-token scales need none');
  if (o.outliers !== undefined && !(o.outliers > 0 && Number.isFinite(o.outliers))) throw new UsageError(`--outliers must be a positive number, got ${o.outliers}`);
  if (o.outliers !== undefined && o.output) throw new UsageError('-o: the compressed-tensors layout has no place for f32 outlier channels beside an int8 weight; drop --outliers to write a folder');
  if (o.percentile !== undefined && calibrator !== 'percentile') throw new UsageError('--percentile goes with the percentile calibrator');
  if (o.percentile !== undefined && !(o.percentile > 0 && o.percentile <= 100)) throw new UsageError(`--percentile must be in (0, 100], got ${o.percentile}`);
  const { model, tokenizer } = await openForCalibration('quantize', o);
  const alpha = method === 'smoothquant' ? (o.alpha ?? 0.5) : undefined;
  const percentile = calibrator === 'percentile' ? (o.percentile ?? 99.99) : undefined;
  const stat = activations === 'static' ? { calibrator, ...(percentile !== undefined ? { percentile } : {}) } : {};
  const outliers = o.outliers !== undefined ? { outliers: o.outliers } : {};
  const plan = await calibrateModelW8A8(model, tokenizer, { activations, alpha, ...stat, ...outliers, calib: o.calib, calibTokens: o.calibTokens });
  const result: QuantizeW8A8Result = { method, activations, ...stat, ...(alpha !== undefined ? { alpha } : {}), ...outliers, calibration_tokens: plan.calibrationTokens, layers: plan.layers, kept: plan.kept };
  if (o.output) {
    const w = writeW8A8Folder(o.output, model, plan);
    Object.assign(result, { output: o.output, file_bytes: w.fileBytes, tensor_types: w.tensorTypes });
  }
  if (o.eval) {
    const ids = tokenizer.encode(await readFile(o.eval, 'utf8'));
    if (ids[0] !== model.bosId) ids.unshift(model.bosId);
    const f32 = model.build({ lastTokenLogitsOnly: false });
    result.eval = await evalGraphs(model, ids, f32, w8a8Model(model, plan).build({ lastTokenLogitsOnly: false }), o.evalTokens ?? Number.MAX_SAFE_INTEGER);
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write(`${w8a8Table(plan.layers).join('\n')}\n`);
    if (plan.kept.length) process.stdout.write(`kept f32: ${plan.kept.map((k) => `${k.name} (${k.why})`).join(', ')}\n`);
    if (result.output) process.stdout.write(`wrote ${result.output}/model.safetensors (${result.file_bytes} bytes; ${Object.entries(result.tensor_types!).map(([k, v]) => `${v} ${k}`).join(', ')}) and config.json (compressed-tensors int-quantized)\n`);
    if (result.eval) {
      const e = result.eval;
      process.stdout.write(`eval on ${o.eval}: ${e.tokens} tokens, ppl ${e.ppl.toFixed(4)} (f32 ${e.ppl_f32.toFixed(4)}), KL mean ${e.kl_mean.toExponential(4)} p99 ${e.kl_p99.toExponential(3)}, top-1 agreement ${(100 * e.top1_agreement).toFixed(2)}%\n`);
    }
  }
  return result;
}
