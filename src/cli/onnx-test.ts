/**
 * `tensorwright onnx-test`: runs ONNX backend test folders (`model.onnx` plus `test_data_set_N/input_N.pb` and
 * `output_N.pb`, serialized `TensorProto`s matched by index to the graph's inputs and outputs) through the importer,
 * the O3 pipeline (verifier on) and a backend, and compares every output of every data set.
 *
 * Tolerances (the ONNX backend tests'): floats pass when `|actual - expected| <= atol + rtol * |expected|` with
 * rtol 1e-3 and atol 1e-7; f16 outputs are loosened to rtol 4e-3, atol 1e-3 (a few half-precision ulps: the reference
 * kernels round once at the end, other implementations after each step); integer and bool outputs must be exact; NaN
 * matches NaN and infinities must agree. A folder passes only when every output of every data set matches;
 * element types the IR does not hold (float8, bfloat16, strings, …) make it `unsupported`, never `pass`.
 * @module
 */
import { optimizeForWebGPU, runGraphOnWebGPU } from '../compile.js';
import { createTarget } from '../codegen/target.js';
import { probeWebGPU, requestGPUDevice, type DeviceInfo, type GPUDeviceHandle } from '../runtime/device.js';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { TensorwrightError, UnsupportedOpError } from '../errors.js';
import { decodeTensor, decodeTensorProto, importOnnx, onnxInputNames, ShapeInputsRequiredError, type OnnxModel } from '../frontends/onnx/index.js';
import type { Graph } from '../ir/graph.js';
import { runPasses } from '../passes/pipeline.js';
import { runGraph } from '../runtime/cpu/interpreter.js';
import { requireFolder } from './file-arguments.js';
import type { Tensor } from '../runtime/cpu/tensor.js';

/** Outcome of one test folder. */
export interface OnnxTestResult {
  /** The folder's name. */
  readonly test: string;
  /** `pass` only when every output of every data set matched. */
  readonly status: 'pass' | 'fail' | 'unsupported';
  /** What failed, or what is unsupported, or a summary of what passed. */
  readonly detail: string;
}

/** Options of {@link onnxTestCommand}. */
export interface OnnxTestOptions {
  /** Which backend runs the graphs. */
  backend: 'cpu' | 'webgpu';
  /** One JSON object per folder on stdout. */
  json: boolean;
  /** Pass pipeline (default `O3`). */
  passes?: string;
  /** Where result lines go (default: stdout). */
  write?: (line: string) => void;
}

/** Runs a graph on some backend and returns its outputs by name. */
export type Runner = ((graph: Graph, inputs: Record<string, Tensor>) => Promise<Record<string, Tensor>>) & {
  /** How this backend optimizes an imported graph (default: the pass pipeline for the CPU profile). */
  optimize?: (graph: Graph, passes: string) => Graph;
};

/** How far a float output may be from the reference: `|actual - expected| <= atol + rtol * |expected|`. */
export interface Tolerance {
  /** Relative tolerance. */
  readonly rtol: number;
  /** Absolute tolerance. */
  readonly atol: number;
}

/** The tolerance for an output of this dtype; `undefined` means exact (integers, bool). */
export function tolerances(dtype: Tensor['dtype']): Tolerance | undefined {
  if (dtype === 'f32') return { rtol: 1e-3, atol: 1e-7 };
  if (dtype === 'f16') return { rtol: 4e-3, atol: 1e-3 };
  return undefined; // exact
}

/** Why `actual` does not match `expected` (shapes, dtypes, values within {@link tolerances}), or `undefined`. */
export function compareOutput(actual: Tensor, expected: Tensor): string | undefined {
  // ONNX INT64 values are i32 where the importer knows they fit, i64 otherwise: those compare exactly, as int64
  if (actual.data instanceof BigInt64Array || expected.data instanceof BigInt64Array) return compareInt64(actual, expected);
  if (actual.dtype !== expected.dtype) return `dtype ${actual.dtype}, expected ${expected.dtype}`;
  if (actual.shape.length !== expected.shape.length || actual.shape.some((d, i) => d !== expected.shape[i]))
    return `shape [${actual.shape}], expected [${expected.shape}]`;
  const tol = tolerances(expected.dtype);
  let bad = 0;
  let first = -1;
  let worst = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const a = actual.numbers[i];
    const e = expected.numbers[i];
    let ok: boolean;
    if (!tol) ok = a === e;
    else if (Number.isNaN(e)) ok = Number.isNaN(a);
    else if (!Number.isFinite(e)) ok = a === e;
    else {
      const err = Math.abs(a - e);
      ok = err <= tol.atol + tol.rtol * Math.abs(e);
      if (!ok) worst = Math.max(worst, err);
    }
    if (!ok) {
      bad++;
      if (first < 0) first = i;
    }
  }
  if (!bad) return undefined;
  return `${bad}/${expected.data.length} elements differ; first at ${first}: got ${actual.data[first]}, expected ${expected.data[first]}${worst ? `; worst abs error ${worst.toExponential(3)}` : ''}`;
}

/** {@link compareOutput} for int64 outputs (an i32 or i64 tensor against an i32 or i64 one): exact. */
function compareInt64(actual: Tensor, expected: Tensor): string | undefined {
  const ints = (t: Tensor): boolean => t.dtype === 'i32' || t.dtype === 'i64';
  if (!ints(actual) || !ints(expected)) return `dtype ${actual.dtype}, expected ${expected.dtype}`;
  if (actual.shape.length !== expected.shape.length || actual.shape.some((d, i) => d !== expected.shape[i]))
    return `shape [${actual.shape}], expected [${expected.shape}]`;
  const a = actual.data as ArrayLike<number | bigint>;
  const e = expected.data as ArrayLike<number | bigint>;
  let bad = 0;
  let first = -1;
  for (let i = 0; i < e.length; i++)
    if (BigInt(a[i]) !== BigInt(e[i])) {
      bad++;
      if (first < 0) first = i;
    }
  return bad ? `${bad}/${e.length} elements differ; first at ${first}: got ${a[first]}, expected ${e[first]}` : undefined;
}

/** The test data sets of a folder (`test_data_set_0`, …), sorted. */
function dataSets(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => /^test_data_set_\d+$/.test(f) && statSync(join(dir, f)).isDirectory())
    .sort((a, b) => Number(a.slice(14)) - Number(b.slice(14)))
    .map((f) => join(dir, f));
}

/** The `prefix_N.pb` tensors of a data set, by index. */
function readTensors(dir: string, prefix: 'input' | 'output', what: (i: number) => string): Tensor[] {
  const files = readdirSync(dir)
    .map((f) => new RegExp(`^${prefix}_(\\d+)\\.pb$`).exec(f))
    .filter((m): m is RegExpExecArray => !!m)
    .sort((a, b) => Number(a[1]) - Number(b[1]));
  return files.map((m, i) => {
    const bytes = new Uint8Array(readFileSync(join(dir, m[0])));
    const d = decodeTensor(decodeTensorProto(bytes), { what: what(i), file: join(dir, m[0]), isInput: prefix === 'input' });
    return d.tensor!;
  });
}

/** Imports a model (specialized on `shapeInputs`) and runs the pass pipeline over it. */
function compile(bytes: Uint8Array, file: string, passes: string, run: Runner, shapeInputs: Record<string, Tensor> = {}): { model: OnnxModel; graph: Graph } {
  const model = importOnnx(bytes, { file, dir: dirname(file), shapeInputs });
  return { model, graph: run.optimize ? run.optimize(model.graph, passes) : runPasses(model.graph, passes, { verify: true }).graph };
}

/**
 * Runs one test folder on a backend. Never throws for a problem with the test itself: that is its result. A model
 * whose shapes are computed from graph inputs ({@link ShapeInputsRequiredError}) is compiled once per data set with
 * those inputs' values as shape inputs, as TensorRT builds an engine for given shape tensors.
 */
export async function runOnnxTestFolder(dir: string, run: Runner, passes = 'O3'): Promise<OnnxTestResult> {
  const test = basename(dir);
  const file = join(dir, 'model.onnx');
  let bytes = new Uint8Array();
  let names: string[] = [];
  let compiled: { model: OnnxModel; graph: Graph } | undefined;
  let shapeNames: readonly string[] = [];
  try {
    bytes = new Uint8Array(readFileSync(file));
    names = onnxInputNames(bytes, file);
    compiled = compile(bytes, file, passes, run);
  } catch (e) {
    if (!(e instanceof ShapeInputsRequiredError)) return failure(test, e);
    shapeNames = e.inputs;
  }
  const sets = dataSets(dir);
  if (!sets.length) return { test, status: 'fail', detail: 'no test_data_set_* folder' };
  try {
    for (const set of sets) {
      const inputs = readTensors(set, 'input', (i) => `${basename(set)} input ${i} ('${names[i] ?? '?'}')`);
      const expected = readTensors(set, 'output', (i) => `${basename(set)} output ${i}`);
      if (inputs.length !== names.length) return { test, status: 'fail', detail: `${basename(set)} has ${inputs.length} inputs, the model ${names.length}` };
      const named: Record<string, Tensor> = {};
      names.forEach((name, i) => (named[name] = inputs[i]));
      let graph: Graph;
      if (!shapeNames.length) graph = compiled!.graph;
      else
        for (;;) {
          // specialize; an import may name further shape inputs once the first ones are constants
          try {
            graph = compile(bytes, file, passes, run, Object.fromEntries(shapeNames.map((n) => [n, named[n]]))).graph;
            break;
          } catch (e) {
            const more = e instanceof ShapeInputsRequiredError ? e.inputs.filter((n) => !shapeNames.includes(n) && n in named) : [];
            if (!more.length) throw e;
            shapeNames = [...shapeNames, ...more];
          }
        }
      for (const n of shapeNames) delete named[n];
      if (expected.length !== graph.outputs.length) return { test, status: 'fail', detail: `${basename(set)} has ${expected.length} outputs, the model ${graph.outputs.length}` };
      const actual = await run(graph, named);
      for (let i = 0; i < expected.length; i++) {
        const name = graph.outputs[i].name;
        const why = compareOutput(actual[name], expected[i]);
        if (why) return { test, status: 'fail', detail: `${basename(set)} output ${i} ('${name}'): ${why}` };
      }
    }
  } catch (e) {
    return failure(test, e);
  }
  const note = shapeNames.length ? ` (shape inputs ${shapeNames.join(', ')} specialized per data set)` : '';
  return { test, status: 'pass', detail: `${sets.length} data set${sets.length === 1 ? '' : 's'} matched${note}` };
}

function failure(test: string, e: unknown): OnnxTestResult {
  const message = e instanceof Error ? e.message.split('\n').map((l) => l.trim()).filter(Boolean).join(' | ') : String(e);
  if (e instanceof UnsupportedOpError) return { test, status: 'unsupported', detail: message };
  if (e instanceof TensorwrightError) return { test, status: 'fail', detail: `${e.name}: ${message}` };
  return { test, status: 'fail', detail: `internal error: ${e instanceof Error ? `${e.name}: ` : ''}${message}` };
}

/** The CPU reference backend as a {@link Runner}. */
export const cpuRunner: Runner = async (graph, inputs) => runGraph(graph, inputs);

/**
 * The WebGPU runner: compiles each graph with `compileGraph` and runs it on one shared device — `device` when given
 * (left open by `close()`), else one requested on first use (`undefined` when no adapter exists). Call `close()`
 * when done.
 */
export async function webgpuRunner(opts: { device?: GPUDeviceHandle } = {}): Promise<(Runner & { close(): Promise<void> }) | undefined> {
  let info: DeviceInfo;
  if (opts.device) info = opts.device.info;
  else {
    const probe = await probeWebGPU();
    if ('available' in probe) return undefined;
    info = probe;
  }
  const target = createTarget(info);
  let handle = opts.device;
  let owned = false;
  const run = async (g: Graph, i: Record<string, Tensor>): Promise<Record<string, Tensor>> => {
    if (!handle || handle.isLost()) {
      handle = await requestGPUDevice();
      owned = true;
    }
    return runGraphOnWebGPU(g, i, { device: handle, passes: 'O0' });
  };
  // optimize for the device: fusion limited to the forms the WGSL kernels implement
  const optimize = (g: Graph, passes: string): Graph => optimizeForWebGPU(g, target, passes, {}).graph;
  return Object.assign(run, { optimize, close: async () => (owned ? handle?.destroy() : undefined) });
}

/** Test folders named by `dirs`: each a test folder (holding `model.onnx`) or a folder of them. */
export function testFolders(dirs: readonly string[]): string[] {
  return dirs.flatMap((d) => {
    if (existsSync(join(d, 'model.onnx'))) return [d];
    if (!existsSync(d) || !statSync(d).isDirectory()) return [d];
    const children = readdirSync(d)
      .sort()
      .map((f) => join(d, f))
      .filter((f) => existsSync(join(f, 'model.onnx')));
    return children.length ? children : [d]; // a folder holding no test is reported as failing
  });
}

/**
 * Runs every test folder (see {@link testFolders}) and prints one line per folder (JSON with `json`:
 * `{"test", "status", "detail"}`), then, without `json`, a summary. Resolves to the exit code: 0 only when every
 * folder passed.
 */
export async function onnxTestCommand(dirs: readonly string[], opts: OnnxTestOptions): Promise<number> {
  const write = opts.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  // a path that is not there is a mistake in the command, not a failing test
  for (const d of dirs) requireFolder('onnx-test', d);
  const folders = testFolders(dirs);
  const gpu = opts.backend === 'cpu' ? undefined : await webgpuRunner();
  const run = opts.backend === 'cpu' ? cpuRunner : gpu;
  const counts = { pass: 0, fail: 0, unsupported: 0 };
  for (const dir of folders) {
    const r: OnnxTestResult = !existsSync(join(dir, 'model.onnx'))
      ? { test: basename(dir), status: 'fail', detail: `no model.onnx in ${dir}` }
      : run
        ? await runOnnxTestFolder(dir, run, opts.passes)
        : { test: basename(dir), status: 'fail', detail: 'webgpu backend unavailable' };
    counts[r.status]++;
    write(opts.json ? JSON.stringify(r) : `${r.status.padEnd(11)} ${r.test}: ${r.detail}`);
  }
  await gpu?.close();
  if (!opts.json) write(`${counts.pass} passed, ${counts.fail} failed, ${counts.unsupported} unsupported (${folders.length} folders, backend ${opts.backend})`);
  return folders.length > 0 && counts.pass === folders.length ? 0 : 1;
}
