/**
 * Kernel schedules and the buffer facts they are judged by.
 *
 * {@link analyzeBuffers} says, for a graph under concrete dim bindings, which buffer holds each value: a node that
 * launches a kernel writes its own buffer, a `reshape` is a view of its operand's buffer (transitively), and leaves
 * (inputs, weights, constants) live outside the activation arena. {@link scheduleForMemory} orders the kernels so
 * that few bytes are live at once: a greedy list scheduler that, among the kernels whose operands are ready, runs
 * the one that adds the fewest net bytes (its output minus the operand buffers it is the last reader of), breaking
 * ties by the graph's own depth-first order, so the result is deterministic.
 * @module
 */
import { InputError } from '../errors.js';
import { evalShape, type DimBindings } from '../ir/dim.js';
import { byteSize } from '../ir/dtype.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { launchesKernel } from '../ir/stats.js';

/**
 * Which buffer holds each value of a graph, and who reads it, under concrete dim bindings.
 * @internal
 */
export interface BufferAnalysis {
  /** Nodes that launch a kernel (and so own an activation buffer), in the graph's depth-first topological order. */
  readonly kernels: readonly Node[];
  /**
   * The node whose buffer holds each node's value: itself for kernels and leaves, the storage of its operand for a
   * `reshape` (followed through chains of reshapes).
   */
  readonly storage: ReadonlyMap<Node, Node>;
  /** Bytes (`numel * byteSize(dtype)`) of every node's value, views and leaves included. */
  readonly bytes: ReadonlyMap<Node, number>;
  /** For each kernel: the distinct kernels whose buffers it reads (directly or through views), in operand order. */
  readonly deps: ReadonlyMap<Node, readonly Node[]>;
  /** For each kernel: the distinct kernels that read its buffer (directly or through views). */
  readonly readers: ReadonlyMap<Node, readonly Node[]>;
  /** Kernels whose buffer holds a graph output (directly or through a view): live until the end. */
  readonly pinned: ReadonlySet<Node>;
}

/**
 * Rounds `bytes` up to a multiple of `alignment`.
 * @internal
 */
export function alignUp(bytes: number, alignment: number): number {
  return Math.ceil(bytes / alignment) * alignment;
}

/**
 * Bytes of one node's value: `numel * byteSize(dtype)`, symbolic dims evaluated with `bindings`.
 * @internal
 */
export function valueBytes(node: Node, bindings: DimBindings): number {
  return evalShape(node.shape, bindings).reduce((a, b) => a * b, 1) * byteSize(node.dtype);
}

/**
 * Works out the activation buffers of `graph`: which node's buffer holds each value, their sizes under `bindings`
 * (throws {@link InputError} naming an unbound symbolic dim), and the read dependencies between kernels.
 * @internal
 */
export function analyzeBuffers(graph: Graph, bindings: DimBindings): BufferAnalysis {
  const nodes = graph.nodes();
  const storage = new Map<Node, Node>();
  const bytes = new Map<Node, number>();
  const kernels: Node[] = [];
  const deps = new Map<Node, Node[]>();
  const readers = new Map<Node, Node[]>();
  for (const n of nodes) {
    bytes.set(n, valueBytes(n, bindings));
    if (n.op === 'reshape') {
      storage.set(n, storage.get(n.inputs[0])!);
      continue;
    }
    storage.set(n, n);
    if (!launchesKernel(n)) continue;
    kernels.push(n);
    readers.set(n, []);
    const d: Node[] = [];
    for (const x of n.inputs) {
      const s = storage.get(x)!;
      if (launchesKernel(s) && !d.includes(s)) d.push(s);
    }
    deps.set(n, d);
    for (const s of d) readers.get(s)!.push(n);
  }
  const pinned = new Set<Node>();
  for (const o of graph.outputNodes) {
    const s = storage.get(o)!;
    if (launchesKernel(s)) pinned.add(s);
  }
  return { kernels, storage, bytes, deps, readers, pinned };
}

/**
 * The kernels of `schedule` (non-kernel nodes are dropped), checked to be a valid run order for `analysis`: every
 * kernel exactly once, each after the kernels it reads. Throws {@link InputError} otherwise.
 * @internal
 */
export function normalizeSchedule(analysis: BufferAnalysis, schedule: readonly Node[]): Node[] {
  const order = schedule.filter((n) => launchesKernel(n));
  const step = new Map<Node, number>();
  order.forEach((n, i) => {
    if (!analysis.deps.has(n)) throw new InputError(`schedule: ${n.op}#${n.id} is not a kernel of this graph`);
    if (step.has(n)) throw new InputError(`schedule: ${n.op}#${n.id} appears twice`);
    step.set(n, i);
  });
  for (const k of analysis.kernels) if (!step.has(k)) throw new InputError(`schedule: kernel ${k.op}#${k.id} is missing`);
  for (const k of order)
    for (const d of analysis.deps.get(k)!)
      if (step.get(d)! > step.get(k)!) throw new InputError(`schedule: ${k.op}#${k.id} runs before its operand ${d.op}#${d.id}`);
  return order;
}

/**
 * The largest number of bytes live at once when kernels run in `order` (each buffer's size rounded up to
 * `alignment`): a buffer is live from its producer's step through its last reader's step, or to the end when it
 * holds a graph output. Every arena for this order needs at least this much.
 * @internal
 */
export function peakLiveBytes(analysis: BufferAnalysis, order: readonly Node[], alignment = 1): number {
  const step = new Map<Node, number>();
  order.forEach((n, i) => step.set(n, i));
  const delta = new Array<number>(order.length + 1).fill(0);
  for (const k of order) {
    const size = alignUp(analysis.bytes.get(k)!, alignment);
    const first = step.get(k)!;
    let last = first;
    if (analysis.pinned.has(k)) last = order.length - 1;
    else for (const r of analysis.readers.get(k)!) last = Math.max(last, step.get(r)!);
    delta[first] += size;
    delta[last + 1] -= size;
  }
  let live = 0;
  let peak = 0;
  for (let i = 0; i < order.length; i++) {
    live += delta[i];
    peak = Math.max(peak, live);
  }
  return peak;
}

/**
 * A kernel order for `graph` chosen to keep few bytes live: greedy list scheduling that, among the ready kernels,
 * runs the one with the smallest net allocation (its output buffer minus the operand buffers it frees by being
 * their last reader), ties broken by the graph's depth-first order. Sizes are evaluated with `bindings` and rounded
 * up to `alignment`. Deterministic.
 * @internal
 */
export function scheduleForMemory(graph: Graph, bindings: DimBindings, alignment = 1, analysis: BufferAnalysis = analyzeBuffers(graph, bindings)): Node[] {
  const rank = new Map<Node, number>();
  analysis.kernels.forEach((k, i) => rank.set(k, i));
  const size = (k: Node): number => alignUp(analysis.bytes.get(k)!, alignment);
  const waiting = new Map<Node, number>();
  const unread = new Map<Node, number>();
  const ready: Node[] = [];
  for (const k of analysis.kernels) {
    waiting.set(k, analysis.deps.get(k)!.length);
    unread.set(k, analysis.readers.get(k)!.length);
    if (analysis.deps.get(k)!.length === 0) ready.push(k);
  }
  const out: Node[] = [];
  while (ready.length) {
    let best = -1;
    let bestScore = Infinity;
    for (let i = 0; i < ready.length; i++) {
      const k = ready[i];
      let score = size(k);
      for (const d of analysis.deps.get(k)!) if (unread.get(d) === 1 && !analysis.pinned.has(d)) score -= size(d);
      if (score < bestScore || (score === bestScore && rank.get(k)! < rank.get(ready[best])!)) {
        best = i;
        bestScore = score;
      }
    }
    const k = ready[best];
    ready.splice(best, 1);
    out.push(k);
    for (const d of analysis.deps.get(k)!) unread.set(d, unread.get(d)! - 1);
    for (const r of analysis.readers.get(k)!) {
      const w = waiting.get(r)! - 1;
      waiting.set(r, w);
      if (w === 0) ready.push(r);
    }
  }
  return out;
}
