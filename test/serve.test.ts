// `tensorwright serve` driven by the official `openai` client (stories260K on the CPU backend, one request on WebGPU):
// completions, chat with streaming, an abort that frees its blocks, /metrics as Prometheus text, and bad input
// (malformed JSON, unknown model, a prompt longer than the context, ...) answered with typed 4xx bodies while the
// server keeps serving; `serve-bench --json` prints its documented fields.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../src/cli/serve.js';
import { createOpenAiServer, type ModelProvider } from '../src/cli/openai-server.js';
import { ChatTemplate } from '../src/cli/chat-template.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { generateTokens } from '../src/runtime/generate.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import type { BatchExecutor, ExecutorBatch } from '../src/runtime/serving/batch-executor.js';
import { Llama2cTokenizer } from '../src/tokenizers/llama2c.js';
import { runCli } from './support/cli.js';
import { parsePrometheus } from './support/prometheus.js';
import { goldens, stories260K } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

noteMissingShared('serve tests');

const MODEL = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';
const TOKENIZER = hasShared ? sharedPath('models/stories260K/tok512.bin') : '';

async function metrics(url: string): Promise<ReturnType<typeof parsePrometheus>> {
  const res = await fetch(`${url}/metrics`);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
}
const sample = (m: ReturnType<typeof parsePrometheus>, name: string, labels: Record<string, string> = {}): number | undefined =>
  [...m.values()].flatMap((f) => f.samples).find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

/** Greedy text of the CPU reference for `ids`, as the server streams it (pieces after the prompt). */
async function referenceText(ids: number[], n: number): Promise<string> {
  const s = await stories260K();
  const tok = await Llama2cTokenizer.fromFile(TOKENIZER, 512);
  const r = await generateTokens(new CpuCausalLM(s.graph, s.maxPositions), ids, { steps: ids.length + n - 1, temperature: 0, topp: 1, seed: 0, stopTokens: s.stopTokens });
  let prev = ids[ids.length - 1];
  return r.generated.map((t) => tok.decodePiece(prev, (prev = t))).join('');
}

describe.skipIf(!hasShared)('serve (stories260K, CPU backend) with the openai client', () => {
  let server: RunningServer;
  let client: OpenAI;
  beforeAll(async () => {
    server = await startServer({ model: MODEL, tokenizer: TOKENIZER, port: 0, backend: 'cpu', maxBatchTokens: 64, kvBlocks: 256, kvBlockSize: 16, maxWaiting: 64 });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('lists the model and answers /health', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['stories260K']);
    expect(await (await fetch(`${server.url}/health`)).json()).toEqual({ status: 'ok' });
  });

  it('completions: text and token-id prompts give run.c\'s greedy output', async () => {
    const g = goldens()[3];
    const tok = await Llama2cTokenizer.fromFile(TOKENIZER, 512);
    const r = await client.completions.create({ model: 'stories260K', prompt: g.prompt, max_tokens: 20, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.usage).toEqual({ prompt_tokens: g.prompt_ids.length, completion_tokens: 20, total_tokens: g.prompt_ids.length + 20 });
    let prev = g.prompt_ids[g.prompt_ids.length - 1];
    expect(r.choices[0].text).toBe(g.generated_ids.slice(0, 20).map((t) => tok.decodePiece(prev, (prev = t))).join(''));
    const byIds = await client.completions.create({ model: 'stories260K', prompt: g.prompt_ids, max_tokens: 20, temperature: 0 });
    expect(byIds.choices[0].text).toBe(r.choices[0].text);
  });

  it('chat: the plain template, streamed and not, equals the CPU reference', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me a story about a cat.' }];
    const tok = await Llama2cTokenizer.fromFile(TOKENIZER, 512);
    const ids = tok.encode(ChatTemplate.plain().render(messages));
    const want = await referenceText(ids, 16);
    const stream = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 16, temperature: 0, stream: true });
    let text = '';
    let role: string | undefined;
    let finish: string | null | undefined;
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      role ??= c.choices[0]?.delta.role;
      text += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(role).toBe('assistant');
    expect(finish).toBe('length');
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe(want);
    const whole = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 16, temperature: 0 });
    expect(whole.choices[0].message).toMatchObject({ role: 'assistant', content: want });
    expect(whole.usage?.prompt_tokens).toBe(ids.length);
  });

  it('n > 1: n choices of one prompt, each seeded seed + i as a request alone would be, streamed and not', async () => {
    const g = goldens()[4];
    const one = async (seed: number): Promise<string> => (await client.completions.create({ model: 'stories260K', prompt: g.prompt_ids, max_tokens: 12, temperature: 1, seed })).choices[0].text;
    const want = [await one(7), await one(8), await one(9)];
    expect(new Set(want).size).toBeGreaterThan(1);
    const r = await client.completions.create({ model: 'stories260K', prompt: g.prompt_ids, max_tokens: 12, temperature: 1, seed: 7, n: 3 });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(r.choices.map((c) => c.text)).toEqual(want);
    expect(r.usage).toEqual({ prompt_tokens: g.prompt_ids.length, completion_tokens: 36, total_tokens: g.prompt_ids.length + 36 });
    const stream = await client.completions.create({ model: 'stories260K', prompt: g.prompt_ids, max_tokens: 12, temperature: 1, seed: 7, n: 3, stream: true, stream_options: { include_usage: true } });
    const texts = ['', '', ''];
    let usage: unknown;
    for await (const c of stream) {
      for (const ch of c.choices) texts[ch.index] += ch.text;
      usage ??= c.usage ?? undefined;
    }
    expect(texts).toEqual(want);
    expect(usage).toMatchObject({ completion_tokens: 36 });
    const messages = [{ role: 'user' as const, content: 'Hi.' }];
    const chat = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 6, temperature: 0, n: 2 });
    expect(chat.choices).toHaveLength(2);
    expect(chat.choices[0].message.content).toBe(chat.choices[1].message.content);
    await expect(client.completions.create({ model: 'stories260K', prompt: 'x', n: 17 })).rejects.toMatchObject({ status: 400, param: 'n' });
  });

  it('a client that aborts a stream cancels its request and frees its KV blocks', async () => {
    const stream = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 400, temperature: 0, stream: true });
    let n = 0;
    for await (const _c of stream) if (++n === 3) stream.controller.abort();
    const session = (await server.models.get('stories260K'))!.session;
    await session.idle();
    const m = await metrics(server.url);
    expect(sample(m, 'tensorwright_requests_finished_total', { reason: 'abort', model: 'stories260K' })).toBe(1);
    expect(sample(m, 'tensorwright_kv_cache_used_blocks', { model: 'stories260K' })).toBe(0);
    expect(session.metrics().generatedTokens).toBeLessThan(400);
  });

  it('/metrics parses as Prometheus text with latency summaries and KV, prefix and preemption figures', async () => {
    const m = await metrics(server.url);
    for (const name of ['time_to_first_token_seconds', 'time_per_output_token_seconds', 'e2e_request_latency_seconds', 'request_queue_time_seconds'])
      expect(m.get(`tensorwright_${name}`)?.type).toBe('summary');
    for (const q of ['0.5', '0.95', '0.99']) expect(sample(m, 'tensorwright_time_to_first_token_seconds', { quantile: q })).toBeGreaterThan(0);
    expect(sample(m, 'tensorwright_time_to_first_token_seconds_count')).toBeGreaterThanOrEqual(4);
    expect(sample(m, 'tensorwright_kv_cache_total_blocks')).toBe(256);
    expect(sample(m, 'tensorwright_generation_tokens_total')).toBeGreaterThanOrEqual(72);
    expect(sample(m, 'tensorwright_prefix_cache_hit_rate')).toBeGreaterThan(0);
    expect(m.get('tensorwright_preemptions_total')?.type).toBe('counter');
    expect(Number.isNaN(sample(m, 'tensorwright_spec_decode_acceptance_rate'))).toBe(true);
  });

  it('bad input gets a typed 4xx and the server keeps serving', async () => {
    const post = async (path: string, body: string): Promise<{ status: number; error: { type: string; code: string | null; message: string } }> => {
      const res = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: res.status, error: ((await res.json()) as { error: { type: string; code: string | null; message: string } }).error };
    };
    const malformed = await post('/v1/completions', '{"model": "stories260K", "prompt": ');
    expect(malformed).toMatchObject({ status: 400, error: { type: 'invalid_request_error', code: 'invalid_json' } });
    expect((await post('/v1/chat/completions', '[1, 2]')).status).toBe(400);
    await expect(client.completions.create({ model: 'nope', prompt: 'hi' })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
    const long = Array.from({ length: 600 }, (_v, i) => 3 + (i % 400));
    await expect(client.completions.create({ model: 'stories260K', prompt: long, max_tokens: 4 })).rejects.toMatchObject({ status: 400, code: 'context_length_exceeded' });
    await expect(client.completions.create({ model: 'stories260K', prompt: 'Once', max_tokens: 600 })).rejects.toMatchObject({ status: 400, code: 'context_length_exceeded' });
    expect(await post('/v1/completions', JSON.stringify({ model: 'stories260K', prompt: 'x', max_tokens: 'ten' }))).toMatchObject({ status: 400, error: { type: 'invalid_request_error' } });
    expect(await post('/v1/completions', JSON.stringify({ model: 'stories260K', prompt: 'x', temperature: -1 }))).toMatchObject({ status: 400 });
    expect(await post('/v1/completions', JSON.stringify({ model: 'stories260K', prompt: [1, 99999] }))).toMatchObject({ status: 400, error: { code: 'BAD_INPUT' } });
    expect(await post('/v1/completions', JSON.stringify({ model: 'stories260K', prompt: 'x', n: 0 }))).toMatchObject({ status: 400, error: { param: 'n' } });
    expect(await post('/v1/chat/completions', JSON.stringify({ model: 'stories260K', messages: [] }))).toMatchObject({ status: 400 });
    expect((await post('/v1/nothing', '{}')).status).toBe(404);
    expect((await fetch(`${server.url}/v1/completions`)).status).toBe(405);
    const ok = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
    expect(ok.choices[0].text.length).toBeGreaterThan(0);
  });

  it('serve-bench --json prints one object per concurrency level with exactly the documented fields', async () => {
    const r = await runCli(['serve-bench', '--url', server.url, '--concurrency', '1,3', '--requests', '3', '--prompt-tokens', '8', '--gen-tokens', '4', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    expect(rows.map((x) => x.concurrency)).toEqual([1, 3]);
    for (const row of rows) {
      expect(Object.keys(row)).toEqual(['concurrency', 'requests', 'throughput_tok_s', 'ttft_ms_p50', 'ttft_ms_p95', 'ttft_ms_p99', 'tpot_ms_p50', 'tpot_ms_p95', 'tpot_ms_p99', 'e2e_ms_p50', 'e2e_ms_p95', 'e2e_ms_p99', 'errors']);
      expect(row.requests).toBe(3);
      expect(row.errors).toBe(0);
      expect(row.throughput_tok_s).toBeGreaterThan(0);
      expect(row.ttft_ms_p50).toBeLessThanOrEqual(row.ttft_ms_p99);
      expect(row.tpot_ms_p50).toBeGreaterThan(0);
    }
    expect(r.stderr).toMatch(/serve-bench: concurrency 3/);
  });

  it('serve without a model is a usage error', async () => {
    const r = await runCli(['serve', '--port', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/exactly one of --model/);
  });

  it('--tune with a saved engine or the CPU backend is a usage error', async () => {
    const engine = await runCli(['serve', '--engine', 'no-such-engine', '--tune', '--port', '0']);
    expect(engine.code).toBe(2);
    expect(engine.stderr).toMatch(/--tune compiles a model file/);
    const cpu = await runCli(['serve', '--model', 'no-such-model.bin', '--backend', 'cpu', '--tune', '--port', '0']);
    expect(cpu.code).toBe(2);
    expect(cpu.stderr).toMatch(/CPU backend has none/);
  });
});

describe.skipIf(!hasShared)('serve --models DIR', () => {
  it('lists the folder\'s models, loads one on first use, and 404s a name not in it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tw-models-'));
    symlinkSync(MODEL, join(dir, 'tiny.bin'));
    symlinkSync(TOKENIZER, join(dir, 'tok512.bin'));
    const server = await startServer({ models: dir, port: 0, backend: 'cpu', maxBatchTokens: 64 });
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      expect((await client.models.list()).data.map((m) => m.id)).toEqual(['tiny']);
      expect(server.models.loaded()).toEqual([]);
      const g = goldens()[2];
      const r = await client.completions.create({ model: 'tiny', prompt: g.prompt_ids, max_tokens: 6, temperature: 0 });
      expect(r.usage?.completion_tokens).toBe(6);
      expect(server.models.loaded().map((m) => m.id)).toEqual(['tiny']);
      await expect(client.completions.create({ model: 'tok512', prompt: 'x' })).rejects.toMatchObject({ status: 404 });
    } finally {
      await server.close();
    }
  });
});

describe.skipIf(!hasShared)('serve --models DIR --memory-budget', () => {
  it('unloads idle models, least recently used first, to stay within the budget; a model larger than it gets 400', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tw-models-'));
    symlinkSync(MODEL, join(dir, 'a.bin'));
    symlinkSync(MODEL, join(dir, 'b.bin'));
    symlinkSync(TOKENIZER, join(dir, 'tok512.bin'));
    const g = goldens()[2];
    // each model holds its weights (~1 MiB) and a KV pool of 64 blocks of 16 positions (~1.3 MiB) on the CPU backend
    const server = await startServer({ models: dir, port: 0, backend: 'cpu', maxBatchTokens: 64, kvBlocks: 64, kvBlockSize: 16, maxLoadedModels: 4, memoryBudget: 3 });
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const a = await client.completions.create({ model: 'a', prompt: g.prompt_ids, max_tokens: 6, temperature: 0 });
      const held = server.models.loaded()[0].memoryBytes!;
      expect(held).toBeGreaterThan(2 * 1024 * 1024);
      expect(held).toBeLessThan(3 * 1024 * 1024);
      const b = await client.completions.create({ model: 'b', prompt: g.prompt_ids, max_tokens: 6, temperature: 0 });
      expect(b.choices[0].text).toBe(a.choices[0].text);
      // a and b together would pass 3 MiB: a (idle, least recently used) was unloaded
      expect(server.models.loaded().map((m) => m.id)).toEqual(['b']);
    } finally {
      await server.close();
    }
    const small = await startServer({ models: dir, port: 0, backend: 'cpu', maxBatchTokens: 64, kvBlocks: 64, kvBlockSize: 16, memoryBudget: 1.5 });
    try {
      const client = new OpenAI({ baseURL: `${small.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      await expect(client.completions.create({ model: 'a', prompt: g.prompt_ids, max_tokens: 2 })).rejects.toMatchObject({ status: 400 });
      expect(small.models.loaded()).toEqual([]);
    } finally {
      await small.close();
    }
  });
});

describe.skipIf(!hasShared)('serve overload', () => {
  it('answers 429 when the queue is full, then serves the queued requests', async () => {
    const s = await stories260K();
    const inner = s.executor(64, 4);
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    // the CPU executor behind a gate: the first request holds the only sequence slot until the gate opens
    const gated: BatchExecutor = { ...inner, maxPositions: inner.maxPositions, vocabSize: inner.vocabSize, stopTokens: inner.stopTokens, kv: inner.kv, maxSequences: 1, release: (id) => inner.release(id), step: async (b: ExecutorBatch) => (await gate, inner.step(b)) };
    const session = new ServingSession(gated, { maxWaiting: 1 });
    const provider: ModelProvider = { ids: () => ['m'], get: async (id) => (id === 'm' ? { id, session, chat: ChatTemplate.plain(), maxPositions: 512, vocabSize: 512 } : undefined), loaded: () => [] };
    const server = createOpenAiServer(provider);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const send = (): Promise<Response> => fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'm', prompt: [1, 5, 6], max_tokens: 3, temperature: 0 }) });
    const first = send();
    while (session.scheduler.runningCount === 0) await new Promise((r) => setTimeout(r, 2));
    const second = send();
    while (session.scheduler.waitingCount === 0) await new Promise((r) => setTimeout(r, 2));
    const third = await send();
    expect(third.status).toBe(429);
    expect(((await third.json()) as { error: { type: string } }).error.type).toBe('rate_limit_error');
    open();
    expect((await first).status).toBe(200);
    expect((await second).status).toBe(200);
    server.close();
  });
});

describe.skipIf(!hasShared)('serve on WebGPU', async () => {
  const gpu = await acquireTestDevice();
  await gpu?.destroy();
  it.skipIf(!gpu)('greedy completions equal run.c, three requests on two engine sessions', async () => {
    const server = await startServer({ model: MODEL, tokenizer: TOKENIZER, port: 0, backend: 'webgpu', maxBatchTokens: 64, engineSessions: 2, maxContext: 64 });
    try {
      const tok = await Llama2cTokenizer.fromFile(TOKENIZER, 512);
      const gs = goldens().slice(1, 4);
      const bodies = await Promise.all(
        gs.map(async (g) => {
          const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: g.prompt_ids, max_tokens: 8, temperature: 0 }) });
          return (await res.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
        }),
      );
      gs.forEach((g, i) => {
        let prev = g.prompt_ids[g.prompt_ids.length - 1];
        expect(bodies[i].choices[0].text).toBe(g.generated_ids.slice(0, 8).map((t) => tok.decodePiece(prev, (prev = t))).join(''));
        expect(bodies[i].usage.completion_tokens).toBe(8);
      });
    } finally {
      await server.close();
    }
  }, 240_000);
});
