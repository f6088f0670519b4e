/**
 * `compile()`: model → optimized graph → kernels → an {@link Engine} (plans of dispatches, an activation arena from
 * the memory plan, weights in the layouts the kernels read, a paged KV cache for causal LMs).
 * @module
 */
import { DeviceError, InputError, UnsupportedOpError } from './errors.js';
import { printNode } from './ir/printer.js';
import { attrsOf, isOp } from './ir/attrs.js';
import type { LoadedModel } from './frontends/load.js';
import type { DimBindings } from './ir/dim.js';
import type { Graph } from './ir/graph.js';
import type { Node } from './ir/node.js';
import { pagedAttentionOf } from './ir/paged-kv.js';
import { kvCacheBytes } from './ir/kv-cache-quant.js';
import type { KvCacheLayout, PrecisionPolicy, Target } from './ir/target.js';
import { parseQuantScheme, type QuantScheme } from './ir/quant-scheme.js';
import { parseSparsityScheme, type SparsityScheme } from './ir/sparsity-scheme.js';
import { WeightStore, type WeightEntry } from './ir/weights.js';
import type { MemoryPlan } from './passes/memory-plan.js';
import { assignSlots, type SlotPlan } from './passes/buffer-slots.js';
import { runPasses, type PipelineResult } from './passes/pipeline.js';
import { isGraphOperand, type Launch, type LaunchOperand, type LowerVariants, type ScratchOperand } from './codegen/family.js';
import type { TuningRequest } from './codegen/schedule/tuning.js';
import { computedInputName } from './codegen/lower.js';
import { generateSamplingKernel } from './codegen/sampling.js';
import { createTarget } from './codegen/target.js';
import { KernelSet } from './codegen/kernel-set.js';
import { generateRopeKernel } from './codegen/rope.js';
import { graphRopeAttrs } from './ir/rope.js';
import { Engine } from './runtime/engine.js';
import { ENGINE_FORMAT_VERSION, type BufferRef, type DispatchManifest, type EngineManifest, type IOManifest, type ObserverManifest, type PlanManifest, type WeightManifest } from './runtime/engine-manifest.js';
import { requestGPUDevice, type DeviceInfo, type GPUDeviceHandle } from './runtime/device.js';
import { bindInputs } from './runtime/cpu/interpreter.js';
import type { Tensor } from './runtime/cpu/tensor.js';
import { byteSize } from './ir/dtype.js';
import { evalDim, evalShape, parseDim, shapeToJSON } from './ir/dim.js';
import { launchesOf, runWebGPUPipeline, webgpuGraphStages, type PlanSpec, type WebGPUPipelineResult, type WeightCompression } from './webgpu-pipeline.js';
import { sha256Hex } from './util/sha256.js';
import { chooseDecoderStep, decoderStepPlanManifest } from './decoder-step-plan.js';

/** Options of {@link compile} and {@link compileGraph}. */
export interface CompileOptions {
  /** The target (from `createTarget`); when absent, one is built from `device` and the options below. */
  target?: Target;
  /** The device the kernels are chosen for (from `requestGPUDevice().info` or `probeWebGPU()`), when no `target` is given. */
  device?: DeviceInfo;
  /** Precision policy (default `auto`): `f32` keeps every weight and activation f32, `f16` stores in f16 where the precision rules allow. */
  precision?: PrecisionPolicy;
  /**
   * KV-cache layout (default 16 tokens per block, f32): `dtype` `f16` halves the cache, `int8` and `int4` store integers
   * with a scale per token and head (see `src/ir/kv-cache-quant.ts`).
   */
  kv?: Partial<KvCacheLayout>;
  /**
   * Weight quantization (round to nearest): a scheme name as `--quant` takes it (`int8`, `int4-g32`, …; `none`) or a
   * parsed {@link QuantScheme}. Weights the file already quantized keep their format unless this asks otherwise.
   */
  quant?: string | QuantScheme;
  /** Weight sparsity by magnitude pruning: a pattern as `--sparsity` takes it (`2:4`, `block32-0.1`; `none`) or a parsed {@link SparsityScheme}. */
  sparsity?: string | SparsityScheme;
  /** Pass pipeline before lowering (default `O3`). */
  passes?: string;
  /**
   * Most tokens one step runs, over all the sequences of a batch (default min(maxPositions, 128)); longer prompts
   * are chunked. It also bounds the sequences of one batched step.
   */
  prefillChunk?: number;
  /**
   * The token count every kernel of a causal-LM engine is chosen for (default min(16, prefillChunk)): all plans use
   * the same kernels, so a sequence's outputs do not depend on how many tokens the step runs (batch invariance).
   * Small values favour decoding few sequences (GEMV on real GPUs), large ones prefill (GEMM).
   */
  batchTokens?: number;
  /**
   * Whether every plan of a causal-LM engine gets the same kernels (see `batchTokens`), so a sequence's logits do not
   * depend on what else a batched step runs: what a server batching requests needs. Default false: kernels per plan,
   * a decode plan for one token (GEMV, decode sweeps) and a prefill plan for the chunk, faster for one sequence at a
   * time; a sequence's logits then depend on the step's token count (within float rounding).
   */
  batchInvariant?: boolean;
  /** Override of the device's storage-binding limit (tests use a small one to exercise splitting). */
  maxStorageBufferBindingSize?: number;
  /** Kernel variants to force over the schedule rules (tuning, debugging). */
  variants?: LowerVariants;
  /**
   * Measured picks of tunable kernels (a timing table from {@link tune!tuneModel} or a timing cache), or a tuner round;
   * absent: the schedule rules decide.
   */
  tuning?: TuningRequest;
  /** Print the IR after these stages (or all), as `--print-ir-after` does. */
  printIrAfter?: readonly string[] | 'all';
  /** Where printed IR goes (default `console.error`). */
  print?: (text: string) => void;
  /**
   * The whole-step decode kernel (one workgroup runs a decode token of a small llama, `src/codegen/decoder-step.ts`):
   * `true` uses it whenever the model and device fit it, `false` never; absent, the schedule rule's cost model
   * decides (`src/codegen/schedule/decoder-step.ts`).
   */
  wholeStep?: boolean;
  /** Progress lines (compile steps and their times). */
  onProgress?: (line: string) => void;
}

/**
 * The target `o` names, or the one built from its device and options.
 * @internal
 */
export function targetOf(o: CompileOptions): Target {
  if (o.target) return o.target;
  if (!o.device) throw new InputError('compile options need a target or a device');
  return createTarget(o.device, { precision: o.precision, kv: o.kv, maxStorageBufferBindingSize: o.maxStorageBufferBindingSize });
}

/**
 * The weight compression `o` asks for, as the pass options `quantize-weights` and `sparsify-weights` read (`{}` for
 * none). Scheme names are parsed here, so a bad one is an {@link InputError} before anything runs.
 * @internal
 */
export function compressionOf(o: Pick<CompileOptions, 'quant' | 'sparsity'>): WeightCompression {
  const quant = typeof o.quant === 'string' ? parseQuantScheme(o.quant) : o.quant;
  const sparsity = typeof o.sparsity === 'string' ? parseSparsityScheme(o.sparsity) : o.sparsity;
  return { ...(quant ? { quant } : {}), ...(sparsity ? { sparsity } : {}) };
}

/**
 * Runs the WebGPU pipeline's graph stages (optimization for the target, legalization, lowering) on `graph`.
 * @internal
 */
export function optimizeForWebGPU(graph: Graph, target: Target, passes: string, bindings: DimBindings): PipelineResult {
  return runPasses(graph, webgpuGraphStages(passes), { target, options: { bindings } });
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

/**
 * The engine weight index of a weight or constant node, read dense (no `part`) or bound as payload part `part` (the
 * parts of a quantized, codebook or sparse weight, for the kernels that read that encoding). Dense kernels cannot
 * read encoded weights: that is a typed error naming the weight.
 */
function weightIndexFor(g: Graph, packer: WeightPacker, constants: Map<Node, WeightEntry>): (n: Node, part?: string) => number {
  return (n, part) => {
    if (isOp(n, 'weight')) {
      const e = g.weights.get(n.attrs.id);
      const kind = e.encoding.kind;
      if (kind !== 'dense' && part === undefined) throw new UnsupportedOpError(['weight'], `weight '${e.name}' is ${kind === 'quantized' ? kind : `${kind}-encoded`}; only the kernels that read its encoding can (matmuls over it stored [N, K], embedding lookups in a quantized or codebook table), and a dense kernel was chosen for one of its uses`);
      part ??= 'values';
      if (!(part in e.data)) throw new UnsupportedOpError(['weight'], `weight '${e.name}' has no '${part}' part to bind`);
      if (e.dtype === 'bool') throw new UnsupportedOpError(['weight'], `bool weight '${e.name}' cannot be bound yet`);
      return packer.add(e);
    }
    let e = constants.get(n);
    if (!e) {
      const { values } = attrsOf(n, 'constant');
      if (values.some((v) => typeof v !== 'number')) throw new UnsupportedOpError(['constant'], `constant ${printNode(n)} holds symbolic dims: it is a computed input, not a weight`);
      const vals = values as readonly number[];
      const shape = n.shape as number[];
      const count = shape.reduce((a, b) => a * b, 1);
      const full = vals.length === 1 ? new Array<number>(count).fill(vals[0]) : vals;
      const data =
        n.dtype === 'f32' ? Float32Array.from(full)
        : n.dtype === 'i32' ? Int32Array.from(full)
        : n.dtype === 'u32' || n.dtype === 'bool' ? Uint32Array.from(full)
        : n.dtype === 'i64' ? new Int32Array(BigInt64Array.from(full, (v) => BigInt(v)).buffer) // (low, high) words
        : undefined;
      if (!data) throw new UnsupportedOpError(['constant'], `${n.dtype} constants cannot be bound yet`);
      e = WeightStore.entry(`constant#${n.id}`, n.dtype === 'bool' ? 'u32' : n.dtype, shape, { values: data });
      constants.set(n, e);
    }
    return packer.add(e);
  };
}

/** The buffer holding a graph value: an input, a weight (or a materialized constant), or an arena slot. */
function bufferOf(node: Node, slots: SlotPlan, weightIndex: (n: Node) => number): BufferRef {
  let n = node;
  while (n.op === 'reshape' && ['input', 'weight', 'constant', 'reshape'].includes(n.inputs[0].op)) n = n.inputs[0];
  if (isOp(n, 'input')) return { kind: 'input', name: n.attrs.name };
  const computed = computedInputName(n);
  if (computed) return { kind: 'input', name: computed };
  if (n.op === 'weight' || n.op === 'constant') return { kind: 'weight', weight: weightIndex(n), part: 'values' };
  const b = slots.of.get(node);
  if (!b) throw new UnsupportedOpError([node.op], `no buffer was planned for ${printNode(node)}`);
  return { kind: 'arena', slot: b.slot, size: b.bytes };
}

interface BuiltPlans {
  plans: PlanManifest[];
  slots: number[];
  /** Bytes of each scratch buffer (the largest use of its name over every plan). */
  scratch: number[];
  outputs: IOManifest[];
  /** Per plan, the launches observing its dispatches (H2O's attention mass). */
  observers: ObserverManifest[][];
}

/** The engine plans: each plan's slots (graph outputs pinned to the first ones) and its launches bound to buffers. */
function buildPlans(pipeline: WebGPUPipelineResult, target: Target, kernels: KernelSet, packer: WeightPacker, onProgress?: (line: string) => void): BuiltPlans {
  const graph = pipeline.graph;
  const constants = new Map<Node, WeightEntry>();
  const weightIndex = weightIndexFor(graph, packer, constants);
  let slotBytes: number[] = [];
  const built: PlanManifest[] = [];
  const observers: ObserverManifest[][] = [];
  // graph outputs get the first slots, the same in every plan (readbacks and the sampler read them there)
  const pinned = new Map<Node, number>();
  graph.outputNodes.forEach((n) => {
    let s: Node = n;
    while (s.op === 'reshape') s = s.inputs[0];
    if (!pinned.has(s)) pinned.set(s, pinned.size);
  });
  let outputs: IOManifest[] = [];
  const limit = target.limits.maxStorageBufferBindingSize ?? Number.MAX_SAFE_INTEGER;
  // scratch buffers by name: one engine buffer per name, as large as its largest use
  const scratchIndex = new Map<string, number>();
  const scratch: number[] = [];
  for (const { spec: p, graph: g } of pipeline.plans) {
    const plan = g.meta.memoryPlan as MemoryPlan;
    const slots = assignSlots(plan, slotBytes, pinned);
    slotBytes = slots.slotBytes;
    for (const [node, s] of slots.of)
      if (s.bytes > limit)
        throw new DeviceError('LIMIT_EXCEEDED', `activation ${printNode(node)} needs ${s.bytes} bytes for ${Object.entries(p.bindings).map(([k, v]) => `${k}=${v}`).join(' ')}, more than one storage binding allows (maxStorageBufferBindingSize ${limit}); use a smaller prefill chunk`);
    const scratchOf = (x: ScratchOperand, label: string): BufferRef => {
      const size = 4 * evalDim(parseDim(x.elements), p.bindings);
      if (size > limit) throw new DeviceError('LIMIT_EXCEEDED', `scratch buffer '${x.name}' of ${label} needs ${size} bytes for ${Object.entries(p.bindings).map(([k, v]) => `${k}=${v}`).join(' ')}, more than one storage binding allows (maxStorageBufferBindingSize ${limit}); use a smaller prefill chunk`);
      let index = scratchIndex.get(x.name);
      if (index === undefined) scratchIndex.set(x.name, (index = scratch.push(0) - 1));
      scratch[index] = Math.max(scratch[index], size);
      return { kind: 'scratch', index, size };
    };
    const bind = (x: LaunchOperand, label: string): BufferRef =>
      isGraphOperand(x) ? bufferOf(x, slots, weightIndex) : x.kind === 'weight-part' ? { kind: 'weight', weight: weightIndex(x.node, x.part), part: x.part } : x.kind === 'scratch' ? scratchOf(x, label) : x;
    const launches = launchesOf(g);
    const dispatches: DispatchManifest[] = launches.map((l: Launch) => ({ kernel: kernels.add(l.kernel), bindings: l.operands.map((x) => bind(x, l.label)), label: l.label }));
    built.push({ name: p.name, maxSeq: p.maxSeq, dispatches });
    // launches that observe others (H2O's attention mass), run right after them when a step asks
    observers.push(launches.flatMap((l, after) => (l.observer ? [{ after, dispatch: { kernel: kernels.add(l.observer.kernel), bindings: l.observer.operands.map((x) => bind(x, l.observer!.label)), label: l.observer.label } }] : [])));
    // outputs are read from the plan whose shapes are largest (the last one)
    outputs = graph.outputs.map((out) => {
      const b = slots.of.get(out.node)!;
      return { name: out.name, dtype: out.node.dtype, shape: shapeToJSON(out.node.shape).map(String), maxBytes: b.bytes, ref: { kind: 'arena', slot: b.slot, size: b.bytes } };
    });
    const total = slotBytes.reduce((a, b) => a + b, 0);
    onProgress?.(`compile: ${p.name} plan: ${dispatches.length} dispatches, ${slotBytes.length} activation buffers, ${(total / 1024).toFixed(0)} KiB (naive ${(plan.peakBytesNaive / 1024).toFixed(0)} KiB, planned for seq=${p.bindings.seq ?? '-'})`);
  }
  return { plans: built, slots: slotBytes, scratch, outputs, observers };
}

function inputsOf(graph: Graph, bindings: DimBindings, exclude: (name: string) => boolean): IOManifest[] {
  const given = graph.inputs
    .filter((i) => !exclude(i.attrs.name))
    .map((i) => ({ name: i.attrs.name, dtype: i.dtype, shape: shapeToJSON(i.shape).map(String), maxBytes: Math.ceil((evalShape(i.shape, bindings).reduce((a, b) => a * b, 1) * byteSize(i.dtype)) / 4) * 4 }));
  // constants holding symbolic dims are inputs the runtime writes from each run's bindings
  const computed = graph.nodes().flatMap((n): IOManifest[] => {
    const name = computedInputName(n);
    if (!name) return [];
    const shape = n.shape as number[];
    const count = shape.reduce((a, b) => a * b, 1);
    return [{ name, dtype: n.dtype, shape: shape.map(String), maxBytes: count * byteSize(n.dtype), values: shapeToJSON(attrsOf(n, 'constant').values).map(String) }];
  });
  return [...given, ...computed];
}

/**
 * A causal LM's inputs with the per-row inputs of a ragged batch the paged KV kernels read: `positions` (each row's
 * position in its sequence) and `row_seq` (each row's sequence), i32 `[seq]`, added when the graph has none.
 */
function lmInputs(inputs: IOManifest[], chunk: number): IOManifest[] {
  const out = [...inputs];
  for (const name of ['positions', 'row_seq'])
    if (!out.some((i) => i.name === name)) out.push({ name, dtype: 'i32', shape: ['seq'], maxBytes: chunk * 4 });
  return out;
}

/** The engine manifest and weights of a compiled model, with the pipeline that made them (no device needed). */
export interface CompiledEngine {
  /** The engine manifest. */
  readonly manifest: EngineManifest;
  /** The weights, in the layout the manifest's weight parts point into. */
  readonly weights: Uint8Array;
  /** The pipeline run: per-stage times, the optimization report, per-plan graphs. */
  readonly pipeline: WebGPUPipelineResult;
  /** The target compiled for. */
  readonly target: Target;
}

function describeTarget(t: Target): string {
  return `${t.adapter.vendor} ${t.adapter.device} (${t.adapter.description})`.trim();
}

/**
 * The most tokens one step of a causal-LM engine runs (`chunk`: `prefillChunk`, at most the context) and the rows its
 * kernels are scheduled for when every plan shares them (`expectedSeq`: `batchTokens`, at most the chunk).
 * Throws an `InputError` when either option is not a positive integer.
 * @internal
 */
export function stepTokensOf(o: Pick<CompileOptions, 'prefillChunk' | 'batchTokens'>, maxPositions: number): { chunk: number; expectedSeq: number } {
  const chunk = Math.min(o.prefillChunk ?? 128, maxPositions);
  if (!(Number.isInteger(chunk) && chunk >= 1)) throw new InputError(`prefillChunk must be a positive integer, got ${o.prefillChunk}`);
  const expectedSeq = Math.min(o.batchTokens ?? 16, chunk);
  if (!(Number.isInteger(expectedSeq) && expectedSeq >= 1)) throw new InputError(`batchTokens must be a positive integer, got ${o.batchTokens}`);
  return { chunk, expectedSeq };
}

/**
 * Compiles a causal language model (with its paged KV cache and GPU sampling) into an engine manifest and weights,
 * for a target: no device is needed (`inspect --target webgpu` uses this).
 */
export function compileModel(model: LoadedModel, o: CompileOptions): CompiledEngine {
  const t0 = performance.now();
  const target = targetOf(o);
  const maxPositions = model.maxPositions;
  const { chunk, expectedSeq } = stepTokensOf(o, maxPositions);
  // logits only at the rows the runtime lists (each sequence's last row, or several rows of one)
  const built0 = model.build({ logitRows: true });
  // every plan takes a ragged batch of rows from several sequences, and (batch-invariant) every plan gets the same
  // kernels (one expectedSeq): the one-token decode plan then differs from the prefill plan only in its memory plan
  const invariant = o.batchInvariant ?? false;
  const decodeMax = 1;
  const planSpecs: PlanSpec[] = [
    { name: 'decode', maxSeq: decodeMax, expectedSeq: invariant ? expectedSeq : 1, maxKvLen: maxPositions, bindings: { seq: decodeMax, past: 0, batch: 1, outs: decodeMax } },
    ...(chunk > decodeMax ? [{ name: 'prefill', maxSeq: chunk, expectedSeq: invariant ? expectedSeq : chunk, maxKvLen: maxPositions, bindings: { seq: chunk, past: 0, batch: 1, outs: chunk } }] : []),
  ];
  const pipeline = runWebGPUPipeline(built0, target, planSpecs, { passes: o.passes, variants: o.variants, tuning: o.tuning, compression: compressionOf(o), printIrAfter: o.printIrAfter, print: o.print });
  o.onProgress?.(`compile: ${pipeline.timings.length} stages in ${pipeline.timings.reduce((a, t) => a + t.ms, 0).toFixed(0)} ms`);
  const graph = pipeline.graph;
  if (pagedAttentionOf(graph).size === 0) throw new UnsupportedOpError(['attention'], 'no KV-cache attention found in the model graph (expected attention over concat(past_k.L, k))');
  const packer = new WeightPacker();
  const kernels = new KernelSet();
  // the whole-step kernel replaces the decode plan's dispatches when the schedule rule picks it (the prefill plan
  // serves every step of more than one token)
  const decodeLaunches = pipeline.plans.find((p) => p.spec.name === 'decode');
  const whole = decodeLaunches && chunk > decodeMax ? chooseDecoderStep(built0, maxPositions, target, { planDispatches: launchesOf(decodeLaunches.graph).length, force: o.wholeStep, batchInvariant: invariant, compressed: Object.keys(compressionOf(o)).length > 0 }) : undefined;
  if (whole) o.onProgress?.(`compile: whole-step decode kernel ${whole.choice.use ? 'used' : 'not used'}: ${whole.choice.why}`);
  const useWhole = whole?.chosen;
  const plans = buildPlans(useWhole ? { ...pipeline, plans: pipeline.plans.filter((p) => p !== decodeLaunches) } : pipeline, target, kernels, packer, o.onProgress);
  const c = model.config;
  const vocab = c.vocabSize;
  const logits = plans.outputs.find((x) => x.name === 'logits');
  if (!logits) throw new UnsupportedOpError(['logits'], "the model graph has no 'logits' output");
  if (useWhole) {
    const scoresSlot = plans.slots.push(Math.ceil((useWhole.spec.heads * maxPositions * 4) / 256) * 256) - 1;
    plans.observers.unshift([]);
    plans.plans.unshift(decoderStepPlanManifest(useWhole.spec, useWhole.weights, { addKernel: (k) => kernels.add(k), addWeight: (e) => packer.add(e), logits: logits.ref!, scoresSlot }));
    o.onProgress?.(`compile: decode plan: 1 dispatch (decoder-step), ${(useWhole.spec.heads * maxPositions * 4) / 1024} KiB of attention scores`);
  }
  // scratch slot for the sampler's probabilities
  const probsSlot = plans.slots.push(Math.ceil((vocab * 4) / 256) * 256) - 1;
  // software rasterizers compile hidden-bound loops much faster (see the kernels' staticLoops)
  const tuning = target.deviceClass === 'software-gpu' ? { staticLoops: false, workgroupSize: 64 as const } : {};
  // one launch per sampled row (`sample_row`): it reads that row of the logits and writes token[sample_row]
  const row = { row: 'sample_row', outIndex: 'sample_row' };
  const argmaxK = generateSamplingKernel({ vocab, dtype: 'f32', mode: 'argmax', ...row, ...tuning, nodes: ['argmax over the logits'] });
  // temperature, top-p, top-k and the coin are run-time params: one engine takes any sampling settings
  const samplerK = generateSamplingKernel({ vocab, dtype: 'f32', mode: 'sample', ...row, ...tuning, nodes: ['sample (temperature, top-k, top-p at run time)'] });
  const logitsRef = logits.ref!;
  const samplerBindings = samplerK.bindings.map((b) => (b.name === 'logits' ? logitsRef : b.name === 'token' ? ({ kind: 'sample' } as const) : ({ kind: 'arena', slot: probsSlot, size: vocab * 4 } as const)));
  // the KV cache's geometry comes from the graph's past-key inputs: [1, past, kvHeads, headDim] per layer
  const pastK = built0.inputs.filter((i) => /^past_k\.\d+$/.test(i.attrs.name));
  const [, , kvHeads, hd] = pastK[0].shape as [unknown, unknown, number, number];
  const { blockSize, dtype: kvDType } = target.kv;
  // the key shift of a sliding KV window: the model's own rope, run over the K pool at a position per slot
  const rope = graphRopeAttrs(built0);
  const keyShift =
    rope && (kvDType === 'f32' || kvDType === 'f16')
      ? {
          kernel: kernels.add(
            generateRopeKernel({ batch: 'blocks', seq: blockSize, numHeads: kvHeads, headDim: hd, rotaryDim: rope.rotaryDim, theta: rope.theta, style: rope.style, dtype: kvDType, positions: { kind: 'buffer', perBatch: true }, nodes: ['key shift: rope of the K pool at −delta per block (sliding KV window)'] }),
          ),
          label: 'kv key shift',
        }
      : undefined;
  // H2O eviction's attention-mass observers (after every paged attention of the plans that have them)
  const attentionMass = plans.observers.some((o) => o.length > 0) ? { label: 'attention mass (H2O)', plans: plans.observers } : undefined;
  const manifest: EngineManifest = {
    format: 'tensorwright-engine',
    version: ENGINE_FORMAT_VERSION,
    created: { by: 'tensorwright', at: new Date().toISOString() },
    device: { description: describeTarget(target), features: [...target.features] },
    model: { family: model.family, config: model.config },
    kernels: kernels.kernels,
    weights: packer.manifest,
    slots: plans.slots,
    ...(plans.scratch.length ? { scratch: plans.scratch } : {}),
    inputs: lmInputs(inputsOf(graph, { seq: chunk, past: maxPositions, batch: 1, outs: chunk }, (n) => n.startsWith('past_')), chunk),
    outputs: plans.outputs,
    plans: plans.plans,
    kv: { layers: pastK.length, numKvHeads: kvHeads, headDim: hd, blockSize, numBlocks: Math.ceil(maxPositions / blockSize), dtype: kvDType, ...(keyShift ? { keyShift } : {}), ...(attentionMass ? { attentionMass } : {}) },
    lm: {
      logits: 'logits',
      vocabSize: vocab,
      maxPositions,
      bosId: model.bosId,
      stopTokens: model.stopTokens,
      argmax: { kernel: kernels.add(argmaxK), bindings: [logitsRef, { kind: 'sample' }], label: 'argmax' },
      sampler: { kernel: kernels.add(samplerK), bindings: samplerBindings, label: 'sample' },
    },
    requiredFeatures: kernels.requiredFeatures(),
  };
  o.onProgress?.(`compile: ${kernels.kernels.length} kernels, ${packer.manifest.length} weights, in ${(performance.now() - t0).toFixed(0)} ms`);
  o.onProgress?.(`compile: KV cache ${kvDType}, ${kvCacheBytes(manifest.kv!, maxPositions)} bytes for one sequence of ${maxPositions} positions (${pastK.length} layers, K and V)`);
  const weights = packer.bin();
  return { manifest: { ...manifest, weightsByteLength: weights.byteLength }, weights, pipeline, target };
}

/** Compiles a causal language model (with its paged KV cache and GPU sampling) into an engine. */
export async function compile(model: LoadedModel, o: CompileOptions): Promise<Engine> {
  const c = compileModel(model, o);
  return new Engine({ ...c.manifest, weightsSha256: await sha256Hex(c.weights) }, c.weights);
}

/**
 * Compiles any graph (no KV cache, no sampling: encoders, ONNX models) for inputs whose symbolic dims take the given
 * values at most.
 */
export async function compileGraph(graph: Graph, bindings: DimBindings, o: CompileOptions): Promise<Engine> {
  const c = compileGraphEngine(graph, bindings, o);
  return new Engine({ ...c.manifest, weightsSha256: await sha256Hex(c.weights) }, c.weights);
}

/**
 * What {@link compileGraph} compiles, as a manifest and weights, for a target: no device is needed (`inspect --target
 * webgpu` on an ONNX graph uses this). The one plan is named `run`.
 */
export function compileGraphEngine(graph: Graph, bindings: DimBindings, o: CompileOptions): CompiledEngine {
  const target = targetOf(o);
  const seq = bindings.seq ?? 1;
  const pipeline = runWebGPUPipeline(graph, target, [{ name: 'run', maxSeq: Math.max(seq, 1 << 30), bindings }], { passes: o.passes, variants: o.variants, tuning: o.tuning, compression: compressionOf(o), printIrAfter: o.printIrAfter, print: o.print });
  const packer = new WeightPacker();
  const kernels = new KernelSet();
  const plans = buildPlans(pipeline, target, kernels, packer, o.onProgress);
  const manifest: EngineManifest = {
    format: 'tensorwright-engine',
    version: ENGINE_FORMAT_VERSION,
    created: { by: 'tensorwright', at: new Date().toISOString() },
    device: { description: describeTarget(target), features: [...target.features] },
    model: { family: String(graph.meta.family ?? 'graph'), config: graph.meta.config ?? {} },
    kernels: kernels.kernels,
    weights: packer.manifest,
    slots: plans.slots,
    ...(plans.scratch.length ? { scratch: plans.scratch } : {}),
    inputs: inputsOf(pipeline.graph, bindings, () => false),
    outputs: plans.outputs,
    plans: plans.plans,
    requiredFeatures: kernels.requiredFeatures(),
  };
  const weights = packer.bin();
  return { manifest: { ...manifest, weightsByteLength: weights.byteLength }, weights, pipeline, target };
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
