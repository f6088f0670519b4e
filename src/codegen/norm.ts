/**
 * Normalization kernel family: `rmsnorm` and `layernorm` over the last axis of a `[rows, cols]` view (rows = product
 * of the leading dims, possibly dynamic through the params uniform), one workgroup per row, with an optional fused
 * elementwise epilogue (the matmul generator's {@link MatmulEpilogue} shape: extra operands broadcast by row, column,
 * full shape or scalar, and a WGSL expression of the normalized value).
 *
 * Semantics match the CPU reference: rmsnorm `w * (x * 1/sqrt(mean(x²) + eps))`; layernorm
 * `(x - mean) / sqrt(var + eps) * w + b` with the variance computed from the centred values (two passes, no
 * cancellation). Sums are f32, reduced across the workgroup by {@link workgroupReduction}; the one-workgroup-per-row
 * scaffolding is {@link RowKernel}'s.
 *
 * Supported shapes: any static `cols` >= 1, any row count (grids above 65535 rows are split over two dimensions);
 * f32 or f16 storage, f32 math. Variants: workgroup size 64/128/256, and `subgroupAdd` reductions when the device has
 * the `subgroups` feature.
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import type { KernelBinding, KernelSource } from './kernel.js';
import type { MatmulEpilogue } from './matmul/index.js';
import { literal, WGSL_HELPERS, wgslHelperSources } from './wgsl.js';
import { RowKernel, type RowKernelOptions, type workgroupReduction } from './workgroup.js';

/** Storage type of norm tensors. */
export type NormDType = 'f32' | 'f16';

/** A fused epilogue: the matmul generator's shape ({@link MatmulEpilogue}); `row`/`col` refer to the `[rows, cols]` view. */
export type NormEpilogue = MatmulEpilogue;

/** What {@link generateNormKernel} builds. */
export interface NormSpec extends RowKernelOptions {
  /** `rmsnorm` (`w * x / rms`) or `layernorm` (`(x - mean) / std * w + b`). */
  readonly kind: 'rmsnorm' | 'layernorm';
  /** Length of the normalized (last) axis. */
  readonly cols: number;
  /** Storage type of x, the weights and out. */
  readonly dtype: NormDType;
  /** Epsilon (default 1e-5). */
  readonly eps?: number;
  /** Layernorm only: whether a bias operand follows the weight (default true). */
  readonly bias?: boolean;
  /** Fused epilogue applied to the normalized value before the store. */
  readonly epilogue?: NormEpilogue;
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
  const eps = spec.eps ?? 1e-5;
  const hasBias = spec.kind === 'layernorm' && (spec.bias ?? true);
  const rk = new RowKernel(spec, D);
  const red = rk.red;
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
    decls.push(`@group(0) @binding(${bindings.length}) var<storage, read> ep_${k}: array<${o.dtype}>; // epilogue operand ${k} (${o.broadcast})`);
    bindings.push({ name: o.name, access: 'read' });
  });
  decls.push(`@group(0) @binding(${bindings.length}) var<storage, read_write> out: array<${dt}>; // [rows, COLS]`);
  bindings.push({ name: 'out', access: 'read_write' });
  let value = spec.kind === 'rmsnorm' ? 'w * (scale * xv)' : `(xv - mean) * inv_std * w${hasBias ? ' + f32(bias[c])' : ''}`;
  if (hasBias && dt === 'f32') value = value.replace('f32(bias[c])', 'bias[c]');
  if (ep) {
    for (const h of ep.helpers ?? []) {
      if (!(h in WGSL_HELPERS)) throw new InputError(`norm epilogue: unknown WGSL helper '${h}'`);
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
  const needsF16 = dt === 'f16' || (ep?.operands ?? []).some((o) => o.dtype === 'f16');
  const wgsl = [
    ...rk.header(spec.kind, D, `${dt}${ep ? ', fused epilogue' : ''}`, needsF16),
    `//   one workgroup per row; ${spec.kind === 'rmsnorm' ? 'out = w * x / sqrt(mean(x^2) + eps)' : 'out = (x - mean) / sqrt(var + eps) * w + b'}`,
    '',
    `const COLS: u32 = ${D}u; // normalized axis`,
    `const WORKGROUP_SIZE: u32 = ${rk.workgroupSize}u;`,
    `const EPS: f32 = ${literal('f32', eps)};`,
    '',
    ...decls,
    rk.params.decl(bindings.length),
    red.module,
    ...wgslHelperSources(helpers),
    `fn load_x(i: u32) -> f32 { return ${f32Of(dt, 'x[i]')}; }`,
    '',
    ...rk.entry(),
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
  return rk.source(spec.kind, wgsl, bindings);
}
