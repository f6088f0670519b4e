// The CLI contract: JSON on stdout, logs on stderr, one-line typed errors and non-zero exit codes.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('CLI tests on real checkpoints');

describe('CLI errors', () => {
  it('--help exits 0 and lists the commands', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
  });
  it('a missing model file is a one-line typed error', async () => {
    const r = await runCli(['generate', '--model', '/nonexistent/model.bin', '--json']);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^error \[BAD_INPUT\]/);
  });
  it('a bad flag value is a usage error', async () => {
    const r = await runCli(['generate', '--model', 'x.bin', '--steps', 'many']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error \[USAGE\].*--steps/);
  });
  it('a truncated checkpoint names the field and offset', async () => {
    if (!hasShared) return;
    const dir = mkdtempSync(join(tmpdir(), 'tw-'));
    const bytes = readFileSync(sharedPath('models/stories260K/stories260K.bin'));
    writeFileSync(join(dir, 'cut.bin'), bytes.subarray(0, 5000));
    const r = await runCli(['generate', '--model', join(dir, 'cut.bin'), '--json']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error \[BAD_MODEL_FILE\].*offset \d+/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe.skipIf(!hasShared)('CLI on stories260K', () => {
  const model = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';
  const tok = hasShared ? sharedPath('models/stories260K/tok512.bin') : '';
  it('generate --json prints exactly one JSON object with the contract fields', async () => {
    const r = await runCli(['generate', '--model', model, '--tokenizer', tok, '--prompt', 'Once upon a time', '--steps', '20', '--temperature', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const o = JSON.parse(lines[0]);
    expect(Object.keys(o).sort()).toEqual(['backend', 'generated_ids', 'metrics', 'prompt_ids', 'text'].sort());
    expect(o.prompt_ids[0]).toBe(1);
    expect(o.prompt_ids.length + o.generated_ids.length).toBeLessThanOrEqual(21);
    expect(typeof o.metrics.decode_tokens_per_s).toBe('number');
  });
  it('sampling with a seed is reproducible, and differs across seeds', async () => {
    const args = ['generate', '--model', model, '--tokenizer', tok, '--steps', '40', '--temperature', '1', '--topp', '0.9', '--json'];
    const a = JSON.parse((await runCli([...args, '--seed', '7'])).stdout);
    const b = JSON.parse((await runCli([...args, '--seed', '7'])).stdout);
    const c = JSON.parse((await runCli([...args, '--seed', '8'])).stdout);
    expect(a.generated_ids).toEqual(b.generated_ids);
    expect(a.generated_ids).not.toEqual(c.generated_ids);
  });
  it('the tokenizer is found beside the model when not given', async () => {
    const r = await runCli(['generate', '--model', model, '--prompt', 'Hi', '--steps', '5', '--temperature', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).text.startsWith('Hi')).toBe(true);
  });
  it('a tokenizer whose vocab does not match the model is a typed error', async () => {
    const r = await runCli(['generate', '--model', model, '--tokenizer', sharedPath('models/llama2-tokenizer/tokenizer.bin'), '--json']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error \[BAD_MODEL_FILE\]/);
  });
  it('inspect --json reports config, ops, parameters and bytes', async () => {
    const r = await runCli(['inspect', '--model', model, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    expect(o.config.dim).toBe(64);
    // 512*64 embedding + 5 layers * (2*64 + 2*64*64 + 2*32*64 + 3*172*64) + 64 = 260032 (the file's 264128 floats less RoPE tables)
    expect(o.parameters).toBe(260_032);
    expect(o.weight_bytes).toBe(260_032 * 4);
    expect(o.ops.attention).toBe(5);
    expect(o.ops.matmul).toBe(5 * 7 + 1);
  });
  it('inspect without --json prints the IR text', async () => {
    const r = await runCli(['inspect', '--model', model]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/= attention\(/);
    expect(r.stdout).toMatch(/kind="rope"/);
    const o0 = await runCli(['inspect', '--model', model, '--passes', 'O0']);
    expect(o0.stdout).toMatch(/= rope\(/);
  });
  it('babyllama105 (a second, independent checkpoint) runs', async () => {
    const r = await runCli(['generate', '--model', sharedPath('models/babyllama105/model5000.bin'), '--tokenizer', sharedPath('models/babyllama105/tok105.bin'), '--prompt', 'Once', '--steps', '30', '--temperature', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    expect(o.generated_ids.every((i: number) => i >= 0 && i < 105)).toBe(true);
    expect(o.text.startsWith('Once')).toBe(true);
  });
});

describe.skipIf(!hasShared)('inspect: the optimizer on stories260K', () => {
  const model = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';
  it('--json has before/after node, kernel and op counts, memory figures and per-pass times', async () => {
    const r = await runCli(['inspect', '--model', model, '--passes', 'O3', '--seq', '512', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    for (const k of ['nodes', 'kernels', 'ops']) {
      expect(o.before[k]).toBeDefined();
      expect(o.after[k]).toBeDefined();
    }
    expect(o.after.kernels).toBeLessThan(o.before.kernels);
    expect(o.after.nodes).toBeLessThan(o.before.nodes);
    // planned peak activation memory at seq 512 is at most half the naive sum
    expect(o.after.peak_bytes_planned).toBeLessThanOrEqual(0.5 * o.after.peak_bytes_naive);
    expect(o.passes.map((p: { name: string }) => p.name)).toContain('fuse-epilogues');
    for (const p of o.passes) expect(typeof p.ms).toBe('number');
    // every layer is reduced to the same fused minimum
    const perLayer = o.after.kernels_per_layer as Record<string, number>;
    const layers = Object.entries(perLayer).filter(([k]) => k !== 'other');
    expect(layers).toHaveLength(5);
    expect(new Set(layers.map(([, v]) => v)).size).toBe(1);
    expect(layers[0][1]).toBeLessThanOrEqual(11);
    // the projections merged and the matmul epilogues fused
    expect(o.after.ops.fused).toBeGreaterThan(0);
    expect(o.report.some((e: { message: string }) => /merged 3 projections/.test(e.message))).toBe(true);
  });
  it('--passes O0 leaves the graph alone, and --print-ir-after prints to stderr', async () => {
    const o0 = JSON.parse((await runCli(['inspect', '--model', model, '--passes', 'O0', '--json'])).stdout);
    expect(o0.after.nodes).toBe(o0.before.nodes);
    expect(o0.passes).toEqual([]);
    const r = await runCli(['inspect', '--model', model, '--passes', 'O1', '--print-ir-after', 'simplify', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/IR after simplify/);
    JSON.parse(r.stdout);
  });
  it('--target webgpu runs the whole WebGPU pipeline without a device: every stage named, decode dispatches, distinct pipelines', async () => {
    const r = await runCli(['inspect', '--model', model, '--target', 'webgpu', '--device-profile', 'lavapipe', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    const stages = o.passes.map((p: { name: string }) => p.name);
    for (const s of ['fuse-epilogues', 'split-large-weights', 'legalize-webgpu', 'lower-paged-kv', 'materialize-outputs', 'plan-memory', 'select-kernels']) expect(stages).toContain(s);
    // plan-memory and select-kernels run once per plan
    expect(o.passes.filter((p: { name: string; plan?: string }) => p.name === 'select-kernels').map((p: { plan: string }) => p.plan)).toEqual(['decode', 'prefill']);
    const decode = o.plans.find((p: { name: string }) => p.name === 'decode');
    expect(o.after.kernels).toBe(decode.dispatches);
    // a Llama layer is 10 dispatches (2 norms, QKV, 2 ropes, KV write, attention, output, gated FFN up, down)
    expect(o.after.kernels).toBe(5 * 10 + 4);
    expect(o.after.pipelines).toBeLessThanOrEqual(25);
    expect(o.target).toMatchObject({ name: 'lavapipe', device_class: 'software-gpu', precision: 'auto', kv: { blockSize: 16, dtype: 'f32' } });
  });
  it('--target webgpu: --print-ir-after works for each lowering stage, and kernel selection lists its launches', async () => {
    const r = await runCli(['inspect', '--model', model, '--target', 'webgpu', '--device-profile', 'discrete', '--seq', '8', '--print-ir-after', 'lower-paged-kv', '--print-ir-after', 'select-kernels', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/IR after lower-paged-kv/);
    expect(r.stderr).toMatch(/IR after select-kernels[\s\S]*launches \(\d+\)[\s\S]*matmul\/gemv/);
    const bad = await runCli(['inspect', '--model', model, '--target', 'webgpu', '--device-profile', 'lavapipe', '--print-ir-after', 'no-such-stage']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/^error \[USAGE\].*no-such-stage.*select-kernels/);
  });
  it('an unknown pass is a usage error naming the known ones', async () => {
    const r = await runCli(['inspect', '--model', model, '--passes', 'O1,fuse-everything']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error \[USAGE\].*fuse-everything.*known passes/);
  });
});

describe.skipIf(!hasShared)('CLI on WebGPU', () => {
  const model = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';
  const tok = hasShared ? sharedPath('models/stories260K/tok512.bin') : '';
  const LONG = 600_000;
  let hasGpu = false;
  // one saved engine (`compile -o`), shared by the tests below
  let compiled: Promise<{ code: number; stdout: string; stderr: string; dir: string }> | undefined;
  const engineDir = (): Promise<{ code: number; stdout: string; stderr: string; dir: string }> =>
    (compiled ??= (async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tw-cli-engine-'));
      return { ...(await runCli(['compile', '--model', model, '-o', dir, '--json'])), dir };
    })());
  beforeAll(async () => {
    const { probeWebGPU } = await import('../src/runtime/device.js');
    const p = await probeWebGPU();
    hasGpu = !('available' in p);
    if (!hasGpu && process.env.REQUIRE_WEBGPU === '1') throw new Error(`REQUIRE_WEBGPU=1 but no WebGPU adapter: ${(p as { reason: string }).reason}`);
  });
  // every golden sequence runs through the engine API in engine.test.ts; here two go through the command line
  it('generate --backend webgpu --temperature 0 reproduces golden sequences', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const dir = sharedPath('golden/stories260K');
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.json')).slice(0, 2)) {
      const gold = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
      const r = await runCli(['generate', '--model', model, '--tokenizer', tok, '--prompt', gold.prompt, '--steps', String(gold.steps), '--temperature', '0', '--backend', 'webgpu', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const o = JSON.parse(r.stdout);
      expect(o.backend).toBe('webgpu');
      expect(o.prompt_ids, f).toEqual(gold.prompt_ids);
      expect(o.generated_ids, f).toEqual(gold.generated_ids);
    }
  }, LONG);
  it('generate --kv-block-size 8 and 32 reproduce a golden sequence exactly', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const dir = sharedPath('golden/stories260K');
    const f = readdirSync(dir).filter((x) => x.endsWith('.json'))[0];
    const gold = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
    for (const bs of ['8', '32']) {
      const r = await runCli(['generate', '--model', model, '--tokenizer', tok, '--prompt', gold.prompt, '--steps', String(gold.steps), '--temperature', '0', '--backend', 'webgpu', '--kv-block-size', bs, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).generated_ids, `block size ${bs}`).toEqual(gold.generated_ids);
    }
    const bad = await runCli(['generate', '--model', model, '--tokenizer', tok, '--backend', 'webgpu', '--kv-block-size', '12']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/kv\.blockSize must be a power of two/);
  }, LONG);
  it('compile -o <dir> then generate --engine <dir> (with --profile) gives the golden ids', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const c = await engineDir();
    const out = c.dir;
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout).tokenizer).toBe('tokenizer.bin');
    const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-2.json'), 'utf8'));
    const r = await runCli(['generate', '--engine', out, '--prompt', gold.prompt, '--steps', String(gold.steps), '--temperature', '0', '--profile', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).generated_ids).toEqual(gold.generated_ids);
    expect(r.stderr).toMatch(/per-kernel GPU time/);
    expect(r.stderr).toMatch(/matmul\//);
  }, LONG);
  it('one saved engine takes any sampling settings: generate --engine gives the ids of generate --model (webgpu both ways)', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const c = await engineDir();
    expect(c.code, c.stderr).toBe(0);
    const common = ['--tokenizer', tok, '--prompt', 'Once upon a time', '--steps', '32', '--seed', '7', '--json'];
    for (const settings of [['--temperature', '0.8'], ['--temperature', '1.1', '--topp', '1', '--topk', '8']]) {
      const fromEngine = await runCli(['generate', '--engine', c.dir, ...settings, ...common]);
      expect(fromEngine.code, fromEngine.stderr).toBe(0);
      const fromModel = await runCli(['generate', '--model', model, '--backend', 'webgpu', ...settings, ...common]);
      expect(fromModel.code, fromModel.stderr).toBe(0);
      const [e, m] = [JSON.parse(fromEngine.stdout), JSON.parse(fromModel.stdout)];
      expect([e.backend, m.backend]).toEqual(['webgpu', 'webgpu']);
      expect(e.prompt_ids).toEqual(m.prompt_ids);
      expect(e.generated_ids, settings.join(' ')).toEqual(m.generated_ids);
      expect(e.generated_ids.length).toBeGreaterThan(0);
    }
    // bad settings are refused before anything is printed
    const bad = await runCli(['generate', '--engine', c.dir, '--prompt', 'Once', '--temperature', '0.8', '--topp', '1.5']);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/^error \[BAD_INPUT\].*topp must be in \[0, 1\]/);
  }, LONG);
});
