/**
 * A {@link BatchExecutor} over an engine session that runs ragged batches itself (`createSequence`, `stepBatch`,
 * `releaseSequence`: the batched `EngineSession` API of issue #14). The engine keeps its own paged KV cache and
 * block tables, so the scheduler's tables are bookkeeping: each sequence is fed whatever of its `context` the engine
 * has not run yet (a prefix-cache hit is recomputed, not shared, until the engine can adopt cached blocks), and the
 * scheduler's pool is the engine's ({@link BatchedEngineExecutor.kv}) and its prefix cache is off
 * ({@link BatchedEngineExecutor.sharesBlocks}).
 *
 * The engine API is declared here structurally ({@link BatchedEngineSession}), so this file compiles before the
 * batched engine lands and needs no change when it does: pass the session to the constructor.
 * @module
 */
import { InputError } from '../../errors.js';
import type { SamplerStepSettings } from '../sampler-params.js';
import type { BatchExecutor, ExecutorBatch, KvPoolShape } from './batch-executor.js';

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
  /** The engine's own pool (run the scheduler with prefix caching off: cached blocks are not shared on the engine). */
  readonly kv: KvPoolShape;
  readonly maxSequences = Infinity;
  /** The engine keeps its own block tables: the scheduler's prefix cache is off. */
  readonly sharesBlocks = false;
  private readonly seqs = new Map<number, { seq: BatchedSequence; fed: number }>();

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
  }

  async step(batch: ExecutorBatch): Promise<number[]> {
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

  release(seqId: number): void {
    const s = this.seqs.get(seqId);
    if (!s) return;
    this.session.releaseSequence(s.seq);
    this.seqs.delete(seqId);
  }

  async destroy(): Promise<void> {
    await this.onDestroy?.();
  }
}
