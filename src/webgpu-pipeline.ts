/**
 * The WebGPU pipeline, visible end to end: every stage from the imported graph to the list of launches is a pass
 * run by the pass manager (verified, timed, printable with `--print-ir-after`):
 *
 * 1. optimization (`O3` unless asked otherwise), with `repack-quantized-weights` (quantized weights in the layout the
 *    dequantizing kernels read) and `split-large-weights` (no weight outgrows one storage binding) before fusion;
 * 2. `legalize-webgpu`: forms the kernels implement;
 * 3. `lower-paged-kv`: attentions over the KV cache read the paged pools;
 * 4. `materialize-outputs`: every output gets a buffer;
 * 5. per plan (decode, prefill), `plan-memory` then `select-kernels`: the schedule, the arena, and the kernel family
 *    and variant of every launch, for that plan's token count.
 *
 * Fusion passes read the target's fusion patterns, so they only form what a kernel family implements.
 * @mergeModuleWith compile
 * @module
 */
import { UsageError } from './errors.js';
import { isOp } from './ir/attrs.js';
import { Graph } from './ir/graph.js';
import { pagedAttentionOf } from './ir/paged-kv.js';
import { printGraph } from './ir/printer.js';
import type { Target } from './ir/target.js';
import type { QuantScheme } from './ir/quant-scheme.js';
import type { SparsityScheme } from './ir/sparsity-scheme.js';
import type { Launch, LowerVariants } from './codegen/family.js';
import { lowerSchedule } from './codegen/lower.js';
import type { TuningRequest } from './codegen/schedule/tuning.js';
import { planMemory, type MemoryPlan } from './passes/memory-plan.js';
import { PASSES, resolvePipeline, runPasses, type PipelineResult, type Pass, type PassTiming, type RunPassesOptions } from './passes/pipeline.js';
import type { DimBindings } from './ir/dim.js';

/** The launches `select-kernels` chose for a graph (empty before it ran). */
export function launchesOf(g: Graph): readonly Launch[] {
  return (g.meta.launches as readonly Launch[] | undefined) ?? [];
}

/** Kernel selection as a pipeline stage: the memory plan's schedule lowered to launches, stored in `meta.launches`. */
export const selectKernelsPass: Pass = {
  name: 'select-kernels',
  description: 'pick the kernel family and variant of every scheduled node for the target and the plan token count',
  run(g, ctx) {
    if (!ctx.target) throw new UsageError('select-kernels needs a target (run the WebGPU pipeline with one)');
    const bindings = (ctx.options.bindings ?? {}) as DimBindings;
    const plan = (g.meta.memoryPlan as MemoryPlan | undefined) ?? planMemory(g, { bindings });
    const expectedSeq = typeof ctx.options.expectedSeq === 'number' ? ctx.options.expectedSeq : (bindings.seq ?? 1);
    const dense = { kind: 'dense' } as const;
    const launches = lowerSchedule(plan.schedule, {
      target: ctx.target,
      expectedSeq,
      paged: pagedAttentionOf(g),
      ...(typeof ctx.options.maxKvLen === 'number' ? { maxKvLen: ctx.options.maxKvLen } : {}),
      variants: ctx.options.variants as LowerVariants | undefined,
      tuning: ctx.options.tuning as TuningRequest | undefined,
      weightEncoding: (n) => (isOp(n, 'weight') ? g.weights.get(n.attrs.id).encoding : dense),
    });
    const byVariant = new Map<string, number>();
    for (const l of launches) byVariant.set(`${l.kernel.family}/${l.kernel.variant}`, (byVariant.get(`${l.kernel.family}/${l.kernel.variant}`) ?? 0) + 1);
    const distinct = new Set(launches.map((l) => l.kernel.wgsl)).size;
    ctx.report.add({
      pass: 'select-kernels',
      kind: 'info',
      message: `${launches.length} launches of ${distinct} distinct kernels for ${expectedSeq} token${expectedSeq === 1 ? '' : 's'} on ${ctx.target.name}: ${[...byVariant].map(([k, n]) => `${k} ×${n}`).join(', ')}`,
    });
    return new Graph(g.inputs, g.outputs, g.weights, { ...g.meta, launches });
  },
  print(g) {
    const lines = launchesOf(g).map((l, i) => `//   ${String(i).padStart(3)} ${l.kernel.family}/${l.kernel.variant}  ${l.label}`);
    return `${printGraph(g)}\n// launches (${lines.length}):\n${lines.join('\n')}`;
  },
};

/** The stages run once per plan, with that plan's bindings. */
export const PLAN_STAGES: readonly Pass[] = [PASSES['plan-memory'], selectKernelsPass];

/**
 * The graph stages of the WebGPU pipeline for an optimization spec (a preset or pass list, default `O3`): the
 * optimization passes (without `plan-memory`, which runs per plan), `repack-quantized-weights` and
 * `split-large-weights` before the first fusion pass, then legalization, paged-KV lowering and output materialization.
 */
export function webgpuGraphStages(optimization = 'O3'): Pass[] {
  const listed = resolvePipeline(optimization).filter((p) => !['plan-memory', 'split-large-weights', 'repack-quantized-weights'].includes(p.name));
  // repack and split after projections are merged and weights quantized (merged weights are larger) and before
  // fusion (the rules match plain matmuls)
  const layout = [PASSES['repack-quantized-weights'], PASSES['split-large-weights']];
  const at = listed.findIndex((p) => p.name.startsWith('fuse-'));
  const optimized = at < 0 ? [...listed, ...layout, PASSES.dce] : [...listed.slice(0, at), ...layout, ...listed.slice(at)];
  return [...optimized, PASSES['legalize-webgpu'], PASSES['lower-paged-kv'], PASSES['materialize-outputs']];
}

/** A plan: its name, the token count it is built for, and the dim values it is planned at. */
export interface PlanSpec {
  /** `decode`, `prefill` or `run`. */
  readonly name: string;
  /** Most new tokens one run of the plan takes. */
  readonly maxSeq: number;
  /** Dim values the memory plan is made for. */
  readonly bindings: DimBindings;
  /**
   * The token count kernel variants are chosen for (default `maxSeq`). Plans that give the same value get the same
   * kernels: causal-LM engines give every plan one value, so a row's arithmetic does not depend on how many tokens a
   * step runs (batch invariance).
   */
  readonly expectedSeq?: number;
  /** The most keys one query attends to (a causal LM's `maxPositions`), when known (see `LowerContext.maxKvLen`). */
  readonly maxKvLen?: number;
}

/** A plan and its graph after the per-plan stages. */
export interface PlannedGraph {
  /** The plan. */
  readonly spec: PlanSpec;
  /** Its graph, holding `meta.memoryPlan` and `meta.launches`. */
  readonly graph: Graph;
}

/** Timing of one stage, with the plan it ran for (per-plan stages). */
export interface StageTiming extends PassTiming {
  /** The plan, for `plan-memory` and `select-kernels`. */
  readonly plan?: string;
}

/** The result of {@link runWebGPUPipeline}. */
export interface WebGPUPipelineResult {
  /** The graph after the graph stages (what every plan is built from). */
  readonly graph: Graph;
  /** Per plan: its graph after `plan-memory` and `select-kernels` (`meta.memoryPlan`, `meta.launches`). */
  readonly plans: readonly PlannedGraph[];
  /** Every stage's time, in run order. */
  readonly timings: readonly StageTiming[];
  /** The graph stages' result (report, matches). */
  readonly optimized: PipelineResult;
}

/** Options of {@link runWebGPUPipeline}. */
export interface WebGPUPipelineOptions extends Pick<RunPassesOptions, 'printIrAfter' | 'print' | 'verify'> {
  /** The optimization spec (default `O3`). */
  readonly passes?: string;
  /** Variants forced over the schedule rules. */
  readonly variants?: LowerVariants;
  /** Measured picks of tunable kernels (a timing table), or a tuner round. */
  readonly tuning?: TuningRequest;
  /** Weight compression the `sparsify-weights` and `quantize-weights` stages apply (absent: none). */
  readonly compression?: WeightCompression;
}

/** The weight compression a compile asks for: a quantization scheme, a sparsity pattern, or neither. */
export type WeightCompression = {
  /** Quantization scheme for matmul weights and embedding tables. */
  readonly quant?: QuantScheme;
  /** Sparsity pattern for matmul weights. */
  readonly sparsity?: SparsityScheme;
};

/**
 * Runs the WebGPU pipeline for `target`: the graph stages once (at the largest plan's bindings), then the per-plan
 * stages for each plan.
 */
export function runWebGPUPipeline(graph: Graph, target: Target, plans: readonly PlanSpec[], o: WebGPUPipelineOptions = {}): WebGPUPipelineResult {
  const stages = webgpuGraphStages(o.passes);
  const names = new Set([...stages, ...PLAN_STAGES].map((p) => p.name));
  if (o.printIrAfter && o.printIrAfter !== 'all')
    for (const n of o.printIrAfter) if (!names.has(n)) throw new UsageError(`--print-ir-after: '${n}' is not a stage of this pipeline; its stages: ${[...names].join(', ')}`);
  const largest = plans.reduce((a, p) => (p.maxSeq > a.maxSeq ? p : a), plans[0]);
  const common = { target, verify: o.verify, print: o.print };
  const printIn = (list: readonly Pass[]): RunPassesOptions['printIrAfter'] =>
    o.printIrAfter === 'all' ? 'all' : o.printIrAfter?.filter((n) => list.some((p) => p.name === n));
  const optimized = runPasses(graph, stages, { ...common, printIrAfter: printIn(stages), options: { bindings: largest.bindings, ...o.compression } });
  const timings: StageTiming[] = [...optimized.timings];
  const built = plans.map((spec) => {
    const r = runPasses(optimized.graph, PLAN_STAGES, { ...common, printIrAfter: printIn(PLAN_STAGES), options: { bindings: spec.bindings, expectedSeq: spec.expectedSeq ?? spec.maxSeq, ...(spec.maxKvLen !== undefined ? { maxKvLen: spec.maxKvLen } : {}), variants: o.variants, tuning: o.tuning } });
    timings.push(...r.timings.map((t) => ({ ...t, plan: spec.name })));
    for (const e of r.report.entries) optimized.report.add({ ...e, message: `(${spec.name}) ${e.message}` });
    return { spec, graph: r.graph };
  });
  return { graph: optimized.graph, plans: built, timings, optimized };
}
