/**
 * The whole decode step of a small llama-family decoder as one kernel launched as one workgroup: embedding lookup,
 * per layer RMSNorm → fused q|k|v GEMV → RoPE → paged KV write → attention → output projection + residual →
 * RMSNorm → fused gate|up GEMV → SiLU·up → down projection + residual, then the final RMSNorm and the classifier.
 * Ops are separated by workgroup barriers instead of dispatches; weights are read from one storage buffer in the
 * layout {@link packDecoderStepWeights} writes (every matrix stored transposed, `[K][N]`, so that the invocations
 * computing neighbouring outputs read neighbouring words); activations live in workgroup memory, attention scores in
 * a storage scratch buffer. For models small enough that a step is dominated by the cost of launching its ~50 kernels
 * (stories260K: 54 dispatches for ~0.5 MFLOP); the schedule rule `decoderStepFit` decides when it is used.
 *
 * Bindings: `w` (packed weights, f32), `tokens` (i32, the step's token at 0), `positions` (i32, its position at 0),
 * `block_table` (u32, the sequence's blocks at row 0), `k_pool.L` and `v_pool.L` per layer (f32
 * `[numBlocks, blockSize, Hkv, D]`), `scores` (f32 scratch `[Hq, maxPositions]`), `logits` (f32 `[vocab]`). One token
 * of one sequence: the runtime uses it for the one-token decode plan only.
 * @module
 */
import { InputError } from '../errors.js';
import type { KernelSource } from './kernel.js';

/** The shapes and constants of the decoder a {@link generateDecoderStepKernel} kernel computes. */
export interface DecoderStepSpec {
  /** Model width. */
  readonly dim: number;
  /** Feed-forward hidden width. */
  readonly hiddenDim: number;
  /** Decoder layers. */
  readonly layers: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (divides `heads`). */
  readonly kvHeads: number;
  /** Per-head width (even). */
  readonly headDim: number;
  /** Vocabulary size. */
  readonly vocab: number;
  /** Longest sequence (rows of the scores scratch). */
  readonly maxPositions: number;
  /** RMSNorm epsilon. */
  readonly eps: number;
  /** RoPE pairing: adjacent columns (`interleaved`, llama2.c) or the two halves (`half`). */
  readonly ropeStyle: 'interleaved' | 'half';
  /** Tokens per KV-cache block. */
  readonly blockSize: number;
  /** Invocations of the one workgroup. */
  readonly workgroupSize: number;
  /**
   * Inner loops have constant trip counts (default true), which GPU compilers unroll; `false` hides them (same
   * results), so that LLVM-based software rasterizers such as lavapipe compile the kernel in a fraction of the time.
   */
  readonly staticLoops?: boolean;
}

/** Word offsets of each tensor in the packed weight buffer, per layer and global. */
export interface DecoderStepLayout {
  /** Per layer: attention norm, q|k|v `[dim][qDim + 2 kvDim]`, wo `[qDim][dim]`, ffn norm, w1|w3 `[dim][2 hidden]`, w2 `[hidden][dim]`. */
  readonly layers: readonly { readonly attNorm: number; readonly qkv: number; readonly wo: number; readonly ffnNorm: number; readonly w13: number; readonly w2: number }[];
  /** Final norm `[dim]`. */
  readonly norm: number;
  /** RoPE inverse frequencies `[headDim / 2]`. */
  readonly ropeInv: number;
  /** Classifier `[dim][vocab]`. */
  readonly cls: number;
  /** Token embeddings `[vocab][dim]`. */
  readonly emb: number;
  /** Words in all. */
  readonly words: number;
}

/** Where {@link packDecoderStepWeights} puts each tensor of `spec`. */
export function decoderStepLayout(spec: DecoderStepSpec): DecoderStepLayout {
  const { dim, hiddenDim: hid, heads, kvHeads, headDim: hs, vocab } = spec;
  const qkvN = (heads + 2 * kvHeads) * hs;
  let at = 0;
  const take = (n: number): number => {
    const o = at;
    at += n;
    return o;
  };
  const layers = Array.from({ length: spec.layers }, () => ({
    attNorm: take(dim),
    qkv: take(dim * qkvN),
    wo: take(heads * hs * dim),
    ffnNorm: take(dim),
    w13: take(dim * 2 * hid),
    w2: take(hid * dim),
  }));
  const norm = take(dim);
  const ropeInv = take(hs / 2);
  const cls = take(dim * vocab);
  const emb = take(vocab * dim);
  return { layers, norm, ropeInv, cls, emb, words: at };
}

/** A decoder's weights as the model stores them: every matrix `[N, K]` row-major (out × in), f32. */
export interface DecoderStepWeights {
  /** Per layer. */
  readonly layers: readonly {
    readonly attNorm: Float32Array;
    readonly wq: Float32Array;
    readonly wk: Float32Array;
    readonly wv: Float32Array;
    readonly wo: Float32Array;
    readonly ffnNorm: Float32Array;
    readonly w1: Float32Array;
    readonly w2: Float32Array;
    readonly w3: Float32Array;
  }[];
  /** Final norm. */
  readonly norm: Float32Array;
  /** RoPE inverse frequencies, `headDim / 2` (scaling already applied). */
  readonly ropeInv: Float32Array;
  /** Classifier `[vocab, dim]`. */
  readonly cls: Float32Array;
  /** Token embeddings `[vocab, dim]`. */
  readonly emb: Float32Array;
}

/** Writes `src` (`[n, k]` row-major) transposed into `dst` at rows `[k][stride]`, columns from `col`. */
function putTransposed(dst: Float32Array, at: number, stride: number, col: number, src: Float32Array, n: number, k: number, what: string): void {
  if (src.length !== n * k) throw new InputError(`decoder step: ${what} has ${src.length} values, expected ${n}×${k}`);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) dst[at + c * stride + col + r] = src[r * k + c];
}

/** The packed weight buffer of {@link decoderStepLayout}: matrices transposed, q|k|v and w1|w3 side by side. */
export function packDecoderStepWeights(spec: DecoderStepSpec, w: DecoderStepWeights): Float32Array {
  const L = decoderStepLayout(spec);
  const { dim, hiddenDim: hid, heads, kvHeads, headDim: hs, vocab } = spec;
  const qDim = heads * hs;
  const kvDim = kvHeads * hs;
  const qkvN = qDim + 2 * kvDim;
  const out = new Float32Array(L.words);
  const put = (at: number, v: Float32Array, n: number, what: string): void => {
    if (v.length !== n) throw new InputError(`decoder step: ${what} has ${v.length} values, expected ${n}`);
    out.set(v, at);
  };
  if (w.layers.length !== spec.layers) throw new InputError(`decoder step: ${w.layers.length} layers of weights for ${spec.layers} layers`);
  w.layers.forEach((lw, l) => {
    const o = L.layers[l];
    put(o.attNorm, lw.attNorm, dim, `layer ${l} attention norm`);
    putTransposed(out, o.qkv, qkvN, 0, lw.wq, qDim, dim, `layer ${l} wq`);
    putTransposed(out, o.qkv, qkvN, qDim, lw.wk, kvDim, dim, `layer ${l} wk`);
    putTransposed(out, o.qkv, qkvN, qDim + kvDim, lw.wv, kvDim, dim, `layer ${l} wv`);
    putTransposed(out, o.wo, dim, 0, lw.wo, dim, qDim, `layer ${l} wo`);
    put(o.ffnNorm, lw.ffnNorm, dim, `layer ${l} ffn norm`);
    putTransposed(out, o.w13, 2 * hid, 0, lw.w1, hid, dim, `layer ${l} w1`);
    putTransposed(out, o.w13, 2 * hid, hid, lw.w3, hid, dim, `layer ${l} w3`);
    putTransposed(out, o.w2, dim, 0, lw.w2, dim, hid, `layer ${l} w2`);
  });
  put(L.norm, w.norm, dim, 'final norm');
  put(L.ropeInv, w.ropeInv, hs / 2, 'rope frequencies');
  putTransposed(out, L.cls, vocab, 0, w.cls, vocab, dim, 'classifier');
  put(L.emb, w.emb, vocab * dim, 'token embeddings');
  return out;
}

/** Checks a spec's shapes (`InputError`). */
export function validateDecoderStepSpec(s: DecoderStepSpec): void {
  for (const k of ['dim', 'hiddenDim', 'layers', 'heads', 'kvHeads', 'headDim', 'vocab', 'maxPositions', 'blockSize', 'workgroupSize'] as const)
    if (!Number.isInteger(s[k]) || s[k] <= 0) throw new InputError(`decoder step: ${k} must be a positive integer, got ${s[k]}`);
  if (s.heads % s.kvHeads !== 0) throw new InputError(`decoder step: ${s.heads} heads are not a multiple of ${s.kvHeads} KV heads`);
  if (s.headDim % 2 !== 0) throw new InputError(`decoder step: head dim ${s.headDim} must be even for RoPE`);
  if (!(s.eps > 0)) throw new InputError(`decoder step: eps must be positive, got ${s.eps}`);
}

/** Bytes of workgroup memory the kernel declares. */
export function decoderStepWorkgroupBytes(s: DecoderStepSpec): number {
  const qkvN = (s.heads + 2 * s.kvHeads) * s.headDim;
  return 4 * (2 * s.dim + qkvN + s.heads * s.headDim + 2 * s.hiddenDim + s.workgroupSize + 1);
}

/** The kernel's storage bindings, in order. */
export function decoderStepBindingNames(layers: number): string[] {
  return ['w', 'tokens', 'positions', 'block_table', ...Array.from({ length: layers }, (_, l) => [`k_pool_${l}`, `v_pool_${l}`]).flat(), 'scores', 'logits'];
}

/** The one-workgroup whole-step kernel for `spec` (see the module comment). */
export function generateDecoderStepKernel(spec: DecoderStepSpec): KernelSource {
  validateDecoderStepSpec(spec);
  const s = spec;
  const L = decoderStepLayout(s);
  const qDim = s.heads * s.headDim;
  const kvDim = s.kvHeads * s.headDim;
  const qkvN = qDim + 2 * kvDim;
  const names = decoderStepBindingNames(s.layers);
  const decl = names.map((n, i) => {
    const type = n === 'tokens' || n === 'positions' ? 'array<i32>' : n === 'block_table' ? 'array<u32>' : 'array<f32>';
    const access = n === 'w' || n === 'tokens' || n === 'positions' || n === 'block_table' ? 'read' : 'read_write';
    return `@group(0) @binding(${i}) var<storage, ${access}> ${n}: ${type};`;
  });
  const sync = '  storageBarrier();\n  workgroupBarrier();';
  // inner-loop bounds: the constants, or the same values through an expression the compiler cannot fold
  const hidden = ['DIM', 'HIDDEN', 'Q_DIM', 'HEAD_DIM', 'WG'];
  const bound = (name: string): string => (s.staticLoops === false && hidden.includes(name) ? `n_${name.toLowerCase()}` : name);
  // y[r] (+)= sum_k W[k][r] * src[k] over rows r the invocations stride through
  const gemv = (wOff: string, n: string, k: string, src: string, store: (r: string, acc: string) => string): string =>
    [
      `  for (var r = lid; r < ${n}; r += WG) {`,
      '    var acc = 0.0;',
      `    for (var k = 0u; k < ${bound(k)}; k++) { acc += w[${wOff} + k * ${n} + r] * ${src}[k]; }`,
      `    ${store('r', 'acc')}`,
      '  }',
      sync,
    ].join('\n');
  // rmsnorm of x into xn with weight at wOff: partial sums of squares, then every invocation folds them
  const rmsnorm = (wOff: string): string =>
    [
      '  {',
      '    var part = 0.0;',
      '    for (var i = lid; i < DIM; i += WG) { part += x[i] * x[i]; }',
      '    red[lid] = part;',
      '  }',
      sync,
      '  {',
      '    var ss = 0.0;',
      `    for (var j = 0u; j < ${bound('WG')}; j++) { ss += red[j]; }`,
      '    let inv = inverseSqrt(ss / f32(DIM) + EPS);',
      `    for (var i = lid; i < DIM; i += WG) { xn[i] = x[i] * inv * w[${wOff} + i]; }`,
      '  }',
      sync,
    ].join('\n');
  // the column pairs RoPE rotates together within a head: pair i is (2i, 2i + 1) or (i, i + HEAD_DIM / 2)
  const pair = s.ropeStyle === 'interleaved' ? ['2u * i', '2u * i + 1u'] : ['i', 'i + HALF'];
  // a layer's tensors: the first layer's offsets plus l × LAYER_WORDS (every layer has the same shapes)
  const l0 = L.layers[0];
  const at = (off: number): string => `base + ${off - l0.attNorm}u`;
  const layer = [
    '  for (var l = 0u; l < LAYERS; l++) {',
    '  let base = LAYER0 + l * LAYER_WORDS;',
    rmsnorm(at(l0.attNorm)),
    gemv(at(l0.qkv), 'QKV_N', 'DIM', 'xn', (r, acc) => `qkv[${r}] = ${acc};`),
    '  // RoPE on q and k (pairs of every head), then k and v into the cache at this position',
    '  for (var p = lid; p < (HEADS + KV_HEADS) * HALF; p += WG) {',
    '    let head = p / HALF;',
    '    let i = p % HALF;',
    '    let angle = f32(pos) * w[ROPE_INV + i];',
    '    let c = cos(angle);',
    '    let sn = sin(angle);',
    `    let a = head * HEAD_DIM + ${pair[0]};`,
    `    let b = head * HEAD_DIM + ${pair[1]};`,
    '    let xa = qkv[a];',
    '    let xb = qkv[b];',
    '    qkv[a] = xa * c - xb * sn;',
    '    qkv[b] = xa * sn + xb * c;',
    '  }',
    sync,
    '  for (var i = lid; i < KV_DIM; i += WG) { store_kv(l, row * KV_DIM + i, qkv[Q_DIM + i], qkv[Q_DIM + KV_DIM + i]); }',
    sync,
    '  // attention scores: one (head, position) per invocation',
    '  for (var e = lid; e < HEADS * len; e += WG) {',
    '    let head = e / len;',
    '    let t = e % len;',
    '    let krow = (block_table[t / BLOCK_SIZE] * BLOCK_SIZE + t % BLOCK_SIZE) * KV_DIM + (head / GROUP) * HEAD_DIM;',
    '    var dot = 0.0;',
    `    for (var d = 0u; d < ${bound('HEAD_DIM')}; d++) { dot += qkv[head * HEAD_DIM + d] * load_k(l, krow + d); }`,
    '    scores[head * MAX_POS + t] = dot * SCALE;',
    '  }',
    sync,
    '  // softmax per head',
    '  for (var head = lid; head < HEADS; head += WG) {',
    '    var m = scores[head * MAX_POS];',
    '    for (var t = 1u; t < len; t++) { m = max(m, scores[head * MAX_POS + t]); }',
    '    var sum = 0.0;',
    '    for (var t = 0u; t < len; t++) { let v = exp(scores[head * MAX_POS + t] - m); scores[head * MAX_POS + t] = v; sum += v; }',
    '    let inv = 1.0 / sum;',
    '    for (var t = 0u; t < len; t++) { scores[head * MAX_POS + t] *= inv; }',
    '  }',
    sync,
    '  // probabilities · values: one (head, column) per invocation',
    '  for (var e = lid; e < Q_DIM; e += WG) {',
    '    let head = e / HEAD_DIM;',
    '    let col = (head / GROUP) * HEAD_DIM + e % HEAD_DIM;',
    '    var acc = 0.0;',
    '    for (var t = 0u; t < len; t++) { acc += scores[head * MAX_POS + t] * load_v(l, (block_table[t / BLOCK_SIZE] * BLOCK_SIZE + t % BLOCK_SIZE) * KV_DIM + col); }',
    '    att[e] = acc;',
    '  }',
    sync,
    gemv(at(l0.wo), 'DIM', 'Q_DIM', 'att', (r, acc) => `x[${r}] += ${acc};`),
    rmsnorm(at(l0.ffnNorm)),
    gemv(at(l0.w13), 'HIDDEN2', 'DIM', 'xn', (r, acc) => `hb[${r}] = ${acc};`),
    '  for (var i = lid; i < HIDDEN; i += WG) { let g = hb[i]; hb[i] = g / (1.0 + exp(-g)) * hb[HIDDEN + i]; }',
    sync,
    gemv(at(l0.w2), 'DIM', 'HIDDEN', 'hb', (r, acc) => `x[${r}] += ${acc};`),
    '  }',
  ].join('\n');
  // the cache pools are one binding per layer: the layer loop reaches them through a switch
  const layerSwitch = (body: (l: number) => string, fallback: string): string =>
    ['  switch l {', ...Array.from({ length: s.layers }, (_, l) => `    case ${l}u: { ${body(l)} }`), `    default: { ${fallback} }`, '  }'].join('\n');
  const poolAccess = [
    'fn store_kv(l: u32, i: u32, k: f32, v: f32) {',
    layerSwitch((l) => `k_pool_${l}[i] = k; v_pool_${l}[i] = v;`, ''),
    '}',
    'fn load_k(l: u32, i: u32) -> f32 {',
    layerSwitch((l) => `return k_pool_${l}[i];`, 'return 0.0;'),
    '}',
    'fn load_v(l: u32, i: u32) -> f32 {',
    layerSwitch((l) => `return v_pool_${l}[i];`, 'return 0.0;'),
    '}',
  ].join('\n');
  const consts: [string, string, string][] = [
    ['WG', `${s.workgroupSize}u`, 'invocations of the one workgroup'],
    ['LAYERS', `${s.layers}u`, 'decoder layers'],
    ['LAYER0', `${l0.attNorm}u`, 'word offset of layer 0'],
    ['LAYER_WORDS', `${s.layers > 1 ? L.layers[1].attNorm - l0.attNorm : L.norm - l0.attNorm}u`, 'words of one layer'],
    ['DIM', `${s.dim}u`, 'model width'],
    ['HIDDEN', `${s.hiddenDim}u`, 'feed-forward width'],
    ['HIDDEN2', `${2 * s.hiddenDim}u`, 'gate and up side by side'],
    ['HEADS', `${s.heads}u`, 'query heads'],
    ['KV_HEADS', `${s.kvHeads}u`, 'key/value heads'],
    ['GROUP', `${s.heads / s.kvHeads}u`, 'query heads per KV head'],
    ['HEAD_DIM', `${s.headDim}u`, 'per-head width'],
    ['HALF', `${s.headDim / 2}u`, 'RoPE pairs per head'],
    ['Q_DIM', `${qDim}u`, 'query width'],
    ['KV_DIM', `${kvDim}u`, 'key (and value) width'],
    ['QKV_N', `${qkvN}u`, 'q, k and v side by side'],
    ['VOCAB', `${s.vocab}u`, 'vocabulary'],
    ['MAX_POS', `${s.maxPositions}u`, 'scores row stride'],
    ['BLOCK_SIZE', `${s.blockSize}u`, 'tokens per cache block'],
    ['ROPE_INV', `${L.ropeInv}u`, 'word offset of the RoPE frequencies'],
    ['NORM', `${L.norm}u`, 'word offset of the final RMSNorm weights'],
    ['CLS', `${L.cls}u`, 'word offset of the classifier [DIM][VOCAB]'],
    ['EMB', `${L.emb}u`, 'word offset of the embeddings [VOCAB][DIM]'],
  ];
  const wgsl = [
    `// decoder-step/${variantOf(s)}: one decode token of a ${s.layers}-layer llama decoder (dim ${s.dim}, hidden ${s.hiddenDim}, ${s.heads}/${s.kvHeads} heads of ${s.headDim}, vocab ${s.vocab}) in one workgroup`,
    ...decl,
    ...consts.map(([n, v, why]) => `const ${n}: u32 = ${v}; // ${why}`),
    `const EPS: f32 = ${f32Literal(s.eps)}; // RMSNorm epsilon`,
    `const SCALE: f32 = ${f32Literal(1 / Math.sqrt(s.headDim))}; // 1 / sqrt(HEAD_DIM)`,
    'var<workgroup> x: array<f32, DIM>; // the residual stream',
    'var<workgroup> xn: array<f32, DIM>; // its normalized copy',
    'var<workgroup> qkv: array<f32, QKV_N>;',
    'var<workgroup> att: array<f32, Q_DIM>; // attention output',
    'var<workgroup> hb: array<f32, HIDDEN2>; // gate | up',
    'var<workgroup> red: array<f32, WG>; // partial sums',
    '',
    poolAccess,
    '',
    `@compute @workgroup_size(${s.workgroupSize})`,
    'fn main(@builtin(local_invocation_index) lid: u32) {',
    '  let token = u32(tokens[0]);',
    '  let pos = u32(positions[0]);',
    '  let len = pos + 1u;',
    ...(s.staticLoops === false ? ['  // loop bounds hidden from the compiler (min(X, len + X) == X) so software compilers do not unroll', ...hidden.map((n) => `  let n_${n.toLowerCase()} = min(${n}, len + ${n});`)] : []),
    '  // this position\'s row of every layer\'s cache pools',
    '  let row = block_table[pos / BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE;',
    '  for (var i = lid; i < DIM; i += WG) { x[i] = w[EMB + token * DIM + i]; }',
    sync,
    layer,
    '  // ---- final RMSNorm and classifier',
    rmsnorm('NORM'),
    gemv('CLS', 'VOCAB', 'DIM', 'xn', (r, acc) => `logits[${r}] = ${acc};`),
    '}',
    '',
  ].join('\n');
  return {
    family: 'decoder-step',
    variant: variantOf(s),
    wgsl,
    bindings: names.map((name) => ({ name, access: name === 'w' || name === 'tokens' || name === 'positions' || name === 'block_table' ? 'read' : 'read_write' })),
    params: [],
    grid: [1, 1, 1],
    nodes: [`whole decode step (${s.layers} layers)`],
    features: [],
  };
}

function variantOf(s: DecoderStepSpec): string {
  return `one-workgroup-wg${s.workgroupSize}-${s.ropeStyle}${s.staticLoops === false ? '-dynamic-loops' : ''}`;
}

/** A WGSL f32 literal of `v` (exact for the f32 nearest `v`). */
function f32Literal(v: number): string {
  const f = Math.fround(v);
  const t = f.toPrecision(9);
  return /[.e]/.test(t) ? t : `${t}.0`;
}
