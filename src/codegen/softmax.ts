/**
 * Softmax kernel family: numerically stable softmax along the last axis of a `[rows, cols]` view, one workgroup per
 * row ({@link RowKernel}): a max pass, a pass summing `exp(x - max)`, and a pass writing `exp(x - max) / sum`; workgroup
 * reductions from {@link workgroupReduction} (deterministic; subgroup operations when enabled).
 *
 * Semantics match the CPU reference, including its edge case: a row whose values are all `-inf` gives NaN.
 *
 * Supported shapes: `cols` static or dynamic (a dim expression in the params uniform), any row count (grids above
 * 65535 rows use two dimensions); f32 or f16 storage, f32 math. Variants: workgroup size 64/128/256, subgroups.
 * @module
 */
import { ShapeError } from '../errors.js';
import { KernelParams, type DimLike, type KernelBinding, type KernelSource } from './kernel.js';
import { RowKernel, type RowKernelOptions, type workgroupReduction } from './workgroup.js';

/** What {@link generateSoftmaxKernel} builds. */
export interface SoftmaxSpec extends RowKernelOptions {
  /** Length of the softmax axis (the last). */
  readonly cols: DimLike;
  /** Storage type of x and out. */
  readonly dtype: 'f32' | 'f16';
}

/**
 * Softmax along the last axis: bindings `x`, `out`; params: the dynamic ones of rows and cols. One workgroup per row.
 * @throws {@link ShapeError} for a static `cols` < 1.
 */
export function generateSoftmaxKernel(spec: SoftmaxSpec): KernelSource {
  const cols = KernelParams.canon(spec.cols, 'cols');
  if (cols === 0) throw new ShapeError('softmax', 'the softmax axis is empty');
  const rk = new RowKernel(spec, cols);
  const red = rk.red;
  const colsRef = rk.params.ref(cols);
  const dt = spec.dtype;
  const load = dt === 'f32' ? 'x[i]' : 'f32(x[i])';
  const bindings: KernelBinding[] = [{ name: 'x', access: 'read' }, { name: 'out', access: 'read_write' }];
  const wgsl = [
    ...rk.header('softmax', cols, dt, dt === 'f16'),
    '//   one workgroup per row: max, sum of exp(x - max), then exp(x - max) / sum',
    '',
    `const WORKGROUP_SIZE: u32 = ${rk.workgroupSize}u;`,
    'const NEG_BIG: f32 = bitcast<f32>(0xff7fffffu); // -FLT_MAX',
    '',
    `@group(0) @binding(0) var<storage, read> x: array<${dt}>; // [rows, cols]`,
    `@group(0) @binding(1) var<storage, read_write> out: array<${dt}>; // [rows, cols]`,
    rk.params.decl(bindings.length),
    red.module,
    `fn load_x(i: u32) -> f32 { return ${load}; }`,
    '',
    ...rk.entry(),
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
  return rk.source('softmax', wgsl, bindings);
}
