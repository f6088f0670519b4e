/**
 * The serving KV block manager: the paged KV pool of {@link BlockAllocator} (reference-counted blocks, one table per
 * sequence) plus vLLM's automatic prefix cache. Each full block of a sequence is named by a hash of its token ids
 * chained with the hash of the block before it, so a block's name stands for the whole prefix up to its end. Cached
 * blocks hold one reference of the cache's own; a new sequence whose prompt starts with cached blocks shares them
 * instead of recomputing them, and blocks held only by the cache are evicted least recently used first when the pool
 * runs out of free blocks. Copy-on-write: a write into a block that another sequence (or the cache) also holds first
 * moves the writer onto a private copy.
 * @module
 */
import { CacheFullError, InputError } from '../../errors.js';
import { BlockAllocator } from '../block-allocator.js';
import type { BlockCopy } from './batch-executor.js';

/** One cached block: its content hash, what it holds (checked on a hit, so a hash collision is only a miss), its block. */
interface CachedBlock {
  readonly hash: number;
  readonly parent: number;
  readonly tokens: readonly number[];
  readonly block: number;
}

/** What the manager keeps per sequence besides its block table. */
interface SequenceState {
  /** Content hashes of the sequence's full blocks, in order, as far as they are computed. */
  hashes: number[];
  /** Blocks were dropped from its table (sliding window): its blocks are not committed to the prefix cache. */
  shifted?: boolean;
}

/** A prefix found in the cache. */
export interface PrefixMatch {
  /** The cached blocks, in order. */
  readonly blocks: readonly number[];
  /** Tokens they hold (`blocks.length * blockSize`). */
  readonly tokens: number;
  /** Their hashes. */
  readonly hashes: readonly number[];
}

/** Counters of the prefix cache. */
export interface PrefixCacheStats {
  /** Prompt tokens looked up in the cache by new sequences. */
  readonly queriedTokens: number;
  /** Of those, tokens found (not recomputed). */
  readonly hitTokens: number;
  /** Cached blocks evicted to make room. */
  readonly evictions: number;
}

/** Hash of a block's tokens chained with its parent's hash: FNV-1a over 32-bit words, 52 bits kept. */
export function blockHash(parent: number, tokens: readonly number[]): number {
  let lo = 0x811c9dc5 ^ (parent % 0x100000000);
  let hi = 0x01000193 ^ Math.floor(parent / 0x100000000);
  const mix = (w: number): void => {
    lo = Math.imul(lo ^ (w & 0xffff), 0x01000193) >>> 0;
    lo = Math.imul(lo ^ (w >>> 16), 0x01000193) >>> 0;
    hi = Math.imul(hi ^ lo, 0x5bd1e995) >>> 0;
    hi = (hi ^ (hi >>> 13)) >>> 0;
  };
  for (const t of tokens) mix(t >>> 0);
  mix(tokens.length);
  return (hi & 0xfffff) * 0x100000000 + lo;
}

/** The hash of the (empty) prefix before a sequence's first block. */
const ROOT_HASH = 0;

/** Options of {@link KvBlockManager}. */
export interface KvBlockManagerOptions {
  /** Blocks in the pool. */
  readonly numBlocks: number;
  /** Tokens per block. */
  readonly blockSize: number;
  /** Keep full blocks in an automatic prefix cache (default true). */
  readonly prefixCaching?: boolean;
}

/** Paged KV bookkeeping with copy-on-write sharing and an automatic prefix cache. */
export class KvBlockManager {
  /** The pool underneath (tables and reference counts). */
  readonly allocator: BlockAllocator;
  /** Whether full blocks are cached. */
  readonly prefixCaching: boolean;
  private readonly byHash = new Map<number, CachedBlock>();
  private readonly byBlock = new Map<number, CachedBlock>();
  /** Blocks held by the cache alone, least recently used first (a Map keeps insertion order). */
  private readonly evictable = new Map<number, CachedBlock>();
  private readonly seqs = new Map<number, SequenceState>();
  private counters = { queriedTokens: 0, hitTokens: 0, evictions: 0 };

  constructor(options: KvBlockManagerOptions) {
    this.allocator = new BlockAllocator(options.numBlocks, options.blockSize);
    this.prefixCaching = options.prefixCaching ?? true;
  }

  /** Blocks in the pool. */
  get numBlocks(): number {
    return this.allocator.numBlocks;
  }
  /** Tokens per block. */
  get blockSize(): number {
    return this.allocator.blockSize;
  }
  /** Blocks a new allocation can take: free ones and ones only the cache holds (evicted on demand). */
  get availableBlocks(): number {
    return this.allocator.freeBlocks + this.evictable.size;
  }
  /** Blocks some sequence holds. */
  get usedBlocks(): number {
    return this.numBlocks - this.availableBlocks;
  }
  /** Blocks in the prefix cache (shared with sequences or not). */
  get cachedBlocks(): number {
    return this.byHash.size;
  }
  /** Prefix-cache counters. */
  get stats(): PrefixCacheStats {
    return { ...this.counters };
  }

  /** Hashes of the full blocks of `tokens` (the first `limit` tokens), in order. */
  hashes(tokens: readonly number[], limit = tokens.length): number[] {
    const bs = this.blockSize;
    const out: number[] = [];
    let parent = ROOT_HASH;
    for (let i = 0; (i + 1) * bs <= limit; i++) {
      parent = blockHash(parent, tokens.slice(i * bs, (i + 1) * bs));
      out.push(parent);
    }
    return out;
  }

  /**
   * The longest run of cached blocks that starts `tokens`, holding at most `maxTokens` tokens (a new sequence passes
   * its prompt length less one, so that at least its last prompt token is computed and gives logits).
   */
  matchPrefix(tokens: readonly number[], maxTokens: number): PrefixMatch {
    if (!this.prefixCaching) return { blocks: [], tokens: 0, hashes: [] };
    const bs = this.blockSize;
    const blocks: number[] = [];
    const hashes: number[] = [];
    let parent = ROOT_HASH;
    for (let i = 0; (i + 1) * bs <= maxTokens; i++) {
      const chunk = tokens.slice(i * bs, (i + 1) * bs);
      const h = blockHash(parent, chunk);
      const c = this.byHash.get(h);
      if (!c || c.parent !== parent || !sameTokens(c.tokens, chunk)) break;
      blocks.push(c.block);
      hashes.push(h);
      parent = h;
    }
    return { blocks, tokens: blocks.length * bs, hashes };
  }

  /** Blocks a prefix match would take out of {@link KvBlockManager.availableBlocks} (the ones only the cache holds). */
  evictableIn(match: PrefixMatch): number {
    return match.blocks.filter((b) => this.evictable.has(b)).length;
  }

  /**
   * Starts a sequence on a prefix match (empty when omitted) and returns its id. Counts `promptTokens` as looked up
   * in the cache and the match as found (pass 0 for a sequence that comes back after preemption, to count it once).
   */
  createSequence(match?: PrefixMatch, promptTokens = 0): number {
    const m = match ?? { blocks: [], tokens: 0, hashes: [] };
    for (const b of m.blocks) this.evictable.delete(b);
    const id = this.allocator.createSequence(m.blocks, m.tokens);
    this.seqs.set(id, { hashes: [...m.hashes] });
    if (promptTokens > 0) {
      this.counters.queriedTokens += promptTokens;
      this.counters.hitTokens += m.tokens;
    }
    return id;
  }

  /** Forks sequence `id`: the new sequence shares all its blocks (copy-on-write) and returns its id. */
  fork(id: number): number {
    const child = this.allocator.fork(id);
    this.seqs.set(child, { hashes: [...this.state(id).hashes] });
    return child;
  }

  /** Tokens stored for sequence `id`. */
  length(id: number): number {
    return this.allocator.sequence(id).length;
  }

  /** Sequence `id`'s block table. */
  table(id: number): readonly number[] {
    return this.allocator.sequence(id).table;
  }

  /** Blocks sequence `id` needs (new blocks plus copies of shared ones) to write `count` more tokens. */
  blocksToAppend(id: number, count: number): number {
    const s = this.allocator.sequence(id);
    const bs = this.blockSize;
    const end = s.length + count;
    let need = Math.max(0, Math.ceil(end / bs) - s.table.length);
    for (let i = Math.floor(s.length / bs); i < s.table.length && i * bs < end; i++) if (this.allocator.refCount(s.table[i]) > 1) need++;
    return need;
  }

  /**
   * Reserves room for `count` more tokens of sequence `id`, evicting cached blocks as needed, and returns the block
   * copies the write needs (copy-on-write of blocks it shares). Throws {@link CacheFullError}, changing nothing, when
   * the pool cannot hold them: check {@link KvBlockManager.blocksToAppend} against `availableBlocks` first.
   */
  append(id: number, count: number): BlockCopy[] {
    const need = this.blocksToAppend(id, count);
    if (need > this.availableBlocks)
      throw new CacheFullError(`KV cache full: sequence ${id} needs ${need} block(s) for ${count} token(s), ${this.availableBlocks} available of ${this.numBlocks}`);
    this.reclaim(need);
    const s = this.allocator.sequence(id);
    const bs = this.blockSize;
    const copies: BlockCopy[] = [];
    for (let i = Math.floor(s.length / bs); i < s.table.length && i * bs < s.length + count; i++) {
      const c = this.allocator.makeWritable(id, i);
      if (c) {
        copies.push(c);
        this.noteReleased(c.src);
      }
    }
    this.allocator.append(id, count);
    return copies;
  }

  /**
   * Records that the first `computed` tokens of sequence `id` (whose tokens are `tokens`) now have their K/V in the
   * cache: every full block among them enters the prefix cache (unless an equal block is cached already).
   */
  commit(id: number, tokens: readonly number[], computed: number): void {
    if (!this.prefixCaching) return;
    const st = this.state(id);
    if (st.shifted) return;
    const table = this.table(id);
    const bs = this.blockSize;
    if (computed > this.length(id)) throw new InputError(`sequence ${id} holds ${this.length(id)} tokens, fewer than the ${computed} committed`);
    for (let i = st.hashes.length; (i + 1) * bs <= computed; i++) {
      const parent = i === 0 ? ROOT_HASH : st.hashes[i - 1];
      const chunk = tokens.slice(i * bs, (i + 1) * bs);
      const h = blockHash(parent, chunk);
      st.hashes.push(h);
      const b = table[i];
      if (this.byHash.has(h) || this.byBlock.has(b)) continue;
      const c: CachedBlock = { hash: h, parent, tokens: chunk, block: b };
      this.byHash.set(h, c);
      this.byBlock.set(b, c);
      this.allocator.retainBlock(b);
    }
  }

  /**
   * Sliding-window eviction: removes `count` whole blocks of sequence `id` from block index `from` (see
   * the block allocator's `dropBlocks`); blocks it alone held become free, cached ones stay cached. The sequence's
   * later blocks no longer hold what their prefix hashes name, so it leaves the prefix cache's bookkeeping: nothing
   * it computes from now on is committed.
   */
  dropBlocks(id: number, from: number, count: number): void {
    const st = this.state(id);
    const gone = this.allocator.dropBlocks(id, from, count);
    st.hashes = st.hashes.slice(0, from);
    st.shifted = true;
    for (const b of gone) this.noteReleased(b);
  }

  /** Releases sequence `id`: blocks it alone held are freed, cached ones stay cached (evictable, tail blocks first). */
  release(id: number): void {
    const table = this.table(id);
    this.allocator.release(id);
    this.seqs.delete(id);
    for (let i = table.length - 1; i >= 0; i--) this.noteReleased(table[i]);
  }

  /** Empties the prefix cache (blocks only it held become free). */
  clearCache(): void {
    for (const c of [...this.byHash.values()]) this.drop(c);
  }

  /** After a reference to `b` went away: a cached block held by nothing else becomes evictable (most recent last). */
  private noteReleased(b: number): void {
    const c = this.byBlock.get(b);
    if (c && this.allocator.refCount(b) === 1) {
      this.evictable.delete(b);
      this.evictable.set(b, c);
    }
  }

  /** Evicts least recently used cache-only blocks until `need` blocks are free. */
  private reclaim(need: number): void {
    while (this.allocator.freeBlocks < need) {
      const first = this.evictable.values().next();
      if (first.done) return;
      this.drop(first.value);
      this.counters.evictions++;
    }
  }

  private drop(c: CachedBlock): void {
    this.byHash.delete(c.hash);
    this.byBlock.delete(c.block);
    this.evictable.delete(c.block);
    this.allocator.releaseBlock(c.block);
  }

  private state(id: number): SequenceState {
    const s = this.seqs.get(id);
    if (!s) throw new InputError(`the KV block manager has no sequence ${id}`);
    return s;
  }
}

function sameTokens(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}
