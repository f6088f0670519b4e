/**
 * Static memory planning: one arena for every activation of a forward step, with buffers whose lifetimes do not
 * overlap sharing bytes.
 *
 * Every node that launches a kernel writes a buffer of `numel * byteSize(dtype)` bytes; a `reshape` is a view of its
 * operand's buffer (and keeps it alive as long as the view is read). A buffer is live from the step of the kernel
 * that writes it to the last step of a kernel that reads it, or to the end when it holds a graph output. Offsets are
 * assigned by the "greedy by size" planner of TFLite and ONNX Runtime: buffers largest first, each into the
 * best-fitting gap among the already placed buffers whose lifetimes overlap its own, every offset a multiple of the
 * alignment. Graph inputs are the caller's buffers and weights and constants are not activations; both are counted
 * separately, outside the arena.
 * @module
 */
import { InputError, VerifyError } from '../errors.js';
import type { DimBindings } from '../ir/dim.js';
import { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { launchesKernel, weightTotals } from '../ir/stats.js';
import type { Pass } from './pass.js';
import { alignUp, analyzeBuffers, normalizeSchedule, peakLiveBytes, scheduleForMemory, valueBytes, type BufferAnalysis } from './schedule.js';

/**
 * WebGPU's default `minStorageBufferOffsetAlignment`, the default alignment of arena offsets.
 * @internal
 */
export const DEFAULT_ARENA_ALIGNMENT = 256;

/** Options of {@link planMemory}. */
export interface PlanMemoryOptions {
  /** Values of the graph's symbolic dims (e.g. `{ seq: 512, past: 0 }`). */
  readonly bindings: DimBindings;
  /** Byte alignment of every offset, and the unit buffer sizes are rounded up to (default 256). */
  readonly alignment?: number;
  /**
   * The order kernels run in (nodes that launch no kernel are ignored). Default: the better, by planned arena
   * size, of `scheduleForMemory` (src/passes/schedule.ts) and the graph's depth-first order.
   */
  readonly schedule?: readonly Node[];
}

/** One buffer of a {@link MemoryPlan}: a kernel's output, or a view (`aliasOf`) of one. */
export interface PlannedBuffer {
  /** The node whose value the buffer holds. */
  readonly node: Node;
  /** Bytes of the value (`numel * byteSize(dtype)`). */
  readonly bytes: number;
  /** Bytes reserved for it in the arena: `bytes` rounded up to the alignment (the storage's, for a view). */
  readonly alignedBytes: number;
  /** Byte offset in the arena (a view's is its storage's). */
  readonly offset: number;
  /** Step (index into the schedule) at which the value is written. */
  readonly firstStep: number;
  /** Last step that reads the value (the last step of the schedule for graph outputs). */
  readonly lastStep: number;
  /** For a view (`reshape`): the kernel node whose buffer it aliases. */
  readonly aliasOf?: Node;
}

/** Where every activation lives during one forward step, and what that costs. */
export interface MemoryPlan {
  /** The kernels in the order they run; a buffer's steps index this list. */
  readonly schedule: readonly Node[];
  /** Kernel buffers in schedule order, then views of them in graph order. */
  readonly buffers: readonly PlannedBuffer[];
  /** The graph's output nodes (they stay live until the last step). */
  readonly outputs: readonly Node[];
  /** The dim values the sizes were computed with. */
  readonly bindings: DimBindings;
  /** Offset alignment in bytes. */
  readonly alignment: number;
  /** Size of the arena: the end of the highest placed buffer. */
  readonly arenaBytes: number;
  /** Bytes needed without reuse: the sum of every kernel buffer's aligned size. */
  readonly peakBytesNaive: number;
  /** Bytes needed with this plan (equal to {@link MemoryPlan.arenaBytes}). */
  readonly peakBytesPlanned: number;
  /** The most aligned bytes live at any one step: no arena for this schedule can be smaller. */
  readonly lowerBound: number;
  /** Bytes of the graph inputs (buffers the caller provides, not in the arena). */
  readonly inputBytes: number;
  /** Bytes of the weights the graph references, as stored (not in the arena). */
  readonly weightBytes: number;
  /** Bytes of the inline constants (not in the arena). */
  readonly constantBytes: number;
  /** Arena offset of a node's value (views included); `undefined` for leaves and nodes outside the plan. */
  offsetOf(node: Node): number | undefined;
  /** The planned buffer of a node (views included); `undefined` for leaves and nodes outside the plan. */
  bufferOf(node: Node): PlannedBuffer | undefined;
}

/**
 * Plans the activation memory of one forward step of `graph` with the dims bound to `opts.bindings`: a kernel
 * schedule, each buffer's lifetime, and an arena offset for each buffer such that buffers live at the same time
 * never share bytes. Throws {@link InputError} for an unbound symbolic dim, a bad alignment or an invalid schedule.
 */
export function planMemory(graph: Graph, opts: PlanMemoryOptions): MemoryPlan {
  const alignment = opts.alignment ?? DEFAULT_ARENA_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0) throw new InputError(`planMemory: alignment must be a positive integer, got ${alignment}`);
  const analysis = analyzeBuffers(graph, opts.bindings);
  const side = sideBytes(graph, opts.bindings);
  if (opts.schedule) return planForSchedule(graph, analysis, normalizeSchedule(analysis, opts.schedule), alignment, opts.bindings, side);
  const greedy = planForSchedule(graph, analysis, scheduleForMemory(graph, opts.bindings, alignment, analysis), alignment, opts.bindings, side);
  const depthFirst = planForSchedule(graph, analysis, [...analysis.kernels], alignment, opts.bindings, side);
  return depthFirst.arenaBytes < greedy.arenaBytes ? depthFirst : greedy;
}

interface SideBytes {
  inputBytes: number;
  weightBytes: number;
  constantBytes: number;
}

function sideBytes(graph: Graph, bindings: DimBindings): SideBytes {
  let inputBytes = 0;
  for (const i of graph.inputs) inputBytes += valueBytes(i, bindings);
  let constantBytes = 0;
  for (const n of graph.nodes()) if (n.op === 'constant') constantBytes += valueBytes(n, bindings);
  return { inputBytes, weightBytes: weightTotals(graph).bytes, constantBytes };
}

function planForSchedule(graph: Graph, a: BufferAnalysis, order: readonly Node[], alignment: number, bindings: DimBindings, side: SideBytes): MemoryPlan {
  const end = order.length - 1;
  const step = new Map<Node, number>();
  order.forEach((k, i) => step.set(k, i));
  // last step reading each value, propagated from views to what they view (users come after operands in topo order)
  const lastUse = new Map<Node, number>();
  const use = (n: Node, s: number): void => {
    lastUse.set(n, Math.max(lastUse.get(n) ?? -1, s));
  };
  for (const k of order) for (const x of k.inputs) use(x, step.get(k)!);
  for (const o of graph.outputNodes) use(o, end);
  const nodes = graph.nodes();
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (n.op === 'reshape' && lastUse.has(n)) use(n.inputs[0], lastUse.get(n)!);
  }

  interface Slot {
    node: Node;
    bytes: number;
    size: number;
    first: number;
    last: number;
    offset: number;
  }
  const slots: Slot[] = order.map((k) => {
    const first = step.get(k)!;
    return { node: k, bytes: a.bytes.get(k)!, size: alignUp(a.bytes.get(k)!, alignment), first, last: Math.max(first, lastUse.get(k) ?? first), offset: 0 };
  });
  const arenaBytes = assignOffsets(slots);

  const buffers: PlannedBuffer[] = slots.map((s) => ({ node: s.node, bytes: s.bytes, alignedBytes: s.size, offset: s.offset, firstStep: s.first, lastStep: s.last }));
  const byNode = new Map<Node, PlannedBuffer>();
  for (const b of buffers) byNode.set(b.node, b);
  for (const n of nodes) {
    if (n.op !== 'reshape') continue;
    const root = byNode.get(a.storage.get(n)!);
    if (!root || root.aliasOf) continue;
    const view: PlannedBuffer = {
      node: n,
      bytes: a.bytes.get(n)!,
      alignedBytes: root.alignedBytes,
      offset: root.offset,
      firstStep: root.firstStep,
      lastStep: Math.max(root.firstStep, lastUse.get(n) ?? root.firstStep),
      aliasOf: root.node,
    };
    buffers.push(view);
    byNode.set(n, view);
  }
  let naive = 0;
  for (const s of slots) naive += s.size;
  return {
    schedule: order,
    buffers,
    outputs: graph.outputNodes,
    bindings: { ...bindings },
    alignment,
    arenaBytes,
    peakBytesNaive: naive,
    peakBytesPlanned: arenaBytes,
    lowerBound: peakLiveBytes(a, order, alignment),
    ...side,
    offsetOf: (node) => byNode.get(node)?.offset,
    bufferOf: (node) => byNode.get(node),
  };
}

/**
 * Greedy by size: largest first (then longest-lived, earliest, oldest node), each into the smallest gap that fits
 * among the placed slots whose lifetimes overlap its own, else above the highest of them. Sizes are already aligned,
 * so every offset is too. Returns the arena size.
 */
function assignOffsets(slots: { node: Node; size: number; first: number; last: number; offset: number }[]): number {
  const sorted = [...slots].sort((p, q) => q.size - p.size || q.last - q.first - (p.last - p.first) || p.first - q.first || p.node.id - q.node.id);
  const placed: typeof slots = [];
  let arena = 0;
  for (const s of sorted) {
    const conflicts = placed.filter((p) => p.first <= s.last && s.first <= p.last).sort((p, q) => p.offset - q.offset);
    let top = 0;
    let best = -1;
    let bestGap = Infinity;
    for (const p of conflicts) {
      const gap = p.offset - top;
      if (gap >= s.size && gap < bestGap) {
        best = top;
        bestGap = gap;
      }
      top = Math.max(top, p.offset + p.size);
    }
    s.offset = best >= 0 ? best : top;
    arena = Math.max(arena, s.offset + s.size);
    placed.push(s);
  }
  return arena;
}

/**
 * Checks a plan's invariants and throws {@link VerifyError} naming the first violation: offsets aligned and inside
 * the arena; no two buffers whose lifetimes overlap share a byte; each buffer written at its first step, live at
 * every step that reads it, and live to the end when it holds a graph output; views inside their storage.
 */
export function verifyMemoryPlan(plan: MemoryPlan): void {
  const fail = (msg: string): never => {
    throw new VerifyError(`memory plan: ${msg}`);
  };
  const name = (n: Node): string => `${n.op}#${n.id}`;
  const { alignment, arenaBytes, schedule } = plan;
  if (!Number.isInteger(alignment) || alignment <= 0) fail(`alignment ${alignment} is not a positive integer`);
  if (plan.peakBytesPlanned !== arenaBytes) fail(`peakBytesPlanned ${plan.peakBytesPlanned} differs from arenaBytes ${arenaBytes}`);
  if (plan.lowerBound > arenaBytes) fail(`arena of ${arenaBytes} bytes is below the lower bound ${plan.lowerBound}`);
  const step = new Map<Node, number>();
  schedule.forEach((k, i) => {
    if (!launchesKernel(k)) fail(`step ${i} is ${name(k)}, which launches no kernel`);
    if (step.has(k)) fail(`${name(k)} is scheduled twice`);
    step.set(k, i);
  });
  const byNode = new Map<Node, PlannedBuffer>();
  for (const b of plan.buffers) {
    const n = name(b.node);
    if (byNode.has(b.node)) fail(`${n} has two buffers`);
    byNode.set(b.node, b);
    if (b.offset % alignment !== 0 || b.offset < 0) fail(`${n} is at offset ${b.offset}, not a non-negative multiple of ${alignment}`);
    if (b.alignedBytes < b.bytes) fail(`${n} reserves ${b.alignedBytes} bytes for a ${b.bytes}-byte value`);
    if (b.offset + b.alignedBytes > arenaBytes) fail(`${n} at [${b.offset}, ${b.offset + b.alignedBytes}) runs past the ${arenaBytes}-byte arena`);
    if (b.firstStep < 0 || b.lastStep < b.firstStep || b.lastStep >= schedule.length) fail(`${n} has lifetime [${b.firstStep}, ${b.lastStep}] outside the ${schedule.length}-step schedule`);
    if (!b.aliasOf) {
      if (b.alignedBytes % alignment !== 0) fail(`${n} reserves ${b.alignedBytes} bytes, not a multiple of ${alignment}`);
      if (step.get(b.node) !== b.firstStep) fail(`${n} is written at step ${step.get(b.node)}, but its lifetime starts at ${b.firstStep}`);
    }
  }
  for (const k of schedule) if (!byNode.has(k) || byNode.get(k)!.aliasOf) fail(`kernel ${name(k)} has no buffer of its own`);
  const roots = plan.buffers.filter((b) => !b.aliasOf);
  for (const b of plan.buffers) {
    if (!b.aliasOf) continue;
    const r = byNode.get(b.aliasOf);
    if (!r || r.aliasOf) fail(`view ${name(b.node)} aliases ${name(b.aliasOf)}, which has no buffer of its own`);
    else if (r.offset !== b.offset || b.bytes > r.bytes || b.firstStep < r.firstStep || b.lastStep > r.lastStep)
      fail(`view ${name(b.node)} (offset ${b.offset}, ${b.bytes} bytes, steps [${b.firstStep}, ${b.lastStep}]) is not inside its storage ${name(r.node)} (offset ${r.offset}, ${r.bytes} bytes, steps [${r.firstStep}, ${r.lastStep}])`);
  }
  schedule.forEach((k, s) => {
    for (const x of k.inputs) {
      const b = byNode.get(x);
      if (b && (b.firstStep > s || b.lastStep < s)) fail(`${name(k)} at step ${s} reads ${name(x)}, live only in steps [${b.firstStep}, ${b.lastStep}]`);
      if (!b && storageIsKernel(x)) fail(`${name(k)} at step ${s} reads ${name(x)}, which has no buffer`);
    }
  });
  for (const o of plan.outputs) {
    const b = byNode.get(o);
    if (b && b.lastStep !== schedule.length - 1) fail(`output ${name(o)} dies at step ${b.lastStep}, before the last step ${schedule.length - 1}`);
  }
  const sorted = [...roots].sort((p, q) => p.offset - q.offset);
  for (let i = 0; i < sorted.length; i++) {
    const p = sorted[i];
    for (let j = i + 1; j < sorted.length && sorted[j].offset < p.offset + p.alignedBytes; j++) {
      const q = sorted[j];
      if (q.alignedBytes === 0 || p.alignedBytes === 0) continue;
      if (p.firstStep <= q.lastStep && q.firstStep <= p.lastStep)
        fail(
          `${name(p.node)} [${p.offset}, ${p.offset + p.alignedBytes}) steps [${p.firstStep}, ${p.lastStep}] and ${name(q.node)} [${q.offset}, ${q.offset + q.alignedBytes}) steps [${q.firstStep}, ${q.lastStep}] overlap in memory while both are live`,
        );
    }
  }
}

function storageIsKernel(n: Node): boolean {
  let s = n;
  while (s.op === 'reshape') s = s.inputs[0];
  return launchesKernel(s);
}

/** `planned peak 1.23 MiB vs naive 4.56 MiB (27.0%)`: the one-line summary the pass reports. */
export function describeMemoryPlan(plan: MemoryPlan): string {
  const mib = (b: number): string => (b / (1024 * 1024)).toFixed(2);
  const pct = plan.peakBytesNaive > 0 ? ((100 * plan.peakBytesPlanned) / plan.peakBytesNaive).toFixed(1) : '100.0';
  return `planned peak ${mib(plan.peakBytesPlanned)} MiB vs naive ${mib(plan.peakBytesNaive)} MiB (${pct}%)`;
}

/**
 * Dim values assumed for symbols a pass is not given: one prompt of 512 tokens, an empty KV cache, batch 1.
 * @internal
 */
export const DEFAULT_PLAN_BINDINGS: DimBindings = Object.freeze({ seq: 512, past: 0, batch: 1 });

/**
 * Result of {@link resolvePlanBindings}.
 * @internal
 */
export interface ResolvedPlanBindings {
  /** A value for every symbolic dim of the graph. */
  readonly bindings: DimBindings;
  /** Symbols that were neither given nor in {@link DEFAULT_PLAN_BINDINGS}, and so were assumed to be 1 (sorted). */
  readonly assumed: readonly string[];
}

/**
 * Bindings for every symbolic dim of `graph`: `given` first, then {@link DEFAULT_PLAN_BINDINGS}, then 1 for any other
 * symbol (listed in `assumed`, so a caller can say so).
 * @internal
 */
export function resolvePlanBindings(graph: Graph, given: DimBindings = {}): ResolvedPlanBindings {
  const symbols = new Set<string>();
  const visit = (n: Node): void => {
    for (const d of n.shape) if (typeof d !== 'number') for (const s of d.symbols()) symbols.add(s);
  };
  for (const n of graph.nodes()) visit(n);
  for (const n of graph.inputs) visit(n);
  const bindings: Record<string, number> = { ...given };
  const assumed: string[] = [];
  for (const s of [...symbols].sort()) {
    if (bindings[s] !== undefined) continue;
    if (DEFAULT_PLAN_BINDINGS[s] !== undefined) bindings[s] = DEFAULT_PLAN_BINDINGS[s];
    else {
      bindings[s] = 1;
      assumed.push(s);
    }
  }
  return { bindings, assumed };
}

function readBindings(v: unknown): DimBindings {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Object.values(v).some((x) => typeof x !== 'number' || !Number.isInteger(x) || x < 0))
    throw new InputError(`plan-memory: options.bindings must map symbol names to non-negative integers, got ${JSON.stringify(v)}`);
  return v as DimBindings;
}

/**
 * The `plan-memory` pass: plans the activation arena ({@link planMemory}) and returns the same graph with the plan
 * in `meta.memoryPlan`. Bindings come from `options.bindings` (symbols it leaves out default to seq 512, past 0,
 * batch 1, anything else 1, with a note); `options.memoryAlignment` overrides the 256-byte alignment. The plan
 * refers to this graph's nodes, so run the pass last. Reports `planned peak X MiB vs naive Y MiB (Z%)`.
 */
export const memoryPlanPass: Pass = {
  name: 'plan-memory',
  description: 'Plans one arena for all activations, reusing the bytes of buffers whose lifetimes do not overlap',
  run(graph, ctx) {
    const { bindings, assumed } = resolvePlanBindings(graph, readBindings(ctx.options.bindings));
    const alignment = ctx.options.memoryAlignment;
    if (alignment !== undefined && typeof alignment !== 'number') throw new InputError(`plan-memory: options.memoryAlignment must be a number, got ${JSON.stringify(alignment)}`);
    const plan = planMemory(graph, { bindings, alignment });
    if (assumed.length && ctx.report)
      ctx.report.add({ pass: 'plan-memory', kind: 'info', message: `no value for symbolic dim${assumed.length > 1 ? 's' : ''} ${assumed.join(', ')}; assumed 1` });
    if (ctx.report) {
      const dims = Object.entries(bindings)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      ctx.report.add({
        pass: 'plan-memory',
        kind: 'memory',
        message: `${describeMemoryPlan(plan)}; lower bound ${(plan.lowerBound / (1024 * 1024)).toFixed(2)} MiB, ${plan.schedule.length} kernels${dims ? `, ${dims}` : ''}`,
      });
    }
    return new Graph(graph.inputs, graph.outputs, graph.weights, { ...graph.meta, memoryPlan: plan });
  },
};
