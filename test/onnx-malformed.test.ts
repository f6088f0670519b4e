/**
 * Malformed and hostile ONNX files: every problem is a typed error (ModelFormatError naming the field or tensor,
 * UnsupportedOpError listing every unsupported node, InputError for a run's bad input), never a crash, a hang or an
 * allocation the file does not pay for. External data is read from the model's directory and confined to it.
 */
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, ModelFormatError, TensorwrightError, UnsupportedOpError } from '../src/errors.js';
import { decodeTensor, decodeTensorProto, importOnnx, looksLikeOnnx, readOnnx } from '../src/frontends/onnx/index.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { modelBytes, node, T, tensor, tensorBytes, valueInfo } from './support/onnx.js';
import { hasShared, sharedPath } from './support/shared.js';

/** The error `f` throws (fails the test when it returns). */
function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error');
}

/** `y = x + w` with `w` the given initializer. */
function addModel(w: object): Uint8Array {
  return modelBytes({
    inputs: [valueInfo('x', T.FLOAT, [2])],
    outputs: [valueInfo('y', T.FLOAT, [2])],
    initializers: [w],
    nodes: [node('Add', ['x', 'w'], ['y'])],
  });
}

const f32Bytes = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);

describe('malformed protobuf', () => {
  it('empty, garbage and truncated bytes are ModelFormatErrors', () => {
    expect(thrown(() => importOnnx(new Uint8Array()))).toBeInstanceOf(ModelFormatError);
    expect(thrown(() => importOnnx(new TextEncoder().encode('definitely not a model')))).toBeInstanceOf(ModelFormatError);
    // a graph field claiming 2 GiB of bytes
    const huge = Uint8Array.from([0x08, 0x07, 0x3a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00]);
    const e = thrown(() => importOnnx(huge, { file: 'huge.onnx' }));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as ModelFormatError).message).toMatch(/^huge\.onnx: ModelProto at byte offset \d+/);
  });

  it.skipIf(!hasShared)('a real model truncated anywhere throws a typed error', () => {
    const bytes = new Uint8Array(readFileSync(sharedPath('onnx', 'models', 'gpt2_megatron', 'model.onnx')));
    for (let cut = 1; cut < bytes.length; cut += 211) {
      const e = thrown(() => importOnnx(bytes.subarray(0, cut)));
      expect(e, `truncated at ${cut}`).toBeInstanceOf(TensorwrightError);
    }
  });

  it('randomly corrupted models import or throw a typed error, promptly', () => {
    const good = modelBytes({
      opset: 13,
      inputs: [valueInfo('x', T.FLOAT, ['n', 4])],
      outputs: [valueInfo('y', T.FLOAT, [])],
      initializers: [tensor('w', T.FLOAT, [4, 4], Array.from({ length: 16 }, (_v, i) => i)), tensor('shape', T.INT64, [2], [-1, 2])],
      nodes: [node('MatMul', ['x', 'w'], ['h']), node('Relu', ['h'], ['r']), node('Reshape', ['r', 'shape'], ['y'])],
    });
    expect(importOnnx(good).graph.output('y').shape[1]).toBe(2);
    const rng = new Rng(7);
    let ok = 0;
    for (let trial = 0; trial < 400; trial++) {
      const bad = good.slice();
      for (let k = 0; k <= rng.int(3); k++) bad[rng.int(bad.length)] = rng.int(256);
      try {
        importOnnx(bad);
        ok++;
      } catch (e) {
        expect(e, `trial ${trial}: ${String(e)}`).toBeInstanceOf(TensorwrightError);
      }
    }
    expect(ok).toBeGreaterThan(0);
  });

  it('looksLikeOnnx recognizes a model by its first fields', () => {
    expect(looksLikeOnnx(addModel(tensor('w', T.FLOAT, [2], [1, 2])))).toBe(true);
    expect(looksLikeOnnx(new TextEncoder().encode('GGUF....'))).toBe(false);
    expect(looksLikeOnnx(new Uint8Array(3))).toBe(false);
    // a llama2.c header whose first int32 (dim = 264) starts like an ir_version field
    expect(looksLikeOnnx(new Uint8Array(Int32Array.from([264, 512, 2, 4, 4, 32, 64]).buffer))).toBe(false);
  });
});

describe('malformed tensors', () => {
  it('raw_data whose size disagrees with the dims names the tensor and the byte offset of its data', () => {
    const e = thrown(() => importOnnx(addModel(tensor('w', T.FLOAT, [2], f32Bytes([1, 2, 3]))), { file: 'm.onnx' })) as ModelFormatError;
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.field).toBe("initializer 'w'");
    expect(e.offset).toBeGreaterThan(0);
    expect(e.message).toMatch(/raw_data holds 12 bytes, but FLOAT\[2\] needs 8/);
  });

  it('typed data whose count disagrees with the dims is an error', () => {
    expect(thrown(() => importOnnx(addModel(tensor('w', T.FLOAT, [2], [1]))))).toBeInstanceOf(ModelFormatError);
  });

  it('dims whose product overflows are refused before anything is allocated', () => {
    const e = thrown(() => importOnnx(addModel(tensor('w', T.FLOAT, [2 ** 31, 2 ** 31, 2 ** 31], f32Bytes([1])))));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as Error).message).toMatch(/more than 2147483647 elements/);
    expect(thrown(() => importOnnx(addModel(tensor('w', T.FLOAT, [-2], [1, 2]))))).toBeInstanceOf(ModelFormatError);
  });

  it('tables the importer would compute for huge shapes (Range, Trilu) are refused, not allocated', () => {
    const range = modelBytes({
      opset: 13,
      inputs: [],
      outputs: [valueInfo('r', T.INT64, [])],
      initializers: [tensor('a', T.INT64, [], [0]), tensor('b', T.INT64, [], [2 ** 31 - 1]), tensor('d', T.INT64, [], [1])],
      nodes: [node('Range', ['a', 'b', 'd'], ['r'])],
    });
    expect(() => importOnnx(range)).toThrow(/Range of 2147483647 elements is too large/);
    const trilu = modelBytes({ opset: 14, inputs: [valueInfo('x', T.FLOAT, [1 << 20, 1 << 20])], outputs: [valueInfo('y', T.FLOAT, [])], nodes: [node('Trilu', ['x'], ['y'])] });
    expect(() => importOnnx(trilu)).toThrow(UnsupportedOpError);
  });

  it('an unsupported element type is an UnsupportedOpError, not a crash', () => {
    const e = thrown(() => importOnnx(addModel(tensor('w', T.BFLOAT16, [2], new Uint8Array(4))))) as UnsupportedOpError;
    expect(e).toBeInstanceOf(UnsupportedOpError);
    expect(e.message).toMatch(/BFLOAT16/);
  });

  it('a run input holding int64 values beyond int32 is decoded exactly (i64); uint64 beyond uint32 is an InputError (not truncated)', () => {
    const d = decodeTensor(decodeTensorProto(tensorBytes('x', T.INT64, [2], [1, 2 ** 40])), { what: 'input 0', isInput: true });
    expect(d.tensor?.dtype).toBe('i64');
    expect(Array.from(d.tensor!.data as BigInt64Array)).toEqual([1n, 2n ** 40n]);
    const e = thrown(() => decodeTensor(decodeTensorProto(tensorBytes('x', T.UINT64, [2], new Uint8Array(BigUint64Array.of(1n, 2n ** 40n).buffer))), { what: 'input 0', isInput: true }));
    expect(e).toBeInstanceOf(InputError);
    expect((e as Error).message).toMatch(/1099511627776 \(element 1\) does not fit in uint32/);
  });
});

describe('malformed graphs', () => {
  it('a cycle is a ModelFormatError naming its nodes', () => {
    const bytes = modelBytes({
      inputs: [valueInfo('x', T.FLOAT, [2])],
      outputs: [valueInfo('b', T.FLOAT, [2])],
      nodes: [node('Add', ['x', 'b'], ['a'], {}, 'first'), node('Add', ['a', 'x'], ['b'], {}, 'second')],
    });
    const e = thrown(() => importOnnx(bytes));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as Error).message).toMatch(/cycle through nodes .*Add 'first'/);
  });

  it('a missing initializer or input, or an output nothing produces, is a ModelFormatError naming it', () => {
    const missing = modelBytes({
      inputs: [valueInfo('x', T.FLOAT, [2])],
      outputs: [valueInfo('y', T.FLOAT, [2])],
      nodes: [node('Add', ['x', 'w'], ['y'], {}, 'uses_w')],
    });
    expect(() => importOnnx(missing)).toThrow(/Add 'uses_w'.*reads 'w', which no node, initializer or graph input produces/);
    const noOutput = modelBytes({ inputs: [valueInfo('x', T.FLOAT, [2])], outputs: [valueInfo('z', T.FLOAT, [2])], nodes: [] });
    expect(() => importOnnx(noOutput)).toThrow(ModelFormatError);
  });

  it('shapes that do not fit their ops are reported per node', () => {
    const bytes = modelBytes({
      inputs: [valueInfo('x', T.FLOAT, [2, 3]), valueInfo('y', T.FLOAT, [4, 5])],
      outputs: [valueInfo('z', T.FLOAT, [])],
      nodes: [node('MatMul', ['x', 'y'], ['z'], {}, 'mm')],
    });
    expect(() => importOnnx(bytes)).toThrow(/MatMul 'mm': matmul: contracted dims differ/);
  });

  it('an unsupported model is ONE UnsupportedOpError listing every unsupported node (not the ones after them)', () => {
    const bytes = modelBytes({
      opset: 17,
      inputs: [valueInfo('x', T.FLOAT, [2, 3])],
      outputs: [valueInfo('a', T.FLOAT, []), valueInfo('b', T.FLOAT, []), valueInfo('c', T.FLOAT, [])],
      initializers: [tensor('pads', T.INT64, [4], [0, 1, 0, 1])],
      nodes: [
        node('NonZero', ['x'], ['nz'], {}, 'find'),
        node('Cast', ['nz'], ['a'], { to: { i: T.FLOAT } }, 'after_find'),
        node('Pad', ['x', 'pads'], ['b'], { mode: { s: 'reflect' } }, 'mirror'),
        node('TopK', ['x'], ['c', 'idx'], {}, 'best'),
      ],
    });
    const e = thrown(() => importOnnx(bytes)) as UnsupportedOpError;
    expect(e).toBeInstanceOf(UnsupportedOpError);
    expect([...e.ops].sort()).toEqual(['NonZero', 'Pad', 'TopK']);
    expect(e.message).toMatch(/3 nodes cannot be imported/);
    expect(e.message).toMatch(/NonZero 'find': no converter/);
    expect(e.message).toMatch(/Pad 'mirror': Pad mode 'reflect'/);
    expect(e.message).toMatch(/TopK 'best'/);
    expect(e.message).not.toMatch(/after_find/);
  });

  it('non-default domains, and opsets outside 10..25, are unsupported', () => {
    const custom = modelBytes({
      inputs: [valueInfo('x', T.FLOAT, [2])],
      outputs: [valueInfo('y', T.FLOAT, [2])],
      nodes: [{ ...(node('FusedGemm', ['x'], ['y'], {}, 'ms') as object), domain: 'com.microsoft' }],
    });
    expect(() => importOnnx(custom)).toThrow(/domain 'com.microsoft'/);
    const old = modelBytes({ opset: 7, inputs: [valueInfo('x', T.FLOAT, [2])], outputs: [valueInfo('x', T.FLOAT, [2])], nodes: [] });
    expect(() => importOnnx(old)).toThrow(UnsupportedOpError);
  });
});

describe('external data', () => {
  function externalModel(location: string, length = 8, offset = 0): Uint8Array {
    const w = {
      name: 'w',
      dataType: T.FLOAT,
      dims: [2],
      dataLocation: 1,
      externalData: [
        { key: 'location', value: location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ],
    };
    return addModel(w);
  }

  function modelDir(): string {
    const root = mkdtempSync(join(tmpdir(), 'tw-onnx-'));
    const dir = join(root, 'model');
    mkdirSync(join(dir, 'data'), { recursive: true });
    writeFileSync(join(dir, 'data', 'w.bin'), Buffer.from(f32Bytes([0, 0, 10, 20])));
    writeFileSync(join(root, 'secret.bin'), Buffer.from(f32Bytes([666, 666])));
    return dir;
  }

  it('reads tensors from files beside the model, at their offset', async () => {
    const dir = modelDir();
    writeFileSync(join(dir, 'model.onnx'), externalModel('data/w.bin', 8, 8));
    const m = await readOnnx(join(dir, 'model.onnx'));
    expect(runGraph(m.graph, { x: Tensor.from('f32', [2], [1, 2]) }).y.toArray()).toEqual([11, 22]);
  });

  it('paths escaping the model directory (.., absolute, through a link) are ModelFormatErrors', () => {
    const dir = modelDir();
    for (const location of ['../secret.bin', 'data/../../secret.bin', join(dir, '..', 'secret.bin'), '/etc/hostname']) {
      const e = thrown(() => importOnnx(externalModel(location), { dir }));
      expect(e, location).toBeInstanceOf(ModelFormatError);
      expect((e as Error).message).toMatch(/escapes the model's directory/);
    }
    symlinkSync(join(dir, '..', 'secret.bin'), join(dir, 'data', 'link.bin'));
    expect(() => importOnnx(externalModel('data/link.bin'), { dir })).toThrow(/escapes the model's directory \(through a link\)/);
  });

  it('missing files, wrong lengths and short files are ModelFormatErrors; no directory, no external data', () => {
    const dir = modelDir();
    expect(() => importOnnx(externalModel('data/nope.bin'), { dir })).toThrow(/does not exist/);
    expect(() => importOnnx(externalModel('data/w.bin', 12), { dir })).toThrow(/holds 12 bytes, but the dims and type need 8/);
    expect(() => importOnnx(externalModel('data/w.bin', 8, 12), { dir })).toThrow(/too few/);
    expect(() => importOnnx(externalModel('data/w.bin'))).toThrow(/needs the model's directory/);
  });
});
