/**
 * `compile()`: model → optimized graph → kernels → an {@link Engine} (plans of dispatches, an activation arena from
 * the memory plan, weights in the layouts the kernels read, a paged KV cache for causal LMs).
 * @module
 */
import { DeviceError, InputError, UnsupportedOpError } from './errors.js';
import { printNode } from './ir/printer.js';
import type { LoadedModel } from './frontends/load.js';
import type { Dim, DimBindings } from './ir/dim.js';
import { Graph } from './ir/graph.js';
import { makeNode, type Node } from './ir/node.js';
import { WeightStore, type WeightEntry } from './ir/weights.js';
import { planMemory } from './passes/memory-plan.js';
import { assignSlots } from './passes/buffer-slots.js';
import { PASSES, resolvePipeline, runPasses, type PipelineResult } from './passes/pipeline.js';
import { discreteGpuProfile, lavapipeProfile, type DeviceProfile } from './passes/device-profile.js';
import { rewriteGraph } from './passes/rewrite.js';
import { buildFusedNode } from './passes/fuse-elementwise.js';
import { computedInputName, headSliceWindow, legalizeForWebGPU, lowerGraph, type LowerVariants, type PagedAttention } from './codegen/lower.js';
import { isSoftwareDevice } from './codegen/matmul.js';
import { generateSamplingKernel } from './codegen/sampling.js';
import type { KernelSource } from './codegen/kernel.js';
import { KernelSet } from './codegen/kernel-set.js';
import { Engine } from './runtime/engine.js';
import { ENGINE_FORMAT_VERSION, type SamplerSettings, type DispatchManifest, type EngineManifest, type IOManifest, type PlanManifest, type WeightManifest } from './runtime/engine-manifest.js';
import { requestGPUDevice, type DeviceInfo, type GPUDeviceHandle } from './runtime/device.js';
import { bindInputs } from './runtime/cpu/interpreter.js';
import type { Tensor } from './runtime/cpu/tensor.js';
import { byteSize } from './ir/dtype.js';
import { evalShape, shapeToJSON } from './ir/dim.js';

/** Options of {@link compile} and {@link compileGraph}. */
export interface CompileOptions {
  /** The device the kernels are chosen for (from `requestGPUDevice().info` or `probeWebGPU()`). */
  device: DeviceInfo;
  /** Pass pipeline before lowering (default `O3`). */
  passes?: string;
  /** Largest prompt chunk one prefill step takes (default min(maxPositions, 128)); longer prompts are chunked. */
  prefillChunk?: number;
  /** Tokens per KV-cache block (default 16). */
  blockSize?: number;
  /** Sampling settings the GPU sampler is built for (default temperature 1, top-p 0.9). */
  sampling?: SamplerSettings;
  /** Override of the device's storage-binding limit (tests use a small one to exercise splitting). */
  maxStorageBufferBindingSize?: number;
  /** Kernel variants to force over the heuristics (tuning, debugging). */
  variants?: LowerVariants;
  /** Progress lines (compile steps and their times). */
  onProgress?: (line: string) => void;
}

/** The device profile the optimizer uses for a WebGPU device. */
export function profileFor(info: DeviceInfo): DeviceProfile {
  const base = isSoftwareDevice(info) ? lavapipeProfile : discreteGpuProfile;
  return { ...base, hasF16: info.features.includes('shader-f16') && base.hasF16, maxStorageBufferBindingSize: info.limits.maxStorageBufferBindingSize ?? base.maxStorageBufferBindingSize };
}

/** Pass options for WebGPU: fuse only the forms the kernels implement (matmul epilogues, rope reading a head slice, elementwise chains). */
const WEBGPU_PASS_OPTIONS = { epilogueFusion: { anchors: ['matmul', 'rope'], prologues: ['rope'] } };

/** Runs the pass pipeline for a WebGPU device (fusion limited to what the kernels implement; oversized weights split). */
export function optimizeForWebGPU(graph: Graph, device: DeviceInfo, passes: string, bindings: DimBindings): PipelineResult {
  return optimize(graph, { device, passes }, bindings);
}

function optimize(graph: Graph, o: CompileOptions, bindings: DimBindings): PipelineResult {
  // the device's binding limit always applies: oversized weights are split (or named in an error) before codegen
  const listed = resolvePipeline(o.passes ?? 'O3').filter((p) => p.name !== 'plan-memory' && p.name !== 'split-large-weights');
  // split after projections are merged (merged weights are larger) and before fusion (the rules match plain matmuls)
  const at = listed.findIndex((p) => p.name.startsWith('fuse-'));
  const passes = at < 0 ? [...listed, PASSES['split-large-weights'], PASSES.dce] : [...listed.slice(0, at), PASSES['split-large-weights'], ...listed.slice(at)];
  const device = { ...profileFor(o.device), ...(o.maxStorageBufferBindingSize ? { maxStorageBufferBindingSize: o.maxStorageBufferBindingSize } : {}) };
  const r = runPasses(graph, passes, { device, options: { ...WEBGPU_PASS_OPTIONS, bindings } });
  return { ...r, graph: legalizeForWebGPU(r.graph, { device: { ...o.device, profile: profileFor(o.device) }, expectedSeq: bindings.seq ?? 1, variants: o.variants }) };
}

/** Result of {@link lowerPagedKv}. */
export interface PagedKvLowering {
  /** The graph with paged attention nodes and without `present_*` outputs. */
  graph: Graph;
  /** The attention nodes that read the paged cache, with their layers. */
  paged: Map<Node, PagedAttention>;
}

/**
 * Replaces each `attention(q, concat(past_k.L, k), concat(past_v.L, v))` by `attention(q, k, v)` reading the paged
 * cache (the returned map says which nodes and layers), and drops the `present_*` outputs: the engine keeps keys and
 * values in its KV pools instead of passing them through the graph.
 */
export function lowerPagedKv(g: Graph): PagedKvLowering {
  const paged = new Map<Node, PagedAttention>();
  const users = g.users();
  const pastLayer = (n: Node, prefix: string): number | undefined => {
    const m = n.op === 'input' ? new RegExp(`^${prefix}\\.(\\d+)$`).exec(String(n.attrs.name)) : null;
    return m ? Number(m[1]) : undefined;
  };
  const r = rewriteGraph(
    g.withOutputs(g.outputs.filter((o) => !o.name.startsWith('present_'))),
    [
      {
        name: 'paged-attention',
        root: 'attention',
        apply: ({ node }) => {
          const [q, kc, vc, mask] = node.inputs;
          if (mask || kc.op !== 'concat' || vc.op !== 'concat' || kc.inputs.length !== 2 || vc.inputs.length !== 2) return undefined;
          const lk = pastLayer(kc.inputs[0], 'past_k');
          const lv = pastLayer(vc.inputs[0], 'past_v');
          if (lk === undefined || lk !== lv || q.shape[0] !== 1) return undefined;
          const [k, v] = [kc.inputs[1], vc.inputs[1]];
          const rep = makeNode('attention', [q, k, v], node.attrs);
          // values that are a head slice read only by this cache concat (v of a merged QKV projection): the KV-cache
          // write reads them in place from the projection, with no slice copy
          const window = headSliceWindow(v);
          if (window && (users.get(v) ?? []).every((u) => u === vc)) {
            const fused = buildFusedNode({ kind: 'attention', nodes: [v, rep], root: rep });
            if (fused) {
              paged.set(fused, { layer: lk, k, v: v.inputs[0], vHeads: window });
              return fused;
            }
          }
          paged.set(rep, { layer: lk, k, v });
          return rep;
        },
      },
    ],
  );
  return { graph: r.graph, paged };
}

/** Collects engine weights (graph weights and materialized constants) and their bytes. */
class WeightPacker {
  readonly manifest: WeightManifest[] = [];
  private readonly chunks: Uint8Array[] = [];
  private bytes = 0;
  private readonly index = new Map<string, number>();
  add(e: WeightEntry): number {
    const hit = this.index.get(e.id);
    if (hit !== undefined) return hit;
    const parts = Object.entries(e.data).map(([role, arr]) => {
      const u8 = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
      const byteOffset = this.bytes;
      this.chunks.push(u8);
      const padded = Math.ceil(u8.byteLength / 256) * 256;
      if (padded > u8.byteLength) this.chunks.push(new Uint8Array(padded - u8.byteLength));
      this.bytes += padded;
      const array = arr instanceof Float32Array ? 'f32' : arr instanceof Uint16Array ? 'u16' : arr instanceof Int32Array ? 'i32' : arr instanceof Uint32Array ? 'u32' : 'u8';
      return { role, array, byteOffset, byteLength: u8.byteLength } as const;
    });
    const i = this.manifest.push({ id: e.id, name: e.name, dtype: e.dtype, shape: [...e.shape], encoding: e.encoding, parts }) - 1;
    this.index.set(e.id, i);
    return i;
  }
  bin(): Uint8Array {
    const out = new Uint8Array(this.bytes);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  }
}

function weightIndexFor(g: Graph, packer: WeightPacker, constants: Map<Node, WeightEntry>): (n: Node) => number {
  return (n) => {
    if (n.op === 'weight') {
      const e = g.weights.get(String(n.attrs.id));
      if (e.encoding.kind !== 'dense') throw new UnsupportedOpError(['weight'], `weight '${e.name}' is ${e.encoding.kind}-encoded; the WebGPU kernels read dense weights only so far`);
      if (e.dtype === 'bool') throw new UnsupportedOpError(['weight'], `bool weight '${e.name}' cannot be bound yet`);
      return packer.add(e);
    }
    let e = constants.get(n);
    if (!e) {
      if ((n.attrs.values as unknown[]).some((v) => typeof v !== 'number'))
        throw new UnsupportedOpError(['constant'], `constant ${printNode(n)} holds symbolic dims: it is a computed input, not a weight`);
      const vals = n.attrs.values as number[];
      const shape = n.shape as number[];
      const count = shape.reduce((a, b) => a * b, 1);
      const full = vals.length === 1 ? new Array<number>(count).fill(vals[0]) : vals;
      const data = n.dtype === 'f32' ? Float32Array.from(full) : n.dtype === 'i32' ? Int32Array.from(full) : n.dtype === 'u32' || n.dtype === 'bool' ? Uint32Array.from(full) : undefined;
      if (!data) throw new UnsupportedOpError(['constant'], `${n.dtype} constants cannot be bound yet`);
      e = WeightStore.entry(`constant#${n.id}`, n.dtype === 'bool' ? 'u32' : n.dtype, shape, { values: data });
      constants.set(n, e);
    }
    return packer.add(e);
  };
}

/** Makes sure every graph output is an activation (an output that is an input, weight or constant gets a copy). */
function materializeOutputs(g: Graph): Graph {
  const outs = g.outputs.map((o) => ({ name: o.name, node: ['input', 'weight', 'constant', 'reshape'].includes(o.node.op) ? makeNode('expand', [o.node], { shape: [...o.node.shape] }) : o.node }));
  return g.withOutputs(outs);
}

interface BuiltPlans {
  kernels: KernelSet;
  plans: PlanManifest[];
  slots: number[];
  graph: Graph;
  outputs: IOManifest[];
}

function buildPlans(graph: Graph, o: CompileOptions, plans: { name: string; maxSeq: number; bindings: DimBindings }[], paged: Map<Node, PagedAttention>, packer: WeightPacker): BuiltPlans {
  const kernels = new KernelSet();
  const constants = new Map<Node, WeightEntry>();
  const weightIndex = weightIndexFor(graph, packer, constants);
  let slotBytes: number[] = [];
  const built: PlanManifest[] = [];
  // graph outputs get the first slots, the same in every plan (readbacks and the sampler read them there)
  const pinned = new Map<Node, number>();
  graph.outputNodes.forEach((n) => {
    let s: Node = n;
    while (s.op === 'reshape') s = s.inputs[0];
    if (!pinned.has(s)) pinned.set(s, pinned.size);
  });
  let outputs: IOManifest[] = [];
  for (const p of plans) {
    const t0 = performance.now();
    const plan = planMemory(graph, { bindings: p.bindings });
    const slots = assignSlots(plan, slotBytes, pinned);
    slotBytes = slots.slotBytes;
    const limit = o.maxStorageBufferBindingSize ?? o.device.limits.maxStorageBufferBindingSize ?? Number.MAX_SAFE_INTEGER;
    for (const [node, s] of slots.of)
      if (s.bytes > limit)
        throw new DeviceError('LIMIT_EXCEEDED', `activation ${printNode(node)} needs ${s.bytes} bytes for ${Object.entries(p.bindings).map(([k, v]) => `${k}=${v}`).join(' ')}, more than one storage binding allows (maxStorageBufferBindingSize ${limit}); use a smaller prefill chunk`);
    const dispatches: DispatchManifest[] = lowerGraph({
      device: { ...o.device, profile: profileFor(o.device) },
      plan,
      slots,
      expectedSeq: p.maxSeq,
      paged,
      blockSize: o.blockSize ?? 16,
      variants: o.variants,
      weightIndex,
      kernelIndex: (k) => kernels.add(k),
    });
    built.push({ name: p.name, maxSeq: p.maxSeq, dispatches });
    // outputs are read from the plan whose shapes are largest (the last one)
    outputs = graph.outputs.map((out) => {
      const b = slots.of.get(out.node)!;
      return { name: out.name, dtype: out.node.dtype, shape: shapeToJSON(out.node.shape).map(String), maxBytes: b.bytes, ref: { kind: 'arena', slot: b.slot, size: b.bytes } };
    });
    const total = slotBytes.reduce((a, b) => a + b, 0);
    o.onProgress?.(`compile: ${p.name} plan: ${dispatches.length} dispatches, ${slotBytes.length} activation buffers, ${(total / 1024).toFixed(0)} KiB (naive ${(plan.peakBytesNaive / 1024).toFixed(0)} KiB, planned for seq=${p.bindings.seq ?? '-'}) in ${(performance.now() - t0).toFixed(0)} ms`);
  }
  return { kernels, plans: built, slots: slotBytes, graph, outputs };
}

function inputsOf(graph: Graph, bindings: DimBindings, exclude: (name: string) => boolean): IOManifest[] {
  const given = graph.inputs
    .filter((i) => !exclude(String(i.attrs.name)))
    .map((i) => ({ name: String(i.attrs.name), dtype: i.dtype, shape: shapeToJSON(i.shape).map(String), maxBytes: Math.ceil((evalShape(i.shape, bindings).reduce((a, b) => a * b, 1) * byteSize(i.dtype)) / 4) * 4 }));
  // constants holding symbolic dims are inputs the runtime writes from each run's bindings
  const computed = graph.nodes().flatMap((n): IOManifest[] => {
    const name = computedInputName(n);
    if (!name) return [];
    const shape = n.shape as number[];
    const count = shape.reduce((a, b) => a * b, 1);
    return [{ name, dtype: n.dtype, shape: shape.map(String), maxBytes: count * byteSize(n.dtype), values: shapeToJSON(n.attrs.values as Dim[]).map(String) }];
  });
  return [...given, ...computed];
}

/** Compiles a causal language model (with its paged KV cache and GPU sampling) into an engine. */
export async function compile(model: LoadedModel, o: CompileOptions): Promise<Engine> {
  const t0 = performance.now();
  const maxPositions = model.maxPositions;
  const chunk = Math.min(o.prefillChunk ?? 128, maxPositions);
  if (!(Number.isInteger(chunk) && chunk >= 1)) throw new InputError(`prefillChunk must be a positive integer, got ${o.prefillChunk}`);
  const built0 = model.build({ lastTokenLogitsOnly: true });
  const opt = optimize(built0, o, { seq: chunk, past: 0, batch: 1 });
  o.onProgress?.(`compile: ${opt.timings.length} passes in ${opt.timings.reduce((a, t) => a + t.ms, 0).toFixed(0)} ms`);
  const { graph: lowered, paged } = lowerPagedKv(opt.graph);
  if (paged.size === 0) throw new UnsupportedOpError(['attention'], 'no KV-cache attention found in the model graph (expected attention over concat(past_k.L, k))');
  const graph = materializeOutputs(lowered);
  const packer = new WeightPacker();
  const plans = buildPlans(
    graph,
    o,
    [
      { name: 'decode', maxSeq: 1, bindings: { seq: 1, past: 0, batch: 1 } },
      ...(chunk > 1 ? [{ name: 'prefill', maxSeq: chunk, bindings: { seq: chunk, past: 0, batch: 1 } }] : []),
    ],
    paged,
    packer,
  );
  const c = model.config;
  const vocab = c.vocabSize;
  const logits = plans.outputs.find((x) => x.name === 'logits');
  if (!logits) throw new UnsupportedOpError(['logits'], "the model graph has no 'logits' output");
  // scratch slot for the sampler's probabilities
  const probsSlot = plans.slots.push(Math.ceil((vocab * 4) / 256) * 256) - 1;
  const s = o.sampling ?? { temperature: 1, topp: 0.9 };
  const addKernel = (k: KernelSource): number => plans.kernels.add(k);
  // software rasterizers compile hidden-bound loops much faster (see the kernels' staticLoops)
  const tuning = isSoftwareDevice(o.device) ? { staticLoops: false, workgroupSize: 64 as const } : {};
  const argmaxK = generateSamplingKernel({ vocab, dtype: 'f32', temperature: 0, ...tuning, nodes: ['argmax over the logits'] });
  const samplerK = generateSamplingKernel({ vocab, dtype: 'f32', temperature: s.temperature, topp: s.topp, topk: s.topk ?? 0, ...tuning, nodes: [`sample (temperature ${s.temperature}, top-p ${s.topp}, top-k ${s.topk ?? 0})`] });
  const logitsRef = logits.ref!;
  const samplerBindings = samplerK.bindings.map((b) => (b.name === 'logits' ? logitsRef : b.name === 'token' ? ({ kind: 'sample' } as const) : ({ kind: 'arena', slot: probsSlot, size: vocab * 4 } as const)));
  // the KV cache's geometry comes from the graph's past-key inputs: [1, past, kvHeads, headDim] per layer
  const pastK = built0.inputs.filter((i) => /^past_k\.\d+$/.test(String(i.attrs.name)));
  const [, , kvHeads, hd] = pastK[0].shape as [unknown, unknown, number, number];
  const blockSize = o.blockSize ?? 16;
  const manifest: EngineManifest = {
    format: 'tensorwright-engine',
    version: ENGINE_FORMAT_VERSION,
    created: { by: 'tensorwright', at: new Date().toISOString() },
    device: { description: `${o.device.adapter.vendor} ${o.device.adapter.device} (${o.device.adapter.description})`.trim(), features: o.device.features },
    model: { family: model.family, config: model.config },
    kernels: plans.kernels.kernels,
    weights: packer.manifest,
    slots: plans.slots,
    inputs: inputsOf(graph, { seq: chunk, past: maxPositions, batch: 1 }, (n) => n.startsWith('past_')),
    outputs: plans.outputs,
    plans: plans.plans,
    kv: { layers: pastK.length, numKvHeads: kvHeads, headDim: hd, blockSize, numBlocks: Math.ceil(maxPositions / blockSize), dtype: 'f32' },
    lm: {
      logits: 'logits',
      vocabSize: vocab,
      maxPositions,
      bosId: model.bosId,
      stopTokens: model.stopTokens,
      argmax: { kernel: addKernel(argmaxK), bindings: [logitsRef, { kind: 'sample' }], label: 'argmax' },
      sampler: { kernel: addKernel(samplerK), bindings: samplerBindings, label: 'sample' },
      sampling: { temperature: s.temperature, topp: s.topp, topk: s.topk ?? 0 },
    },
    requiredFeatures: plans.kernels.requiredFeatures(),
  };
  o.onProgress?.(`compile: ${plans.kernels.kernels.length} kernels, ${packer.manifest.length} weights, in ${(performance.now() - t0).toFixed(0)} ms`);
  return new Engine(manifest, packer.bin());
}

/**
 * Compiles any graph (no KV cache, no sampling: encoders, ONNX models) for inputs whose symbolic dims take the given
 * values at most.
 */
export async function compileGraph(graph: Graph, bindings: DimBindings, o: CompileOptions): Promise<Engine> {
  const opt = optimize(graph, o, bindings);
  const g = materializeOutputs(opt.graph);
  const packer = new WeightPacker();
  const seq = bindings.seq ?? 1;
  const plans = buildPlans(g, o, [{ name: 'run', maxSeq: Math.max(seq, 1 << 30), bindings }], new Map(), packer);
  const manifest: EngineManifest = {
    format: 'tensorwright-engine',
    version: ENGINE_FORMAT_VERSION,
    created: { by: 'tensorwright', at: new Date().toISOString() },
    device: { description: `${o.device.adapter.vendor} ${o.device.adapter.device}`.trim(), features: o.device.features },
    model: { family: String(graph.meta.family ?? 'graph'), config: graph.meta.config ?? {} },
    kernels: plans.kernels.kernels,
    weights: packer.manifest,
    slots: plans.slots,
    inputs: inputsOf(g, bindings, () => false),
    outputs: plans.outputs,
    plans: plans.plans,
    requiredFeatures: plans.kernels.requiredFeatures(),
  };
  return new Engine(manifest, packer.bin());
}

/**
 * Compiles `graph` for the shapes of `inputs` and runs it once on a WebGPU device (a new one unless given): the
 * WebGPU counterpart of the reference interpreter's `runGraph`, used by conformance tests.
 */
export async function runGraphOnWebGPU(graph: Graph, inputs: Readonly<Record<string, Tensor>>, opts: { device?: GPUDeviceHandle; passes?: string } = {}): Promise<Record<string, Tensor>> {
  const handle = opts.device ?? (await requestGPUDevice());
  try {
    const bindings = bindInputs(graph, inputs);
    const engine = await compileGraph(graph, bindings, { device: handle.info, passes: opts.passes });
    const session = await engine.createSession({ device: handle });
    try {
      const used = new Set(engine.manifest.inputs.map((i) => i.name));
      return await session.run(Object.fromEntries(Object.entries(inputs).filter(([k]) => used.has(k))));
    } finally {
      await session.destroy();
    }
  } finally {
    if (!opts.device) await handle.destroy();
  }
}
