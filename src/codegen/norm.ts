/**
 * Normalization kernel family: `rmsnorm` and `layernorm` over the last axis of a `[rows, cols]` view (rows = product
 * of the leading dims, possibly dynamic through the params uniform), one workgroup per row, with an optional fused
 * elementwise epilogue (the matmul generator's {@link MatmulEpilogue} shape: extra operands broadcast by row, column,
 * full shape or scalar, and a WGSL expression of the normalized value).
 *
 * Semantics match the CPU reference: rmsnorm `w * (x * 1/sqrt(mean(x²) + eps))`; layernorm
 * `(x - mean) / sqrt(var + eps) * w + b` with the variance computed from the centred values (two passes, no
 * cancellation). Sums are f32, reduced across the workgroup by {@link workgroupReduction}.
 *
 * Supported shapes: any static `cols` >= 1, any row count (grids above 65535 rows are split over two dimensions);
 * f32 or f16 storage, f32 math. Variants: workgroup size 64/128/256, and `subgroupAdd` reductions when the device has
 * the `subgroups` feature.
 *
 * This file also holds the pieces the other row-wise kernels share: {@link DimLike}, {@link KernelParams} (dims to
 * params-uniform fields) and {@link workgroupReduction} (deterministic workgroup sum/max).
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { parseDim } from '../ir/dim.js';
import { paramsStruct, type GridExpr, type KernelBinding, type KernelSource } from './kernel.js';
import type { MatmulEpilogue } from './matmul.js';
import { literal, WGSL_HELPERS, wgslComment } from './wgsl.js';

/** A dimension: a number, or a dim expression over graph symbols evaluated at run time (`'seq'`, `'batch*seq'`). */
export type DimLike = number | string;

/** Collects a kernel's params uniform: each distinct dim expression becomes one `u32` field `params.p<k>`. */
export class KernelParams {
  /** The param expressions, in field order (a {@link KernelSource.params}). */
  readonly list: string[] = [];

  /** `d` as a number or a canonical expression (whitespace removed, constant expressions folded). */
  static canon(d: DimLike, what: string): number | string {
    if (typeof d === 'number') {
      if (!Number.isInteger(d) || d < 0) throw new InputError(`${what} must be a non-negative integer, got ${d}`);
      return d;
    }
    const parsed = parseDim(d);
    if (typeof parsed === 'number') return KernelParams.canon(parsed, what);
    return d.replace(/\s+/g, '');
  }

  /** The WGSL `u32` expression of `d`: a literal, or the params field holding it (added on first use). */
  ref(d: DimLike): string {
    const c = KernelParams.canon(d, 'dim');
    if (typeof c === 'number') return `${c}u`;
    let i = this.list.indexOf(c);
    if (i < 0) i = this.list.push(c) - 1;
    return `params.p${i}`;
  }

  /** The grid expression of `d` (a param's own text, which `evalGrid` resolves by position). */
  grid(d: DimLike): GridExpr {
    const c = KernelParams.canon(d, 'dim');
    if (typeof c === 'string') this.ref(c);
    return c;
  }

  /** The params struct declaration at `@binding(binding)` (empty when there are no params). */
  decl(binding: number): string {
    return paramsStruct(this.list, binding);
  }
}

/** A grid covering `count` workgroups (a dim) in x, spilling into y above 65535; pair with `linearWorkgroup`. */
export function splitGrid(count: GridExpr): [GridExpr, GridExpr, GridExpr] {
  if (typeof count === 'number') return [Math.min(count, 65535), Math.ceil(count / 65535), 1];
  return [{ min: [count, 65535] }, { ceilDiv: [count, 65535] }, 1];
}

/** Options of {@link workgroupReduction}. */
export interface WorkgroupReductionOptions {
  /** Workgroup size (a power of two). */
  readonly workgroupSize: number;
  /** Use `subgroupAdd`/`subgroupMax` (needs the `subgroups` feature). */
  readonly subgroups: boolean;
  /**
   * Constant trip count for the tree loop (default true; GPU compilers unroll it). `false` hides it from the compiler,
   * so each inlined reduction stays one loop: LLVM-based software rasterizers (lavapipe) compile kernels with many
   * reductions several times faster.
   */
  readonly staticLoops?: boolean;
  /** Name of the kernel's own `@builtin(num_workgroups)` parameter, if it has one (a builtin may appear only once). */
  readonly numWorkgroups?: string;
}

/** WGSL pieces of a workgroup reduction: declarations, functions, entry-point builtins, prologue, call syntax. */
export interface WorkgroupReduction {
  /** Whether the kernel needs `enable subgroups;`. */
  readonly subgroups: boolean;
  /** Module-scope declarations and the `reduce_sum`/`reduce_max` functions. */
  readonly module: string;
  /** Extra entry-point parameters (leading comma included, or empty); the kernel must not declare them itself. */
  readonly entryParams: string;
  /** Statements to run at the start of `main`, in uniform control flow. */
  readonly prologue: string;
  /** The call reducing `value` (an f32 expression); returns a workgroup-uniform f32. Must run in uniform control flow. */
  call(op: 'sum' | 'max', value: string): string;
}

/**
 * A deterministic workgroup-wide f32 sum or max whose result is uniform (safe to branch on). Without subgroups: a
 * shared-memory tree. With subgroups: `subgroupAdd`/`subgroupMax`, then one partial per subgroup combined in a fixed
 * order; because WGSL does not promise that subgroups are consecutive ranges of `local_invocation_index`, the
 * prologue checks that they are (every subgroup full and aligned) and the kernel falls back to the tree otherwise.
 * Callers pass `lid` (the local invocation index) in scope.
 */
export function workgroupReduction(o: WorkgroupReductionOptions): WorkgroupReduction {
  const WG = o.workgroupSize;
  const hidden = o.staticLoops === false;
  const extra = hidden ? ', red_half: u32' : '';
  if (!Number.isInteger(WG) || WG < 1 || (WG & (WG - 1)) !== 0) throw new InputError(`workgroup reductions need a power-of-two workgroup size, got ${WG}`);
  const fn = (op: 'sum' | 'max'): string => {
    const comb = (a: string, b: string): string => (op === 'sum' ? `${a} + ${b}` : `max(${a}, ${b})`);
    const sg = o.subgroups
      ? [
          '  if (sg_linear) {',
          `    let part = ${op === 'sum' ? 'subgroupAdd' : 'subgroupMax'}(v);`,
          '    if (sg_lane == 0u) { red_buf[lid / sg_size] = part; }',
          '    workgroupBarrier();',
          '    if (lid == 0u) {',
          '      var acc = red_buf[0];',
          `      for (var k = 1u; k < REDUCE_SIZE / sg_size; k++) { acc = ${comb('acc', 'red_buf[k]')}; }`,
          '      red_result = acc;',
          '    }',
          '    return workgroupUniformLoad(&red_result);',
          '  }',
        ]
      : [];
    return [
      `fn reduce_${op}(v: f32, lid: u32${o.subgroups ? ', sg_linear: bool' : ''}${extra}) -> f32 {`,
      ...sg,
      '  red_buf[lid] = v;',
      '  workgroupBarrier();',
      `  for (var stride = ${hidden ? 'red_half' : 'REDUCE_SIZE / 2u'}; stride > 0u; stride >>= 1u) {`,
      `    if (lid < stride) { red_buf[lid] = ${comb('red_buf[lid]', 'red_buf[lid + stride]')}; }`,
      '    workgroupBarrier();',
      '  }',
      '  if (lid == 0u) { red_result = red_buf[0]; }',
      '  return workgroupUniformLoad(&red_result);',
      '}',
    ].join('\n');
  };
  const module = [
    `const REDUCE_SIZE: u32 = ${WG}u; // lanes taking part in reductions (the workgroup)`,
    `var<workgroup> red_buf: array<f32, ${WG}>; // reduction scratch`,
    'var<workgroup> red_result: f32; // reduction result, read back uniformly',
    ...(o.subgroups
      ? [
          'var<workgroup> red_nonlinear: atomic<u32>; // set when some subgroup is not an aligned range of lanes',
          'var<workgroup> red_flag: u32;',
          'var<private> sg_lane: u32;',
          'var<private> sg_size: u32;',
        ]
      : []),
    fn('sum'),
    fn('max'),
  ].join('\n');
  const prologue = [
    ...(hidden ? [`  let red_half = min(REDUCE_SIZE / 2u, ${o.numWorkgroups ?? 'red_nwg'}.x | REDUCE_SIZE); // == REDUCE_SIZE / 2, not foldable`] : []),
    ...(o.subgroups
      ? [
          '  sg_lane = sg_lane_in;',
          '  sg_size = sg_size_in;',
          '  // subgroup reductions assume aligned ranges of lanes per subgroup; otherwise use the shared-memory tree',
          '  let sg_first = subgroupMin(lid);',
          '  let sg_last = subgroupMax(lid);',
          '  if (sg_first % sg_size_in != 0u || sg_last - sg_first != sg_size_in - 1u) { atomicOr(&red_nonlinear, 1u); }',
          '  workgroupBarrier();',
          '  if (lid == 0u) { red_flag = atomicLoad(&red_nonlinear); }',
          '  let sg_linear = workgroupUniformLoad(&red_flag) == 0u;',
        ]
      : []),
  ].join('\n');
  return {
    subgroups: o.subgroups,
    module,
    entryParams:
      (o.subgroups ? ', @builtin(subgroup_invocation_id) sg_lane_in: u32, @builtin(subgroup_size) sg_size_in: u32' : '') +
      (hidden && !o.numWorkgroups ? ', @builtin(num_workgroups) red_nwg: vec3<u32>' : ''),
    prologue,
    call: (op, value) => `reduce_${op}(${value}, lid${o.subgroups ? ', sg_linear' : ''}${hidden ? ', red_half' : ''})`,
  };
}

/** Storage type of norm tensors. */
export type NormDType = 'f32' | 'f16';

/** A fused epilogue: the matmul generator's shape ({@link MatmulEpilogue}); `row`/`col` refer to the `[rows, cols]` view. */
export type NormEpilogue = MatmulEpilogue;

/** What {@link generateNormKernel} builds. */
export interface NormSpec {
  /** `rmsnorm` (`w * x / rms`) or `layernorm` (`(x - mean) / std * w + b`). */
  readonly kind: 'rmsnorm' | 'layernorm';
  /** Length of the normalized (last) axis. */
  readonly cols: number;
  /** Number of rows (product of the leading dims); default `'rows'`. */
  readonly rows?: DimLike;
  /** Storage type of x, the weights and out. */
  readonly dtype: NormDType;
  /** Epsilon (default 1e-5). */
  readonly eps?: number;
  /** Layernorm only: whether a bias operand follows the weight (default true). */
  readonly bias?: boolean;
  /** Fused epilogue applied to the normalized value before the store. */
  readonly epilogue?: NormEpilogue;
  /** Lanes per workgroup (default: 64 when cols <= 256, else 256). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** Reduce with subgroup operations (device `subgroups` feature). */
  readonly subgroups?: boolean;
  /** Constant reduction trip counts (default true); `false` compiles faster on lavapipe (see {@link WorkgroupReductionOptions}). */
  readonly staticLoops?: boolean;
  /** The graph nodes implemented (printed form), for the header. */
  readonly nodes?: readonly string[];
}

/** The f32 expression of a storage load. */
function f32Of(dtype: string, e: string): string {
  return dtype === 'f32' ? e : `f32(${e})`;
}

/**
 * RMSNorm or LayerNorm over rows of `cols` values: bindings `x`, `weight`, [`bias`], the epilogue operands `ep_0..`,
 * `out`; params: the row count when dynamic. One workgroup per row.
 * @throws {@link ShapeError} for `cols` < 1; {@link InputError} for a bad epilogue or tuning.
 */
export function generateNormKernel(spec: NormSpec): KernelSource {
  const D = spec.cols;
  if (!Number.isInteger(D) || D < 1) throw new ShapeError(spec.kind, `normalized axis must be a positive integer, got ${D}`);
  const WG = spec.workgroupSize ?? (D <= 256 ? 64 : 256);
  const eps = spec.eps ?? 1e-5;
  const hasBias = spec.kind === 'layernorm' && (spec.bias ?? true);
  const red = workgroupReduction({ workgroupSize: WG, subgroups: spec.subgroups ?? false, staticLoops: spec.staticLoops, numWorkgroups: 'nwg' });
  const params = new KernelParams();
  const rows = spec.rows ?? 'rows';
  const rowsRef = params.ref(rows);
  const dt = spec.dtype;
  const ep = spec.epilogue;
  const helpers = new Set<string>();
  const bindings: KernelBinding[] = [{ name: 'x', access: 'read' }, { name: 'weight', access: 'read' }];
  const decls = [
    `@group(0) @binding(0) var<storage, read> x: array<${dt}>; // [rows, COLS]`,
    `@group(0) @binding(1) var<storage, read> weight: array<${dt}>; // [COLS]`,
  ];
  if (hasBias) {
    decls.push(`@group(0) @binding(2) var<storage, read> bias: array<${dt}>; // [COLS]`);
    bindings.push({ name: 'bias', access: 'read' });
  }
  (ep?.operands ?? []).forEach((o, k) => {
    decls.push(`@group(0) @binding(${bindings.length}) var<storage, read> ep_${k}: array<${o.dtype}>; // epilogue operand ${k} (${o.broadcast}): ${wgslComment(o.name)}`);
    bindings.push({ name: o.name, access: 'read' });
  });
  decls.push(`@group(0) @binding(${bindings.length}) var<storage, read_write> out: array<${dt}>; // [rows, COLS]`);
  bindings.push({ name: 'out', access: 'read_write' });
  let value = spec.kind === 'rmsnorm' ? 'w * (scale * xv)' : `(xv - mean) * inv_std * w${hasBias ? ' + f32(bias[c])' : ''}`;
  if (hasBias && dt === 'f32') value = value.replace('f32(bias[c])', 'bias[c]');
  if (ep) {
    for (const h of ep.helpers ?? []) {
      if (!(h in WGSL_HELPERS)) throw new InputError(`norm epilogue: unknown WGSL helper '${h}'`);
      if (h === 'gelu_erf') helpers.add('erf');
      helpers.add(h);
    }
    const load = (k: number): string => {
      const o = ep.operands[k];
      if (!o) throw new InputError(`norm epilogue reads operand ${k}, but there are ${ep.operands.length}`);
      const idx = o.broadcast === 'row' ? 'c' : o.broadcast === 'col' ? 'row' : o.broadcast === 'scalar' ? '0u' : 'base + c';
      return f32Of(o.dtype, `ep_${k}[${idx}]`);
    };
    value = ep.expr(`(${value})`, load);
  }
  const store = dt === 'f16' ? `f16(y)` : 'y';
  const stats =
    spec.kind === 'rmsnorm'
      ? [
          '  var ss = 0.0;',
          '  for (var c = lid; c < COLS; c += WORKGROUP_SIZE) { let xv = load_x(base + c); ss += xv * xv; }',
          `  let scale = 1.0 / sqrt(${red.call('sum', 'ss')} / f32(COLS) + EPS);`,
        ]
      : [
          '  var s = 0.0;',
          '  for (var c = lid; c < COLS; c += WORKGROUP_SIZE) { s += load_x(base + c); }',
          `  let mean = ${red.call('sum', 's')} / f32(COLS);`,
          '  var sq = 0.0;',
          '  for (var c = lid; c < COLS; c += WORKGROUP_SIZE) { let dx = load_x(base + c) - mean; sq += dx * dx; }',
          `  let inv_std = 1.0 / sqrt(${red.call('sum', 'sq')} / f32(COLS) + EPS);`,
        ];
  const nodes = spec.nodes ?? [];
  const needsF16 = dt === 'f16' || (ep?.operands ?? []).some((o) => o.dtype === 'f16');
  const wgsl = [
    ...(needsF16 ? ['enable f16;'] : []),
    ...(red.subgroups ? ['enable subgroups;'] : []),
    `// tensorwright kernel: ${spec.kind} (rows=${rows}, cols=${D}, ${dt}${ep ? ', fused epilogue' : ''}${red.subgroups ? ', subgroup reductions' : ''})`,
    ...nodes.map((n) => `//   node: ${wgslComment(n)}`),
    `//   one workgroup per row; ${spec.kind === 'rmsnorm' ? 'out = w * x / sqrt(mean(x^2) + eps)' : 'out = (x - mean) / sqrt(var + eps) * w + b'}`,
    '',
    `const COLS: u32 = ${D}u; // normalized axis`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    `const EPS: f32 = ${literal('f32', eps)};`,
    '',
    ...decls,
    params.decl(bindings.length),
    red.module,
    ...[...helpers].map((h) => WGSL_HELPERS[h]),
    `fn load_x(i: u32) -> f32 { return ${f32Of(dt, 'x[i]')}; }`,
    '',
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32${red.entryParams}) {`,
    ...(red.prologue ? [red.prologue] : []),
    '  let row = wid.y * nwg.x + wid.x;',
    `  if (row >= ${rowsRef}) { return; }`,
    '  let base = row * COLS;',
    ...stats,
    '  for (var c = lid; c < COLS; c += WORKGROUP_SIZE) {',
    '    let xv = load_x(base + c);',
    `    let w = ${f32Of(dt, 'weight[c]')};`,
    `    let y: f32 = ${value};`,
    `    out[base + c] = ${store};`,
    '  }',
    '}',
    '',
  ].join('\n');
  return {
    family: spec.kind,
    variant: `row-wg${WG}${red.subgroups ? '-subgroup' : ''}`,
    wgsl,
    bindings,
    params: [...params.list],
    grid: splitGrid(params.grid(rows)),
    nodes: [...nodes],
  };
}
