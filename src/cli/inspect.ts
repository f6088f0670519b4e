/**
 * `tensorwright inspect`: a model's config, parameter count and bytes, and what the optimizer makes of it: node,
 * kernel-launch and op counts before and after the pass pipeline, per-pass times, per-layer kernels, planned versus
 * naive activation memory for a prefill of `--seq` tokens, and the IR. It takes every model `loadModel` opens, and ONNX
 * graphs (imported with `readOnnx`; their symbolic dims other than seq/past/batch are assumed 1, and the report says so).
 * @module
 */
import { open, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readEngineManifestFile } from '../runtime/node/engine-files.js';
import { loadModel } from '../frontends/load.js';
import { looksLikeOnnx, readOnnx, type OnnxValueInfo } from '../frontends/onnx/index.js';
import type { DimBindings } from '../ir/dim.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { printGraph } from '../ir/printer.js';
import { countKernels, launchesKernel, opHistogram, weightTotals } from '../ir/stats.js';
import { planMemory, resolvePlanBindings, type MemoryPlan } from '../passes/memory-plan.js';
import { runPasses } from '../passes/pipeline.js';
import type { DeviceProfile } from '../ir/device-profile.js';
import { cpuProfile } from '../ir/device-profile.js';
import type { KvCacheDType, PrecisionPolicy, Target } from '../ir/target.js';
import type { PipelineResult } from '../passes/pipeline.js';
import { compileGraphEngine, compileModel, compressionOf, type CompiledEngine } from '../compile.js';
import { createTarget, type TargetProfileName } from '../codegen/target.js';
import { probeWebGPU } from '../runtime/device.js';
import type { StageTiming } from '../webgpu-pipeline.js';
import { log } from './output.js';
import { requireFileOrFolder } from './file-arguments.js';

/** Options of the `inspect` command. */
export interface InspectCommandOptions {
  /** Model file. */
  model: string;
  /** Pass pipeline (a preset such as `O3`, or a comma-separated list of pass names). */
  passes: string;
  /** Prefill length the kernel counts and memory figures are for. */
  seq: number;
  /** Print one JSON object. */
  json: boolean;
  /** Print the IR after these passes (or `all`). */
  printIrAfter?: readonly string[] | 'all';
  /** Target device profile of the CPU pipeline (default: the CPU profile). */
  device?: DeviceProfile;
  /** `cpu` (default): the optimizer as the CPU backend runs it; `webgpu`: the whole WebGPU pipeline to the dispatch list. */
  target?: 'cpu' | 'webgpu';
  /** With `target: 'webgpu'`: the device profile to compile for (default: the local adapter, else `lavapipe`). */
  deviceProfile?: TargetProfileName;
  /** Weight quantization scheme (`none`, `int8`, `int4-g32`, …). */
  quant?: string;
  /** Weight sparsity pattern (`none`, `2:4`, `block32-0.1`, …). */
  sparsity?: string;
  /** With `target: 'webgpu'`: precision policy. */
  precision?: PrecisionPolicy;
  /** With `target: 'webgpu'`: tokens per KV-cache block. */
  kvBlockSize?: number;
  /** Element type of the KV cache (default f32). */
  kvDtype?: KvCacheDType;
  /** Most positions the model is compiled for: a file's declared context is capped to it (default 8192). */
  maxContext?: number;
}

/** Kernel launches per decoder layer (`layers.N.` in weight names), the rest under `other`. */
export function kernelsPerLayer(g: Graph): Record<string, number> {
  const layerOf = new Map<Node, number | 'other'>();
  const counts: Record<string, number> = {};
  for (const n of g.nodes()) {
    let layer: number | 'other' | undefined;
    const weights = n.inputs.filter((x) => x.op === 'weight');
    if (n.op === 'weight') {
      const m = /(?:^|[^A-Za-z0-9])layers?\.(\d+)\./.exec(String(n.attrs.name)) ?? /\bh\.(\d+)\./.exec(String(n.attrs.name));
      layer = m ? Number(m[1]) : 'other';
    } else if (weights.length) {
      const ls = weights.map((w) => layerOf.get(w)).filter((l): l is number => typeof l === 'number');
      layer = ls.length ? Math.max(...ls) : 'other';
    } else {
      const ls = n.inputs.map((x) => layerOf.get(x)).filter((l): l is number => typeof l === 'number');
      layer = ls.length ? Math.max(...ls) : 'other';
    }
    layerOf.set(n, layer);
    if (launchesKernel(n)) counts[String(layer)] = (counts[String(layer)] ?? 0) + 1;
  }
  return counts;
}

function summary(g: Graph, plan?: MemoryPlan): Record<string, unknown> {
  const s: Record<string, unknown> = { nodes: g.size, kernels: countKernels(g), ops: opHistogram(g), kernels_per_layer: kernelsPerLayer(g) };
  if (plan) {
    s.peak_bytes_naive = plan.peakBytesNaive;
    s.peak_bytes_planned = plan.peakBytesPlanned;
    s.peak_bytes_lower_bound = plan.lowerBound;
  }
  return s;
}

/** The target `inspect --target webgpu` compiles for: the named profile, else the local adapter, else lavapipe's profile. */
async function inspectTarget(o: InspectCommandOptions): Promise<Target> {
  const options = { precision: o.precision, kv: { blockSize: o.kvBlockSize, dtype: o.kvDtype } };
  if (o.deviceProfile) return createTarget(o.deviceProfile, options);
  const probe = await probeWebGPU();
  if ('available' in probe) {
    log(`inspect: no WebGPU adapter here (${probe.reason.split('\n')[0]}); compiling for the lavapipe profile`);
    return createTarget('lavapipe', options);
  }
  return createTarget(probe, options);
}

/** What `inspect` looks at: a causal LM ({@link loadModel}'s formats) or a plain graph (an ONNX file). */
interface Subject {
  /** Detected file format. */
  readonly format: string;
  /** Model family (`graph` for an ONNX graph). */
  readonly family: string;
  /** The model's hyper-parameters, or an ONNX graph's opset, producer, inputs and outputs. */
  readonly config: Record<string, unknown>;
  /** The graph as built or imported. */
  readonly graph: Graph;
  /** Values of the graph's symbolic dims for the memory figures. */
  readonly bindings: DimBindings;
  /** Symbolic dims nothing gave a value for, assumed to be 1. */
  readonly assumed: readonly string[];
  /** What the memory figures are for (`prefill of 512 tokens`, or the dim values). */
  readonly memoryAt: string;
  /** Compiles for a target with no device; `plan` names the plan whose dispatches count as kernels per forward. */
  compileFor(target: Target): { compiled: CompiledEngine; plan: string };
}

/** Whether `path` is a file whose first bytes are an ONNX ModelProto's. */
async function isOnnxFile(path: string): Promise<boolean> {
  if (!(await stat(path)).isFile()) return false;
  const fh = await open(path, 'r');
  try {
    const head = new Uint8Array(64);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return looksLikeOnnx(head.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

function describeValue(v: OnnxValueInfo): string {
  return `${v.name}:${v.dtype}[${v.shape?.map(String).join(',') ?? '?'}]`;
}

/** Opens the model file as a causal LM ({@link loadModel}) or, for an ONNX file, as a graph. */
async function openSubject(o: InspectCommandOptions): Promise<Subject> {
  const compileOptions = (target: Target, prefillChunk?: number) => ({ target, passes: o.passes, quant: o.quant, sparsity: o.sparsity, prefillChunk, printIrAfter: o.printIrAfter, print: (text: string) => process.stderr.write(`${text}\n`) });
  if (await isOnnxFile(o.model)) {
    const m = await readOnnx(o.model);
    // --seq binds a dim named seq; the graph's other dims take the memory plan's defaults (or 1, noted)
    const symbols = Object.keys(resolvePlanBindings(m.graph).bindings);
    const given = Object.fromEntries(Object.entries({ seq: o.seq, past: 0, batch: 1 }).filter(([k]) => symbols.includes(k)));
    const { bindings, assumed } = resolvePlanBindings(m.graph, given);
    return {
      format: 'onnx',
      family: 'graph',
      config: { opset: m.opset, ir_version: m.irVersion, producer: m.producer, inputs: m.inputs.map(describeValue), outputs: m.outputs.map(describeValue) },
      graph: m.graph,
      bindings,
      assumed,
      memoryAt: Object.keys(bindings).length ? Object.entries(bindings).map(([k, v]) => `${k}=${v}`).join(' ') : 'static shapes',
      compileFor: (target) => ({ compiled: compileGraphEngine(m.graph, bindings, compileOptions(target)), plan: 'run' }),
    };
  }
  const model = await loadModel(o.model, { maxContext: o.maxContext });
  return {
    format: model.format,
    family: model.family,
    config: { ...model.config },
    graph: model.build(),
    bindings: { seq: o.seq, past: 0, batch: 1 },
    assumed: [],
    memoryAt: `prefill of ${o.seq} tokens`,
    compileFor: (target) => ({ compiled: compileModel(model, compileOptions(target, Math.min(o.seq, model.maxPositions))), plan: 'decode' }),
  };
}

/** The WebGPU pipeline's view of the model: every stage, the decode plan's dispatches and the engine's pipelines. */
async function inspectWebGPU(o: InspectCommandOptions, subject: Subject): Promise<{ graph: Graph; plan: MemoryPlan; result: Omit<PipelineResult, 'graph' | 'timings'> & { timings: readonly StageTiming[] }; extra: Record<string, unknown>; after: Record<string, unknown> }> {
  const target = await inspectTarget(o);
  const { compiled: c, plan: planName } = subject.compileFor(target);
  const m = c.manifest;
  const forward = m.plans.find((p) => p.name === planName)!;
  const planned = c.pipeline.plans[c.pipeline.plans.length - 1].graph;
  const extra = {
    target: { name: target.name, device_class: target.deviceClass, device: `${target.adapter.vendor} ${target.adapter.device}`.trim(), features: target.features, precision: target.precision, kv: target.kv },
    plans: m.plans.map((p) => ({ name: p.name, max_seq: p.maxSeq, dispatches: p.dispatches.length })),
  };
  // the forward plan's dispatches by family/variant
  const variants: Record<string, number> = {};
  for (const d of forward.dispatches) {
    const k = m.kernels[d.kernel];
    variants[`${k.family}/${k.variant}`] = (variants[`${k.family}/${k.variant}`] ?? 0) + 1;
  }
  const after = { kernels: forward.dispatches.length, pipelines: m.kernels.length, dispatches_by_variant: variants };
  const timings = c.pipeline.timings;
  return { graph: planned, plan: planned.meta.memoryPlan as MemoryPlan, result: { timings, report: c.pipeline.optimized.report, matches: c.pipeline.optimized.matches }, extra, after };
}

/**
 * A saved engine (a folder with `engine.json`): its device, plans, weights and kernels, with how each tunable
 * kernel's variant was chosen (`tuned` by `compile --tune`, or the schedule rules' `heuristic`).
 */
async function inspectEngine(o: InspectCommandOptions, manifestPath: string): Promise<Record<string, unknown>> {
  const m = await readEngineManifestFile(manifestPath);
  const bySource: Record<string, number> = {};
  for (const k of m.kernels) if (k.schedule) bySource[k.schedule.source] = (bySource[k.schedule.source] ?? 0) + 1;
  const report = {
    model: o.model,
    format: 'engine',
    version: m.version,
    device: m.device.description,
    family: m.model.family,
    plans: m.plans.map((p) => ({ name: p.name, max_seq: p.maxSeq, dispatches: p.dispatches.length })),
    weight_bytes: m.weightsByteLength ?? 0,
    kernel_schedules: bySource,
    kernels: m.kernels.map((k, i) => ({ index: i, family: k.family, variant: k.variant, ...(k.schedule ? { schedule: { source: k.schedule.source, variant: JSON.parse(k.schedule.variant) as unknown, candidate: k.schedule.candidate, ...(k.schedule.candidates !== undefined ? { candidates: k.schedule.candidates } : {}) } } : {}) })),
  };
  if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else {
    const lines = [
      `engine     ${o.model} (format version ${m.version}, ${m.model.family})`,
      `device     ${m.device.description}`,
      `plans      ${report.plans.map((p) => `${p.name} (≤${p.max_seq} tokens) ${p.dispatches} dispatches`).join(', ')}`,
      `weights    ${(report.weight_bytes / 1048576).toFixed(2)} MiB`,
      `schedules  ${Object.entries(bySource).map(([k, v]) => `${k}:${v}`).join(' ') || '(no tunable kernels)'}`,
      'kernels:',
      ...report.kernels.map((k) => `  ${String(k.index).padStart(3)} ${k.family}/${k.variant}${k.schedule ? `  [${k.schedule.source}${k.schedule.candidates !== undefined ? ` ${k.schedule.candidate + 1}/${k.schedule.candidates}` : ''}] ${JSON.stringify(k.schedule.variant)}` : ''}`),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return report;
}

/** Runs the command; returns the JSON report (also printed). */
export async function inspectCommand(o: InspectCommandOptions): Promise<Record<string, unknown>> {
  requireFileOrFolder('--model', o.model);
  const manifestPath = join(o.model, 'engine.json');
  if ((await stat(o.model)).isDirectory() && existsSync(manifestPath)) return inspectEngine(o, manifestPath);
  const subject = await openSubject(o);
  const graph = subject.graph;
  const bindings = subject.bindings;
  let after: Graph;
  let plan: MemoryPlan;
  let result: Omit<PipelineResult, 'graph' | 'timings'> & { timings: readonly StageTiming[] };
  let extra: Record<string, unknown> = {};
  let afterExtra: Record<string, unknown> = {};
  if (o.target === 'webgpu') {
    const w = await inspectWebGPU(o, subject);
    ({ graph: after, plan, result, extra } = w);
    afterExtra = w.after;
  } else {
    const r = runPasses(graph, o.passes, {
      device: o.device ?? cpuProfile,
      options: { bindings, ...compressionOf(o) },
      printIrAfter: o.printIrAfter,
      print: (text) => process.stderr.write(`${text}\n`),
    });
    after = r.graph;
    result = r;
    plan = (after.meta.memoryPlan as MemoryPlan | undefined) ?? planMemory(after, { bindings });
  }
  const totals = weightTotals(graph);
  const report = {
    model: o.model,
    format: subject.format,
    family: subject.family,
    config: subject.config,
    parameters: totals.parameters,
    weight_bytes: totals.bytes,
    nodes: graph.size,
    kernels: countKernels(graph),
    ops: opHistogram(graph),
    seq: o.seq,
    ...(subject.assumed.length ? { assumed_dims: subject.assumed } : {}),
    pipeline: o.passes,
    quant: o.quant ?? 'none',
    sparsity: o.sparsity ?? 'none',
    weight_bytes_after: weightTotals(after).bytes,
    ...extra,
    before: summary(graph),
    after: { ...summary(after, plan), ...afterExtra },
    passes: result.timings.map((t) => ({ name: t.name, ...(t.plan ? { plan: t.plan } : {}), ms: Math.round(t.ms * 1000) / 1000 })),
    report: result.report.entries.map((e) => ({ pass: e.pass, kind: e.kind, message: e.message })),
  };
  if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else {
    const mib = (b: number): string => `${(b / 1024 / 1024).toFixed(2)} MiB`;
    const perLayer = (s: Record<string, unknown>): string =>
      Object.entries(s.kernels_per_layer as Record<string, number>)
        .map(([k, v]) => `${k === 'other' ? 'other' : `L${k}`}:${v}`)
        .join(' ');
    const b = report.before as Record<string, number>;
    const a = report.after as Record<string, number>;
    const lines = [
      `model      ${o.model} (${subject.format}, ${subject.family})`,
      `config     ${Object.entries(subject.config).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(' ') : v}`).join(' ')}`,
      `parameters ${totals.parameters.toLocaleString('en-US')} (${mib(totals.bytes)}; ${mib(report.weight_bytes_after)} after the pipeline${o.quant && o.quant !== 'none' ? `, --quant ${o.quant}` : ''})`,
      `pipeline   ${o.passes}: ${report.passes.map((p) => `${p.name} ${p.ms.toFixed(1)}ms`).join(', ') || '(none)'}`,
      `before     ${b.nodes} nodes, ${b.kernels} kernel launches per forward (${perLayer(report.before)})`,
      `after      ${a.nodes} nodes, ${a.kernels} kernel launches per forward (${perLayer(report.after)})`,
      `ops after  ${Object.entries(report.after.ops as Record<string, number>).map(([k, v]) => `${k}:${v}`).join(' ')}`,
      ...(subject.assumed.length ? [`dims       ${subject.assumed.join(', ')}: no value given, assumed 1`] : []),
      `memory     ${subject.memoryAt}: planned ${mib(plan.peakBytesPlanned)} vs naive ${mib(plan.peakBytesNaive)} (${((100 * plan.peakBytesPlanned) / Math.max(plan.peakBytesNaive, 1)).toFixed(1)}%), lower bound ${mib(plan.lowerBound)}`,
      '',
      'optimization report:',
      ...result.report.entries.map((e) => `  [${e.pass}] ${e.kind}: ${e.message}`),
      '',
      printGraph(after, `${subject.family} (${o.passes})`),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return report;
}
