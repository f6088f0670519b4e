// A kernel's WGSL is its identity (STYLE.md point 5): the same kernel generated for different graph nodes (two
// layers) is byte-identical WGSL, with no node id or model-file name in it; the nodes travel beside it, and the
// WebGPU features it needs are declared, agreeing with its `enable` directives. No device needed.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Node } from '../src/ir/node.js';
import { printNode } from '../src/ir/printer.js';
import { generateElementwiseKernel } from '../src/codegen/elementwise.js';
import { generateReduceKernel } from '../src/codegen/reduce.js';
import { generateNormKernel } from '../src/codegen/norm.js';
import { generateMatmulKernel, matmulRequiredFeatures, type MatmulSpec } from '../src/codegen/matmul/index.js';
import { generateRopeKernel } from '../src/codegen/rope.js';
import { generateSamplingKernel } from '../src/codegen/sampling.js';
import { generateEmbeddingKernel } from '../src/codegen/gather.js';
import { generateDequantEmbeddingKernel } from '../src/codegen/dequant-gather.js';
import { generatePagedAttentionKernel } from '../src/codegen/attention.js';
import { KernelSet, MAX_KERNEL_NODES, requiredFeatures } from '../src/codegen/kernel-set.js';
import { kernelFeaturesOf, type KernelSource } from '../src/runtime/kernel-source.js';

/** The features a WGSL text enables, read from its directives (what a device must have to compile it). */
function enabled(wgsl: string): string[] {
  const out: string[] = [];
  if (/^enable f16;$/m.test(wgsl)) out.push('shader-f16');
  if (/^enable subgroups;$/m.test(wgsl)) out.push('subgroups');
  return out;
}

/** Asserts `wgsl` names none of `names` and carries no printed node id (`%12`). */
function expectNoProvenance(wgsl: string, names: readonly string[]): void {
  expect(wgsl).not.toMatch(/%\d/);
  for (const n of names) expect(wgsl).not.toContain(n);
}

/** One decoder layer's `silu(x * w + b)` and `sum(x)` over inputs named like a model file's tensors. */
function layer(b: GraphBuilder, l: number): { ew: Node; red: Node; names: string[] } {
  const names = [`layers.${l}.ffn.x`, `layers.${l}.ffn.w`, `layers.${l}.ffn.b`];
  const x = b.input(names[0], 'f32', ['seq', 64]);
  const w = b.input(names[1], 'f32', [64]);
  const bias = b.input(names[2], 'f32', [64]);
  const ew = b.silu(b.add(b.mul(x, w), bias));
  const red = b.op('sum', [x], { axes: [1], keepdims: false });
  return { ew, red, names };
}

describe('the same kernel for different nodes is byte-identical WGSL', () => {
  const b = new GraphBuilder();
  const l0 = layer(b, 0);
  const l1 = layer(b, 1);
  const names = [...l0.names, ...l1.names];

  it('elementwise: two layers fuse to one program; the header lists ops, not nodes', () => {
    const k0 = generateElementwiseKernel(l0.ew);
    const k1 = generateElementwiseKernel(l1.ew);
    expect(k0.nodes).not.toEqual(k1.nodes); // different nodes …
    expect(k1.wgsl).toBe(k0.wgsl); // … one kernel
    expectNoProvenance(k0.wgsl, names);
    expect(k0.wgsl).toMatch(/\/\/ {3}t2 = silu\(t1\)/); // the program, in the kernel's own names
    expect(k0.nodes).toEqual(k0.fused.map((n) => printNode(n))); // the provenance is kept beside the WGSL
  });

  it('reduce', () => {
    const k0 = generateReduceKernel(l0.red);
    const k1 = generateReduceKernel(l1.red);
    expect(k1.wgsl).toBe(k0.wgsl);
    expect(k0.nodes).not.toEqual(k1.nodes);
    expectNoProvenance(k0.wgsl, names);
  });

  it('rmsnorm with a residual epilogue, f16 storage', () => {
    const norm = (l: number): KernelSource =>
      generateNormKernel({
        kind: 'rmsnorm',
        cols: 64,
        rows: 'seq',
        dtype: 'f16',
        nodes: [`%${10 + l} = rmsnorm(%${8 + l}, @"layers.${l}.attention_norm")`],
        epilogue: { operands: [{ name: `layers.${l}.residual`, dtype: 'f16', broadcast: 'full' }], expr: (v, load) => `${v} + ${load(0)}` },
      });
    const [k0, k1] = [norm(0), norm(1)];
    expect(k1.wgsl).toBe(k0.wgsl);
    expectNoProvenance(k0.wgsl, ['layers.0', 'layers.1', 'attention_norm']);
    expect(k0.nodes).toEqual(['%10 = rmsnorm(%8, @"layers.0.attention_norm")']);
    expect(k0.features).toEqual(['shader-f16']);
    expect(enabled(k0.wgsl)).toEqual(k0.features);
  });

  it('matmul (every variant) with an epilogue operand named like a model tensor', () => {
    for (const variant of [{ kind: 'gemv' }, { kind: 'gemm-subgroup' }, { kind: 'gemm-tiled', unrollTileK: false }, { kind: 'naive' }] as const) {
      const spec = (l: number): MatmulSpec => ({
        M: 'seq',
        N: 64,
        K: 32,
        transB: true,
        variant,
        nodes: [`%${40 + l} = matmul(%${30 + l}, @"layers.${l}.attention.wq")`],
        epilogue: { operands: [{ name: `layers.${l}.attention.bq`, dtype: 'f32', broadcast: 'row' }], expr: (acc, load) => `${acc} + ${load(0)}` },
      });
      const [k0, k1] = [generateMatmulKernel(spec(0)), generateMatmulKernel(spec(1))];
      expect(k1.wgsl, variant.kind).toBe(k0.wgsl);
      expectNoProvenance(k0.wgsl, ['layers.0', 'layers.1', 'attention']);
      expect(k0.features, variant.kind).toEqual(matmulRequiredFeatures(spec(0)));
      expect(enabled(k0.wgsl), variant.kind).toEqual(k0.features);
    }
  });

  it('rope, embedding (dense and quantized), attention and sampling: nodes never reach the WGSL; declared features match the directives', () => {
    const evil = ['%99 = thing(@"model.layers.7.self_attn") // end\nfn main() {}'];
    const kernels = [
      generateRopeKernel({ numHeads: 4, headDim: 16, theta: 10000, style: 'half', dtype: 'f16', nodes: evil }),
      generateEmbeddingKernel({ vocab: 32, dim: 16, dtype: 'f16', nodes: evil }),
      generateDequantEmbeddingKernel({ vocab: 32, dim: 20, dtype: 'f16', weight: { bits: 4, signed: false, groupSize: 10, hasZeroPoint: true, hasMin: true }, nodes: evil }),
      generatePagedAttentionKernel({ numHeads: 4, numKvHeads: 2, headDim: 16, dtype: 'f32', causal: true, blockSize: 16, variant: 'decode', nodes: evil }),
      generateSamplingKernel({ vocab: 512, dtype: 'f32', mode: 'sample', subgroups: true, nodes: evil }),
      generateSamplingKernel({ vocab: 512, dtype: 'f16', mode: 'argmax', nodes: evil }),
    ];
    for (const k of kernels) {
      expect(k.nodes, k.family).toEqual(evil);
      expectNoProvenance(k.wgsl, ['model.layers', 'self_attn', 'thing']);
      expect(k.features, k.family).toBeDefined();
      expect(enabled(k.wgsl), `${k.family}/${k.variant}`).toEqual(k.features);
    }
    expect(kernels.map((k) => k.features)).toEqual([['shader-f16'], ['shader-f16'], ['shader-f16'], [], ['subgroups'], ['shader-f16']]);
  });
});

describe('KernelSet', () => {
  const b = new GraphBuilder();
  const layers = Array.from({ length: 3 }, (_v, l) => layer(b, l));

  it('keeps one kernel per identity and the union of the nodes it implements, in order', () => {
    const set = new KernelSet();
    const idx = layers.map((l) => set.add(generateElementwiseKernel(l.ew)));
    expect(idx).toEqual([0, 0, 0]);
    expect(set.kernels).toHaveLength(1);
    expect(set.kernels[0].nodes).toEqual(layers.flatMap((l) => generateElementwiseKernel(l.ew).nodes).filter((n, i, a) => a.indexOf(n) === i));
    // only KernelSource's fields are kept (an elementwise kernel also carries graph nodes: not JSON)
    expect(Object.keys(set.kernels[0]).sort()).toEqual(['bindings', 'family', 'features', 'grid', 'nodes', 'params', 'variant', 'wgsl']);
    expect(set.add(generateReduceKernel(layers[0].red))).toBe(1);
    expect(set.add(generateReduceKernel(layers[2].red))).toBe(1);
  });

  it(`caps a merged kernel's nodes at ${MAX_KERNEL_NODES}`, () => {
    const set = new KernelSet();
    const base = generateNormKernel({ kind: 'rmsnorm', cols: 8, dtype: 'f32' });
    for (let i = 0; i < 100; i++) set.add({ ...base, nodes: [`node ${i}`] });
    set.add({ ...base, nodes: ['node 0'] });
    expect(set.kernels).toHaveLength(1);
    expect(set.kernels[0].nodes).toHaveLength(MAX_KERNEL_NODES);
    expect(set.kernels[0].nodes[MAX_KERNEL_NODES - 1]).toBe(`node ${MAX_KERNEL_NODES - 1}`);
  });

  it('the same WGSL launched differently stays two kernels', () => {
    const set = new KernelSet();
    const k = generateNormKernel({ kind: 'rmsnorm', cols: 8, dtype: 'f32' });
    expect(set.add(k)).toBe(0);
    expect(set.add({ ...k, grid: [7, 1, 1] })).toBe(1);
  });

  it('required features: the union of declared ones; saved kernels without them fall back to their directives', () => {
    const f16 = generateNormKernel({ kind: 'rmsnorm', cols: 8, dtype: 'f16' });
    const sg = generateMatmulKernel({ M: 4, N: 64, K: 32, transB: true, variant: { kind: 'gemm-subgroup' } });
    const set = new KernelSet();
    set.add(f16);
    set.add(sg);
    expect(set.requiredFeatures()).toEqual(['shader-f16', 'subgroups']);
    // an engine saved before features were declared
    const { features: _f, ...old } = sg;
    expect(kernelFeaturesOf(old)).toEqual(['subgroups']);
    expect(requiredFeatures([{ ...f16, features: undefined }, old])).toEqual(['shader-f16', 'subgroups']);
  });
});
