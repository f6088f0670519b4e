// onnxruntime-web's operator test vectors (../shared/onnx/ort-web-ops/*.jsonc): each test names an op, its domain
// and opset, and attributes; each case gives inputs and expected outputs as JSON. Here a case becomes a one-node ONNX
// model (built with ./onnx.ts) plus its input and expected output tensors, so tests run it through the importer and
// any backend and compare with onnxruntime's expected values.
import { readFileSync } from 'node:fs';
import { packBits } from '../../src/ir/weights.js';
import type { DType } from '../../src/ir/dtype.js';
import { Tensor } from '../../src/runtime/cpu/tensor.js';
import { modelBytes, node, T, tensor, valueInfo, type AttrSpec } from './onnx.js';
import { sharedPath } from './shared.js';

/** One tensor of a case: `data` null for an omitted optional input. */
export interface OrtTensor {
  data: number[] | null;
  dims: number[];
  type: string;
}

/** One case: inputs in the op's input order, expected outputs. */
export interface OrtCase {
  name: string;
  inputs: (OrtTensor | null)[];
  outputs: OrtTensor[];
}

/** One test: an op with attributes and cases. */
export interface OrtTest {
  name: string;
  operator: string;
  opset?: { domain: string; version: number };
  attributes?: { name: string; data: number | number[] | string; type: string }[];
  cases: OrtCase[];
}

/** JSON with `//` and `/* *\/` comments (outside strings) removed. */
function stripComments(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      const start = i;
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      out += text.slice(start, i + 1);
    } else if (ch === '/' && text[i + 1] === '/') {
      while (i < text.length && text[i] !== '\n') i++;
      out += '\n';
    } else if (ch === '/' && text[i + 1] === '*') {
      i = text.indexOf('*/', i + 2) + 1;
    } else out += ch;
  }
  return out;
}

/** The tests of one `.jsonc` file of `../shared/onnx/ort-web-ops`. */
export function readOrtWebOps(file: string): OrtTest[] {
  return JSON.parse(stripComments(readFileSync(sharedPath('onnx', 'ort-web-ops', file), 'utf8'))) as OrtTest[];
}

const TYPES: Record<string, { onnx: number; dtype: DType }> = {
  float32: { onnx: T.FLOAT, dtype: 'f32' },
  float16: { onnx: T.FLOAT16, dtype: 'f16' },
  int32: { onnx: T.INT32, dtype: 'i32' },
  int8: { onnx: T.INT8, dtype: 'i32' },
  uint8: { onnx: T.UINT8, dtype: 'u32' },
  int4: { onnx: T.INT4, dtype: 'i32' },
  uint4: { onnx: T.UINT4, dtype: 'u32' },
};

function typeOf(t: OrtTensor): { onnx: number; dtype: DType } {
  const info = TYPES[t.type];
  if (!info) throw new Error(`ort-web-ops: tensor type '${t.type}' is not handled by the test support`);
  return info;
}

/** A `TensorProto` object for an initializer (4-bit types packed two per byte, as ONNX stores them). */
function initializer(name: string, t: OrtTensor): object {
  const { onnx } = typeOf(t);
  const data = t.data!;
  if (onnx === T.INT4 || onnx === T.UINT4) return tensor(name, onnx, t.dims, packBits(data, 4));
  if (onnx === T.UINT8) return tensor(name, onnx, t.dims, Uint8Array.from(data));
  return tensor(name, onnx, t.dims, data);
}

/** The CPU tensor of a case's input or output. */
export function ortTensor(t: OrtTensor): Tensor {
  return Tensor.from(typeOf(t).dtype, t.dims, t.data!);
}

function attrOf(a: NonNullable<OrtTest['attributes']>[number]): AttrSpec {
  if (a.type === 'int') return { i: a.data as number };
  if (a.type === 'float') return { f: a.data as number };
  if (a.type === 'ints') return { ints: a.data as number[] };
  if (a.type === 'floats') return { floats: a.data as number[] };
  if (a.type === 'string') return { s: a.data as string };
  throw new Error(`ort-web-ops: attribute type '${a.type}' is not handled by the test support`);
}

/** A case as a model: `constant(i)` says which inputs become initializers (the rest are graph inputs, as onnxruntime-web feeds them). */
export function ortCaseModel(test: OrtTest, c: OrtCase, constant: (i: number) => boolean): { bytes: Uint8Array; inputs: Record<string, Tensor>; expected: Tensor[] } {
  const names = c.inputs.map((t, i) => (t && t.data !== null ? `in${i}` : ''));
  const given = c.inputs.map((t, i) => (t && t.data !== null ? { t, i } : undefined)).filter((x): x is { t: OrtTensor; i: number } => !!x);
  const fed = given.filter(({ i }) => !constant(i));
  const domain = test.opset?.domain ?? '';
  const version = test.opset?.version ?? 17;
  const attrs = Object.fromEntries((test.attributes ?? []).map((a) => [a.name, attrOf(a)]));
  const outNames = c.outputs.map((_o, i) => `out${i}`);
  const bytes = modelBytes({
    opset: domain === '' ? Math.max(version, 10) : 21,
    domains: domain === '' ? {} : { [domain]: version },
    inputs: fed.map(({ t, i }) => valueInfo(names[i], typeOf(t).onnx, t.dims)),
    initializers: given.filter(({ i }) => constant(i)).map(({ t, i }) => initializer(names[i], t)),
    outputs: c.outputs.map((o, i) => valueInfo(outNames[i], typeOf(o).onnx, o.dims)),
    nodes: [node(test.operator, names.slice(0, lastGiven(names) + 1), outNames, attrs, 'op', domain)],
  });
  return { bytes, inputs: Object.fromEntries(fed.map(({ t, i }) => [names[i], ortTensor(t)])), expected: c.outputs.map(ortTensor) };
}

function lastGiven(names: string[]): number {
  for (let i = names.length - 1; i >= 0; i--) if (names[i]) return i;
  return -1;
}
