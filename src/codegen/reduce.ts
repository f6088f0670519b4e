/**
 * Reduction kernel family: `sum`, `mean` and `max` over any set of axes of a tensor of any rank.
 *
 * Supported shapes: static or symbolic dims (sizes and strides come from the params uniform). One invocation per
 * output element walks the reduced elements (decomposing their flat index into the reduced axes), accumulating in f32
 * (or i32/u32 for integer sums). Right for the small reductions transformer graphs keep after fusion (norm
 * statistics are computed inside the norm kernels); variants: workgroup size.
 * @module
 */
import { UnsupportedOpError } from '../errors.js';
import { dimProduct, numel, shapeToString, type Dim } from '../ir/dim.js';
import { dimRef } from './wgsl.js';
import { attrsOf } from '../ir/attrs.js';
import type { Node } from '../ir/node.js';
import { printNode } from '../ir/printer.js';
import { KernelParams, type GridExpr, type KernelSource } from './kernel.js';
import { computeType, enableDirectives, kernelFeatures, storageType, wgslComment, wgslHelperSources } from './wgsl.js';
import { I64_HELPER } from './wgsl-int64.js';

/** Generates the kernel for a `sum`/`mean`/`max` node. Bindings: `x`, `out`. */
export function generateReduceKernel(node: Node, opts: { workgroupSize?: 64 | 128 | 256; maxWorkgroupsPerDimension?: number } = {}): KernelSource {
  if (node.op !== 'sum' && node.op !== 'mean' && node.op !== 'max') throw new UnsupportedOpError([node.op], `reduce codegen cannot compute '${node.op}'`);
  const x = node.inputs[0];
  const { axes } = attrsOf(node, node.op);
  const shape = x.shape;
  const kept = shape.map((_d, i) => i).filter((i) => !axes.includes(i));
  const dims = new KernelParams();
  const wg = opts.workgroupSize ?? 64;
  const T = computeType(x.dtype);
  const load = (idx: string): string => (x.dtype === 'f16' ? `f32(x[${idx}])` : `x[${idx}]`);
  const stride = (i: number): Dim => dimProduct(shape.slice(i + 1));
  // output flat index -> input base offset (kept axes), then reduced flat index -> offset (reduced axes)
  const keptTerms: string[] = [];
  let keptStride: Dim = 1;
  for (let j = kept.length - 1; j >= 0; j--) {
    const ax = kept[j];
    keptTerms.push(`((o / ${dimRef(dims, keptStride)}) % ${dimRef(dims, shape[ax])}) * ${dimRef(dims, stride(ax))}`);
    keptStride = dimProduct([keptStride, shape[ax]]);
  }
  const redTerms: string[] = [];
  let redStride: Dim = 1;
  for (let j = axes.length - 1; j >= 0; j--) {
    const ax = axes[j];
    redTerms.push(`((r / ${dimRef(dims, redStride)}) % ${dimRef(dims, shape[ax])}) * ${dimRef(dims, stride(ax))}`);
    redStride = dimProduct([redStride, shape[ax]]);
  }
  const outCount = numel(node.shape);
  const redCount = redStride;
  const i64 = x.dtype === 'i64';
  if (i64 && node.op === 'mean') throw new UnsupportedOpError([node.op], `reduce codegen cannot compute 'mean' of i64 values: ${printNode(node)}`);
  const init = i64 ? (node.op === 'max' ? 'vec2<u32>(0u, 0x80000000u)' : 'vec2<u32>(0u, 0u)') : node.op === 'max' ? (T === 'f32' ? '-3.402823466e+38' : T === 'i32' ? 'i32(-2147483648)' : '0u') : `${T}(0)`;
  const combine = i64 ? `acc = tw_i64_${node.op === 'max' ? 'max' : 'add'}(acc, v);` : node.op === 'max' ? 'acc = max(acc, v);' : 'acc = acc + v;';
  const finish = node.op === 'mean' ? `acc / f32(${dimRef(dims, redCount)})` : 'acc';
  const store = node.dtype === 'f16' ? `f16(${finish})` : finish;
  const groups: GridExpr = typeof outCount === 'number' ? Math.max(1, Math.ceil(outCount / wg)) : { max: [1, { ceilDiv: [outCount.text, wg] }] };
  const maxX = opts.maxWorkgroupsPerDimension ?? 65535;
  const features = kernelFeatures({ f16: x.dtype === 'f16' || node.dtype === 'f16' });
  const body = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: reduce (${node.op} over axes [${axes.join(', ')}])`,
    `//   x ${x.dtype}${wgslComment(shapeToString(x.shape))} -> out ${node.dtype}${wgslComment(shapeToString(node.shape))}`,
    '',
    `const WORKGROUP_SIZE: u32 = ${wg}u;`,
    `const GRID_X: u32 = ${maxX}u;`,
    '',
    `@group(0) @binding(0) var<storage, read> x: array<${storageType(x.dtype)}>;`,
    `@group(0) @binding(1) var<storage, read_write> out: array<${storageType(node.dtype)}>;`,
    ...(i64 ? wgslHelperSources([I64_HELPER]) : []),
  ];
  const main = [
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(global_invocation_id) gid: vec3<u32>) {',
    '  let o = gid.x + gid.y * GRID_X * WORKGROUP_SIZE;',
    `  if (o >= ${dimRef(dims, outCount)}) { return; }`,
    `  let base = ${keptTerms.length ? keptTerms.join(' + ') : '0u'};`,
    `  var acc: ${T} = ${init};`,
    `  for (var r = 0u; r < ${dimRef(dims, redCount)}; r = r + 1u) {`,
    `    let v = ${load(`base + ${redTerms.length ? redTerms.join(' + ') : '0u'}`)};`,
    `    ${combine}`,
    '  }',
    `  out[o] = ${store};`,
    '}',
    '',
  ];
  const wgsl = [...body, dims.decl(2), ...main].join('\n');
  return {
    family: 'reduce',
    variant: `${node.op}-wg${wg}`,
    wgsl,
    bindings: [
      { name: 'x', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    params: dims.list,
    grid: [{ min: [groups, maxX] }, { ceilDiv: [groups, maxX] }, 1],
    nodes: [printNode(node)],
    features,
  };
}
