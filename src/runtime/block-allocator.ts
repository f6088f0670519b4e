/**
 * Host-side bookkeeping of the paged KV cache (vLLM's PagedAttention): a pool of fixed-size blocks, a free list,
 * reference counts (so sequences can later share prefix blocks copy-on-write), and one block table per sequence
 * mapping its logical token positions to physical blocks.
 *
 * GPU layout the attention kernels read through the block table: per layer, a K pool and a V pool, each
 * `[numBlocks, blockSize, nKvHeads, headDim]` row-major; token position `p` of a sequence lives in physical block
 * `table[floor(p / blockSize)]` at slot `p % blockSize`.
 * @module
 */
import { CacheFullError, InputError } from '../errors.js';

/**
 * One sequence's view of the cache.
 * @internal
 */
export interface SequenceBlocks {
  /** Sequence id. */
  readonly id: number;
  /** Physical block ids, in logical order. */
  readonly table: readonly number[];
  /** Tokens stored. */
  readonly length: number;
}

/**
 * Allocates KV-cache blocks to sequences.
 * @internal
 */
export class BlockAllocator {
  private readonly free: number[];
  private readonly refs: Uint32Array;
  private readonly seqs = new Map<number, { table: number[]; length: number }>();
  private nextSeq = 0;

  constructor(
    /** Blocks in the pool. */
    readonly numBlocks: number,
    /** Tokens per block. */
    readonly blockSize: number,
  ) {
    if (!(Number.isInteger(numBlocks) && numBlocks > 0 && Number.isInteger(blockSize) && blockSize > 0))
      throw new InputError(`KV cache needs positive integer block count and size, got ${numBlocks} x ${blockSize}`);
    this.free = Array.from({ length: numBlocks }, (_v, i) => numBlocks - 1 - i);
    this.refs = new Uint32Array(numBlocks);
  }

  /** Blocks not owned by any sequence. */
  get freeBlocks(): number {
    return this.free.length;
  }

  /**
   * Starts a sequence and returns its id: empty, or (for a prefix found in a cache) holding `length` tokens in the
   * given blocks, each of which gains a reference (they must be owned already, by a sequence or by a holder that
   * called {@link BlockAllocator.retainBlock}).
   */
  createSequence(shared: readonly number[] = [], length = 0): number {
    if (!(Number.isInteger(length) && length >= 0 && Math.ceil(length / this.blockSize) === shared.length))
      throw new InputError(`a sequence of ${length} tokens needs ${Math.ceil(length / this.blockSize)} block(s), got ${shared.length}`);
    for (const b of shared) if (!(b >= 0 && b < this.numBlocks && this.refs[b] > 0)) throw new InputError(`block ${b} is not allocated, so it cannot be shared`);
    for (const b of shared) this.refs[b]++;
    const id = this.nextSeq++;
    this.seqs.set(id, { table: [...shared], length });
    return id;
  }

  /** A new sequence sharing every block of sequence `id` (copy-on-write: see {@link BlockAllocator.makeWritable}). */
  fork(id: number): number {
    const s = this.seq(id);
    return this.createSequence(s.table, s.length);
  }

  /** References held on block `b` (0 = free). */
  refCount(b: number): number {
    return this.refs[b] ?? 0;
  }

  /** Adds a reference to an allocated block (for a holder other than a sequence, such as a prefix cache). */
  retainBlock(b: number): void {
    if (!(this.refs[b] > 0)) throw new InputError(`block ${b} is not allocated`);
    this.refs[b]++;
  }

  /** Drops a reference taken with {@link BlockAllocator.retainBlock}; returns whether the block became free. */
  releaseBlock(b: number): boolean {
    if (!(this.refs[b] > 0)) throw new InputError(`block ${b} is not allocated`);
    if (--this.refs[b] > 0) return false;
    this.free.push(b);
    return true;
  }

  /**
   * Copy-on-write: makes the `index`-th block of sequence `id` its own. When another owner shares it, a fresh block
   * takes its place in the table and `{ src, dst }` is returned (the caller copies the contents); otherwise nothing
   * changes and undefined is returned. Throws {@link CacheFullError} when a copy is needed and no block is free.
   */
  makeWritable(id: number, index: number): { src: number; dst: number } | undefined {
    const s = this.seq(id);
    const src = s.table[index];
    if (src === undefined) throw new InputError(`sequence ${id} has no block ${index}`);
    if (this.refs[src] <= 1) return undefined;
    const dst = this.free.pop();
    if (dst === undefined) throw new CacheFullError(`KV cache full: copying shared block ${src} for sequence ${id} needs a free block, 0 free of ${this.numBlocks}`);
    this.refs[dst] = 1;
    this.refs[src]--;
    s.table[index] = dst;
    return { src, dst };
  }

  private seq(id: number): { table: number[]; length: number } {
    const s = this.seqs.get(id);
    if (!s) throw new InputError(`KV cache has no sequence ${id}`);
    return s;
  }

  /**
   * Blocks sequence `id` needs from the free list to take `tokens` more tokens: new blocks past its table, plus one
   * when its last block is partly filled and shared with another sequence (that block is copied on write).
   */
  blocksNeeded(id: number, tokens: number): number {
    const s = this.seq(id);
    const fresh = Math.ceil((s.length + tokens) / this.blockSize) - s.table.length;
    return fresh + (this.sharedTail(s) && tokens > 0 ? 1 : 0);
  }

  /** Whether a sequence's last block is partly filled and shared (writing into it needs a copy first). */
  private sharedTail(s: { table: number[]; length: number }): boolean {
    return s.length % this.blockSize !== 0 && s.table.length > 0 && this.refs[s.table[s.table.length - 1]] > 1;
  }

  /**
   * Makes room for `tokens` more tokens in sequence `id` (allocating blocks as needed) and returns the position of
   * the first new token. Throws {@link CacheFullError} (allocating nothing) when the pool cannot hold them. When the
   * sequence's partly filled last block is shared, it gets a fresh block instead and `copy` says which block's
   * contents the caller must copy into it before writing (copy-on-write).
   */
  reserve(id: number, tokens: number): { start: number; copy?: { from: number; to: number } } {
    const s = this.seq(id);
    const need = this.blocksNeeded(id, tokens);
    if (need > this.free.length)
      throw new CacheFullError(`KV cache full: sequence ${id} needs ${need} more block(s) of ${this.blockSize} tokens for ${tokens} token(s), ${this.free.length} free of ${this.numBlocks}`, id);
    let copy: { from: number; to: number } | undefined;
    if (this.sharedTail(s) && tokens > 0) {
      const from = s.table[s.table.length - 1];
      const to = this.free.pop()!;
      this.refs[to] = 1;
      this.refs[from]--;
      s.table[s.table.length - 1] = to;
      copy = { from, to };
    }
    for (let i = s.table.length; i < Math.ceil((s.length + tokens) / this.blockSize); i++) {
      const b = this.free.pop()!;
      this.refs[b] = 1;
      s.table.push(b);
    }
    const start = s.length;
    s.length += tokens;
    return copy ? { start, copy } : { start };
  }

  /**
   * {@link BlockAllocator.reserve} for a sequence whose blocks are not shared (no copy can be needed); returns the
   * position of the first new token.
   */
  append(id: number, tokens: number): number {
    if (tokens > 0 && this.sharedTail(this.seq(id))) throw new InputError(`sequence ${id} shares its partly filled last block: use reserve(), which says which block to copy`);
    return this.reserve(id, tokens).start;
  }

  /** Releases a sequence's blocks (blocks shared with others stay until their last owner releases them). */
  release(id: number): void {
    const s = this.seq(id);
    for (const b of s.table) if (--this.refs[b] === 0) this.free.push(b);
    this.seqs.delete(id);
  }

  /** Drops the tail of a sequence back to `length` tokens (e.g. after a rejected speculative draft). */
  truncate(id: number, length: number): void {
    const s = this.seq(id);
    if (length > s.length || length < 0) throw new InputError(`cannot truncate sequence ${id} of ${s.length} tokens to ${length}`);
    const keep = Math.ceil(length / this.blockSize);
    for (const b of s.table.splice(keep)) if (--this.refs[b] === 0) this.free.push(b);
    s.length = length;
  }

  /**
   * Removes `count` whole blocks of sequence `id` starting at block index `from` (sliding-window eviction): the
   * blocks after them move up in the table and the sequence holds `count · blockSize` fewer tokens. Only blocks
   * wholly before the sequence's end can go. Returns the blocks removed (freed unless another owner holds them).
   */
  dropBlocks(id: number, from: number, count: number): number[] {
    const s = this.seq(id);
    if (!(Number.isInteger(from) && Number.isInteger(count) && from >= 0 && count >= 0 && (from + count) * this.blockSize <= s.length))
      throw new InputError(`cannot drop blocks ${from}..${from + count - 1} of sequence ${id}, which holds ${s.length} tokens in blocks of ${this.blockSize}`);
    const gone = s.table.splice(from, count);
    for (const b of gone) if (--this.refs[b] === 0) this.free.push(b);
    s.length -= count * this.blockSize;
    return gone;
  }

  /** Sequence `id`'s blocks and length. */
  sequence(id: number): SequenceBlocks {
    const s = this.seq(id);
    return { id, table: [...s.table], length: s.length };
  }

  /** The block table of sequence `id` padded to `maxBlocks` entries, ready to upload. */
  tableArray(id: number, maxBlocks: number): Uint32Array {
    const s = this.seq(id);
    if (s.table.length > maxBlocks) throw new CacheFullError(`sequence ${id} uses ${s.table.length} blocks, more than the ${maxBlocks} a table holds`);
    const a = new Uint32Array(maxBlocks);
    a.set(s.table);
    return a;
  }
}
