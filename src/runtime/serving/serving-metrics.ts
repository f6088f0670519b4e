/**
 * Serving metrics: per-request latencies (queue time, time to first token, time per output token, end-to-end) with
 * p50/p95/p99 over a window of the most recent requests, token throughput over a recent time window, KV occupancy,
 * prefix-cache hit rate, speculative acceptance rate, preemptions and request counts; as an object and as Prometheus
 * text (exposition format 0.0.4).
 * @module
 */

/** Percentiles of one latency over the window, in milliseconds (NaN while the window is empty). */
export interface LatencySummary {
  /** Median. */
  readonly p50: number;
  /** 95th percentile. */
  readonly p95: number;
  /** 99th percentile. */
  readonly p99: number;
  /** Mean. */
  readonly mean: number;
  /** Samples in the window. */
  readonly count: number;
}

/** A snapshot of {@link ServingMetrics}. */
export interface ServingMetricsSnapshot {
  /** Time from submission to the first token. */
  readonly ttftMs: LatencySummary;
  /** Time per output token after the first (requests with at least two tokens). */
  readonly tpotMs: LatencySummary;
  /** Time from submission to the end of the request. */
  readonly e2eMs: LatencySummary;
  /** Time from submission until the request first got KV blocks. */
  readonly queueMs: LatencySummary;
  /** Generated tokens per second over the recent time window. */
  readonly tokensPerSecond: number;
  /** Generated tokens in all. */
  readonly generatedTokens: number;
  /** Prompt tokens of all submitted requests. */
  readonly promptTokens: number;
  /** Requests finished, by reason. */
  readonly finished: Readonly<Record<string, number>>;
  /** Requests waiting. */
  readonly waiting: number;
  /** Requests holding KV blocks. */
  readonly running: number;
  /** Fraction of the KV pool that sequences hold (cached-only blocks count as free). */
  readonly kvOccupancy: number;
  /** KV blocks sequences hold. */
  readonly kvUsedBlocks: number;
  /** KV blocks in the pool. */
  readonly kvTotalBlocks: number;
  /** Prompt tokens found in the prefix cache over prompt tokens looked up (NaN before any lookup). */
  readonly prefixHitRate: number;
  /** Speculative tokens accepted over drafted (NaN when nothing was drafted: no speculative decoding ran). */
  readonly specAcceptanceRate: number;
  /** Preemptions so far. */
  readonly preemptions: number;
  /** Of those, the ones that swapped the sequence's K/V to host memory. */
  readonly swapOuts: number;
}

/** One finished request's timings, in ms. */
export interface RequestTimings {
  /** Submission to first KV blocks (undefined when it never started). */
  readonly queueMs?: number;
  /** Submission to first token (undefined when none came). */
  readonly ttftMs?: number;
  /** Submission to the end. */
  readonly e2eMs: number;
  /** Tokens generated. */
  readonly tokens: number;
}

/** Gauges the metrics read from the scheduler when a snapshot is taken. */
export interface ServingGauges {
  /** Requests waiting. */
  readonly waiting: number;
  /** Requests running. */
  readonly running: number;
  /** KV blocks in use. */
  readonly kvUsedBlocks: number;
  /** KV blocks in the pool. */
  readonly kvTotalBlocks: number;
  /** Prompt tokens looked up in the prefix cache. */
  readonly prefixQueriedTokens: number;
  /** Of those, found. */
  readonly prefixHitTokens: number;
  /** Preemptions. */
  readonly preemptions: number;
  /** Preemptions that swapped to host memory. */
  readonly swapOuts: number;
}

/** A fixed-size ring of the latest samples. */
class Window {
  private readonly values: number[] = [];
  private next = 0;
  constructor(private readonly size: number) {}
  add(v: number): void {
    if (this.values.length < this.size) this.values.push(v);
    else this.values[this.next] = v;
    this.next = (this.next + 1) % this.size;
  }
  summary(): LatencySummary {
    const v = [...this.values].sort((a, b) => a - b);
    const q = (p: number): number => (v.length ? v[Math.min(v.length - 1, Math.ceil(p * v.length) - 1)] : NaN);
    return { p50: q(0.5), p95: q(0.95), p99: q(0.99), mean: v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN, count: v.length };
  }
}

/** Options of {@link ServingMetrics}. */
export interface ServingMetricsOptions {
  /** Requests the percentiles are taken over (default 1000, the most recent). */
  readonly window?: number;
  /** Seconds the throughput is averaged over (default 10). */
  readonly rateWindowSeconds?: number;
  /** Clock in ms (default `performance.now`). */
  readonly clock?: () => number;
}

/** Collects serving metrics (the session feeds it). */
export class ServingMetrics {
  private readonly ttft: Window;
  private readonly tpot: Window;
  private readonly e2e: Window;
  private readonly queue: Window;
  private readonly clock: () => number;
  private readonly rateWindowMs: number;
  /** (time, tokens) of recent steps. */
  private readonly recent: { t: number; n: number }[] = [];
  private readonly finishedBy: Record<string, number> = {};
  private generatedTokens = 0;
  private promptTokens = 0;
  private drafted = 0;
  private accepted = 0;

  constructor(options: ServingMetricsOptions = {}) {
    const w = options.window ?? 1000;
    this.ttft = new Window(w);
    this.tpot = new Window(w);
    this.e2e = new Window(w);
    this.queue = new Window(w);
    this.clock = options.clock ?? (() => performance.now());
    this.rateWindowMs = (options.rateWindowSeconds ?? 10) * 1000;
  }

  /** A request was submitted with `promptTokens` tokens. */
  submitted(promptTokens: number): void {
    this.promptTokens += promptTokens;
  }

  /** `n` tokens were generated just now. */
  generated(n: number): void {
    if (n <= 0) return;
    this.generatedTokens += n;
    const t = this.clock();
    this.recent.push({ t, n });
    while (this.recent.length && this.recent[0].t < t - this.rateWindowMs) this.recent.shift();
  }

  /** Speculative decoding drafted `drafted` tokens and the target accepted `accepted` of them. */
  speculated(drafted: number, accepted: number): void {
    this.drafted += drafted;
    this.accepted += accepted;
  }

  /** A request finished. */
  finished(reason: string, t: RequestTimings): void {
    this.finishedBy[reason] = (this.finishedBy[reason] ?? 0) + 1;
    this.e2e.add(t.e2eMs);
    if (t.queueMs !== undefined) this.queue.add(t.queueMs);
    if (t.ttftMs !== undefined) this.ttft.add(t.ttftMs);
    if (t.ttftMs !== undefined && t.tokens >= 2) this.tpot.add((t.e2eMs - t.ttftMs) / (t.tokens - 1));
  }

  /** The metrics now, with the scheduler's gauges. */
  snapshot(g: ServingGauges): ServingMetricsSnapshot {
    const now = this.clock();
    const recent = this.recent.filter((r) => r.t >= now - this.rateWindowMs);
    const span = recent.length ? Math.max(now - recent[0].t, 1) : 0;
    const tokens = recent.reduce((a, r) => a + r.n, 0);
    return {
      ttftMs: this.ttft.summary(),
      tpotMs: this.tpot.summary(),
      e2eMs: this.e2e.summary(),
      queueMs: this.queue.summary(),
      tokensPerSecond: span > 0 ? (tokens * 1000) / Math.max(span, 1000) : 0,
      generatedTokens: this.generatedTokens,
      promptTokens: this.promptTokens,
      finished: { ...this.finishedBy },
      waiting: g.waiting,
      running: g.running,
      kvOccupancy: g.kvTotalBlocks ? g.kvUsedBlocks / g.kvTotalBlocks : 0,
      kvUsedBlocks: g.kvUsedBlocks,
      kvTotalBlocks: g.kvTotalBlocks,
      prefixHitRate: g.prefixQueriedTokens ? g.prefixHitTokens / g.prefixQueriedTokens : NaN,
      specAcceptanceRate: this.drafted ? this.accepted / this.drafted : NaN,
      preemptions: g.preemptions,
      swapOuts: g.swapOuts,
    };
  }
}

/**
 * Snapshots in Prometheus text format (latencies in seconds, as summaries with quantile labels). Several snapshots
 * (one per model, say) share each metric's HELP and TYPE lines and differ by their labels.
 */
export function metricsToPrometheus(snapshots: ServingMetricsSnapshot | readonly { readonly labels: Readonly<Record<string, string>>; readonly metrics: ServingMetricsSnapshot }[], prefix = 'tensorwright'): string {
  const all = Array.isArray(snapshots) ? snapshots : [{ labels: {}, metrics: snapshots as ServingMetricsSnapshot }];
  const lines: string[] = [];
  const num = (x: number): string => (Number.isNaN(x) ? 'NaN' : x === Infinity ? '+Inf' : x === -Infinity ? '-Inf' : String(x));
  const esc = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
  const labelText = (l: Readonly<Record<string, string>>): string => {
    const parts = Object.entries(l).map(([k, v]) => `${k}="${esc(v)}"`);
    return parts.length ? `{${parts.join(',')}}` : '';
  };
  const family = (name: string, type: string, help: string, samples: (m: ServingMetricsSnapshot) => [Record<string, string>, string, number][]): void => {
    lines.push(`# HELP ${prefix}_${name} ${help}`, `# TYPE ${prefix}_${name} ${type}`);
    for (const { labels, metrics } of all) for (const [extra, suffix, v] of samples(metrics)) lines.push(`${prefix}_${name}${suffix}${labelText({ ...labels, ...extra })} ${num(v)}`);
  };
  const gauge = (name: string, type: 'gauge' | 'counter', help: string, f: (m: ServingMetricsSnapshot) => number): void => family(name, type, help, (m) => [[{}, '', f(m)]]);
  const summary = (name: string, help: string, f: (m: ServingMetricsSnapshot) => LatencySummary): void =>
    family(name, 'summary', help, (m) => {
      const s = f(m);
      const sec = (ms: number): number => ms / 1000;
      return [
        [{ quantile: '0.5' }, '', sec(s.p50)],
        [{ quantile: '0.95' }, '', sec(s.p95)],
        [{ quantile: '0.99' }, '', sec(s.p99)],
        [{}, '_sum', s.count ? sec(s.mean * s.count) : 0],
        [{}, '_count', s.count],
      ];
    });
  summary('time_to_first_token_seconds', 'Time from submission to the first token, over the recent requests.', (m) => m.ttftMs);
  summary('time_per_output_token_seconds', 'Time per output token after the first, over the recent requests.', (m) => m.tpotMs);
  summary('e2e_request_latency_seconds', 'Time from submission to the end of the request, over the recent requests.', (m) => m.e2eMs);
  summary('request_queue_time_seconds', 'Time from submission until the request got KV blocks, over the recent requests.', (m) => m.queueMs);
  gauge('generation_tokens_per_second', 'gauge', 'Generated tokens per second over the recent time window.', (m) => m.tokensPerSecond);
  gauge('generation_tokens_total', 'counter', 'Generated tokens.', (m) => m.generatedTokens);
  gauge('prompt_tokens_total', 'counter', 'Prompt tokens of submitted requests.', (m) => m.promptTokens);
  family('requests_finished_total', 'counter', 'Finished requests by reason.', (m) => Object.entries(m.finished).map(([reason, n]) => [{ reason }, '', n]));
  gauge('requests_waiting', 'gauge', 'Requests waiting for KV blocks.', (m) => m.waiting);
  gauge('requests_running', 'gauge', 'Requests holding KV blocks.', (m) => m.running);
  gauge('kv_cache_usage_ratio', 'gauge', 'Fraction of KV blocks held by sequences.', (m) => m.kvOccupancy);
  gauge('kv_cache_used_blocks', 'gauge', 'KV blocks held by sequences.', (m) => m.kvUsedBlocks);
  gauge('kv_cache_total_blocks', 'gauge', 'KV blocks in the pool.', (m) => m.kvTotalBlocks);
  gauge('prefix_cache_hit_rate', 'gauge', 'Prompt tokens found in the prefix cache over prompt tokens looked up (NaN: none looked up).', (m) => m.prefixHitRate);
  gauge('spec_decode_acceptance_rate', 'gauge', 'Accepted over drafted speculative tokens (NaN: none drafted).', (m) => m.specAcceptanceRate);
  gauge('preemptions_total', 'counter', 'Sequences preempted (KV cache full).', (m) => m.preemptions);
  gauge('preemptions_swapped_total', 'counter', 'Preemptions that swapped the K/V to host memory instead of dropping it.', (m) => m.swapOuts);
  return `${lines.join('\n')}\n`;
}
