// The serving KV block manager: reference counts, copy-on-write forks, the hash-chained prefix cache with LRU
// eviction, and prefix sharing (16 requests on one 256-token prefix hold at most 1.3x the blocks of one).
import { describe, expect, it } from 'vitest';
import { CacheFullError } from '../src/errors.js';
import { blockHash, KvBlockManager } from '../src/runtime/serving/kv-block-manager.js';

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_v, i) => from + i);

/** Starts a sequence on `tokens` the way the scheduler does: prefix match, then room for the rest, then commit. */
function admit(m: KvBlockManager, tokens: number[]): number {
  const match = m.matchPrefix(tokens, tokens.length - 1);
  const id = m.createSequence(match, tokens.length);
  m.append(id, tokens.length - match.tokens);
  m.commit(id, tokens, tokens.length);
  return id;
}

describe('KvBlockManager', () => {
  it('chains block hashes: equal blocks after different prefixes hash differently', () => {
    expect(blockHash(0, [1, 2, 3, 4])).toBe(blockHash(0, [1, 2, 3, 4]));
    expect(blockHash(0, [1, 2, 3, 4])).not.toBe(blockHash(blockHash(0, [9, 9, 9, 9]), [1, 2, 3, 4]));
    expect(blockHash(0, [1, 2, 3, 4])).not.toBe(blockHash(0, [1, 2, 4, 3]));
  });

  it('finds a cached prefix of full blocks, at most maxTokens, and shares those blocks', () => {
    const m = new KvBlockManager({ numBlocks: 32, blockSize: 4 });
    const a = admit(m, range(10));
    expect(m.usedBlocks).toBe(3);
    const match = m.matchPrefix([...range(8), 50, 51], 9);
    expect(match.tokens).toBe(8);
    expect(match.blocks).toEqual(m.table(a).slice(0, 2));
    // the whole prompt cached: the last token must still be computed, so the last full block is not taken
    expect(m.matchPrefix(range(8), 7).tokens).toBe(4);
    const b = admit(m, [...range(8), 50, 51]);
    expect(m.table(b).slice(0, 2)).toEqual(m.table(a).slice(0, 2));
    expect(m.usedBlocks).toBe(4);
    expect(m.stats.hitTokens).toBe(8);
    expect(m.stats.queriedTokens).toBe(20);
  });

  it('keeps released full blocks cached until the pool needs them, evicting least recently used first', () => {
    const m = new KvBlockManager({ numBlocks: 6, blockSize: 2 });
    const a = admit(m, [1, 2, 3, 4, 5]); // blocks [1,2] [3,4] [5]
    m.release(a);
    expect(m.usedBlocks).toBe(0);
    expect(m.cachedBlocks).toBe(2);
    const b = admit(m, [7, 8, 9, 10, 11]);
    m.release(b);
    expect(m.cachedBlocks).toBe(4);
    expect(m.matchPrefix([1, 2, 3, 4, 0], 4).tokens).toBe(4);
    // 6 blocks needed: the 2 free ones, then the evictable ones, oldest release first (a's tail block goes first)
    const c = m.createSequence();
    m.append(c, 12);
    expect(m.stats.evictions).toBe(4);
    expect(m.cachedBlocks).toBe(0);
    m.release(c);
    const d = admit(m, [1, 2, 3, 4, 0]);
    expect(m.stats.hitTokens).toBe(0);
    m.release(d);
  });

  it('a cached block held by a running sequence is not evicted', () => {
    const m = new KvBlockManager({ numBlocks: 4, blockSize: 2 });
    const a = admit(m, [1, 2, 3, 4, 5]);
    const b = m.createSequence();
    expect(m.availableBlocks).toBe(1);
    expect(() => m.append(b, 4)).toThrow(CacheFullError);
    expect(m.table(b)).toEqual([]);
    m.release(a);
    m.append(b, 8);
    expect(m.usedBlocks).toBe(4);
  });

  it('forks copy-on-write: the shared partial block is copied on the first write, full blocks stay shared', () => {
    const m = new KvBlockManager({ numBlocks: 16, blockSize: 4, prefixCaching: false });
    const a = m.createSequence();
    m.append(a, 6);
    const b = m.fork(a);
    expect(m.table(b)).toEqual(m.table(a));
    expect(m.usedBlocks).toBe(2);
    expect(m.blocksToAppend(b, 1)).toBe(1);
    const copies = m.append(b, 1);
    expect(copies).toEqual([{ src: m.table(a)[1], dst: m.table(b)[1] }]);
    expect(m.table(b)[0]).toBe(m.table(a)[0]);
    expect(m.table(b)[1]).not.toBe(m.table(a)[1]);
    // a now holds its partial block alone: no copy
    expect(m.append(a, 1)).toEqual([]);
    m.release(a);
    m.release(b);
    expect(m.usedBlocks).toBe(0);
    expect(m.availableBlocks).toBe(16);
  });

  it('16 sequences on a 256-token prefix hold at most 1.3x the blocks of one', () => {
    const prefix = range(256, 3);
    const solo = new KvBlockManager({ numBlocks: 512, blockSize: 4 });
    const one = admit(solo, [...prefix, 1000, 1001]);
    solo.append(one, 2); // two decode steps
    const oneBlocks = solo.usedBlocks;
    const m = new KvBlockManager({ numBlocks: 512, blockSize: 4 });
    for (let r = 0; r < 16; r++) {
      const id = admit(m, [...prefix, 1000 + r, 2000 + r]);
      m.append(id, 2);
    }
    expect(m.usedBlocks).toBeLessThanOrEqual(1.3 * oneBlocks);
    expect(m.stats.hitTokens).toBe(15 * 256);
  });
});
