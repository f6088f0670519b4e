/**
 * Elementwise fusion: every maximal tree of elementwise ops (unary, binary, comparisons, `where`, `cast`: the target's
 * `fusion.elementwiseOps`, or `POINTWISE_OPS` without a target) becomes one `fused {kind: 'elementwise'}` node, so one
 * kernel computes it.
 *
 * An elementwise op is absorbed into its user when
 * - it has exactly one user and is not a graph output (a value read twice, or returned, must be materialized);
 * - that user is itself an elementwise op of the same shape (an elementwise kernel computes every fused op at the
 *   output's index, so a value its user broadcasts, such as a per-row `rsqrt(mean(x²))`, is loaded, not recomputed).
 *
 * Splat constants go inside the program as `constant` steps; every other operand is an operand of the fused node. A
 * tree of a single op stays as it is (a one-step fused node would change nothing). Run it after
 * `fuse-epilogues`, so that elementwise ops next to a matmul, norm or attention go into that kernel first.
 *
 * The module also holds what both fusion passes share: {@link FusionRegion}, {@link buildFusedNode} and
 * {@link applyFusionRegions} (rebuild the graph with each region replaced by its fused node).
 * @module
 */
import { VerifyError } from '../errors.js';
import { shapeEquals, SymDim } from '../ir/dim.js';
import type { Graph, GraphOutput } from '../ir/graph.js';
import { makeNode, withInputs, type AttrValue, type Node } from '../ir/node.js';
import { POINTWISE_OPS, type FusedStep } from '../ir/ops.js';
import { printNodeContext } from '../ir/printer.js';
import { countMatches, describeNodes, type Pass } from './pass.js';
import { isSplatConstant } from './pattern.js';

/**
 * A set of nodes that one fused node will compute. Every node but `root` has all its users inside the region and is
 * not a graph output, so replacing `root` by the fused node removes the others (and cannot create a cycle).
 * @internal
 */
export interface FusionRegion {
  /** The kernel family (`elementwise`, `matmul`, `rmsnorm`, …): the fused node's `kind`. */
  readonly kind: string;
  /** The region's nodes in topological order; the last one is `root`. */
  readonly nodes: readonly Node[];
  /** The node whose value the fused node computes. */
  readonly root: Node;
}

/** Whether an attribute value mentions a symbolic dim. */
function mentionsSymbol(v: AttrValue): boolean {
  if (v instanceof SymDim) return true;
  if (Array.isArray(v)) return v.some(mentionsSymbol);
  if (v !== null && typeof v === 'object') return Object.values(v as { readonly [key: string]: AttrValue }).some(mentionsSymbol);
  return false;
}

/**
 * Whether a node's attributes mention a symbolic dim (a reshape to `[1, seq, 8, 8]`, a slice ending at `past`). Such
 * a node is never put inside a fused program: the CPU interpreter re-infers a fused program's step types from the
 * concrete operand shapes, against which symbolic attributes no longer type-check.
 * @internal
 */
export function hasSymbolicAttrs(node: Node): boolean {
  return Object.values(node.attrs).some(mentionsSymbol);
}

/**
 * Whether `node` is an op an elementwise kernel computes (`ops`: the target's `fusion.elementwiseOps`).
 * @internal
 */
export function isElementwiseKernelOp(node: Node, ops: ReadonlySet<string> = POINTWISE_OPS): boolean {
  return ops.has(node.op);
}

/**
 * Builds the fused node computing `region`: one step per region node (in order), splat constants read by the region
 * inlined as `constant` steps, and every other value the region reads as an operand, through `operand` (which maps a
 * node of the graph being rewritten to its rewritten version). Returns `undefined` when the region reads no operand
 * at all (a `fused` node needs one; such a region is a constant and belongs to constant folding).
 * @internal
 */
export function buildFusedNode(region: FusionRegion, operand: (n: Node) => Node = (n) => n): Node | undefined {
  const inRegion = new Set(region.nodes);
  const stepOf = new Map<Node, number>();
  const operandIndex = new Map<Node, number>();
  const operands: Node[] = [];
  const steps: FusedStep[] = [];
  const ref = (x: Node): number => {
    const j = stepOf.get(x);
    if (j !== undefined) return -(j + 1);
    if (!inRegion.has(x) && isSplatConstant(x)) {
      steps.push({ op: 'constant', args: [], attrs: x.attrs });
      stepOf.set(x, steps.length - 1);
      return -steps.length;
    }
    if (inRegion.has(x)) throw new VerifyError(`fusion region of kind '${region.kind}' is not in topological order at:\n${printNodeContext(x)}`);
    let k = operandIndex.get(x);
    if (k === undefined) {
      k = operands.length;
      operands.push(x);
      operandIndex.set(x, k);
    }
    return k;
  };
  for (const n of region.nodes) {
    const args = n.inputs.map(ref);
    steps.push({ op: n.op, args, attrs: n.attrs });
    stepOf.set(n, steps.length - 1);
  }
  if (operands.length === 0) return undefined;
  return makeNode('fused', operands.map(operand), { kind: region.kind, steps });
}

/**
 * Rebuilds `graph` bottom-up with the root of every region replaced by its fused node (built on the rewritten
 * operands); the other nodes of a region disappear with it. Regions must be disjoint and satisfy the
 * {@link FusionRegion} invariant. Throws {@link VerifyError} when a fused node's type differs from its root's.
 * @internal
 */
export function applyFusionRegions(graph: Graph, regions: readonly FusionRegion[]): Graph {
  if (regions.length === 0) return graph;
  const byRoot = new Map<Node, FusionRegion>();
  const interior = new Set<Node>();
  for (const r of regions) {
    byRoot.set(r.root, r);
    for (const n of r.nodes) if (n !== r.root) interior.add(n);
  }
  const memo = new Map<Node, Node>();
  const get = (x: Node): Node => {
    const y = memo.get(x);
    if (!y) throw new VerifyError(`fusion: node read outside its region:\n${printNodeContext(x)}`);
    return y;
  };
  for (const old of graph.nodes()) {
    if (interior.has(old)) continue;
    const region = byRoot.get(old);
    let node: Node;
    if (region) {
      const fused = buildFusedNode(region, get);
      if (!fused) throw new VerifyError(`fusion region of kind '${region.kind}' reads no operand:\n${printNodeContext(old)}`);
      if (fused.dtype !== old.dtype || !shapeEquals(fused.shape, old.shape))
        throw new VerifyError(`fused node ${fused.typeString()} replaces a ${old.typeString()} node:\n${printNodeContext(old)}`);
      node = fused;
    } else node = old.inputs.length ? withInputs(old, old.inputs.map(get)) : old;
    memo.set(old, node);
  }
  const outputs: GraphOutput[] = graph.outputs.map((o) => ({ name: o.name, node: get(o.node) }));
  return graph.withOutputs(outputs);
}

/**
 * The maximal elementwise trees of `graph` (see the module comment), each with at least two ops. Nodes in `exclude`
 * are neither absorbed nor used as roots.
 * @internal
 */
export function elementwiseRegions(graph: Graph, exclude: ReadonlySet<Node> = new Set(), ops: ReadonlySet<string> = POINTWISE_OPS): FusionRegion[] {
  const nodes = graph.nodes();
  const users = graph.users();
  const outputs = new Set(graph.outputNodes);
  const order = new Map<Node, number>();
  nodes.forEach((n, i) => order.set(n, i));
  const fusable = (n: Node): boolean => isElementwiseKernelOp(n, ops) && !exclude.has(n) && !hasSymbolicAttrs(n);
  const absorbed = (n: Node): boolean => {
    if (!fusable(n) || outputs.has(n)) return false;
    const us = users.get(n) ?? [];
    return us.length === 1 && fusable(us[0]) && shapeEquals(n.shape, us[0].shape);
  };
  const regions: FusionRegion[] = [];
  for (const root of nodes) {
    if (!fusable(root) || absorbed(root)) continue;
    const members = new Set<Node>([root]);
    const stack = [root];
    while (stack.length) {
      const n = stack.pop()!;
      for (const x of n.inputs)
        if (!members.has(x) && absorbed(x)) {
          members.add(x);
          stack.push(x);
        }
    }
    if (members.size < 2) continue;
    const region: FusionRegion = { kind: 'elementwise', nodes: [...members].sort((a, b) => order.get(a)! - order.get(b)!), root };
    if (!buildFusedNode(region)) continue;
    regions.push(region);
  }
  return regions;
}

/** The `fuse-elementwise` pass. */
export const fuseElementwisePass: Pass = {
  name: 'fuse-elementwise',
  description: 'fuse maximal trees of elementwise ops (intermediates with one user) into fused elementwise kernels',
  run(graph, ctx) {
    const regions = elementwiseRegions(graph, new Set(), ctx.target?.fusion.elementwiseOps);
    if (regions.length === 0) return graph;
    const out = applyFusionRegions(graph, regions);
    const ops = regions.reduce((acc, r) => acc + r.nodes.length, 0);
    countMatches(ctx, { 'fuse-elementwise': regions.length });
    ctx.report.add({
      pass: 'fuse-elementwise',
      kind: 'fused',
      message: `fused ${ops} elementwise ops into ${regions.length} kernel${regions.length === 1 ? '' : 's'} (${ops - regions.length} launches saved)`,
      nodes: describeNodes(regions.map((r) => r.root)),
    });
    return out;
  },
};
