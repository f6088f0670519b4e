/**
 * The CPU reference backend as a {@link BatchExecutor}: runs each entry of a step through the interpreter, with K/V
 * kept in a paged host pool laid out as the GPU's (per layer a K and a V pool of `[numBlocks, blockSize, heads,
 * headDim]`). The block tables the scheduler sends decide where each position's K/V is read from and written to, so
 * prefix sharing, copy-on-write and preemption are exercised for real, and the results are exact.
 * @module
 */
import { InputError } from '../../errors.js';
import { attrsOf, isOp, type OpLike, type RopeAttrs } from '../../ir/attrs.js';
import { graphRopeAttrs } from '../../ir/rope.js';
import type { Graph } from '../../ir/graph.js';
import { runGraph } from '../cpu/interpreter.js';
import { attentionKeyMass, rope } from '../cpu/kernels.js';
import { Tensor } from '../cpu/tensor.js';
import { sampleToken } from '../sampling.js';
import type { BatchExecutor, ExecutorBatch, KvPoolShape, ExecutorEntry, KvShift } from './batch-executor.js';

/** Options of {@link CpuPagedExecutor}. */
export interface CpuPagedExecutorOptions {
  /** Blocks in the KV pool. */
  readonly numBlocks: number;
  /** Tokens per block (default 16). */
  readonly blockSize?: number;
  /** Ids that end generation (the model's EOS, or BOS for llama2.c models). */
  readonly stopTokens: readonly number[];
  /** Longest sequence the model supports. */
  readonly maxPositions: number;
}

/** One `past_*` input of the graph and its pool. */
interface KvPool {
  readonly input: string;
  readonly output: string;
  /** Floats per position (heads × head dim). */
  readonly row: number;
  /** KV heads. */
  readonly heads: number;
  readonly data: Float32Array;
}

/** A paged-KV {@link BatchExecutor} over the reference interpreter (exact; one sequence at a time inside a step). */
export class CpuPagedExecutor implements BatchExecutor {
  readonly maxPositions: number;
  readonly vocabSize: number;
  readonly stopTokens: readonly number[];
  readonly kv: KvPoolShape;
  readonly maxSequences = Infinity;
  private readonly pools: KvPool[] = [];

  constructor(
    /** A decoder graph with `tokens`, `positions` and `past_k.L` / `past_v.L` inputs (`[1, past, heads, headDim]`). */
    readonly graph: Graph,
    options: CpuPagedExecutorOptions,
  ) {
    const blockSize = options.blockSize ?? 16;
    if (!(Number.isInteger(options.numBlocks) && options.numBlocks > 0 && Number.isInteger(blockSize) && blockSize > 0))
      throw new InputError(`the KV pool needs positive integer block count and size, got ${options.numBlocks} x ${blockSize}`);
    this.kv = { numBlocks: options.numBlocks, blockSize };
    this.maxPositions = options.maxPositions;
    this.stopTokens = options.stopTokens;
    const logits = graph.outputs.find((o) => o.name === 'logits')?.node;
    const v = logits?.shape[logits.shape.length - 1];
    if (typeof v !== 'number') throw new InputError('the graph has no logits output with a fixed vocabulary size');
    this.vocabSize = v;
    for (const inp of graph.inputs) {
      const name = inp.attrs.name as string;
      if (!name.startsWith('past_')) continue;
      const [b, , h, d] = inp.shape;
      if (inp.dtype !== 'f32' || inp.shape.length !== 4 || b !== 1 || typeof h !== 'number' || typeof d !== 'number')
        throw new InputError(`KV input ${name} must be f32 [1, past, heads, headDim], got ${inp.dtype} [${inp.shape.join(', ')}]`);
      this.pools.push({ input: name, output: name.replace('past_', 'present_'), row: h * d, heads: h, data: new Float32Array(options.numBlocks * blockSize * h * d) });
    }
    if (this.pools.length === 0) throw new InputError('the graph has no past_* KV inputs');
    // an int8/int4 KV cache (kv_quantize in the graph) stores quantized keys: a shift would have to requantize them,
    // which no backend does yet, so such graphs cannot shift
    this.rope = quantizesKv(graph) ? undefined : graphRopeAttrs(graph);
  }

  /** The graph's one rotary embedding, which key shifts apply (absent: keys cannot be shifted). */
  private readonly rope?: RopeAttrs;

  /** Whether the graph has one `rope` configuration and an f32 KV cache, so windowed sequences can shift their keys. */
  get canShiftKeys(): boolean {
    return this.rope !== undefined;
  }

  readonly canSwap = true;

  /** It computes, for entries that ask, the attention mass every cached position receives (H2O eviction). */
  readonly tracksAttention = true;

  /** Attention mass per cache position of the entries of the last step that asked for it, by sequence. */
  private readonly masses = new Map<number, Float64Array>();

  /**
   * The attention mass the cache positions `0 .. start + tokens.length − 1` of sequence `seqId` received in the last
   * step (its entry asked with `attentionMass`): the softmax weights of each `attention` op of the graph (every layer,
   * fused or not, seen through the interpreter's `observeOps`), summed over query heads and the entry's tokens.
   * Forgotten once taken; undefined when there is none.
   */
  takeAttentionMass(seqId: number): Float64Array | undefined {
    const m = this.masses.get(seqId);
    this.masses.delete(seqId);
    return m;
  }

  /**
   * Called with the logits after the last token of every entry (sampled or not), before sampling; the row is only
   * valid during the call. `eval --kv-window` scores a text streamed through a windowed cache with it.
   */
  onLogits?: (seqId: number, logits: Float32Array) => void;

  /** Bytes of K/V one cached position takes over all layers (f32). */
  get kvBytesPerPosition(): number {
    return this.pools.reduce((a, p) => a + p.row * 4, 0);
  }

  /** The KV pool and the graph's stored weights, in host memory. */
  get memoryBytes(): number {
    const pools = this.pools.reduce((a, p) => a + p.data.byteLength, 0);
    const weights = this.graph.weights.all().reduce((a, w) => a + Object.values(w.data).reduce((b, x) => b + x.byteLength, 0), 0);
    return pools + weights;
  }
  /** Host copies of swapped-out blocks: per key, one array per pool. */
  private readonly swapped = new Map<number, Float32Array[]>();

  async step(batch: ExecutorBatch): Promise<number[]> {
    const bs = this.kv.blockSize;
    for (const { key, blocks } of batch.swapOut ?? [])
      this.swapped.set(
        key,
        this.pools.map((p) => {
          const host = new Float32Array(blocks.length * bs * p.row);
          blocks.forEach((b, i) => host.set(p.data.subarray(b * bs * p.row, (b + 1) * bs * p.row), i * bs * p.row));
          return host;
        }),
      );
    for (const { key, blocks } of batch.swapIn ?? []) {
      const host = this.swapped.get(key);
      if (!host) throw new InputError(`nothing is swapped out under key ${key}`);
      this.pools.forEach((p, j) => blocks.forEach((b, i) => p.data.set(host[j].subarray(i * bs * p.row, (i + 1) * bs * p.row), b * bs * p.row)));
      this.swapped.delete(key);
    }
    for (const { src, dst } of batch.copies)
      for (const p of this.pools) p.data.copyWithin(dst * bs * p.row, src * bs * p.row, (src + 1) * bs * p.row);
    for (const s of batch.shifts ?? []) this.shiftKeys(s);
    return batch.entries.map((e) => this.run(e));
  }

  discardSwapped(key: number): void {
    this.swapped.delete(key);
  }

  /** Host copies held (swapped-out sequences). */
  get swappedSequences(): number {
    return this.swapped.size;
  }

  /**
   * Rotates the keys of `s.blocks` back by `s.delta` positions with the interpreter's own rope kernel at position
   * `−delta` (`R(p − d) = R(−d) R(p)`; equal to a fresh rope at `p − d` up to float32 rounding of the angles).
   */
  private shiftKeys(s: KvShift): void {
    const r = this.rope;
    if (!r) throw new InputError(`sequence ${s.seqId}: the graph has no single rope configuration, so its keys cannot be shifted`);
    if (!(Number.isInteger(s.delta) && s.delta > 0)) throw new InputError(`sequence ${s.seqId}: a key shift needs a positive integer delta, got ${s.delta}`);
    const bs = this.kv.blockSize;
    for (const b of s.blocks) if (!(Number.isInteger(b) && b >= 0 && b < this.kv.numBlocks)) throw new InputError(`sequence ${s.seqId}: block ${b} is outside the pool`);
    for (const p of this.pools) {
      if (!p.input.startsWith('past_k')) continue;
      const d = p.row / p.heads;
      for (const b of s.blocks) {
        const at = b * bs * p.row;
        const keys = new Tensor('f32', [1, bs, p.heads, d], p.data.slice(at, at + bs * p.row));
        const rotated = rope(keys, Tensor.from('i32', [bs], new Array<number>(bs).fill(-s.delta)), r.theta, r.style, r.rotaryDim);
        p.data.set(rotated.data as Float32Array, at);
      }
    }
  }

  /**
   * What the pool holds for positions `0 .. length - 1` of a block table: per `past_*` input (in graph order, with its
   * name), the rows `[length, heads × headDim]` gathered in position order. For tests and inspection.
   */
  readPositions(table: readonly number[], length: number): {
    /** The graph input the pool feeds (`past_k.L` / `past_v.L`). */
    input: string;
    /** Its rows for positions `0 .. length - 1`, in logical order. */
    data: Float32Array;
  }[] {
    const bs = this.kv.blockSize;
    if (table.length * bs < length) throw new InputError(`${table.length} block(s) cannot hold ${length} positions`);
    return this.pools.map((p) => {
      const out = new Float32Array(length * p.row);
      for (let pos = 0; pos < length; pos++) {
        const at = (table[Math.floor(pos / bs)] * bs + (pos % bs)) * p.row;
        out.set(p.data.subarray(at, at + p.row), pos * p.row);
      }
      return { input: p.input, data: out };
    });
  }

  release(seqId: number): void {
    // all other state is in the pool, which the block manager owns
    this.masses.delete(seqId);
  }

  private run(e: ExecutorEntry): number {
    const n = e.tokens.length;
    const end = e.start + n;
    const bs = this.kv.blockSize;
    if (n === 0) throw new InputError(`sequence ${e.seqId}: a step needs at least one token`);
    if (end > this.maxPositions) throw new InputError(`sequence ${e.seqId} would reach ${end} positions, the model supports ${this.maxPositions}`);
    if (e.blockTable.length * bs < end) throw new InputError(`sequence ${e.seqId}: ${e.blockTable.length} block(s) cannot hold ${end} positions`);
    for (const b of e.blockTable) if (!(Number.isInteger(b) && b >= 0 && b < this.kv.numBlocks)) throw new InputError(`sequence ${e.seqId}: block ${b} is outside the pool`);
    for (const t of e.tokens) if (!(Number.isInteger(t) && t >= 0 && t < this.vocabSize)) throw new InputError(`token id ${t} is outside the vocabulary (0..${this.vocabSize - 1})`);
    const inputs: Record<string, Tensor> = {
      tokens: Tensor.from('i32', [1, n], e.tokens),
      positions: Tensor.from('i32', [n], e.tokens.map((_t, i) => e.start + i)),
    };
    for (const p of this.pools) {
      const past = new Float32Array(e.start * p.row);
      for (let pos = 0; pos < e.start; pos++) {
        const at = (e.blockTable[Math.floor(pos / bs)] * bs + (pos % bs)) * p.row;
        past.set(p.data.subarray(at, at + p.row), pos * p.row);
      }
      inputs[p.input] = new Tensor('f32', [1, e.start, p.heads, p.row / p.heads], past);
    }
    let mass: Float64Array | undefined;
    const observeOps = e.attentionMass
      ? (node: OpLike, _value: Tensor, args: readonly Tensor[]): void => {
          if (!isOp(node, 'attention')) return;
          const { causal, scale } = node.attrs;
          const m = attentionKeyMass(args[0], args[1], args[3], causal, scale);
          mass ??= new Float64Array(m.length);
          for (let j = 0; j < m.length; j++) mass[j] += m[j];
        }
      : undefined;
    const out = runGraph(this.graph, inputs, { observeOps });
    if (e.attentionMass) {
      if (!mass || mass.length !== end)
        throw new InputError(`sequence ${e.seqId}: the graph has no attention op over its ${end} cached positions, so its attention mass (kvEviction h2o) cannot be observed`);
      this.masses.set(e.seqId, mass);
    }
    for (const p of this.pools) {
      const present = out[p.output].data as Float32Array;
      for (let pos = e.start; pos < end; pos++) {
        const at = (e.blockTable[Math.floor(pos / bs)] * bs + (pos % bs)) * p.row;
        p.data.set(present.subarray(pos * p.row, (pos + 1) * p.row), at);
      }
    }
    const logits = out.logits.data as Float32Array;
    const row = logits.subarray(logits.length - this.vocabSize);
    this.onLogits?.(e.seqId, row);
    if (!e.sampling) return -1;
    return sampleToken(row, e.sampling, e.sampling.coin);
  }
}

/** Whether the graph quantizes its KV cache (`kv_quantize`, as a node or a step of a fused kernel). */
function quantizesKv(graph: Graph): boolean {
  const has = (x: OpLike): boolean => x.op === 'kv_quantize' || (x.op === 'fused' && attrsOf(x, 'fused').steps.some(has));
  return graph.nodes().some(has);
}
