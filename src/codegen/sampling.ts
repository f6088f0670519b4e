/**
 * Sampling kernel family: picks the next token from one row of logits `[V]` on the GPU and writes only its id (one
 * `u32`), so decoding reads back 4 bytes instead of the logits. One workgroup does everything.
 *
 * - `argmax` (temperature 0): the first index of the largest logit, as run.c.
 * - `sample`: the host sampler's steps (src/runtime/sampling.ts, run.c): softmax of `logits / temperature`; optional
 *   top-k exactly as the host does it (the k-th largest value v, then the first k elements in index order with
 *   `p >= v`, renormalized); then either multinomial sampling in
 *   index order (`coin < cdf`) or run.c's top-p: candidates `p >= (1 - topp) / (V - 1)`, sorted by descending
 *   probability (ties by index), cut after the cumulative sum first exceeds `topp`, then `r = coin * cum` picks the
 *   first sorted candidate whose cdf exceeds `r`.
 *
 * Nothing is sorted. Probabilities are non-negative, so their f32 bit patterns order like their values: the k-th
 * largest value, the last value of the nucleus and the value group holding `r` are each found by a binary search over
 * bit patterns with one workgroup reduction per step (about 30 steps), and an element inside a group of equal values
 * is the n-th match in index order (a per-lane count, a scan, a scan of one lane's chunk). Same coin, same choice as
 * the host for f32 logits except when `coin` (or `topp`) falls within f32 rounding of a cdf boundary: the host sums in
 * float64 in sorted order, the kernel in f32 by reduction trees; WGSL's `exp` and division are not correctly rounded;
 * and the kernel divides by `f32(temperature)` and compares with `f32(topp)` where the host uses the doubles. Such
 * coins are about as rare as the rounding error (~1e-6 of draws). Ties (equal probabilities) are handled exactly as
 * the host orders them.
 *
 * Supported shapes: V from 2 to 2^24 (single workgroup: V = 128k costs ~100 passes over the row); the logits row may
 * be at a (dynamic) row offset of a `[S, V]` buffer (e.g. `seq - 1`, the last position of a prefill). Settings are
 * compile-time constants; the coin is a run-time param (f32 bits).
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { KernelParams, type DimLike, type KernelBinding, type KernelSource } from './kernel.js';
import { workgroupReduction } from './workgroup.js';
import { enableDirectives, kernelFeatures, literal } from './wgsl.js';

/** What {@link generateSamplingKernel} builds. */
export interface SamplingSpec {
  /** Vocabulary size V. */
  readonly vocab: number;
  /** Storage type of the logits. */
  readonly dtype: 'f32' | 'f16';
  /** 0 = argmax; otherwise the softmax temperature. */
  readonly temperature: number;
  /** Nucleus threshold; values outside (0, 1) disable top-p (default 1). */
  readonly topp?: number;
  /** Keep only the k most likely tokens (0 = off, the default). */
  readonly topk?: number;
  /** Row of the logits buffer to sample (default 0); e.g. `'seq-1'` for the last row of a `[seq, V]` buffer. */
  readonly row?: DimLike;
  /** Name of the param carrying the coin's f32 bits (default `'coin_bits'`); see {@link coinParamValue}. */
  readonly coinParam?: string;
  /** Lanes of the workgroup (default 256). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** Reduce with subgroup operations (device `subgroups` feature): far fewer barriers per bisection step. */
  readonly subgroups?: boolean;
  /**
   * Constant trip counts for the reduction trees and scans (default true). `false` hides them from the compiler: the
   * kernel inlines a dozen reductions, and LLVM-based software rasterizers (lavapipe) then compile it several times
   * faster.
   */
  readonly staticLoops?: boolean;
  /** The graph nodes implemented (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/** The params value carrying `coin` (in [0, 1)): its f32 bit pattern as a u32. */
export function coinParamValue(coin: number): number {
  return new Uint32Array(Float32Array.of(coin).buffer)[0];
}

/** Bits of the smallest f32 >= x (x >= 0). */
function f32BitsAtLeast(x: number): number {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  f[0] = x;
  if (f[0] < x) u[0] += 1;
  return u[0];
}

/**
 * GPU sampling over one logits row: bindings `logits`, [`probs` (f32 `[V]` scratch, `sample` only)], `token` (one
 * u32); params: the coin param (`sample` only) and the row offset when dynamic. Grid `[1, 1, 1]`.
 * @throws {@link ShapeError} for V < 1 (or < 2 with top-p); {@link InputError} for bad settings.
 */
export function generateSamplingKernel(spec: SamplingSpec): KernelSource {
  const V = spec.vocab;
  if (!Number.isInteger(V) || V < 1 || V > 1 << 24) throw new ShapeError('sampling', `vocab must be in 1..2^24, got ${V}`);
  const T = spec.temperature;
  if (!(T >= 0) || !Number.isFinite(T)) throw new InputError(`temperature must be >= 0, got ${T}`);
  const topp = spec.topp ?? 1;
  const topk = spec.topk ?? 0;
  if (!(topp >= 0 && topp <= 1)) throw new InputError(`topp must be in [0, 1], got ${topp}`);
  if (!Number.isInteger(topk) || topk < 0) throw new InputError(`topk must be a non-negative integer, got ${topk}`);
  const WG = spec.workgroupSize ?? 256;
  const params = new KernelParams();
  const rowRef = params.ref(spec.row ?? 0);
  const dt = spec.dtype;
  const nodes = spec.nodes ?? [];
  const load = dt === 'f32' ? 'logits[ROW_BASE + i]' : 'f32(logits[ROW_BASE + i])';
  const features = kernelFeatures({ f16: dt === 'f16', subgroups: T !== 0 && !!spec.subgroups });
  const common = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: sampling (${T === 0 ? 'argmax' : `temperature ${T}${topk > 0 && topk < V ? `, top-k ${topk}` : ''}${topp > 0 && topp < 1 ? `, top-p ${topp}` : ''}`}, V=${V}, ${dt} logits)`,
  ];
  if (T === 0) {
    const bindings: KernelBinding[] = [{ name: 'logits', access: 'read' }, { name: 'token', access: 'read_write' }];
    const wgsl = [
      ...common,
      '//   one workgroup: each lane keeps the first max of its strided elements, then a (value, index) tree',
      '',
      `const VOCAB: u32 = ${V}u;`,
      `const WORKGROUP_SIZE: u32 = ${WG}u;`,
      'const NEG_BIG: f32 = bitcast<f32>(0xff7fffffu); // -FLT_MAX',
      '',
      `@group(0) @binding(0) var<storage, read> logits: array<${dt}>; // [.., VOCAB]`,
      '@group(0) @binding(1) var<storage, read_write> token: array<u32>; // [1] the chosen id',
      params.decl(bindings.length),
      `var<workgroup> best_value: array<f32, ${WG}>;`,
      `var<workgroup> best_index: array<u32, ${WG}>;`,
      '',
      '@compute @workgroup_size(WORKGROUP_SIZE)',
      'fn main(@builtin(local_invocation_index) lid: u32) {',
      `  let ROW_BASE = ${rowRef} * VOCAB;`,
      '  var bv = NEG_BIG;',
      '  var bi = 0xffffffffu;',
      `  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { let x = ${load}; if (x > bv || bi == 0xffffffffu) { bv = x; bi = i; } }`,
      '  best_value[lid] = bv;',
      '  best_index[lid] = bi;',
      '  workgroupBarrier();',
      '  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride >>= 1u) {',
      '    if (lid < stride) {',
      '      let v = best_value[lid + stride];',
      '      let j = best_index[lid + stride];',
      '      // larger value wins; equal values: the lower index (run.c keeps the first max)',
      '      if (j != 0xffffffffu && (best_index[lid] == 0xffffffffu || v > best_value[lid] || (v == best_value[lid] && j < best_index[lid]))) {',
      '        best_value[lid] = v;',
      '        best_index[lid] = j;',
      '      }',
      '    }',
      '    workgroupBarrier();',
      '  }',
      '  if (lid == 0u) { token[0] = best_index[0]; }',
      '}',
      '',
    ].join('\n');
    return { family: 'sampling', variant: `argmax-wg${WG}`, wgsl, bindings, params: [...params.list], grid: [1, 1, 1], nodes: [...nodes], features };
  }

  const useTopk = topk > 0 && topk < V;
  const useTopp = topp > 0 && topp < 1;
  if (useTopp && V < 2) throw new ShapeError('sampling', 'top-p needs a vocabulary of at least 2');
  const coinRef = params.ref(spec.coinParam ?? 'coin_bits');
  const red = workgroupReduction({ workgroupSize: WG, subgroups: spec.subgroups ?? false, staticLoops: spec.staticLoops });
  const CHUNK = Math.ceil(V / WG);
  const hideArg = spec.staticLoops === false ? ', red_half' : '';
  const cutoffBits = useTopp ? f32BitsAtLeast((1 - topp) / (V - 1)) : 0;
  const bindings: KernelBinding[] = [
    { name: 'logits', access: 'read' },
    { name: 'probs', access: 'read_write' },
    { name: 'token', access: 'read_write' },
  ];
  const steps: string[] = [];
  steps.push(
    '  // 1. probabilities: softmax of logits / TEMPERATURE (as the host: max, exp, sum, divide)',
    '  var mx = NEG_BIG;',
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { mx = max(mx, scaled_logit(i)); }',
    `  let row_max = ${red.call('max', 'mx')};`,
    '  var s = 0.0;',
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { let e = exp(scaled_logit(i) - row_max); probs[i] = e; s += e; }',
    `  let total = ${red.call('sum', 's')};`,
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { probs[i] = probs[i] / total; }',
    '  storageBarrier();',
  );
  if (useTopk)
    steps.push(
      '',
      '  // 2. top-k: the k-th largest value by bisection on bit patterns (count(bits >= lo) >= TOP_K > count(bits >= hi))',
      '  var lo = 0u;',
      '  var hi = ONE_PLUS_BITS;',
      '  while (hi - lo > 1u) {',
      '    let mid = lo + (hi - lo) / 2u;',
      `    let n = ${red.call('sum', 'count_at_least(mid, lid)')};`,
      '    if (n >= f32(TOP_K)) { lo = mid; } else { hi = mid; }',
      '  }',
      '  // keep p >= the k-th value in index order until TOP_K are kept, as the host does (so ties of the k-th value',
      '  // at low indices can push out a larger value at a higher index)',
      `  let last_kept = nth_match(lo, true, TOP_K - 1u, lid${hideArg});`,
      '  var kept = 0.0;',
      '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) {',
      '    if (bitcast<u32>(probs[i]) >= lo && i <= last_kept) { kept += probs[i]; } else { probs[i] = 0.0; }',
      '  }',
      `  let kept_total = ${red.call('sum', 'kept')};`,
      '  storageBarrier();',
      '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { probs[i] = probs[i] / kept_total; }',
      '  storageBarrier();',
    );
  if (useTopp)
    steps.push(
      '',
      '  // 3. top-p: the nucleus ends inside the group of value v* = the largest v with mass(p >= v) > TOP_P',
      '  //    (candidates are p >= CUTOFF); if even all candidates do not exceed TOP_P, the nucleus is all of them',
      `  let all_mass = ${red.call('sum', 'mass_at_least(CUTOFF_BITS, lid)')};`,
      '  var v_lo = CUTOFF_BITS;',
      '  var v_hi = ONE_PLUS_BITS;',
      '  var mass_above = 0.0; // mass(bits >= v_hi)',
      '  if (all_mass > TOP_P) {',
      '    while (v_hi - v_lo > 1u) {',
      '      let mid = v_lo + (v_hi - v_lo) / 2u;',
      `      let m = ${red.call('sum', 'mass_at_least(mid, lid)')};`,
      '      if (m > TOP_P) { v_lo = mid; } else { v_hi = mid; mass_above = m; }',
      '    }',
      '  }',
      `  let group_size = ${red.call('sum', 'count_equal(v_lo, lid)')};`,
      '  let v_star = bitcast<f32>(v_lo);',
      '  // ties of v* enter one by one (by index) until the cumulative sum exceeds TOP_P',
      '  var in_group = group_size;',
      '  if (all_mass > TOP_P) { in_group = clamp(floor((TOP_P - mass_above) / v_star) + 1.0, 1.0, group_size); }',
      '  let cum = select(all_mass, mass_above + in_group * v_star, all_mass > TOP_P);',
      '  let r = coin * cum;',
      '  // 4. the value group holding r: largest w >= v* with included mass(p >= w) > r',
      '  var w_lo = v_lo;',
      '  var w_hi = ONE_PLUS_BITS;',
      '  var before = 0.0; // included mass(bits >= w_hi)',
      '  while (w_hi - w_lo > 1u) {',
      '    let mid = w_lo + (w_hi - w_lo) / 2u;',
      `    let m = ${red.call('sum', 'mass_at_least(mid, lid)')};`,
      '    if (m > r) { w_lo = mid; } else { w_hi = mid; before = m; }',
      '  }',
      '  let w = bitcast<f32>(w_lo);',
      `  let w_count = select(${red.call('sum', 'count_equal(w_lo, lid)')}, in_group, w_lo == v_lo);`,
      '  // within the group, the sorted cdf grows by w per element (index order)',
      '  let nth = u32(clamp(floor((r - before) / w), 0.0, w_count - 1.0));',
      `  let chosen = nth_match(w_lo, false, nth, lid${hideArg});`,
      '  if (lid == 0u) { token[0] = select(chosen, VOCAB - 1u, chosen == NONE); }',
    );
  else
    steps.push(
      '',
      '  // 3. multinomial in index order: the first i with coin < cdf(i) (lanes own contiguous chunks)',
      '  let lo_i = min(lid * CHUNK, VOCAB);',
      '  let hi_i = min(lo_i + CHUNK, VOCAB);',
      '  var part = 0.0;',
      '  for (var i = lo_i; i < hi_i; i++) { part += probs[i]; }',
      `  var cdf = exclusive_scan(part, lid${hideArg});`,
      '  if (lid == 0u) { found = NONE; }',
      '  workgroupBarrier();',
      '  if (cdf <= coin && coin < cdf + part) {',
      '    for (var i = lo_i; i < hi_i; i++) {',
      '      cdf += probs[i];',
      '      if (coin < cdf) { found = i; break; }',
      '    }',
      '  }',
      '  let chosen = workgroupUniformLoad(&found);',
      '  if (lid == 0u) { token[0] = select(chosen, VOCAB - 1u, chosen == NONE); }',
    );
  const wgsl = [
    ...common,
    '//   one workgroup; probabilities live in the probs scratch buffer; no sorting (bisection on f32 bit patterns)',
    '',
    `const VOCAB: u32 = ${V}u;`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    `const CHUNK: u32 = ${CHUNK}u; // contiguous elements per lane for index-ordered scans`,
    `const TEMPERATURE: f32 = ${literal('f32', T)};`,
    ...(useTopk ? [`const TOP_K: u32 = ${topk}u;`] : []),
    ...(useTopp
      ? [
          `const TOP_P: f32 = ${literal('f32', topp)};`,
          `const CUTOFF_BITS: u32 = 0x${cutoffBits.toString(16)}u; // smallest f32 >= (1 - topp) / (V - 1)`,
        ]
      : []),
    'const ONE_PLUS_BITS: u32 = 0x3f800001u; // just above the bits of 1.0, an upper bound of every probability',
    'const NEG_BIG: f32 = bitcast<f32>(0xff7fffffu); // -FLT_MAX',
    'const NONE: u32 = 0xffffffffu;',
    '',
    `@group(0) @binding(0) var<storage, read> logits: array<${dt}>; // [.., VOCAB]`,
    '@group(0) @binding(1) var<storage, read_write> probs: array<f32>; // [VOCAB] scratch',
    '@group(0) @binding(2) var<storage, read_write> token: array<u32>; // [1] the chosen id',
    params.decl(bindings.length),
    red.module,
    `var<workgroup> scan_buf: array<f32, ${WG}>;`,
    'var<workgroup> found: u32;',
    'var<private> ROW_BASE: u32;',
    '',
    `fn scaled_logit(i: u32) -> f32 { return ${load} / TEMPERATURE; }`,
    '// per-lane parts over the strided elements of this lane',
    'fn count_at_least(bits: u32, lid: u32) -> f32 {',
    '  var n = 0u;',
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { n += select(0u, 1u, bitcast<u32>(probs[i]) >= bits); }',
    '  return f32(n);',
    '}',
    'fn count_equal(bits: u32, lid: u32) -> f32 {',
    '  var n = 0u;',
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { n += select(0u, 1u, bitcast<u32>(probs[i]) == bits); }',
    '  return f32(n);',
    '}',
    'fn mass_at_least(bits: u32, lid: u32) -> f32 {',
    '  var m = 0.0;',
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { let p = probs[i]; if (bitcast<u32>(p) >= bits) { m += p; } }',
    '  return m;',
    '}',
    '// exclusive prefix sum over lanes (Hillis-Steele); uniform control flow',
    `fn exclusive_scan(v: f32, lid: u32${spec.staticLoops === false ? ', red_half: u32' : ''}) -> f32 {`,
    '  scan_buf[lid] = v;',
    '  workgroupBarrier();',
    `  for (var off = 1u; off ${spec.staticLoops === false ? '<= red_half' : '< WORKGROUP_SIZE'}; off <<= 1u) {`,
    '    var add = 0.0;',
    '    if (lid >= off) { add = scan_buf[lid - off]; }',
    '    workgroupBarrier();',
    '    scan_buf[lid] += add;',
    '    workgroupBarrier();',
    '  }',
    '  let inclusive = scan_buf[lid];',
    '  workgroupBarrier();',
    '  return inclusive - v;',
    '}',
    '// index of the n-th (from 0) element whose bits equal `bits` (or are >= `bits`), in index order; NONE if none',
    'fn matches(p: f32, bits: u32, at_least: bool) -> bool { return select(bitcast<u32>(p) == bits, bitcast<u32>(p) >= bits, at_least); }',
    `fn nth_match(bits: u32, at_least: bool, n: u32, lid: u32${spec.staticLoops === false ? ', red_half: u32' : ''}) -> u32 {`,
    '  let lo_i = min(lid * CHUNK, VOCAB);',
    '  let hi_i = min(lo_i + CHUNK, VOCAB);',
    '  var count = 0u;',
    '  for (var i = lo_i; i < hi_i; i++) { count += select(0u, 1u, matches(probs[i], bits, at_least)); }',
    `  let first = u32(exclusive_scan(f32(count), lid${spec.staticLoops === false ? ', red_half' : ''}));`,
    '  if (lid == 0u) { found = NONE; }',
    '  workgroupBarrier();',
    '  if (first <= n && n < first + count) {',
    '    var seen = first;',
    '    for (var i = lo_i; i < hi_i; i++) {',
    '      if (matches(probs[i], bits, at_least)) {',
    '        if (seen == n) { found = i; break; }',
    '        seen++;',
    '      }',
    '    }',
    '  }',
    '  let result = workgroupUniformLoad(&found);',
    '  workgroupBarrier();',
    '  return result;',
    '}',
    '',
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    `fn main(@builtin(local_invocation_index) lid: u32${red.entryParams}) {`,
    ...(red.prologue ? [red.prologue] : []),
    `  ROW_BASE = ${rowRef} * VOCAB;`,
    `  let coin = bitcast<f32>(${coinRef});`,
    ...steps,
    '}',
    '',
  ].join('\n');
  return {
    family: 'sampling',
    variant: `sample${useTopk ? '-topk' : ''}${useTopp ? '-topp' : '-multinomial'}-wg${WG}${red.subgroups ? '-subgroup' : ''}`,
    wgsl,
    bindings,
    params: [...params.list],
    grid: [1, 1, 1],
    nodes: [...nodes],
    features,
  };
}
