/**
 * The `w8a8-gemv` kernel: a W8A8 matmul (int8 activations times int8 weights, integer dot, rescaled), B int8 per
 * output channel stored `[N, K]` (`transB`), read as packed bytes. One workgroup computes `COLS` output columns of
 * one row of A:
 *
 * 1. the row's scale: calibrated (a constant) or per token (`max|A[row, :]| / 127`, a workgroup reduction);
 * 2. the row quantized to int8, four values per `u32` word (little-endian bytes), into workgroup memory; words past
 *    K hold zeros;
 * 3. groups of `LANES` lanes split the words, each group computing `CPT` columns (one load of an A word serves
 *    them all); each word of B meets its word of A in one packed 4×8 integer dot
 *    product — WGSL's `dot4I8Packed` where the adapter has the `packed_4x8_integer_dot_product` language feature
 *    (`packedDot`), else unpacked into `vec4<i32>` and dotted; the lanes' i32 sums meet in workgroup memory;
 * 4. `f32(acc) · (s_a · s_w[col])`, then the gate and epilogue (`store_out`), as every matmul kernel stores.
 *
 * The arithmetic is the CPU reference's (`src/runtime/cpu/w8a8.ts`): same rounding (half to even), same clamp
 * (±127), exact integer sums. A row of B starts on a word boundary only when K is a multiple of 4; otherwise a B word
 * is assembled from two (the bytes past K meet zero activations).
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { literal } from '../wgsl.js';
import { assemble, checkPositiveInt, encodedWeightBindings, gridOf, makeCtx, matmulFeatures, sizeLets, storeFn, toF32, type Ctx } from './common.js';
import type { MatmulSpec } from './spec.js';

/** What a W8A8 kernel computes: a matmul spec (B `[N, K]` int8 per channel) and the activations' scale. */
export interface W8A8MatmulSpec extends MatmulSpec {
  /** The calibrated per-tensor scale of A, or `'per-token'` (absmax of each row / 127). */
  readonly actScale: number | 'per-token';
}

/** Tuning of the `w8a8-gemv` kernel. */
export interface W8A8GemvVariant {
  /** Variant kind. */
  readonly kind: 'w8a8-gemv';
  /** Invocations per workgroup (a power of two). */
  readonly workgroupSize: number;
  /** Lanes splitting K for one column (a power of two dividing the workgroup size). */
  readonly lanesPerColumn: number;
  /** Output columns each lane group computes, each A word loaded once for all of them (1 to 8). */
  readonly colsPerThread: number;
  /** Whether the dot uses `dot4I8Packed` (and `pack4xI8`): needs the `packed_4x8_integer_dot_product` WGSL language feature. */
  readonly packedDot: boolean;
}

/** The WGSL language feature `packedDot` kernels require. */
export const PACKED_DOT_FEATURE = 'packed_4x8_integer_dot_product';

/** Most K the kernel takes: the row's packed words live in workgroup memory (16 KiB, WebGPU's default limit). */
export const W8A8_MAX_K = 16384;

const isPow2 = (n: number): boolean => (n & (n - 1)) === 0;

/** The packing and dot functions: the built-ins, or their unpacked equivalents. */
function dotFns(packed: boolean): string[] {
  if (packed)
    return [
      `// four int8 in one word (WGSL built-ins of ${PACKED_DOT_FEATURE})`,
      `fn pack_i8(q: vec4<i32>) -> u32 { return pack4xI8(q); }`,
      `fn dot_i8(x: u32, w: u32) -> i32 { return dot4I8Packed(x, w); }`,
    ];
  return [
    `// four int8 in one word, little-endian bytes (what pack4xI8 computes)`,
    `fn pack_i8(q: vec4<i32>) -> u32 {`,
    `  let b = bitcast<vec4<u32>>(q) & vec4<u32>(0xffu);`,
    `  return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);`,
    `}`,
    `// the dot product of the four int8 of two words (what dot4I8Packed computes), sign-extended into i32 lanes`,
    `fn dot_i8(x: u32, w: u32) -> i32 {`,
    `  let sh = vec4<u32>(24u, 16u, 8u, 0u);`,
    `  let xv = (vec4<i32>(bitcast<i32>(x)) << sh) >> vec4<u32>(24u);`,
    `  let wv = (vec4<i32>(bitcast<i32>(w)) << sh) >> vec4<u32>(24u);`,
    `  return dot(xv, wv);`,
    `}`,
  ];
}

/** `w_word(col, j)`: the word of B holding elements `4j .. 4j+3` of row `col`. */
function weightWordFn(c: Ctx): string[] {
  if (c.K % 4 === 0) return [`// word j of B's row col (rows start on word boundaries: K is a multiple of 4)`, `fn w_word(col: u32, j: u32) -> u32 { return packed[col * K_WORDS + j]; }`];
  return [
    `// bytes 4j .. 4j+3 of B's row col, assembled from the two words they straddle (K is no multiple of 4)`,
    `fn w_word(col: u32, j: u32) -> u32 {`,
    `  let e = col * K + 4u * j;`,
    `  let o = (e % 4u) * 8u;`,
    `  let lo = packed[e / 4u] >> o;`,
    `  let hi = select(0u, packed[e / 4u + 1u] << (32u - o), o != 0u);`,
    `  return lo | hi;`,
    `}`,
  ];
}

/**
 * Generates the `w8a8-gemv` kernel. Bindings: `a`, `packed` (B's int8, `u32` words), `scales` (f32 per output
 * channel), the epilogue operands, `out`, and the params uniform when a size is a dim expression.
 * @throws {@link InputError} for a form it does not compute (B not `[N, K]`, transposed A, K over
 * {@link W8A8_MAX_K}, a batched output with a per-row epilogue operand) or bad tuning.
 */
export function generateW8A8GemvKernel(spec: W8A8MatmulSpec, v: W8A8GemvVariant): KernelSource {
  const WG = v.workgroupSize;
  const LANES = v.lanesPerColumn;
  const CPT = v.colsPerThread;
  checkPositiveInt('workgroupSize', WG);
  checkPositiveInt('lanesPerColumn', LANES);
  checkPositiveInt('colsPerThread', CPT);
  if (CPT > 8) throw new InputError(`w8a8-gemv: colsPerThread must be at most 8, got ${CPT}`);
  if (!isPow2(WG) || !isPow2(LANES) || LANES > WG) throw new InputError(`w8a8-gemv: workgroupSize (${WG}) and lanesPerColumn (${LANES}) must be powers of two, lanes at most the workgroup`);
  if (!spec.transB || spec.transA) throw new InputError('w8a8-gemv: B must be stored [N, K] (transB) and A untransposed');
  if (spec.K > W8A8_MAX_K) throw new InputError(`w8a8-gemv: K = ${spec.K} exceeds ${W8A8_MAX_K} (the quantized row lives in workgroup memory)`);
  const s = spec.actScale;
  if (s !== 'per-token' && !(Number.isFinite(s) && s > 0)) throw new InputError(`w8a8-gemv: the activation scale must be positive or 'per-token', got ${s}`);
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('w8a8-gemv: B is one [N, K] matrix shared by every batch');
  if (c.batch.value !== 1 && (spec.epilogue?.operands ?? []).some((o) => o.broadcast === 'col')) throw new InputError('w8a8-gemv: a per-row epilogue operand needs a single batch');
  const COLS = (WG / LANES) * CPT;
  const kWords = Math.ceil(c.K / 4);
  const nTiles = Math.ceil(c.nOut / COLS);
  const gated = c.G === 2;
  const dynamic = s === 'per-token';
  const parts = [
    { name: 'packed', wgslName: 'packed', type: 'array<u32>', comment: "B's int8, [N, K] row-major bytes in u32 words" },
    { name: 'scales', wgslName: 'scales', type: 'array<f32>', comment: 'one scale per output channel' },
  ];
  const { decls, list } = encodedWeightBindings(c, false, parts);
  const a = (i: string): string => toF32(c.dt.a, `a[${i}]`);
  const name = `w8a8-gemv-${dynamic ? 'token' : 'tensor'}-${v.packedDot ? 'dot4' : 'unpacked'}-l${LANES}-c${CPT}-wg${WG}`;
  const cs = Array.from({ length: CPT }, (_v, i) => i);
  const halves = gated ? ['acc', 'up'] : ['acc'];

  const main: string[] = [
    `@compute @workgroup_size(WG)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`,
    ...sizeLets(c),
    `  // always 1: multiplying loop bounds by it keeps lavapipe's compiler from unrolling them`,
    `  let one = nwg.z;`,
    `  let wid = wg.x + wg.y * nwg.x;`,
    `  let tile_n = wid % N_TILES;`,
    `  let rows = BATCH * M; // A's rows over every batch (B is shared)`,
    `  let row = wid / N_TILES;`,
    `  if (row >= rows) { return; } // uniform: the whole workgroup leaves`,
    `  let a_base = row * K;`,
  ];
  if (dynamic)
    main.push(
      `  // the row's absmax: a workgroup reduction`,
      `  var m = 0.0;`,
      `  for (var k = lid; k < K * one; k += WG) { m = max(m, abs(${a('a_base + k')})); }`,
      `  red_f[lid] = m;`,
      `  workgroupBarrier();`,
      `  for (var s = WG / 2u; s > 0u; s >>= 1u) {`,
      `    if (lid < s) { red_f[lid] = max(red_f[lid], red_f[lid + s]); }`,
      `    workgroupBarrier();`,
      `  }`,
      `  let amax = red_f[0];`,
      `  let a_scale = amax / 127.0;`,
      `  let a_inv = select(0.0, 127.0 / amax, amax > 0.0);`,
    );
  else main.push(`  let a_scale = A_SCALE;`, `  let a_inv = A_INV;`);
  main.push(
    `  // the row as int8, four to a word; zero past K`,
    `  for (var j = lid; j < K_WORDS * one; j += WG) {`,
    `    let k0 = 4u * j;`,
    `    var x = vec4<f32>(0.0);`,
    `    for (var t = 0u; t < 4u; t++) { if (k0 + t < K) { x[t] = ${a('a_base + k0 + t')}; } }`,
    `    xq[j] = pack_i8(vec4<i32>(clamp(round(x * a_inv), vec4<f32>(-127.0), vec4<f32>(127.0))));`,
    `  }`,
    `  workgroupBarrier();`,
    `  let lane = lid % LANES;`,
    `  let col0 = tile_n * COLS + (lid / LANES) * CPT; // this lane group's first column`,
    `  // columns past N_OUT compute on the last one and store nothing`,
    ...cs.map((c) => `  let colc${c} = min(col0 + ${c}u, N_OUT - 1u);`),
    `  ${halves.flatMap((h) => cs.map((c) => `var ${h}${c} = 0i;`)).join(' ')}${gated ? ' // up: the gate\'s second half, rows + N_OUT of B' : ''}`,
    `  for (var j = lane; j < K_WORDS * one; j += LANES) {`,
    `    let x = xq[j]; // one load of A's word serves CPT columns`,
    ...cs.map((c) => `    acc${c} += dot_i8(x, w_word(colc${c}, j));`),
    ...(gated ? cs.map((c) => `    up${c} += dot_i8(x, w_word(colc${c} + N_OUT, j));`) : []),
    `  }`,
    `  // the lanes' sums: red[h][c * WG + lid], a tree over the LANES lanes of each group`,
    ...halves.flatMap((h) => cs.map((c) => `  red_${h}[${c}u * WG + lid] = ${h}${c};`)),
    `  workgroupBarrier();`,
    `  for (var s = LANES / 2u; s > 0u; s >>= 1u) {`,
    `    if (lane < s) {`,
    `      for (var c = 0u; c < CPT; c++) {`,
    ...halves.map((h) => `        red_${h}[c * WG + lid] += red_${h}[c * WG + lid + s];`),
    `      }`,
    `    }`,
    `    workgroupBarrier();`,
    `  }`,
    `  if (lane == 0u) {`,
    ...cs.flatMap((c) => [
      `    store_out(0u, row, col0 + ${c}u, rows, f32(red_acc[${c}u * WG + lid]) * (a_scale * scales[colc${c}])${gated ? `, f32(red_up[${c}u * WG + lid]) * (a_scale * scales[colc${c} + N_OUT])` : ''});`,
    ]),
    `  }`,
    `}`,
  );
  const header = [
    `// tensorwright kernel: w8a8-matmul (${name})`,
    `//   out[m, n] = f32(sum_k qa[m, k] * qw[n, k]) * (sa * sw[n])${gated ? `, gated: ${spec.gated!.activation}(out[m, n]) * out[m, n + ${c.nOut}]` : ''}${spec.epilogue ? ', then the epilogue' : ''}`,
    `//   qa = clamp(round(A * (1 / sa)), -127, 127), sa ${dynamic ? 'per row: max|A[m, :]| / 127' : 'calibrated per tensor'}; qw int8 per output channel`,
    `//   A ${c.dt.a} [rows, ${c.K}], B int8 [${c.N}, ${c.K}], out ${c.dt.out}; ${COLS} columns per workgroup (${CPT} per lane group of ${LANES}); i32 accumulation`,
  ];
  const wgsl = assemble(c, {
    subgroups: false,
    header,
    consts: [
      `const WG: u32 = ${WG}u;`,
      `const LANES: u32 = ${LANES}u; // lanes per column`,
      `const CPT: u32 = ${CPT}u; // output columns per lane group`,
      `const COLS: u32 = ${COLS}u; // output columns per workgroup`,
      `const N_TILES: u32 = ${nTiles}u; // workgroups along N`,
      `const K_WORDS: u32 = ${kWords}u; // words of four int8 per row`,
      ...(dynamic ? [] : [`const A_SCALE: f32 = ${literal('f32', s)}; // the calibrated activation scale`, `const A_INV: f32 = ${literal('f32', Math.fround(1 / s))}; // f32(1 / A_SCALE)`]),
    ],
    decls,
    workgroupVars: [
      `var<workgroup> xq: array<u32, ${kWords}>; // the row of A as int8`,
      ...halves.map((h) => `var<workgroup> red_${h}: array<i32, ${WG * CPT}>; // lane sums, column c of the group at c * WG`),
      ...(dynamic ? [`var<workgroup> red_f: array<f32, ${WG}>;`] : []),
    ],
    fns: [...dotFns(v.packedDot), '', ...weightWordFn(c), '', ...storeFn(c)],
    main,
  });
  return {
    family: 'w8a8-matmul',
    variant: name,
    // `requires` is a global directive: it goes first, with any `enable`
    wgsl: v.packedDot ? `requires ${PACKED_DOT_FEATURE};\n${wgsl}` : wgsl,
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, 1),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, false),
  };
}
