/**
 * ONNX backend node conformance on the CPU backend: every folder of `../shared/onnx/node` (598 tests from
 * onnx v1.22) goes through the importer, the O3 pipeline (verifier on) and the interpreter, and each output of each
 * data set is compared with the reference (rtol 1e-3, atol 1e-7; f16 rtol 4e-3, atol 1e-3; integers and bools
 * exact). Prints a pass/unsupported/fail count per op. Asserts that every folder onnxruntime 1.30 passes (per
 * `manifest.json`) whose op is in the done-list passes here too, and that no folder fails outright (a test we cannot
 * run must say `unsupported`, with the reason).
 */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cpuRunner, runOnnxTestFolder, type OnnxTestResult } from '../src/cli/onnx-test.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

interface ManifestEntry {
  folder: string;
  op: string;
  opset: number;
  ort_1_30_cpu: string;
}

/** The ops whose onnxruntime-passing tests must all pass. */
const DONE = new Set([
  'MatMul', 'Gemm',
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sqrt', 'Reciprocal', 'Neg', 'Exp', 'Log', 'Tanh', 'Erf', 'Relu', 'Sigmoid', 'Equal',
  'Softmax', 'LayerNormalization', 'RMSNormalization', 'Gelu', 'ReduceMean', 'ReduceSum', 'ReduceMax',
  'Reshape', 'Transpose', 'Concat', 'Slice', 'Gather', 'Split', 'Unsqueeze', 'Squeeze', 'Cast', 'Where', 'Expand',
  'Range', 'Trilu', 'Attention', 'RotaryEmbedding', 'DequantizeLinear', 'MatMulInteger',
]);

const nodeDir = sharedPath('onnx', 'node');
const present = hasShared && existsSync(nodeDir);
if (!present) noteMissingShared('ONNX node conformance tests');

describe.skipIf(!present)('ONNX backend node tests (cpu)', () => {
  it('every onnxruntime-passing test of a done op passes; nothing fails outright', async () => {
    const manifest = JSON.parse(readFileSync(sharedPath('onnx', 'manifest.json'), 'utf8')) as ManifestEntry[];
    const results = new Map<string, OnnxTestResult>();
    for (const t of manifest) results.set(t.folder, await runOnnxTestFolder(sharedPath('onnx', 'node', t.folder), cpuRunner));

    // per-op table
    const perOp = new Map<string, { pass: number; unsupported: number; fail: number }>();
    for (const t of manifest) {
      const row = perOp.get(t.op) ?? { pass: 0, unsupported: 0, fail: 0 };
      row[results.get(t.folder)!.status]++;
      perOp.set(t.op, row);
    }
    const lines = [...perOp].sort(([a], [b]) => (a < b ? -1 : 1)).map(([op, r]) => `${op.padEnd(20)} ${String(r.pass).padStart(4)} ${String(r.unsupported).padStart(12)} ${String(r.fail).padStart(5)}`);
    const total = [...results.values()].reduce((acc, r) => ({ ...acc, [r.status]: acc[r.status] + 1 }), { pass: 0, unsupported: 0, fail: 0 });
    console.log(`${'op'.padEnd(20)} pass  unsupported  fail\n${lines.join('\n')}\n${'total'.padEnd(20)} ${String(total.pass).padStart(4)} ${String(total.unsupported).padStart(12)} ${String(total.fail).padStart(5)}`);

    const required = manifest.filter((t) => t.ort_1_30_cpu === 'PASS' && DONE.has(t.op));
    expect(required.length).toBeGreaterThan(400);
    const missed = required.filter((t) => results.get(t.folder)!.status !== 'pass').map((t) => `${t.folder}: ${results.get(t.folder)!.detail}`);
    expect(missed).toEqual([]);
    const failed = [...results.values()].filter((r) => r.status === 'fail').map((r) => `${r.test}: ${r.detail}`);
    expect(failed).toEqual([]);
    // an unsupported test says why, and is never one onnxruntime passes for a done op (checked above)
    for (const r of results.values()) if (r.status === 'unsupported') expect(r.detail.length).toBeGreaterThan(10);
  });
});
