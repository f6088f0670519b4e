/**
 * `npm run demo`: builds a Llama-architecture model in code with seeded random weights, picks the best backend, and
 * prints the IR summary, the generated ids and tokens/s. With `--model` (and `--tokenizer`) it runs a real checkpoint.
 * @module
 */
import { countKernels, opHistogram } from '../ir/stats.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../models/llama.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';
import { generateTokens } from '../runtime/generate.js';
import { probeWebGPU, describeDevice } from '../runtime/device.js';
import { generateCommand } from './generate.js';
import { log } from './output.js';

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

/** Runs the demo. */
export async function demoCommand(o: DemoOptions): Promise<void> {
  const probe = await probeWebGPU();
  let backend: 'cpu' = 'cpu';
  if ('available' in probe) log(`backend: cpu — no WebGPU adapter (${probe.reason})`);
  else
    log(
      `backend: cpu — WebGPU adapter found (${describeDevice(probe)}), but generation on WebGPU is not available in this version; ` +
        'the CPU reference backend runs the model',
    );
  if (o.model) {
    await generateCommand({ model: o.model, tokenizer: o.tokenizer, prompt: o.prompt, steps: o.steps, temperature: 0, topp: 0.9, seed: 1, backend, json: false });
    return;
  }
  log('model: Llama architecture built in code with SEEDED RANDOM WEIGHTS (seed 1) — its output is not meaningful text');
  const graph = buildLlama(DEMO_CONFIG, randomLlamaWeights(DEMO_CONFIG, 1), { lastTokenLogitsOnly: true });
  const c = DEMO_CONFIG;
  const ops = opHistogram(graph);
  console.log(`IR: ${graph.size} nodes, ${countKernels(graph)} kernel launches per forward`);
  console.log(`    config dim=${c.dim} hidden=${c.hiddenDim} layers=${c.nLayers} heads=${c.nHeads}/${c.nKvHeads} vocab=${c.vocabSize}`);
  console.log(`    ops ${Object.entries(ops).map(([k, v]) => `${k}:${v}`).join(' ')}`);
  const prompt = [1, 42, 7, 300, 12];
  const lm = new CpuCausalLM(graph, c.seqLen);
  const r = await generateTokens(lm, prompt, { steps: o.steps, temperature: 0, topp: 0.9, seed: 1, stopTokens: [] });
  console.log(`prompt ids:    ${prompt.join(' ')}`);
  console.log(`generated ids: ${r.generated.join(' ')}`);
  const decodeTps = Math.max(r.generated.length - 1, 0) / Math.max(r.decodeSeconds, 1e-9);
  console.log(`backend ${backend}: prefill ${prompt.length} tokens in ${(r.prefillSeconds * 1000).toFixed(1)} ms (${(prompt.length / r.prefillSeconds).toFixed(1)} tok/s); decode ${decodeTps.toFixed(1)} tok/s`);
}
