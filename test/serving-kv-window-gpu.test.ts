// Sliding KV window with attention sinks on the WebGPU engine (stories260K, f32, blocks of 4): the engine's key-shift
// kernel (the model's rope, emitted by codegen) leaves the GPU KV pool equal to the CPU reference executor's after the
// same windowed run, within float tolerance; generation runs past the 512-position context in a bounded pool; on an
// f16 pool the shift equals the CPU rope at −delta within f16 rounding and touches nothing else.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../src/compile.js';
import { InputError } from '../src/errors.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import type { Engine, EngineSession } from '../src/runtime/engine.js';
import type { ExecutorBatch, ExecutorEntry } from '../src/runtime/serving/batch-executor.js';
import { BatchedEngineExecutor } from '../src/runtime/serving/batched-engine-executor.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import { f16BytesToF32 } from '../src/frontends/safetensors/source.js';
import { graphRopeAttrs } from '../src/ir/rope.js';
import { rope } from '../src/runtime/cpu/kernels.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { goldens, stories260K } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('sliding KV window on the WebGPU engine');

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 600_000;

let gpu: TestGPU | null = null;
let model: LoadedModel;
let engine: Engine;
beforeAll(async () => {
  gpu = await acquireTestDevice();
  if (!gpu || !hasShared) return;
  model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
  engine = await compile(model, { device: gpu.info, precision: 'f32', batchInvariant: true, prefillChunk: 16, kv: { blockSize: 4 } });
}, LONG);
afterAll(() => gpu?.destroy());

/** Records each step's first entry (the last one is the state to compare) and counts the shifts. */
function recorder<T extends { step(b: ExecutorBatch): Promise<number[]> }>(ex: T): { last: () => ExecutorEntry; shifts: () => number } {
  let last: ExecutorEntry | undefined;
  let shifts = 0;
  const inner = ex.step.bind(ex);
  ex.step = async (b: ExecutorBatch) => {
    shifts += b.shifts?.length ?? 0;
    last = b.entries[0];
    return inner(b);
  };
  return { last: () => last!, shifts: () => shifts };
}

describe.skipIf(!hasShared)('sliding KV window on the WebGPU engine', () => {
  it('after key shifts the GPU K/V pool equals the CPU reference executor\'s for the same windowed run', async (ctx) => {
    if (!gpu) return ctx.skip();
    expect(engine.manifest.kv?.keyShift).toBeDefined();
    const g = goldens();
    const window = { sinkTokens: 3, windowTokens: 9 };
    const req = { promptIds: g[3].prompt_ids, maxTokens: 40, temperature: 0, ignoreStopTokens: true, kvWindow: window };
    const cpu = (await stories260K()).executor(16, 4);
    const cpuRec = recorder(cpu);
    const want = await new ServingSession(cpu, { maxBatchTokens: 8 }).generate(req);
    const es: EngineSession = await engine.createSession({ device: gpu, kvBlocks: 16 });
    const ex = new BatchedEngineExecutor(es, { maxPositions: model.maxPositions, vocabSize: model.config.vocabSize, stopTokens: model.stopTokens });
    expect(ex.canShiftKeys).toBe(true);
    const gpuRec = recorder(ex);
    const got = await new ServingSession(ex, { maxBatchTokens: 8 }).generate(req);
    expect(got.ids).toEqual(want.ids);
    expect(gpuRec.shifts()).toBe(cpuRec.shifts());
    expect(gpuRec.shifts()).toBeGreaterThan(5);
    const [a, b] = [cpuRec.last(), gpuRec.last()];
    expect(b.context).toEqual(a.context);
    expect(b.start).toBe(a.start);
    const length = a.start + a.tokens.length;
    const cpuKv = cpu.readPositions(a.blockTable, length);
    // the GPU blocks: per block, every layer's K then V pool of [4, heads, headDim] f32
    const raw = await es.readKvBlocks(b.blockTable.slice(0, Math.ceil(length / 4)));
    const layers = cpuKv.length / 2;
    const row = cpuKv[0].data.length / length;
    let worstK = 0;
    let worstV = 0;
    for (let l = 0; l < layers; l++)
      for (const [w, which] of [[0, 'k'], [1, 'v']] as const) {
        const ref = cpuKv.find((x) => x.input === `past_${which}.${l}`)!.data;
        for (let pos = 0; pos < length; pos++) {
          const block = raw[Math.floor(pos / 4)];
          const f = new Float32Array(block.buffer, block.byteOffset + (2 * l + w) * 4 * row * 4, 4 * row);
          for (let i = 0; i < row; i++) {
            const diff = Math.abs(f[(pos % 4) * row + i] - ref[pos * row + i]);
            if (which === 'k') worstK = Math.max(worstK, diff);
            else worstV = Math.max(worstV, diff);
          }
        }
      }
    process.stderr.write(`[kv-window gpu] ${gpuRec.shifts()} shifts; worst |K gpu - cpu| ${worstK.toExponential(2)}, |V| ${worstV.toExponential(2)}\n`);
    expect(worstK).toBeLessThan(1e-4);
    expect(worstV).toBeLessThan(1e-4);
    await es.destroy();
  }, LONG);

  it('generates 560 tokens past the 512-position context with the pool never above the window', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = goldens();
    const es = await engine.createSession({ device: gpu, kvBlocks: 8 });
    const ex = new BatchedEngineExecutor(es, { maxPositions: model.maxPositions, vocabSize: model.config.vocabSize, stopTokens: model.stopTokens });
    const session = new ServingSession(ex, { maxBatchTokens: 16, kvWindow: { sinkTokens: 4, windowTokens: 16 } });
    let most = 0;
    session.onStep = () => (most = Math.max(most, session.scheduler.blocks.usedBlocks));
    const r = await session.generate({ promptIds: g[0].prompt_ids, maxTokens: 560, temperature: 0, ignoreStopTokens: true });
    expect(r.ids.length).toBe(560);
    expect(most).toBe(5);
    // until the first drop the window is the whole sequence: run.c's tokens
    expect(r.ids.slice(0, 19)).toEqual(g[0].generated_ids.slice(0, 19));
    expect(() => es.shiftKeys([{ blocks: [99], delta: 4 }])).toThrow(InputError);
    expect(() => es.shiftKeys([{ blocks: [1], delta: 0 }])).toThrow(InputError);
    await es.destroy();
  }, LONG);

  it('on an f16 KV pool, shiftKeys rotates the named blocks\' keys as the CPU rope at −delta does and leaves the rest alone', async (ctx) => {
    if (!gpu) return ctx.skip();
    const e16 = await compile(model, { device: gpu.info, precision: 'f32', prefillChunk: 8, kv: { blockSize: 4, dtype: 'f16' } });
    expect(e16.manifest.kv?.keyShift).toBeDefined();
    const kv = e16.manifest.kv!;
    const r = graphRopeAttrs(model.build({}))!;
    const es = await e16.createSession({ device: gpu, kvBlocks: 4 });
    const row = kv.numKvHeads * kv.headDim;
    const per = 2 * kv.layers * 4 * row * 2;
    // f16 values of magnitude 2^-5 .. 2^3, random signs and mantissas
    let seed = 7;
    const next = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8);
    const blocks = [0, 1, 2, 3].map(() => {
      const b = new Uint16Array(per / 2);
      for (let i = 0; i < b.length; i++) b[i] = ((next() & 1) << 15) | ((10 + (next() % 8)) << 10) | (next() & 0x3ff);
      return new Uint8Array(b.buffer);
    });
    es.writeKvBlocks([0, 1, 2, 3], blocks);
    es.shiftKeys([{ blocks: [1, 3], delta: 7 }]);
    const after = await es.readKvBlocks([0, 1, 2, 3]);
    const pool = 4 * row * 2; // bytes of one block in one layer's K or V pool
    let worst = 0;
    for (let b = 0; b < 4; b++)
      for (let l = 0; l < kv.layers; l++)
        for (const w of [0, 1]) {
          const at = (2 * l + w) * pool;
          const was = blocks[b].subarray(at, at + pool);
          const now = after[b].subarray(at, at + pool);
          if (w === 1 || b === 0 || b === 2) {
            expect(Array.from(now), `block ${b} layer ${l} ${w ? 'V' : 'K'} unchanged`).toEqual(Array.from(was));
            continue;
          }
          const want = rope(new Tensor('f32', [1, 4, kv.numKvHeads, kv.headDim], f16BytesToF32(was, 4 * row)), Tensor.from('i32', [4], [-7, -7, -7, -7]), r.theta, r.style, r.rotaryDim).data as Float32Array;
          const got = f16BytesToF32(now, 4 * row);
          for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
        }
    process.stderr.write(`[kv-window gpu] f16 key shift: worst error ${worst.toExponential(2)} against the CPU rope\n`);
    // f16 keeps 11 significant bits: the stored result is within about half an ulp (2^-11 relative) of the exact one
    expect(worst).toBeLessThan(2 ** -10);
    await es.destroy();
  }, LONG);
});
