/**
 * The WebGPU engine as a {@link BatchExecutor}, over the single-sequence {@link EngineSession} API: one session per
 * resident sequence (so `maxSequences` is the number of sessions), the entries of a step run one after another.
 * The engine keeps its own KV cache per session, so the scheduler's block tables are bookkeeping here: a session
 * is fed whatever of the entry's `context` it has not seen (prefix-cache hits and prefill chunks included) when the
 * entry asks for a token.
 *
 * This file is the one to replace when the engine runs batches itself (`stepBatch` over sequences of one session):
 * the scheduler, block manager and server do not change.
 * @module
 */
import { InputError } from '../../errors.js';
import { requestGPUDevice, type GPUDeviceHandle } from '../device.js';
import type { Engine, EngineSession } from '../engine.js';
import type { BatchExecutor, ExecutorBatch, KvPoolShape } from './batch-executor.js';

/** One session and the sequence it holds. */
interface Slot {
  readonly session: EngineSession;
  seqId?: number;
  /** Tokens of the sequence the session has run. */
  fed: number;
}

/** Options of {@link EngineSessionExecutor.create}. */
export interface EngineSessionExecutorOptions {
  /** Sessions, hence sequences running at once (default 4). */
  readonly sessions?: number;
  /** The device all sessions share (default: a new one, destroyed with the executor). */
  readonly device?: GPUDeviceHandle;
  /** Blocks of the scheduler's KV pool (default: a full context per session). */
  readonly numBlocks?: number;
  /** Destroy the given `device` with the executor (default false; a device the executor made is always destroyed). */
  readonly destroyDevice?: boolean;
}

/** {@link BatchExecutor} over single-sequence WebGPU engine sessions. */
export class EngineSessionExecutor implements BatchExecutor {
  readonly maxPositions: number;
  readonly vocabSize: number;
  readonly stopTokens: readonly number[];
  readonly kv: KvPoolShape;
  readonly maxSequences: number;
  private readonly slots: Slot[];
  private readonly bySeq = new Map<number, Slot>();

  /** GPU memory of all the sessions. */
  get memoryBytes(): number {
    return this.slots.reduce((a, s) => a + s.session.deviceBytes, 0);
  }

  constructor(
    /** The engine's manifest facts. */
    engine: Engine,
    /** Its sessions (one per resident sequence). */
    sessions: readonly EngineSession[],
    numBlocks?: number,
    private readonly onDestroy?: () => Promise<void>,
  ) {
    const lm = engine.manifest.lm;
    const kv = engine.manifest.kv;
    if (!lm || !kv) throw new InputError('the engine is not a causal LM with a KV cache');
    if (sessions.length === 0) throw new InputError('the executor needs at least one engine session');
    this.maxPositions = lm.maxPositions;
    this.vocabSize = lm.vocabSize;
    this.stopTokens = lm.stopTokens;
    this.maxSequences = sessions.length;
    this.kv = { numBlocks: numBlocks ?? sessions.length * Math.ceil(lm.maxPositions / kv.blockSize), blockSize: kv.blockSize };
    this.slots = sessions.map((session) => ({ session, fed: 0 }));
  }

  /** Creates `sessions` sessions of `engine` on one device. */
  static async create(engine: Engine, options: EngineSessionExecutorOptions = {}): Promise<EngineSessionExecutor> {
    const n = options.sessions ?? 4;
    if (!(Number.isInteger(n) && n >= 1)) throw new InputError(`sessions must be a positive integer, got ${n}`);
    const handle = options.device ?? (await requestGPUDevice({ requiredFeatures: engine.manifest.requiredFeatures as GPUFeatureName[] }));
    const sessions: EngineSession[] = [];
    try {
      for (let i = 0; i < n; i++) sessions.push(await engine.createSession({ device: handle }));
    } catch (e) {
      for (const s of sessions) await s.destroy();
      if (!options.device || options.destroyDevice) await handle.destroy();
      throw e;
    }
    return new EngineSessionExecutor(engine, sessions, options.numBlocks, async () => {
      for (const s of sessions) await s.destroy();
      if (!options.device || options.destroyDevice) await handle.destroy();
    });
  }

  async step(batch: ExecutorBatch): Promise<number[]> {
    const out: number[] = [];
    for (const e of batch.entries) {
      const slot = this.slotFor(e.seqId);
      if (!e.sampling) {
        out.push(-1); // fed with the entry that samples
        continue;
      }
      if (e.context.length < slot.fed) throw new InputError(`sequence ${e.seqId} went back from ${slot.fed} to ${e.context.length} tokens`);
      out.push(await slot.session.step(e.context.slice(slot.fed), e.sampling));
      slot.fed = e.context.length;
    }
    return out;
  }

  release(seqId: number): void {
    const slot = this.bySeq.get(seqId);
    if (!slot) return;
    slot.seqId = undefined;
    this.bySeq.delete(seqId);
  }

  async destroy(): Promise<void> {
    await this.onDestroy?.();
  }

  private slotFor(seqId: number): Slot {
    let slot = this.bySeq.get(seqId);
    if (slot) return slot;
    slot = this.slots.find((s) => s.seqId === undefined);
    if (!slot) throw new InputError(`all ${this.slots.length} engine sessions hold sequences; the scheduler must run at most ${this.maxSequences}`);
    slot.session.reset();
    slot.seqId = seqId;
    slot.fed = 0;
    this.bySeq.set(seqId, slot);
    return slot;
  }
}
