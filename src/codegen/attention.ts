/**
 * Attention kernel family: scaled dot-product attention with GQA/MQA head grouping, bottom-right-aligned causal
 * masking and an online (flash) softmax, over either a paged KV cache or ordinary contiguous K/V buffers, plus the
 * kernel that appends new keys and values to the paged cache.
 *
 * Semantics are those of the `attention` op (src/ir/ops.ts): q `[B, S, Hq, D]`, k `[B, T, Hkv, D]`, v
 * `[B, T, Hkv, Dv]`; query head `h` reads KV head `floor(h / (Hq / Hkv))`; with `causal`, key `j` is hidden from query
 * `i` when `j > i + (T - S)`; an optional mask broadcast to `[B, Hq, S, T]` is added to the scaled scores (f32/f16; an
 * element equal to `-inf` hides the key) or selects them (bool, 0 = hidden). A query that sees no key gets zeros, as
 * the CPU reference. Storage is f32 or f16; all arithmetic is f32.
 *
 * Paged KV cache layout (src/runtime/block-allocator.ts): per layer a K pool `[numBlocks, blockSize, Hkv, D]` and a V
 * pool `[numBlocks, blockSize, Hkv, Dv]`; token position `p` lives in block `table[floor(p / blockSize)]` at slot
 * `p % blockSize`; the block table is a `u32` array. Paged kernels are for batch 1 and read the `T = past + S`
 * positions `0 .. past+S-1` through the table, or (`ragged`) take S rows of several sequences: row `r` is position
 * `positions[r]` of sequence `row_seq[r]`, reads that sequence's row of `[B, table_stride]` block tables and attends
 * to its positions `0 ..= positions[r]` (what causal-LM engines compile, for batched execution).
 *
 * Variants share one tiled body: a workgroup holds a few "rows" (query vectors), each served by `rowLanes` lanes;
 * for every tile of keys it stages the K tile in workgroup memory, each row's lanes score the tile's keys, the row's
 * running max, sum and accumulator are rescaled (online softmax), the V tile replaces the K tile and the lanes
 * accumulate `p * V`, each owning a few value dims. The variants differ in what the rows are:
 * - `decode` (small S, e.g. 1..4 new tokens): one workgroup per (query position, KV head); its rows are the query
 *   heads sharing that KV head (GQA/MQA), so each K/V row is read from memory once for the whole group.
 * - `prefill-flash` (long S): flash attention — one workgroup per (tile of query positions, query head); key tiles
 *   wholly past the causal diagonal of the tile's last position are never visited.
 * - `split-kv` (paged ragged batches, long contexts; flash-decoding): the `decode` layout over one split of the keys
 *   per workgroup (grid z), writing each split's max, sum and unnormalised accumulator to a scratch buffer; a second
 *   kernel ({@link generateSplitKvMergeKernel}) merges the splits with a log-sum-exp rescale. More workgroups per
 *   row for GPUs that `decode`'s rows x KV heads leave idle.
 *
 * (Splitting the keys of one query across a workgroup's lanes with per-lane softmax states and a final merge was
 * tried for `decode`: it needs per-lane accumulators for every head of the group, which LLVM — lavapipe's compiler —
 * takes seconds to compile and real GPUs spill; the shared-tile form is as parallel within a workgroup.)
 *
 * Supported shapes: any Hq that is a multiple of Hkv; head dims D, Dv from 1 to 256 (ragged sizes such as 80 are
 * fine); any S and T (dynamic, through the params uniform), including S = 0; batch B >= 1 for the contiguous kernel
 * (dynamic allowed), batch 1 for the paged ones; block sizes >= 1. Workgroup memory stays within
 * `maxWorkgroupStorage` (default 16 KiB, WebGPU's default limit): the generator shrinks tiles or head chunks to fit.
 * @mergeModuleWith compile
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { KernelParams, paramsStruct, type DimLike, type GridExpr, type HeadWindow, type KernelBinding, type KernelSource } from './kernel.js';
import { enableDirectives, kernelFeatures, literal, type KernelFeature } from './wgsl.js';
import { chooseAttentionVariant } from './schedule/attention.js';
import { isQuantizedKv, kvPoolLayout, kvQuantFormat, type QuantizedKvDType } from '../ir/kv-cache-quant.js';

/**
 * Storage type of attention tensors (arithmetic is always f32).
 * @internal
 */
export type AttentionDType = 'f32' | 'f16';

/**
 * Storage type of a paged KV pool: a float type, or integers with a scale per (token, head) in the layout of
 * `src/ir/kv-cache-quant.ts` (the pool is then an array of u32 words).
 * @internal
 */
export type KvPoolDType = AttentionDType | QuantizedKvDType;

/** Tuning of the `decode` variant. */
export interface DecodeAttentionVariant {
  /** Variant kind. */
  readonly kind: 'decode';
  /** Lanes per query head (default 32); the workgroup has `headsPerWorkgroup * rowLanes` (at most 256) lanes. */
  readonly rowLanes?: number;
  /** Query heads per workgroup; divides `Hq / Hkv`. Default: the largest divisor <= 8 that fits. */
  readonly headsPerWorkgroup?: number;
  /** Keys per staged K/V tile. Default: the largest of 32, 16, 8, … that fits workgroup memory. */
  readonly keyTile?: number;
}

/** Tuning of the `prefill-flash` variant. */
export interface FlashAttentionVariant {
  /** Variant kind. */
  readonly kind: 'prefill-flash';
  /** Query rows per workgroup (default 16). */
  readonly queryRows?: number;
  /** Lanes per query row (default 8); `queryRows * rowLanes` is the workgroup size (at most 256). */
  readonly rowLanes?: number;
  /** Keys per staged K/V tile. Default: the largest of 32, 16, 8 that fits workgroup memory. */
  readonly keyTile?: number;
  /** Stage the query tile in workgroup memory. Default: when it fits. */
  readonly stageQuery?: boolean;
}

/**
 * Tuning of the `split-kv` variant (flash-decoding, paged ragged batches only): the `decode` layout with its keys cut
 * into `splits` splits of `splitKeys` keys each (the last split takes every key past the others), one workgroup per
 * (query position, KV head, split). A first kernel writes each split's softmax state (max, sum, unnormalised
 * accumulator) to a scratch buffer; a second (the merge kernel) merges the splits with a
 * log-sum-exp rescale. Splits past a row's keys do no work and are skipped by the merge (sum 0). Which keys a split
 * holds depends only on the row's own length, never on the batch: a row's output is batch invariant.
 */
export interface SplitKvAttentionVariant {
  /** Variant kind. */
  readonly kind: 'split-kv';
  /** Keys per split (rounded up to a multiple of the key tile; default 256). */
  readonly splitKeys?: number;
  /** Splits (workgroups per query position and KV head; default 8): a compile-time constant, 1..256. */
  readonly splits?: number;
  /** As {@link DecodeAttentionVariant.rowLanes}. */
  readonly rowLanes?: number;
  /** As {@link DecodeAttentionVariant.headsPerWorkgroup}. */
  readonly headsPerWorkgroup?: number;
  /** As {@link DecodeAttentionVariant.keyTile}. */
  readonly keyTile?: number;
}

/**
 * Tuning of the `decode-subgroup` variant: one workgroup of one subgroup per (query position, query head); the lanes
 * take the keys in turn (lane i: keys i, i + lanes, …), each keeping its own online softmax state (max, sum and a
 * `vec4` accumulator per 4 value dims), and the subgroup merges them at the end (`subgroupMax`, `subgroupAdd`). No
 * workgroup memory and no barriers: on software rasterizers, where a workgroup is one CPU thread and every barrier
 * switches between its SIMD batches, that is several times faster than the tiled `decode` layout (see the schedule
 * rule). Needs the `subgroups` feature and a subgroup of exactly `subgroupSize` lanes; head dims multiples of 4; f32
 * or f16 pools; paged attention without a mask. With GQA each query head reads its KV head's rows itself.
 */
export interface SubgroupDecodeAttentionVariant {
  /** Variant kind. */
  readonly kind: 'decode-subgroup';
  /** The device's fixed subgroup size: the workgroup size. */
  readonly subgroupSize: number;
}

/** A variant with its tuning. */
export type AttentionVariant = DecodeAttentionVariant | FlashAttentionVariant | SplitKvAttentionVariant | SubgroupDecodeAttentionVariant;

/**
 * What every attention kernel needs to know about the heads and the math.
 * @internal
 */
export interface AttentionHeadsSpec {
  /** Query heads Hq. */
  readonly numHeads: number;
  /** KV heads Hkv (divides Hq; 1 = MQA). */
  readonly numKvHeads: number;
  /** Query/key head dim D (1..256). */
  readonly headDim: number;
  /** Value head dim Dv (default D). */
  readonly valueDim?: number;
  /** Storage type of q, K/V and out. */
  readonly dtype: AttentionDType;
  /** Bottom-right-aligned causal mask. */
  readonly causal: boolean;
  /** Score scale (default `1/sqrt(D)`, rounded to f32 as the op does). */
  readonly scale?: number;
  /** Variant: a kind with default tuning, or a tuning. Default: the schedule rule `chooseAttentionVariant`. */
  readonly variant?: AttentionVariant['kind'] | AttentionVariant;
  /** Upper bound on a workgroup's memory, bytes (default 16384). */
  readonly maxWorkgroupStorage?: number;
  /**
   * Inner loops over the head dim and the key tile have constant trip counts (default true), which GPU compilers
   * unroll. `false` hides the trip counts from the compiler (same results): LLVM-based software rasterizers such as
   * lavapipe then compile the kernel several times faster (seconds instead of tens of seconds for large heads).
   */
  readonly staticLoops?: boolean;
  /** The graph nodes implemented (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * Paged attention for batch 1. Bindings: `q` `[S, Hq, D]`, `k_pool`, `v_pool`, `block_table` (u32), `out`
 * `[S, Hq, Dv]`; params: `seq`, `past` (T = past + seq).
 * @internal
 */
export interface PagedAttentionSpec extends AttentionHeadsSpec {
  /** Tokens per cache block. */
  readonly blockSize: number;
  /** Storage type of the K/V pools (default: `dtype`, the type of q and out); `int8`/`int4` are dequantized on load. */
  readonly kvDType?: KvPoolDType;
  /** New tokens S (default `'seq'`). */
  readonly seq?: DimLike;
  /** Tokens already cached (default `'past'`). */
  readonly past?: DimLike;
  /**
   * Ragged batch (see {@link generatePagedAttentionKernel}): the S rows belong to several sequences; row `r` is at
   * position `positions[r]` of sequence `row_seq[r]`, whose block table is row `row_seq[r]` of `block_table`
   * (`[B, table_stride]`), and attends to that sequence's positions `0 ..= positions[r]`. Only the `decode` layout
   * (one query position per workgroup) takes it, so a row's arithmetic never depends on the other rows.
   */
  readonly ragged?: boolean;
  /** Entries per sequence row of the block table in a ragged batch (default `'table_stride'`, a run-time param). */
  readonly tableStride?: DimLike;
}

/**
 * The optional mask of {@link AttentionSpec}.
 * @internal
 */
export interface AttentionMaskSpec {
  /** `bool` (stored as u32, 0 = hidden) or additive scores in the attention dtype. */
  readonly dtype: 'bool' | AttentionDType;
  /**
   * Shape, rank <= 4, broadcast (right-aligned) to `[B, Hq, S, T]`: each dim is 1 (broadcast) or the matching full dim
   * (a number or the same dim expression as the spec's).
   */
  readonly shape: readonly DimLike[];
}

/**
 * Attention over contiguous K/V. Bindings: `q` `[B, S, Hq, D]`, `k` `[B, T, Hkv, D]`, `v` `[B, T, Hkv, Dv]`,
 * `mask` (when given), `out` `[B, S, Hq, Dv]`; params: the dynamic ones among batch, seq, kvLen and the mask dims.
 * @internal
 */
export interface AttentionSpec extends AttentionHeadsSpec {
  /** Batch B (default 1). */
  readonly batch?: DimLike;
  /** Query length S (default `'seq'`). */
  readonly seq?: DimLike;
  /** Key/value length T (default: the same as `seq`). Causal attention with T < S hides everything from the first S - T rows. */
  readonly kvLen?: DimLike;
  /** Optional mask. */
  readonly mask?: AttentionMaskSpec;
}

/**
 * The kernel that writes S new tokens' keys and values into the paged cache at positions `past .. past+S-1`.
 * @internal
 */
export interface KvCacheWriteSpec {
  /** KV heads Hkv. */
  readonly numKvHeads: number;
  /** Key head dim D. */
  readonly headDim: number;
  /** Value head dim Dv (default D). */
  readonly valueDim?: number;
  /** Tokens per cache block. */
  readonly blockSize: number;
  /** Storage type of the pools: a float type (converted on store), or `int8`/`int4` (quantized on store). */
  readonly dtype: KvPoolDType;
  /** Storage type of the new keys/values (default: the pools', f32 for integer pools). */
  readonly sourceDType?: AttentionDType;
  /** New tokens S (default `'seq'`). */
  readonly seq?: DimLike;
  /** Tokens already cached (default `'past'`). */
  readonly past?: DimLike;
  /**
   * Ragged batch: token `s` goes to position `positions[s]` of sequence `row_seq[s]` (its block table is row
   * `row_seq[s]` of `block_table`, `[B, table_stride]`) instead of position `past + s` of the one sequence.
   */
  readonly ragged?: boolean;
  /** Entries per sequence row of the block table in a ragged batch (default `'table_stride'`). */
  readonly tableStride?: DimLike;
  /** Lanes per workgroup (default 64). */
  readonly workgroupSize?: 64 | 128 | 256;
  /**
   * Where the new values' heads sit in a wider source (default: v_new is `[S, Hkv, Dv]` itself): v_new is heads
   * `firstHead .. firstHead + Hkv - 1` of a `[S, numHeads, Dv]` buffer, such as the merged QKV projection. The kernel
   * reads them in place (the head slice folded into its load).
   */
  readonly valueSource?: HeadWindow;
  /** The same for the new keys (default: k_new is `[S, Hkv, D]`). */
  readonly keySource?: HeadWindow;
  /** The graph nodes implemented, for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * Largest head dim the kernels accept.
 * @internal
 */
export const MAX_ATTENTION_HEAD_DIM = 256;
/**
 * Default workgroup-memory budget (WebGPU's default `maxComputeWorkgroupStorageSize`).
 * @internal
 */
export const DEFAULT_WORKGROUP_STORAGE = 16384;

// ---------------------------------------------------------------------------------------------------------------
// dims and params

function checkHeads(spec: AttentionHeadsSpec): { Hq: number; Hkv: number; G: number; D: number; Dv: number; scale: number } {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = spec;
  const Dv = spec.valueDim ?? D;
  const pos = (n: number): boolean => Number.isInteger(n) && n > 0;
  if (!pos(Hq) || !pos(Hkv) || Hq % Hkv !== 0) throw new ShapeError('attention', `query heads (${Hq}) must be a positive multiple of KV heads (${Hkv})`);
  for (const [name, d] of [['head dim', D], ['value dim', Dv]] as const)
    if (!pos(d) || d > MAX_ATTENTION_HEAD_DIM) throw new ShapeError('attention', `${name} ${d} is not in 1..${MAX_ATTENTION_HEAD_DIM}`);
  if (spec.dtype !== 'f32' && spec.dtype !== 'f16') throw new InputError(`attention storage must be f32 or f16, got ${String(spec.dtype)}`);
  const scale = Math.fround(spec.scale ?? 1 / Math.sqrt(D));
  if (!Number.isFinite(scale)) throw new InputError(`attention scale must be finite, got ${spec.scale}`);
  return { Hq, Hkv, G: Hq / Hkv, D, Dv, scale };
}

// ---------------------------------------------------------------------------------------------------------------
// shared kernel body pieces

/** Everything the two attention bodies share: sizes, addressing functions, bindings. */
interface Core {
  readonly mode: 'paged' | 'contiguous';
  readonly Hq: number;
  readonly Hkv: number;
  readonly G: number;
  readonly D: number;
  readonly Dv: number;
  readonly dtype: AttentionDType;
  readonly causal: boolean;
  readonly scale: number;
  readonly params: KernelParams;
  /** WGSL expressions of S, T, batch. */
  readonly seqExpr: string;
  readonly kvLenExpr: string;
  /** Grid expressions of S and batch. */
  readonly seqGrid: GridExpr;
  readonly batchGrid: GridExpr;
  /** Binding declarations and list (params are appended later). */
  readonly decls: string[];
  readonly bindings: KernelBinding[];
  /** WGSL helper functions (q loader, K/V addressing, mask). */
  readonly functions: string[];
  /** Mask kind, when there is a mask. */
  readonly mask?: 'bool' | 'additive';
  readonly maskDType?: 'bool' | AttentionDType;
  /** Storage type of K and V (paged pools may differ from q/out; integer pools are dequantized on load). */
  readonly kvDType: KvPoolDType;
  /** Tokens per cache block (paged only). */
  readonly blockSize?: number;
  /** Ragged batch of sequences (paged only): per-row positions and sequence index, per-sequence block tables. */
  readonly ragged?: boolean;
  /** WGSL statements run at the start of `main` after `kv_len` (the ragged kernel's table base). */
  readonly prologue?: readonly string[];
  /** Constant loop trip counts (see {@link AttentionHeadsSpec.staticLoops}). */
  readonly staticLoops: boolean;
  readonly budget: number;
  readonly nodes: readonly string[];
  readonly describe: string;
}

function storageDecl(binding: number, name: string, type: string, access: 'read' | 'read_write', comment: string): string {
  return `@group(0) @binding(${binding}) var<storage, ${access}> ${name}: array<${type}>; // ${comment}`;
}

function toF32(dtype: string, e: string): string {
  return dtype === 'f32' ? e : `f32(${e})`;
}

/** Common constants and helper functions. */
function coreFunctions(c: { dtype: AttentionDType; kvDType: KvPoolDType; causal: boolean; mode: 'paged' | 'contiguous'; kName: string; vName: string; ragged?: boolean; blockSize?: number; heads?: number; dims?: [number, number]; noOut?: boolean }): string[] {
  const kv = c.ragged
    ? [
        '// first block-table entry of this workgroup\'s sequence (set in main)',
        'var<private> table_base: u32;',
        '// physical row of token position j of that sequence: its table[j / BLOCK_SIZE], slot j % BLOCK_SIZE',
        'fn kv_slot(batch: u32, j: u32, kv_len: u32) -> u32 {',
        '  return block_table[table_base + j / BLOCK_SIZE] * BLOCK_SIZE + j % BLOCK_SIZE;',
        '}',
      ]
    : c.mode === 'paged'
    ? [
        '// physical row of token position j: block table[j / BLOCK_SIZE], slot j % BLOCK_SIZE',
        'fn kv_slot(batch: u32, j: u32, kv_len: u32) -> u32 {',
        '  return block_table[j / BLOCK_SIZE] * BLOCK_SIZE + j % BLOCK_SIZE;',
        '}',
      ]
    : [
        '// row of key/value position j of a batch element in the contiguous [B, T, Hkv, *] buffers',
        'fn kv_slot(batch: u32, j: u32, kv_len: u32) -> u32 {',
        '  return batch * kv_len + j;',
        '}',
      ];
  return [
    ...kv,
    ...(isQuantizedKv(c.kvDType)
      ? quantizedPoolLoads(c.kvDType, c.blockSize!, c.heads!, c.dims!)
      : [`fn load_k(i: u32) -> f32 { return ${toF32(c.kvDType, `${c.kName}[i]`)}; }`, `fn load_v(i: u32) -> f32 { return ${toF32(c.kvDType, `${c.vName}[i]`)}; }`]),
    `fn load_q(batch: u32, row: u32, head: u32, d: u32, seq_len: u32) -> f32 {`,
    `  return ${toF32(c.dtype, 'q[((batch * seq_len + row) * NUM_HEADS + head) * HEAD_DIM + d]')};`,
    `}`,
    ...(c.noOut
      ? []
      : [
          `fn store_out(batch: u32, row: u32, head: u32, d: u32, seq_len: u32, value: f32) {`,
          `  out[((batch * seq_len + row) * NUM_HEADS + head) * VALUE_DIM + d] = ${c.dtype === 'f16' ? 'f16(value)' : 'value'};`,
          `}`,
        ]),
    c.ragged
      ? ['// ragged batch: kv_len is this row\'s own position + 1 (causal within its sequence)', 'fn row_end(i: u32, seq_len: u32, kv_len: u32) -> u32 { return kv_len; }'].join('\n')
      : c.causal
      ? [
          '// keys 0 .. row_end(i) - 1 are visible to query row i: j <= i + (T - S), bottom-right aligned',
          'fn row_end(i: u32, seq_len: u32, kv_len: u32) -> u32 {',
          '  return select(0u, min(kv_len, i + 1u + kv_len - seq_len), i + 1u + kv_len > seq_len);',
          '}',
        ].join('\n')
      : ['// not causal: every key is visible', 'fn row_end(i: u32, seq_len: u32, kv_len: u32) -> u32 { return kv_len; }'].join('\n'),
  ];
}

/** Constants of an integer pool's layout (see `src/ir/kv-cache-quant.ts`), shared by the write and attention kernels. */
function quantizedPoolConstants(dtype: QuantizedKvDType, blockSize: number, heads: number, [D, Dv]: [number, number]): string[] {
  const { bits, perWord, qmax } = kvQuantFormat(dtype);
  const k = kvPoolLayout(dtype, blockSize, heads, D);
  const v = kvPoolLayout(dtype, blockSize, heads, Dv);
  return [
    `// ${dtype} KV pools: per block [BLOCK_SIZE][Hkv][*_ROW_WORDS] words of ${bits}-bit values, then [BLOCK_SIZE][SCALE_WORDS]`,
    '// words of bfloat16 scales (two heads per word, even head in the low half): one scale per (token, head)',
    `const KV_BITS: u32 = ${bits}u; // bits per stored value`,
    `const KV_PER_WORD: u32 = ${perWord}u; // values per u32 word`,
    `const KV_QMAX: f32 = ${qmax}.0; // stored values are in [-KV_QMAX, KV_QMAX]`,
    `const K_ROW_WORDS: u32 = ${k.rowWords}u; // words of one (token, head) key vector`,
    `const V_ROW_WORDS: u32 = ${v.rowWords}u; // words of one (token, head) value vector`,
    `const SCALE_WORDS: u32 = ${k.scaleWords}u; // scale words per token`,
    `const K_BLOCK_WORDS: u32 = ${k.blockWords}u; // words per key-pool block`,
    `const V_BLOCK_WORDS: u32 = ${v.blockWords}u; // words per value-pool block`,
  ];
}

/** `load_k(slot, head, d)` / `load_v(...)`: element d of a cached (token, head) vector of an integer pool, dequantized. */
function quantizedPoolLoads(dtype: QuantizedKvDType, blockSize: number, heads: number, dims: [number, number]): string[] {
  const load = (fn: string, pool: string, P: 'K' | 'V'): string[] => [
    `fn ${fn}(slot: u32, head: u32, d: u32) -> f32 {`,
    `  let base = (slot / BLOCK_SIZE) * ${P}_BLOCK_WORDS;`,
    '  let t = slot % BLOCK_SIZE;',
    `  let w = ${pool}[base + (t * NUM_KV_HEADS + head) * ${P}_ROW_WORDS + d / KV_PER_WORD];`,
    '  let q = extractBits(bitcast<i32>(w), (d % KV_PER_WORD) * KV_BITS, KV_BITS); // sign-extended',
    `  let sw = ${pool}[base + BLOCK_SIZE * NUM_KV_HEADS * ${P}_ROW_WORDS + t * SCALE_WORDS + head / 2u];`,
    '  return f32(q) * bitcast<f32>((sw >> ((head & 1u) * 16u)) << 16u); // q * scale (bfloat16 bits as f32)',
    '}',
  ];
  return [...quantizedPoolConstants(dtype, blockSize, heads, dims), ...load('load_k', 'k_pool', 'K'), ...load('load_v', 'v_pool', 'V')];
}

/** Mask helpers for the contiguous kernel. */
function maskFunctions(mask: AttentionMaskSpec, params: KernelParams, full: [number | string, number | string, number | string, number | string]): string[] {
  if (mask.shape.length > 4) throw new ShapeError('attention', `mask rank ${mask.shape.length} is more than 4`);
  const dims = [...Array<DimLike>(4 - mask.shape.length).fill(1), ...mask.shape].map((d, i) => KernelParams.canon(d, `mask dim ${i}`));
  dims.forEach((d, i) => {
    if (d !== 1 && d !== full[i] && !(typeof d === 'number' && typeof full[i] === 'string'))
      throw new ShapeError('attention', `mask dim ${i} (${d}) must be 1 or ${full[i]}`);
  });
  // row-major strides of the mask's own shape; broadcast dims get stride 0
  const strides: string[] = new Array<string>(4);
  let acc = '1u';
  for (let i = 3; i >= 0; i--) {
    strides[i] = dims[i] === 1 ? '0u' : acc;
    if (dims[i] !== 1) acc = acc === '1u' ? params.ref(dims[i]) : `${acc} * ${params.ref(dims[i])}`;
  }
  const idx = `batch * (${strides[0]}) + head * (${strides[1]}) + i * (${strides[2]}) + j * (${strides[3]})`;
  const lines = [`// mask broadcast from [${dims.join(', ')}] to [B, Hq, S, T]`, `fn mask_index(batch: u32, head: u32, i: u32, j: u32) -> u32 { return ${idx}; }`];
  if (mask.dtype === 'bool') {
    lines.push('fn mask_allows(batch: u32, head: u32, i: u32, j: u32) -> bool { return mask[mask_index(batch, head, i, j)] != 0u; }');
    lines.push('fn mask_score(s: f32, batch: u32, head: u32, i: u32, j: u32) -> f32 { return s; }');
  } else {
    const load = toF32(mask.dtype, 'mask[mask_index(batch, head, i, j)]');
    lines.push(`fn mask_add(batch: u32, head: u32, i: u32, j: u32) -> f32 { return ${load}; }`);
    lines.push('// an additive -inf hides the key (compared by bits: the value itself is not representable in WGSL constants)');
    lines.push('fn mask_allows(batch: u32, head: u32, i: u32, j: u32) -> bool { return bitcast<u32>(mask_add(batch, head, i, j)) != NEG_INF_BITS; }');
    lines.push('fn mask_score(s: f32, batch: u32, head: u32, i: u32, j: u32) -> f32 { return s + mask_add(batch, head, i, j); }');
  }
  return lines;
}

function constants(c: Core, extra: [string, number, string][]): string[] {
  const rows: [string, number | string, string][] = [
    ['NUM_HEADS', c.Hq, 'query heads Hq'],
    ['NUM_KV_HEADS', c.Hkv, 'KV heads Hkv'],
    ['GROUP_SIZE', c.G, 'query heads per KV head'],
    ['HEAD_DIM', c.D, 'query/key head dim D'],
    ['VALUE_DIM', c.Dv, 'value head dim Dv'],
    ...extra,
  ];
  const out = rows.map(([n, v, doc]) => `const ${n}: u32 = ${v}u; // ${doc}`);
  out.push(`const SCALE: f32 = ${literal('f32', c.scale)}; // score scale`);
  out.push('const NEG_BIG: f32 = bitcast<f32>(0xff7fffffu); // -FLT_MAX: the running max before any visible key');
  if (c.mask === 'additive') out.push('const NEG_INF_BITS: u32 = 0xff800000u; // bits of f32 -inf');
  return out;
}

function header(c: Core, variant: string, lines: string[]): string[] {
  return [
    `// tensorwright kernel: attention (${c.describe}, ${variant})`,
    `//   q [B, S, Hq=${c.Hq}, D=${c.D}], K/V ${c.mode === 'paged' ? 'through the block table' : `[B, T, Hkv=${c.Hkv}, ${c.D}/${c.Dv}]`}, out [B, S, ${c.Hq}, Dv=${c.Dv}]; ${c.causal ? 'causal (bottom-right aligned)' : 'not causal'}${c.mask ? `, ${c.mask} mask` : ''}, ${c.dtype} storage${c.kvDType !== c.dtype ? ` (${c.kvDType} K/V)` : ''}, f32 math`,
    ...lines.map((l) => `//   ${l}`),
  ];
}

/** Visibility and score of key `j` for head `head` (mask-aware), as WGSL statements setting `vis` and `sc`. */
function scoreStatements(c: Core, indent: string, dot: string, head: string, row: string, j: string, vis: string, sc: string): string[] {
  if (!c.mask) return [`${indent}${sc} = ${dot} * SCALE;`, `${indent}${vis} = true;`];
  return [
    `${indent}${vis} = mask_allows(batch, ${head}, ${row}, ${j});`,
    `${indent}${sc} = mask_score(${dot} * SCALE, batch, ${head}, ${row}, ${j});`,
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// the tiled body both variants share

/** How a variant maps the rows of a workgroup (one query vector each) onto query positions and heads. */
interface RowLayout {
  /** Variant name. */
  readonly name: string;
  /** Rows (query vectors) per workgroup. */
  readonly rows: number;
  /** Lanes per row. */
  readonly rowLanes: number;
  /** Keys per staged K/V tile. */
  readonly keyTile: number;
  /** Whether the rows' query vectors are staged in workgroup memory. */
  readonly stageQuery: boolean;
  /** Header lines describing the layout. */
  readonly describe: string[];
  /** Extra named constants. */
  readonly consts: [string, number, string][];
  /** WGSL statements defining kv_head, row (query position), head, row_ok, my_end and tile_end for lane row r. */
  readonly setup: string[];
  /** WGSL expressions of staged row rr's query position, head, and validity. */
  readonly stage: { readonly pos: string; readonly head: string; readonly ok: string };
  /** Dispatch grid. */
  readonly grid: [GridExpr, GridExpr, GridExpr];
  /** WGSL expression of the batch element (default `wid.z`). */
  readonly batch?: string;
  /** WGSL expression of the first key the workgroup visits, a multiple of the key tile (default `0u`). */
  readonly keyStart?: string;
  /** WGSL statements storing a row's state (default: `acc / l` to `out`); see {@link splitKvLayout}. */
  readonly store?: string[];
}

/** Workgroup memory, in bytes, of the tiled body. */
function tiledBytes(c: Core, rows: number, keyTile: number, stageQuery: boolean): number {
  return 4 * (keyTile * Math.max(c.D, c.Dv) + 2 * rows * keyTile + (stageQuery ? rows * c.D : 0));
}

/** The largest key tile from 32 down that fits the budget with `rows` rows (0 when none does). */
function fitKeyTile(c: Core, rows: number, stageQuery: boolean): number {
  for (const bk of [32, 16, 8, 4, 2, 1]) if (tiledBytes(c, rows, bk, stageQuery) <= c.budget) return bk;
  return 0;
}

function decodeLayout(c: Core, v: DecodeAttentionVariant): RowLayout {
  const LPR = v.rowLanes ?? 32;
  if (!Number.isInteger(LPR) || LPR < 1 || LPR > 256) throw new InputError(`decode attention: rowLanes must be in 1..256, got ${LPR}`);
  const fits = (g: number): boolean => g * LPR <= 256 && fitKeyTile(c, g, true) > 0;
  let GC: number;
  if (v.headsPerWorkgroup !== undefined) {
    GC = v.headsPerWorkgroup;
    if (!Number.isInteger(GC) || GC < 1 || c.G % GC !== 0) throw new InputError(`decode attention: headsPerWorkgroup ${GC} must divide the group size ${c.G}`);
    if (GC * LPR > 256) throw new InputError(`decode attention: ${GC} heads x ${LPR} lanes exceeds 256 lanes`);
  } else {
    GC = 1;
    for (let g = Math.min(8, c.G); g >= 1; g--)
      if (c.G % g === 0 && fits(g)) {
        GC = g;
        break;
      }
  }
  const stageQuery = fitKeyTile(c, GC, true) > 0;
  const BK = v.keyTile ?? fitKeyTile(c, GC, stageQuery);
  if (!Number.isInteger(BK) || BK < 1 || tiledBytes(c, GC, BK, stageQuery) > c.budget)
    throw new ShapeError('attention', `decode: no key tile fits ${c.budget} bytes of workgroup memory (D=${c.D}, Dv=${c.Dv}, ${GC} heads)`);
  const CHUNKS = c.G / GC;
  return {
    name: `decode-h${GC}-l${LPR}-k${BK}${stageQuery ? '-qs' : ''}`,
    rows: GC,
    rowLanes: LPR,
    keyTile: BK,
    stageQuery,
    describe: [
      `decode: one workgroup per (query position, KV head${CHUNKS > 1 ? `, chunk of ${GC} of its ${c.G} query heads` : ''}); its ${GC} row(s) are`,
      `the query heads sharing that KV head, so every staged K/V tile serves the whole group; ${LPR} lanes per head.`,
    ],
    consts: [['HEAD_CHUNKS', CHUNKS, 'workgroups per KV head and query position']],
    setup: [
      '  let kv_head = wid.x / HEAD_CHUNKS;',
      '  let head0 = kv_head * GROUP_SIZE + (wid.x % HEAD_CHUNKS) * Q_ROWS; // first query head of this workgroup',
      '  let head = head0 + r;',
      '  let row = wid.y; // query position, the same for every row',
      '  let row_ok = true;',
      '  let my_end = row_end(row, seq_len, kv_len); // keys this row sees',
      '  let tile_end = my_end; // keys any row sees',
    ],
    stage: { pos: 'row', head: 'head0 + rr', ok: 'true' },
    grid: [c.Hkv * CHUNKS, c.seqGrid, c.batchGrid],
  };
}

/**
 * The `split-kv` layout: the `decode` layout over one split of the keys (workgroup z), its state stored unnormalised
 * to `partials` `[S, Hq, SPLITS, VALUE_DIM + 2]` (the accumulator, then max and sum).
 */
function splitKvLayout(c: Core, v: SplitKvAttentionVariant): RowLayout {
  const d = decodeLayout(c, { kind: 'decode', rowLanes: v.rowLanes, headsPerWorkgroup: v.headsPerWorkgroup, keyTile: v.keyTile });
  const splits = v.splits ?? 8;
  if (!Number.isInteger(splits) || splits < 1 || splits > 256) throw new InputError(`split-kv attention: splits must be an integer in 1..256, got ${splits}`);
  const want = v.splitKeys ?? 256;
  if (!Number.isInteger(want) || want < 1) throw new InputError(`split-kv attention: splitKeys must be a positive integer, got ${want}`);
  const SK = Math.ceil(want / d.keyTile) * d.keyTile;
  return {
    ...d,
    name: `split-kv-s${splits}x${SK}-${d.name.replace(/^decode-/, '')}`,
    describe: [
      ...d.describe,
      `split-kv: the keys are cut into SPLITS splits of SPLIT_KEYS (the last split takes the rest), one workgroup per split`,
      '(grid z); each writes its unnormalised state to partials, and the merge kernel combines the splits.',
    ],
    consts: [...d.consts, ['SPLITS', splits, 'key splits per query position and KV head'], ['SPLIT_KEYS', SK, 'keys per split (a multiple of KEY_TILE)'], ['PART_STRIDE', c.Dv + 2, 'floats per partial state: acc[VALUE_DIM], max, sum']],
    setup: [
      ...d.setup.filter((l) => !/let (my_end|tile_end) /.test(l)),
      '  let split = wid.z;',
      '  let key_start = split * SPLIT_KEYS;',
      '  // keys of this split: SPLIT_KEYS from key_start, or every key from key_start for the last split (empty past the row\'s keys)',
      '  let my_end = select(min(row_end(row, seq_len, kv_len), key_start + SPLIT_KEYS), row_end(row, seq_len, kv_len), split + 1u == SPLITS);',
      '  let tile_end = my_end; // keys any row sees',
    ],
    grid: [d.grid[0], d.grid[1], splits],
    batch: '0u',
    keyStart: 'key_start',
    store: [
      '  // the unnormalised state of this split (an empty split: max NEG_BIG, sum 0, which the merge skips)',
      '  let part = ((row * NUM_HEADS + head) * SPLITS + split) * PART_STRIDE;',
      `  for (var dd = 0u; dd < DIMS_PER_LANE; dd++) {`,
      '    let d = t + dd * ROW_LANES;',
      ...(c.Dv % d.rowLanes !== 0 ? ['    if (d >= VALUE_DIM) { break; }'] : []),
      '    partials[part + d] = acc[dd];',
      '  }',
      '  if (t == 0u) {',
      '    partials[part + VALUE_DIM] = m;',
      '    partials[part + VALUE_DIM + 1u] = l;',
      '  }',
    ],
  };
}

function flashLayout(c: Core, v: FlashAttentionVariant): RowLayout {
  const BQ = v.queryRows ?? 16;
  const LPR = v.rowLanes ?? 8;
  if (!Number.isInteger(BQ) || !Number.isInteger(LPR) || BQ < 1 || LPR < 1 || BQ * LPR > 256)
    throw new InputError(`prefill-flash attention: queryRows x rowLanes (${BQ} x ${LPR}) must be positive integers with a product <= 256`);
  const stageQuery = v.stageQuery ?? fitKeyTile(c, BQ, true) >= Math.min(fitKeyTile(c, BQ, false), 16);
  const BK = v.keyTile ?? fitKeyTile(c, BQ, stageQuery);
  if (!Number.isInteger(BK) || BK < 1 || tiledBytes(c, BQ, BK, stageQuery) > c.budget)
    throw new ShapeError('attention', `prefill-flash: no key tile fits ${c.budget} bytes of workgroup memory (D=${c.D}, Dv=${c.Dv}, ${BQ} rows)`);
  return {
    name: `prefill-flash-q${BQ}-k${BK}-l${LPR}${stageQuery ? '-qs' : ''}`,
    rows: BQ,
    rowLanes: LPR,
    keyTile: BK,
    stageQuery,
    describe: [
      `flash attention: one workgroup per (${BQ} query positions, query head); ${LPR} lanes per position; key tiles past`,
      'the causal diagonal of the last position are never visited.',
    ],
    consts: [],
    setup: [
      '  let head = wid.y;',
      '  let kv_head = head / GROUP_SIZE;',
      '  let q0 = wid.x * Q_ROWS; // first query position of this workgroup',
      '  let row = q0 + r;',
      '  let row_ok = row < seq_len;',
      '  let my_end = select(0u, row_end(row, seq_len, kv_len), row_ok); // keys this row sees',
      '  let tile_end = row_end(min(q0 + Q_ROWS, seq_len) - 1u, seq_len, kv_len); // keys any row sees',
    ],
    stage: { pos: 'q0 + rr', head: 'head', ok: 'q0 + rr < seq_len' },
    grid: [{ ceilDiv: [c.seqGrid, BQ] }, c.Hq, c.batchGrid],
  };
}

/**
 * The tiled body: per key tile, stage K; each row's lanes score its keys; new running max per row; probabilities;
 * stage V over K; accumulate p * V (lanes split the value dims). Four barriers per tile.
 */
function tiledKernel(c: Core, L: RowLayout): { wgsl: string; grid: [GridExpr, GridExpr, GridExpr]; variant: string } {
  const { rows: R, rowLanes: LPR, keyTile: BK, stageQuery } = L;
  const W = Math.max(c.D, c.Dv);
  const SPL = Math.ceil(BK / LPR);
  const DPL = Math.ceil(c.Dv / LPR);
  const keyGuard = BK % LPR !== 0;
  const dimGuard = c.Dv % LPR !== 0;
  const hdr = header(c, L.name, [
    ...L.describe,
    `K and V tiles of ${BK} keys are staged in workgroup memory; online softmax per row (running max m, sum l, acc).`,
  ]);
  const qAt = stageQuery ? 'sh_q[r * HEAD_DIM + d]' : 'load_q(batch, row, head, d, seq_len)';
  const guardKey = (stmt: string): string => (keyGuard ? `if (kk < KEY_TILE) { ${stmt} }` : stmt);
  // loop bounds: the constants, or the same values through an expression the compiler cannot fold
  const opaque: [string, string][] = [
    ['HEAD_DIM', 'n_head_dim'],
    ['KEY_TILE', 'n_key_tile'],
    ['DIMS_PER_LANE', 'n_dims'],
    ['SCORES_PER_LANE', 'n_scores'],
  ];
  const bound = (name: string): string => (c.staticLoops ? name : opaque.find(([k]) => k === name)![1]);
  const boundDecls = c.staticLoops
    ? []
    : [
        '  // loop bounds hidden from the compiler (min(X, kv_len + X) == X) so software compilers do not unroll',
        ...opaque.map(([k, v]) => `  let ${v} = min(${k}, kv_len + ${k});`),
      ];
  const body = [
    ...constants(c, [
      ['WORKGROUP_SIZE', R * LPR, 'lanes = Q_ROWS * ROW_LANES'],
      ['Q_ROWS', R, 'query vectors (rows) per workgroup'],
      ['ROW_LANES', LPR, 'lanes per row'],
      ['KEY_TILE', BK, 'keys per staged K/V tile'],
      ['SCORES_PER_LANE', SPL, 'keys of a tile each lane scores'],
      ['DIMS_PER_LANE', DPL, 'value dims each lane accumulates'],
      ...L.consts,
      ...(c.mode === 'paged' ? ([['BLOCK_SIZE', c.blockSize!, 'tokens per cache block']] as [string, number, string][]) : []),
    ]),
    '',
    ...c.decls,
    paramsStruct(c.params.list, c.bindings.length),
    `var<workgroup> sh_kv: array<f32, ${BK * W}>; // the K tile [key][D], then the V tile [key][Dv]`,
    `var<workgroup> sh_s: array<f32, ${R * BK}>; // [row][key] scores`,
    `var<workgroup> sh_p: array<f32, ${R * BK}>; // [row][key] probabilities exp(s - m)`,
    ...(stageQuery ? [`var<workgroup> sh_q: array<f32, ${R * c.D}>; // [row][d] query vectors`] : []),
    '',
    ...c.functions,
    '',
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    `  let seq_len = ${c.seqExpr};`,
    `  let kv_len = ${c.kvLenExpr};`,
    ...(c.prologue ?? []),
    `  let batch = ${L.batch ?? 'wid.z'};`,
    ...boundDecls,
    '  let r = lid / ROW_LANES; // this lane\'s row',
    '  let t = lid % ROW_LANES; // and its place in the row',
    ...L.setup,
    ...(stageQuery
      ? [
          '  for (var e = lid; e < Q_ROWS * HEAD_DIM; e += WORKGROUP_SIZE) {',
          '    let rr = e / HEAD_DIM;',
          ...(L.stage.ok === 'true'
            ? [`    sh_q[e] = load_q(batch, ${L.stage.pos}, ${L.stage.head}, e % HEAD_DIM, seq_len);`]
            : [
                '    var x = 0.0;',
                `    if (${L.stage.ok}) { x = load_q(batch, ${L.stage.pos}, ${L.stage.head}, e % HEAD_DIM, seq_len); }`,
                '    sh_q[e] = x;',
              ]),
          '  }',
        ]
      : []),
    '',
    '  var m = NEG_BIG; // running max of this row',
    '  var l = 0.0;     // running sum of exp(s - m)',
    '  var acc: array<f32, DIMS_PER_LANE>; // running sum of exp(s - m) * v for dims t, t + ROW_LANES, ...',
    `  for (var base = ${L.keyStart ?? '0u'}; base < tile_end; base += KEY_TILE) {`,
    '    // stage the K tile (rows past tile_end are zero)',
    '    for (var e = lid; e < KEY_TILE * HEAD_DIM; e += WORKGROUP_SIZE) {',
    '      let j = base + e / HEAD_DIM;',
    '      var x = 0.0;',
    `      if (j < tile_end) { x = ${isQuantizedKv(c.kvDType) ? 'load_k(kv_slot(batch, j, kv_len), kv_head, e % HEAD_DIM)' : 'load_k((kv_slot(batch, j, kv_len) * NUM_KV_HEADS + kv_head) * HEAD_DIM + e % HEAD_DIM)'}; }`,
    '      sh_kv[e] = x;',
    '    }',
    '    workgroupBarrier();',
    '    // scores of this lane\'s keys t, t + ROW_LANES, ... (explicitly reset: loop-local vars are not re-zeroed everywhere)',
    '    var s: array<f32, SCORES_PER_LANE>;',
    '    var vis: array<bool, SCORES_PER_LANE>;',
    `    for (var c = 0u; c < ${bound('SCORES_PER_LANE')}; c++) {`,
    '      let kk = t + c * ROW_LANES;',
    '      let j = base + kk;',
    '      s[c] = 0.0;',
    '      vis[c] = false;',
    `      if (${keyGuard ? 'kk < KEY_TILE && ' : ''}j < my_end) {`,
    '        var dot = 0.0;',
    `        for (var d = 0u; d < ${bound('HEAD_DIM')}; d++) { dot += ${qAt} * sh_kv[kk * HEAD_DIM + d]; }`,
    ...scoreStatements(c, '        ', 'dot', 'head', 'row', 'j', 'vis[c]', 's[c]'),
    '      }',
    `      ${guardKey('sh_s[r * KEY_TILE + kk] = select(NEG_BIG, s[c], vis[c]);')}`,
    '    }',
    '    workgroupBarrier();',
    '    // new running max of the row; rescale the state; probabilities of this lane\'s keys',
    '    var mx = m;',
    `    for (var kk = 0u; kk < ${bound('KEY_TILE')}; kk++) { mx = max(mx, sh_s[r * KEY_TILE + kk]); }`,
    '    let alpha = exp(m - mx);',
    '    m = mx;',
    '    l *= alpha;',
    `    for (var dd = 0u; dd < ${bound('DIMS_PER_LANE')}; dd++) { acc[dd] *= alpha; }`,
    `    for (var c = 0u; c < ${bound('SCORES_PER_LANE')}; c++) {`,
    '      let kk = t + c * ROW_LANES;',
    `      ${guardKey('sh_p[r * KEY_TILE + kk] = select(0.0, exp(s[c] - mx), vis[c]);')}`,
    '    }',
    '    // stage the V tile over the K tile (every lane is past its scores)',
    '    for (var e = lid; e < KEY_TILE * VALUE_DIM; e += WORKGROUP_SIZE) {',
    '      let j = base + e / VALUE_DIM;',
    '      var x = 0.0;',
    `      if (j < tile_end) { x = ${isQuantizedKv(c.kvDType) ? 'load_v(kv_slot(batch, j, kv_len), kv_head, e % VALUE_DIM)' : 'load_v((kv_slot(batch, j, kv_len) * NUM_KV_HEADS + kv_head) * VALUE_DIM + e % VALUE_DIM)'}; }`,
    '      sh_kv[e] = x;',
    '    }',
    '    workgroupBarrier();',
    '    // acc += p * V over the tile',
    `    for (var kk = 0u; kk < ${bound('KEY_TILE')}; kk++) {`,
    '      let p = sh_p[r * KEY_TILE + kk];',
    '      l += p;',
    `      for (var dd = 0u; dd < ${bound('DIMS_PER_LANE')}; dd++) {`,
    '        let d = t + dd * ROW_LANES;',
    ...(dimGuard ? ['        if (d >= VALUE_DIM) { break; }'] : []),
    '        acc[dd] += p * sh_kv[kk * VALUE_DIM + d];',
    '      }',
    '    }',
    '    workgroupBarrier();',
    '  }',
    ...(L.store ?? [
      '  if (row_ok) {',
      `    for (var dd = 0u; dd < ${bound('DIMS_PER_LANE')}; dd++) {`,
      '      let d = t + dd * ROW_LANES;',
      ...(dimGuard ? ['      if (d >= VALUE_DIM) { break; }'] : []),
      '      store_out(batch, row, head, d, seq_len, select(0.0, acc[dd] / l, l > 0.0));',
      '    }',
      '  }',
    ]),
    '}',
  ];
  return { wgsl: assemble(c, hdr, body), grid: L.grid, variant: L.name };
}
/** The features an attention kernel needs: f16 when q, K/V or the mask are stored as f16; subgroups when it says so. */
function coreFeatures(c: Core, subgroups = false): KernelFeature[] {
  return kernelFeatures({ f16: c.dtype === 'f16' || c.kvDType === 'f16' || c.maskDType === 'f16', subgroups });
}
function assemble(c: Core, hdr: string[], body: string[], subgroups = false): string {
  const features = coreFeatures(c, subgroups);
  return [...enableDirectives(features), ...(features.length ? [''] : []), ...hdr, '', ...body, ''].join('\n');
}

function resolveVariant(spec: AttentionHeadsSpec, seq: DimLike): AttentionVariant {
  const v = spec.variant ?? chooseAttentionVariant(seq);
  return typeof v === 'string' ? ({ kind: v } as AttentionVariant) : v;
}

/** The `decode-subgroup` body ({@link SubgroupDecodeAttentionVariant}). */
function subgroupKernel(c: Core, v: SubgroupDecodeAttentionVariant, family: string): KernelSource {
  const LANES = v.subgroupSize;
  if (!Number.isInteger(LANES) || LANES < 1 || LANES > 128) throw new InputError(`decode-subgroup attention: subgroupSize must be in 1..128, got ${LANES}`);
  if (c.mode !== 'paged' || c.mask) throw new InputError('decode-subgroup attention reads a paged KV cache without a mask');
  if (isQuantizedKv(c.kvDType)) throw new InputError(`decode-subgroup attention reads f32 or f16 pools, not ${c.kvDType}`);
  if (c.D % 4 !== 0 || c.Dv % 4 !== 0) throw new ShapeError('attention', `decode-subgroup: head dims must be multiples of 4, got D=${c.D}, Dv=${c.Dv}`);
  const name = `decode-subgroup-sg${LANES}`;
  const bound = (k: string): string => (c.staticLoops ? k : `n_${k.toLowerCase()}`);
  const quad = (f: string, i: string): string => `vec4<f32>(${f}(${i}), ${f}(${i} + 1u), ${f}(${i} + 2u), ${f}(${i} + 3u))`;
  const hdr = header(c, name, [
    'decode-subgroup: one workgroup of one subgroup per (query position, query head); lane i takes keys i, i + LANES, ...',
    'with its own online softmax state, and the subgroup merges the states at the end. No workgroup memory, no barriers.',
  ]);
  const body = [
    ...constants(c, [
      ['LANES', LANES, 'the subgroup, and the workgroup'],
      ['D4', c.D / 4, 'vec4s of a query/key vector'],
      ['DV4', c.Dv / 4, 'vec4s of a value vector'],
      ['BLOCK_SIZE', c.blockSize!, 'tokens per cache block'],
    ]),
    '',
    ...c.decls,
    paramsStruct(c.params.list, c.bindings.length),
    '',
    ...c.functions,
    '',
    '@compute @workgroup_size(LANES)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    `  let seq_len = ${c.seqExpr};`,
    `  let kv_len = ${c.kvLenExpr};`,
    ...(c.prologue ?? []),
    '  let batch = wid.z;',
    ...(c.staticLoops ? [] : ['  // loop bounds hidden from the compiler (min(X, kv_len + X) == X) so software compilers do not unroll', '  let n_d4 = min(D4, kv_len + D4);', '  let n_dv4 = min(DV4, kv_len + DV4);']),
    '  let head = wid.x;',
    '  let kv_head = head / GROUP_SIZE;',
    '  let row = wid.y; // query position',
    '  let my_end = row_end(row, seq_len, kv_len); // keys this row sees',
    '  var qv: array<vec4<f32>, D4>;',
    `  for (var d = 0u; d < ${bound('D4')}; d++) { qv[d] = vec4<f32>(load_q(batch, row, head, 4u * d, seq_len), load_q(batch, row, head, 4u * d + 1u, seq_len), load_q(batch, row, head, 4u * d + 2u, seq_len), load_q(batch, row, head, 4u * d + 3u, seq_len)); }`,
    '  var m = NEG_BIG; // this lane\'s running max',
    '  var l = 0.0;     // its running sum of exp(s - m)',
    '  var acc: array<vec4<f32>, DV4>; // its running sum of exp(s - m) * v',
    '  for (var j = lid; j < my_end; j += LANES) {',
    '    let slot = kv_slot(batch, j, kv_len);',
    '    let kb = (slot * NUM_KV_HEADS + kv_head) * HEAD_DIM;',
    '    var dot4 = vec4<f32>(0.0);',
    `    for (var d = 0u; d < ${bound('D4')}; d++) { dot4 = fma(qv[d], ${quad('load_k', 'kb + 4u * d')}, dot4); }`,
    '    let s = dot(dot4, vec4<f32>(1.0)) * SCALE;',
    '    let mx = max(m, s);',
    '    let alpha = exp(m - mx);',
    '    let p = exp(s - mx);',
    '    m = mx;',
    '    l = l * alpha + p;',
    '    let vb = (slot * NUM_KV_HEADS + kv_head) * VALUE_DIM;',
    `    for (var d = 0u; d < ${bound('DV4')}; d++) { acc[d] = fma(vec4<f32>(p), ${quad('load_v', 'vb + 4u * d')}, acc[d] * alpha); }`,
    '  }',
    '  // merge the lanes\' states: rescale each to the subgroup\'s max (lanes without keys weigh 0)',
    '  let gm = subgroupMax(m);',
    '  let f = select(0.0, exp(m - gm), l > 0.0);',
    '  let gl = subgroupAdd(l * f);',
    `  for (var d = 0u; d < ${bound('DV4')}; d++) {`,
    '    let o = subgroupAdd(acc[d] * f);',
    '    if (lid == 0u) {',
    '      for (var e = 0u; e < 4u; e++) { store_out(batch, row, head, 4u * d + e, seq_len, select(0.0, o[e] / gl, gl > 0.0)); }',
    '    }',
    '  }',
    '}',
  ];
  return {
    family,
    variant: `paged-${name}`,
    wgsl: assemble(c, hdr, body, true),
    bindings: c.bindings,
    params: [...c.params.list],
    grid: [c.Hq, c.seqGrid, c.batchGrid],
    nodes: [...c.nodes],
    features: coreFeatures(c, true),
  };
}

function build(c: Core, v: AttentionVariant, family: string): KernelSource {
  if (v.kind === 'decode-subgroup') return subgroupKernel(c, v, family);
  const layout = v.kind === 'decode' ? decodeLayout(c, v) : v.kind === 'prefill-flash' ? flashLayout(c, v) : v.kind === 'split-kv' ? splitKvLayout(c, v) : undefined;
  if (!layout) throw new InputError(`unknown attention variant ${JSON.stringify((v as { kind?: unknown }).kind)}`);
  const k = tiledKernel(c, layout);
  return { family, variant: `${c.mode === 'paged' ? 'paged-' : ''}${k.variant}`, wgsl: k.wgsl, bindings: c.bindings, params: [...c.params.list], grid: k.grid, nodes: [...c.nodes], features: coreFeatures(c) };
}

// ---------------------------------------------------------------------------------------------------------------
// public generators

/**
 * Paged attention for batch 1: q `[S, Hq, D]` attends to the `T = past + S` cached positions read through the block
 * table (the new tokens' K/V must already be written, e.g. by {@link generateKvCacheWriteKernel}); out `[S, Hq, Dv]`.
 * Bindings `q`, `k_pool`, `v_pool`, `block_table`, `out`; params `seq`, `past` (or the spec's expressions).
 * Variants `decode` and `prefill-flash` (see the module comment); shapes: Hq a multiple of Hkv, D and Dv in 1..256,
 * any S and past, any block size.
 * @throws {@link ShapeError} for unsupported head shapes; {@link InputError} for inconsistent tuning.
 * @internal
 */
export function generatePagedAttentionKernel(spec: PagedAttentionSpec): KernelSource {
  const h = checkHeads(spec);
  if (!Number.isInteger(spec.blockSize) || spec.blockSize < 1) throw new InputError(`paged attention: block size must be a positive integer, got ${spec.blockSize}`);
  const ragged = spec.ragged ?? false;
  const params = new KernelParams();
  const seq = KernelParams.canon(spec.seq ?? 'seq', 'seq');
  const seqRef = params.ref(seq);
  const past = ragged ? undefined : KernelParams.canon(spec.past ?? 'past', 'past');
  const pastRef = past === undefined ? '' : params.ref(past);
  const stride = ragged ? KernelParams.canon(spec.tableStride ?? 'table_stride', 'tableStride') : undefined;
  const strideRef = stride === undefined ? '' : params.ref(stride);
  const el = spec.dtype;
  const kvEl = spec.kvDType ?? el;
  if (kvEl !== 'f32' && kvEl !== 'f16' && !isQuantizedKv(kvEl)) throw new InputError(`paged attention: pool storage must be f32, f16, int8 or int4, got ${String(kvEl)}`);
  const poolEl = isQuantizedKv(kvEl) ? 'u32' : kvEl;
  const variant = resolveVariant(spec, seq);
  if (ragged && variant.kind === 'prefill-flash') throw new InputError(`paged attention over a ragged batch takes only the 'decode' and 'split-kv' layouts (one query position per workgroup), not '${variant.kind}'`);
  const split = variant.kind === 'split-kv';
  if (split && !ragged) throw new InputError("the 'split-kv' attention layout is for ragged batches (what causal-LM engines compile)");
  const bindings: KernelBinding[] = [
    { name: 'q', access: 'read' },
    { name: 'k_pool', access: 'read' },
    { name: 'v_pool', access: 'read' },
    { name: 'block_table', access: 'read' },
    ...(ragged ? ([{ name: 'positions', access: 'read' }, { name: 'row_seq', access: 'read' }] as KernelBinding[]) : []),
    { name: split ? 'partials' : 'out', access: 'read_write' },
  ];
  const decls = [
    storageDecl(0, 'q', el, 'read', `[S, Hq, D] queries`),
    storageDecl(1, 'k_pool', poolEl, 'read', isQuantizedKv(kvEl) ? `[numBlocks, K_BLOCK_WORDS] ${kvEl} key pool` : '[numBlocks, BLOCK_SIZE, Hkv, D] key pool'),
    storageDecl(2, 'v_pool', poolEl, 'read', isQuantizedKv(kvEl) ? `[numBlocks, V_BLOCK_WORDS] ${kvEl} value pool` : '[numBlocks, BLOCK_SIZE, Hkv, Dv] value pool'),
    storageDecl(3, 'block_table', 'u32', 'read', ragged ? '[B, table_stride]: per sequence, logical block -> physical block' : 'logical block -> physical block'),
    ...(ragged ? [storageDecl(4, 'positions', 'i32', 'read', '[S] position of each row in its sequence'), storageDecl(5, 'row_seq', 'i32', 'read', '[S] sequence (block-table row) of each row')] : []),
    split ? storageDecl(6, 'partials', 'f32', 'read_write', '[S, Hq, SPLITS, PART_STRIDE] per split: unnormalised acc[Dv], max, sum') : storageDecl(ragged ? 6 : 4, 'out', el, 'read_write', '[S, Hq, Dv]'),
  ];
  const c: Core = {
    mode: 'paged',
    ...h,
    dtype: el,
    causal: spec.causal,
    params,
    seqExpr: seqRef,
    kvLenExpr: ragged ? 'u32(positions[wid.y]) + 1u' : `${pastRef} + ${seqRef}`,
    prologue: ragged ? [`  table_base = u32(row_seq[wid.y]) * ${strideRef};`] : undefined,
    ragged,
    seqGrid: params.grid(seq),
    batchGrid: 1,
    decls,
    bindings,
    functions: coreFunctions({ dtype: el, kvDType: kvEl, causal: spec.causal, mode: 'paged', kName: 'k_pool', vName: 'v_pool', ragged, blockSize: spec.blockSize, heads: h.Hkv, dims: [h.D, h.Dv], noOut: split }),
    budget: spec.maxWorkgroupStorage ?? DEFAULT_WORKGROUP_STORAGE,
    nodes: spec.nodes ?? [],
    blockSize: spec.blockSize,
    kvDType: kvEl,
    staticLoops: spec.staticLoops ?? true,
    describe: ragged ? `paged KV cache, block ${spec.blockSize}, ragged batch of seq=${seq} rows` : `paged KV cache, block ${spec.blockSize}, seq=${seq}, past=${past}`,
  };
  const k = build(c, variant, 'attention');
  return ragged ? { ...k, variant: k.variant.replace(/^paged-/, 'paged-ragged-') } : k;
}

/**
 * Attention over contiguous K/V buffers (graphs without a KV cache, e.g. BERT): q `[B, S, Hq, D]`, k `[B, T, Hkv, D]`,
 * v `[B, T, Hkv, Dv]`, an optional bool or additive mask broadcast to `[B, Hq, S, T]`; out `[B, S, Hq, Dv]`.
 * Bindings `q`, `k`, `v`, [`mask`], `out`; params: the dynamic dims among batch, seq, kvLen and the mask's dims.
 * Variants and shapes as {@link generatePagedAttentionKernel}, plus any batch.
 * @throws {@link ShapeError} for unsupported head or mask shapes; {@link InputError} for inconsistent tuning.
 * @internal
 */
export function generateAttentionKernel(spec: AttentionSpec): KernelSource {
  const h = checkHeads(spec);
  const params = new KernelParams();
  const batch = KernelParams.canon(spec.batch ?? 1, 'batch');
  const seq = KernelParams.canon(spec.seq ?? 'seq', 'seq');
  const kvLen = KernelParams.canon(spec.kvLen ?? seq, 'kvLen');
  const seqRef = params.ref(seq);
  const kvRef = params.ref(kvLen);
  const el = spec.dtype;
  const bindings: KernelBinding[] = [
    { name: 'q', access: 'read' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
  ];
  const decls = [
    storageDecl(0, 'q', el, 'read', '[B, S, Hq, D] queries'),
    storageDecl(1, 'k', el, 'read', '[B, T, Hkv, D] keys'),
    storageDecl(2, 'v', el, 'read', '[B, T, Hkv, Dv] values'),
  ];
  const functions = coreFunctions({ dtype: el, kvDType: el, causal: spec.causal, mode: 'contiguous', kName: 'k', vName: 'v' });
  if (spec.mask) {
    const md = spec.mask.dtype;
    if (md !== 'bool' && md !== el) throw new ShapeError('attention', `mask must be bool or ${el}, got ${md}`);
    bindings.push({ name: 'mask', access: 'read' });
    decls.push(storageDecl(3, 'mask', md === 'bool' ? 'u32' : md, 'read', `${md} mask broadcast to [B, Hq, S, T]`));
    functions.push(...maskFunctions(spec.mask, params, [batch, h.Hq, seq, kvLen]));
  }
  bindings.push({ name: 'out', access: 'read_write' });
  decls.push(storageDecl(bindings.length - 1, 'out', el, 'read_write', '[B, S, Hq, Dv]'));
  const c: Core = {
    mode: 'contiguous',
    ...h,
    dtype: el,
    causal: spec.causal,
    params,
    seqExpr: seqRef,
    kvLenExpr: kvRef,
    seqGrid: params.grid(seq),
    batchGrid: params.grid(batch),
    decls,
    bindings,
    functions,
    mask: spec.mask ? (spec.mask.dtype === 'bool' ? 'bool' : 'additive') : undefined,
    maskDType: spec.mask?.dtype,
    kvDType: el,
    staticLoops: spec.staticLoops ?? true,
    budget: spec.maxWorkgroupStorage ?? DEFAULT_WORKGROUP_STORAGE,
    nodes: spec.nodes ?? [],
    describe: `contiguous K/V, batch=${batch}, seq=${seq}, kv=${kvLen}`,
  };
  const variant = resolveVariant(spec, seq);
  if (variant.kind === 'split-kv') throw new InputError("the 'split-kv' attention layout reads a paged KV cache (ragged batches), not contiguous K/V");
  return build(c, variant, 'attention');
}

/**
 * Writes S new tokens into the paged cache: `k_new` `[S, Hkv, D]` and `v_new` `[S, Hkv, Dv]` (batch 1) go to positions
 * `past .. past+S-1` of `k_pool`/`v_pool` through `block_table` (whose blocks must already be allocated). Bindings
 * `k_new`, `v_new`, `block_table`, `k_pool`, `v_pool`; params `seq`, `past`. One invocation per (token, head, dim);
 * any S (grid y, at most 65535), any head dims.
 * @internal
 */
export function generateKvCacheWriteKernel(spec: KvCacheWriteSpec): KernelSource {
  const { numKvHeads: Hkv, headDim: D, blockSize } = spec;
  const Dv = spec.valueDim ?? D;
  for (const [n, v] of [['KV heads', Hkv], ['head dim', D], ['value dim', Dv], ['block size', blockSize]] as const)
    if (!Number.isInteger(v) || v < 1) throw new ShapeError('kv-cache-write', `${n} must be a positive integer, got ${v}`);
  const WG = spec.workgroupSize ?? 64;
  const src: AttentionDType = spec.sourceDType ?? (isQuantizedKv(spec.dtype) ? 'f32' : spec.dtype);
  const params = new KernelParams();
  const seq = KernelParams.canon(spec.seq ?? 'seq', 'seq');
  const past = KernelParams.canon(spec.past ?? 'past', 'past');
  const seqRef = params.ref(seq);
  const ragged = spec.ragged ?? false;
  const pastRef = ragged ? '' : params.ref(past);
  const strideRef = ragged ? params.ref(KernelParams.canon(spec.tableStride ?? 'table_stride', 'tableStride')) : '';
  const W = Math.max(D, Dv);
  // the source row of (token s, KV head) in k_new / v_new: plain, or inside a window of a wider source's heads
  const windowConsts: string[] = [];
  const sourceRow = (name: 'key' | 'value', prefix: 'K' | 'V', w: HeadWindow | undefined): string => {
    if (!w) return 's * NUM_KV_HEADS + head';
    if (!Number.isInteger(w.numHeads) || !Number.isInteger(w.firstHead) || w.firstHead < 0 || w.firstHead + Hkv > w.numHeads)
      throw new ShapeError('kv-cache-write', `${name} heads ${w.firstHead}..${w.firstHead + Hkv - 1} are not inside a source of ${w.numHeads} heads`);
    windowConsts.push(`const ${prefix}_SRC_HEADS: u32 = ${w.numHeads}u; // heads per token in the ${name} source`, `const ${prefix}_FIRST_HEAD: u32 = ${w.firstHead}u; // its head of KV head 0`);
    return `s * ${prefix}_SRC_HEADS + ${prefix}_FIRST_HEAD + head`;
  };
  const kRow = sourceRow('key', 'K', spec.keySource);
  const vRow = sourceRow('value', 'V', spec.valueSource);
  const quantized = isQuantizedKv(spec.dtype);
  const conv = (e: string): string => (spec.dtype === src ? e : spec.dtype === 'f16' ? `f16(${e})` : `f32(${e})`);
  const bindings: KernelBinding[] = [
    { name: 'k_new', access: 'read' },
    { name: 'v_new', access: 'read' },
    { name: 'block_table', access: 'read' },
    ...(ragged ? ([{ name: 'positions', access: 'read' }, { name: 'row_seq', access: 'read' }] as KernelBinding[]) : []),
    { name: 'k_pool', access: 'read_write' },
    { name: 'v_pool', access: 'read_write' },
  ];
  const pools = ragged ? 5 : 3;
  const nodes = spec.nodes ?? [];
  const features = kernelFeatures({ f16: spec.dtype === 'f16' || src === 'f16' });
  const slotLines = ragged
    ? ['  let pos = u32(positions[s]);', `  let slot = block_table[u32(row_seq[s]) * ${strideRef} + pos / BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE;`]
    : [`  let pos = ${pastRef} + s;`, '  let slot = block_table[pos / BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE;'];
  const poolEl = quantized ? 'u32' : (spec.dtype as AttentionDType);
  // integer pools: one invocation per (token, pair of KV heads) quantizes both heads' vectors and writes their words
  // and their shared scale word, so no two invocations write the same word
  const pairs = Math.ceil(Hkv / 2);
  const body = quantized
    ? [
        '  let e = wid.x * WORKGROUP_SIZE + lid; // pair of KV heads within the token',
        '  if (e >= SCALE_WORDS) { return; }',
        '  let s = wid.y;',
        ...slotLines,
        '  let base_k = (slot / BLOCK_SIZE) * K_BLOCK_WORDS;',
        '  let base_v = (slot / BLOCK_SIZE) * V_BLOCK_WORDS;',
        '  let t = slot % BLOCK_SIZE;',
        '  var scales_k = 0u;',
        '  var scales_v = 0u;',
        '  for (var hh = 0u; hh < 2u; hh++) {',
        '    let head = e * 2u + hh;',
        '    if (head >= NUM_KV_HEADS) { break; }',
        `    let sk = kv_scale(row_absmax_k(${kRow}));`,
        `    let sv = kv_scale(row_absmax_v(${vRow}));`,
        '    for (var w = 0u; w < K_ROW_WORDS; w++) {',
        '      var word = 0u;',
        '      for (var i = 0u; i < KV_PER_WORD; i++) {',
        '        let d = w * KV_PER_WORD + i;',
        `        if (d < HEAD_DIM) { word |= kv_bits(${toF32(src, `k_new[(${kRow}) * HEAD_DIM + d]`)}, sk) << (i * KV_BITS); }`,
        '      }',
        '      k_pool[base_k + (t * NUM_KV_HEADS + head) * K_ROW_WORDS + w] = word;',
        '    }',
        '    for (var w = 0u; w < V_ROW_WORDS; w++) {',
        '      var word = 0u;',
        '      for (var i = 0u; i < KV_PER_WORD; i++) {',
        '        let d = w * KV_PER_WORD + i;',
        `        if (d < VALUE_DIM) { word |= kv_bits(${toF32(src, `v_new[(${vRow}) * VALUE_DIM + d]`)}, sv) << (i * KV_BITS); }`,
        '      }',
        '      v_pool[base_v + (t * NUM_KV_HEADS + head) * V_ROW_WORDS + w] = word;',
        '    }',
        '    scales_k |= (bitcast<u32>(sk) >> 16u) << (hh * 16u);',
        '    scales_v |= (bitcast<u32>(sv) >> 16u) << (hh * 16u);',
        '  }',
        '  k_pool[base_k + BLOCK_SIZE * NUM_KV_HEADS * K_ROW_WORDS + t * SCALE_WORDS + e] = scales_k;',
        '  v_pool[base_v + BLOCK_SIZE * NUM_KV_HEADS * V_ROW_WORDS + t * SCALE_WORDS + e] = scales_v;',
      ]
    : [
        '  let e = wid.x * WORKGROUP_SIZE + lid; // (head, dim) within the token',
        '  if (e >= NUM_KV_HEADS * ROW_WIDTH) { return; }',
        '  let s = wid.y;',
        '  let head = e / ROW_WIDTH;',
        '  let d = e % ROW_WIDTH;',
        ...slotLines,
        `  if (d < HEAD_DIM) { k_pool[(slot * NUM_KV_HEADS + head) * HEAD_DIM + d] = ${conv(`k_new[(${kRow}) * HEAD_DIM + d]`)}; }`,
        `  if (d < VALUE_DIM) { v_pool[(slot * NUM_KV_HEADS + head) * VALUE_DIM + d] = ${conv(`v_new[(${vRow}) * VALUE_DIM + d]`)}; }`,
      ];
  const quantFunctions = quantized
    ? [
        ...quantizedPoolConstants(spec.dtype as QuantizedKvDType, blockSize, Hkv, [D, Dv]),
        `const KV_INV_QMAX: f32 = bitcast<f32>(0x${(new Uint32Array(new Float32Array([1 / kvQuantFormat(spec.dtype as QuantizedKvDType).qmax]).buffer)[0]).toString(16)}u); // f32(1 / KV_QMAX)`,
        '',
        '// the scale of a vector: f32(absmax * f32(1 / KV_QMAX)) rounded up to a bfloat16 (its upper 16 bits)',
        'fn kv_scale(absmax: f32) -> f32 {',
        '  let b = bitcast<u32>(absmax * KV_INV_QMAX);',
        '  return bitcast<f32>(select((b & 0xffff0000u) + 0x10000u, b, (b & 0xffffu) == 0u));',
        '}',
        '// the stored bits of x under scale s: clamp(round_half_even(x / s)), two\'s complement in KV_BITS bits',
        'fn kv_bits(x: f32, s: f32) -> u32 {',
        '  var q = 0.0;',
        '  if (s > 0.0) { q = clamp(round(x / s), -KV_QMAX, KV_QMAX); }',
        '  return bitcast<u32>(i32(q)) & ((1u << KV_BITS) - 1u);',
        '}',
        `fn row_absmax_k(row: u32) -> f32 { var m = 0.0; for (var d = 0u; d < HEAD_DIM; d++) { m = max(m, abs(${toF32(src, 'k_new[row * HEAD_DIM + d]')})); } return m; }`,
        `fn row_absmax_v(row: u32) -> f32 { var m = 0.0; for (var d = 0u; d < VALUE_DIM; d++) { m = max(m, abs(${toF32(src, 'v_new[row * VALUE_DIM + d]')})); } return m; }`,
        '',
      ]
    : [];
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    ragged ? `// tensorwright kernel: kv-cache-write (block ${blockSize}, ragged batch of seq=${seq} rows)` : `// tensorwright kernel: kv-cache-write (block ${blockSize}, seq=${seq}, past=${past})`,
    ragged
      ? `//   copies row s of k_new [S, Hkv, D] and v_new [S, Hkv, Dv] to position positions[s] of sequence row_seq[s]`
      : `//   copies k_new [S, Hkv, D] and v_new [S, Hkv, Dv] to positions past .. past+S-1 of the paged pools`,
    ...(quantized ? [`//   as ${spec.dtype} with a scale per (token, head): q = clamp(round(x / s)), s = bf16_round_up(absmax / KV_QMAX)`] : []),
    '',
    `const NUM_KV_HEADS: u32 = ${Hkv}u;`,
    `const HEAD_DIM: u32 = ${D}u;`,
    `const VALUE_DIM: u32 = ${Dv}u;`,
    `const ROW_WIDTH: u32 = ${W}u; // max(HEAD_DIM, VALUE_DIM)`,
    `const BLOCK_SIZE: u32 = ${blockSize}u;`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    ...windowConsts,
    '',
    storageDecl(0, 'k_new', src, 'read', spec.keySource ? '[S, K_SRC_HEADS, D]: heads K_FIRST_HEAD .. are the new keys' : '[S, Hkv, D]'),
    storageDecl(1, 'v_new', src, 'read', spec.valueSource ? '[S, V_SRC_HEADS, Dv]: heads V_FIRST_HEAD .. are the new values' : '[S, Hkv, Dv]'),
    storageDecl(2, 'block_table', 'u32', 'read', ragged ? '[B, table_stride]: per sequence, logical block -> physical block' : 'logical block -> physical block'),
    ...(ragged ? [storageDecl(3, 'positions', 'i32', 'read', '[S] position of each row in its sequence'), storageDecl(4, 'row_seq', 'i32', 'read', '[S] sequence (block-table row) of each row')] : []),
    storageDecl(pools, 'k_pool', poolEl, 'read_write', quantized ? `[numBlocks, K_BLOCK_WORDS] ${spec.dtype} keys and scales` : '[numBlocks, BLOCK_SIZE, Hkv, D]'),
    storageDecl(pools + 1, 'v_pool', poolEl, 'read_write', quantized ? `[numBlocks, V_BLOCK_WORDS] ${spec.dtype} values and scales` : '[numBlocks, BLOCK_SIZE, Hkv, Dv]'),
    paramsStruct(params.list, bindings.length),
    ...quantFunctions,
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    ...body,
    `  _ = ${seqRef};`,
    '}',
    '',
  ].join('\n');
  return {
    family: 'kv-cache-write',
    variant: `${quantized ? `quantize-${spec.dtype}` : 'scatter'}${ragged ? '-ragged' : ''}${spec.keySource || spec.valueSource ? '-window' : ''}-wg${WG}`,
    wgsl,
    bindings,
    params: [...params.list],
    grid: [Math.ceil((quantized ? pairs : Hkv * W) / WG), params.grid(seq), 1],
    nodes: [...nodes],
    features,
  };
}

/**
 * The merge of the `split-kv` attention (see {@link SplitKvAttentionVariant}).
 * @internal
 */
export interface SplitKvMergeSpec {
  /** Query heads Hq. */
  readonly numHeads: number;
  /** Value head dim Dv. */
  readonly valueDim: number;
  /** Splits per query position and head (the partial kernel's `SPLITS`). */
  readonly splits: number;
  /** Storage type of out. */
  readonly dtype: AttentionDType;
  /** Rows S (default `'seq'`). */
  readonly seq?: DimLike;
  /** Lanes per workgroup (default 64). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** The graph nodes implemented, for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * The f32 elements of the split-kv scratch buffer `partials` `[S, Hq, splits, Dv + 2]`, as a kernel dim.
 * @internal
 */
export function splitKvScratchElements(numHeads: number, valueDim: number, splits: number, seq: DimLike): DimLike {
  const per = numHeads * splits * (valueDim + 2);
  const s = KernelParams.canon(seq, 'seq');
  return typeof s === 'number' ? s * per : `${per}*${s}`;
}

/**
 * The splits of a split-KV attention the variant gives (its `splits`, default 8).
 * @internal
 */
export function splitKvSplits(v: SplitKvAttentionVariant): number {
  return v.splits ?? 8;
}

/**
 * Merges the split-KV attention's partial states: for each (row, query head, value dim), over the non-empty splits
 * (sum > 0) in split order, `M = max m_i`, `out = sum exp(m_i - M) acc_i / sum exp(m_i - M) l_i` (zeros when every
 * split is empty). Bindings `partials` `[S, Hq, SPLITS, Dv + 2]` f32, `out` `[S, Hq, Dv]`; param `seq`. One invocation
 * per (head, dim) of a row; grid y is the row.
 * @throws {@link ShapeError} for bad sizes.
 * @internal
 */
export function generateSplitKvMergeKernel(spec: SplitKvMergeSpec): KernelSource {
  const { numHeads: Hq, valueDim: Dv, splits } = spec;
  for (const [n, v] of [['query heads', Hq], ['value dim', Dv], ['splits', splits]] as const)
    if (!Number.isInteger(v) || v < 1) throw new ShapeError('attention', `split-kv merge: ${n} must be a positive integer, got ${v}`);
  if (spec.dtype !== 'f32' && spec.dtype !== 'f16') throw new InputError(`attention storage must be f32 or f16, got ${String(spec.dtype)}`);
  const WG = spec.workgroupSize ?? 64;
  const params = new KernelParams();
  const seq = KernelParams.canon(spec.seq ?? 'seq', 'seq');
  const seqRef = params.ref(seq);
  const bindings: KernelBinding[] = [
    { name: 'partials', access: 'read' },
    { name: 'out', access: 'read_write' },
  ];
  const features = kernelFeatures({ f16: spec.dtype === 'f16' });
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: attention (split-kv merge of ${splits} splits, seq=${seq} rows)`,
    '//   out[row, head, d] = sum_i exp(m_i - M) acc_i[d] / sum_i exp(m_i - M) l_i over the non-empty splits i (l_i > 0),',
    '//   M = max m_i; zeros when every split is empty. Splits are summed in order, whatever the batch.',
    '',
    `const NUM_HEADS: u32 = ${Hq}u; // query heads Hq`,
    `const VALUE_DIM: u32 = ${Dv}u; // value head dim Dv`,
    `const SPLITS: u32 = ${splits}u; // key splits per query position and head`,
    `const PART_STRIDE: u32 = ${Dv + 2}u; // floats per partial state: acc[VALUE_DIM], max, sum`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    "const NEG_BIG: f32 = bitcast<f32>(0xff7fffffu); // -FLT_MAX",
    '',
    storageDecl(0, 'partials', 'f32', 'read', '[S, Hq, SPLITS, PART_STRIDE] per split: unnormalised acc[Dv], max, sum'),
    storageDecl(1, 'out', spec.dtype, 'read_write', '[S, Hq, Dv]'),
    paramsStruct(params.list, bindings.length),
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    '  let e = wid.x * WORKGROUP_SIZE + lid; // (head, dim) within the row',
    '  let row = wid.y;',
    `  if (e >= NUM_HEADS * VALUE_DIM || row >= ${seqRef}) { return; }`,
    '  let head = e / VALUE_DIM;',
    '  let d = e % VALUE_DIM;',
    '  let base = (row * NUM_HEADS + head) * SPLITS * PART_STRIDE;',
    '  var mx = NEG_BIG;',
    '  for (var i = 0u; i < SPLITS; i++) {',
    '    let p = base + i * PART_STRIDE;',
    '    if (partials[p + VALUE_DIM + 1u] > 0.0) { mx = max(mx, partials[p + VALUE_DIM]); }',
    '  }',
    '  var l = 0.0;',
    '  var acc = 0.0;',
    '  for (var i = 0u; i < SPLITS; i++) {',
    '    let p = base + i * PART_STRIDE;',
    '    let li = partials[p + VALUE_DIM + 1u];',
    '    if (li > 0.0) {',
    '      let w = exp(partials[p + VALUE_DIM] - mx);',
    '      l += li * w;',
    '      acc += partials[p + d] * w;',
    '    }',
    '  }',
    `  out[(row * NUM_HEADS + head) * VALUE_DIM + d] = ${spec.dtype === 'f16' ? 'f16(select(0.0, acc / l, l > 0.0))' : 'select(0.0, acc / l, l > 0.0)'};`,
    '}',
    '',
  ].join('\n');
  return {
    family: 'attention',
    variant: `split-kv-merge-s${splits}-wg${WG}`,
    wgsl,
    bindings,
    params: [...params.list],
    grid: [Math.ceil((Hq * Dv) / WG), params.grid(seq), 1],
    nodes: [...(spec.nodes ?? [])],
    features,
  };
}
