// `--kv-window SINKS,RECENT` on the command line (stories260K, CPU): generate runs past the 512-position context and
// matches run.c's golden ids until the window first slides; eval streams the text through the window, in half the KV
// of the full context, to a lower perplexity than the model restarted every 512 tokens; serve takes completions past the
// context; bad values are usage errors.
import { describe, expect, it } from 'vitest';
import { startServer } from '../src/cli/serve.js';
import { runCli } from './support/cli.js';
import { goldens } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('--kv-window on the command line');

describe.skipIf(!hasShared)('--kv-window (stories260K, CPU)', () => {
  const model = (): string => sharedPath('models/stories260K/stories260K.bin');
  const tok = (): string => sharedPath('models/stories260K/tok512.bin');

  it('generate runs 600 steps past the 512-position context; until the window slides it is run.c', async () => {
    const r = await runCli(['generate', '--model', model(), '--tokenizer', tok(), '--backend', 'cpu', '--steps', '600', '--temperature', '0', '--kv-window', '4,60', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim());
    expect(out.generated_ids).toHaveLength(600);
    expect(out.metrics.kv_window).toBe('4,60');
    // blocks of 16: one sink block and 4 recent ones, 80 positions; the first drop comes after 79 generated tokens
    expect(out.generated_ids.slice(0, 79)).toEqual(goldens()[0].generated_ids.slice(0, 79));
  });

  it('eval --kv-window streams the text in half the KV to a lower perplexity than restarting every 512 tokens', async () => {
    const r = await runCli(['eval', '--model', model(), '--tokenizer', tok(), '--text', sharedPath('data/stories260K-eval-public.txt'), '--kv-window', '4,252', '--kv-block-size', '4', '--max-tokens', '1200', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim());
    expect(out.tokens).toBe(1200);
    expect(out.kv_window).toMatchObject({ sink_tokens: 4, window_tokens: 252, block_size: 4, cache_positions: 256 });
    expect(out.kv_window.kv_bytes * 2).toBe(out.kv_window.kv_bytes_full_context);
    expect(out.kv_window.shifts).toBeGreaterThan(0);
    expect(out.ppl).toBeLessThan(out.ppl_f32);
  }, 120_000);

  it('serve --kv-window answers a completion of 600 tokens past the context (without it: context_length_exceeded)', async () => {
    const server = await startServer({ model: model(), tokenizer: tok(), port: 0, backend: 'cpu', maxBatchTokens: 64, kvBlocks: 16, kvBlockSize: 16, kvWindow: '4,60' });
    try {
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1], max_tokens: 600, temperature: 0, ignore_eos: true }) });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { usage: { completion_tokens: number } };
      expect(body.usage.completion_tokens).toBe(600);
    } finally {
      await server.close();
    }
    const plain = await startServer({ model: model(), tokenizer: tok(), port: 0, backend: 'cpu', maxBatchTokens: 64, kvBlocks: 64, kvBlockSize: 16 });
    try {
      const res = await fetch(`${plain.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1], max_tokens: 600 }) });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('context_length_exceeded');
    } finally {
      await plain.close();
    }
  }, 120_000);

  it('bad windows are usage or input errors', async () => {
    for (const [args, code] of [
      [['generate', '--model', model(), '--kv-window', '4'], 2],
      [['eval', '--model', model(), '--text', sharedPath('data/stories260K-eval-public.txt'), '--kv-window', '4,x'], 2],
      [['eval', '--model', model(), '--text', sharedPath('data/stories260K-eval-public.txt'), '--kv-window', '4,252', '--backend', 'webgpu'], 2],
      [['generate', '--model', model(), '--backend', 'cpu', '--kv-window', '4,600', '--steps', '700'], 1],
      [['generate', '--model', model(), '--backend', 'cpu', '--kv-window', '4,60', '--kv-dtype', 'int8'], 2],
    ] as const) {
      const r = await runCli([...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr.trim().split('\n').at(-1), args.join(' ')).toMatch(/^error \[(USAGE|BAD_INPUT)\]/);
    }
  });
});
