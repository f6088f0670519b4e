/**
 * Aggregate decode throughput of a batched engine: B sequences decode together, one token each per step
 * (`EngineSession.stepBatch`), and the script prints tokens/s over all of them for each B. A report, not a test: the
 * numbers depend on the machine and its load, so compare ratios within one run.
 *
 *   npx tsx scripts/batch-decode-throughput.ts MODEL [--batches 1,4,16] [--steps 16] [--prompt 8]
 * @module
 */
import { compile } from '../src/compile.js';
import { loadModel } from '../src/frontends/load.js';
import { requestGPUDevice } from '../src/runtime/device.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const path = args[0];
if (!path) throw new Error('usage: batch-decode-throughput.ts MODEL [--batches 1,4,16] [--steps 16] [--prompt 8]');
const batches = opt('batches', '1,4,16').split(',').map(Number);
const steps = Number(opt('steps', '16'));
const promptLen = Number(opt('prompt', '8'));

const gpu = await requestGPUDevice();
const model = await loadModel(path);
const t0 = performance.now();
const engine = await compile(model, { device: gpu.info, precision: 'f32', batchInvariant: true });
const maxB = Math.max(...batches);
const blockSize = engine.manifest.kv!.blockSize;
const session = await engine.createSession({ device: gpu, kvBlocks: maxB * Math.ceil((promptLen + steps + 2) / blockSize) + 4 });
console.error(`compiled and loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s on ${gpu.info.adapter.description}`);
const greedy = { temperature: 0, topp: 0.9, coin: 0 };
const rows: { batch: number; tok_s: number; ms_per_step: number }[] = [];
for (const B of batches) {
  const seqs = Array.from({ length: B }, () => session.createSequence());
  // prompts: BOS then a few tokens, different per sequence
  let last = await session.stepBatch(seqs.map((seq, i) => ({ seq, tokens: [model.bosId, ...Array.from({ length: promptLen - 1 }, (_, j) => 3 + ((i * 7 + j) % 200))], sampling: greedy })));
  // one warm-up step (pipelines JIT on first use), then the timed steps
  last = await session.stepBatch(seqs.map((seq, i) => ({ seq, tokens: [last[i][0]], sampling: greedy })));
  const t = performance.now();
  for (let s = 0; s < steps; s++) last = await session.stepBatch(seqs.map((seq, i) => ({ seq, tokens: [last[i][0]], sampling: greedy })));
  const ms = (performance.now() - t) / steps;
  rows.push({ batch: B, tok_s: (B * 1000) / ms, ms_per_step: ms });
  for (const seq of seqs) session.releaseSequence(seq);
}
const base = rows[0].tok_s;
for (const r of rows) console.log(JSON.stringify({ model: path, ...r, tok_s: Number(r.tok_s.toFixed(1)), ms_per_step: Number(r.ms_per_step.toFixed(1)), vs_first: Number((r.tok_s / base).toFixed(2)) }));
await session.destroy();
await gpu.destroy();
