/**
 * Epilogue fusion: an anchor op (a matmul, a norm, softmax, attention, rope or concat) and the elementwise ops that
 * consume its result become one `fused {kind}` node whose program is the anchor op (after any view prologue, below)
 * followed by the epilogue, so codegen emits one kernel of that family (`kind`) with the epilogue applied to each
 * output element before it is stored.
 *
 * | anchor | kind | typical epilogue |
 * | --- | --- | --- |
 * | `matmul` | `matmul` | bias add, activation (gelu, silu, relu, …), residual add, scale multiply; the gated form below |
 * | `rmsnorm`, `layernorm` | same as the op | scale, cast |
 * | `softmax` | `softmax` | scale, cast |
 * | `attention` | `attention` | scale, cast |
 * | `rope`, `concat` | same as the op | (usually none: these take a view prologue) |
 *
 * **Epilogues.** Starting from the anchor, the region grows by consumers (smallest topological index first): an
 * elementwise op (of the target's `fusion.elementwiseOps`; without a target, `POINTWISE_OPS`) whose operands inside the region all
 * have its own shape (the kernel applies the epilogue per output element; operands from outside, such as a bias `[N]`
 * or the residual, may broadcast), and each of whose operands inside the region has no other user. The region kept
 * is the largest one reached in which every node but the last (the root) has all its users inside the region and is
 * not a graph output: an intermediate read twice, or returned, is materialized, so nothing past it is absorbed.
 *
 * **Gated epilogues.** On a `matmul` whose users are all slices of its last axis (what `merge-projections` makes of
 * SwiGLU's w1/w3 or GeGLU's gate/up), the slices may join the region too, so
 * `act(slice(mm, 0:H)) * slice(mm, H:2H)` becomes `fused {kind: 'matmul'}` with steps
 * `[matmul, slice, act, slice, mul]`; codegen recognizes the pair of slices as the gate and up halves.
 *
 * **View prologues.** Slices with positive steps (and reshapes around them) that feed an anchor and have no other
 * user are affine index maps the anchor's kernel can fold into how it reads the operand, so they go into its program
 * as leading steps: the q/k/v slices of a merged QKV projection become part of the `rope`, `concat` (KV cache) or
 * `attention` reading them. A prologue of reshapes only is not taken (a reshape launches nothing anyway), and neither
 * are elementwise prologues. To make that possible, the pass first applies {@link splitHeadsBeforeSliceRule}
 * (`reshape(slice(qkv))` → `slice(reshape(qkv))` when the reshape splits heads off the last axis), because nodes
 * whose attributes mention symbolic dims (a reshape to `[1, seq, H, D]`, a slice ending at `seq - 1`) are never
 * put inside a fused program (see {@link hasSymbolicAttrs}).
 *
 * Run it after `merge-projections` and before `fuse-elementwise`.
 * @module
 */
import { shapeEquals } from '../ir/dim.js';
import type { Graph } from '../ir/graph.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { POINTWISE_OPS } from '../ir/ops.js';
import { applyFusionRegions, buildFusedNode, hasSymbolicAttrs, type FusionRegion } from './fuse-elementwise.js';
import { countMatches, describeNodes, type Pass } from './pass.js';
import { rewriteGraph, type RewriteRule } from './rewrite.js';

/**
 * Anchor op to the kernel family (`kind`) of the fused node built around it.
 * @internal
 */
export const EPILOGUE_ANCHORS: Readonly<Record<string, string>> = Object.freeze({
  matmul: 'matmul',
  rmsnorm: 'rmsnorm',
  layernorm: 'layernorm',
  softmax: 'softmax',
  attention: 'attention',
  rope: 'rope',
  concat: 'concat',
});

/** Most consumers one region tries to absorb (a bound on the work per anchor; real epilogues are a handful of ops). */
const MAX_EPILOGUE_STEPS = 64;

/** A slice of the last axis only, with step 1 and static bounds. */
function isLastAxisSlice(n: Node): boolean {
  if (!isOp(n, 'slice')) return false;
  const { axes, steps, starts, ends } = n.attrs;
  return axes.length === 1 && axes[0] === n.rank - 1 && steps[0] === 1 && typeof starts[0] === 'number' && typeof ends[0] === 'number';
}

/** A node a kernel can read through as an affine view: a reshape, or a slice with positive steps (static attributes). */
function isView(n: Node): boolean {
  if (hasSymbolicAttrs(n)) return false;
  if (n.op === 'reshape') return true;
  return isOp(n, 'slice') && n.attrs.steps.every((s) => s > 0);
}

/**
 * `reshape(x[..., a:b], [..., H, D]) → reshape(x, [..., N/D, D])[..., a/D:b/D, :]` when the reshape only splits the
 * last axis and `D` divides `a`, `b` and `N`: the heads of a merged QKV output are sliced after the (free) reshape,
 * so the slice carries static bounds and can join the kernel reading it, while the reshape, whose shape mentions
 * `seq`, stays outside as a view.
 * @internal
 */
export const splitHeadsBeforeSliceRule: RewriteRule = {
  name: 'split-heads-before-slice',
  root: 'reshape',
  apply: ({ node }, ctx) => {
    const s = node.inputs[0];
    if (!isLastAxisSlice(s) || ctx.useCount(s) !== 1 || ctx.isOutput(s)) return undefined;
    const x = s.inputs[0];
    const r = x.rank;
    if (node.rank !== r + 1 || !s.shape.slice(0, -1).every((d, i) => d === node.shape[i])) return undefined;
    const d = node.shape[r];
    const n = x.shape[r - 1];
    const start = attrsOf(s, 'slice').starts[0] as number; // static: isLastAxisSlice
    const end = attrsOf(s, 'slice').ends[0] as number;
    if (typeof d !== 'number' || typeof n !== 'number' || d === 0 || n % d !== 0 || start % d !== 0 || end % d !== 0) return undefined;
    const heads = makeNode('reshape', [x], { shape: [...x.shape.slice(0, -1), n / d, d] });
    return makeNode('slice', [heads], { axes: [r - 1], starts: [start / d], ends: [end / d], steps: [1] });
  },
};

/** What region growth needs to know about the graph. */
interface GraphFacts {
  readonly users: Map<Node, Node[]>;
  readonly outputs: ReadonlySet<Node>;
  readonly order: Map<Node, number>;
  readonly claimed: Set<Node>;
  /** Ops that may join as epilogue steps. */
  readonly elementwise: ReadonlySet<string>;
  /** Whether the target computes a candidate fused node (absent: every region is taken). */
  readonly accepts?: (fused: Node) => boolean;
}

/** The view prologue of each operand of `anchor` (see the module comment). */
function prologue(anchor: Node, g: GraphFacts): Node[] {
  const out: Node[] = [];
  for (const first of new Set(anchor.inputs)) {
    const chain: Node[] = [];
    let x = first;
    let user = anchor;
    while (isView(x) && !g.claimed.has(x) && !g.outputs.has(x)) {
      const us = g.users.get(x) ?? [];
      if (us.length !== 1 || us[0] !== user) break;
      chain.push(x);
      user = x;
      x = x.inputs[0];
    }
    let deepestSlice = -1;
    chain.forEach((n, i) => {
      if (n.op === 'slice') deepestSlice = i;
    });
    out.push(...chain.slice(0, deepestSlice + 1));
  }
  return out;
}

/** The region around `anchor`, or `undefined` when nothing joins it. */
function anchorRegion(anchor: Node, kind: string, g: GraphFacts, prologues: boolean): FusionRegion | undefined {
  const region = new Set<Node>([anchor, ...(prologues ? prologue(anchor, g) : [])]);
  const usersOf = (n: Node): Node[] => g.users.get(n) ?? [];
  const gated = anchor.op === 'matmul' && usersOf(anchor).length > 1 && usersOf(anchor).every(isLastAxisSlice);
  const absorbable = (u: Node): boolean => {
    if (g.claimed.has(u) || hasSymbolicAttrs(u)) return false;
    // single-user rule: a region value read by anything else must be materialized (the gated anchor's slices aside)
    if (g.elementwise.has(u.op)) return u.inputs.every((x) => !region.has(x) || (shapeEquals(x.shape, u.shape) && usersOf(x).length === 1));
    return gated && u.op === 'slice' && u.inputs[0] === anchor;
  };
  const escapes = (n: Node): boolean => g.outputs.has(n) || usersOf(n).some((u) => !region.has(u));
  // a candidate region is kept only when the target has a kernel computing it as one fused node
  const accepted = (r: Set<Node>): boolean => {
    if (!g.accepts) return true;
    const nodes = [...r].sort((a, b) => g.order.get(a)! - g.order.get(b)!);
    const fused = buildFusedNode({ kind, nodes, root: nodes[nodes.length - 1] });
    return fused !== undefined && g.accepts(fused);
  };
  let best: Set<Node> | undefined = region.size > 1 && accepted(region) ? new Set(region) : undefined;
  for (let step = 0; step < MAX_EPILOGUE_STEPS; step++) {
    let pick: Node | undefined;
    let pinned = 0; // nodes with a user that can never join: each must be the root
    for (const n of region) {
      let stuck = g.outputs.has(n);
      for (const u of usersOf(n)) {
        if (region.has(u)) continue;
        if (!absorbable(u)) stuck = true;
        else if (!pick || g.order.get(u)! < g.order.get(pick)!) pick = u;
      }
      if (stuck) pinned++;
    }
    if (!pick || pinned > 1) break;
    region.add(pick);
    if ([...region].filter(escapes).length === 1 && accepted(region)) best = new Set(region);
  }
  if (!best) return undefined;
  const nodes = [...best].sort((a, b) => g.order.get(a)! - g.order.get(b)!);
  return { kind, nodes, root: nodes[nodes.length - 1] };
}

/**
 * Which anchors and prologues {@link epilogueRegions} uses. A target narrows them to the forms its kernels implement
 * (the pass takes them from `PassContext.target`'s fusion patterns).
 * @internal
 */
export interface EpilogueFusionOptions {
  /** Anchor ops to fuse around (default: every key of {@link EPILOGUE_ANCHORS}). */
  readonly anchors?: readonly string[];
  /** Whether slice-view prologues join their anchor (default true), or the anchor ops whose operands take them. */
  readonly prologues?: boolean | readonly string[];
  /** Ops that may join as epilogue steps (default {@link POINTWISE_OPS}). */
  readonly elementwiseOps?: ReadonlySet<string>;
  /** Whether a candidate fused node is computed by one kernel (default: every region is). */
  readonly accepts?: (fused: Node) => boolean;
}

/**
 * The epilogue (and view-prologue) regions of `graph`, anchors taken in topological order, regions disjoint.
 * @internal
 */
export function epilogueRegions(graph: Graph, opts: EpilogueFusionOptions = {}): FusionRegion[] {
  const anchors = new Set(opts.anchors ?? Object.keys(EPILOGUE_ANCHORS));
  const nodes = graph.nodes();
  const g: GraphFacts = { users: graph.users(), outputs: new Set(graph.outputNodes), order: new Map(), claimed: new Set(), elementwise: opts.elementwiseOps ?? POINTWISE_OPS, accepts: opts.accepts };
  nodes.forEach((n, i) => g.order.set(n, i));
  const regions: FusionRegion[] = [];
  for (const n of nodes) {
    const kind = Object.prototype.hasOwnProperty.call(EPILOGUE_ANCHORS, n.op) && anchors.has(n.op) ? EPILOGUE_ANCHORS[n.op] : undefined;
    if (kind === undefined || g.claimed.has(n)) continue;
    const prologues = opts.prologues ?? true;
    const region = anchorRegion(n, kind, g, typeof prologues === 'boolean' ? prologues : prologues.includes(n.op));
    if (!region) continue;
    regions.push(region);
    for (const x of region.nodes) g.claimed.add(x);
  }
  return regions;
}

/** The `fuse-epilogues` pass. */
export const fuseEpiloguesPass: Pass = {
  name: 'fuse-epilogues',
  description: 'fuse matmuls, norms, softmax, attention, rope and concat with their elementwise epilogues (and slice-view prologues)',
  run(input, ctx) {
    const prepared = rewriteGraph(input, [splitHeadsBeforeSliceRule], { options: ctx.options });
    countMatches(ctx, prepared.matches);
    const swapped = prepared.matches['split-heads-before-slice'] ?? 0;
    if (swapped)
      ctx.report.add({
        pass: 'fuse-epilogues',
        kind: 'layout',
        message: `moved ${swapped} slice${swapped === 1 ? '' : 's'} after the reshape splitting their heads (static bounds, so they can join their reader)`,
      });
    const graph = prepared.graph;
    // a target narrows the forms to what its kernels implement; without one (the CPU backend) every form is taken
    const f = ctx.target?.fusion;
    const opts: EpilogueFusionOptions = f ? { anchors: f.epilogueAnchors, prologues: f.prologueAnchors, elementwiseOps: f.elementwiseOps, accepts: (n) => f.accepts(n) } : {};
    const regions = epilogueRegions(graph, opts);
    if (regions.length === 0) return graph;
    const out = applyFusionRegions(graph, regions);
    const byKind = new Map<string, FusionRegion[]>();
    for (const r of regions) byKind.set(r.kind, [...(byKind.get(r.kind) ?? []), r]);
    const counts: Record<string, number> = {};
    for (const [kind, rs] of byKind) {
      counts[`fuse-epilogue:${kind}`] = rs.length;
      const absorbed = rs.reduce((acc, r) => acc + r.nodes.length - 1, 0);
      ctx.report.add({
        pass: 'fuse-epilogues',
        kind: 'fused',
        message: `${kind}: ${rs.length} kernel${rs.length === 1 ? '' : 's'} absorbed ${absorbed} neighbouring op${absorbed === 1 ? '' : 's'}`,
        nodes: describeNodes(rs.map((r) => r.root)),
      });
    }
    countMatches(ctx, counts);
    return out;
  },
};
