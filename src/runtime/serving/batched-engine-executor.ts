/**
 * A {@link BatchExecutor} over an engine session that runs ragged batches itself (the batched `EngineSession` API of
 * issue #14). Two ways, by what the session offers:
 * - **The scheduler's block tables** (a session with `stepPaged`, as `EngineSession` has): each step hands the engine
 *   every entry's block table and start position and the copy-on-write copies, so the scheduler's block manager is
 *   the one truth: its prefix cache shares blocks on the GPU, forks copy on write, and (with `readKvBlocks` /
 *   `writeKvBlocks`) preemption can swap blocks to host memory.
 * - **The engine's own tables** (`createSequence`, `stepBatch`, `releaseSequence` only): the scheduler's tables are
 *   bookkeeping, each sequence is fed whatever of its `context` the engine has not run yet, and the scheduler's prefix
 *   cache is off ({@link BatchedEngineExecutor.sharesBlocks}).
 *
 * The engine API is declared here structurally ({@link BatchedEngineSession}), so this file compiles before the
 * batched engine lands and needs no change when it does: pass the session to the constructor.
 * @module
 */
import { InputError } from '../../errors.js';
import type { SamplerStepSettings } from '../sampler-params.js';
import type { BatchExecutor, ExecutorBatch, KvPoolShape, KvShift } from './batch-executor.js';

/** A sequence of a {@link BatchedEngineSession} (compared by identity). */
export interface BatchedSequence {
  /** Its id within the session. */
  readonly id: number;
}

/** The KV pool of a {@link BatchedEngineSession}. */
export interface BatchedKvBlocks {
  /** Blocks in the pool. */
  readonly total: number;
  /** Tokens per block. */
  readonly blockSize: number;
}

/** The batched engine session API the executor drives. */
export interface BatchedEngineSession {
  /** Starts an empty sequence. */
  createSequence(): BatchedSequence;
  /** Frees a sequence's KV blocks. */
  releaseSequence(seq: BatchedSequence): void;
  /** Runs one ragged batch; per entry, the ids sampled (`[]` without `sampling`, else one). */
  stepBatch(entries: readonly { readonly seq: BatchedSequence; readonly tokens: readonly number[]; readonly sampling?: SamplerStepSettings }[]): Promise<number[][]>;
  /** The KV pool: blocks in all and tokens per block. */
  kvBlocks(): BatchedKvBlocks;
  /** Most tokens one step takes over all its sequences. */
  readonly maxTokens: number;
  /** Runs one ragged batch on the caller's block tables after the given copies; per entry, the ids sampled. */
  stepPaged?(
    entries: readonly { readonly tokens: readonly number[]; readonly start: number; readonly blockTable: readonly number[]; readonly sampling?: SamplerStepSettings; readonly attentionMass?: boolean }[],
    copies?: readonly { readonly src: number; readonly dst: number }[],
  ): Promise<number[][]>;
  /** Whether `stepPaged` computes the attention mass of entries that ask (H2O eviction; default false). */
  readonly tracksAttention?: boolean;
  /** After `stepPaged`: per entry, the attention mass of its positions `0 .. start + tokens.length − 1` (undefined where it did not ask). */
  lastAttentionMass?(): readonly (Float64Array | undefined)[];
  /** Per block, its bytes in every layer's K and V pools (swapping to host memory). */
  readKvBlocks?(blocks: readonly number[]): Promise<Uint8Array[]>;
  /** Rotates the keys of these blocks back by `delta` positions (sliding KV windows; see {@link KvShift}). */
  shiftKeys?(shifts: readonly { readonly blocks: readonly number[]; readonly delta: number }[]): void;
  /** Whether {@link BatchedEngineSession.shiftKeys} works for this engine (default: whether it is there). */
  readonly canShiftKeys?: boolean;
  /** Writes what {@link BatchedEngineSession.readKvBlocks} read into these blocks. */
  writeKvBlocks?(blocks: readonly number[], data: readonly Uint8Array[]): void;
  /** GPU memory the session holds. */
  readonly deviceBytes?: number;
}

/** What the executor needs to know of the model besides the session. */
export interface BatchedModelFacts {
  /** Longest sequence. */
  readonly maxPositions: number;
  /** Vocabulary size. */
  readonly vocabSize: number;
  /** Stop token ids. */
  readonly stopTokens: readonly number[];
}

/** {@link BatchExecutor} over a {@link BatchedEngineSession}. */
export class BatchedEngineExecutor implements BatchExecutor {
  readonly maxPositions: number;
  readonly vocabSize: number;
  readonly stopTokens: readonly number[];
  /** The engine's pool: the scheduler's block manager manages the same blocks. */
  readonly kv: KvPoolShape;
  readonly maxSequences = Infinity;
  /** Whether the engine runs on the scheduler's block tables (`stepPaged`): then shared blocks are stored once. */
  readonly sharesBlocks: boolean;
  /** Whether preempted sequences can be swapped to host memory (`readKvBlocks` and `writeKvBlocks`, with `stepPaged`). */
  readonly canSwap: boolean;
  /** Whether windowed sequences can shift their keys (`shiftKeys`, with `stepPaged`). */
  readonly canShiftKeys: boolean;
  /** Whether the engine computes the attention mass H2O eviction ranks blocks by (`tracksAttention`, with `stepPaged`). */
  readonly tracksAttention: boolean;
  /** Attention mass per cache position of the entries of the last step that asked for it, by sequence. */
  private readonly masses = new Map<number, Float64Array>();
  private readonly seqs = new Map<number, { seq: BatchedSequence; fed: number }>();
  /** Host copies of swapped-out blocks, by the scheduler's key. */
  private readonly swapped = new Map<number, Uint8Array[]>();

  constructor(
    /** The engine session. */
    readonly session: BatchedEngineSession,
    model: BatchedModelFacts,
    private readonly onDestroy?: () => Promise<void>,
  ) {
    this.maxPositions = model.maxPositions;
    this.vocabSize = model.vocabSize;
    this.stopTokens = model.stopTokens;
    const kv = session.kvBlocks();
    this.kv = { numBlocks: kv.total, blockSize: kv.blockSize };
    this.sharesBlocks = typeof session.stepPaged === 'function';
    this.canSwap = this.sharesBlocks && typeof session.readKvBlocks === 'function' && typeof session.writeKvBlocks === 'function';
    this.canShiftKeys = this.sharesBlocks && typeof session.shiftKeys === 'function' && session.canShiftKeys !== false;
    this.tracksAttention = this.sharesBlocks && session.tracksAttention === true && typeof session.lastAttentionMass === 'function';
  }

  /**
   * The attention mass the cache positions `0 .. start + tokens.length − 1` of sequence `seqId` received in the last
   * step (its entry asked with `attentionMass`), summed over the engine steps its tokens ran in. Forgotten once taken.
   */
  takeAttentionMass(seqId: number): Float64Array | undefined {
    const m = this.masses.get(seqId);
    this.masses.delete(seqId);
    return m;
  }

  /** GPU memory the session holds (0 for a session that does not say). */
  get memoryBytes(): number {
    return this.session.deviceBytes ?? 0;
  }

  async step(batch: ExecutorBatch): Promise<number[]> {
    return this.sharesBlocks ? this.stepOnTables(batch) : this.stepOnEngineTables(batch);
  }

  /** A step on the scheduler's block tables: swaps, copies, then the entries in groups of the engine's step size. */
  private async stepOnTables(batch: ExecutorBatch): Promise<number[]> {
    const session = this.session;
    for (const { key, blocks } of batch.swapOut ?? []) this.swapped.set(key, await session.readKvBlocks!(blocks));
    for (const { key, blocks } of batch.swapIn ?? []) {
      const data = this.swapped.get(key);
      if (!data) throw new InputError(`swap-in of ${key}: no host copy was made`);
      session.writeKvBlocks!(blocks, data);
      this.swapped.delete(key);
    }
    // a shifted block belongs to one windowed sequence alone, so no copy of this step reads or writes it: the shifts
    // may run before the copies, which the first engine step makes
    const shifts: readonly KvShift[] = batch.shifts ?? [];
    if (shifts.length) {
      if (!this.canShiftKeys) throw new InputError('this engine cannot shift cached keys (sliding KV window)');
      session.shiftKeys!(shifts);
    }
    let copies = batch.copies;
    const out: number[] = new Array<number>(batch.entries.length).fill(-1);
    const cap = session.maxTokens;
    type Part = { index: number; seqId: number; tokens: readonly number[]; start: number; blockTable: readonly number[]; sampling?: SamplerStepSettings; attentionMass?: boolean };
    let group: Part[] = [];
    let size = 0;
    for (const e of batch.entries) {
      if (!e.attentionMass) continue;
      if (!this.tracksAttention) throw new InputError(`sequence ${e.seqId}: this engine does not compute attention mass (kvEviction h2o)`);
      this.masses.delete(e.seqId);
    }
    const flush = async (): Promise<void> => {
      if (!group.length) return;
      const ids = await session.stepPaged!(group.map(({ tokens, start, blockTable, sampling, attentionMass }) => ({ tokens, start, blockTable, sampling, ...(attentionMass ? { attentionMass } : {}) })), copies);
      copies = [];
      const mass = group.some((g) => g.attentionMass) ? session.lastAttentionMass!() : [];
      group.forEach((g, i) => {
        if (g.sampling) out[g.index] = ids[i][0];
        const m = mass[i];
        if (!g.attentionMass) return;
        if (!m) throw new InputError(`sequence ${g.seqId}: the engine returned no attention mass`);
        // a prompt run in chunks: each chunk's mass covers the positions up to its end
        const was = this.masses.get(g.seqId);
        if (was) for (let j = 0; j < was.length; j++) m[j] += was[j];
        this.masses.set(g.seqId, m);
      });
      group = [];
      size = 0;
    };
    for (const [index, e] of batch.entries.entries()) {
      if (e.tokens.length === 0) throw new InputError(`sequence ${e.seqId}: nothing to run`);
      // a prompt longer than one engine step runs in chunks, in order (a sequence appears once per engine step)
      for (let at = 0; at < e.tokens.length; at += cap) {
        const tokens = e.tokens.slice(at, at + cap);
        const last = at + cap >= e.tokens.length;
        if (size + tokens.length > cap || group.some((g) => g.seqId === e.seqId)) await flush();
        group.push({ index, seqId: e.seqId, tokens, start: e.start + at, blockTable: e.blockTable, sampling: last ? e.sampling : undefined, attentionMass: e.attentionMass });
        size += tokens.length;
      }
    }
    await flush();
    return out;
  }

  /** A step on the engine's own block tables: each sequence gets what of its context the engine has not run. */
  private async stepOnEngineTables(batch: ExecutorBatch): Promise<number[]> {
    // what each sequence still has to run: its context past what the engine holds
    const work = batch.entries.map((e) => {
      let s = this.seqs.get(e.seqId);
      if (!s) this.seqs.set(e.seqId, (s = { seq: this.session.createSequence(), fed: 0 }));
      if (e.context.length < s.fed) throw new InputError(`sequence ${e.seqId} went back from ${s.fed} to ${e.context.length} tokens`);
      const tokens = e.context.slice(s.fed);
      s.fed = e.context.length;
      return { seq: s.seq, tokens, sampling: e.sampling };
    });
    const out: number[] = new Array<number>(work.length).fill(-1);
    // groups within the engine's per-step token limit; a longer run is cut into chunks, the last one sampling
    const cap = this.session.maxTokens;
    let group: { index: number; seq: BatchedSequence; tokens: readonly number[]; sampling?: SamplerStepSettings }[] = [];
    let size = 0;
    const flush = async (): Promise<void> => {
      if (!group.length) return;
      const ids = await this.session.stepBatch(group.map(({ seq, tokens, sampling }) => ({ seq, tokens, sampling })));
      group.forEach((g, i) => {
        if (g.sampling) out[g.index] = ids[i][0];
      });
      group = [];
      size = 0;
    };
    for (const [index, w] of work.entries()) {
      for (let at = 0; at < w.tokens.length; at += cap) {
        const tokens = w.tokens.slice(at, at + cap);
        const last = at + cap >= w.tokens.length;
        if (size + tokens.length > cap || group.some((g) => g.seq === w.seq)) await flush();
        group.push({ index, seq: w.seq, tokens, sampling: last ? w.sampling : undefined });
        size += tokens.length;
      }
      if (w.tokens.length === 0) throw new InputError(`sequence ${batch.entries[index].seqId}: nothing to run`);
    }
    await flush();
    return out;
  }

  discardSwapped(key: number): void {
    this.swapped.delete(key);
  }

  release(seqId: number): void {
    this.masses.delete(seqId);
    const s = this.seqs.get(seqId);
    if (!s) return;
    this.session.releaseSequence(s.seq);
    this.seqs.delete(seqId);
  }

  async destroy(): Promise<void> {
    await this.onDestroy?.();
  }
}
