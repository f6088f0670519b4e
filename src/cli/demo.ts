/**
 * `npm run demo`: builds a Llama-architecture model in code with seeded random weights, picks the best backend, and
 * prints the IR summary, the generated ids and tokens/s. With `--model` (and `--tokenizer`) it runs a real checkpoint.
 * @module
 */
import { countKernels, opHistogram } from '../ir/stats.js';
import type { LoadedModel } from '../frontends/load.js';
import { runPasses } from '../passes/pipeline.js';
import { cpuProfile } from '../ir/device-profile.js';
import { compile } from '../compile.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../models/llama.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';
import { generateTokens } from '../runtime/generate.js';
import { probeWebGPU, describeDevice, requestGPUDevice } from '../runtime/device.js';
import { generateCommand } from './generate.js';
import { log } from './output.js';
import { UsageError } from '../errors.js';
import { requireFile, requireFileOrFolder } from './file-arguments.js';

/** Options of the `demo` command. */
export interface DemoOptions {
  /** A real checkpoint to run instead of the random model. */
  model?: string;
  /** Its tokenizer. */
  tokenizer?: string;
  /** Prompt for a real checkpoint. */
  prompt: string;
  /** Positions to run. */
  steps: number;
}

/** The random model's architecture: small enough for the CPU backend, shaped like a real Llama (GQA 2:1). */
export const DEMO_CONFIG: LlamaConfig = {
  dim: 128,
  hiddenDim: 344,
  nLayers: 4,
  nHeads: 8,
  nKvHeads: 4,
  vocabSize: 512,
  seqLen: 256,
  sharedClassifier: true,
};

/** The random model's prompt (ids; BOS first). */
const DEMO_PROMPT: readonly number[] = [1, 42, 7, 300, 12];

/** Runs the demo. */
export async function demoCommand(o: DemoOptions): Promise<void> {
  if (o.tokenizer && !o.model) throw new UsageError('--tokenizer goes with --model (the random model has no tokenizer)');
  if (o.model) requireFileOrFolder('--model', o.model);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  if (!o.model && o.steps < DEMO_PROMPT.length) throw new UsageError(`--steps must be at least ${DEMO_PROMPT.length} for the random model (its prompt has ${DEMO_PROMPT.length} ids), got ${o.steps}`);
  const probe = await probeWebGPU();
  const backend: 'cpu' | 'webgpu' = 'available' in probe ? 'cpu' : 'webgpu';
  if ('available' in probe) log(`backend: cpu — no WebGPU adapter (${probe.reason}); the CPU reference backend runs the model`);
  else log(`backend: webgpu — ${describeDevice(probe)}`);
  if (o.model) {
    await generateCommand({ model: o.model, tokenizer: o.tokenizer, prompt: o.prompt, steps: o.steps, temperature: 0, topp: 0.9, seed: 1, backend, json: false });
    return;
  }
  log('model: Llama architecture built in code with SEEDED RANDOM WEIGHTS (seed 1) — its output is not meaningful text');
  const c = DEMO_CONFIG;
  const weights = randomLlamaWeights(c, 1);
  const model: LoadedModel = {
    format: 'llama2c',
    family: 'llama',
    path: '(built in code)',
    config: c,
    parameters: 0,
    weightBytes: 0,
    maxPositions: c.seqLen,
    bosId: 1,
    stopTokens: [],
    build: (opts) => buildLlama(c, weights, opts),
  };
  const graph = model.build({ lastTokenLogitsOnly: true });
  const optimized = runPasses(graph, 'O3', { device: cpuProfile });
  console.log(`IR: ${graph.size} nodes, ${countKernels(graph)} kernel launches per forward; after O3: ${optimized.graph.size} nodes, ${countKernels(optimized.graph)} launches`);
  console.log(`    config dim=${c.dim} hidden=${c.hiddenDim} layers=${c.nLayers} heads=${c.nHeads}/${c.nKvHeads} vocab=${c.vocabSize}`);
  console.log(`    ops after O3: ${Object.entries(opHistogram(optimized.graph)).map(([k, v]) => `${k}:${v}`).join(' ')}`);
  const prompt = DEMO_PROMPT;
  let r: { generated: readonly number[]; prefillSeconds: number; decodeSeconds: number };
  if (backend === 'webgpu') {
    const handle = await requestGPUDevice();
    try {
      const engine = await compile(model, { device: handle.info, prefillChunk: 8, onProgress: log });
      const session = await engine.createSession({ device: handle });
      r = await session.generate(prompt, { steps: o.steps, temperature: 0, topp: 0.9, seed: 1 });
      await session.destroy();
    } finally {
      await handle.destroy();
    }
  } else {
    const lm = new CpuCausalLM(optimized.graph, c.seqLen);
    r = await generateTokens(lm, prompt, { steps: o.steps, temperature: 0, topp: 0.9, seed: 1, stopTokens: [] });
  }
  console.log(`prompt ids:    ${prompt.join(' ')}`);
  console.log(`generated ids: ${r.generated.join(' ')}`);
  const decodeTps = Math.max(r.generated.length - 1, 0) / Math.max(r.decodeSeconds, 1e-9);
  console.log(`backend ${backend}: prefill ${prompt.length} tokens in ${(r.prefillSeconds * 1000).toFixed(1)} ms (${(prompt.length / r.prefillSeconds).toFixed(1)} tok/s); decode ${decodeTps.toFixed(1)} tok/s`);
}
