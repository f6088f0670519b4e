#!/usr/bin/env node
// Speculative decoding benchmark (#14 item 4), on the local WebGPU adapter: greedy decode speed of plain decoding,
// n-gram drafts and an int4 draft engine on a repetitive prompt, all in one process (compare within one run). Each
// configuration runs once to warm up (pipeline compilation) and then is timed. Needs `npm run build`.
//   node scripts/bench-speculative.mjs --model M.bin [--tokenizer T.bin | --ids] [--steps 200] [--verify 9] [--no-draft]
import { compile, loadModel, requestGPUDevice, speculativeGenerate, engineTarget, engineDraftModel, ModelDrafter, NgramDrafter, Llama2cTokenizer } from '../dist/index.js';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const modelPath = arg('--model');
if (!modelPath) throw new Error('--model is required');
const steps = Number(arg('--steps', 200));
const verifyTokens = Number(arg('--verify', 9));
const model = await loadModel(modelPath);
const tokPath = arg('--tokenizer');
const sentence = 'Once upon a time, there was a little cat. The cat liked to play in the sun. ';
let prompt;
if (tokPath) prompt = Llama2cTokenizer.fromBytes(readFileSync(tokPath), model.config.vocabSize).encode(sentence.repeat(3));
// without a tokenizer (a synthetic checkpoint): a repeated pattern of ids
prompt ??= [model.bosId, ...Array.from({ length: 3 }, () => [300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311]).flat()];
const gpu = await requestGPUDevice();
const t0 = performance.now();
const engine = await compile(model, { device: gpu.info, prefillChunk: Math.max(verifyTokens + 1, Math.min(128, prompt.length)) });
const session = await engine.createSession({ device: gpu });
const draftEngine = args.includes('--no-draft') ? undefined : await compile(model, { device: gpu.info, quant: 'int4-g32', prefillChunk: Math.max(verifyTokens + 1, Math.min(128, prompt.length)) });
const draftSession = draftEngine ? await draftEngine.createSession({ device: gpu }) : undefined;
console.error(`compiled and loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s; prompt ${prompt.length} tokens, ${steps} steps`);
const o = { steps, temperature: 0, topp: 1, seed: 1, stopTokens: [] };
const configs = [
  ['plain', async () => session.generate(prompt, o)],
  ['ngram', async () => speculativeGenerate(engineTarget(session), new NgramDrafter(), prompt, o)],
  ...(draftSession ? [['draft-int4', async () => speculativeGenerate(engineTarget(session), new ModelDrafter(engineDraftModel(draftSession)), prompt, { ...o, draftLength: 4 })]] : []),
];
const rows = [];
let reference;
for (const [name, run] of configs) {
  await run(); // warm-up
  const r = await run();
  reference ??= r.generated;
  const same = r.generated.length === reference.length && r.generated.every((t, i) => t === reference[i]);
  const tps = (r.generated.length - 1) / r.decodeSeconds;
  rows.push({ config: name, generated: r.generated.length, decode_ms: Math.round(r.decodeSeconds * 1000), decode_tok_s: +tps.toFixed(2), same_as_plain: same, ...(r.stats ? { acceptance_rate: +r.stats.acceptanceRate.toFixed(3), tokens_per_target_step: +r.stats.tokensPerTargetStep.toFixed(2), mean_draft_length: +r.stats.meanDraftLength.toFixed(2), draft_ms: Math.round(r.stats.draftSeconds * 1000), verify_ms: Math.round(r.stats.verifySeconds * 1000) } : {}) });
}
const base = rows[0].decode_tok_s;
for (const r of rows) r.speedup = +(r.decode_tok_s / base).toFixed(2);
for (const r of rows) console.log(JSON.stringify({ model: modelPath, device: gpu.info.adapter.description, ...r }));
await draftSession?.destroy();
await session.destroy();
await gpu.destroy();
