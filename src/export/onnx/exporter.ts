/**
 * The ONNX exporter: an IR {@link Graph} to a standard ONNX model (opset 21, plus onnxruntime's `com.microsoft`
 * domain for quantized weights), so a model optimized here can be served by onnxruntime or Triton.
 *
 * - Graph inputs keep their names and dtypes unless {@link ExportOnnxOptions.inputs} renames them or declares them
 *   int64 (token ids, as ONNX models take them; cast to int32 inside). Symbolic dims become `dim_param`s, and the
 *   graph computes every symbolic size it needs from its inputs' shapes (`dim-values.ts`).
 * - Each node becomes the ONNX ops of `ops.ts`; a `fused` node is written step by step, so graphs after any pipeline
 *   (fusion included) export. Graphs whose attention reads the engine's paged KV cache (after `lower-paged-kv`) have
 *   no ONNX form: an {@link UnsupportedOpError}, as is any op the emitters do not know.
 * - Weights are initializers in `raw_data`; quantized ones feed `MatMulNBits` / `GatherBlockQuantized` packed
 *   (`weights.ts`). A model whose initializers pass the 2 GB protobuf limit is written with external data
 *   (`model.onnx` + `model.onnx.data`) unless that is refused (`externalData: 'never'`: an {@link InputError}).
 * @module
 */
import { writeFile, open } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputError, UnsupportedOpError } from '../../errors.js';
import { attrsOf, isOp } from '../../ir/attrs.js';
import type { Dim } from '../../ir/dim.js';
import type { Graph } from '../../ir/graph.js';
import type { Node } from '../../ir/node.js';
import { inferFusedSteps } from '../../ir/ops.js';
import { pagedAttentionOf } from '../../ir/paged-kv.js';
import { printNode } from '../../ir/printer.js';
import type { WeightEntry } from '../../ir/weights.js';
import { encodeModelProto } from '../../frontends/onnx/schema.js';
import { DimValues, type SymbolSource } from './dim-values.js';
import { OnnxDataType, onnxDataType, OnnxGraphWriter, type ExternalData, type OnnxExportIO } from './graph-writer.js';
import { emitOp, type EmitContext, type ExportValue } from './ops.js';
import { blockQuantized, denseInitializer, type BlockQuantized } from './weights.js';

/** The default-domain opset the exporter writes. */
export const ONNX_EXPORT_OPSET = 21;

/** The ONNX IR version that goes with {@link ONNX_EXPORT_OPSET}. */
export const ONNX_EXPORT_IR_VERSION = 10;

/** Largest total of initializer bytes written inline: protobuf messages end at 2 GiB, and the graph needs room too. */
export const ONNX_INLINE_LIMIT = 2 ** 31 - 2 ** 26;

/** How one graph input is declared in the ONNX model. */
export interface OnnxInputSpec {
  /** Its ONNX name (default: the IR name). */
  readonly name?: string;
  /** Declare an i32 input as int64 (cast to int32 inside the graph), as ONNX models take token ids. */
  readonly int64?: boolean;
}

/** Options of {@link exportOnnx}. */
export interface ExportOnnxOptions {
  /** Renames or retypes graph inputs, by IR name. */
  readonly inputs?: Readonly<Record<string, OnnxInputSpec>>;
  /** ONNX names of graph outputs, by IR name (default: the IR name). */
  readonly outputs?: Readonly<Record<string, string>>;
  /**
   * Longest sequence the model runs (e.g. the model's context): causal masks over symbolic lengths slice a constant
   * `0 … maxPositions-1` instead of computing `Range` (which onnxruntime runs, but importers that need static
   * lengths for `Range`, tensorwright's included, cannot read). Absent: `Range`.
   */
  readonly maxPositions?: number;
  /** Write quantized weights packed for `MatMulNBits` / `GatherBlockQuantized` (default true; false: dense). */
  readonly blockQuantized?: boolean;
  /**
   * External data: `auto` (default) writes initializers of 1 KiB or more to {@link ExportOnnxOptions.externalDataLocation}
   * only when all initializers pass {@link ONNX_INLINE_LIMIT}; `always` does so for any model; `never` keeps them
   * inline and refuses a model over the limit.
   */
  readonly externalData?: 'auto' | 'always' | 'never';
  /** The inline limit `auto` and `never` apply (default {@link ONNX_INLINE_LIMIT}; smaller values let tests and tools exercise external data). */
  readonly inlineLimitBytes?: number;
  /** File name of the external data, relative to the model file (default `model.onnx.data`). */
  readonly externalDataLocation?: string;
  /** `producer_version` written in the model (default `''`). */
  readonly producerVersion?: string;
}

/** An exported model. */
export interface OnnxExport {
  /** The serialized `ModelProto`. */
  readonly model: Uint8Array;
  /** The external-data file, when initializers were written to one. */
  readonly external?: ExternalData;
  /** Graph inputs as declared. */
  readonly inputs: readonly OnnxExportIO[];
  /** Graph outputs as declared. */
  readonly outputs: readonly OnnxExportIO[];
  /** ONNX nodes by op type. */
  readonly ops: Readonly<Record<string, number>>;
  /** Bytes of all initializers. */
  readonly initializerBytes: number;
  /** What the export did that a reader should know (weights written dense, and why). */
  readonly notes: readonly string[];
}

/** Where symbolic dims can be read: each plain symbol at the first graph input and axis that has it. */
function symbolSources(graph: Graph, onnxName: (irName: string) => string): Map<string, SymbolSource> {
  const out = new Map<string, SymbolSource>();
  for (const inp of graph.inputs)
    inp.shape.forEach((d, axis) => {
      if (typeof d === 'number' || d.terms.size !== 1) return;
      const [[monomial, coef]] = [...d.terms];
      if (coef === 1 && monomial !== '' && !monomial.includes('*') && !out.has(monomial)) out.set(monomial, { input: onnxName(inp.attrs.name), axis });
    });
  return out;
}

/** Exports `graph` as an ONNX model. */
export function exportOnnx(graph: Graph, opts: ExportOnnxOptions = {}): OnnxExport {
  const paged = pagedAttentionOf(graph);
  if (paged.size > 0)
    throw new UnsupportedOpError(['attention'], `${paged.size} attention node(s) read the engine's paged KV cache (the graph is past 'lower-paged-kv'), which ONNX has no form of: export the graph before the WebGPU lowering stages`);
  const w = new OnnxGraphWriter();
  const notes: string[] = [];
  const inputSpec = (name: string): OnnxInputSpec => opts.inputs?.[name] ?? {};
  for (const name of Object.keys(opts.inputs ?? {})) if (!graph.inputs.some((i) => i.attrs.name === name)) throw new InputError(`export: the graph has no input '${name}' (inputs: ${graph.inputs.map((i) => i.attrs.name).join(', ')})`);
  for (const name of Object.keys(opts.outputs ?? {})) if (!graph.outputs.some((o) => o.name === name)) throw new InputError(`export: the graph has no output '${name}' (outputs: ${graph.outputs.map((o) => o.name).join(', ')})`);
  const onnxInputName = (irName: string): string => inputSpec(irName).name ?? irName;
  const dims = new DimValues(w, symbolSources(graph, onnxInputName));

  const layouts = new Map<WeightEntry, BlockQuantized | string>();
  const packed = new Map<WeightEntry, Set<string>>();
  const dense = new Map<WeightEntry, string>();
  let iotaTable: string | undefined;
  const ctx: EmitContext = {
    w,
    dims,
    blockQuantized: opts.blockQuantized ?? true,
    iota(length: Dim): string {
      if (typeof length === 'number') return w.int64(Array.from({ length }, (_v, i) => i));
      return dims.memo(`iota:${length.text}`, () => {
        if (opts.maxPositions === undefined) return w.op('Range', [w.int64([0], []), w.op('Squeeze', [dims.dim(length), w.int64([0])]), w.int64([1], [])]);
        iotaTable ??= w.initializer('positions_0_to_max', OnnxDataType.INT64, [opts.maxPositions], BigInt64Array.from({ length: opts.maxPositions }, (_v, i) => BigInt(i)));
        return w.op('Slice', [iotaTable, w.int64([0]), dims.dim(length), w.int64([0])]);
      });
    },
    blockLayout(e) {
      let q = layouts.get(e);
      if (q === undefined) layouts.set(e, (q = blockQuantized(e)));
      return q;
    },
    packedUse(e, op) {
      let s = packed.get(e);
      if (!s) packed.set(e, (s = new Set()));
      s.add(op);
    },
  };

  // graph input and output names first, so no value the emitters name can take one
  const ioNames = [...graph.inputs.map((i) => onnxInputName(i.attrs.name)), ...graph.outputs.map((o) => opts.outputs?.[o.name] ?? o.name)];
  const twice = ioNames.find((n, i) => ioNames.indexOf(n) !== i);
  if (twice !== undefined) throw new InputError(`export: '${twice}' would name two graph inputs or outputs; ONNX values have one name each (rename with the inputs or outputs option)`);
  for (const n of ioNames) w.claim(n);
  const inputs: OnnxExportIO[] = [];
  const values = new Map<Node, ExportValue>();
  for (const inp of graph.inputs) {
    const spec = inputSpec(inp.attrs.name);
    const name = onnxInputName(inp.attrs.name);
    // an i64 input is INT64 already; `int64` declares an i32 input as INT64 (token ids), narrowed by a Cast inside
    const widened = spec.int64 && inp.dtype !== 'i64';
    if (widened && inp.dtype !== 'i32') throw new InputError(`export: input '${inp.attrs.name}' is ${inp.dtype}; only i32 inputs can be declared int64`);
    inputs.push({ name, dataType: widened ? OnnxDataType.INT64 : onnxDataType(inp.dtype), shape: inp.shape });
    let cast: string | undefined;
    values.set(inp, { type: inp, name: () => (widened ? (cast ??= w.op('Cast', [name], { to: OnnxDataType.INT32 })) : name) });
  }

  for (const n of graph.nodes()) {
    if (values.has(n)) continue;
    if (isOp(n, 'input')) throw new InputError(`export: input '${n.attrs.name}' is used but is not one of the graph's inputs`);
    if (isOp(n, 'weight')) {
      const e = graph.weights.get(n.attrs.id);
      values.set(n, { type: n, weight: e, name: () => denseName(w, e, dense) });
      continue;
    }
    const args = n.inputs.map((x) => values.get(x)!);
    const where = (): string => printNode(n);
    let name: string;
    if (isOp(n, 'fused')) {
      const { steps, types } = inferFusedSteps(n.inputs, attrsOf(n, 'fused').steps);
      const results: ExportValue[] = [];
      steps.forEach((st, j) => {
        const stepArgs = st.args.map((a) => (a >= 0 ? args[a] : results[-a - 1]));
        const stepName = emitOp(ctx, st, stepArgs, types[j], () => `step ${j} of ${where()}`);
        results.push({ type: types[j], name: () => stepName });
      });
      name = results[results.length - 1].name();
    } else name = emitOp(ctx, n, args, n, where);
    values.set(n, { type: n, name: () => name });
  }

  const outputs: OnnxExportIO[] = graph.outputs.map((o) => {
    const name = opts.outputs?.[o.name] ?? o.name;
    w.node('Identity', [values.get(o.node)!.name()], {}, { outputNames: [name] });
    return { name, dataType: onnxDataType(o.node.dtype), shape: o.node.shape };
  });

  for (const [e, ops] of packed) if (dense.has(e)) notes.push(`weight '${e.name}' is stored twice: packed for ${[...ops].join(', ')} and dense for its other uses`);
  for (const [e, q] of layouts) if (typeof q === 'string' && dense.has(e)) notes.push(`weight '${e.name}' (${e.encoding.kind}) is written dense (decoded values): ${q}`);
  for (const e of dense.keys())
    if (e.encoding.kind !== 'dense' && e.encoding.kind !== 'quantized') notes.push(`weight '${e.name}' (${e.encoding.kind}) is written dense (decoded values): ONNX has no ${e.encoding.kind} storage`);
    else if (e.encoding.kind === 'quantized' && !layouts.has(e)) notes.push(`weight '${e.name}' (quantized) is written dense (decoded values): no matmul or embedding lookup reads it packed`);

  const total = w.initializerBytes;
  const mode = opts.externalData ?? 'auto';
  const limit = opts.inlineLimitBytes ?? ONNX_INLINE_LIMIT;
  if (mode === 'never' && total > limit)
    throw new InputError(`export: the model has ${total} bytes of initializers, more than one ONNX protobuf holds inline (${limit} bytes; protobuf messages end at 2 GiB): write external data (externalData 'auto' or 'always', --external-data auto|always)`);
  const useExternal = mode === 'always' || (mode === 'auto' && total > limit);
  const location = opts.externalDataLocation ?? 'model.onnx.data';
  if (useExternal && (location !== basename(location) || location === '' || location.startsWith('.')))
    throw new InputError(`export: external data location '${location}' must be a plain file name beside the model`);
  const { model, external } = w.modelObject({
    inputs,
    outputs,
    opset: ONNX_EXPORT_OPSET,
    irVersion: ONNX_EXPORT_IR_VERSION,
    producerVersion: opts.producerVersion ?? '',
    graphName: typeof graph.meta.family === 'string' ? graph.meta.family : 'tensorwright',
    ...(useExternal ? { external: { location, minBytes: 1024, alignment: 4096 } } : {}),
  });
  return { model: encodeModelProto(model), ...(external ? { external } : {}), inputs, outputs, ops: w.opHistogram(), initializerBytes: total, notes };
}

function denseName(w: OnnxGraphWriter, e: WeightEntry, dense: Map<WeightEntry, string>): string {
  let name = dense.get(e);
  if (!name) dense.set(e, (name = denseInitializer(w, e)));
  return name;
}

/**
 * Writes an export to `path` (and its external data beside it, under the name it was exported with); returns the
 * files written.
 */
export async function writeOnnx(path: string, exported: OnnxExport): Promise<string[]> {
  await writeFile(path, exported.model);
  if (!exported.external) return [path];
  const dataPath = join(dirname(path), exported.external.location);
  const fh = await open(dataPath, 'w');
  try {
    for (const chunk of exported.external.chunks) await fh.write(chunk);
  } finally {
    await fh.close();
  }
  return [path, dataPath];
}

/** An export and the files it was written to. */
export interface OnnxExportFile {
  /** The export. */
  readonly exported: OnnxExport;
  /** The files written: the model, then its external data when there is some. */
  readonly files: string[];
}

/** {@link exportOnnx} then {@link writeOnnx}, external data (when written) named after the file (`model.onnx.data`). */
export async function exportOnnxFile(graph: Graph, path: string, opts: ExportOnnxOptions = {}): Promise<OnnxExportFile> {
  const exported = exportOnnx(graph, { ...opts, externalDataLocation: opts.externalDataLocation ?? `${basename(path)}.data` });
  return { exported, files: await writeOnnx(path, exported) };
}
