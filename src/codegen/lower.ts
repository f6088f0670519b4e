/**
 * Lowering: picks a kernel (and variant) for every node of an optimized graph and turns the graph into an ordered
 * list of dispatches over buffer references (arena offsets from the memory plan, weights, inputs, the paged KV
 * cache). One file maps op → kernel family; the families themselves live one per file beside it.
 * @module
 */
import { UnsupportedOpError } from '../errors.js';
import { dimMul, dimProduct, numel, type Dim } from '../ir/dim.js';
import type { Graph } from '../ir/graph.js';
import { rewriteGraph } from '../passes/rewrite.js';
import { makeNode, type Node } from '../ir/node.js';
import type { FusedStep } from '../ir/ops.js';
import { printNode } from '../ir/printer.js';
import type { MemoryPlan } from '../passes/memory-plan.js';
import type { SlotPlan } from '../passes/buffer-slots.js';
import type { BufferRef, DispatchManifest } from '../runtime/engine-manifest.js';
import { chooseAttentionVariant, decodeRowLanes, generateAttentionKernel, generateKvCacheWriteKernel, generatePagedAttentionKernel, type AttentionVariant } from './attention.js';
import { ELEMENTWISE_KERNEL_OPS, generateElementwiseKernel, scalarExpr } from './elementwise.js';
import { generateConcatKernel, generateEmbeddingKernel, generateGatherKernel, generateSliceKernel, generateTransposeKernel } from './gather.js';
import type { HeadWindow, KernelSource } from './kernel.js';
import { chooseMatmulVariant, generateGeneralMatmulKernel, generateMatmulKernel, isSoftwareDevice, type MatmulActivation, type MatmulDeviceInfo, type MatmulEpilogueOperand, type MatmulSpec, type MatmulVariantKind } from './matmul.js';
import { generateNormKernel } from './norm.js';
import { generateReduceKernel } from './reduce.js';
import { generateRopeKernel, type RopeSpec } from './rope.js';
import { generateSoftmaxKernel } from './softmax.js';
import { literal, usesBitsHelper } from './wgsl.js';

/** A paged-attention node: its KV-cache layer and the new keys/values it appends. */
export interface PagedAttention {
  /** Decoder layer (index of the K/V pools). */
  readonly layer: number;
  /** New keys `[1, S, Hkv, D]`. */
  readonly k: Node;
  /** New values `[1, S, Hkv, Dv]`, or the wider `[1, S, heads, Dv]` tensor they are a head slice of (see `vHeads`). */
  readonly v: Node;
  /**
   * When set, `v` is the source the new values are heads `firstHead ..` of (a merged QKV projection), and the
   * attention node is a `fused {kind: 'attention'}` whose program is that head slice then the attention: the KV-cache
   * write reads the values in place and no slice copy runs.
   */
  readonly vHeads?: HeadWindow;
}

/** Kernel variants forced over the heuristics. */
export interface LowerVariants {
  /** Matmul variant kind. */
  readonly matmul?: MatmulVariantKind;
  /** Attention variant: a kind, or a kind with its tuning. */
  readonly attention?: AttentionVariant['kind'] | AttentionVariant;
}

/** What lowering needs besides the graph. */
export interface LowerContext {
  /** The device the kernels are for. */
  readonly device: MatmulDeviceInfo;
  /** The memory plan of this graph (its schedule orders the dispatches). */
  readonly plan: MemoryPlan;
  /** The slot of each activation. */
  readonly slots: SlotPlan;
  /** The expected number of new tokens (variant choice: decode GEMV vs prefill GEMM). */
  readonly expectedSeq: number;
  /** Attention nodes that read the paged KV cache. */
  readonly paged: ReadonlyMap<Node, PagedAttention>;
  /** Tokens per KV-cache block. */
  readonly blockSize: number;
  /** Variants to use instead of the heuristic choice (for tuning and debugging). */
  readonly variants?: LowerVariants;
  /** Index of a weight (or constant, materialized as a weight) in the engine. */
  weightIndex(node: Node): number;
  /** Index of a kernel in the engine (deduplicating identical kernels). */
  kernelIndex(k: KernelSource): number;
}

const dimText = (d: Dim): number | string => (typeof d === 'number' ? d : d.text);

/** Software rasterizers (lavapipe) compile unrolled loops very slowly: kernels hide their loop bounds there. */
function software(ctx: LowerContext): boolean {
  return isSoftwareDevice(ctx.device);
}

/**
 * The engine input a constant holding symbolic dims is bound as (the runtime computes its values on each run from
 * the dims' bindings), or `undefined` for any other node.
 */
export function computedInputName(n: Node): string | undefined {
  return n.op === 'constant' && (n.attrs.values as unknown[]).some((v) => typeof v !== 'number') ? `dims#${n.id}` : undefined;
}

/** The buffer holding `node`'s value. */
export function bufferRef(node: Node, ctx: LowerContext): BufferRef {
  let n = node;
  while (n.op === 'reshape' && (n.inputs[0].op === 'input' || n.inputs[0].op === 'weight' || n.inputs[0].op === 'constant' || n.inputs[0].op === 'reshape')) n = n.inputs[0];
  if (n.op === 'input') return { kind: 'input', name: String(n.attrs.name) };
  const computed = computedInputName(n);
  if (computed) return { kind: 'input', name: computed };
  if (n.op === 'weight' || n.op === 'constant') return { kind: 'weight', weight: ctx.weightIndex(n), part: 'values' };
  const b = ctx.slots.of.get(node);
  if (!b) throw new UnsupportedOpError([node.op], `no buffer was planned for ${printNode(node)}`);
  return { kind: 'arena', slot: b.slot, size: b.bytes };
}

function dispatch(ctx: LowerContext, kernel: KernelSource, bindings: BufferRef[], label: string): DispatchManifest {
  return { kernel: ctx.kernelIndex(kernel), bindings, label };
}

function storage(n: Node): 'f32' | 'f16' {
  if (n.dtype !== 'f32' && n.dtype !== 'f16') throw new UnsupportedOpError([n.op], `WebGPU kernels for ${printNode(n)} need f32 or f16 data, got ${n.dtype}`);
  return n.dtype;
}

/** Rebuilds a fused node's program as real nodes over its operands; returns them in step order. */
export function unfuse(fused: Node): Node[] {
  const steps = fused.attrs.steps as unknown as FusedStep[];
  const out: Node[] = [];
  for (const st of steps) out.push(makeNode(st.op, st.args.map((r) => (r >= 0 ? fused.inputs[r] : out[-r - 1])), st.attrs));
  return out;
}

/** How an epilogue operand of shape `s` maps onto an output `[..., M, N]`. */
function broadcastKind(s: readonly Dim[], out: readonly Dim[]): MatmulEpilogueOperand['broadcast'] | undefined {
  if (numel(s) === 1) return 'scalar';
  const r = out.length;
  const N = out[r - 1];
  const M = out[r - 2];
  const lead = s.slice(0, -1);
  if (s[s.length - 1] === N && lead.every((d) => d === 1)) return 'row';
  if (s.length === out.length && s.every((d, i) => d === out[i])) return 'full';
  if (s[s.length - 1] === 1 && s[s.length - 2] === M && s.slice(0, -2).every((d) => d === 1)) return 'col';
  return undefined;
}

const GATE_ACTIVATIONS: Readonly<Record<string, MatmulActivation>> = { silu: 'silu', relu: 'relu', sigmoid: 'sigmoid' };

/** The matmul spec (and operand nodes) of a plain or fused matmul. */
function matmulLaunch(node: Node, ctx: LowerContext): { spec: MatmulSpec; operands: Node[] } {
  const steps = node.op === 'fused' ? unfuse(node) : [node];
  const mm = steps[0];
  if (mm.op !== 'matmul') throw new UnsupportedOpError([mm.op], `a matmul kernel cannot start with ${printNode(mm)}`);
  const [A, B] = mm.inputs;
  const transA = mm.attrs.transA as boolean;
  const transB = mm.attrs.transB as boolean;
  const ra = A.shape.length;
  const rb = B.shape.length;
  const M = transA ? A.shape[ra - 1] : A.shape[ra - 2];
  const K = transA ? A.shape[ra - 2] : A.shape[ra - 1];
  const N = transB ? B.shape[rb - 2] : B.shape[rb - 1];
  if (typeof N !== 'number' || typeof K !== 'number' || needsGeneralMatmul(mm)) throw new UnsupportedOpError(['matmul'], `fused matmul kernels need static N and K > 0 and float data: ${printNode(mm)}`);
  const outBatch = mm.shape.slice(0, -2);
  const batch = dimProduct(outBatch);
  const strideOf = (x: Node, mk: Dim): number | string => {
    const b = x.shape.slice(0, -2);
    if (numel(b) === 1) return 0;
    if (b.length === outBatch.length && b.every((d, i) => d === outBatch[i])) return dimText(mk);
    throw new UnsupportedOpError(['matmul'], `matmul kernels broadcast a whole operand's batch or none of it: ${printNode(mm)}`);
  };
  const spec: { -readonly [K in keyof MatmulSpec]: MatmulSpec[K] } = {
    M: dimText(M),
    N,
    K,
    batch: dimText(batch),
    batchStrides: { a: strideOf(A, dimProduct([M, K])), b: strideOf(B, K * N) },
    transA,
    transB,
    dtypes: { a: storage(A), b: storage(B), out: storage(node) },
    expectedM: ctx.expectedSeq,
    nodes: [printNode(node)],
  };
  const operands: Node[] = [A, B];
  let value: Node = mm;
  let rest = steps.slice(1);
  // SwiGLU / GeGLU: act(slice(mm, 0:H)) * slice(mm, H:2H)
  if (rest.length >= 4) {
    const [s0, act, s1, mul] = rest;
    const half = N / 2;
    const isSlice = (s: Node, start: number): boolean =>
      s.op === 'slice' && s.inputs[0] === mm && (s.attrs.axes as number[]).length === 1 && (s.attrs.axes as number[])[0] === mm.rank - 1 && (s.attrs.starts as Dim[])[0] === start && (s.attrs.ends as Dim[])[0] === start + half;
    const actName = act.op === 'gelu' ? (act.attrs.approximate === 'tanh' ? 'gelu_tanh' : 'gelu') : GATE_ACTIVATIONS[act.op];
    if (isSlice(s0, 0) && act.inputs[0] === s0 && actName && isSlice(s1, half) && mul.op === 'mul' && new Set(mul.inputs).has(act) && new Set(mul.inputs).has(s1)) {
      spec.gated = { activation: actName as MatmulActivation };
      value = mul;
      rest = rest.slice(4);
    }
  }
  if (rest.length) {
    const outShape = value.shape;
    const epOperands: Node[] = [];
    const exprOf = new Map<Node, string>();
    const helpers = new Set<string>();
    const loads: string[] = [];
    exprOf.set(value, 'ACC');
    for (const st of rest) {
      const splat = st.op === 'constant' ? (st.attrs.values as unknown[]) : undefined;
      if (splat && splat.length === 1 && typeof splat[0] === 'number') {
        const lit = literal(st.dtype, splat[0]);
        if (usesBitsHelper(lit)) helpers.add('bits_f32');
        exprOf.set(st, lit);
        continue;
      }
      if (!ELEMENTWISE_KERNEL_OPS.has(st.op) || st.shape.length !== outShape.length || !st.shape.every((d, i) => d === outShape[i]))
        throw new UnsupportedOpError([st.op], `matmul epilogues are elementwise over the output: ${printNode(st)}`);
      const args = st.inputs.map((x) => {
        const e = exprOf.get(x);
        if (e !== undefined) return e;
        const xs = x.op === 'constant' ? (x.attrs.values as unknown[]) : undefined;
        if (xs && xs.length === 1 && typeof xs[0] === 'number') {
          const lit = literal(x.dtype, xs[0]);
          if (usesBitsHelper(lit)) helpers.add('bits_f32');
          return lit;
        }
        const kind = broadcastKind(x.shape, outShape);
        if (!kind || (x.dtype !== 'f32' && x.dtype !== 'f16')) throw new UnsupportedOpError([st.op], `epilogue operand ${printNode(x)} does not map onto the matmul output`);
        const i = epOperands.indexOf(x) >= 0 ? epOperands.indexOf(x) : epOperands.push(x) - 1;
        loads[i] = kind;
        return `LOAD${i}`;
      });
      exprOf.set(st, `(${scalarExpr(st, args, helpers)})`);
    }
    const body = exprOf.get(rest[rest.length - 1])!;
    spec.epilogue = {
      operands: epOperands.map((x, i) => ({ name: `ep_${i}`, dtype: x.dtype as 'f32' | 'f16', broadcast: loads[i] as MatmulEpilogueOperand['broadcast'] })),
      expr: (acc, load) => body.replace(/ACC/g, `(${acc})`).replace(/LOAD(\d+)/g, (_m, i) => load(Number(i))),
      helpers: [...helpers],
    };
    operands.push(...epOperands);
  }
  spec.variant = ctx.variants?.matmul ?? chooseMatmulVariant(spec, ctx.device);
  return { spec, operands };
}

/** The dispatches computing `node` (empty for views). */
export function lowerNode(node: Node, ctx: LowerContext): DispatchManifest[] {
  const label = printNode(node);
  const out = (): BufferRef => bufferRef(node, ctx);
  const ref = (x: Node): BufferRef => bufferRef(x, ctx);
  if (numel(node.shape) === 0) return []; // an empty tensor: nothing to compute
  switch (node.op) {
    case 'input':
    case 'weight':
    case 'constant':
    case 'reshape':
      return [];
    case 'matmul':
      return [matmulDispatch(node, ctx)];
    case 'fused': {
      const kind = node.attrs.kind as string;
      if (kind === 'matmul') return [matmulDispatch(node, ctx)];
      if (kind === 'rope') return [ropeDispatch(node, ctx)];
      if (kind === 'attention' && ctx.paged.has(node)) return attentionDispatches(node, ctx);
      if (kind === 'elementwise') {
        const steps = new Set(unfuse(node));
        const root = [...steps][steps.size - 1];
        const k = generateElementwiseKernel(root, { fuse: (n) => steps.has(n) });
        return [dispatch(ctx, k, [...k.operands.map(ref), out()], label)];
      }
      throw new UnsupportedOpError([`fused:${kind}`], `no WebGPU kernel for fused ${kind} nodes yet: ${label}`);
    }
    case 'gather': {
      const [table, ids] = node.inputs;
      const axis = node.attrs.axis as number;
      const indexDType = ids.dtype === 'u32' ? 'u32' : 'i32';
      const count = dimText(numel(ids.shape));
      const k =
        axis === 0 && table.rank === 2 && typeof table.shape[0] === 'number' && typeof table.shape[1] === 'number'
          ? generateEmbeddingKernel({ vocab: table.shape[0], dim: table.shape[1], count, dtype: node.dtype, indexDType, nodes: [label] })
          : generateGatherKernel({ shape: table.shape.map(dimText), axis, count, dtype: node.dtype, indexDType, nodes: [label] });
      return [dispatch(ctx, k, [ref(table), ref(ids), out()], label)];
    }
    case 'rmsnorm':
    case 'layernorm': {
      const x = node.inputs[0];
      const cols = x.shape[x.rank - 1];
      if (typeof cols !== 'number') throw new UnsupportedOpError([node.op], `norms need a static last axis: ${label}`);
      const k = generateNormKernel({
        kind: node.op,
        cols,
        rows: dimText(dimProduct(x.shape.slice(0, -1))),
        dtype: storage(node),
        eps: node.attrs.eps as number,
        bias: node.inputs.length > 2,
        subgroups: ctx.device.features.includes('subgroups'),
        staticLoops: !software(ctx),
        nodes: [label],
      });
      return [dispatch(ctx, k, [...node.inputs.map(ref), out()], label)];
    }
    case 'softmax': {
      const x = node.inputs[0];
      if (node.attrs.axis !== x.rank - 1) throw new UnsupportedOpError(['softmax'], `WebGPU softmax runs over the last axis: ${label}`);
      const k = generateSoftmaxKernel({ cols: dimText(x.shape[x.rank - 1]), rows: dimText(dimProduct(x.shape.slice(0, -1))), dtype: storage(node), subgroups: ctx.device.features.includes('subgroups'), staticLoops: !software(ctx), nodes: [label] });
      return [dispatch(ctx, k, [ref(x), out()], label)];
    }
    case 'rope':
      return [ropeDispatch(node, ctx)];
    case 'attention':
      return attentionDispatches(node, ctx);
    case 'sum':
    case 'mean':
    case 'max':
      return [dispatch(ctx, generateReduceKernel(node), [ref(node.inputs[0]), out()], label)];
    case 'transpose': {
      const x = node.inputs[0];
      const k = generateTransposeKernel({ shape: x.shape.map(dimText), perm: node.attrs.perm as number[], dtype: node.dtype, nodes: [label] });
      return [dispatch(ctx, k, [ref(x), out()], label)];
    }
    case 'slice': {
      const x = node.inputs[0];
      const axes = node.attrs.axes as number[];
      const starts = x.shape.map((): number | string => 0);
      const steps = x.shape.map(() => 1);
      axes.forEach((ax, i) => {
        starts[ax] = dimText((node.attrs.starts as Dim[])[i]);
        steps[ax] = (node.attrs.steps as number[])[i];
      });
      const k = generateSliceKernel({ shape: x.shape.map(dimText), starts, steps, outShape: node.shape.map(dimText), dtype: node.dtype, nodes: [label] });
      return [dispatch(ctx, k, [ref(x), out()], label)];
    }
    case 'concat': {
      const k = generateConcatKernel({ shapes: node.inputs.map((x) => x.shape.map(dimText)), axis: node.attrs.axis as number, dtype: node.dtype, nodes: [label] });
      return [dispatch(ctx, k, [...node.inputs.map(ref), out()], label)];
    }
    default:
      if (ELEMENTWISE_KERNEL_OPS.has(node.op)) {
        const k = generateElementwiseKernel(node, { fuse: (n) => n === node });
        return [dispatch(ctx, k, [...k.operands.map(ref), out()], label)];
      }
      throw new UnsupportedOpError([node.op], `no WebGPU kernel for ${label}`);
  }
}

/** Whether a plain matmul needs {@link generateGeneralMatmulKernel}: a dynamic N or K, K = 0, or integer data. */
function needsGeneralMatmul(mm: Node): boolean {
  const [A, B] = mm.inputs;
  const K = mm.attrs.transA ? A.shape[A.rank - 2] : A.shape[A.rank - 1];
  const N = mm.attrs.transB ? B.shape[B.rank - 2] : B.shape[B.rank - 1];
  return typeof N !== 'number' || typeof K !== 'number' || K === 0 || mm.dtype === 'i32';
}

function generalMatmulDispatch(mm: Node, ctx: LowerContext): DispatchManifest {
  const [A, B] = mm.inputs;
  if (mm.dtype !== 'i32' && mm.dtype !== 'f32' && mm.dtype !== 'f16') throw new UnsupportedOpError(['matmul'], `no WebGPU matmul kernel for ${mm.dtype} data: ${printNode(mm)}`);
  const transA = mm.attrs.transA as boolean;
  const transB = mm.attrs.transB as boolean;
  const M = mm.shape[mm.rank - 2];
  const N = mm.shape[mm.rank - 1];
  const K = transA ? A.shape[A.rank - 2] : A.shape[A.rank - 1];
  // legalization left each operand's batch either whole or broadcast (stride 0)
  const stride = (x: Node, rows: Dim, cols: Dim): number | string => (numel(x.shape.slice(0, -2)) === 1 ? 0 : dimText(dimMul(rows, cols)));
  const k = generateGeneralMatmulKernel({
    M: dimText(M),
    N: dimText(N),
    K: dimText(K),
    batch: dimText(dimProduct(mm.shape.slice(0, -2))),
    batchStrides: { a: stride(A, M, K), b: stride(B, K, N) },
    transA,
    transB,
    dtype: mm.dtype,
    nodes: [printNode(mm)],
  });
  return dispatch(ctx, k, [bufferRef(A, ctx), bufferRef(B, ctx), bufferRef(mm, ctx)], printNode(mm));
}

function matmulDispatch(node: Node, ctx: LowerContext): DispatchManifest {
  if (node.op === 'matmul' && needsGeneralMatmul(node)) return generalMatmulDispatch(node, ctx);
  const { spec, operands } = matmulLaunch(node, ctx);
  const k = generateMatmulKernel(spec);
  return dispatch(ctx, k, [...operands.map((x) => bufferRef(x, ctx)), bufferRef(node, ctx)], printNode(node));
}

/**
 * The attention variant `v` with its tuning for the device where `v` names only a kind (decode: lanes per head, see
 * {@link decodeRowLanes}); a variant with its own tuning is kept.
 */
function attentionVariant(ctx: LowerContext, v: AttentionVariant['kind'] | AttentionVariant, D: number, Dv: number): AttentionVariant {
  if (typeof v !== 'string') return v;
  return v === 'decode' ? { kind: v, rowLanes: decodeRowLanes(D, Dv, software(ctx)) } : { kind: v };
}

/**
 * The head window `n` reads when it is a slice of heads (axis 2 of a rank-4 tensor, step 1, static bounds), such as
 * q, k or v of a merged QKV projection; `undefined` for any other node.
 */
export function headSliceWindow(n: Node): HeadWindow | undefined {
  if (n.op !== 'slice' || n.rank !== 4) return undefined;
  const { axes, starts, steps } = n.attrs as { axes: number[]; starts: unknown[]; steps: number[] };
  const total = n.inputs[0].shape[2];
  const heads = n.shape[2];
  const first = starts[0];
  if (axes.length !== 1 || axes[0] !== 2 || steps[0] !== 1 || typeof total !== 'number' || typeof heads !== 'number') return undefined;
  if (typeof first !== 'number' || !Number.isInteger(first) || first < 0 || first + heads > total) return undefined;
  return { numHeads: total, firstHead: first };
}

/**
 * The rope kernel of a plain `rope` or of a `fused {kind: 'rope'}` whose program is a head slice (axis 2, step 1)
 * then the rope: the kernel reads that window of heads in place. Throws {@link UnsupportedOpError} for other forms.
 */
function ropeLaunch(node: Node): { spec: RopeSpec; x: Node; pos: Node } {
  const label = printNode(node);
  const steps = node.op === 'fused' ? unfuse(node) : [node];
  const rope = steps[steps.length - 1];
  const [sliced, pos] = rope.inputs;
  let x = sliced;
  let source: RopeSpec['source'];
  if (node.op === 'fused') {
    source = steps.length === 2 && rope.op === 'rope' && sliced === steps[0] ? headSliceWindow(steps[0]) : undefined;
    if (!source) throw new UnsupportedOpError(['fused:rope'], `the WebGPU rope kernel takes only a head-slice prologue: ${label}`);
    x = steps[0].inputs[0];
  }
  const [b, s, h, d] = sliced.shape;
  if (b !== 1 || typeof h !== 'number' || typeof d !== 'number' || pos.rank !== 1) throw new UnsupportedOpError(['rope'], `WebGPU rope takes [1, S, H, D] with [S] positions: ${label}`);
  const spec: RopeSpec = {
    seq: dimText(s),
    numHeads: h,
    headDim: d,
    rotaryDim: rope.attrs.rotaryDim as number,
    theta: rope.attrs.theta as number,
    style: rope.attrs.style as 'interleaved' | 'half',
    dtype: storage(node),
    positions: { kind: 'buffer', dtype: pos.dtype === 'u32' ? 'u32' : 'i32' },
    ...(source ? { source } : {}),
    nodes: [label],
  };
  return { spec, x, pos };
}

function ropeDispatch(node: Node, ctx: LowerContext): DispatchManifest {
  const { spec, x, pos } = ropeLaunch(node);
  return dispatch(ctx, generateRopeKernel(spec), [bufferRef(x, ctx), bufferRef(pos, ctx), bufferRef(node, ctx)], printNode(node));
}

function attentionDispatches(node: Node, ctx: LowerContext): DispatchManifest[] {
  const label = printNode(node);
  // a paged attention fused with its values' head slice (see PagedAttention.vHeads): the attention is the last step
  const att = node.op === 'fused' ? unfuse(node).at(-1)! : node;
  const [q, k, v, mask] = att.inputs;
  const [B, S, Hq, D] = q.shape;
  const [, T, Hkv] = k.shape;
  const Dv = v.shape[3];
  if (typeof Hq !== 'number' || typeof Hkv !== 'number' || typeof D !== 'number' || typeof Dv !== 'number')
    throw new UnsupportedOpError(['attention'], `attention kernels need static head counts and dims: ${label}`);
  const heads = { numHeads: Hq, numKvHeads: Hkv, headDim: D, valueDim: Dv, dtype: storage(node), causal: att.attrs.causal as boolean, scale: att.attrs.scale as number, staticLoops: !software(ctx), nodes: [label] };
  const paged = ctx.paged.get(node);
  if (paged) {
    const write = generateKvCacheWriteKernel({
      numKvHeads: Hkv,
      headDim: D,
      valueDim: Dv,
      blockSize: ctx.blockSize,
      dtype: 'f32',
      sourceDType: storage(paged.k),
      seq: dimText(S),
      past: 'past',
      ...(paged.vHeads ? { valueSource: paged.vHeads } : {}),
      nodes: [label],
    });
    const attn = generatePagedAttentionKernel({ ...heads, kvDType: 'f32', blockSize: ctx.blockSize, seq: dimText(S), past: 'past', variant: attentionVariant(ctx, ctx.variants?.attention ?? chooseAttentionVariant('seq', ctx.expectedSeq), D, Dv) });
    const kv = (which: 'k' | 'v'): BufferRef => ({ kind: 'kv', layer: paged.layer, which });
    return [
      dispatch(ctx, write, [bufferRef(paged.k, ctx), bufferRef(paged.v, ctx), { kind: 'block-table' }, kv('k'), kv('v')], `kv-cache write (layer ${paged.layer})`),
      dispatch(ctx, attn, [bufferRef(q, ctx), kv('k'), kv('v'), { kind: 'block-table' }, bufferRef(node, ctx)], label),
    ];
  }
  const spec = {
    ...heads,
    batch: dimText(B),
    seq: dimText(S),
    kvLen: dimText(T),
    mask: mask ? { dtype: mask.dtype === 'bool' ? ('bool' as const) : storage(mask), shape: mask.shape.map(dimText) } : undefined,
    variant: attentionVariant(ctx, chooseAttentionVariant(dimText(S)), D, Dv),
  };
  const kern = generateAttentionKernel(spec);
  return [dispatch(ctx, kern, [bufferRef(q, ctx), bufferRef(k, ctx), bufferRef(v, ctx), ...(mask ? [bufferRef(mask, ctx)] : []), bufferRef(node, ctx)], label)];
}

/** Every dispatch of a graph, in the memory plan's schedule; throws one {@link UnsupportedOpError} listing every node no kernel covers. */
export function lowerGraph(ctx: LowerContext): DispatchManifest[] {
  const out: DispatchManifest[] = [];
  const unsupported: UnsupportedOpError[] = [];
  for (const node of ctx.plan.schedule) {
    try {
      out.push(...lowerNode(node, ctx));
    } catch (e) {
      if (e instanceof UnsupportedOpError) unsupported.push(e);
      else throw e;
    }
  }
  if (unsupported.length)
    throw new UnsupportedOpError(
      [...new Set(unsupported.flatMap((e) => e.ops))],
      `${unsupported.length} node(s) have no WebGPU kernel: ${unsupported.map((e) => e.message).join('; ')}`,
    );
  return out;
}

/** What legalization needs: the device and the variant choices (as lowering). */
export type LegalizeContext = Pick<LowerContext, 'device' | 'expectedSeq' | 'variants'>;

/**
 * Rewrites a graph into forms the kernels implement, without changing what it computes: fused nodes no kernel
 * family can take (an epilogue operand that does not map onto the matmul output, a matmul needing the general
 * kernel, a fused kind without a kernel) are expanded back into their steps; a softmax over another axis than the
 * last is wrapped in transposes; a reduction of an empty tensor becomes its identity value; and matmuls that
 * broadcast only part of an operand's batch get that operand expanded first.
 */
export function legalizeForWebGPU(g: Graph, ctx: LegalizeContext): Graph {
  const full = { ...ctx, plan: undefined as never, slots: undefined as never, paged: new Map(), blockSize: 16, weightIndex: () => 0, kernelIndex: () => 0 } satisfies LowerContext;
  const r = rewriteGraph(g, [
    {
      name: 'unfuse-unsupported',
      root: 'fused',
      apply: ({ node }) => {
        const kind = node.attrs.kind as string;
        if (kind === 'elementwise') return undefined;
        if (kind === 'matmul' || kind === 'rope') {
          try {
            if (kind === 'matmul') matmulLaunch(node, full);
            else ropeLaunch(node);
            return undefined;
          } catch (e) {
            if (!(e instanceof UnsupportedOpError)) throw e;
          }
        }
        const steps = unfuse(node);
        return steps[steps.length - 1];
      },
    },
    {
      // the softmax kernel normalizes rows: another axis is moved last and back
      name: 'softmax-last-axis',
      root: 'softmax',
      apply: ({ node }) => {
        const last = node.rank - 1;
        const axis = node.attrs.axis as number;
        if (axis === last) return undefined;
        const perm = node.shape.map((_d, i) => (i === axis ? last : i === last ? axis : i));
        const moved = makeNode('transpose', [node.inputs[0]], { perm });
        return makeNode('transpose', [makeNode('softmax', [moved], { ...node.attrs, axis: last })], { perm });
      },
    },
    {
      // a reduction over no elements is its identity (sum 0, max the lowest value, mean NaN): no kernel reads the
      // empty input
      name: 'empty-reduction',
      root: ['sum', 'mean', 'max'],
      apply: ({ node }) => {
        if (numel(node.inputs[0].shape) !== 0 || numel(node.shape) === 0) return undefined;
        const lowest = node.dtype === 'i32' ? -(2 ** 31) : node.dtype === 'u32' ? 0 : -Infinity;
        const value = node.op === 'sum' ? 0 : node.op === 'max' ? lowest : NaN;
        return makeNode('expand', [makeNode('constant', [], { dtype: node.dtype, shape: [], values: [value] })], { shape: [...node.shape] });
      },
    },
    {
      name: 'expand-matmul-batch',
      root: 'matmul',
      apply: ({ node }) => {
        const outBatch = node.shape.slice(0, -2);
        const fix = (x: Node): Node => {
          const b = x.shape.slice(0, -2);
          if (numel(b) === 1 || (b.length === outBatch.length && b.every((d, i) => d === outBatch[i]))) return x;
          return makeNode('expand', [x], { shape: [...outBatch, ...x.shape.slice(-2)] });
        };
        const [a, b] = node.inputs.map(fix);
        return a === node.inputs[0] && b === node.inputs[1] ? undefined : makeNode('matmul', [a, b], node.attrs);
      },
    },
  ]);
  return r.graph;
}
