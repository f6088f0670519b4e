/**
 * The serving scheduler (vLLM-style continuous batching): requests join and leave at every step; each step runs, under
 * a token budget, the next token of every decoding sequence and chunks of prompts (chunked prefill mixed with
 * decode), in order of priority, then deadline, then arrival. New sequences start on the longest prefix the KV
 * block manager has cached. When the KV pool runs out, the sequence that comes last in that order is preempted: its
 * blocks are released (full ones stay in the prefix cache) and it goes back to the queue to be recomputed, with its
 * generated tokens, when room returns (or, with the `swap` policy, its blocks are copied to host memory and back).
 * Sampling coins are drawn per generated token from the request's own seed, so
 * a request's output does not depend on what else runs or on preemption.
 * @module
 */
import { InputError, InternalError } from '../../errors.js';
import { XorShiftRng } from '../../util/random.js';
import type { SamplerStepSettings } from '../sampler-params.js';
import { validateSampling } from '../sampling.js';
import type { BatchExecutor, BlockCopy, ExecutorEntry, KvShift } from './batch-executor.js';
import { KvBlockManager, type PrefixMatch } from './kv-block-manager.js';
import { kvEvictionBlocks, leastMassBlock, planEvictionStep, type KvEviction, type KvEvictionBlocks } from './kv-eviction.js';
import { kvWindowBlocks, planWindowStep, type KvWindow, type KvWindowBlocks } from './kv-window.js';

/** Why a sequence ended: a stop token or stop string, its token limit or the context, cancellation, its deadline, an executor error. */
export type FinishReason = 'stop' | 'length' | 'abort' | 'deadline' | 'error';

/** A generation request as the scheduler takes it (token ids; text is the session's business). */
export interface SchedulerRequest {
  /** Prompt token ids (BOS first for models that use one). */
  readonly promptIds: readonly number[];
  /** Most tokens to generate. */
  readonly maxTokens: number;
  /** Sampling temperature (0 = greedy). */
  readonly temperature: number;
  /** Nucleus threshold (0 or 1 = off). */
  readonly topP: number;
  /** Keep the k most likely tokens (0 = off). */
  readonly topK: number;
  /** Seed of the request's sampling coins. */
  readonly seed: number;
  /** Token ids that end generation besides the model's own stop tokens. */
  readonly stopTokenIds?: readonly number[];
  /** Do not stop at the model's stop tokens. */
  readonly ignoreStopTokens?: boolean;
  /** Smaller runs first (default 0), as in vLLM. */
  readonly priority?: number;
  /** Time (on the scheduler's clock, ms) by which the request must finish; past it, it ends with reason `deadline`. */
  readonly deadline?: number;
  /**
   * Sliding window with attention sinks (StreamingLLM, see `kv-window.ts`): the sequence keeps its first and its most
   * recent tokens' K/V and may run past the model's context. `false` turns off the scheduler's default window. Needs
   * an executor that can shift keys; a windowed sequence neither takes nor feeds the prefix cache.
   */
  readonly kvWindow?: KvWindow | false;
  /**
   * H2O heavy-hitter eviction (see `kv-eviction.ts`): the sequence keeps at most `budgetTokens` of K/V, its recent
   * blocks and the blocks that received the most attention, and may run past the model's context. `false` turns off
   * the scheduler's default. Needs an executor that shifts keys and tracks attention (the CPU reference); does not go
   * with `kvWindow`; like a windowed sequence it neither takes nor feeds the prefix cache.
   */
  readonly kvEviction?: KvEviction | false;
}

/** What the scheduler tells the owner of a request. */
export interface SequenceObserver {
  /** The sequence got its first KV blocks (it left the queue); `cachedTokens` prompt tokens came from the prefix cache. */
  onStart?(cachedTokens: number): void;
  /** A token was generated (index 0 first). Return `'stop'` to end the sequence here (a stop string matched). */
  onToken(id: number, index: number): 'stop' | void;
  /** The sequence ended. */
  onFinish(reason: FinishReason, error?: unknown): void;
}

/** Options of {@link Scheduler}. */
export interface SchedulerOptions {
  /** Token budget of one step: prefill chunks and decode tokens together (default 512). */
  readonly maxBatchTokens?: number;
  /** Most sequences running at once (default: what the executor allows). */
  readonly maxSequences?: number;
  /** Keep full KV blocks in the automatic prefix cache (default true; always off over an executor that does not share blocks). */
  readonly prefixCaching?: boolean;
  /** The clock deadlines are read on, in ms (default `performance.now`). */
  readonly clock?: () => number;
  /**
   * What preemption does with a sequence's K/V: `recompute` (default) drops it and runs the tokens again later;
   * `swap` copies its blocks to host memory and back when it resumes (over an executor that can swap; else
   * recompute).
   */
  readonly preemption?: 'recompute' | 'swap';
  /** The sliding window every request gets unless it names its own (see {@link SchedulerRequest.kvWindow}). */
  readonly kvWindow?: KvWindow;
  /** The KV eviction policy every request gets unless it names its own (see {@link SchedulerRequest.kvEviction}). */
  readonly kvEviction?: KvEviction;
}

/** What one {@link Scheduler.step} did. */
export interface StepReport {
  /** Sequences run. */
  readonly sequences: number;
  /** Prompt (and recomputed) tokens run. */
  readonly prefillTokens: number;
  /** Decode tokens run. */
  readonly decodeTokens: number;
  /** Tokens generated. */
  readonly generated: number;
  /** Sequences preempted while scheduling this step. */
  readonly preempted: number;
  /** Sequences swapped out to host memory this step. */
  readonly swappedOut: number;
  /** Sequences swapped back in this step. */
  readonly swappedIn: number;
}

/** One request's state. */
interface Sequence {
  readonly id: number;
  readonly req: SchedulerRequest;
  readonly observer: SequenceObserver;
  readonly arrival: number;
  readonly rng: XorShiftRng;
  readonly stops: ReadonlySet<number>;
  /** Prompt and generated tokens. */
  readonly tokens: number[];
  generated: number;
  /** Tokens whose K/V is in the cache. */
  computed: number;
  /** KV sequence id while it holds blocks. */
  kvSeq?: number;
  /** Its sliding window, in blocks (absent: it keeps all its K/V). */
  readonly window?: KvWindowBlocks;
  /** Its H2O eviction policy, in blocks (absent: none). */
  readonly eviction?: KvEvictionBlocks;
  /**
   * Tokens whose K/V the window or the eviction policy dropped: the cache holds `computed − evicted`; under a window,
   * text token `i ≥ sinks` is at `i − evicted`.
   */
  evicted: number;
  /** Under eviction: the attention mass each block of the cache has received so far, in cache order. */
  mass: number[];
  /** Under eviction: the text index of each token the cache holds, in cache order. */
  cacheText: number[];
  /** While swapped out: tokens whose K/V waits in host memory. */
  swapped?: number;
  started: boolean;
  status: 'waiting' | 'running' | 'finished';
  cancel?: FinishReason;
}

/** One planned entry of a step. */
interface Planned {
  readonly seq: Sequence;
  readonly count: number;
  readonly prefill: boolean;
  /** Block copies its write needs (copy-on-write). */
  readonly copies: readonly BlockCopy[];
  /** Key shifts after the window or the eviction policy dropped blocks (in order). */
  readonly shifts?: readonly KvShift[];
}

/** Continuous-batching scheduler over a {@link BatchExecutor} and a {@link KvBlockManager}. */
export class Scheduler {
  /** The KV blocks (shared with the executor by block id). */
  readonly blocks: KvBlockManager;
  /** Token budget of one step. */
  readonly maxBatchTokens: number;
  /** Most sequences running at once. */
  readonly maxSequences: number;
  /** Preemptions so far. */
  preemptions = 0;
  /** Preemptions that swapped to host memory (a subset of {@link Scheduler.preemptions}). */
  swapOuts = 0;
  /** Whether preemption swaps (the policy asks for it and the executor can). */
  readonly swapping: boolean;
  private swapOut: { key: number; blocks: readonly number[] }[] = [];
  private swapIn: { key: number; blocks: readonly number[] }[] = [];
  private readonly clock: () => number;
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly byId = new Map<number, Sequence>();
  private nextId = 0;
  private stepping = false;
  private readonly kvWindow?: KvWindow;
  private readonly kvEviction?: KvEviction;
  /** Blocks dropped by eviction policies (H2O) so far. */
  evictedBlocks = 0;

  constructor(
    /** The backend. */
    readonly executor: BatchExecutor,
    options: SchedulerOptions = {},
  ) {
    this.maxBatchTokens = options.maxBatchTokens ?? 512;
    if (!(Number.isInteger(this.maxBatchTokens) && this.maxBatchTokens > 0)) throw new InputError(`maxBatchTokens must be a positive integer, got ${options.maxBatchTokens}`);
    this.maxSequences = Math.min(options.maxSequences ?? Infinity, executor.maxSequences);
    if (!(this.maxSequences >= 1)) throw new InputError(`maxSequences must be at least 1, got ${options.maxSequences}`);
    this.blocks = new KvBlockManager({ numBlocks: executor.kv.numBlocks, blockSize: executor.kv.blockSize, prefixCaching: (options.prefixCaching ?? true) && executor.sharesBlocks !== false });
    this.clock = options.clock ?? (() => performance.now());
    this.swapping = options.preemption === 'swap' && executor.canSwap === true;
    this.kvWindow = options.kvWindow;
    this.kvEviction = options.kvEviction;
    if (this.kvWindow && this.kvEviction) throw new InputError('kvWindow and kvEviction do not go together: pick one way of bounding the KV cache');
    if (this.kvWindow) this.windowOf({ kvWindow: this.kvWindow });
    if (this.kvEviction) this.evictionOf({ kvEviction: this.kvEviction });
  }

  /** A request's eviction policy in blocks (its own, else the default), checked against the executor and the pool. */
  private evictionOf(req: Pick<SchedulerRequest, 'kvEviction' | 'kvWindow'>): KvEvictionBlocks | undefined {
    const e = req.kvEviction === false ? undefined : (req.kvEviction ?? this.kvEviction);
    if (!e) return undefined;
    if (req.kvWindow) throw new InputError('kvWindow and kvEviction do not go together: pick one way of bounding the KV cache');
    if (this.executor.canShiftKeys !== true || this.executor.tracksAttention !== true || !this.executor.takeAttentionMass)
      throw new InputError(`kvEviction '${e.policy}' needs a model backend that tracks attention and shifts cached keys (the CPU reference executor, or a WebGPU engine with attention-mass observers and a key shift on the scheduler's block tables); this one does not`);
    return kvEvictionBlocks(e, this.blocks.blockSize, this.executor.maxPositions);
  }

  /** A request's window in blocks (its own, else the default), checked against the executor and the pool. */
  private windowOf(req: Pick<SchedulerRequest, 'kvWindow'>): KvWindowBlocks | undefined {
    const w = req.kvWindow === false ? undefined : (req.kvWindow ?? this.kvWindow);
    if (!w) return undefined;
    if (this.executor.canShiftKeys !== true) throw new InputError('this model backend cannot shift cached keys, so it cannot run a sliding KV window with attention sinks');
    return kvWindowBlocks(w, this.blocks.blockSize, this.executor.maxPositions);
  }

  /** Requests waiting for KV blocks or a turn. */
  get waitingCount(): number {
    return this.waiting.length;
  }
  /** Requests holding KV blocks. */
  get runningCount(): number {
    return this.running.length;
  }
  /** Whether nothing is waiting or running. */
  get idle(): boolean {
    return this.waiting.length === 0 && this.running.length === 0;
  }

  /**
   * Checks a request against the model and the pool; throws {@link errors!InputError | InputError} naming what is
   * wrong (an empty or too long prompt, a bad id or setting, a request that could not fit in the whole KV pool).
   */
  validate(req: SchedulerRequest): void {
    const ex = this.executor;
    if (req.promptIds.length === 0) throw new InputError('the prompt has no tokens (it needs at least BOS)');
    const eviction = this.evictionOf(req);
    const window = eviction ? undefined : this.windowOf(req);
    const bound = window ?? eviction;
    if (!bound && req.promptIds.length > ex.maxPositions) throw new InputError(`the prompt has ${req.promptIds.length} tokens, more than the model's context of ${ex.maxPositions}`);
    for (const t of req.promptIds) if (!(Number.isInteger(t) && t >= 0 && t < ex.vocabSize)) throw new InputError(`token id ${t} is outside the vocabulary (0..${ex.vocabSize - 1})`);
    if (!(Number.isInteger(req.maxTokens) && req.maxTokens > 0)) throw new InputError(`maxTokens must be a positive integer, got ${req.maxTokens}`);
    if (!Number.isSafeInteger(req.seed)) throw new InputError(`seed must be an integer, got ${req.seed}`);
    validateSampling({ temperature: req.temperature, topp: req.topP, topk: req.topK, seed: req.seed });
    for (const t of req.stopTokenIds ?? []) if (!Number.isInteger(t)) throw new InputError(`stop token id ${t} is not an integer`);
    if (req.priority !== undefined && !Number.isFinite(req.priority)) throw new InputError(`priority must be a finite number, got ${req.priority}`);
    const positions = Math.min(req.promptIds.length + req.maxTokens - 1, bound ? bound.capacity : ex.maxPositions);
    const need = Math.ceil(positions / this.blocks.blockSize);
    if (need > this.blocks.numBlocks)
      throw new InputError(`the request needs up to ${need} KV blocks of ${this.blocks.blockSize} tokens (${positions} positions), more than the ${this.blocks.numBlocks} in the pool`);
  }

  /** Queues a request (see {@link Scheduler.validate}) and returns its id. */
  add(req: SchedulerRequest, observer: SequenceObserver): number {
    this.validate(req);
    const id = this.nextId++;
    const eviction = this.evictionOf(req);
    const seq: Sequence = {
      id,
      req,
      observer,
      arrival: this.clock(),
      rng: new XorShiftRng(req.seed),
      stops: new Set([...(req.ignoreStopTokens ? [] : this.executor.stopTokens), ...(req.stopTokenIds ?? [])]),
      tokens: [...req.promptIds],
      generated: 0,
      computed: 0,
      window: eviction ? undefined : this.windowOf(req),
      eviction,
      evicted: 0,
      mass: [],
      cacheText: [],
      started: false,
      status: 'waiting',
    };
    this.byId.set(id, seq);
    insertSorted(this.waiting, seq);
    return id;
  }

  /** Ends request `id` (default reason `abort`), freeing its blocks now or, during a step, when the step ends. */
  cancel(id: number, reason: FinishReason = 'abort'): void {
    const seq = this.byId.get(id);
    if (!seq || seq.status === 'finished') return;
    seq.cancel ??= reason;
    if (!this.stepping) this.applyCancellations();
  }

  /** Ends every request (default reason `abort`). */
  cancelAll(reason: FinishReason = 'abort'): void {
    for (const s of [...this.running, ...this.waiting]) s.cancel ??= reason;
    if (!this.stepping) this.applyCancellations();
  }

  /** Runs one step: schedules, runs the executor, hands out the tokens. Does nothing when idle. */
  async step(): Promise<StepReport> {
    if (this.stepping) throw new InternalError('Scheduler.step called while a step is running');
    this.stepping = true;
    try {
      return await this.stepInner();
    } finally {
      this.stepping = false;
      this.applyCancellations();
    }
  }

  private async stepInner(): Promise<StepReport> {
    const now = this.clock();
    for (const s of [...this.running, ...this.waiting]) if (s.req.deadline !== undefined && s.req.deadline <= now) s.cancel ??= 'deadline';
    this.applyCancellations();
    const { plan, preempted } = this.schedule();
    const swapOut = this.swapOut;
    const swapIn = this.swapIn;
    this.swapOut = [];
    this.swapIn = [];
    const swaps = { swappedOut: swapOut.length, swappedIn: swapIn.length };
    if (plan.length === 0 && swapOut.length === 0) return { sequences: 0, prefillTokens: 0, decodeTokens: 0, generated: 0, preempted, ...swaps };
    const copies = plan.flatMap((p) => p.copies);
    const shifts = plan.flatMap((p) => p.shifts ?? []);
    const entries: ExecutorEntry[] = plan.map(({ seq, count }) => {
      const from = seq.computed;
      const last = from + count === seq.tokens.length;
      return {
        seqId: seq.kvSeq!,
        tokens: seq.tokens.slice(from, from + count),
        start: from - seq.evicted,
        context: cacheTokens(seq, from + count),
        blockTable: this.blocks.table(seq.kvSeq!),
        sampling: last ? this.sampling(seq) : undefined,
        ...(seq.eviction ? { attentionMass: true } : {}),
      };
    });
    let ids: number[];
    try {
      ids = await this.executor.step(shifts.length ? { swapOut, swapIn, copies, shifts, entries } : { swapOut, swapIn, copies, entries });
      if (ids.length !== entries.length) throw new InternalError(`the executor returned ${ids.length} ids for ${entries.length} entries`);
    } catch (e) {
      for (const { seq } of plan) this.finish(seq, 'error', e);
      throw e;
    }
    let generated = 0;
    plan.forEach(({ seq, count }, i) => {
      if (seq.status !== 'running') return;
      if (seq.eviction) this.addMass(seq, count);
      seq.computed += count;
      if (!bounded(seq)) this.blocks.commit(seq.kvSeq!, seq.tokens, seq.computed);
      if (!entries[i].sampling || seq.cancel) return;
      const id = ids[i];
      if (seq.stops.has(id)) return this.finish(seq, 'stop');
      seq.tokens.push(id);
      const index = seq.generated++;
      generated++;
      if (seq.observer.onToken(id, index) === 'stop') return this.finish(seq, 'stop');
      if (seq.generated >= seq.req.maxTokens || (!bounded(seq) && seq.tokens.length > this.executor.maxPositions)) this.finish(seq, 'length');
    });
    const prefillTokens = plan.filter((p) => p.prefill).reduce((a, p) => a + p.count, 0);
    const decodeTokens = plan.filter((p) => !p.prefill).reduce((a, p) => a + p.count, 0);
    return { sequences: plan.length, prefillTokens, decodeTokens, generated, preempted, ...swaps };
  }

  /** Picks this step's entries: running sequences first (preempting the last ones when blocks run out), then new ones. */
  private schedule(): { plan: Planned[]; preempted: number } {
    let budget = this.maxBatchTokens;
    const plan: Planned[] = [];
    const planned = new Set<Sequence>();
    let preempted = 0;
    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i];
      let count = Math.min(seq.tokens.length - seq.computed, budget);
      let shifts: KvShift[] | undefined;
      if (seq.window) ({ count, shifts } = this.slideWindow(seq, count));
      else if (seq.eviction) ({ count, shifts } = this.evictBlocks(seq, count));
      let fits = true;
      while (this.blocks.blocksToAppend(seq.kvSeq!, count) > this.blocks.availableBlocks) {
        const victim = [...this.running].reverse().find((s) => !planned.has(s))!;
        this.preempt(victim);
        preempted++;
        if (victim === seq) {
          fits = false;
          break;
        }
      }
      if (!fits) break;
      plan.push({ seq, count, prefill: seq.tokens.length - seq.computed > 1 || seq.generated === 0, copies: this.blocks.append(seq.kvSeq!, count), shifts });
      planned.add(seq);
      budget -= count;
    }
    if (preempted > 0) return { plan, preempted };
    let inflight: Set<number> | undefined;
    for (let i = 0; i < this.waiting.length && budget > 0 && this.running.length < this.maxSequences; ) {
      const seq = this.waiting[i];
      if (seq.swapped !== undefined) {
        if (!this.resume(seq, budget, plan)) break;
        budget -= plan[plan.length - 1].count;
        continue;
      }
      const match: PrefixMatch = bounded(seq) ? { blocks: [], tokens: 0, hashes: [] } : this.blocks.matchPrefix(seq.tokens, seq.tokens.length - 1);
      // a prefix a running sequence is computing right now: wait a step and share it instead of computing it again
      inflight ??= this.blocks.prefixCaching ? this.inflightHashes() : new Set<number>();
      const next = inflight.size ? this.blocks.hashes(seq.tokens, (match.blocks.length + 1) * this.blocks.blockSize)[match.blocks.length] : undefined;
      if (next !== undefined && inflight.has(next)) {
        i++;
        continue;
      }
      let count = Math.min(seq.tokens.length - match.tokens, budget);
      if (seq.window) count = planWindowStep(seq.window, 0, count).count;
      else if (seq.eviction) count = planEvictionStep(seq.eviction, 0, count).count;
      const need = Math.ceil((match.tokens + count) / this.blocks.blockSize) - match.blocks.length;
      if (need > this.blocks.availableBlocks - this.blocks.evictableIn(match)) break;
      this.waiting.splice(i, 1);
      seq.kvSeq = this.blocks.createSequence(match, seq.started ? 0 : seq.req.promptIds.length);
      seq.computed = match.tokens;
      seq.status = 'running';
      insertSorted(this.running, seq);
      if (!seq.started) {
        seq.started = true;
        seq.observer.onStart?.(match.tokens);
      }
      plan.push({ seq, count, prefill: true, copies: this.blocks.append(seq.kvSeq, count) });
      budget -= count;
      if (this.blocks.prefixCaching && !bounded(seq)) for (const h of this.blocks.hashes(seq.tokens).slice(match.blocks.length)) inflight.add(h);
    }
    return { plan, preempted };
  }

  /** Brings a swapped-out sequence back (blocks for its K/V and its next tokens); false when they do not fit. */
  private resume(seq: Sequence, budget: number, plan: Planned[]): boolean {
    const swapped = seq.swapped!;
    const count = Math.min(seq.tokens.length - swapped, budget);
    if (Math.ceil((swapped + count) / this.blocks.blockSize) > this.blocks.availableBlocks) return false;
    remove(this.waiting, seq);
    seq.kvSeq = this.blocks.createSequence();
    const copies = this.blocks.append(seq.kvSeq, swapped + count);
    this.swapIn.push({ key: seq.id, blocks: this.blocks.table(seq.kvSeq).slice(0, Math.ceil(swapped / this.blocks.blockSize)) });
    seq.computed = swapped;
    seq.swapped = undefined;
    seq.status = 'running';
    insertSorted(this.running, seq);
    plan.push({ seq, count, prefill: count > 1, copies });
    return true;
  }

  /** Hashes of the full prompt blocks running sequences have still to compute. */
  private inflightHashes(): Set<number> {
    const out = new Set<number>();
    for (const s of this.running) {
      if (s.computed >= s.tokens.length - 1 || bounded(s)) continue;
      const bs = this.blocks.blockSize;
      for (const h of this.blocks.hashes(s.tokens).slice(Math.floor(s.computed / bs))) out.add(h);
    }
    return out;
  }

  /**
   * Before a windowed sequence writes up to `want` tokens: cuts the count to what fits in its window, drops its oldest
   * non-sink blocks to make room, and returns the key shift the executor makes on the blocks after them.
   */
  private slideWindow(seq: Sequence, want: number): { count: number; shifts?: KvShift[] } {
    const w = seq.window!;
    const cached = seq.computed - seq.evicted;
    const { count, dropBlocks } = planWindowStep(w, cached, want);
    if (dropBlocks === 0) return { count };
    const id = seq.kvSeq!;
    this.blocks.dropBlocks(id, w.sinkBlocks, dropBlocks);
    const delta = dropBlocks * w.blockSize;
    seq.evicted += delta;
    const kept = this.blocks.table(id).slice(w.sinkBlocks, Math.ceil((cached - delta) / w.blockSize));
    return { count, shifts: kept.length ? [{ seqId: id, blocks: kept, delta }] : undefined };
  }

  /**
   * Before an evicting (H2O) sequence writes up to `want` tokens: cuts the count to what fits in its budget and drops,
   * one at a time, the block outside the recent ones with the least accumulated attention mass (forgetting its mass);
   * each drop shifts the keys of the blocks after it back by one block.
   */
  private evictBlocks(seq: Sequence, want: number): { count: number; shifts?: KvShift[] } {
    const e = seq.eviction!;
    const bs = e.blockSize;
    let cached = seq.computed - seq.evicted;
    const { count, dropBlocks } = planEvictionStep(e, cached, want);
    const id = seq.kvSeq!;
    const shifts: KvShift[] = [];
    for (let i = 0; i < dropBlocks; i++) {
      const b = leastMassBlock(seq.mass, cached, e);
      this.blocks.dropBlocks(id, b, 1);
      seq.mass.splice(b, 1);
      seq.cacheText.splice(b * bs, bs);
      seq.evicted += bs;
      cached -= bs;
      this.evictedBlocks++;
      const kept = this.blocks.table(id).slice(b, Math.ceil(cached / bs));
      if (kept.length) shifts.push({ seqId: id, blocks: kept, delta: bs });
    }
    return { count, shifts: shifts.length ? shifts : undefined };
  }

  /** After an evicting sequence ran `count` tokens: adds the attention mass its cache received to its blocks. */
  private addMass(seq: Sequence, count: number): void {
    const m = this.executor.takeAttentionMass?.(seq.kvSeq!);
    const cached = seq.computed - seq.evicted + count;
    if (!m || m.length !== cached) throw new InternalError(`the executor reported attention mass for ${m?.length ?? 0} positions, the cache holds ${cached}`);
    const bs = this.blocks.blockSize;
    for (let p = 0; p < m.length; p++) {
      const b = Math.floor(p / bs);
      seq.mass[b] = (seq.mass[b] ?? 0) + m[p];
    }
    for (let i = seq.computed; i < seq.computed + count; i++) seq.cacheText.push(i);
  }

  private sampling(seq: Sequence): SamplerStepSettings {
    const r = seq.req;
    return { temperature: r.temperature, topp: r.topP, topk: r.topK, coin: r.temperature === 0 ? 0 : seq.rng.nextF32() };
  }

  /**
   * Preemption: the sequence gives back its blocks and waits, to be run again from its tokens (recompute) or to have
   * its K/V copied back from host memory (swap).
   */
  private preempt(seq: Sequence): void {
    if (this.swapping && seq.computed > 0 && !bounded(seq)) {
      this.swapOut.push({ key: seq.id, blocks: this.blocks.table(seq.kvSeq!).slice(0, Math.ceil(seq.computed / this.blocks.blockSize)) });
      seq.swapped = seq.computed;
      this.swapOuts++;
    }
    this.releaseKv(seq);
    remove(this.running, seq);
    seq.status = 'waiting';
    seq.computed = 0;
    seq.evicted = 0;
    seq.mass = [];
    seq.cacheText = [];
    insertSorted(this.waiting, seq);
    this.preemptions++;
  }

  private releaseKv(seq: Sequence): void {
    if (seq.kvSeq === undefined) return;
    this.executor.release(seq.kvSeq);
    this.blocks.release(seq.kvSeq);
    seq.kvSeq = undefined;
  }

  private finish(seq: Sequence, reason: FinishReason, error?: unknown): void {
    if (seq.status === 'finished') return;
    this.releaseKv(seq);
    remove(this.running, seq);
    remove(this.waiting, seq);
    seq.status = 'finished';
    this.byId.delete(seq.id);
    if (seq.swapped !== undefined) {
      // swapped out this step (the copy has not run yet) or earlier
      const pending = this.swapOut.findIndex((x) => x.key === seq.id);
      if (pending >= 0) this.swapOut.splice(pending, 1);
      else this.executor.discardSwapped?.(seq.id);
      seq.swapped = undefined;
    }
    seq.observer.onFinish(reason, error);
  }

  private applyCancellations(): void {
    for (const s of [...this.running, ...this.waiting]) if (s.cancel) this.finish(s, s.cancel);
  }
}

/** Scheduling order: priority (smaller first), then deadline (earlier first), then arrival. */
function before(a: Sequence, b: Sequence): boolean {
  const pa = a.req.priority ?? 0;
  const pb = b.req.priority ?? 0;
  if (pa !== pb) return pa < pb;
  const da = a.req.deadline ?? Infinity;
  const db = b.req.deadline ?? Infinity;
  if (da !== db) return da < db;
  return a.arrival !== b.arrival ? a.arrival < b.arrival : a.id < b.id;
}

/** The tokens a sequence's cache holds once its first `end` tokens are computed, in cache order. */
function cacheTokens(seq: Sequence, end: number): number[] {
  if (seq.evicted === 0) return seq.tokens.slice(0, end);
  if (seq.eviction) return [...seq.cacheText.map((i) => seq.tokens[i]), ...seq.tokens.slice(seq.computed, end)];
  const sinks = seq.window!.sinkBlocks * seq.window!.blockSize;
  return [...seq.tokens.slice(0, sinks), ...seq.tokens.slice(sinks + seq.evicted, end)];
}

/** Whether the sequence's cache is bounded (a window or an eviction policy), so it may drop blocks and run past the context. */
function bounded(seq: Sequence): boolean {
  return seq.window !== undefined || seq.eviction !== undefined;
}

function insertSorted(list: Sequence[], seq: Sequence): void {
  let i = list.length;
  while (i > 0 && before(seq, list[i - 1])) i--;
  list.splice(i, 0, seq);
}

function remove(list: Sequence[], seq: Sequence): void {
  const i = list.indexOf(seq);
  if (i >= 0) list.splice(i, 1);
}
