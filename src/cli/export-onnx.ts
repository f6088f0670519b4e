/**
 * `tensorwright export-onnx`: a model file → a standard ONNX model (`-o model.onnx`, plus `model.onnx.data` when its
 * weights need external data) of the graph after the target-independent optimizer: input `input_ids` (int64
 * `[1, seq]`), output `logits`; quantized weights (`--quant`) as onnxruntime's `MatMulNBits` / `GatherBlockQuantized`.
 * @module
 */
import { stat } from 'node:fs/promises';
import { loadModel } from '../frontends/load.js';
import { parseQuantScheme } from '../ir/quant-scheme.js';
import { parseSparsityScheme } from '../ir/sparsity-scheme.js';
import { exportCausalLmOnnxFile, ONNX_EXPORT_OPSET } from '../export/onnx/index.js';
import { log } from './output.js';

/** Options of the `export-onnx` command. */
export interface ExportOnnxCommandOptions {
  /** Model file. */
  model: string;
  /** ONNX file to write. */
  output: string;
  /** Weight quantization scheme (`none`, `int8`, `int4-g32`, …). */
  quant?: string;
  /** Weight sparsity pattern (`none`, `2:4`, …). */
  sparsity?: string;
  /** Pass pipeline (default: the export pipeline, `ONNX_EXPORT_PASSES`). */
  passes?: string;
  /** External data: `auto` (only past 2 GB), `always`, `never`. */
  externalData?: 'auto' | 'always' | 'never';
  /** Write quantized weights dense (only default-domain ops) instead of `MatMulNBits` / `GatherBlockQuantized`. */
  denseWeights?: boolean;
  /** Print one JSON summary on stdout. */
  json?: boolean;
}

/** Runs the command; returns the summary it printed (or would print with `--json`). */
export async function exportOnnxCommand(o: ExportOnnxCommandOptions): Promise<Record<string, unknown>> {
  const model = await loadModel(o.model);
  const quant = parseQuantScheme(o.quant ?? 'none');
  const sparsity = parseSparsityScheme(o.sparsity ?? 'none');
  const t0 = performance.now();
  const { exported, files } = await exportCausalLmOnnxFile(model, o.output, {
    ...(o.passes ? { passes: o.passes } : {}),
    ...(quant ? { quant } : {}),
    ...(sparsity ? { sparsity } : {}),
    externalData: o.externalData ?? 'auto',
    blockQuantized: !o.denseWeights,
  });
  const sizes = await Promise.all(files.map(async (f) => (await stat(f)).size));
  for (const note of exported.notes) log(`note: ${note}`);
  const summary = {
    model: o.model,
    files,
    bytes: sizes.reduce((a, b) => a + b, 0),
    opset: ONNX_EXPORT_OPSET,
    inputs: exported.inputs.map((i) => ({ name: i.name, shape: i.shape.map((d) => (typeof d === 'number' ? d : d.text)) })),
    outputs: exported.outputs.map((i) => ({ name: i.name, shape: i.shape.map((d) => (typeof d === 'number' ? d : d.text)) })),
    quant: o.quant ?? 'none',
    sparsity: o.sparsity ?? 'none',
    nodes: Object.values(exported.ops).reduce((a, b) => a + b, 0),
    ops: exported.ops,
    notes: exported.notes,
    export_ms: Math.round(performance.now() - t0),
  };
  if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else log(`ONNX model written to ${files.join(' + ')}: ${summary.nodes} nodes, ${(summary.bytes / 1048576).toFixed(2)} MiB`);
  return summary;
}
