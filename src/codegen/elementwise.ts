/**
 * Elementwise kernel family: one WGSL kernel computes a whole tree of elementwise ops (unary, binary with
 * broadcasting, comparisons, `where`, `cast`) rooted at one node, reading each external operand once per output
 * element. This is what a fused elementwise region and a matmul epilogue compile to.
 *
 * Supported shapes: any rank, numpy broadcasting of operands, static or symbolic dims (symbolic sizes and strides are
 * read from the params uniform). Variants: workgroup size (64, 128 or 256); the grid is two-dimensional when the
 * element count needs more than the device's workgroups per dimension.
 * @module
 */
import { UnsupportedOpError } from '../errors.js';
import { POINTWISE_OPS } from '../ir/ops.js';
import { dimProduct, numel, shapeEquals, type Dim } from '../ir/dim.js';
import { dimRef } from './wgsl.js';
import { isOp } from '../ir/attrs.js';
import type { Node } from '../ir/node.js';
import { printNode } from '../ir/printer.js';
import { KernelParams, type GridExpr, type KernelSource } from './kernel.js';
import { I64_HELPER } from './wgsl-int64.js';
import { computeType, enableDirectives, kernelFeatures, literal, storageType, usesBitsHelper, WGSL_HELPERS, wgslComment, wgslHelperSources } from './wgsl.js';

/** Ops this family can compute inside a kernel: the IR's pointwise ops. */
export const ELEMENTWISE_KERNEL_OPS: ReadonlySet<string> = POINTWISE_OPS;

/** A generated elementwise kernel: the launchable {@link KernelSource} plus what it computes. */
export interface ElementwiseKernel extends KernelSource {
  /** External operands, bound at `@binding(0..n-1)`; the output is `@binding(n)`. */
  readonly operands: readonly Node[];
  /** The node the kernel computes. */
  readonly root: Node;
  /** The nodes computed inside the kernel (root last). */
  readonly fused: readonly Node[];
  /** Workgroup size (x). */
  readonly workgroupSize: number;
}

/** Options for {@link generateElementwiseKernel}. */
export interface ElementwiseOptions {
  /** Workgroup size (default 64). */
  workgroupSize?: 64 | 128 | 256;
  /** Whether to compute `node` inside the kernel (default: every elementwise op reachable through elementwise ops). */
  fuse?: (node: Node) => boolean;
  /** Max workgroups per grid dimension (the device limit; default 65535). */
  maxWorkgroupsPerDimension?: number;
}

/**
 * Generates the kernel computing `root` (an elementwise op) and the elementwise ops it can absorb. Shapes may be
 * symbolic: their sizes become uniform parameters evaluated at dispatch time.
 */
export function generateElementwiseKernel(root: Node, opts: ElementwiseOptions = {}): ElementwiseKernel {
  if (!ELEMENTWISE_KERNEL_OPS.has(root.op)) throw new UnsupportedOpError([root.op], `elementwise codegen cannot compute '${root.op}'`);
  const outShape = root.shape;
  const fuse = opts.fuse ?? (() => true);
  const wg = opts.workgroupSize ?? 64;
  const operands: Node[] = [];
  const fused: Node[] = [];
  const exprOf = new Map<Node, string>();
  const lines: string[] = [];
  const helpers = new Set<string>();
  const dims = new KernelParams();

  const inside = (n: Node): boolean => n === root || (ELEMENTWISE_KERNEL_OPS.has(n.op) && fuse(n));
  const splatConstant = (n: Node): number | undefined => {
    const v = isOp(n, 'constant') ? n.attrs.values : undefined;
    return v && v.length === 1 && typeof v[0] === 'number' ? v[0] : undefined;
  };

  // post-order walk (iterative) over the fused tree; a fused op is computed at the output's index, so it must not
  // be broadcast itself: ops whose shape differs from the output are loaded as operands instead
  const stack: [Node, boolean][] = [[root, false]];
  while (stack.length) {
    const [n, expanded] = stack.pop()!;
    if (exprOf.has(n)) continue;
    const splat = splatConstant(n);
    if (splat !== undefined) {
      const lit = literal(n.dtype, splat);
      if (usesBitsHelper(lit)) helpers.add('bits_f32');
      exprOf.set(n, lit);
      continue;
    }
    if (!inside(n) || !shapeEquals(n.shape, outShape)) {
      const k = operands.length;
      operands.push(n);
      exprOf.set(n, `load_${k}(i)`);
      continue;
    }
    if (!expanded) {
      stack.push([n, true]);
      for (const x of [...n.inputs].reverse()) if (!exprOf.has(x)) stack.push([x, false]);
      continue;
    }
    const args = n.inputs.map((x) => exprOf.get(x)!);
    const name = `t${fused.length}`;
    lines.push(`  let ${name}: ${computeType(n.dtype)} = ${scalarExpr(n, args, helpers)};`);
    fused.push(n);
    exprOf.set(n, name);
  }
  const result = exprOf.get(root)!;

  const elements = numel(outShape);
  // the program in the kernel's own names (t<k>, in_<k>, literals): what it computes, not which graph nodes it came from
  const local = (x: Node): string => {
    const k = fused.indexOf(x);
    if (k >= 0) return `t${k}`;
    const o = operands.indexOf(x);
    return o >= 0 ? `in_${o}` : exprOf.get(x)!;
  };
  const header = [
    `// tensorwright kernel: elementwise (${fused.length} fused op${fused.length === 1 ? '' : 's'}, t<k> = k-th line below)`,
    ...fused.map((n) => `//   ${wgslComment(printNode(n, local))}`),
  ];
  const needsF16 = root.dtype === 'f16' || operands.some((o) => o.dtype === 'f16');
  const features = kernelFeatures({ f16: needsF16 });
  const bindings = operands.map((o, k) => `@group(0) @binding(${k}) var<storage, read> in_${k}: array<${storageType(o.dtype)}>;`);
  bindings.push(`@group(0) @binding(${operands.length}) var<storage, read_write> out: array<${storageType(root.dtype)}>;`);
  const elementsExpr = dimRef(dims, elements);
  const loaders = operands.map((o, k) => loaderFn(k, o, outShape, dims));
  const maxX = opts.maxWorkgroupsPerDimension ?? 65535;
  // grid: ceil(elements / wg) workgroups, folded into a 2-D grid of width GRID_X when that exceeds the limit
  const groupsExpr: GridExpr = typeof elements === 'number' ? Math.max(1, Math.ceil(elements / wg)) : { max: [1, { ceilDiv: [elements.text, wg] }] };
  const gx: GridExpr = { min: [groupsExpr, maxX] };
  const gy: GridExpr = { ceilDiv: [groupsExpr, maxX] };
  // an f16 result is stored through tw_round_f16: round to nearest even and overflow to ±inf per IEEE 754 on every
  // device (WGSL leaves both to the implementation), and then converted exactly
  if (root.dtype === 'f16') helpers.add('round_f16');
  const store = root.dtype === 'bool' ? `select(0u, 1u, ${result})` : root.dtype === 'f16' ? `f16(tw_round_f16(${result}))` : result;
  const nodes = fused.map((n) => printNode(n));
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    ...header,
    '',
    `const WORKGROUP_SIZE: u32 = ${wg}u;`,
    `const GRID_X: u32 = ${maxX}u;`,
    '',
    ...bindings,
    dims.decl(operands.length + 1),
    ...wgslHelperSources(helpers),
    ...loaders,
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(global_invocation_id) gid: vec3<u32>) {`,
    `  let i = gid.x + gid.y * GRID_X * WORKGROUP_SIZE;`,
    `  if (i >= ${elementsExpr}) { return; }`,
    ...lines,
    `  out[i] = ${store};`,
    `}`,
    '',
  ].join('\n');
  return {
    family: 'elementwise',
    variant: `wg${wg}`,
    wgsl,
    bindings: [...operands.map((_o, k) => ({ name: `in_${k}`, access: 'read' as const })), { name: 'out', access: 'read_write' as const }],
    params: dims.list,
    grid: [gx, gy, 1],
    nodes,
    features,
    operands,
    root,
    fused,
    workgroupSize: wg,
  };
}

/** A function `load_k(i)` reading operand k at output index i, with broadcasting folded into strides. */
function loaderFn(k: number, operand: Node, outShape: readonly Dim[], dims: KernelParams): string {
  const inShape = operand.shape;
  const t = computeType(operand.dtype);
  const conv = (e: string): string => (operand.dtype === 'bool' ? `(${e} != 0u)` : operand.dtype === 'f16' ? `f32(${e})` : e);
  let index: string;
  if (shapeEquals(inShape, outShape)) index = 'i';
  else if (numel(inShape) === 1) index = '0u';
  else {
    // offset = sum over output dims of coord_d * inStride_d, skipping broadcast dims
    const rank = outShape.length;
    const terms: string[] = [];
    for (let d = 0; d < rank; d++) {
      const j = d - (rank - inShape.length);
      if (j < 0 || inShape[j] === 1) continue;
      const outStride = dimProduct(outShape.slice(d + 1));
      const inStride = dimProduct(inShape.slice(j + 1));
      terms.push(`((i / ${dimRef(dims, outStride)}) % ${dimRef(dims, outShape[d])}) * ${dimRef(dims, inStride)}`);
    }
    index = terms.length ? terms.join(' + ') : '0u';
  }
  return `fn load_${k}(i: u32) -> ${t} { return ${conv(`in_${k}[${index}]`)}; }\n`;
}

/**
 * The WGSL expression of one elementwise op over argument expressions (each already in its compute type); adds the
 * names of the {@link WGSL_HELPERS} it calls to `helpers`.
 */
export function scalarExpr(n: Node, a: string[], helpers: Set<string>): string {
  const T = computeType(n.dtype);
  if (n.dtype === 'i64' || n.inputs.some((x) => x.dtype === 'i64')) {
    helpers.add(I64_HELPER);
    return int64Expr(n, a);
  }
  switch (n.op) {
    case 'expand': return a[0]; // a broadcast: the operand's loader already maps output indices to its elements
    case 'neg': return `-(${a[0]})`;
    case 'abs': return `abs(${a[0]})`;
    case 'exp': return `exp(${a[0]})`;
    case 'log': return `log(${a[0]})`;
    case 'sqrt': return `sqrt(${a[0]})`;
    case 'rsqrt': return `inverseSqrt(${a[0]})`;
    case 'reciprocal': return `1.0 / (${a[0]})`;
    case 'tanh': helpers.add('tanh'); return `tw_tanh(${a[0]})`;
    case 'erf': helpers.add('erf'); return `tw_erf(${a[0]})`;
    case 'sin': return `sin(${a[0]})`;
    case 'cos': return `cos(${a[0]})`;
    case 'silu': helpers.add('sigmoid'); return `(${a[0]}) * tw_sigmoid(${a[0]})`;
    case 'sigmoid': helpers.add('sigmoid'); return `tw_sigmoid(${a[0]})`;
    case 'relu': return `max(${a[0]}, 0.0)`;
    case 'gelu':
      if (n.attrs.approximate === 'tanh') {
        helpers.add('gelu_tanh');
        return `tw_gelu_tanh(${a[0]})`;
      }
      helpers.add('gelu_erf');
      return `tw_gelu_erf(${a[0]})`;
    case 'add': return `(${a[0]}) + (${a[1]})`;
    case 'sub': return `(${a[0]}) - (${a[1]})`;
    case 'mul': return `(${a[0]}) * (${a[1]})`;
    case 'div': return `(${a[0]}) / (${a[1]})`; // integer x / 0 = x in WGSL and in the reference
    case 'pow': return `pow(${a[0]}, ${a[1]})`;
    case 'maximum': return `max(${a[0]}, ${a[1]})`;
    case 'minimum': return `min(${a[0]}, ${a[1]})`;
    case 'equal': return `(${a[0]}) == (${a[1]})`;
    case 'less': return `(${a[0]}) < (${a[1]})`;
    case 'greater': return `(${a[0]}) > (${a[1]})`;
    case 'where': return `select(${a[2]}, ${a[1]}, ${a[0]})`;
    case 'cast': {
      const from = computeType(n.inputs[0].dtype);
      if (T === 'bool') return from === 'bool' ? a[0] : `(${a[0]}) != ${from}(0)`;
      if (from === 'bool') return `select(${T}(0), ${T}(1), ${a[0]})`;
      // to f16: computed in f32 but rounded (and overflowed) as the f16 value it stands for
      if (n.dtype === 'f16' && n.inputs[0].dtype !== 'f16') {
        helpers.add('round_f16');
        return `tw_round_f16(${T}(${a[0]}))`;
      }
      return `${T}(${a[0]})`;
    }
    default:
      throw new UnsupportedOpError([n.op], `elementwise codegen cannot compute '${n.op}'`);
  }
}

/** {@link scalarExpr} for an op with i64 operands or result (the `tw_i64_*` helpers). */
function int64Expr(n: Node, a: string[]): string {
  const from = n.inputs[0]?.dtype;
  switch (n.op) {
    case 'expand': return a[0];
    case 'neg': return `tw_i64_neg(${a[0]})`;
    case 'abs': return `tw_i64_abs(${a[0]})`;
    case 'add': return `tw_i64_add(${a[0]}, ${a[1]})`;
    case 'sub': return `tw_i64_sub(${a[0]}, ${a[1]})`;
    case 'mul': return `tw_i64_mul(${a[0]}, ${a[1]})`;
    case 'div': return `tw_i64_div(${a[0]}, ${a[1]})`;
    case 'maximum': return `tw_i64_max(${a[0]}, ${a[1]})`;
    case 'minimum': return `tw_i64_min(${a[0]}, ${a[1]})`;
    case 'equal': return `tw_i64_eq(${a[0]}, ${a[1]})`;
    case 'less': return `tw_i64_lt(${a[0]}, ${a[1]})`;
    case 'greater': return `tw_i64_gt(${a[0]}, ${a[1]})`;
    case 'where': return `select(${a[2]}, ${a[1]}, ${a[0]})`;
    case 'cast':
      if (n.dtype === 'i64') {
        if (from === 'i64') return a[0];
        if (from === 'i32') return `tw_i64_from_i32(${a[0]})`;
        if (from === 'u32') return `tw_i64_from_u32(${a[0]})`;
        if (from === 'bool') return `tw_i64_from_bool(${a[0]})`;
        return `tw_i64_from_f32(${a[0]})`; // f32, and f16 (computed in f32)
      }
      if (n.dtype === 'i32') return `bitcast<i32>((${a[0]}).x)`;
      if (n.dtype === 'u32') return `(${a[0]}).x`;
      if (n.dtype === 'bool') return `any((${a[0]}) != vec2<u32>(0u, 0u))`;
      if (n.dtype === 'f16') return `tw_round_f16(tw_i64_to_f32(${a[0]}))`;
      return `tw_i64_to_f32(${a[0]})`;
    default:
      throw new UnsupportedOpError([n.op], `WebGPU kernels cannot compute '${n.op}' on i64 values (${printNode(n)})`);
  }
}
