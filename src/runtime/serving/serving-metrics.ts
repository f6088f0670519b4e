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
    };
  }
}

/** A snapshot in Prometheus text format (latencies in seconds, as summaries with quantile labels). */
export function metricsToPrometheus(m: ServingMetricsSnapshot, prefix = 'tensorwright'): string {
  const lines: string[] = [];
  const num = (x: number): string => (Number.isNaN(x) ? 'NaN' : x === Infinity ? '+Inf' : x === -Infinity ? '-Inf' : String(x));
  const metric = (name: string, type: string, help: string, samples: [string, number][]): void => {
    lines.push(`# HELP ${prefix}_${name} ${help}`, `# TYPE ${prefix}_${name} ${type}`);
    for (const [labels, v] of samples) lines.push(`${prefix}_${name}${labels} ${num(v)}`);
  };
  const summary = (name: string, help: string, s: LatencySummary): void => {
    const sec = (ms: number): number => ms / 1000;
    lines.push(`# HELP ${prefix}_${name} ${help}`, `# TYPE ${prefix}_${name} summary`);
    for (const [q, v] of [['0.5', s.p50], ['0.95', s.p95], ['0.99', s.p99]] as const) lines.push(`${prefix}_${name}{quantile="${q}"} ${num(sec(v))}`);
    lines.push(`${prefix}_${name}_sum ${num(s.count ? sec(s.mean * s.count) : 0)}`, `${prefix}_${name}_count ${s.count}`);
  };
  summary('time_to_first_token_seconds', 'Time from submission to the first token, over the recent requests.', m.ttftMs);
  summary('time_per_output_token_seconds', 'Time per output token after the first, over the recent requests.', m.tpotMs);
  summary('e2e_request_latency_seconds', 'Time from submission to the end of the request, over the recent requests.', m.e2eMs);
  summary('request_queue_time_seconds', 'Time from submission until the request got KV blocks, over the recent requests.', m.queueMs);
  metric('generation_tokens_per_second', 'gauge', 'Generated tokens per second over the recent time window.', [['', m.tokensPerSecond]]);
  metric('generation_tokens_total', 'counter', 'Generated tokens.', [['', m.generatedTokens]]);
  metric('prompt_tokens_total', 'counter', 'Prompt tokens of submitted requests.', [['', m.promptTokens]]);
  metric('requests_finished_total', 'counter', 'Finished requests by reason.', Object.entries(m.finished).map(([r, n]) => [`{reason="${r}"}`, n]));
  metric('requests_waiting', 'gauge', 'Requests waiting for KV blocks.', [['', m.waiting]]);
  metric('requests_running', 'gauge', 'Requests holding KV blocks.', [['', m.running]]);
  metric('kv_cache_usage_ratio', 'gauge', 'Fraction of KV blocks held by sequences.', [['', m.kvOccupancy]]);
  metric('kv_cache_used_blocks', 'gauge', 'KV blocks held by sequences.', [['', m.kvUsedBlocks]]);
  metric('kv_cache_total_blocks', 'gauge', 'KV blocks in the pool.', [['', m.kvTotalBlocks]]);
  metric('prefix_cache_hit_rate', 'gauge', 'Prompt tokens found in the prefix cache over prompt tokens looked up.', [['', m.prefixHitRate]]);
  metric('spec_decode_acceptance_rate', 'gauge', 'Accepted over drafted speculative tokens (NaN: none drafted).', [['', m.specAcceptanceRate]]);
  metric('preemptions_total', 'counter', 'Sequences preempted (KV cache full).', [['', m.preemptions]]);
  return `${lines.join('\n')}\n`;
}
