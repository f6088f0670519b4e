/**
 * A causal language model as one ONNX graph for a forward over a whole sequence (prefill, no KV cache): input
 * `input_ids` (int64 `[1, seq]`, `seq` dynamic), output `logits` (`[1, seq, vocab]`). The model's graph is built
 * without KV-cache inputs, its positions become `0 … seq-1` inside the graph ({@link positionsFromIota}), the
 * target-independent passes run ({@link prepareForOnnx}, with `--quant` / `--sparsity`), and the result is exported.
 * @module
 */
import type { Graph } from '../../ir/graph.js';
import { exportOnnx, exportOnnxFile, type ExportOnnxOptions, type OnnxExport, type OnnxExportFile } from './exporter.js';
import { positionsFromIota, prepareForOnnx, type PrepareForOnnxOptions } from './prepare.js';

/** What the export needs of a causal LM (a loaded model is one): its graph builder and context length. */
export interface ExportableCausalLM {
  /** Builds the decoder graph (inputs `tokens`, `positions`; output `logits`), here without KV cache. */
  build(opts: { kvCache?: boolean }): Graph;
  /** Longest sequence the model supports. */
  readonly maxPositions: number;
}

/** Options of {@link exportCausalLmOnnx}: the pipeline's and the exporter's (inputs and positions are fixed). */
export type CausalLmOnnxOptions = PrepareForOnnxOptions & Omit<ExportOnnxOptions, 'inputs' | 'outputs' | 'maxPositions'>;

/** The IR graph {@link exportCausalLmOnnx} exports: no KV cache, positions inside, after the export pipeline. */
export function causalLmExportGraph(model: ExportableCausalLM, opts: PrepareForOnnxOptions = {}): Graph {
  return prepareForOnnx(positionsFromIota(model.build({ kvCache: false }), model.maxPositions), opts).graph;
}

function exportOptions(model: ExportableCausalLM, opts: CausalLmOnnxOptions): ExportOnnxOptions {
  return { ...opts, inputs: { tokens: { name: 'input_ids', int64: true } }, maxPositions: model.maxPositions };
}

/** A causal LM's export and the IR graph it was written from (the graph to run on the CPU reference for comparison). */
export interface CausalLmOnnxExport {
  /** The IR graph exported. */
  readonly graph: Graph;
  /** The export. */
  readonly exported: OnnxExport;
}

/** Exports `model` (see the module comment); returns the IR graph exported and the export. */
export function exportCausalLmOnnx(model: ExportableCausalLM, opts: CausalLmOnnxOptions = {}): CausalLmOnnxExport {
  const graph = causalLmExportGraph(model, opts);
  return { graph, exported: exportOnnx(graph, exportOptions(model, opts)) };
}

/** {@link exportCausalLmOnnx} written to `path` (external data, when written, as `<file>.data` beside it). */
export async function exportCausalLmOnnxFile(model: ExportableCausalLM, path: string, opts: CausalLmOnnxOptions = {}): Promise<CausalLmOnnxExport & OnnxExportFile> {
  const graph = causalLmExportGraph(model, opts);
  return { graph, ...(await exportOnnxFile(graph, path, exportOptions(model, opts))) };
}
