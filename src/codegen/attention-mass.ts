/**
 * The attention-mass kernel of H2O heavy-hitter KV eviction (`src/runtime/serving/kv-eviction.ts`): for every row of
 * a step's ragged batch (row `r` is position `positions[r]` of sequence `row_seq[r]`, whose block table is row
 * `row_seq[r]` of `[B, table_stride]`), it recomputes the softmax weights `softmax(q · k · scale)` that the paged
 * attention kernel gives the row's visible keys `0 ..= positions[r]`, for every query head (query head `h` reads KV
 * head `floor(h / (Hq / Hkv))`, as the attention does), and adds each key's weight, summed over the heads, to
 * `mass[r, j]` (row stride `table_stride · BLOCK_SIZE`, the most positions a table row covers). The engine runs it
 * after each layer's attention, on the same q and K pool, only in steps that ask for the mass, and clears `mass`
 * first: after the step `mass[r, j]` is key `j`'s weight summed over layers and heads, which the host sums over a
 * sequence's rows. This is the CPU reference's `attentionKeyMass` (`src/runtime/cpu/kernels.ts`), in f32.
 *
 * One workgroup per row; for each head its lanes stride over the keys keeping an online (max, sum) pair, merge the
 * pairs in workgroup memory, then score the keys again and add `exp(score − max) / sum`. A lane owns the same keys for
 * every head, so the read-modify-write of `mass` needs no atomics, and layers run one after the other.
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { KernelParams, type DimLike, type KernelBinding, type KernelSource } from './kernel.js';
import { enableDirectives, kernelFeatures, literal } from './wgsl.js';
import { attentionMassWorkgroupSize } from './schedule/attention-mass.js';

/**
 * What the attention-mass kernel computes: the heads, the pool layout and the score scale of the attention it
 * observes. Bindings `q` `[S, Hq, D]`, `k_pool` `[numBlocks, blockSize, Hkv, D]`, `block_table`, `positions`,
 * `row_seq`, `mass` (f32 `[S, table_stride · blockSize]`, accumulated); params `seq`, `table_stride`.
 * @internal
 */
export interface AttentionMassSpec {
  /** Query heads Hq. */
  readonly numHeads: number;
  /** KV heads Hkv (divides Hq). */
  readonly numKvHeads: number;
  /** Query/key head dim D. */
  readonly headDim: number;
  /** Storage type of q. */
  readonly dtype: 'f32' | 'f16';
  /** Storage type of the K pool (float pools only: H2O refuses integer KV caches). */
  readonly kvDType: 'f32' | 'f16';
  /** Tokens per cache block. */
  readonly blockSize: number;
  /** Score scale (default `1/sqrt(D)`), rounded to f32 as the attention op does. */
  readonly scale?: number;
  /** Rows of the batch (default `'seq'`). */
  readonly seq?: DimLike;
  /** Entries per sequence row of the block table (default `'table_stride'`). */
  readonly tableStride?: DimLike;
  /** Lanes per workgroup (default: the schedule rule {@link attentionMassWorkgroupSize}). */
  readonly workgroupSize?: 32 | 64 | 128 | 256;
  /** The graph nodes observed (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * The attention-mass kernel for `spec` (see the module comment). Grid: one workgroup per row.
 * @throws {@link ShapeError} when Hq is not a multiple of Hkv; {@link InputError} for other bad sizes or types.
 * @internal
 */
export function generateAttentionMassKernel(spec: AttentionMassSpec): KernelSource {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D, blockSize } = spec;
  const pos = (n: number): boolean => Number.isInteger(n) && n > 0;
  if (!pos(Hq) || !pos(Hkv) || Hq % Hkv !== 0) throw new ShapeError('attention', `query heads (${Hq}) must be a positive multiple of KV heads (${Hkv})`);
  if (!pos(D)) throw new InputError(`attention mass: head dim must be a positive integer, got ${D}`);
  if (!pos(blockSize)) throw new InputError(`attention mass: block size must be a positive integer, got ${blockSize}`);
  for (const [what, t] of [['q', spec.dtype], ['K pool', spec.kvDType]] as const)
    if (t !== 'f32' && t !== 'f16') throw new InputError(`attention mass: ${what} storage must be f32 or f16, got ${String(t)}`);
  const scale = Math.fround(spec.scale ?? 1 / Math.sqrt(D));
  if (!Number.isFinite(scale)) throw new InputError(`attention mass: scale must be finite, got ${spec.scale}`);
  const wg = spec.workgroupSize ?? attentionMassWorkgroupSize();
  const params = new KernelParams();
  const seq = KernelParams.canon(spec.seq ?? 'seq', 'seq');
  const seqRef = params.ref(seq);
  const strideRef = params.ref(KernelParams.canon(spec.tableStride ?? 'table_stride', 'tableStride'));
  const features = kernelFeatures({ f16: spec.dtype === 'f16' || spec.kvDType === 'f16' });
  const f32 = (t: string, e: string): string => (t === 'f32' ? e : `f32(${e})`);
  const bindings: KernelBinding[] = [
    { name: 'q', access: 'read' },
    { name: 'k_pool', access: 'read' },
    { name: 'block_table', access: 'read' },
    { name: 'positions', access: 'read' },
    { name: 'row_seq', access: 'read' },
    { name: 'mass', access: 'read_write' },
  ];
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: attention-mass (H2O), paged KV cache, block ${blockSize}, ragged batch of seq=${seq} rows`,
    `//   q [S, Hq=${Hq}, D=${D}] ${spec.dtype}, K pool ${spec.kvDType} through the block tables; mass[r, j] += softmax weight of key j`,
    `//   for row r, summed over the query heads (row r sees keys 0 ..= positions[r]); f32 math, one workgroup per row`,
    '',
    `const NUM_HEADS: u32 = ${Hq}u; // query heads Hq`,
    `const NUM_KV_HEADS: u32 = ${Hkv}u; // KV heads Hkv`,
    `const GROUP_SIZE: u32 = ${Hq / Hkv}u; // query heads per KV head`,
    `const HEAD_DIM: u32 = ${D}u; // query/key head dim D`,
    `const BLOCK_SIZE: u32 = ${blockSize}u; // tokens per cache block`,
    `const WG: u32 = ${wg}u; // lanes per workgroup`,
    `const SCALE: f32 = ${literal('f32', scale)}; // score scale`,
    'const NEG_BIG: f32 = bitcast<f32>(0xff7fffffu); // -FLT_MAX: the running max before any key',
    '',
    `@group(0) @binding(0) var<storage, read> q: array<${spec.dtype}>; // [S, Hq, D] queries`,
    `@group(0) @binding(1) var<storage, read> k_pool: array<${spec.kvDType}>; // [numBlocks, BLOCK_SIZE, Hkv, D] key pool`,
    '@group(0) @binding(2) var<storage, read> block_table: array<u32>; // [B, table_stride]: per sequence, logical block -> physical block',
    '@group(0) @binding(3) var<storage, read> positions: array<i32>; // [S] position of each row in its sequence',
    '@group(0) @binding(4) var<storage, read> row_seq: array<i32>; // [S] sequence (block-table row) of each row',
    '@group(0) @binding(5) var<storage, read_write> mass: array<f32>; // [S, table_stride * BLOCK_SIZE] accumulated mass',
    params.decl(6).trimEnd(),
    '',
    'var<workgroup> red_max: array<f32, WG>;',
    'var<workgroup> red_sum: array<f32, WG>;',
    '// first block-table entry of this workgroup\'s sequence (set in main)',
    'var<private> table_base: u32;',
    '',
    '// scaled score of key position j of the row\'s sequence for query head `head` (reading KV head `kv_head`)',
    'fn score(row: u32, head: u32, kv_head: u32, j: u32) -> f32 {',
    '  let slot = block_table[table_base + j / BLOCK_SIZE] * BLOCK_SIZE + j % BLOCK_SIZE;',
    '  let qb = (row * NUM_HEADS + head) * HEAD_DIM;',
    '  let kb = (slot * NUM_KV_HEADS + kv_head) * HEAD_DIM;',
    '  var dot = 0.0;',
    '  for (var d = 0u; d < HEAD_DIM; d++) {',
    `    dot += ${f32(spec.dtype, 'q[qb + d]')} * ${f32(spec.kvDType, 'k_pool[kb + d]')};`,
    '  }',
    '  return dot * SCALE;',
    '}',
    '',
    '@compute @workgroup_size(WG)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {',
    '  let row = wid.x;',
    `  if (row >= ${seqRef}) { return; }`,
    '  let kv_len = u32(positions[row]) + 1u;',
    `  table_base = u32(row_seq[row]) * ${strideRef};`,
    `  let out_base = row * ${strideRef} * BLOCK_SIZE;`,
    '  for (var head = 0u; head < NUM_HEADS; head++) {',
    '    let kv_head = head / GROUP_SIZE;',
    '    // this lane\'s keys: online max and sum of exp(score - max)',
    '    var m = NEG_BIG;',
    '    var s = 0.0;',
    '    for (var j = lane; j < kv_len; j += WG) {',
    '      let sc = score(row, head, kv_head, j);',
    '      let nm = max(m, sc);',
    '      s = s * exp(m - nm) + exp(sc - nm);',
    '      m = nm;',
    '    }',
    '    red_max[lane] = m;',
    '    red_sum[lane] = s;',
    '    workgroupBarrier();',
    '    for (var half = WG / 2u; half > 0u; half = half / 2u) {',
    '      if (lane < half) {',
    '        let m1 = red_max[lane];',
    '        let m2 = red_max[lane + half];',
    '        let nm = max(m1, m2);',
    '        red_sum[lane] = red_sum[lane] * exp(m1 - nm) + red_sum[lane + half] * exp(m2 - nm);',
    '        red_max[lane] = nm;',
    '      }',
    '      workgroupBarrier();',
    '    }',
    '    let row_max = red_max[0];',
    '    let row_sum = red_sum[0];',
    '    workgroupBarrier();',
    '    for (var j = lane; j < kv_len; j += WG) {',
    '      mass[out_base + j] += exp(score(row, head, kv_head, j) - row_max) / row_sum;',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
  return { family: 'attention-mass', variant: `paged-ragged-wg${wg}`, wgsl, bindings, params: [...params.list], grid: [params.grid(seq), 1, 1], nodes: [...(spec.nodes ?? [])], features };
}
