/**
 * `tensorwright serve-bench`: a load generator for an OpenAI-compatible server. For each concurrency level it sends
 * `--requests` streaming completion requests (prompts of `--prompt-tokens` token ids, `--gen-tokens` tokens each,
 * stop tokens ignored) from that many concurrent clients, and reports aggregate throughput and TTFT, TPOT and
 * end-to-end latency percentiles: one row per level, or with `--json` one JSON object per line. Progress goes to
 * stderr.
 * @module
 */
import { InputError, UsageError } from '../errors.js';
import { Rng } from '../util/random.js';
import { log } from './output.js';

/** Options of the `serve-bench` command. */
export interface ServeBenchOptions {
  /** Base URL of the server (`http://host:port`). */
  url: string;
  /** Concurrency levels. */
  concurrency: readonly number[];
  /** Requests per level. */
  requests: number;
  /** Prompt length in tokens. */
  promptTokens: number;
  /** Tokens to generate per request. */
  genTokens: number;
  /** Model name (default: the server's first model). */
  model?: string;
  /** Print JSON lines. */
  json: boolean;
  /** Seed of the prompts' token ids. */
  seed?: number;
}

/** One row of `serve-bench` (the `--json` object; its field names are part of the CLI's contract). */
export interface ServeBenchRow {
  /** Concurrent clients. */
  concurrency: number;
  /** Requests sent. */
  requests: number;
  /** Generated tokens per second over the level's wall time, all clients together. */
  throughput_tok_s: number;
  /** Time to first token, median (ms). */
  ttft_ms_p50: number;
  /** Time to first token, 95th percentile (ms). */
  ttft_ms_p95: number;
  /** Time to first token, 99th percentile (ms). */
  ttft_ms_p99: number;
  /** Time per output token after the first, median (ms). */
  tpot_ms_p50: number;
  /** Time per output token, 95th percentile (ms). */
  tpot_ms_p95: number;
  /** Time per output token, 99th percentile (ms). */
  tpot_ms_p99: number;
  /** End-to-end latency, median (ms). */
  e2e_ms_p50: number;
  /** End-to-end latency, 95th percentile (ms). */
  e2e_ms_p95: number;
  /** End-to-end latency, 99th percentile (ms). */
  e2e_ms_p99: number;
  /** Requests that failed (HTTP error, broken stream, no tokens). */
  errors: number;
}

/** One request's measurements. */
interface Sample {
  ok: boolean;
  ttft: number;
  e2e: number;
  tokens: number;
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const v = [...values].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1))];
}

const round = (x: number): number => (Number.isFinite(x) ? Math.round(x * 100) / 100 : x);

/** Sends one streaming completion and times it. */
async function oneRequest(url: string, model: string, prompt: number[], genTokens: number): Promise<Sample> {
  const t0 = performance.now();
  let ttft = NaN;
  let tokens = 0;
  try {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, prompt, max_tokens: genTokens, temperature: 0, stream: true, ignore_eos: true, stream_options: { include_usage: true } }),
    });
    if (!res.ok || !res.body) {
      await res.text().catch(() => '');
      return { ok: false, ttft, e2e: performance.now() - t0, tokens };
    }
    const decoder = new TextDecoder();
    let buf = '';
    let usage: number | undefined;
    let done = false;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let at: number;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, at);
        buf = buf.slice(at + 2);
        const data = event.startsWith('data: ') ? event.slice(6) : '';
        if (data === '[DONE]') done = true;
        else if (data) {
          const v = JSON.parse(data) as { choices?: unknown[]; usage?: { completion_tokens?: number }; error?: unknown };
          if (v.error) return { ok: false, ttft, e2e: performance.now() - t0, tokens };
          if (v.choices?.length) {
            if (tokens === 0) ttft = performance.now() - t0;
            tokens++;
          }
          if (v.usage?.completion_tokens !== undefined) usage = v.usage.completion_tokens;
        }
      }
    }
    // the last choice chunk carries the finish reason, not a token; usage says how many there were
    const generated = usage ?? Math.max(0, tokens - 1);
    return { ok: done && generated > 0, ttft, e2e: performance.now() - t0, tokens: generated };
  } catch {
    return { ok: false, ttft, e2e: performance.now() - t0, tokens };
  }
}

/** Runs the benchmark; resolves to its rows (also printed). */
export async function serveBenchCommand(o: ServeBenchOptions): Promise<ServeBenchRow[]> {
  if (o.concurrency.length === 0 || o.concurrency.some((c) => !(Number.isInteger(c) && c >= 1))) throw new UsageError(`--concurrency must list positive integers, got ${o.concurrency.join(',')}`);
  const url = o.url.replace(/\/+$/, '');
  let list: { data?: { id: string; vocab_size?: number }[] };
  try {
    const res = await fetch(`${url}/v1/models`);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    list = (await res.json()) as typeof list;
  } catch (e) {
    throw new InputError(`--url ${o.url}: cannot list the models (${(e as Error).message})`);
  }
  const card = o.model ? list.data?.find((m) => m.id === o.model) : list.data?.[0];
  if (!card) throw new InputError(o.model ? `--model ${o.model}: the server does not serve it` : `--url ${o.url}: the server lists no models`);
  const vocab = card.vocab_size ?? 100;
  const rng = new Rng(o.seed ?? 1);
  // BOS (1 in llama2.c and Llama vocabularies), then ids from the low end of the vocabulary
  const prompt = (): number[] => [1, ...Array.from({ length: o.promptTokens - 1 }, () => 3 + Math.floor(rng.next() * Math.max(1, Math.min(vocab, 1000) - 3)))];
  const rows: ServeBenchRow[] = [];
  if (!o.json) process.stdout.write(`${['concurrency', 'requests', 'tok/s', 'ttft p50/p95/p99 ms', 'tpot p50/p95/p99 ms', 'e2e p50/p95/p99 ms', 'errors'].join('\t')}\n`);
  for (const c of o.concurrency) {
    const prompts = Array.from({ length: o.requests }, prompt);
    const samples: Sample[] = [];
    let next = 0;
    const t0 = performance.now();
    const worker = async (): Promise<void> => {
      while (next < prompts.length) {
        const p = prompts[next++];
        samples.push(await oneRequest(url, card.id, p, o.genTokens));
        if (samples.length % Math.max(1, Math.floor(o.requests / 4)) === 0) log(`serve-bench: concurrency ${c}: ${samples.length}/${o.requests} requests`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(c, o.requests) }, worker));
    const wall = (performance.now() - t0) / 1000;
    const ok = samples.filter((s) => s.ok);
    const tokens = ok.reduce((a, s) => a + s.tokens, 0);
    const ttft = ok.map((s) => s.ttft);
    const tpot = ok.filter((s) => s.tokens > 1).map((s) => (s.e2e - s.ttft) / (s.tokens - 1));
    const e2e = ok.map((s) => s.e2e);
    const row: ServeBenchRow = {
      concurrency: c,
      requests: o.requests,
      throughput_tok_s: round(tokens / Math.max(wall, 1e-9)),
      ttft_ms_p50: round(percentile(ttft, 0.5)),
      ttft_ms_p95: round(percentile(ttft, 0.95)),
      ttft_ms_p99: round(percentile(ttft, 0.99)),
      tpot_ms_p50: round(percentile(tpot, 0.5)),
      tpot_ms_p95: round(percentile(tpot, 0.95)),
      tpot_ms_p99: round(percentile(tpot, 0.99)),
      e2e_ms_p50: round(percentile(e2e, 0.5)),
      e2e_ms_p95: round(percentile(e2e, 0.95)),
      e2e_ms_p99: round(percentile(e2e, 0.99)),
      errors: samples.length - ok.length,
    };
    rows.push(row);
    if (o.json) process.stdout.write(`${JSON.stringify(row)}\n`);
    else
      process.stdout.write(
        `${[c, o.requests, row.throughput_tok_s, `${row.ttft_ms_p50}/${row.ttft_ms_p95}/${row.ttft_ms_p99}`, `${row.tpot_ms_p50}/${row.tpot_ms_p95}/${row.tpot_ms_p99}`, `${row.e2e_ms_p50}/${row.e2e_ms_p95}/${row.e2e_ms_p99}`, row.errors].join('\t')}\n`,
      );
  }
  return rows;
}
