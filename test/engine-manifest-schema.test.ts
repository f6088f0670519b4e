// Engine manifests are checked by a schema before the runtime reads them: what compile() writes passes, and every
// field out of kind or range, every dangling reference and every payload outside weights.bin is a ModelFormatError
// naming the field; sizes are checked against the device before a session creates anything.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileModel } from '../src/compile.js';
import { createTarget } from '../src/codegen/target.js';
import { DeviceError, ModelFormatError } from '../src/errors.js';
import type { LoadedModel } from '../src/frontends/load.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { Engine } from '../src/runtime/engine.js';
import { parseEngineManifest, type EngineManifest } from '../src/runtime/engine-manifest.js';
import { checkEngineLimits, ENGINE_MANIFEST_BOUNDS, validateEngineManifest } from '../src/runtime/engine-manifest-schema.js';
import type { GPUDeviceHandle } from '../src/runtime/device.js';
import { profileDevice } from '../src/codegen/target.js';
import { SimulatedGpu } from '../scripts/fuzz-files/simulated-gpu.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let manifest: EngineManifest;
let weights: Uint8Array;

beforeAll(() => {
  const c: LlamaConfig = { dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 40, seqLen: 32, sharedClassifier: false };
  const w = randomLlamaWeights(c, 3);
  const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [2], build: (o) => buildLlama(c, w, o) };
  const compiled = compileModel(model, { target: createTarget('lavapipe'), quant: 'int8', prefillChunk: 8 });
  manifest = compiled.manifest;
  weights = compiled.weights;
});

/** A deep copy of the compiled manifest (as engine.json holds it), edited by `edit`. */
function edited(edit: (m: Json) => void): Json {
  const m = JSON.parse(JSON.stringify(manifest)) as Json;
  edit(m);
  return m;
}

/** The ModelFormatError the edited manifest fails with. */
function failure(edit: (m: Json) => void, size = weights.byteLength): ModelFormatError {
  try {
    validateEngineManifest(edited(edit), size, 'engine.json');
  } catch (e) {
    expect(e).toBeInstanceOf(ModelFormatError);
    return e as ModelFormatError;
  }
  throw new Error('the edited manifest passed validation');
}

/** The field the edited manifest fails on, or 'passed'. */
function failingField(edit: (m: Json) => void): string {
  try {
    validateEngineManifest(edited(edit), weights.byteLength, 'engine.json');
    return 'passed';
  } catch (e) {
    return e instanceof ModelFormatError ? e.field : String(e);
  }
}

describe('engine manifest schema', () => {
  it('what compile() writes passes, before and after a JSON round trip', () => {
    expect(validateEngineManifest(manifest, weights.byteLength)).toBe(manifest);
    expect(() => validateEngineManifest(JSON.parse(JSON.stringify(manifest)), weights.byteLength)).not.toThrow();
    expect(manifest.weights.some((w) => w.encoding.kind === 'quantized')).toBe(true);
  });

  it('kv.numBlocks: 1e12 is a typed error naming the field, before anything is allocated', () => {
    const e = failure((m) => (m.kv.numBlocks = 1e12));
    expect(e.field).toBe('kv.numBlocks');
    expect(e.message).toMatch(/^engine\.json: kv\.numBlocks at byte offset 0: must be in \[1, 16777216\], got 1000000000000/);
  });

  it('a negative weight offset is a typed error naming the field', () => {
    const e = failure((m) => (m.weights[1].parts[0].byteOffset = -256));
    expect(e.field).toBe('weights[1].parts[0].byteOffset');
    expect(e.message).toMatch(/must be in \[0, 9007199254740991\], got -256/);
  });

  it('a payload past the end of weights.bin names the part and its offset', () => {
    const last = manifest.weights.length - 1;
    const end = Math.max(...manifest.weights.flatMap((w) => w.parts.map((p) => p.byteOffset + p.byteLength)));
    const e = failure(() => undefined, end - 1);
    expect(e.field).toMatch(/^weights\[\d+\]\.parts\[\d+\]\.byteOffset$/);
    expect(e.message).toMatch(/runs past the end of weights\.bin/);
    const p = manifest.weights[last].parts[0];
    const f = failure((m) => (m.weights[last].parts[0].byteLength = weights.byteLength));
    expect(f.field).toBe(`weights[${last}].parts[0].byteOffset`);
    expect(f.offset).toBe(p.byteOffset);
  });

  it('fields of the wrong kind or out of range name their path', () => {
    const cases: [(m: Json) => void, string][] = [
      [(m) => (m.format = 'onnx'), 'format'],
      [(m) => (m.version = 1), 'version'],
      [(m) => (m.kv.layers = 0), 'kv.layers'],
      [(m) => (m.kv.blockSize = 12), 'kv.blockSize'],
      [(m) => (m.kv.headDim = 1.5), 'kv.headDim'],
      [(m) => (m.kv.dtype = 'f64'), 'kv.dtype'],
      [(m) => (m.lm.maxPositions = 2 ** 31), 'lm.maxPositions'],
      [(m) => (m.lm.vocabSize = '40'), 'lm.vocabSize'],
      [(m) => (m.lm.bosId = 40), 'lm.bosId'],
      [(m) => (m.lm.stopTokens = [-1]), 'lm.stopTokens[0]'],
      [(m) => (m.weightsByteLength = -1), 'weightsByteLength'],
      [(m) => (m.slots[0] = -1), 'slots[0]'],
      [(m) => (m.slots = null), 'slots'],
      [(m) => (m.weights[0].parts[0].array = 'f64'), 'weights[0].parts[0].array'],
      [(m) => ((m.weights[0].parts[0].array = 'f32'), (m.weights[0].parts[0].byteLength = 3)), 'weights[0].parts[0].byteLength'],
      [(m) => m.weights[0].parts.push({ ...m.weights[0].parts[0] }), `weights[0].parts[${manifest.weights[0].parts.length}].role`],
      [(m) => (m.weights[0].encoding = { kind: 'zip' }), 'weights[0].encoding.kind'],
      [(m) => (m.weights[0].shape = [-1]), 'weights[0].shape[0]'],
      [(m) => (m.kernels[0].params = Array(65).fill('seq')), 'kernels[0].params'],
      [(m) => (m.kernels[0].params = ['seq*']), 'kernels[0].params[0]'],
      [(m) => (m.kernels[0].params = ['1 x']), 'kernels[0].params[0]'],
      [(m) => (m.kernels[0].grid = [1, 1]), 'kernels[0].grid'],
      [(m) => (m.kernels[0].grid[0] = { pow: [2, 3] }), 'kernels[0].grid[0]'],
      [(m) => (m.kernels[0].grid[0] = -1), 'kernels[0].grid[0]'],
      [(m) => (m.kernels[0].bindings[0].access = 'write'), 'kernels[0].bindings[0].access'],
      [(m) => (m.plans = []), 'plans'],
      [(m) => (m.plans[1].maxSeq = 1), 'plans[1].maxSeq'],
      [(m) => (m.inputs[0].maxBytes = 1e300), 'inputs[0].maxBytes'],
      [(m) => (m.inputs.push({ ...m.inputs[0] })), `inputs[${manifest.inputs.length}].name`],
    ];
    expect(cases.map(([edit]) => failingField(edit))).toEqual(cases.map(([, field]) => field));
  });

  it('dangling references name the dispatch binding', () => {
    const d = 'plans[0].dispatches[0]';
    const cases: [(m: Json) => void, string][] = [
      [(m) => (m.plans[0].dispatches[0].kernel = m.kernels.length), `${d}.kernel`],
      [(m) => m.plans[0].dispatches[0].bindings.pop(), `${d}.bindings`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'arena', slot: m.slots.length, size: 4 }), `${d}.bindings[0].slot`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'arena', slot: 0, size: m.slots[0] + 1 }), `${d}.bindings[0].size`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'weight', weight: 0, part: 'codebook' }), `${d}.bindings[0].part`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'weight', weight: m.weights.length, part: 'values' }), `${d}.bindings[0].weight`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'input', name: 'nope' }), `${d}.bindings[0].name`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'kv', layer: 2, which: 'k' }), `${d}.bindings[0].layer`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'disk' }), `${d}.bindings[0].kind`],
      [(m) => (m.lm.argmax.kernel = -1), 'lm.argmax.kernel'],
      [(m) => (m.kv.keyShift.kernel = m.kernels.length), 'kv.keyShift.kernel'],
      [(m) => (m.kv.keyShift.kernel = m.lm.argmax.kernel), 'kv.keyShift.kernel'],
      [(m) => (m.lm.logits = 'hidden'), 'lm.logits'],
      [(m) => (m.lm.vocabSize = m.slots[m.outputs[0].ref.slot]), 'lm.vocabSize'],
      [(m) => (m.outputs[0].ref = { kind: 'sample' }), 'outputs[0].ref.kind'],
      [(m) => (m.inputs.find((i: Json) => i.name === 'tokens').dtype = 'f32'), "inputs['tokens'].dtype"],
    ];
    expect(cases.map(([edit]) => failingField(edit))).toEqual(cases.map(([, field]) => field));
    expect(failingField((m) => delete m.kv)).toMatch(/^plans\[0\]\.dispatches\[\d+\]\.bindings\[\d+\]$/);
  });

  it("H2O's attention-mass observers: hostile fields name their path; only observers bind the attention-mass buffer", () => {
    const am = manifest.kv?.attentionMass;
    expect(am).toBeDefined();
    const P = am!.plans.findIndex((o) => o.length > 1);
    expect(P).toBeGreaterThanOrEqual(0);
    const o = `kv.attentionMass.plans[${P}]`;
    const cases: [(m: Json) => void, string][] = [
      [(m) => m.kv.attentionMass.plans.pop(), 'kv.attentionMass.plans'],
      [(m) => (m.kv.attentionMass.plans[P][0].after = m.plans[P].dispatches.length), `${o}[0].after`],
      [(m) => (m.kv.attentionMass.plans[P][1].after = m.kv.attentionMass.plans[P][0].after), `${o}[1].after`],
      [(m) => (m.kv.attentionMass.plans[P][0].dispatch.kernel = m.kernels.length), `${o}[0].dispatch.kernel`],
      [(m) => (m.kv.attentionMass.plans[P][0].dispatch.bindings[5] = { kind: 'block-table' }), `${o}[0].dispatch.bindings`],
      [(m) => (m.kv.attentionMass.plans[P][0].dispatch.kernel = m.plans[P].dispatches[m.kv.attentionMass.plans[P][0].after].kernel), `${o}[0].dispatch.bindings`],
      [(m) => (m.kv.attentionMass.plans[P][0].dispatch.bindings[0] = { kind: 'arena', slot: m.slots.length, size: 4 }), `${o}[0].dispatch.bindings[0].slot`],
      [(m) => (m.plans[0].dispatches[0].bindings[0] = { kind: 'attention-mass' }), 'plans[0].dispatches[0].bindings[0].kind'],
      [(m) => (m.lm.argmax.bindings[0] = { kind: 'attention-mass' }), 'lm.argmax.bindings[0].kind'],
      [(m) => (m.kv.attentionMass.label = 7), 'kv.attentionMass.label'],
      [
        (m) => {
          delete m.kv.keyShift;
          m.kv.dtype = 'int8';
        },
        'kv.attentionMass',
      ],
    ];
    expect(cases.map(([edit]) => failingField(edit))).toEqual(cases.map(([, field]) => field));
  });

  it('an input the runtime fills needs a fixed shape that its buffer can hold', () => {
    const computed = manifest.inputs.findIndex((i) => i.values);
    if (computed < 0) return;
    expect(failure((m) => (m.inputs[computed].shape = ['seq'])).field).toBe(`inputs[${computed}].shape[0]`);
    expect(failure((m) => (m.inputs[computed].values = ['seq', 'past'])).field).toBe(`inputs[${computed}].values`);
  });

  it('every load path reads the manifest through the schema: a folder, a single file and bytes name the source', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tw-manifest-'));
    const engine = new Engine(manifest, weights);
    await engine.save(dir);
    const loaded = await Engine.load(dir);
    expect(loaded.manifest.kv!.numBlocks).toBe(manifest.kv!.numBlocks);
    expect(loaded.manifest.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
    const m = JSON.parse(readFileSync(join(dir, 'engine.json'), 'utf8')) as Json;
    m.kv.numBlocks = 1e12;
    writeFileSync(join(dir, 'engine.json'), JSON.stringify(m));
    await expect(Engine.load(dir)).rejects.toThrow(new ModelFormatError('kv.numBlocks', 0, 'must be in [1, 16777216], got 1000000000000', join(dir, 'engine.json')));
    // the single-file container, from bytes
    const bad = new Engine({ ...manifest, slots: [-1] }, weights);
    await expect(Engine.load(await bad.toSingleFile())).rejects.toThrow(/slots\[0\] at byte offset 0: must be in \[0, 1099511627776\], got -1/);
    expect(() => parseEngineManifest(JSON.stringify({ ...m, weightsSha256: 'abc' }), 'engine.json')).toThrow(/^engine\.json: weightsSha256 at byte offset 0: must be 64 hex digits/);
    expect(() => parseEngineManifest(JSON.stringify({ ...loaded.manifest, weightsByteLength: 16 }), 'engine.json')).toThrow(/runs past the end of weights\.bin \(16 bytes\)/);
    expect(ENGINE_MANIFEST_BOUNDS.numBlocks).toBe(2 ** 24);
  });
});

describe('engine limits against the device', () => {
  it('buffers over maxStorageBufferBindingSize or maxBufferSize are LIMIT_EXCEEDED naming the buffer', () => {
    const limitError = (limits: Record<string, number>, m: EngineManifest = manifest): DeviceError => {
      try {
        checkEngineLimits(m, limits);
      } catch (e) {
        expect(e).toBeInstanceOf(DeviceError);
        return e as DeviceError;
      }
      throw new Error('no limit exceeded');
    };
    expect(() => checkEngineLimits(manifest, { maxStorageBufferBindingSize: 2 ** 27, maxBufferSize: 2 ** 28, maxStorageBuffersPerShaderStage: 10 })).not.toThrow();
    const big = Math.max(...manifest.slots);
    const e = limitError({ maxStorageBufferBindingSize: big - 1 });
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(e.message).toMatch(/needs \d+ bytes, more than maxStorageBufferBindingSize/);
    const kv = manifest.kv!;
    const pool = kv.numBlocks * kv.blockSize * kv.numKvHeads * kv.headDim * 4;
    const wide = { ...manifest, kv: { ...kv, numBlocks: 2 ** 20 } };
    expect(limitError({ maxBufferSize: pool * 2 }, wide).message).toMatch(/^each KV-cache pool .* needs \d+ bytes, more than maxBufferSize/);
    expect(limitError({ maxStorageBuffersPerShaderStage: 1 }).message).toMatch(/binds \d+ storage buffers, more than maxStorageBuffersPerShaderStage 1/);
    // H2O's attention-mass buffer: a row per token of the largest plan, an f32 per position (blockSize x the tables)
    const rows = 2 ** 16;
    const many = { ...manifest, plans: manifest.plans.map((p, i) => ({ ...p, maxSeq: rows + i })) };
    const tables = 4 * (rows + manifest.plans.length - 1) * Math.ceil(manifest.lm!.maxPositions / kv.blockSize);
    expect(kv.blockSize).toBeGreaterThan(2);
    expect(limitError({ maxStorageBufferBindingSize: Math.max(2 * tables, ...manifest.slots) }, many).message).toMatch(/^the attention-mass buffer \(kv.attentionMass\) needs \d+ bytes/);
  });

  it('createSession checks the limits before it creates any buffer', async () => {
    let created = 0;
    const device = {
      features: new Set(manifest.requiredFeatures),
      pushErrorScope: () => undefined,
      createBuffer: () => {
        created++;
        return {};
      },
    };
    const handle = {
      device: device as unknown as GPUDevice,
      info: { backend: 'node-dawn', adapter: { vendor: 'test', architecture: '', device: 'test', description: 'test', isFallbackAdapter: false }, features: manifest.requiredFeatures.slice(), missingFeatures: [], limits: { maxStorageBufferBindingSize: 64 } },
      lost: new Promise(() => undefined),
      isLost: () => false,
      lostInfo: () => undefined,
      destroy: async () => undefined,
    } as unknown as GPUDeviceHandle;
    const engine = new Engine(manifest, weights);
    await expect(engine.createSession({ device: handle, wait: 'poll' })).rejects.toThrow(DeviceError);
    expect(created).toBe(0);
  });
});

describe('dispatch grids evaluated at run time (found by the file fuzzer)', () => {
  /** An engine whose kernel `k` has its grid edited, and a session on a simulated lavapipe device. */
  async function session(edit: (grid: unknown[]) => void): Promise<{ step: () => Promise<number>; gpu: SimulatedGpu; k: number }> {
    const k = manifest.plans[0].dispatches[0].kernel;
    const m = edited((x) => edit(x.kernels[k].grid));
    const gpu = new SimulatedGpu(profileDevice('lavapipe'));
    const s = await new Engine(m as EngineManifest, weights).createSession({ device: gpu.handle, wait: 'poll' });
    return { step: () => s.step([1, 2, 3], { temperature: 0, topp: 1, coin: 0 }), gpu, k };
  }

  it('the engine as compiled runs a step on the simulated device with nothing left for the device to reject', async () => {
    const { step, gpu } = await session(() => undefined);
    await step();
    expect(gpu.uncaptured).toEqual([]);
  });

  it('a grid that divides by an expression that is 0 is a ModelFormatError naming the grid, not a TypeError from WebGPU', async () => {
    const { step, k } = await session((g) => (g[1] = { ceilDiv: [1, { min: [0, 1] }] }));
    await expect(step()).rejects.toThrow(new ModelFormatError(`kernels[${k}].grid[1]`, 0, `the dispatch grid evaluates to Infinity at seq=3 past=0 batch=1 outs=1 table_stride=${Math.ceil(manifest.lm!.maxPositions / manifest.kv!.blockSize)}`));
    expect(failingField((m) => (m.kernels[0].grid[0] = { ceilDiv: ['seq', 0] }))).toBe('kernels[0].grid[0].ceilDiv[1]');
  });

  it('a grid past maxComputeWorkgroupsPerDimension is LIMIT_EXCEEDED before anything is submitted', async () => {
    const { step, gpu } = await session((g) => (g[2] = 2 ** 31));
    await expect(step()).rejects.toThrow(/needs 2147483648 workgroups along z at seq=3 past=0 batch=1 outs=1 table_stride=\d+, more than maxComputeWorkgroupsPerDimension 65535/);
    expect(gpu.uncaptured).toEqual([]);
  });
});
