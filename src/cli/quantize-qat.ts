/**
 * `tensorwright quantize --method qat`: quantization-aware training ({@link qatGraph}, straight-through estimator,
 * distillation KL to the f32 model) of a Llama-family model onto an RTN grid, written as GGUF exactly as `quantize`
 * writes RTN on the same grid (2- and 3-bit grids in Q4_1 blocks, Q4_0 with `--sym`, Q8_0 at 8 bits).
 *
 * Trains on windows of {@link QAT_WINDOW} positions of `--calib` (never the evaluation text; `--calib-tokens` caps
 * the tokens used), one window per step for `--steps` steps at Adam learning rate `--lr`, with progress (step, KL) on
 * stderr; prints the per-layer table (each weight's output error against f32, and RTN's), checks that the written file
 * decodes to exactly the weights trained, and with `--eval` scores a text against the f32 model as `eval` does.
 * @module
 */
import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { UsageError } from '../errors.js';
import type { GridSpec } from '../compress/grid.js';
import { qatGraph } from '../compress/qat.js';
import type { LayerReport } from '../compress/compress-graph.js';
import { ggufFileBytes, type GgufKeyValue } from '../export/gguf/writer.js';
import { llamaGguf } from '../export/gguf/llama.js';
import type { GgufLlamaModel } from '../frontends/gguf/model.js';
import { evalGraphs, type EvalResult } from './eval.js';
import { log } from './output.js';
import { calibrationWindows, openForCalibration } from './calibration-input.js';
import { layerTable, verifyWritten, type QuantizeCommandOptions } from './quantize.js';

/** Positions of a QAT training window (BOS and 127 tokens of the calibration text). */
export const QAT_WINDOW = 128;

/** The JSON object `quantize --method qat --json` prints. */
export interface QuantizeQatResult {
  /** The output file. */
  output: string;
  /** Method. */
  method: 'qat';
  /** Grid. */
  grid: GridSpec;
  /** Training steps. */
  steps: number;
  /** Adam's learning rate. */
  lr: number;
  /** Positions of the training windows. */
  calibration_tokens: number;
  /** KL to f32 of each step (nats per position, at the rounded weights, before the step's update). */
  losses: readonly number[];
  /** Bytes written. */
  file_bytes: number;
  /** The per-layer report. */
  layers: readonly LayerReport[];
  /** `eval` figures of the trained model against the f32 model (with `--eval`). */
  eval?: EvalResult;
  /** `eval` figures of RTN on the same grid (the starting point; with `--eval`). */
  eval_rtn?: EvalResult;
}

function positiveInt(flag: string, v: number | undefined, fallback: number): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < 1) throw new UsageError(`${flag} must be a positive integer, got ${v}`);
  return x;
}

/** Runs `quantize --method qat`; resolves to the result (also printed, as a table or as JSON). */
export async function quantizeQatCommand(o: QuantizeCommandOptions): Promise<QuantizeQatResult> {
  if (!o.output) throw new UsageError('--method qat writes a GGUF file: pass -o <file>');
  const output = o.output;
  if (![8, 4, 3, 2].includes(o.bits)) throw new UsageError(`--bits must be 8, 4, 3 or 2, got ${o.bits}`);
  const group = positiveInt('--group', o.group, 32);
  if (group % 32 !== 0) throw new UsageError(`--group must be a multiple of 32 (GGUF blocks), got ${group}`);
  if (o.actOrder) throw new UsageError('--act-order is a GPTQ option (--method gptq)');
  const steps = o.steps ?? 100;
  if (!(Number.isInteger(steps) && steps >= 0)) throw new UsageError(`--steps must be a non-negative integer, got ${o.steps}`);
  const lr = o.lr ?? 1e-3;
  if (!(Number.isFinite(lr) && lr > 0)) throw new UsageError(`--lr must be a positive number, got ${o.lr}`);
  const { model, tokenizer } = await openForCalibration('quantize', o, { ggufLlama: true });
  const spec: GridSpec = { bits: o.bits as GridSpec['bits'], groupSize: group, symmetric: !!o.sym };

  const { windows } = await calibrationWindows(o.calib, model, tokenizer, QAT_WINDOW, o.calibTokens ?? Infinity);
  log(`quantize: qat ${o.bits}-bit, groups of ${group}${spec.symmetric || o.bits === 8 ? ', symmetric' : ''}; ${steps} steps at lr ${lr} on ${windows.length} windows of ${o.calib}`);
  const f32 = model.build({ lastTokenLogitsOnly: false });
  const r = qatGraph(f32, windows, { spec, steps, adam: { lr }, onProgress: log });

  const extra: GgufKeyValue[] = model.format === 'gguf' ? [...(model as GgufLlamaModel).gguf.header.metadata.values()].filter((kv) => kv.key.startsWith('tokenizer.')) : [];
  const { metadata, tensors } = llamaGguf(r.graph, { name: `${basename(o.model)} qat ${o.bits}-bit g${group}`, contextLength: model.declaredContext ?? model.maxPositions, extra });
  const bytes = ggufFileBytes(metadata, tensors);
  await writeFile(output, bytes);
  await verifyWritten(output, r.graph, o.maxContext);
  log(`quantize: wrote ${output} (${(bytes.length / 2 ** 20).toFixed(2)} MiB); it decodes to the weights evaluated here${extra.length ? '' : '; it holds no tokenizer (pass --tokenizer when loading it)'}`);

  const result: QuantizeQatResult = { output, method: 'qat', grid: spec, steps, lr, calibration_tokens: r.calibrationTokens, losses: r.losses, file_bytes: bytes.length, layers: r.layers };
  if (o.eval) {
    const ids = tokenizer.encode(await readFile(o.eval, 'utf8'));
    if (ids[0] !== model.bosId) ids.unshift(model.bosId);
    const most = positiveInt('--eval-tokens', o.evalTokens, Number.MAX_SAFE_INTEGER);
    result.eval = await evalGraphs(model, ids, f32, r.graph, most);
    result.eval_rtn = await evalGraphs(model, ids, f32, r.rtnGraph, most);
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write(`${layerTable(r.layers).join('\n')}\n`);
    for (const [label, e] of [['qat', result.eval], ['rtn', result.eval_rtn]] as const)
      if (e) process.stdout.write(`eval (${label}) on ${o.eval}: ${e.tokens} tokens, ppl ${e.ppl.toFixed(4)} (f32 ${e.ppl_f32.toFixed(4)}), KL mean ${e.kl_mean.toExponential(4)} p99 ${e.kl_p99.toExponential(3)}, top-1 agreement ${(100 * e.top1_agreement).toFixed(2)}%\n`);
  }
  return result;
}
