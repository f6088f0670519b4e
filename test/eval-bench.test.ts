// `tensorwright eval` and `tensorwright bench` through the command line: their JSON contracts, the quality bar of
// --quant int8 on stories260K's evaluation text, the same numbers on the CPU reference and on WebGPU, and typed
// errors for impossible requests.
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('eval and bench on stories260K');

const LONG = 600_000;
const model = sharedPath('models/stories260K/stories260K.bin');
const text = sharedPath('data/stories260K-eval-public.txt');
const EVAL_FIELDS = ['tokens', 'ppl', 'ppl_f32', 'kl_mean', 'kl_p99', 'top1_agreement', 'weight_bytes', 'weight_bytes_f32', 'kv_dtype'];
const BENCH_FIELDS = ['model', 'backend', 'device', 'quant', 'sparsity', 'prompt_tokens', 'gen_tokens', 'prefill_tokens_per_s', 'decode_tokens_per_s', 'ttft_ms', 'tpot_ms_p50', 'tpot_ms_p95', 'weight_bytes', 'kv_dtype', 'kv_bytes', 'compile_ms', 'load_ms', 'device_copy_read_gbps', 'weight_read_fraction', 'host_ms_per_token', 'gpu_ms_per_token', 'load_ms_by_stage'];
const LOAD_STAGES = ['download', 'device', 'buffers', 'weights', 'shader_modules', 'pipelines', 'bind_groups'];

/** The measurement contract's fields agree with each other (no timing thresholds: only presence and formulas). */
function expectConsistentContract(o: Record<string, unknown>): void {
  const n = (k: string): number => o[k] as number;
  if (o.backend === 'webgpu') {
    expect(n('device_copy_read_gbps')).toBeGreaterThan(0);
    // the fraction is computed from the printed decode rate, weight bytes and copy bandwidth, rounded to 4 places
    expect(Math.abs(n('weight_read_fraction') - (n('decode_tokens_per_s') * n('weight_bytes')) / (n('device_copy_read_gbps') * 1e9))).toBeLessThanOrEqual(5e-5 + 1e-12);
    expect(Object.keys(o.load_ms_by_stage as object)).toEqual(LOAD_STAGES);
  } else {
    expect(o.device_copy_read_gbps).toBeNull();
    expect(o.weight_read_fraction).toBeNull();
    expect(o.gpu_ms_per_token).toBeNull();
    expect(o.host_ms_per_token).toBe(o.tpot_ms_p50);
    expect(Object.keys(o.load_ms_by_stage as object)).toEqual(['interpreter']);
  }
  const stages = Object.values(o.load_ms_by_stage as Record<string, number>);
  for (const ms of stages) expect(ms).toBeGreaterThanOrEqual(0);
  // inside load_ms the stages run one after another, except that the shader modules and pipelines compile while the
  // weights upload (each stage rounded to a whole ms)
  const by = o.load_ms_by_stage as Record<string, number>;
  const overlapped = 'weights' in by ? by.weights + (by.shader_modules ?? 0) + (by.pipelines ?? 0) - Math.max(by.weights, (by.shader_modules ?? 0) + (by.pipelines ?? 0)) : 0;
  expect(stages.reduce((a, b) => a + b, 0) - overlapped).toBeLessThanOrEqual(n('load_ms') + stages.length);
  if (o.gpu_ms_per_token !== null) {
    expect(n('gpu_ms_per_token')).toBeGreaterThan(0);
    // host time is the rest of the median step's wall time (0 when the profiled GPU time exceeds it)
    expect(n('host_ms_per_token')).toBeCloseTo(Math.max(0, n('tpot_ms_p50') - n('gpu_ms_per_token')), 1);
  } else expect(o.backend === 'cpu' || o.host_ms_per_token === null).toBe(true);
}

async function evalJson(args: string[]): Promise<Record<string, number>> {
  const r = await runCli(['eval', '--model', model, '--text', text, '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]);
}

describe.skipIf(!hasShared)('eval on the CPU reference', () => {
  it('f32 against itself: ppl equal, KL 0, full agreement, and exactly the documented fields', async () => {
    const o = await evalJson(['--backend', 'cpu', '--max-tokens', '300']);
    expect(Object.keys(o)).toEqual(EVAL_FIELDS);
    expect(o.tokens).toBe(300);
    expect(o.ppl).toBe(o.ppl_f32);
    expect(o.kl_mean).toBe(0);
    expect(o.top1_agreement).toBe(1);
    expect(o.weight_bytes).toBe(o.weight_bytes_f32);
    expect(o.ppl_f32).toBeGreaterThan(1);
    expect(o.ppl_f32).toBeLessThan(10); // a trained model on text sampled from it
  }, LONG);

  it('--quant int8 over the whole text (windows of 512): top-1 agreement >= 0.99, KL small, under half the f32 bytes', async () => {
    const o = await evalJson(['--backend', 'cpu', '--quant', 'int8']);
    expect(o.tokens).toBeGreaterThan(511); // longer than the context: several windows
    expect(o.top1_agreement).toBeGreaterThanOrEqual(0.99);
    expect(o.kl_mean).toBeLessThan(1e-3);
    expect(Math.abs(Math.log(o.ppl / o.ppl_f32))).toBeLessThan(0.01);
    expect(o.weight_bytes).toBeLessThan(o.weight_bytes_f32 / 2);
  }, LONG);

  it('--quant int4-g32 and int2-g32 are reported, each worse than the wider format', async () => {
    // one at a time: runCli captures the process's stdout
    const i8 = await evalJson(['--backend', 'cpu', '--quant', 'int8', '--max-tokens', '600']);
    const i4 = await evalJson(['--backend', 'cpu', '--quant', 'int4-g32', '--max-tokens', '600']);
    const i2 = await evalJson(['--backend', 'cpu', '--quant', 'int2-g32', '--max-tokens', '600']);
    expect(i4.kl_mean).toBeGreaterThan(i8.kl_mean);
    expect(i2.kl_mean).toBeGreaterThan(i4.kl_mean);
    expect(i4.weight_bytes).toBeLessThan(i8.weight_bytes);
  }, LONG);

  it('bad requests are typed errors: an unknown scheme, a group no weight can take, a missing text', async () => {
    const bad = await runCli(['eval', '--model', model, '--text', text, '--quant', 'int5']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/^error \[USAGE\].*int5.*int4-g32/);
    const group = await runCli(['eval', '--model', model, '--text', text, '--backend', 'cpu', '--quant', 'int4-g128']);
    expect(group.stderr).toMatch(/^error \[BAD_INPUT\].*int4-g128: no weight can be quantized: '.*' \(rows of 64 are no multiple of group 128\)/);
    const missing = await runCli(['eval', '--model', model, '--text', '/nonexistent.txt', '--backend', 'cpu']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
  }, LONG);
});

describe.skipIf(!hasShared)('eval and bench on WebGPU', () => {
  let hasGpu = false;
  beforeAll(async () => {
    const { probeWebGPU } = await import('../src/runtime/device.js');
    const p = await probeWebGPU();
    hasGpu = !('available' in p);
    if (!hasGpu && process.env.REQUIRE_WEBGPU === '1') throw new Error(`REQUIRE_WEBGPU=1 but no WebGPU adapter: ${(p as { reason: string }).reason}`);
  });

  for (const flags of [['--quant', 'int8'], ['--quant', 'int4-g32'], ['--sparsity', '2:4']]) {
    it(`${flags.join(' ')}: the same numbers on webgpu as on the CPU reference (KL within 1e-3)`, async (ctx) => {
      if (!hasGpu) return ctx.skip();
      const args = [...flags, '--max-tokens', '700']; // more than one window of 512
      const gpu = await evalJson(['--backend', 'webgpu', ...args]);
      const cpu = await evalJson(['--backend', 'cpu', ...args]);
      expect(gpu.tokens).toBe(cpu.tokens);
      expect(Math.abs(gpu.kl_mean - cpu.kl_mean)).toBeLessThan(1e-3);
      expect(Math.abs(gpu.kl_p99 - cpu.kl_p99)).toBeLessThan(1e-3);
      expect(Math.abs(gpu.top1_agreement - cpu.top1_agreement)).toBeLessThanOrEqual(2 / cpu.tokens);
      expect(Math.abs(gpu.ppl - cpu.ppl) / cpu.ppl).toBeLessThan(1e-3);
      expect(gpu.ppl_f32).toBe(cpu.ppl_f32);
      // the engine stores the packed weights (and no dense copy)
      expect(gpu.weight_bytes).toBeLessThan(cpu.weight_bytes_f32 * (flags[0] === '--quant' ? 0.5 : 0.7));
    }, LONG);
  }

  it('compile --quant int4 saves the packed weights; generate --engine gives the ids generate --quant gives; --profile reports weight bytes per kernel', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const out = mkdtempSync(join(tmpdir(), 'tw-quant-engine-'));
    const c = await runCli(['compile', '--model', model, '--quant', 'int4', '-o', out, '--json']);
    expect(c.code, c.stderr).toBe(0);
    const summary = JSON.parse(c.stdout);
    expect(summary.quant).toBe('int4');
    const manifest = JSON.parse((await import('node:fs')).readFileSync(join(out, 'engine.json'), 'utf8'));
    const quantized = manifest.weights.filter((w: { encoding: { kind: string } }) => w.encoding.kind === 'quantized');
    expect(quantized.length).toBeGreaterThan(0);
    for (const w of quantized) expect(w.parts.map((p: { role: string }) => p.role)).not.toContain('values');
    const args = ['--prompt', 'Once upon a time', '--steps', '24', '--temperature', '0', '--json'];
    const direct = await runCli(['generate', '--model', model, '--quant', 'int4', '--backend', 'webgpu', ...args]);
    const saved = await runCli(['generate', '--engine', out, '--profile', ...args]);
    expect(saved.code, saved.stderr).toBe(0);
    expect(JSON.parse(saved.stdout).generated_ids).toEqual(JSON.parse(direct.stdout).generated_ids);
    expect(saved.stderr).toMatch(/weight MiB +act MiB +w GB\/s/);
    expect(saved.stderr).toMatch(/dequant-matmul\/dequant-gemv\S* +\d+ +[\d.]+ ms +[\d.]+% +0\.\d\d/);
  }, LONG);

  it('compile --sparsity 2:4 saves the pruned weights (values and positions only); generate --engine gives the ids generate --sparsity gives', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const out = mkdtempSync(join(tmpdir(), 'tw-sparse-engine-'));
    const c = await runCli(['compile', '--model', model, '--sparsity', '2:4', '-o', out, '--json']);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout).sparsity).toBe('2:4');
    const manifest = JSON.parse(readFileSync(join(out, 'engine.json'), 'utf8'));
    const sparse = manifest.weights.filter((w: { encoding: { kind: string } }) => w.encoding.kind === 'sparse-nm');
    expect(sparse.length).toBeGreaterThan(0);
    for (const w of sparse) expect(w.parts.map((p: { role: string }) => p.role).sort()).toEqual(['indices', 'values']);
    expect(manifest.kernels.some((k: { family: string }) => k.family === 'sparse-nm-matmul')).toBe(true);
    const args = ['--prompt', 'Once upon a time', '--steps', '24', '--temperature', '0', '--json'];
    const direct = await runCli(['generate', '--model', model, '--sparsity', '2:4', '--backend', 'webgpu', ...args]);
    const cpu = await runCli(['generate', '--model', model, '--sparsity', '2:4', '--backend', 'cpu', ...args]);
    const saved = await runCli(['generate', '--engine', out, ...args]);
    expect(saved.code, saved.stderr).toBe(0);
    expect(JSON.parse(saved.stdout).generated_ids).toEqual(JSON.parse(direct.stdout).generated_ids);
    expect(JSON.parse(direct.stdout).generated_ids).toEqual(JSON.parse(cpu.stdout).generated_ids);
  }, LONG);

  it('--quant int4 --sparsity 2:4: compile saves N:M weights with packed int4 values (no f32 values); eval and generate give the CPU reference\'s numbers and ids on webgpu', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const flags = ['--quant', 'int4', '--sparsity', '2:4'];
    const out = mkdtempSync(join(tmpdir(), 'tw-sparse-quant-engine-'));
    const c = await runCli(['compile', '--model', model, ...flags, '-o', out, '--json']);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ quant: 'int4', sparsity: '2:4' });
    const manifest = JSON.parse(readFileSync(join(out, 'engine.json'), 'utf8'));
    type W = { name: string; encoding: { kind: string; quantizedValues?: { bits: number } }; parts: { role: string }[] };
    const sparse: W[] = manifest.weights.filter((w: W) => w.encoding.kind === 'sparse-nm');
    // stories260K's w2 rows (172) keep 86 values, no multiple of int4's group of 32: they stay f32
    const quantized = sparse.filter((w) => w.encoding.quantizedValues);
    expect(quantized.length).toBeGreaterThan(0);
    for (const w of quantized) expect(w.parts.map((p) => p.role).sort(), w.name).toEqual(['indices', 'packed', 'scales', 'zeroPoints']);
    for (const w of sparse.filter((x) => !x.encoding.quantizedValues)) expect(w.name).toMatch(/w2/);
    const args = [...flags, '--max-tokens', '120'];
    const gpu = await evalJson(['--backend', 'webgpu', ...args]);
    const cpu = await evalJson(['--backend', 'cpu', ...args]);
    expect(Math.abs(gpu.kl_mean - cpu.kl_mean)).toBeLessThan(1e-3);
    expect(Math.abs(gpu.ppl - cpu.ppl) / cpu.ppl).toBeLessThan(1e-3);
    // int4 values (with a scale and zero point per 32) and 2-bit positions for half the values: under 30% of f32
    expect(gpu.weight_bytes).toBeLessThan(cpu.weight_bytes_f32 * 0.3);
    // decode (the sweep kernel) generates the CPU reference's ids, from the flags and from the saved engine
    const gen = ['--prompt', 'Once upon a time', '--steps', '24', '--temperature', '0', '--json'];
    const ids = async (args: string[]): Promise<number[]> => {
      const r = await runCli(['generate', ...args, ...gen]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).generated_ids;
    };
    const want = await ids(['--model', model, ...flags, '--backend', 'cpu']);
    expect(want).toHaveLength(20); // 24 positions, 4 of them the prompt's after BOS
    expect(await ids(['--model', model, ...flags, '--backend', 'webgpu'])).toEqual(want);
    expect(await ids(['--engine', out])).toEqual(want);
  }, LONG);

  it('bench --json prints exactly the documented fields; int4 stores fewer weight bytes than none', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const run = async (quant: string) => {
      const r = await runCli(['bench', '--model', model, '--backend', 'webgpu', '--quant', quant, '--prompt-tokens', '12', '--gen-tokens', '6', '--repeat', '2', '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/warm-up/); // progress on stderr
      return JSON.parse(r.stdout.trim()) as Record<string, number | string>;
    };
    const none = await run('none');
    const q4 = await run('int4');
    expect(Object.keys(q4)).toEqual(BENCH_FIELDS);
    expect(q4).toMatchObject({ backend: 'webgpu', quant: 'int4', sparsity: 'none', prompt_tokens: 12, gen_tokens: 6 });
    for (const k of ['prefill_tokens_per_s', 'decode_tokens_per_s', 'ttft_ms', 'tpot_ms_p50', 'tpot_ms_p95', 'weight_bytes']) expect(q4[k] as number, k).toBeGreaterThan(0);
    expect(q4.tpot_ms_p95 as number).toBeGreaterThanOrEqual(q4.tpot_ms_p50 as number);
    expect(q4.weight_bytes as number).toBeLessThan((none.weight_bytes as number) / 2);
    expectConsistentContract(none);
    expectConsistentContract(q4);
    // the device line says whether it has timestamp queries: with them, the GPU time per token is reported
    for (const o of [none, q4]) {
      const timestamps = /(?<!no )timestamps/.test(String(o.device));
      expect(o.gpu_ms_per_token === null, `${o.quant}: ${o.device}`).toBe(!timestamps);
    }
  }, LONG);
});

describe.skipIf(!hasShared)('bench on the CPU reference', () => {
  it('prints one JSON object; impossible lengths and sparsity are typed errors', async () => {
    const r = await runCli(['bench', '--model', model, '--backend', 'cpu', '--prompt-tokens', '8', '--gen-tokens', '4', '--repeat', '1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout.trim());
    expect(Object.keys(o)).toEqual(BENCH_FIELDS);
    expect(o).toMatchObject({ backend: 'cpu', quant: 'none', prompt_tokens: 8, gen_tokens: 4 });
    expectConsistentContract(o);
    const long = await runCli(['bench', '--model', model, '--backend', 'cpu', '--prompt-tokens', '500', '--gen-tokens', '64']);
    expect(long.stderr).toMatch(/^error \[BAD_INPUT\].*exceed the model's 512 positions/);
    const zero = await runCli(['bench', '--model', model, '--repeat', '0']);
    expect(zero.stderr).toMatch(/^error \[USAGE\].*--repeat/);
  }, LONG);
});
