// The CLI contract: JSON on stdout, logs on stderr, one-line typed errors, exit code 2 for usage errors and 1 for
// every other failure, file arguments checked before any work starts.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
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
    expect(r.code).toBe(2);
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

describe('CLI manners', () => {
  it('--version prints the version in package.json and exits 0', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    for (const flag of ['--version', '-V']) {
      const r = await runCli([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`${version}\n`);
      expect(r.stderr).toBe('');
    }
  });
  it('a bare `tensorwright` prints the help to stderr and exits 2 (a usage error, as commander treats it)', async () => {
    const r = await runCli([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: tensorwright/);
    for (const c of ['generate', 'compile', 'inspect', 'eval', 'bench', 'serve', 'serve-bench', 'onnx-test', 'demo']) expect(r.stderr).toContain(c);
  });
  it('--help and `help <command>` print to stdout and exit 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: tensorwright[\s\S]*Exit codes: 0 success, 1 error .*, 2 usage error/);
    const g = await runCli(['help', 'generate']);
    expect(g.code).toBe(0);
    expect(g.stdout).toMatch(/^Usage: tensorwright generate[\s\S]*--kv-block-size/);
  });
  it('usage errors exit 2 with one [USAGE] line, whatever the command', async () => {
    const cases: [string[], RegExp][] = [
      [['no-such-command'], /unknown command 'no-such-command'/],
      [['generate', '--no-such-flag'], /unknown option '--no-such-flag'/],
      [['compile', '--model', 'm.bin'], /required option '-o, --output <dir>' not specified/],
      [['inspect'], /required option '--model <file>' not specified/],
      [['eval', '--model', 'm.bin'], /required option '--text <file>' not specified/],
      [['bench'], /required option '--model <file>'/],
      [['onnx-test'], /missing required argument 'dirs'/],
      [['generate', '--model', 'm.bin', '--backend', 'gpu'], /--backend.*'gpu'.*cpu, webgpu/],
      [['generate', '--model', 'm.bin', '--topp', '1.5'], /--topp must be a number >= 0 and <= 1/],
      [['compile', '--model', 'm.bin', '-o', 'e', '--kv-block-size', '12'], /--kv-block-size must be a power of two from 1 to 256, got '12'/],
      [['inspect', '--model', 'm.bin', '--quant', 'int5'], /--quant/],
      [['bench', '--model', 'm.bin', '--repeat', '0'], /--repeat must be an integer >= 1/],
      [['demo', '--steps', 'x'], /--steps/],
      [['generate'], /give exactly one of --model <file> and --engine <dir>/],
      [['demo', '--tokenizer', 't.bin'], /--tokenizer goes with --model/],
      [['demo', '--steps', '3'], /--steps must be at least 5 for the random model/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toMatch(/^error \[USAGE\] UsageError: /);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
  });
  it('missing or misplaced files are one typed line naming the file, exit 1, found before any model is read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tw-cli-files-'));
    // not a model: a command that read it before checking the other files would fail with BAD_MODEL_FILE instead
    const notAModel = join(dir, 'not-a-model.bin');
    writeFileSync(notAModel, 'hello');
    const existingFile = join(dir, 'existing-file');
    writeFileSync(existingFile, 'x');
    const emptyDir = join(dir, 'empty');
    mkdirSync(emptyDir);
    const missing = (name: string): string => join(dir, name);
    const cases: [string[], string, RegExp][] = [
      [['generate', '--model', missing('m.bin')], missing('m.bin'), /--model .*: no such file or folder/],
      [['generate', '--model', notAModel, '--tokenizer', missing('tok.bin')], missing('tok.bin'), /--tokenizer .*: no such file/],
      [['generate', '--model', notAModel, '--tokenizer', emptyDir], emptyDir, /--tokenizer .*: is a folder, expected a file/],
      [['generate', '--engine', missing('engine')], missing('engine'), /--engine .*: no such folder/],
      [['generate', '--engine', emptyDir], emptyDir, /--engine .*: not a saved engine \(engine.json is missing/],
      [['generate', '--engine', existingFile], existingFile, /--engine .*: is a file, expected a folder/],
      [['compile', '--model', missing('m.bin'), '-o', missing('out')], missing('m.bin'), /--model/],
      [['compile', '--model', notAModel, '--tokenizer', missing('tok.bin'), '-o', missing('out')], missing('tok.bin'), /--tokenizer/],
      [['compile', '--model', notAModel, '-o', existingFile], existingFile, /--output .*: is an existing file, expected a folder/],
      [['compile', '--model', notAModel, '-o', join(existingFile, 'engine')], existingFile, /--output .*is a file, so the folder cannot be created/],
      [['inspect', '--model', missing('m.onnx')], missing('m.onnx'), /--model/],
      [['eval', '--model', missing('m.bin'), '--text', existingFile], missing('m.bin'), /--model/],
      [['eval', '--model', notAModel, '--text', missing('t.txt')], missing('t.txt'), /--text .*: no such file/],
      [['eval', '--model', notAModel, '--tokenizer', missing('tok.bin'), '--text', existingFile], missing('tok.bin'), /--tokenizer/],
      [['bench', '--model', missing('m.bin')], missing('m.bin'), /--model/],
      [['bench', '--model', notAModel, '--tokenizer', missing('tok.bin')], missing('tok.bin'), /--tokenizer/],
      [['demo', '--model', missing('m.bin')], missing('m.bin'), /--model/],
      [['demo', '--model', notAModel, '--tokenizer', missing('tok.bin')], missing('tok.bin'), /--tokenizer/],
      [['onnx-test', missing('tests')], missing('tests'), /no such folder/],
    ];
    for (const [args, file, message] of cases) {
      const r = await runCli(args);
      const what = args.join(' ');
      expect(r.code, what).toBe(1);
      expect(r.stdout, what).toBe('');
      const lines = r.stderr.trim().split('\n');
      expect(lines, what).toHaveLength(1);
      expect(lines[0], what).toMatch(/^error \[BAD_INPUT\] InputError: /);
      expect(lines[0], what).toContain(file);
      expect(lines[0], what).toMatch(message);
      expect(lines[0], what).not.toMatch(/INTERNAL|ENOENT|EEXIST/);
    }
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
  it('nothing reaches stdout before the inputs are accepted: a prompt longer than --steps fails before the prompt is echoed', async () => {
    const r = await runCli(['generate', '--model', model, '--tokenizer', tok, '--prompt', 'Once upon a time', '--steps', '3', '--backend', 'cpu']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error \[BAD_INPUT\] InputError: the prompt has \d+ tokens, more than --steps allows \(3 positions\)\n$/);
    // and a run that is accepted prints the prompt, then the generation, then a newline
    const ok = await runCli(['generate', '--model', model, '--tokenizer', tok, '--prompt', 'Once upon a time', '--steps', '12', '--temperature', '0', '--backend', 'cpu']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^Once upon a time\S*\s.*\n$/);
  });
  it('--profile on the CPU backend says it has no kernel profile, and --json carries an empty profile', async () => {
    const r = await runCli(['generate', '--model', model, '--tokenizer', tok, '--prompt', 'Once', '--steps', '5', '--temperature', '0', '--backend', 'cpu', '--profile', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).profile).toEqual([]);
    expect(r.stderr).toMatch(/--profile: the CPU backend has no kernel profile/);
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
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error \[USAGE\].*no-such-stage.*select-kernels/);
  });
  it('an unknown pass is a usage error naming the known ones', async () => {
    const r = await runCli(['inspect', '--model', model, '--passes', 'O1,fuse-everything']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error \[USAGE\].*fuse-everything.*known passes/);
  });
  it('--max-context caps the context the model is compiled for; a bad value is a usage error', async () => {
    const r = await runCli(['inspect', '--model', model, '--max-context', '64', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).config.seqLen).toBe(64); // stories260K declares 512
    const bad = await runCli(['inspect', '--model', model, '--max-context', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error \[USAGE\].*--max-context must be an integer >= 1/);
  });
});

describe.skipIf(!hasShared)('inspect: an ONNX graph (gpt2_megatron, an exported transformer)', () => {
  const model = hasShared ? sharedPath('onnx/models/gpt2_megatron/model.onnx') : '';
  // onnxruntime's own optimizer (level "all") leaves this many nodes: the kernels after O3 may be no more
  const ortNodes = hasShared ? JSON.parse(readFileSync(sharedPath('onnx/models/ort-optimized-node-counts.json'), 'utf8')).gpt2_megatron.ort_all : 0;
  it('inspect takes the .onnx file: config from the file, what O3 does, the dims it had to assume', async () => {
    const r = await runCli(['inspect', '--model', model, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    expect(o.format).toBe('onnx');
    expect(o.config.inputs.map((i: string) => i.split(':')[0])).toEqual(['input_ids', 'position_ids', 'attention_mask', 'past_0']);
    expect(o.config.outputs.map((i: string) => i.split(':')[0])).toEqual(['logits', 'present_0']);
    expect(o.assumed_dims).toEqual(['batch_size', 'past_seq_len', 'seq_len']);
    expect(o.after.kernels).toBeLessThan(o.before.kernels);
    expect(o.after.kernels).toBeLessThanOrEqual(ortNodes);
    expect(o.after.ops.layernorm).toBe(3);
    expect(o.after.peak_bytes_planned).toBeLessThanOrEqual(o.after.peak_bytes_naive);
    const text = await runCli(['inspect', '--model', model]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^model .*model\.onnx \(onnx, graph\)\nconfig +opset=\d+ .*inputs=input_ids:i64\[batch_size,seq_len\]/);
    expect(text.stdout).toMatch(/\ndims +batch_size, past_seq_len, seq_len: no value given, assumed 1\n/);
  });
  it('inspect --target webgpu compiles the graph for a device profile (one plan, run)', async () => {
    const r = await runCli(['inspect', '--model', model, '--target', 'webgpu', '--device-profile', 'lavapipe', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    expect(o.plans.map((p: { name: string }) => p.name)).toEqual(['run']);
    expect(o.after.kernels).toBe(o.plans[0].dispatches);
    expect(o.after.kernels).toBeLessThanOrEqual(ortNodes);
    expect(o.passes.map((p: { name: string }) => p.name)).toContain('select-kernels');
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
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error \[USAGE\].*--kv-block-size must be a power of two/);
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
    const o = JSON.parse(r.stdout);
    expect(o.generated_ids).toEqual(gold.generated_ids);
    expect(r.stderr).toMatch(/per-kernel GPU time/);
    // --json carries the profile: one row per dispatch of the last step (the decode plan and the sampler); on lavapipe
    // the decode plan is the whole-step kernel (decoder-step), elsewhere matmuls and the rest
    const engine = JSON.parse(readFileSync(join(out, 'engine.json'), 'utf8'));
    const decode = engine.plans.find((p: { name: string }) => p.name === 'decode');
    const weighted = decode.dispatches.length === 1 ? 'decoder-step/' : 'matmul/';
    expect(r.stderr).toContain(weighted);
    expect(o.profile).toHaveLength(decode.dispatches.length + 1);
    for (const row of o.profile) {
      expect(Object.keys(row).sort()).toEqual(['activation_bytes', 'kernel', 'label', 'ms', 'weight_bytes']);
      expect(row.ms).toBeGreaterThanOrEqual(0);
    }
    expect(o.profile.some((row: { kernel: string; weight_bytes: number }) => row.kernel.startsWith(weighted) && row.weight_bytes > 0)).toBe(true);
    // as text, the profile starts on its own line after the streamed generation
    const t = await runCli(['generate', '--engine', out, '--prompt', gold.prompt, '--steps', '8', '--temperature', '0', '--profile']);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout.startsWith(gold.prompt)).toBe(true);
    expect(t.stdout.endsWith('\n')).toBe(true);
    expect(t.output).toMatch(/\nper-kernel GPU time of the last step/);
    expect(t.output.slice(t.output.indexOf(t.stdout.trimEnd()) + t.stdout.trimEnd().length)).toMatch(/^\n(?:.*\n)*per-kernel GPU time/);
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
    expect(bad.code).toBe(2); // a value out of range is a usage error, found when the flag is parsed
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/^error \[USAGE\].*--topp must be a number >= 0 and <= 1/);
    // an engine refuses bad settings given through the API too, before anything runs (checked in engine.test.ts)
  }, LONG);
});
