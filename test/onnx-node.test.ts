/**
 * ONNX backend node conformance: every folder of `../shared/onnx/node` (598 tests from onnx v1.22) goes through the
 * importer, the O3 pipeline (verifier on) and a backend, and each output of each data set is compared with the
 * reference (rtol 1e-3, atol 1e-7; f16 rtol 4e-3, atol 1e-3; integers and bools exact). Each backend prints a
 * pass/unsupported/fail count per op.
 *
 * CPU: every folder onnxruntime 1.30 passes (per `manifest.json`) whose op is in the done-list passes, and no folder
 * fails outright (a test we cannot run must say `unsupported`, with the reason).
 *
 * WebGPU (one shared device; skipped without an adapter unless `REQUIRE_WEBGPU=1`): at least 95% of those folders
 * pass. The graphs are compiled into engines and run as the CLI's `onnx-test --backend webgpu` does; on lavapipe the
 * whole run takes a few minutes with a cold shader cache, mostly compiling pipelines.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cpuRunner, runOnnxTestFolder, webgpuRunner, type OnnxTestResult, type Runner } from '../src/cli/onnx-test.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, repoRoot, requiredPresent, sharedPath } from './support/shared.js';

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
const present = hasShared && requiredPresent(nodeDir);
if (!present) noteMissingShared('ONNX node conformance tests');

function readManifest(): ManifestEntry[] {
  return JSON.parse(readFileSync(sharedPath('onnx', 'manifest.json'), 'utf8')) as ManifestEntry[];
}

/** Runs every folder of the manifest on `run`. */
async function runAll(manifest: readonly ManifestEntry[], run: Runner): Promise<Map<string, OnnxTestResult>> {
  const results = new Map<string, OnnxTestResult>();
  for (const t of manifest) results.set(t.folder, await runOnnxTestFolder(sharedPath('onnx', 'node', t.folder), run));
  return results;
}

/** Prints the per-op pass/unsupported/fail table of a backend. */
function printTable(backend: string, manifest: readonly ManifestEntry[], results: ReadonlyMap<string, OnnxTestResult>): void {
  const perOp = new Map<string, { pass: number; unsupported: number; fail: number }>();
  for (const t of manifest) {
    const row = perOp.get(t.op) ?? { pass: 0, unsupported: 0, fail: 0 };
    row[results.get(t.folder)!.status]++;
    perOp.set(t.op, row);
  }
  const lines = [...perOp].sort(([a], [b]) => (a < b ? -1 : 1)).map(([op, r]) => `${op.padEnd(20)} ${String(r.pass).padStart(4)} ${String(r.unsupported).padStart(12)} ${String(r.fail).padStart(5)}`);
  const total = [...results.values()].reduce((acc, r) => ({ ...acc, [r.status]: acc[r.status] + 1 }), { pass: 0, unsupported: 0, fail: 0 });
  console.log(`[${backend}]\n${'op'.padEnd(20)} pass  unsupported  fail\n${lines.join('\n')}\n${'total'.padEnd(20)} ${String(total.pass).padStart(4)} ${String(total.unsupported).padStart(12)} ${String(total.fail).padStart(5)}`);
}

/** The counts the README states for the conformance run (the test checks each backend against them). */
interface ReadmeCounts {
  required: number;
  requiredPass: { cpu: number; webgpu: number };
  all: number;
  pass: number;
  unsupported: number;
  fail: number;
}

function readmeCounts(): ReadmeCounts {
  const text = readFileSync(join(repoRoot, 'README.md'), 'utf8').replace(/\s+/g, ' ');
  const req = /(\d+)\/(\d+) pass on cpu and (\d+)\/(\d+) on webgpu/.exec(text);
  const all = /Over all (\d+) folders: (\d+) pass, (\d+) unsupported .*?, (\d+) fail, on each backend/.exec(text);
  if (!req || !all) throw new Error('README.md no longer states the ONNX conformance counts in the form this test checks');
  if (req[2] !== req[4]) throw new Error('README.md states two different required-folder totals');
  return { required: +req[2], requiredPass: { cpu: +req[1], webgpu: +req[3] }, all: +all[1], pass: +all[2], unsupported: +all[3], fail: +all[4] };
}

/** Checks a backend's results against the README's counts. */
function expectReadmeCounts(backend: 'cpu' | 'webgpu', manifest: readonly ManifestEntry[], results: ReadonlyMap<string, OnnxTestResult>): void {
  const stated = readmeCounts();
  const required = requiredOf(manifest);
  const counts = { pass: 0, unsupported: 0, fail: 0 };
  for (const r of results.values()) counts[r.status]++;
  expect({ required: required.length, requiredPass: required.filter((t) => results.get(t.folder)!.status === 'pass').length, all: results.size, ...counts }).toEqual({
    required: stated.required,
    requiredPass: stated.requiredPass[backend],
    all: stated.all,
    pass: stated.pass,
    unsupported: stated.unsupported,
    fail: stated.fail,
  });
  expect(counts.fail).toBe(0);
}

/** The folders that must pass: onnxruntime passes them and their op is in the done-list. */
function requiredOf(manifest: readonly ManifestEntry[]): ManifestEntry[] {
  return manifest.filter((t) => t.ort_1_30_cpu === 'PASS' && DONE.has(t.op));
}

describe.skipIf(!present)('ONNX backend node tests (cpu)', () => {
  it('every onnxruntime-passing test of a done op passes; nothing fails outright', async () => {
    const manifest = readManifest();
    const results = await runAll(manifest, cpuRunner);
    printTable('cpu', manifest, results);

    const required = requiredOf(manifest);
    expect(required.length).toBeGreaterThan(400);
    const missed = required.filter((t) => results.get(t.folder)!.status !== 'pass').map((t) => `${t.folder}: ${results.get(t.folder)!.detail}`);
    expect(missed).toEqual([]);
    const failed = [...results.values()].filter((r) => r.status === 'fail').map((r) => `${r.test}: ${r.detail}`);
    expect(failed).toEqual([]);
    // an unsupported test says why, and is never one onnxruntime passes for a done op (checked above)
    for (const r of results.values()) if (r.status === 'unsupported') expect(r.detail.length).toBeGreaterThan(10);
    expectReadmeCounts('cpu', manifest, results);
  });
});

const gpu = present ? await acquireTestDevice() : null;
afterAll(async () => gpu?.destroy());

describe.skipIf(!present || !gpu)('ONNX backend node tests (webgpu)', () => {
  it('every onnxruntime-passing test of a done op passes, as on cpu; nothing fails outright (the README table)', async () => {
    const manifest = readManifest();
    const run = (await webgpuRunner({ device: gpu! }))!;
    const t0 = performance.now();
    const results = await runAll(manifest, run);
    await run.close();
    printTable('webgpu', manifest, results);

    const required = requiredOf(manifest);
    const passed = required.filter((t) => results.get(t.folder)!.status === 'pass').length;
    const missed = required.filter((t) => results.get(t.folder)!.status !== 'pass').map((t) => `${t.folder}: ${results.get(t.folder)!.detail}`);
    console.log(`[webgpu] ${passed}/${required.length} required folders pass (${((100 * passed) / required.length).toFixed(1)}%) in ${((performance.now() - t0) / 1000).toFixed(0)} s${missed.length ? `; missed:\n  ${missed.join('\n  ')}` : ''}`);
    expect(missed).toEqual([]);
    expect([...results.entries()].filter(([, r]) => r.status === 'fail').map(([f, r]) => `${f}: ${r.detail}`)).toEqual([]);
    expectReadmeCounts('webgpu', manifest, results);
  }, 900_000);
});
