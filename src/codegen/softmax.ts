/**
 * Softmax kernel family: numerically stable softmax along the last axis of a `[rows, cols]` view, one workgroup per
 * row: a max pass, a pass summing `exp(x - max)`, and a pass writing `exp(x - max) / sum`; workgroup reductions from
 * {@link workgroupReduction} (deterministic; subgroup operations when enabled).
 *
 * Semantics match the CPU reference, including its edge case: a row whose values are all `-inf` gives NaN.
 *
 * Supported shapes: `cols` static or dynamic (a dim expression in the params uniform), any row count (grids above
 * 65535 rows use two dimensions); f32 or f16 storage, f32 math. Variants: workgroup size 64/128/256, subgroups.
 * @module
 */
import { ShapeError } from '../errors.js';
import type { KernelBinding, KernelSource } from './kernel.js';
import { KernelParams, splitGrid, workgroupReduction, type DimLike, type WorkgroupReductionOptions } from './norm.js';
import { wgslComment } from './wgsl.js';

/** What {@link generateSoftmaxKernel} builds. */
export interface SoftmaxSpec {
  /** Length of the softmax axis (the last). */
  readonly cols: DimLike;
  /** Number of rows (product of the leading dims); default `'rows'`. */
  readonly rows?: DimLike;
  /** Storage type of x and out. */
  readonly dtype: 'f32' | 'f16';
  /** Lanes per workgroup (default: 64 when cols is static and <= 256, else 256). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** Reduce with subgroup operations (device `subgroups` feature). */
  readonly subgroups?: boolean;
  /** Constant reduction trip counts (default true); `false` compiles faster on lavapipe (see {@link WorkgroupReductionOptions}). */
  readonly staticLoops?: boolean;
  /** The graph nodes implemented (printed form), for the header. */
  readonly nodes?: readonly string[];
}

/**
 * Softmax along the last axis: bindings `x`, `out`; params: the dynamic ones of rows and cols. One workgroup per row.
 * @throws {@link ShapeError} for a static `cols` < 1.
 */
export function generateSoftmaxKernel(spec: SoftmaxSpec): KernelSource {
  const cols = KernelParams.canon(spec.cols, 'cols');
  if (cols === 0) throw new ShapeError('softmax', 'the softmax axis is empty');
  const WG = spec.workgroupSize ?? (typeof cols === 'number' && cols <= 256 ? 64 : 256);
  const red = workgroupReduction({ workgroupSize: WG, subgroups: spec.subgroups ?? false, staticLoops: spec.staticLoops, numWorkgroups: 'nwg' });
  const params = new KernelParams();
  const rows = spec.rows ?? 'rows';
  const rowsRef = params.ref(rows);
  const colsRef = params.ref(cols);
  const dt = spec.dtype;
  const load = dt === 'f32' ? 'x[i]' : 'f32(x[i])';
  const bindings: KernelBinding[] = [{ name: 'x', access: 'read' }, { name: 'out', access: 'read_write' }];
  const nodes = spec.nodes ?? [];
  const wgsl = [
    ...(dt === 'f16' ? ['enable f16;'] : []),
    ...(red.subgroups ? ['enable subgroups;'] : []),
    `// tensorwright kernel: softmax (rows=${rows}, cols=${cols}, ${dt}${red.subgroups ? ', subgroup reductions' : ''})`,
    ...nodes.map((n) => `//   node: ${wgslComment(n)}`),
    '//   one workgroup per row: max, sum of exp(x - max), then exp(x - max) / sum',
    '',
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    'const NEG_BIG: f32 = bitcast<f32>(0xff7fffffu); // -FLT_MAX',
    '',
    `@group(0) @binding(0) var<storage, read> x: array<${dt}>; // [rows, cols]`,
    `@group(0) @binding(1) var<storage, read_write> out: array<${dt}>; // [rows, cols]`,
    params.decl(bindings.length),
    red.module,
    `fn load_x(i: u32) -> f32 { return ${load}; }`,
    '',
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32${red.entryParams}) {`,
    ...(red.prologue ? [red.prologue] : []),
    '  let row = wid.y * nwg.x + wid.x;',
    `  if (row >= ${rowsRef}) { return; }`,
    `  let cols = ${colsRef};`,
    '  let base = row * cols;',
    '  var mx = NEG_BIG;',
    '  for (var c = lid; c < cols; c += WORKGROUP_SIZE) { mx = max(mx, load_x(base + c)); }',
    `  let row_max = ${red.call('max', 'mx')};`,
    '  var s = 0.0;',
    '  for (var c = lid; c < cols; c += WORKGROUP_SIZE) { s += exp(load_x(base + c) - row_max); }',
    `  let total = ${red.call('sum', 's')};`,
    '  // a row of -inf sums to 0: its result is NaN, as the reference (0 / 0 computed at run time)',
    '  for (var c = lid; c < cols; c += WORKGROUP_SIZE) {',
    '    let e = exp(load_x(base + c) - row_max);',
    `    let y = select(e / total, total / total, total == 0.0);`,
    `    out[base + c] = ${dt === 'f16' ? 'f16(y)' : 'y'};`,
    '  }',
    '}',
    '',
  ].join('\n');
  return {
    family: 'softmax',
    variant: `row-wg${WG}${red.subgroups ? '-subgroup' : ''}`,
    wgsl,
    bindings,
    params: [...params.list],
    grid: splitGrid(params.grid(rows)),
    nodes: [...nodes],
  };
}
