/**
 * What "load" means per format, for the file fuzzer: the entry a user calls, then what they do right after.
 *
 * - `llama2c`, `gguf`, `safetensors` (a Hugging Face folder): `loadModel(path)` and `build()`; the model's own
 *   tokenizer (GGUF `tokenizer.ggml.*`, the folder's `tokenizer.json`) encodes and decodes a short text.
 * - `llama2c-tokenizer`: `Llama2cTokenizer.fromFile(path, vocabSize)`, then an encode and a decode.
 * - `onnx`: `readOnnx(path)`.
 * - `engine`: `Engine.load(dir)`, then a session on a simulated device with the lavapipe profile's limits
 *   (`simulated-gpu.ts`: `createSession`'s checks before it creates anything, then its buffers, bind groups and a
 *   prefill and a decode step, checked as a real device checks them). An error the device would report with no error
 *   scope to catch it means the runtime handed it invalid work (on a real device, silently dropped): a crash.
 *
 * Each returns the bytes the loaded model declares (its weights as they are held), for the memory budget.
 * @module
 */
import { join } from 'node:path';
import { loadModel, type LoadedModel } from '../../src/frontends/load.js';
import { Llama2cTokenizer } from '../../src/tokenizers/llama2c.js';
import { readOnnx } from '../../src/frontends/onnx/index.js';
import { profileDevice } from '../../src/codegen/target.js';
import { Engine } from '../../src/runtime/engine.js';
import { SimulatedGpu } from './simulated-gpu.js';
import type { FuzzFormat, Seed } from './corpus.js';

/** The runtime handed a (simulated) device invalid work that no error scope caught. */
export class UncapturedGpuError extends Error {}

/** What a successful load reports. */
export interface Loaded {
  /** Bytes of weights (or tokenizer tables) the loaded object declares. */
  readonly declaredBytes: number;
  /** The loaded object, kept alive while memory is measured. */
  readonly held: unknown;
}

const TEXT = 'Once upon a time, héllo wörld ✓ 42';

/** Encodes and decodes a short text, as a user does right after loading a tokenizer. */
function useTokenizer(tok: { encode(text: string): number[]; decode(ids: readonly number[]): string } | undefined): void {
  if (!tok) return;
  const ids = tok.encode(TEXT);
  tok.decode(ids);
}

function modelResult(m: LoadedModel): Loaded {
  const graph = m.build();
  useTokenizer(m.tokenizer);
  return { declaredBytes: Math.max(m.weightBytes, 4 * m.parameters), held: [m, graph] };
}

/** Loads the case folder `dir` as `format`. Throws what the loader throws. */
export async function loadCase(format: FuzzFormat, dir: string, seed: Seed): Promise<Loaded> {
  const path = seed.open === '.' ? dir : join(dir, seed.open);
  switch (format) {
    case 'llama2c':
    case 'gguf':
    case 'safetensors':
      return modelResult(await loadModel(path));
    case 'llama2c-tokenizer': {
      const tok = await Llama2cTokenizer.fromFile(path, seed.vocabSize ?? 32000);
      useTokenizer(tok);
      return { declaredBytes: 0, held: tok };
    }
    case 'onnx': {
      const m = await readOnnx(path);
      const declaredBytes = m.graph.weights.all().reduce((a, e) => a + Object.values(e.data).reduce((b, d) => b + d.byteLength, 0), 0);
      return { declaredBytes, held: m };
    }
    case 'engine': {
      const e = await Engine.load(path);
      const gpu = new SimulatedGpu(profileDevice('lavapipe'));
      const s = await e.createSession({ device: gpu.handle, wait: 'poll' });
      const lm = e.manifest.lm;
      if (lm) {
        const prompt = [lm.bosId, ...lm.stopTokens.slice(0, 2), lm.vocabSize - 1];
        await s.step(prompt, { temperature: 0, topp: 1, coin: 0 });
        await s.step([lm.bosId], { temperature: 0.8, topp: 0.9, topk: 5, coin: 0.5 });
      }
      await s.destroy();
      if (gpu.uncaptured.length) throw new UncapturedGpuError(gpu.uncaptured[0]);
      return { declaredBytes: e.weightsByteLength ?? 0, held: e };
    }
  }
}
