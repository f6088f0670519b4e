// `--kv-h2o BUDGET,RECENT` on the command line (stories260K, CPU): eval streams the text through a cache bounded by H2O
// heavy-hitter eviction and reports its memory; generate runs past the 512-position context; serve takes completions
// past the context; malformed values and unsupported combinations are usage errors naming the option.
import { describe, expect, it } from 'vitest';
import { loadServedModel, startServer, type ServeCommandOptions } from '../src/cli/serve.js';
import { UsageError } from '../src/errors.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { runCli } from './support/cli.js';
import { goldens } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('--kv-h2o on the command line');

describe.skipIf(!hasShared)('--kv-h2o (stories260K, CPU)', () => {
  const model = (): string => sharedPath('models/stories260K/stories260K.bin');
  const tok = (): string => sharedPath('models/stories260K/tok512.bin');
  const text = (): string => sharedPath('data/stories260K-eval-public.txt');

  it('generate runs 600 steps past the 512-position context; until the first eviction it is run.c', async () => {
    const r = await runCli(['generate', '--model', model(), '--tokenizer', tok(), '--backend', 'cpu', '--steps', '600', '--temperature', '0', '--kv-h2o', '80,32', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim());
    expect(out.generated_ids).toHaveLength(600);
    expect(out.metrics.kv_h2o).toBe('80,32');
    // blocks of 16: 5 blocks, 80 positions; the first drop comes after 79 generated tokens
    expect(out.generated_ids.slice(0, 79)).toEqual(goldens()[0].generated_ids.slice(0, 79));
  });

  it('eval --kv-h2o streams the text in half the KV to a lower perplexity than restarting every 512 tokens', async () => {
    const r = await runCli(['eval', '--model', model(), '--tokenizer', tok(), '--text', text(), '--kv-h2o', '256,128', '--kv-block-size', '4', '--max-tokens', '1200', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim());
    expect(out.tokens).toBe(1200);
    expect(out.kv_h2o).toMatchObject({ budget_tokens: 256, recent_tokens: 128, block_size: 4, cache_positions: 256 });
    expect(out.kv_h2o.kv_bytes * 2).toBe(out.kv_h2o.kv_bytes_full_context);
    // 1200 tokens through 64 blocks: every token past the first 256 evicts a block every 4 tokens
    expect(out.kv_h2o.evicted_blocks).toBe(Math.ceil((1200 - 256) / 4));
    expect(out.ppl).toBeLessThan(out.ppl_f32);
    // on this model the sliding window with sinks does better in the same KV bytes (README's H2O table)
    const w = await runCli(['eval', '--model', model(), '--tokenizer', tok(), '--text', text(), '--kv-window', '4,252', '--kv-block-size', '4', '--max-tokens', '1200', '--json']);
    expect(w.code, w.stderr).toBe(0);
    const win = JSON.parse(w.stdout.trim());
    expect(win.kv_window.kv_bytes).toBe(out.kv_h2o.kv_bytes);
    expect(win.ppl).toBeLessThan(out.ppl);
  }, 120_000);

  it('serve --kv-h2o answers a completion of 600 tokens past the context', async () => {
    const server = await startServer({ model: model(), tokenizer: tok(), port: 0, backend: 'cpu', maxBatchTokens: 64, kvBlocks: 16, kvBlockSize: 16, kvH2o: '64,32' });
    try {
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1], max_tokens: 600, temperature: 0, ignore_eos: true }) });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { usage: { completion_tokens: number } };
      expect(body.usage.completion_tokens).toBe(600);
    } finally {
      await server.close();
    }
  }, 120_000);

  it('on --backend webgpu (the engine\'s attention-mass observers): eval matches the CPU figures, generate the CPU ids, serve answers', async (ctx) => {
    const gpu = await acquireTestDevice();
    if (!gpu) return ctx.skip();
    await gpu.destroy();
    const args = ['eval', '--model', model(), '--tokenizer', tok(), '--text', text(), '--kv-h2o', '64,32', '--kv-block-size', '4', '--max-tokens', '300', '--json'];
    const [c, g] = [await runCli([...args, '--backend', 'cpu']), await runCli([...args, '--backend', 'webgpu'])];
    expect(c.code, c.stderr).toBe(0);
    expect(g.code, g.stderr).toBe(0);
    const [cpu, webgpu] = [JSON.parse(c.stdout.trim()), JSON.parse(g.stdout.trim())];
    expect(webgpu.kv_h2o).toEqual(cpu.kv_h2o);
    expect(cpu.kv_h2o.evicted_blocks).toBe(Math.ceil((300 - 64) / 4));
    expect(Math.abs(webgpu.ppl - cpu.ppl) / cpu.ppl).toBeLessThan(1e-5);
    const gen = ['generate', '--model', model(), '--tokenizer', tok(), '--steps', '160', '--temperature', '0', '--kv-h2o', '48,16', '--kv-block-size', '4', '--json'];
    const [gc, gg] = [await runCli([...gen, '--backend', 'cpu']), await runCli([...gen, '--backend', 'webgpu'])];
    expect(gg.code, gg.stderr).toBe(0);
    const [ids, gpuIds] = [JSON.parse(gc.stdout.trim()).generated_ids, JSON.parse(gg.stdout.trim()).generated_ids];
    expect(ids).toHaveLength(160);
    expect(gpuIds).toEqual(ids);
    expect(JSON.parse(gg.stdout.trim()).metrics.kv_h2o).toBe('48,16');
    const server = await startServer({ model: model(), tokenizer: tok(), port: 0, backend: 'webgpu', maxBatchTokens: 64, kvBlocks: 16, kvH2o: '64,32' });
    try {
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1], max_tokens: 100, temperature: 0, ignore_eos: true }) });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { usage: { completion_tokens: number } };
      expect(body.usage.completion_tokens).toBe(100);
    } finally {
      await server.close();
    }
  }, 300_000);

  it('malformed values and unsupported combinations are usage errors naming --kv-h2o', async () => {
    for (const [args, code] of [
      [['generate', '--model', model(), '--kv-h2o', '64'], 2],
      [['eval', '--model', model(), '--text', text(), '--kv-h2o', '64,x'], 2],
      [['eval', '--model', model(), '--text', text(), '--kv-h2o', '256,128', '--kv-window', '4,252'], 2],
      [['eval', '--model', model(), '--text', text(), '--kv-h2o', '256,128', '--kv-dtype', 'int8'], 2],
      [['eval', '--model', model(), '--text', text(), '--kv-h2o', '256,128', '--kv-calib', text()], 2],
      [['generate', '--model', model(), '--backend', 'cpu', '--kv-h2o', '64,32', '--kv-dtype', 'int4'], 2],
      [['generate', '--model', model(), '--backend', 'cpu', '--kv-h2o', '64,32', '--speculative', 'ngram'], 2],
      [['generate', '--model', model(), '--backend', 'webgpu', '--kv-h2o', '64,32', '--kv-dtype', 'int8'], 2],
      [['generate', '--model', model(), '--backend', 'cpu', '--kv-h2o', '600,32', '--steps', '700'], 1],
      [['generate', '--model', model(), '--backend', 'cpu', '--kv-h2o', '64,64', '--steps', '100'], 1],
    ] as const) {
      const r = await runCli([...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      const last = r.stderr.trim().split('\n').at(-1);
      expect(last, args.join(' ')).toMatch(/^error \[(USAGE|BAD_INPUT)\]/);
      expect(last, args.join(' ')).toMatch(/kv-h2o|kvEviction|BUDGET/);
    }
    // a saved engine is served one session per sequence, which cannot evict: refused before it is loaded
    await expect(loadServedModel('e', sharedPath('no-such-engine'), { kvH2o: '64,32' } as ServeCommandOptions, true)).rejects.toThrow(UsageError);
  });
});
