/**
 * The serving session: `submit(request)` queues a generation request on a continuous-batching {@link Scheduler} and
 * returns an `AsyncIterable` of its token events; one loop steps the scheduler while anything is waiting or running.
 * Requests are cancelled through an `AbortSignal` (or by leaving the iteration early), can carry priorities and
 * deadlines, stop at stop tokens or stop strings, and are measured ({@link ServingMetrics}).
 * @module
 */
import { InputError, OverloadedError } from '../../errors.js';
import type { TextTokenizer } from '../../tokenizers/text-tokenizer.js';
import type { BatchExecutor } from './batch-executor.js';
import type { KvEviction } from './kv-eviction.js';
import type { KvWindow } from './kv-window.js';
import { Scheduler, type FinishReason, type SchedulerOptions, type StepReport } from './scheduler.js';
import { metricsToPrometheus, ServingMetrics, type RequestTimings, type ServingMetricsOptions, type ServingMetricsSnapshot } from './serving-metrics.js';
import { StopStringMatcher } from './stop-strings.js';

/** A generation request. */
export interface ServingRequest {
  /** Prompt token ids (or give `prompt`). */
  readonly promptIds?: readonly number[];
  /** Prompt text, encoded with the session's tokenizer (BOS first, as the tokenizer does it). */
  readonly prompt?: string;
  /** Most tokens to generate (default 16). */
  readonly maxTokens?: number;
  /** Sampling temperature, 0 = greedy (default 1). */
  readonly temperature?: number;
  /** Nucleus threshold, 1 = off (default 1). */
  readonly topP?: number;
  /** Keep the k most likely tokens, 0 = off (default 0). */
  readonly topK?: number;
  /** Seed of the sampling coins (default: a random one). */
  readonly seed?: number;
  /** Strings that end generation; the text stops before them. Needs a tokenizer. */
  readonly stop?: string | readonly string[];
  /** Token ids that end generation besides the model's stop tokens. */
  readonly stopTokenIds?: readonly number[];
  /** Keep generating past the model's stop tokens. */
  readonly ignoreStopTokens?: boolean;
  /** Cancels the request: its blocks are freed and its stream ends with reason `abort`. */
  readonly signal?: AbortSignal;
  /** Smaller runs first (default 0). */
  readonly priority?: number;
  /** Milliseconds after submission by which the request must finish; then it ends with reason `deadline`. */
  readonly deadlineMs?: number;
  /**
   * Sliding KV window with attention sinks (StreamingLLM): keep the first `sinkTokens` and the last `windowTokens`
   * tokens' K/V (in whole blocks) and generate past the model's context; `false` turns off the session's default.
   */
  readonly kvWindow?: KvWindow | false;
  /**
   * H2O heavy-hitter eviction (`{ policy: 'h2o', budgetTokens, recentTokens }`): keep the recent blocks and the blocks
   * that received the most attention, within the budget, and generate past the model's context (CPU reference only);
   * `false` turns off the session's default.
   */
  readonly kvEviction?: KvEviction | false;
}

/** A generated token. */
export interface TokenEvent {
  /** Discriminant. */
  readonly type: 'token';
  /** Token id. */
  readonly id: number;
  /** 0 for the first generated token. */
  readonly index: number;
  /** Text released with this token ('' without a tokenizer, or while it may be the start of a stop string). */
  readonly text: string;
}

/** The end of a request (always the last event; an executor error is thrown by the iteration instead). */
export interface FinishEvent {
  /** Discriminant. */
  readonly type: 'finish';
  /** Why it ended. */
  readonly reason: Exclude<FinishReason, 'error'>;
  /** Text held back until now (a tail that could have begun a stop string). */
  readonly text: string;
  /** Prompt tokens. */
  readonly promptTokens: number;
  /** Tokens generated. */
  readonly completionTokens: number;
  /** Prompt tokens found in the prefix cache. */
  readonly cachedTokens: number;
  /** Its timings. */
  readonly timings: RequestTimings;
}

/** What a request's stream yields. */
export type ServingEvent = TokenEvent | FinishEvent;

/** A submitted request: its events, and a way to cancel it. */
export interface ServingStream extends AsyncIterable<ServingEvent> {
  /** The prompt's token ids. */
  readonly promptIds: readonly number[];
  /** Cancels the request (as its signal would). */
  cancel(): void;
}

/** A request collected by {@link ServingSession.generate}. */
export interface GenerateOutcome {
  /** Generated token ids. */
  readonly ids: number[];
  /** Their text (released text only: a stop string and what follows it are cut). */
  readonly text: string;
  /** The finish event. */
  readonly finish: FinishEvent;
}

/** Options of {@link ServingSession}. */
export interface ServingSessionOptions extends SchedulerOptions {
  /** Tokenizer for text prompts, text in events, and stop strings. */
  readonly tokenizer?: TextTokenizer;
  /** Most requests waiting; past it `submit` throws {@link errors!OverloadedError | OverloadedError} (default unbounded). */
  readonly maxWaiting?: number;
  /** Metrics window settings. */
  readonly metrics?: ServingMetricsOptions;
}

/** A push queue read by one async iterator. */
class EventQueue {
  private readonly items: ServingEvent[] = [];
  private error: unknown;
  private done = false;
  private wake?: () => void;
  push(e: ServingEvent): void {
    this.items.push(e);
    this.wake?.();
  }
  fail(e: unknown): void {
    this.error = e ?? new Error('request failed');
    this.done = true;
    this.wake?.();
  }
  end(): void {
    this.done = true;
    this.wake?.();
  }
  async *iterate(onReturn: () => void): AsyncGenerator<ServingEvent> {
    let finished = false;
    try {
      for (;;) {
        while (this.items.length) {
          const e = this.items.shift()!;
          if (e.type === 'finish') finished = true;
          yield e;
          if (finished) return;
        }
        if (this.error !== undefined) {
          finished = true;
          throw this.error;
        }
        if (this.done) return;
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
      }
    } finally {
      if (!finished) onReturn();
    }
  }
}

/** Continuous-batching generation over a {@link BatchExecutor}. */
export class ServingSession {
  /** The scheduler. */
  readonly scheduler: Scheduler;
  private readonly metricsCollector: ServingMetrics;
  private readonly tokenizer?: TextTokenizer;
  private readonly maxWaiting: number;
  private looping = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  /** Called after every step (for tests and tools). */
  onStep?: (report: StepReport) => void;

  constructor(
    /** The backend. */
    readonly executor: BatchExecutor,
    options: ServingSessionOptions = {},
  ) {
    this.scheduler = new Scheduler(executor, options);
    this.tokenizer = options.tokenizer;
    this.maxWaiting = options.maxWaiting ?? Infinity;
    this.metricsCollector = new ServingMetrics(options.metrics);
  }

  /** The prompt ids of a request (its `promptIds`, or its `prompt` encoded). */
  promptIdsOf(request: ServingRequest): number[] {
    if (request.promptIds !== undefined) {
      if (request.prompt !== undefined) throw new InputError('give one of promptIds and prompt, not both');
      return [...request.promptIds];
    }
    if (request.prompt === undefined) throw new InputError('the request needs promptIds or a prompt');
    if (!this.tokenizer) throw new InputError('a text prompt needs a tokenizer; this session has none (send promptIds)');
    return this.tokenizer.encode(request.prompt);
  }

  /**
   * Queues a request and returns its event stream. Throws {@link errors!InputError | InputError} for a bad request
   * (nothing is queued) and {@link errors!OverloadedError | OverloadedError} when the queue is full.
   */
  submit(request: ServingRequest): ServingStream {
    if (this.closed) throw new InputError('the serving session is closed');
    const promptIds = this.promptIdsOf(request);
    const stops = request.stop === undefined ? [] : typeof request.stop === 'string' ? [request.stop] : [...request.stop];
    for (const s of stops) if (typeof s !== 'string') throw new InputError(`stop strings must be strings, got ${JSON.stringify(s)}`);
    if (stops.length && !this.tokenizer) throw new InputError('stop strings need a tokenizer; this session has none (use stopTokenIds)');
    if (request.deadlineMs !== undefined && !(request.deadlineMs > 0)) throw new InputError(`deadlineMs must be positive, got ${request.deadlineMs}`);
    if (this.scheduler.waitingCount >= this.maxWaiting) throw new OverloadedError(`the server is busy: ${this.scheduler.waitingCount} requests are waiting (at most ${this.maxWaiting})`);
    const t0 = performance.now();
    const queue = new EventQueue();
    const matcher = new StopStringMatcher(stops);
    let prev = promptIds[promptIds.length - 1];
    let queueMs: number | undefined;
    let ttftMs: number | undefined;
    let cachedTokens = 0;
    let tokens = 0;
    const tokenizer = this.tokenizer;
    let removeAbort = (): void => {};
    const id = this.scheduler.add(
      {
        promptIds,
        maxTokens: request.maxTokens ?? 16,
        temperature: request.temperature ?? 1,
        topP: request.topP ?? 1,
        topK: request.topK ?? 0,
        seed: request.seed ?? Math.floor(Math.random() * 2 ** 31),
        stopTokenIds: request.stopTokenIds,
        ignoreStopTokens: request.ignoreStopTokens,
        priority: request.priority,
        deadline: request.deadlineMs === undefined ? undefined : t0 + request.deadlineMs,
        kvWindow: request.kvWindow,
        kvEviction: request.kvEviction,
      },
      {
        onStart: (cached) => {
          queueMs = performance.now() - t0;
          cachedTokens = cached;
        },
        onToken: (tok, index) => {
          ttftMs ??= performance.now() - t0;
          tokens++;
          const piece = tokenizer ? tokenizer.decodePiece(prev, tok) : '';
          prev = tok;
          const r = matcher.push(piece);
          queue.push({ type: 'token', id: tok, index, text: r.text });
          return r.stopped ? 'stop' : undefined;
        },
        onFinish: (reason, error) => {
          removeAbort();
          const timings: RequestTimings = { queueMs, ttftMs, e2eMs: performance.now() - t0, tokens };
          this.metricsCollector.finished(reason, timings);
          if (reason === 'error') queue.fail(error);
          else queue.push({ type: 'finish', reason, text: matcher.flush(), promptTokens: promptIds.length, completionTokens: tokens, cachedTokens, timings });
        },
      },
    );
    this.metricsCollector.submitted(promptIds.length);
    const cancel = (): void => this.scheduler.cancel(id, 'abort');
    if (request.signal) {
      const signal = request.signal;
      if (signal.aborted) cancel();
      else {
        signal.addEventListener('abort', cancel, { once: true });
        removeAbort = () => signal.removeEventListener('abort', cancel);
      }
    }
    this.kick();
    return { promptIds, cancel, [Symbol.asyncIterator]: () => queue.iterate(cancel) };
  }

  /** Submits a request and collects it: token ids, text and the finish event. */
  async generate(request: ServingRequest): Promise<GenerateOutcome> {
    const ids: number[] = [];
    let text = '';
    for await (const e of this.submit(request)) {
      if (e.type === 'token') ids.push(e.id);
      text += e.text;
      if (e.type === 'finish') return { ids, text, finish: e };
    }
    throw new InputError('the request ended without a finish event');
  }

  /** The metrics now. */
  metrics(): ServingMetricsSnapshot {
    const s = this.scheduler;
    const st = s.blocks.stats;
    return this.metricsCollector.snapshot({
      waiting: s.waitingCount,
      running: s.runningCount,
      kvUsedBlocks: s.blocks.usedBlocks,
      kvTotalBlocks: s.blocks.numBlocks,
      prefixQueriedTokens: st.queriedTokens,
      prefixHitTokens: st.hitTokens,
      preemptions: s.preemptions,
      swapOuts: s.swapOuts,
    });
  }

  /** The metrics now, in Prometheus text format. */
  prometheus(): string {
    return metricsToPrometheus(this.metrics());
  }

  /** Resolves when nothing is waiting or running. */
  async idle(): Promise<void> {
    if (this.scheduler.idle && !this.looping) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Cancels everything, waits for the loop to stop and destroys the executor. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.scheduler.cancelAll('abort');
    await this.idle();
    await this.executor.destroy?.();
  }

  private kick(): void {
    if (this.looping) return;
    this.looping = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      // requests submitted in the same turn of the event loop start in the same step
      await Promise.resolve();
      while (!this.scheduler.idle) {
        try {
          const r = await this.scheduler.step();
          this.metricsCollector.generated(r.generated);
          this.onStep?.(r);
        } catch {
          // the step's requests ended with the error (their streams throw it); the others go on
        }
        await yieldToEventLoop();
      }
    } finally {
      this.looping = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}

/** Lets I/O callbacks run between steps (a step's work may be synchronous, as on the CPU backend). */
function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => void };
  return new Promise((r) => (g.setImmediate ? g.setImmediate(r) : setTimeout(r, 0)));
}
