/**
 * `tensorwright quantize`: weight compression with calibration (RTN, GPTQ, AWQ; `src/compress`) of a Llama-family
 * model, written as a GGUF file. Calibrates on `--calib` (never the evaluation text), prints a per-layer table (the
 * relative output error on the calibration inputs, and RTN's for comparison), writes the file, checks that the file
 * decodes to exactly the weights it evaluated, and with `--eval` scores a text against the f32 model as `eval` does.
 *
 * The file's ggml types: 8 bits → Q8_0; 4 bits → Q4_1 (Q4_0 with `--sym`); **3 and 2 bits → the same 4-bit blocks
 * holding a 3-bit or 2-bit grid** (the quality is the grid's, the size 4 bits'); groups of 64 or 128 → 32-element blocks
 * repeating their group's scale. Matrices whose rows are no multiple of the group stay F32, as llama.cpp keeps them.
 * A GGUF input's tokenizer is copied into the output; a llama2.c model's tokenizer is not (pass `--tokenizer` when
 * loading the output).
 *
 * `--budget-bits AVG` (RTN, GPTQ) measures each layer's sensitivity and mixes grids per layer under an average-bit
 * budget: `quantize-mixed.ts`.
 *
 * `--outliers T` (RTN, GPTQ) keeps the input channels whose calibration activation RMS exceeds `T ×` the median
 * channel's (at most 2% of K per matrix) in f32 beside the rounded weight, as a mixed decomposition
 * (`src/compress/outliers.ts`), written as the GGUF tensors `<name>.outlier_idx` (I32) and `<name>.outlier_weight` (F32)
 * next to the usual quantized `<name>`; the table gets an `outliers` column.
 *
 * `--method smoothquant|w8a8|minmax|percentile|mse|entropy --bits 8` (int8 weights and activations) is
 * `quantize-w8a8.ts`: it calibrates, reports, evaluates, and with `-o` writes a compressed-tensors folder.
 * `--method qat` (quantization-aware training onto the RTN grid, `--steps`, `--lr`) is `quantize-qat.ts`.
 * @module
 */
import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { UsageError } from '../errors.js';
import { compressGraph, COMPRESS_METHODS, type CompressMethod, type LayerReport } from '../compress/compress-graph.js';
import { tokenWindows, type CapturedMatmul } from '../compress/capture.js';
import { compressWithOutliers, outlierChannelsOf } from '../compress/outliers.js';
import type { GridSpec } from '../compress/grid.js';
import { ggufFileBytes, type GgufKeyValue } from '../export/gguf/writer.js';
import { ggufLlamaTensorName, llamaGguf } from '../export/gguf/llama.js';
import type { GgufLlamaModel } from '../frontends/gguf/model.js';
import { loadModel, type LoadedModel } from '../frontends/load.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import { decodeWeight } from '../ir/weights.js';
import { evalGraphs, type EvalResult } from './eval.js';
import { log } from './output.js';
import { calibrationWindows, openForCalibration } from './calibration-input.js';
import { quantizeW8A8Command, W8A8_METHODS, type QuantizeW8A8Result } from './quantize-w8a8.js';
import { checkMixedBitsFlags, mixedBitsCompress, mixedBitsTable, type MixedBitsReport } from './quantize-mixed.js';
import type { BitCount } from '../compress/mixed-bits.js';
import { quantizeQatCommand, type QuantizeQatResult } from './quantize-qat.js';

/** Options of the `quantize` command. */
export interface QuantizeCommandOptions {
  /** Model file. */
  model: string;
  /** Tokenizer file (default: the model's own, or one beside it). */
  tokenizer?: string;
  /** Method. */
  method: string;
  /** Grid bits: 8, 4, 3 or 2. */
  bits: number;
  /** Group size along K (a multiple of 32; default 32). */
  group?: number;
  /** Symmetric grids (4, 3, 2 bits: Q4_0 blocks; 8 bits are always symmetric). */
  sym?: boolean;
  /** GPTQ: act-order. */
  actOrder?: boolean;
  /** Calibration text file. */
  calib: string;
  /** Most calibration tokens (default: the whole text). */
  calibTokens?: number;
  /** Output GGUF file (the GGUF methods; the W8A8 methods write none). */
  output?: string;
  /** `smoothquant`: migration strength α (default 0.5). */
  alpha?: number;
  /** `smoothquant`, `w8a8`: activation scales, `static` (default) or `per-token`. */
  activations?: string;
  /** Text to score the result on (as `eval`). */
  eval?: string;
  /** Most tokens of `eval` to score. */
  evalTokens?: number;
  /** Print one JSON object on stdout instead of the table. */
  json: boolean;
  /** Most positions the model is compiled for (default 8192). */
  maxContext?: number;
  /** Mixed bits per layer: the average bits per weight allowed (`quantize-mixed.ts`); `bits` is then ignored. */
  budgetBits?: number;
  /** With `budgetBits`: how bits are counted, `grid`, `packed` (default: grid + f16 scales) or `file`. */
  budgetCount?: string;
  /** With `budgetBits`: the candidate grid bits (default 2,3,4,8). */
  candidateBits?: string;
  /** With `budgetBits`: calibration positions to measure sensitivities on (default 1024). */
  sensitivityTokens?: number;
  /** Keep outlier input channels in f32: those whose activation RMS exceeds this many times the median channel's. */
  outliers?: number;
  /** `qat`: training steps (default 100) and Adam's learning rate (default 1e-3); see `quantize-qat.ts`. */
  steps?: number;
  lr?: number;
}

/** The JSON object `quantize --json` prints. */
export interface QuantizeResult {
  /** The output file. */
  output: string;
  /** Method. */
  method: CompressMethod;
  /** Grid (with `--budget-bits`: group and symmetry; `bits` is the largest candidate, the per-layer bits are in `mixed_bits`). */
  grid: GridSpec;
  /** Whether act-order was used. */
  act_order: boolean;
  /** Calibration tokens seen. */
  calibration_tokens: number;
  /** Bytes written. */
  file_bytes: number;
  /** GGUF tensors by ggml type. */
  tensor_types: Record<string, number>;
  /** The per-layer report. */
  layers: readonly LayerReport[];
  /** `eval` figures of the compressed model against the f32 model (with `--eval`). */
  eval?: EvalResult;
  /** With `--budget-bits`: sensitivities and the bits chosen per layer. */
  mixed_bits?: MixedBitsReport;
}

const GGML_NAMES: Record<number, string> = { 0: 'F32', 2: 'Q4_0', 3: 'Q4_1', 8: 'Q8_0' };

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

/** The per-layer table as text lines. */
export function layerTable(layers: readonly LayerReport[]): string[] {
  const width = Math.max(5, ...layers.map((l) => l.name.length));
  const outl = layers.some((l) => l.outlierChannels !== undefined);
  const outlierCell = (l: LayerReport): string => (outl ? `${pad(String(l.outlierChannels ?? '-'), 8)}  ` : '');
  const head = `${pad('layer', width)}  ${pad('shape', 9)}  ${pad('method', 6)}  bits  group  ${outl ? 'outliers  ' : ''}rel.error  rtn.error  alpha`;
  const rows = layers.map((l) => {
    const err = l.relativeError === undefined ? '-' : `${l.relativeError.toFixed(5)}${l.errorKind === 'weight' ? '*' : ''}`;
    const rtn = l.rtnRelativeError === undefined ? '-' : l.rtnRelativeError.toFixed(5);
    return `${pad(l.name, width)}  ${pad(l.shape.join('x'), 9)}  ${pad(l.method, 6)}  ${pad(String(l.bits ?? '-'), 4)}  ${pad(String(l.groupSize ?? '-'), 5)}  ${outlierCell(l)}${pad(err, 9)}  ${pad(rtn, 9)}  ${l.alpha === undefined ? '' : l.alpha.toFixed(2)}${l.note ? `  (${l.note})` : ''}`;
  });
  return [
    head,
    ...rows,
    '(rel.error: ‖(W_q − W)Xᵀ‖/‖WXᵀ‖ on the calibration inputs; * = ‖W_q − W‖/‖W‖ for tables no matmul reads)',
    ...(outl ? ['(outliers: input channels kept in f32, activation RMS > T × the median channel\'s; rel.error counts them exact)'] : []),
  ];
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

/** Checks that the written file's weights decode to exactly the compressed graph's. */
export async function verifyWritten(path: string, compressed: Graph, maxContext?: number): Promise<LoadedModel> {
  const back = await loadModel(path, { maxContext });
  const want = decodedByName(compressed);
  const got = decodedByName(back.build({ lastTokenLogitsOnly: false }));
  for (const [name, v] of want) {
    const w = got.get(name);
    if (!w || w.length !== v.length || v.some((x, i) => !Object.is(x + 0, w[i] + 0))) throw new Error(`internal: ${path} does not decode to the evaluated weights (tensor '${name}')`);
  }
  return back;
}

function toInt(flag: string, v: number | undefined, fallback: number): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < 1) throw new UsageError(`${flag} must be a positive integer, got ${v}`);
  return x;
}

/** Runs the command; resolves to the result (also printed, as a table or as JSON). */
export async function quantizeCommand(o: QuantizeCommandOptions): Promise<QuantizeResult | QuantizeW8A8Result | QuantizeQatResult> {
  if (W8A8_METHODS.includes(o.method)) return quantizeW8A8Command(o);
  if (o.method === 'qat') return quantizeQatCommand(o);
  if (!o.output) throw new UsageError(`--method ${o.method} writes a GGUF file: pass -o <file>`);
  const output = o.output;
  if (!COMPRESS_METHODS.includes(o.method as CompressMethod)) throw new UsageError(`--method must be one of ${[...COMPRESS_METHODS, ...W8A8_METHODS].join(', ')}, got '${o.method}'`);
  const method = o.method as CompressMethod;
  const candidates = (o.candidateBits ?? '2,3,4,8').split(',').map(Number);
  if (o.budgetBits !== undefined) {
    checkMixedBitsFlags(method, candidates, o.budgetCount ?? 'packed');
    o = { ...o, bits: o.bits ?? Math.max(...candidates) };
  }
  if (![8, 4, 3, 2].includes(o.bits)) throw new UsageError(`--bits must be 8, 4, 3 or 2, got ${o.bits}`);
  const group = toInt('--group', o.group, 32);
  if (group % 32 !== 0) throw new UsageError(`--group must be a multiple of 32 (GGUF blocks), got ${group}`);
  if (o.actOrder && method !== 'gptq') throw new UsageError('--act-order is a GPTQ option (--method gptq)');
  const { model, tokenizer } = await openForCalibration('quantize', o, { ggufLlama: true });
  const spec: GridSpec = { bits: o.bits as GridSpec['bits'], groupSize: group, symmetric: !!o.sym };

  const { ids: calibIds, windows } = await calibrationWindows(o.calib, model, tokenizer, model.maxPositions, o.calibTokens ?? Infinity);
  log(`quantize: ${method} ${o.bits}-bit, groups of ${group}${spec.symmetric || o.bits === 8 ? ', symmetric' : ''}${o.actOrder ? ', act-order' : ''}; calibrating on ${windows.reduce((a, w) => a + w.length, 0)} positions of ${o.calib}`);
  const f32 = model.build({ lastTokenLogitsOnly: false });
  if (o.outliers !== undefined && !(o.outliers > 0 && Number.isFinite(o.outliers))) throw new UsageError(`--outliers must be a positive number, got ${o.outliers}`);
  if (o.outliers !== undefined && method === 'awq') throw new UsageError('--outliers is not combined with --method awq (its matmuls read rescaled activations): use rtn or gptq');
  if (o.outliers !== undefined && o.budgetBits !== undefined) throw new UsageError('--outliers and --budget-bits are not combined (yet): choose one');
  const outliers = o.outliers === undefined ? undefined : { threshold: o.outliers };
  const mixed =
    o.budgetBits === undefined
      ? undefined
      : mixedBitsCompress(f32, model, windows, tokenWindows(calibIds, model.bosId, model.maxPositions, toInt('--sensitivity-tokens', o.sensitivityTokens, 1024)), {
          method,
          spec,
          candidates,
          budgetBits: o.budgetBits,
          count: (o.budgetCount ?? 'packed') as BitCount,
          actOrder: o.actOrder,
          onProgress: log,
        });
  const r0 = mixed ?? compressGraph(f32, windows, { method, spec, actOrder: o.actOrder, onProgress: log, ...(outliers ? { exactColumns: (m: CapturedMatmul) => outlierChannelsOf(m, outliers) } : {}) });
  const r = outliers ? compressWithOutliers(f32, r0, method, outliers) : r0;

  const extra: GgufKeyValue[] = model.format === 'gguf' ? [...(model as GgufLlamaModel).gguf.header.metadata.values()].filter((kv) => kv.key.startsWith('tokenizer.')) : [];
  const { metadata, tensors } = llamaGguf(r.graph, { name: `${basename(o.model)} ${method} ${mixed ? 'mixed' : `${o.bits}-bit`} g${group}`, contextLength: model.declaredContext ?? model.maxPositions, extra });
  const bytes = ggufFileBytes(metadata, tensors);
  await writeFile(output, bytes);
  await verifyWritten(output, r.graph, o.maxContext);
  log(`quantize: wrote ${output} (${(bytes.length / 2 ** 20).toFixed(2)} MiB); it decodes to the weights evaluated here${extra.length ? '' : '; it holds no tokenizer (pass --tokenizer when loading it)'}`);
  const types: Record<string, number> = {};
  for (const t of tensors) types[GGML_NAMES[t.type]] = (types[GGML_NAMES[t.type]] ?? 0) + 1;

  const result: QuantizeResult = { output, method, grid: spec, act_order: !!o.actOrder, calibration_tokens: r.calibrationTokens, file_bytes: bytes.length, tensor_types: types, layers: r.layers, ...(mixed ? { mixed_bits: mixed.report } : {}) };
  if (o.eval) {
    const ids = tokenizer.encode(await readFile(o.eval, 'utf8'));
    if (ids[0] !== model.bosId) ids.unshift(model.bosId);
    result.eval = await evalGraphs(model, ids, f32, r.graph, toInt('--eval-tokens', o.evalTokens, Number.MAX_SAFE_INTEGER));
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write(`${layerTable(r.layers).join('\n')}\n`);
    if (mixed) process.stdout.write(`${mixedBitsTable(mixed.report).join('\n')}\n`);
    if (result.eval) {
      const e = result.eval;
      process.stdout.write(`eval on ${o.eval}: ${e.tokens} tokens, ppl ${e.ppl.toFixed(4)} (f32 ${e.ppl_f32.toFixed(4)}), KL mean ${e.kl_mean.toExponential(4)} p99 ${e.kl_p99.toExponential(3)}, top-1 agreement ${(100 * e.top1_agreement).toFixed(2)}%\n`);
    }
  }
  return result;
}
