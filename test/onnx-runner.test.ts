/**
 * The `onnx-test` conformance runner: one JSON line per folder, exit code 0 only when every folder passed, typed
 * failures and unsupported tests reported as such (never as a pass), the WebGPU backend reported unavailable until
 * `runGraphOnWebGPU` exists, and the comparison tolerances.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compareOutput, onnxTestCommand, webgpuRunner, type OnnxTestResult } from '../src/cli/onnx-test.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { modelBytes, node, T, tensorBytes, valueInfo } from './support/onnx.js';

/** A test folder: `y = x + x` (or another model), with one data set. */
function folder(root: string, name: string, opts: { model?: Uint8Array; input?: Uint8Array; output?: Uint8Array } = {}): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'test_data_set_0'), { recursive: true });
  const model =
    opts.model ??
    modelBytes({ inputs: [valueInfo('x', T.FLOAT, [3])], outputs: [valueInfo('y', T.FLOAT, [3])], nodes: [node('Add', ['x', 'x'], ['y'])] });
  writeFileSync(join(dir, 'model.onnx'), model);
  writeFileSync(join(dir, 'test_data_set_0', 'input_0.pb'), opts.input ?? tensorBytes('x', T.FLOAT, [3], [1, 2, 3]));
  writeFileSync(join(dir, 'test_data_set_0', 'output_0.pb'), opts.output ?? tensorBytes('y', T.FLOAT, [3], [2, 4, 6]));
  return dir;
}

async function run(dirs: string[], backend: 'cpu' | 'webgpu' = 'cpu'): Promise<{ code: number; results: OnnxTestResult[] }> {
  const lines: string[] = [];
  const code = await onnxTestCommand(dirs, { backend, json: true, write: (l) => lines.push(l) });
  return { code, results: lines.map((l) => JSON.parse(l) as OnnxTestResult) };
}

describe('onnx-test', () => {
  it('prints one JSON line per folder; exit code 0 only when all pass', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tw-onnx-test-'));
    folder(root, 'good');
    expect(await run([root])).toEqual({ code: 0, results: [{ test: 'good', status: 'pass', detail: '1 data set matched' }] });
    folder(root, 'wrong', { output: tensorBytes('y', T.FLOAT, [3], [2, 4, 7]) });
    const { code, results } = await run([root]);
    expect(code).toBe(1);
    expect(results.map((r) => [r.test, r.status])).toEqual([
      ['good', 'pass'],
      ['wrong', 'fail'],
    ]);
    expect(results[1].detail).toMatch(/output 0 \('y'\): 1\/3 elements differ; first at 2: got 6, expected 7/);
  });

  it('unsupported ops and dtypes are `unsupported`, bad inputs and missing models `fail`', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tw-onnx-test-'));
    const unknownOp = modelBytes({ inputs: [valueInfo('x', T.FLOAT, [3])], outputs: [valueInfo('y', T.FLOAT, [3])], nodes: [node('Hardmax', ['x'], ['y'])] });
    folder(root, 'a_op', { model: unknownOp });
    const bf16 = modelBytes({ inputs: [valueInfo('x', T.BFLOAT16, [3])], outputs: [valueInfo('y', T.BFLOAT16, [3])], nodes: [node('Identity', ['x'], ['y'])] });
    folder(root, 'b_bf16', { model: bf16 });
    const ints = modelBytes({ inputs: [valueInfo('x', T.INT64, [3])], outputs: [valueInfo('y', T.INT64, [3])], nodes: [node('Add', ['x', 'x'], ['y'])] });
    folder(root, 'c_int64', { model: ints, input: tensorBytes('x', T.INT64, [3], [1, 2, 2 ** 33]), output: tensorBytes('y', T.INT64, [3], [2, 4, 2 ** 34]) });
    mkdirSync(join(root, 'd_empty'));
    const u64 = modelBytes({ inputs: [valueInfo('x', T.UINT64, [3])], outputs: [valueInfo('y', T.UINT64, [3])], nodes: [node('Add', ['x', 'x'], ['y'])] });
    const u64Bytes = (v: bigint[]): Uint8Array => new Uint8Array(BigUint64Array.from(v).buffer);
    folder(root, 'e_uint64', { model: u64, input: tensorBytes('x', T.UINT64, [3], u64Bytes([1n, 2n, 2n ** 33n])), output: tensorBytes('y', T.UINT64, [3], u64Bytes([2n, 4n, 2n ** 34n])) });
    const { code, results } = await run([join(root, 'a_op'), join(root, 'b_bf16'), join(root, 'c_int64'), join(root, 'd_empty'), join(root, 'e_uint64')]);
    expect(code).toBe(1);
    // int64 beyond int32 is held exactly (i64); uint64 beyond uint32 is refused, never truncated
    expect(results.map((r) => r.status)).toEqual(['unsupported', 'unsupported', 'pass', 'fail', 'fail']);
    expect(results[0].detail).toMatch(/Hardmax #0: no converter/);
    expect(results[1].detail).toMatch(/BFLOAT16/);
    expect(results[3].detail).toMatch(/no model.onnx/);
    expect(results[4].detail).toMatch(/^InputError: .*8589934592 \(element 2\) does not fit in uint32/);
  });

  it('narrow integers wrap like ONNX computes them (uint8 200 + 100 = 44, int8 100 + 100 = -56)', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tw-onnx-test-'));
    for (const [name, type, a, sum] of [['u8', T.UINT8, [200, 7, 255], [144, 14, 254]], ['i8', T.INT8, [100, -100, -128], [-56, 56, 0]]] as const) {
      const model = modelBytes({ inputs: [valueInfo('x', type, [3])], outputs: [valueInfo('y', type, [3])], nodes: [node('Add', ['x', 'x'], ['y'])] });
      folder(root, name, { model, input: tensorBytes('x', type, [3], [...a]), output: tensorBytes('y', type, [3], [...sum]) });
    }
    expect((await run([root])).results.map((r) => r.status)).toEqual(['pass', 'pass']);
  });

  it('the webgpu backend is reported unavailable until the engine provides runGraphOnWebGPU', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tw-onnx-test-'));
    folder(root, 'good');
    const engine = await webgpuRunner();
    const { code, results } = await run([root], 'webgpu');
    if (!engine) {
      expect(code).toBe(1);
      expect(results).toEqual([{ test: 'good', status: 'fail', detail: 'webgpu backend unavailable' }]);
    } else expect(results[0].status).not.toBe('unsupported');
  });

  it('compares floats within rtol 1e-3 / atol 1e-7 (f16 looser), integers exactly, NaN with NaN', () => {
    const f = (v: number[], dtype: 'f32' | 'f16' = 'f32'): Tensor => Tensor.from(dtype, [v.length], v);
    expect(compareOutput(f([1.0009, 0]), f([1, 0]))).toBeUndefined();
    expect(compareOutput(f([1.002, 0]), f([1, 0]))).toMatch(/1\/2 elements differ/);
    expect(compareOutput(f([5e-8]), f([0]))).toBeUndefined();
    expect(compareOutput(f([3e-7]), f([0]))).toBeDefined();
    expect(compareOutput(f([1.003], 'f16'), f([1], 'f16'))).toBeUndefined();
    expect(compareOutput(f([NaN, Infinity]), f([NaN, Infinity]))).toBeUndefined();
    expect(compareOutput(f([0, -Infinity]), f([NaN, Infinity]))).toBeDefined();
    expect(compareOutput(Tensor.from('i32', [1], [3]), Tensor.from('i32', [1], [4]))).toBeDefined();
    expect(compareOutput(Tensor.from('i32', [2], [3, 3]), Tensor.from('i32', [1], [3]))).toMatch(/shape/);
  });
});
