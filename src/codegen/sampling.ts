/**
 * Sampling kernel family: picks the next token from one row of logits `[V]` on the GPU and writes only its id (one
 * `u32`), so decoding reads back 4 bytes instead of the logits. One workgroup does everything.
 *
 * - `argmax` (temperature 0): the first index of the largest logit, as run.c.
 * - `sample`: the host sampler's steps (src/runtime/sampling.ts, run.c): softmax of `logits / temperature`; optional
 *   top-k by value (the k largest probabilities, ties at the k-th value taken in index order, so a larger value is
 *   never dropped), renormalized; then either multinomial sampling in index order (`coin < cdf`; a coin past the
 *   last cdf takes the last token with a non-zero probability) or run.c's top-p: candidates
 *   `p >= (1 - topp) / (V - 1)`, sorted by descending probability (ties by index), cut after the cumulative sum
 *   first exceeds `topp`, then `r = coin * cum` picks the first sorted candidate whose cdf exceeds `r`.
 *
 * The settings are not compiled in: temperature, top-p (with its candidate cutoff), top-k and the coin are params
 * (see src/runtime/sampler-params.ts, which computes their values), so one compiled sampler takes any settings and
 * branches on them uniformly. Nothing is sorted. Probabilities are non-negative, so their f32 bit patterns order like
 * their values: the k-th largest value, the last value of the nucleus and the value group holding `r` are each found
 * by a binary search over bit patterns with one workgroup reduction per step (about 30 steps), and an element inside
 * a group of equal values is the n-th match in index order (a per-lane count, a scan, a scan of one lane's chunk).
 *
 * Same coin, same choice as the host for f32 logits, with one allowance: when `coin` (or `topp`) falls within f32
 * rounding of a cdf boundary, the two may pick neighbouring tokens of that boundary. The host sums in float64 in
 * sorted order, the kernel in f32 by reduction trees; WGSL's `exp` and division are not correctly rounded; and the
 * kernel divides by `f32(temperature)` and compares with `f32(topp)` where the host uses the doubles. Such coins are
 * about as rare as the rounding error (~1e-6 of draws; test/codegen-kernels.test.ts accepts a pick only if the exact
 * reference makes it for a coin within 1e-5). The top-k candidate set and ties of equal probabilities have no
 * allowance: they are chosen exactly as the host chooses them.
 *
 * Supported shapes: V from 2 to 2^24 (single workgroup: V = 128k costs ~100 passes over the row); the logits row may
 * be at a (dynamic) row offset of a `[S, V]` buffer (e.g. `seq - 1`, the last position of a prefill).
 * @module
 */
import { ShapeError } from '../errors.js';
import { SAMPLER_PARAM_NAMES } from '../runtime/sampler-params.js';
import { KernelParams, type DimLike, type KernelBinding, type KernelSource } from './kernel.js';
import { workgroupReduction } from './workgroup.js';
import { enableDirectives, kernelFeatures } from './wgsl.js';

/** What {@link generateSamplingKernel} builds. */
export interface SamplingSpec {
  /** Vocabulary size V. */
  readonly vocab: number;
  /** Storage type of the logits. */
  readonly dtype: 'f32' | 'f16';
  /**
   * `argmax` (temperature 0: no params besides the row) or `sample` (temperature, top-p, top-k and the coin come from
   * the params at run time, named by {@link SAMPLER_PARAM_NAMES}; values from `samplerParamValues`).
   */
  readonly mode: 'argmax' | 'sample';
  /** Row of the logits buffer to sample (default 0); e.g. `'seq-1'` for the last row of a `[seq, V]` buffer. */
  readonly row?: DimLike;
  /**
   * Element of the `token` buffer the chosen id is written to (default 0); e.g. the sampled row's index, so that one
   * launch per sampled row of a batch fills `token[0 .. rows-1]`.
   */
  readonly outIndex?: DimLike;
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

/**
 * GPU sampling over one logits row: bindings `logits`, [`probs` (f32 `[V]` scratch, `sample` only)], `token` (u32s;
 * the id goes to element `outIndex`); params: the row offset and the output index when dynamic, and (`sample` only) the settings and the coin of
 * {@link SAMPLER_PARAM_NAMES}. Grid `[1, 1, 1]`.
 * @throws {@link ShapeError} for V outside 1..2^24 (2..2^24 for `sample`).
 */
export function generateSamplingKernel(spec: SamplingSpec): KernelSource {
  const V = spec.vocab;
  if (!Number.isInteger(V) || V < 1 || V > 1 << 24) throw new ShapeError('sampling', `vocab must be in 1..2^24, got ${V}`);
  const sample = spec.mode === 'sample';
  if (sample && V < 2) throw new ShapeError('sampling', 'sampling needs a vocabulary of at least 2');
  const WG = spec.workgroupSize ?? 256;
  const params = new KernelParams();
  const rowRef = params.ref(spec.row ?? 0);
  const outRef = params.ref(spec.outIndex ?? 0);
  const dt = spec.dtype;
  const nodes = spec.nodes ?? [];
  const load = dt === 'f32' ? 'logits[ROW_BASE + i]' : 'f32(logits[ROW_BASE + i])';
  const features = kernelFeatures({ f16: dt === 'f16', subgroups: sample && !!spec.subgroups });
  const common = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: sampling (${sample ? 'temperature, top-k and top-p from params' : 'argmax'}, V=${V}, ${dt} logits)`,
  ];
  if (!sample) {
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
      `  if (lid == 0u) { token[${outRef}] = best_index[0]; }`,
      '}',
      '',
    ].join('\n');
    return { family: 'sampling', variant: `argmax-wg${WG}`, wgsl, bindings, params: [...params.list], grid: [1, 1, 1], nodes: [...nodes], features };
  }

  const P = SAMPLER_PARAM_NAMES;
  const coinRef = params.ref(P.coin);
  const temperatureRef = params.ref(P.temperature);
  const topkRef = params.ref(P.topk);
  const toppRef = params.ref(P.topp);
  const cutoffRef = params.ref(P.toppCutoff);
  const red = workgroupReduction({ workgroupSize: WG, subgroups: spec.subgroups ?? false, staticLoops: spec.staticLoops });
  const CHUNK = Math.ceil(V / WG);
  const hidden = spec.staticLoops === false;
  const hideArg = hidden ? ', red_half' : '';
  const hideParam = hidden ? ', red_half: u32' : '';
  const bindings: KernelBinding[] = [
    { name: 'logits', access: 'read' },
    { name: 'probs', access: 'read_write' },
    { name: 'token', access: 'read_write' },
  ];
  // every branch below is on params (uniform), so the reductions inside them run in uniform control flow
  const steps = [
    '  // 1. probabilities: softmax of logits / temperature (as the host: max, exp, sum, divide)',
    '  var mx = NEG_BIG;',
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { mx = max(mx, scaled_logit(i)); }',
    `  let row_max = ${red.call('max', 'mx')};`,
    '  var s = 0.0;',
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { let e = exp(scaled_logit(i) - row_max); probs[i] = e; s += e; }',
    `  let total = ${red.call('sum', 's')};`,
    '  for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { probs[i] = probs[i] / total; }',
    '  storageBarrier();',
    '',
    '  // 2. top-k by value: the k-th largest value by bisection on bit patterns (count(bits >= lo) >= top_k >',
    '  //    count(bits >= hi) = above); every larger value is kept, and the first top_k - above ties of the k-th',
    '  //    value in index order',
    '  if (top_k > 0u && top_k < VOCAB) {',
    '    var lo = 0u;',
    '    var hi = ONE_PLUS_BITS;',
    '    var above = 0.0;',
    '    while (hi - lo > 1u) {',
    '      let mid = lo + (hi - lo) / 2u;',
    `      let n = ${red.call('sum', 'count_at_least(mid, lid)')};`,
    '      if (n >= f32(top_k)) { lo = mid; } else { hi = mid; above = n; }',
    '    }',
    `    let last_tie = nth_match(lo, false, top_k - u32(above) - 1u, lid${hideArg});`,
    '    var kept = 0.0;',
    '    for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) {',
    '      let b = bitcast<u32>(probs[i]);',
    '      if (b > lo || (b == lo && i <= last_tie)) { kept += probs[i]; } else { probs[i] = 0.0; }',
    '    }',
    `    let kept_total = ${red.call('sum', 'kept')};`,
    '    storageBarrier();',
    '    for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { probs[i] = probs[i] / kept_total; }',
    '    storageBarrier();',
    '  }',
    '',
    '  var chosen = NONE;',
    '  if (topp_bits != 0u) {',
    '    // 3. top-p: the nucleus ends inside the group of value v* = the largest v with mass(p >= v) > top_p',
    '    //    (candidates are p >= cutoff); if even all candidates do not exceed top_p, the nucleus is all of them',
    '    let top_p = bitcast<f32>(topp_bits);',
    `    let all_mass = ${red.call('sum', 'mass_at_least(cutoff_bits, lid)')};`,
    '    var v_lo = cutoff_bits;',
    '    var v_hi = ONE_PLUS_BITS;',
    '    var mass_above = 0.0; // mass(bits >= v_hi)',
    '    if (all_mass > top_p) {',
    '      while (v_hi - v_lo > 1u) {',
    '        let mid = v_lo + (v_hi - v_lo) / 2u;',
    `        let m = ${red.call('sum', 'mass_at_least(mid, lid)')};`,
    '        if (m > top_p) { v_lo = mid; } else { v_hi = mid; mass_above = m; }',
    '      }',
    '    }',
    `    let group_size = ${red.call('sum', 'count_equal(v_lo, lid)')};`,
    '    let v_star = bitcast<f32>(v_lo);',
    '    // ties of v* enter one by one (by index) until the cumulative sum exceeds top_p',
    '    var in_group = group_size;',
    '    if (all_mass > top_p) { in_group = clamp(floor((top_p - mass_above) / v_star) + 1.0, 1.0, group_size); }',
    '    let cum = select(all_mass, mass_above + in_group * v_star, all_mass > top_p);',
    '    let r = coin * cum;',
    '    // 4. the value group holding r: largest w >= v* with included mass(p >= w) > r',
    '    var w_lo = v_lo;',
    '    var w_hi = ONE_PLUS_BITS;',
    '    var before = 0.0; // included mass(bits >= w_hi)',
    '    while (w_hi - w_lo > 1u) {',
    '      let mid = w_lo + (w_hi - w_lo) / 2u;',
    `      let m = ${red.call('sum', 'mass_at_least(mid, lid)')};`,
    '      if (m > r) { w_lo = mid; } else { w_hi = mid; before = m; }',
    '    }',
    '    let w = bitcast<f32>(w_lo);',
    '    var w_count = in_group;',
    `    if (w_lo != v_lo) { w_count = ${red.call('sum', 'count_equal(w_lo, lid)')}; }`,
    '    // within the group, the sorted cdf grows by w per element (index order)',
    '    let nth = u32(clamp(floor((r - before) / w), 0.0, w_count - 1.0));',
    `    chosen = nth_match(w_lo, false, nth, lid${hideArg});`,
    '  } else {',
    '    // 3. multinomial in index order: the first i with coin < cdf(i) (lanes own contiguous chunks)',
    '    let lo_i = min(lid * CHUNK, VOCAB);',
    '    let hi_i = min(lo_i + CHUNK, VOCAB);',
    '    var part = 0.0;',
    '    for (var i = lo_i; i < hi_i; i++) { part += probs[i]; }',
    `    var cdf = exclusive_scan(part, lid${hideArg});`,
    '    if (lid == 0u) { found = NONE; }',
    '    workgroupBarrier();',
    '    if (cdf <= coin && coin < cdf + part) {',
    '      for (var i = lo_i; i < hi_i; i++) {',
    '        cdf += probs[i];',
    '        if (coin < cdf) { found = i; break; }',
    '      }',
    '    }',
    '    chosen = workgroupUniformLoad(&found);',
    '    if (chosen == NONE) {',
    '      // the coin is past the last cdf (rounding): the last token with a non-zero probability',
    '      var last = -1.0;',
    '      for (var i = lid; i < VOCAB; i += WORKGROUP_SIZE) { if (probs[i] > 0.0) { last = f32(i); } }',
    `      let last_all = ${red.call('max', 'last')};`,
    '      if (last_all >= 0.0) { chosen = u32(last_all); }',
    '    }',
    '  }',
    `  if (lid == 0u) { token[${outRef}] = select(chosen, VOCAB - 1u, chosen == NONE); }`,
  ];
  const wgsl = [
    ...common,
    '//   one workgroup; probabilities live in the probs scratch buffer; no sorting (bisection on f32 bit patterns)',
    '',
    `const VOCAB: u32 = ${V}u;`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    `const CHUNK: u32 = ${CHUNK}u; // contiguous elements per lane for index-ordered scans`,
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
    'var<private> temperature: f32;',
    '',
    `fn scaled_logit(i: u32) -> f32 { return ${load} / temperature; }`,
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
    `fn exclusive_scan(v: f32, lid: u32${hideParam}) -> f32 {`,
    '  scan_buf[lid] = v;',
    '  workgroupBarrier();',
    `  for (var off = 1u; off ${hidden ? '<= red_half' : '< WORKGROUP_SIZE'}; off <<= 1u) {`,
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
    `fn nth_match(bits: u32, at_least: bool, n: u32, lid: u32${hideParam}) -> u32 {`,
    '  let lo_i = min(lid * CHUNK, VOCAB);',
    '  let hi_i = min(lo_i + CHUNK, VOCAB);',
    '  var count = 0u;',
    '  for (var i = lo_i; i < hi_i; i++) { count += select(0u, 1u, matches(probs[i], bits, at_least)); }',
    `  let first = u32(exclusive_scan(f32(count), lid${hideArg}));`,
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
    '  // the settings (src/runtime/sampler-params.ts): f32 bit patterns and counts, uniform across the workgroup',
    `  temperature = bitcast<f32>(${temperatureRef});`,
    `  let coin = bitcast<f32>(${coinRef});`,
    `  let top_k = ${topkRef}; // 0 = off`,
    `  let topp_bits = ${toppRef}; // 0 = off`,
    `  let cutoff_bits = ${cutoffRef}; // smallest f32 >= (1 - topp) / (V - 1)`,
    ...steps,
    '}',
    '',
  ].join('\n');
  return {
    family: 'sampling',
    variant: `sample-wg${WG}${red.subgroups ? '-subgroup' : ''}`,
    wgsl,
    bindings,
    params: [...params.list],
    grid: [1, 1, 1],
    nodes: [...nodes],
    features,
  };
}
