/**
 * `npm run bench`: every benchmark in one run on one device, so ratios are comparable (timings on shared machines
 * are noisy; read the ratios). Prints tables to stdout; `--json` prints one JSON object instead; `--quick` shortens;
 * `--wait poll|sleep-then-poll` sets how the host awaits the GPU (default: the device's, as the engine runtime does;
 * see src/runtime/webgpu/gpu-wait.ts).
 *
 * - matmul: GEMM f32 1024³ (tensorwright variants, a naive WGSL kernel, TensorFlow.js's WebGPU backend) and decode
 *   GEMV (4096² and 11008x4096, M = 1..16) against a plain WGSL copy kernel's bandwidth (bench/matmul.bench.ts);
 * - sparse matmul: decode GEMV over 2:4-pruned and block-sparse weights (densities 0.5, 0.25, 0.1) against the dense
 *   f32 GEMV of the same shape (bench/sparse-matmul.bench.ts);
 * - quantized matmul: int8, int4-g32, int2-g32, nf4, codebook16 and codebook256 weights (4096² and 11008x4096) at
 *   decode M = 1, 4, 16 and prefill M = 128 (32 with `--quick`), each against the f32 kernel of the same shape and M:
 *   median ms, weight GB/s, speed-up (bench/quant-matmul.bench.ts);
 * - attention prefill at sequence 512 and 2048 (flash variant, causal, 8 heads of 64);
 * - stories260K prefill and decode tokens/s on the engine, with the per-kernel GPU time table;
 * - host work that tests bound but never time: tokenizer encoding, the rewrite driver on a deep graph, rejecting a
 *   giant header (bench/host.bench.ts);
 * - LLM decode against llama.cpp (the CPU peer, through node-llama-cpp) on the same GGUF files of the synthetic 110M
 *   llama, F32 and Q4_0, with `--threads` threads (default 2): our decode tok/s as a ratio to llama.cpp's, with
 *   weight-read fraction and GPU/host ms per token (bench/llm.bench.ts). Where node-llama-cpp's binary does not load,
 *   its rows are skipped with one line saying so.
 *
 * `--only a,b` runs only the named sections: matmul, sparse, quant, attention, stories260K, host, llm.
 * `--llm-checkpoint FILE` gives the llm section another llama2.c checkpoint than the synthetic 110M one.
 */
import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { requestGPUDevice, describeDevice } from '../src/runtime/device.js';
import { runMatmulBench, formatMatmulBench, measureCycle, type MatmulBenchRow } from './matmul.bench.js';
import { runSparseMatmulBench } from './sparse-matmul.bench.js';
import { formatQuantMatmulBench, runQuantMatmulBench } from './quant-matmul.bench.js';
import { defaultGpuWaitMode, GpuWaiter, type GpuWaitMode } from '../src/runtime/webgpu/gpu-wait.js';
import { generateAttentionKernel } from '../src/codegen/attention.js';
import { evalGrid, evalParams, type KernelSource } from '../src/codegen/kernel.js';
import { loadModel } from '../src/frontends/load.js';
import { compile } from '../src/compile.js';
import { profileTable } from '../src/cli/generate.js';
import { formatHostBench, runHostBench } from './host.bench.js';
import { formatLlmBench, runLlmBench } from './llm.bench.js';

const argv = process.argv.slice(2);
const args = new Set(argv);
const waitArg = argv.includes('--wait') ? argv[argv.indexOf('--wait') + 1] : undefined;
const quick = args.has('--quick');
const json = args.has('--json');
const SECTIONS = ['matmul', 'sparse', 'quant', 'attention', 'stories260K', 'host', 'llm'];
const only = argv.includes('--only') ? (argv[argv.indexOf('--only') + 1] ?? '').split(',') : SECTIONS;
const threadsArg = argv.includes('--threads') ? Number(argv[argv.indexOf('--threads') + 1]) : 2;
const llmCheckpoint = argv.includes('--llm-checkpoint') ? resolve(argv[argv.indexOf('--llm-checkpoint') + 1] ?? '') : undefined;
const want = (section: string): boolean => only.includes(section);
const log = (l: string): void => {
  process.stderr.write(`${l}\n`);
};

async function attentionBench(device: GPUDevice, seq: number, waiter: GpuWaiter): Promise<MatmulBenchRow> {
  const H = 8;
  const D = 64;
  const k: KernelSource = generateAttentionKernel({ numHeads: H, numKvHeads: H, headDim: D, dtype: 'f32', causal: true, seq: 'seq', kvLen: 'seq', variant: 'prefill-flash' });
  const bytes = seq * H * D * 4;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const bufs = [0, 1, 2, 3].map(() => device.createBuffer({ size: bytes, usage }));
  const init = new Float32Array(seq * H * D).map((_v, i) => Math.sin(i) * 0.5);
  for (const b of bufs.slice(0, 3)) device.queue.writeBuffer(b, 0, init);
  const values = evalParams(k.params, { seq, batch: 1 });
  const params = device.createBuffer({ size: Math.max(16, values.byteLength), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(params, 0, values.buffer as ArrayBuffer, 0, values.byteLength);
  const module = device.createShaderModule({ code: k.wgsl });
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const entries: GPUBindGroupEntry[] = bufs.map((buffer, binding) => ({ binding, resource: { buffer } }));
  if (k.params.length) entries.push({ binding: bufs.length, resource: { buffer: params } });
  const bg = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const grid = k.grid.map((g) => evalGrid(g, k.params, values)) as [number, number, number];
  const run = async (): Promise<void> => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(...grid);
    pass.end();
    device.queue.submit([enc.finish()]);
    await waiter.wait(`attention ${seq}`, performance.now(), () => device.queue.onSubmittedWorkDone());
  };
  const m = await measureCycle(`attention ${seq}`, run, quick ? 1 : 3);
  for (const b of [...bufs, params]) b.destroy();
  const flops = 2 * 2 * H * D * ((seq * (seq + 1)) / 2); // QK^T and PV over the causal half
  return { case: `attention prefill causal seq ${seq} (8 heads x 64)`, impl: k.variant, seconds: m.seconds, rme: m.rme, samples: m.samples, gflops: flops / m.seconds / 1e9 };
}

async function main(): Promise<void> {
  const unknown = only.filter((x) => !SECTIONS.includes(x));
  if (unknown.length) throw new Error(`--only takes sections from ${SECTIONS.join(', ')}; got ${unknown.join(', ')}`);
  if (!(Number.isInteger(threadsArg) && threadsArg >= 1)) throw new Error(`--threads must be an integer >= 1, got ${threadsArg}`);
  // lavapipe reads its thread count when the adapter is created: give it llama.cpp's unless the caller chose
  process.env.LP_NUM_THREADS ??= String(threadsArg);
  const handle = await requestGPUDevice();
  const device = handle.device;
  if (waitArg !== undefined && waitArg !== 'poll' && waitArg !== 'sleep-then-poll') throw new Error(`--wait must be poll or sleep-then-poll, got ${waitArg}`);
  const wait = (waitArg as GpuWaitMode | undefined) ?? defaultGpuWaitMode(handle.info);
  const out: Record<string, unknown> = { device: describeDevice(handle.info), date: new Date().toISOString(), host_wait: wait };
  log(`device: ${out.device}; host wait: ${wait}`);
  const mm = want('matmul') ? await runMatmulBench(device, { quick, log, wait }) : [];
  if (want('matmul')) out.matmul = mm;
  const sparse = want('sparse') ? await runSparseMatmulBench(device, { quick, log, wait }) : [];
  if (want('sparse')) out.sparse_matmul = sparse;
  const quant = want('quant') ? await runQuantMatmulBench(device, { quick, log, wait, languageFeatures: handle.info.wgslLanguageFeatures }) : [];
  if (want('quant')) out.quant_matmul = quant;
  const att: MatmulBenchRow[] = [];
  for (const seq of want('attention') ? [512, 2048] : []) {
    att.push(await attentionBench(device, seq, new GpuWaiter({ mode: wait })));
    log(`attention ${seq}: ${(att[att.length - 1].seconds * 1000).toFixed(2)} ms`);
  }
  if (want('attention')) out.attention = att;
  const model = resolve(process.cwd(), '../shared/models/stories260K/stories260K.bin');
  if (!want('stories260K')) {
    // not asked for
  } else if (existsSync(model)) {
    const lm = await loadModel(model);
    const engine = await compile(lm, { device: handle.info });
    const session = await engine.createSession({ device: handle, profile: true, wait });
    const gold = JSON.parse(readFileSync(resolve(process.cwd(), '../shared/golden/stories260K/stories260K-1.json'), 'utf8'));
    await session.generate(gold.prompt_ids, { steps: 16, temperature: 0, topp: 0.9, seed: 1 }); // warm-up: driver shader compiles
    const prefillTokens = 64;
    const prompt = Array.from({ length: prefillTokens }, (_v, i) => [1, 403, 407, 261][i % 4]);
    session.reset();
    const t0 = performance.now();
    await session.step(prompt, { temperature: 0, topp: 0.9, coin: 0 });
    const prefillS = (performance.now() - t0) / 1000;
    const prefillProfile = session.lastProfile;
    const profiledSession = session;
    const r = await profiledSession.generate(gold.prompt_ids, { steps: quick ? 64 : 256, temperature: 0, topp: 0.9, seed: 1 });
    const decodeProfile = session.lastProfile;
    // the same run without timestamp queries (they split every dispatch into its own pass)
    const plain = await engine.createSession({ device: handle, wait });
    await plain.generate(gold.prompt_ids, { steps: 16, temperature: 0, topp: 0.9, seed: 1 });
    const r2 = await plain.generate(gold.prompt_ids, { steps: quick ? 64 : 256, temperature: 0, topp: 0.9, seed: 1 });
    plain.reset();
    const t1 = performance.now();
    await plain.step(prompt, { temperature: 0, topp: 0.9, coin: 0 });
    const prefillPlain = (performance.now() - t1) / 1000;
    out.stories260K = {
      prefill_tokens: prefillTokens,
      prefill_tokens_per_s: prefillTokens / prefillPlain,
      decode_tokens_per_s: (r2.generated.length - 1) / r2.decodeSeconds,
      profiled: { prefill_tokens_per_s: prefillTokens / prefillS, decode_tokens_per_s: (r.generated.length - 1) / r.decodeSeconds },
      dispatches_per_token: engine.manifest.plans[0].dispatches.length + 1,
      prefill_kernels: prefillProfile,
      decode_kernels: decodeProfile,
    };
    await plain.destroy();
    await session.destroy();
    if (!json) {
      console.log(`\nstories260K on ${out.device}`);
      console.log(`  prefill ${prefillTokens} tokens: ${(prefillTokens / prefillPlain).toFixed(1)} tok/s; decode: ${((r2.generated.length - 1) / r2.decodeSeconds).toFixed(1)} tok/s; ${engine.manifest.plans[0].dispatches.length + 1} dispatches per token`);
      console.log(`  per-kernel GPU time, one prefill step of ${prefillTokens} tokens:\n${profileTable(prefillProfile)}`);
      console.log(`  per-kernel GPU time, one decode step:\n${profileTable(decodeProfile)}`);
    }
  } else log('stories260K benchmark skipped: ../shared is absent');
  const host = want('host') ? await runHostBench({ quick, sharedDir: resolve(process.cwd(), '../shared') }) : [];
  if (want('host')) out.host = host;
  // the engine benchmarks request devices of their own: free this one first
  await handle.destroy();
  const llm = want('llm') ? await runLlmBench({ sharedDir: resolve(process.cwd(), '../shared'), checkpoint: llmCheckpoint, threads: threadsArg, quick, log }) : undefined;
  if (llm) out.llm = llm;
  if (json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    if (want('host')) console.log(`\nhost work (median ms)\n${formatHostBench(host)}`);
    if (want('matmul')) console.log(`\nmatmul on ${out.device}\n${formatMatmulBench(mm)}`);
    if (want('sparse')) console.log(`\nsparse matmul\n${formatMatmulBench(sparse)}`);
    if (want('quant')) console.log(`\nquantized matmul (median ms; weight GB/s = weight payload bytes / median; vs f32 = f32 median / median at the same shape and M)\n${formatQuantMatmulBench(quant)}`);
    if (want('attention')) console.log(`\nattention\n${formatMatmulBench(att)}`);
    if (llm) console.log(`\nLLM decode, ours (WebGPU) vs llama.cpp (CPU, ${threadsArg} threads), same GGUF files\n${formatLlmBench(llm)}`);
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
