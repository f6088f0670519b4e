/**
 * `tensorwright prune`: pruning of a Llama-family model (`src/compress`) with a saliency (magnitude, Wanda, SNIP,
 * GraSP, Fisher) under a pattern (unstructured, N:M along K, B×B blocks), calibrated on `--calib` (never the
 * evaluation text) on the CPU reference backend, optionally fine-tuned with the masks fixed (`--finetune STEPS`),
 * written as a GGUF file with every weight F32 and zeros where pruned. Prints a per-layer table (achieved sparsity)
 * or one JSON object with `--json`; with `--eval` also scores a text against the f32 model as `eval` does.
 *
 * The output's N:M pattern is recoverable: `compile --sparsity N:M` (magnitude N:M) of the file keeps exactly the
 * weights the mask kept, and a `block<B>` file compiles with `--sparsity block<B>-<1 − S>` keeping exactly its blocks.
 * `--heads K` and `--ffn-channels K` remove K query heads (whole GQA groups) and K FFN channels from every layer first
 * ({@link pruneStructured}: the matmuls shrink, the config follows); a `--pattern` then prunes the smaller model.
 * @module
 */
import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { finetuneOnly, PRUNE_METHODS, pruneGraph, type PruneMethod, type PrunedLayer, type PruneResult } from '../compress/prune-graph.js';
import { pruneStructured, type StructuredPruneReport } from '../models/llama-structured-prune.js';
import { parsePrunePattern, patternName, patternSparsity, type PrunePattern, type PruneScope } from '../compress/prune-mask.js';
import { ggufFileBytes, type GgufKeyValue } from '../export/gguf/writer.js';
import { ggufLlamaTensorName, llamaGguf } from '../export/gguf/llama.js';
import type { GgufLlamaModel } from '../frontends/gguf/model.js';
import { loadModel } from '../frontends/load.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import { decodeWeight } from '../ir/weights.js';
import { evalGraphs, type EvalResult } from './eval.js';
import { log } from './output.js';
import { calibrationWindows, openForCalibration } from './calibration-input.js';

/** Options of the `prune` command. */
export interface PruneCommandOptions {
  /** Model file. */
  model: string;
  /** Tokenizer file (default: the model's own, or one beside it). */
  tokenizer?: string;
  /** Saliency method. */
  method: string;
  /** Pattern: `unstructured`, `N:M`, `block<B>` (optional with `heads` or `ffnChannels` alone). */
  pattern?: string;
  /** Share of weights pruned (implied by N:M). */
  sparsity?: number;
  /** Which weights compete: `row`, `layer`, `global` (default: `row` for Wanda unstructured, else `layer`). */
  scope?: string;
  /** Query heads removed per layer (whole GQA groups). */
  heads?: number;
  /** FFN channels removed per layer. */
  ffnChannels?: number;
  /** Fine-tuning steps after pruning. */
  finetune?: number;
  /** Adam's learning rate for fine-tuning. */
  lr?: number;
  /** Calibration text file. */
  calib: string;
  /** Most calibration tokens (default: the whole text). */
  calibTokens?: number;
  /** Positions per calibration window (default 128). */
  window?: number;
  /** Output GGUF file. */
  output: string;
  /** Text to score the result on (as `eval`). */
  eval?: string;
  /** Most tokens of `eval` to score. */
  evalTokens?: number;
  /** Print one JSON object on stdout instead of the table. */
  json: boolean;
  /** Most positions the model is compiled for. */
  maxContext?: number;
}

/** The JSON object `prune --json` prints. */
export interface PruneResultJson {
  /** The output file. */
  output: string;
  /** Method. */
  method: PruneMethod;
  /** Pattern as written (`unstructured`, `2:4`, `block4`), or `none` (structured pruning alone). */
  pattern: string;
  /** Which weights competed (absent without a pattern). */
  scope?: PruneScope;
  /** Requested sparsity (0 without a pattern). */
  sparsity: number;
  /** Achieved sparsity over every pruned weight (0 without a pattern). */
  achieved_sparsity: number;
  /** Structured pruning: what was removed (with `--heads` or `--ffn-channels`). */
  structured?: StructuredPruneReport;
  /** Calibration positions (over every window). */
  calibration_tokens: number;
  /** Fine-tuning steps. */
  finetune_steps: number;
  /** Fine-tuning: mean loss of the first and of the last 10 steps (absent without fine-tuning). */
  finetune_loss?: { first: number; last: number };
  /** Bytes written. */
  file_bytes: number;
  /** Per pruned weight: name, shape, kept, total, sparsity. */
  layers: readonly PrunedLayer[];
  /** `eval` figures against the f32 model (with `--eval`). */
  eval?: EvalResult;
}

const SCOPES: readonly PruneScope[] = ['row', 'layer', 'global'];

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

/** The per-layer table as text lines. */
export function pruneTable(layers: readonly PrunedLayer[]): string[] {
  const width = Math.max(5, ...layers.map((l) => l.name.length));
  return [`${pad('layer', width)}  ${pad('shape', 9)}  ${pad('kept', 7)}  ${pad('total', 7)}  sparsity`, ...layers.map((l) => `${pad(l.name, width)}  ${pad(l.shape.join('x'), 9)}  ${pad(String(l.kept), 7)}  ${pad(String(l.total), 7)}  ${l.sparsity.toFixed(4)}`)];
}

/** Weights of a graph by llama.cpp tensor name, decoded. */
function decodedByName(g: Graph): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const n of g.nodes())
    if (isOp(n, 'weight')) {
      const e = g.weights.get(attrsOf(n, 'weight').id);
      out.set(ggufLlamaTensorName(e.name) ?? e.name, decodeWeight(e));
    }
  return out;
}

function positiveInt(flag: string, v: number | undefined, fallback: number, min = 1): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < min) throw new UsageError(`${flag} must be an integer >= ${min}, got ${v}`);
  return x;
}

/** Flag checks that need no file: method, pattern, sparsity, scope, structured flags. */
function checkFlags(o: PruneCommandOptions): { method: PruneMethod; pattern?: PrunePattern; sparsity: number; scope?: PruneScope; structured: boolean } {
  if (!PRUNE_METHODS.includes(o.method as PruneMethod)) throw new UsageError(`--method must be one of ${PRUNE_METHODS.join(', ')}, got '${o.method}'`);
  const structured = !!(o.heads || o.ffnChannels);
  if (structured && o.method !== 'magnitude' && o.method !== 'wanda') throw new UsageError(`structured pruning (--heads, --ffn-channels) scores channels and heads with --method magnitude or wanda, not ${o.method}`);
  if (o.scope !== undefined && !SCOPES.includes(o.scope as PruneScope)) throw new UsageError(`--scope must be one of ${SCOPES.join(', ')}, got '${o.scope}'`);
  if (o.pattern === undefined) {
    if (!structured) throw new UsageError('--pattern is required (unstructured, N:M, block<B>) unless --heads or --ffn-channels asks for structured pruning alone');
    if (o.sparsity !== undefined) throw new UsageError('--sparsity needs a --pattern');
    return { method: o.method as PruneMethod, sparsity: 0, structured };
  }
  try {
    const pattern = parsePrunePattern(o.pattern);
    return { method: o.method as PruneMethod, pattern, sparsity: patternSparsity(pattern, o.sparsity), scope: o.scope as PruneScope | undefined, structured };
  } catch (e) {
    if (e instanceof InputError) throw new UsageError(e.message);
    throw e;
  }
}

/** Runs the command; resolves to the result (also printed, as a table or as JSON). */
export async function pruneCommand(o: PruneCommandOptions): Promise<PruneResultJson> {
  const { method, pattern, sparsity, scope, structured } = checkFlags(o);
  const steps = positiveInt('--finetune', o.finetune, 0, 0);
  const windowLength = positiveInt('--window', o.window, 128, 2);
  if (o.lr !== undefined && !(o.lr > 0)) throw new UsageError(`--lr must be positive, got ${o.lr}`);
  const { model, tokenizer } = await openForCalibration('prune', o, { ggufLlama: true });

  const { windows } = await calibrationWindows(o.calib, model, tokenizer, windowLength, o.calibTokens ?? Infinity);
  if (!windows.length || windows[0].length < 2) throw new UsageError(`--calib ${o.calib} has no tokens to calibrate on`);
  const f32 = model.build({ lastTokenLogitsOnly: false });
  const s = structured ? pruneStructured(f32, windows, { method: method as 'magnitude' | 'wanda', heads: o.heads, ffnChannels: o.ffnChannels, onProgress: log }) : undefined;
  if (s) log(`prune: structured: FFN channels ${s.report.hiddenDim.join(' -> ')}, query heads ${s.report.heads.join(' -> ')}, KV heads ${s.report.kvHeads.join(' -> ')} per layer`);
  const shrunk = s?.graph ?? f32;
  const adam = o.lr ? { lr: o.lr } : undefined;
  const r: PruneResult = pattern
    ? pruneGraph(shrunk, windows, { method, pattern, sparsity, scope, finetuneSteps: steps, adam, onProgress: log })
    : { ...finetuneOnly(shrunk, windows, steps, adam), masks: new Map(), layers: [], sparsity: 0, calibrationTokens: windows.reduce((a, w) => a + w.length, 0) };

  const extra: GgufKeyValue[] = model.format === 'gguf' ? [...(model as GgufLlamaModel).gguf.header.metadata.values()].filter((kv) => kv.key.startsWith('tokenizer.')) : [];
  const what = [s ? `ffn ${s.report.hiddenDim[1]} heads ${s.report.heads[1]}` : '', pattern ? `${patternName(pattern)} ${sparsity.toFixed(2)}` : ''].filter(Boolean).join(' ');
  const { metadata, tensors } = llamaGguf(r.graph, { name: `${basename(o.model)} ${method} ${what}`, contextLength: model.declaredContext ?? model.maxPositions, extra });
  const bytes = ggufFileBytes(metadata, tensors);
  await writeFile(o.output, bytes);
  // the file must decode to exactly the weights pruned here
  const back = decodedByName((await loadModel(o.output, { maxContext: o.maxContext })).build({ lastTokenLogitsOnly: false }));
  for (const [name, v] of decodedByName(r.graph)) {
    const w = back.get(name);
    if (!w || w.length !== v.length || v.some((x, i) => !Object.is(x + 0, w[i] + 0))) throw new Error(`internal: ${o.output} does not decode to the pruned weights (tensor '${name}')`);
  }
  log(`prune: wrote ${o.output} (${(bytes.length / 2 ** 20).toFixed(2)} MiB, F32 with zeros where pruned)${extra.length ? '' : '; it holds no tokenizer (pass --tokenizer when loading it)'}`);

  const losses = r.finetuneLosses;
  const meanOf = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const result: PruneResultJson = {
    output: o.output,
    method,
    pattern: pattern ? patternName(pattern) : 'none',
    ...(r.scope ? { scope: r.scope } : {}),
    sparsity,
    achieved_sparsity: r.sparsity,
    ...(s ? { structured: s.report } : {}),
    calibration_tokens: r.calibrationTokens,
    finetune_steps: steps,
    ...(losses?.length ? { finetune_loss: { first: meanOf(losses.slice(0, 10)), last: meanOf(losses.slice(-10)) } } : {}),
    file_bytes: bytes.length,
    layers: r.layers,
  };
  if (o.eval) {
    const ids = tokenizer.encode(await readFile(o.eval, 'utf8'));
    if (ids[0] !== model.bosId) ids.unshift(model.bosId);
    result.eval = await evalGraphs(model, ids, f32, r.graph, positiveInt('--eval-tokens', o.evalTokens, Number.MAX_SAFE_INTEGER));
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write(`${pruneTable(r.layers).join('\n')}\n`);
    if (s) process.stdout.write(`structured (${method}): FFN channels ${s.report.hiddenDim.join(' -> ')}, query heads ${s.report.heads.join(' -> ')}, KV heads ${s.report.kvHeads.join(' -> ')} per layer\n`);
    process.stdout.write(`${method} ${pattern ? `${patternName(pattern)} (${r.scope} scope)` : 'no pattern'}: sparsity ${r.sparsity.toFixed(4)} over ${r.layers.length} weights${losses?.length ? `; fine-tuned ${steps} steps, loss ${result.finetune_loss!.first.toFixed(4)} -> ${result.finetune_loss!.last.toFixed(4)}` : ''}\n`);
    if (result.eval) {
      const e = result.eval;
      process.stdout.write(`eval on ${o.eval}: ${e.tokens} tokens, ppl ${e.ppl.toFixed(4)} (f32 ${e.ppl_f32.toFixed(4)}), KL mean ${e.kl_mean.toExponential(4)} p99 ${e.kl_p99.toExponential(3)}, top-1 agreement ${(100 * e.top1_agreement).toFixed(2)}%\n`);
    }
  }
  return result;
}
