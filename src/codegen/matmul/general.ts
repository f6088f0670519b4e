/**
 * The general matmul kernel: dynamic N and K, integer data.
 * @module
 */
import { dimMul, parseDim } from '../../ir/dim.js';
import { KernelParams, splitGrid, type DimLike, type GridExpr, type KernelSource } from '../kernel.js';
import { enableDirectives, kernelFeatures } from '../wgsl.js';

/** What {@link generateGeneralMatmulKernel} computes: a plain batched matmul whose sizes may all be dim expressions. */
export interface GeneralMatmulSpec {
  /** Rows of the output (number or dim expression). */
  readonly M: DimLike;
  /** Columns of the output. */
  readonly N: DimLike;
  /** The contracted dim (0 gives zeros). */
  readonly K: DimLike;
  /** Batch count. Default 1. */
  readonly batch?: DimLike;
  /** Elements between consecutive batches of A and of B (0 broadcasts the operand). Default dense. */
  readonly batchStrides?: { readonly a?: DimLike; readonly b?: DimLike };
  /** A is stored `[K, M]`. */
  readonly transA?: boolean;
  /** B is stored `[N, K]`. */
  readonly transB?: boolean;
  /** Storage type of A, B and the output: floats accumulate in f32, i32 in i32 (wrapping on overflow). */
  readonly dtype: 'f32' | 'f16' | 'i32';
  /** Printed graph nodes the kernel implements, for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * The fallback for the matmuls the tuned variants do not take — a dynamic N or K (attention scores over a KV length
 * known only at run time), integer data (MatMulInteger), K = 0: one invocation per output element and a loop over
 * K, every size a literal or a params field. No epilogue (legalization leaves such matmuls unfused).
 *
 * Bindings `a`, `b`, `out`; params: the dynamic sizes. Grid: one lane per output element.
 */
export function generateGeneralMatmulKernel(spec: GeneralMatmulSpec): KernelSource {
  const params = new KernelParams();
  const [M, N, K, batch] = [spec.M, spec.N, spec.K, spec.batch ?? 1].map((d, i) => params.ref(KernelParams.canon(d, ['M', 'N', 'K', 'batch'][i])));
  const dense = (x: DimLike, y: DimLike): DimLike => {
    const d = dimMul(parseDim(x), parseDim(y));
    return typeof d === 'number' ? d : d.text;
  };
  const strideA = params.ref(spec.batchStrides?.a ?? dense(spec.M, spec.K));
  const strideB = params.ref(spec.batchStrides?.b ?? dense(spec.K, spec.N));
  const st = spec.dtype;
  const acc = st === 'i32' ? 'i32' : 'f32';
  const load = (e: string): string => (st === 'f16' ? `f32(${e})` : e);
  const aIdx = spec.transA ? `a_base + k * m_ + m` : `a_base + m * k_ + k`;
  const bIdx = spec.transB ? `b_base + n * k_ + k` : `b_base + k * n_ + n`;
  const total: GridExpr = { mul: [spec.M, spec.N, spec.batch ?? 1].map((d) => params.grid(d)) };
  const nodes = spec.nodes ?? [];
  const features = kernelFeatures({ f16: st === 'f16' });
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: matmul (general: sizes from params, ${st} data, ${acc} accumulation)`,
    `//   out[b, m, n] = sum_k A[b, m, k] * B[b, k, n]; A ${spec.transA ? '[batch, K, M]' : '[batch, M, K]'}, B ${spec.transB ? '[batch, N, K]' : '[batch, K, N]'}`,
    '',
    'const WORKGROUP_SIZE: u32 = 64u;',
    '',
    `@group(0) @binding(0) var<storage, read> a: array<${st}>;`,
    `@group(0) @binding(1) var<storage, read> b: array<${st}>;`,
    `@group(0) @binding(2) var<storage, read_write> out: array<${st}>;`,
    params.decl(3),
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    '  let i = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid; // output element',
    `  let m_ = ${M};`,
    `  let n_ = ${N};`,
    `  let k_ = ${K};`,
    `  if (i >= ${batch} * m_ * n_) { return; }`,
    '  let n = i % n_;',
    '  let m = (i / n_) % m_;',
    '  let bi = i / (n_ * m_);',
    `  let a_base = bi * ${strideA};`,
    `  let b_base = bi * ${strideB};`,
    `  var acc: ${acc} = ${acc}(0);`,
    '  for (var k = 0u; k < k_; k++) {',
    `    acc += ${load(`a[${aIdx}]`)} * ${load(`b[${bIdx}]`)};`,
    '  }',
    `  out[i] = ${st === 'f16' ? 'f16(acc)' : 'acc'};`,
    '}',
    '',
  ].join('\n');
  return {
    family: 'matmul',
    variant: `general-${st}`,
    wgsl,
    bindings: [
      { name: 'a', access: 'read' },
      { name: 'b', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    params: [...params.list],
    grid: splitGrid({ ceilDiv: [total, 64] }),
    nodes: [...nodes],
    features,
  };
}

