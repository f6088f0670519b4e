/**
 * Projection merging: matmuls that read the same activation `A` (with the same `transA`/`transB`) and multiply it by
 * different dense f32 weights — Llama's wq/wk/wv, SwiGLU's w1/w3 — become ONE matmul over a weight concatenated at
 * compile time, followed by slices of its last axis that replace the original results:
 *
 * ```text
 * q = matmul(h, wq, transB)       qkv = matmul(h, concat(wq, wk, wv), transB)
 * k = matmul(h, wk, transB)  ->   q = qkv[..., 0:64]   k = qkv[..., 64:96]   v = qkv[..., 96:128]
 * v = matmul(h, wv, transB)
 * ```
 *
 * With `transB` the weights are `[N_i, K]` and are stacked along their first axis; without it they are `[K, N_i]` and
 * are joined along their last. When branches are followed by the add of a 1-D dense f32 bias `[N_i]` (its only
 * user; the bias used nowhere else), the biases are concatenated too (zeros for a branch without one, such as a value
 * projection given a bias alone) and the slices replace the adds.
 *
 * What is not merged:
 * - matmuls whose B operand is not a `weight` (activations are not known at compile time), or is a rank ≠ 2, non-f32
 *   or encoded (quantized, codebook, sparse) weight: concatenating those would decode them;
 * - a branch whose weight is also used elsewhere (or is a graph output): merging would keep both copies alive. Such
 *   branches are left out of their group and reported;
 * - groups left with fewer than two branches.
 *
 * The merged weights are new store entries; the old ones become unreferenced and `dce` drops them. The numbers do
 * not change: each output column of the merged matmul is the same dot product as before.
 * @module
 */
import { shapeEquals } from '../ir/dim.js';
import type { Graph } from '../ir/graph.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { WeightStore, type WeightEntry } from '../ir/weights.js';
import { countMatches, describeNodes, type Pass } from './pass.js';
import { rewriteGraph, type RewriteRule } from './rewrite.js';

/**
 * One projection in a {@link ProjectionGroup}.
 * @internal
 */
export interface ProjectionBranch {
  /** The matmul. */
  readonly matmul: Node;
  /** Its weight operand. */
  readonly weight: Node;
  /** The bias add following it, when the group merges biases and this branch has one. */
  readonly biasAdd?: Node;
  /** The bias weight, when the group merges biases and this branch has one. */
  readonly bias?: Node;
  /** Output columns (`N_i`). */
  readonly columns: number;
  /** First column of this branch in the merged output. */
  readonly offset: number;
}

/**
 * Matmuls sharing an A operand that {@link mergeProjectionsPass} merges into one.
 * @internal
 */
export interface ProjectionGroup {
  /** The shared A operand. */
  readonly a: Node;
  /** The shared `transA`. */
  readonly transA: boolean;
  /** The shared `transB`. */
  readonly transB: boolean;
  /** The branches, in topological order of their matmuls. */
  readonly branches: readonly ProjectionBranch[];
  /** Whether the biases are merged too. */
  readonly withBias: boolean;
}

/**
 * Result of {@link findProjectionGroups}.
 * @internal
 */
export interface ProjectionPlan {
  /** Groups to merge. */
  readonly groups: readonly ProjectionGroup[];
  /** Matmuls that would have joined a group but whose weight is used elsewhere (merging would duplicate it). */
  readonly sharedWeightSkipped: readonly Node[];
}

/** A dense f32 rank-`rank` weight entry of the graph, or `undefined`. */
function denseF32(graph: Graph, n: Node, rank: number): WeightEntry | undefined {
  if (!isOp(n, 'weight') || n.dtype !== 'f32' || n.rank !== rank) return undefined;
  const e = graph.weights.get(n.attrs.id);
  return e.encoding.kind === 'dense' && e.data.values instanceof Float32Array ? e : undefined;
}

/**
 * Finds the groups of projections to merge (see the module comment for the rules).
 * @internal
 */
export function findProjectionGroups(graph: Graph): ProjectionPlan {
  const users = graph.users();
  const outputs = new Set(graph.outputNodes);
  const onlyUsedBy = (x: Node, user: Node): boolean => !outputs.has(x) && (users.get(x) ?? []).every((u) => u === user);
  const byKey = new Map<string, { a: Node; transA: boolean; transB: boolean; mms: Node[]; shared: Node[] }>();
  for (const n of graph.nodes()) {
    if (n.op !== 'matmul' || n.dtype !== 'f32') continue;
    const [a, w] = n.inputs;
    if (!denseF32(graph, w, 2)) continue;
    const { transA, transB } = attrsOf(n, 'matmul');
    // W8A8 matmuls merge only with matmuls quantizing their A the same way
    const key = `${a.id}:${transA}:${transB}:${JSON.stringify(attrsOf(n, 'matmul').actQuant ?? null)}`;
    let entry = byKey.get(key);
    if (!entry) byKey.set(key, (entry = { a, transA, transB, mms: [], shared: [] }));
    (onlyUsedBy(w, n) ? entry.mms : entry.shared).push(n);
  }
  const groups: ProjectionGroup[] = [];
  const skipped: Node[] = [];
  for (const { a, transA, transB, mms, shared } of byKey.values()) {
    // a matmul left out for its shared weight is worth reporting when it would have joined a group
    if (mms.length + shared.length >= 2) skipped.push(...shared);
    if (mms.length < 2) continue;
    const biasOf = (mm: Node): { add: Node; bias: Node } | undefined => {
      const us = users.get(mm) ?? [];
      if (outputs.has(mm) || us.length !== 1 || us[0].op !== 'add') return undefined;
      const add = us[0];
      const bias = add.inputs[0] === mm ? add.inputs[1] : add.inputs[0];
      if (bias === mm || !denseF32(graph, bias, 1) || bias.shape[0] !== mm.shape[mm.rank - 1]) return undefined;
      if (!shapeEquals(add.shape, mm.shape)) return undefined;
      return onlyUsedBy(bias, add) ? { add, bias } : undefined;
    };
    const biases = mms.map(biasOf);
    const given = biases.filter((b) => b !== undefined);
    const withBias = given.length > 0 && new Set(given.map((b) => b.bias)).size === given.length;
    let offset = 0;
    const branches = mms.map((mm, i): ProjectionBranch => {
      const w = mm.inputs[1];
      const columns = (transB ? w.shape[0] : w.shape[1]) as number;
      const b: ProjectionBranch = { matmul: mm, weight: w, columns, offset, ...(withBias && biases[i] ? { biasAdd: biases[i].add, bias: biases[i].bias } : {}) };
      offset += columns;
      return b;
    });
    groups.push({ a, transA, transB, branches, withBias });
  }
  return { groups, sharedWeightSkipped: skipped };
}

/** The concatenated weight of a group: `[ΣN, K]` with `transB`, `[K, ΣN]` without. */
function mergedWeight(graph: Graph, g: ProjectionGroup): WeightEntry {
  const parts = g.branches.map((b) => graph.weights.get(attrsOf(b.weight, 'weight').id));
  const total = g.branches.reduce((acc, b) => acc + b.columns, 0);
  const name = `merged(${parts.map((p) => p.name).join(',')})`;
  if (g.transB) {
    const k = parts[0].shape[1];
    const values = new Float32Array(total * k);
    let at = 0;
    for (const p of parts) {
      values.set((p.data.values as Float32Array).subarray(0, p.shape[0] * k), at);
      at += p.shape[0] * k;
    }
    return WeightStore.entry(name, 'f32', [total, k], { values });
  }
  const k = parts[0].shape[0];
  const values = new Float32Array(k * total);
  g.branches.forEach((b, i) => {
    const src = parts[i].data.values as Float32Array;
    for (let r = 0; r < k; r++) values.set(src.subarray(r * b.columns, (r + 1) * b.columns), r * total + b.offset);
  });
  return WeightStore.entry(name, 'f32', [k, total], { values });
}

/** The concatenated bias of a group (zeros where a branch has none). */
function mergedBias(graph: Graph, g: ProjectionGroup): WeightEntry {
  const total = g.branches.reduce((acc, b) => acc + b.columns, 0);
  const values = new Float32Array(total);
  const names: string[] = [];
  for (const b of g.branches) {
    if (!b.bias) continue;
    const part = graph.weights.get(attrsOf(b.bias, 'weight').id);
    values.set((part.data.values as Float32Array).subarray(0, b.columns), b.offset);
    names.push(part.name);
  }
  return WeightStore.entry(`merged(${names.join(',')})`, 'f32', [total], { values });
}

/** How to rebuild one branch: keyed by its weight's id (each planned weight has exactly one user). */
interface BranchPlan {
  readonly group: ProjectionGroup;
  readonly branch: ProjectionBranch;
  readonly weight: WeightEntry;
  readonly bias?: WeightEntry;
}

/** `x[..., start:start+n]`. */
function lastAxisSlice(x: Node, start: number, n: number): Node {
  return makeNode('slice', [x], { axes: [x.rank - 1], starts: [start], ends: [start + n], steps: [1] });
}

/** The `merge-projections` pass. */
export const mergeProjectionsPass: Pass = {
  name: 'merge-projections',
  description: 'merge matmuls that share their A operand (q/k/v, gate/up) into one matmul over a concatenated weight, plus slices',
  run(graph, ctx) {
    const plan = findProjectionGroups(graph);
    const skipped = plan.sharedWeightSkipped;
    if (skipped.length) {
      const names = skipped.map((n) => attrsOf(n.inputs[1], 'weight').name).join(', ');
      ctx.report.add({
        pass: 'merge-projections',
        kind: 'info',
        message: `left out ${skipped.length} projection${skipped.length === 1 ? '' : 's'} whose weight is used elsewhere (merging would store it twice): ${names}`,
        nodes: describeNodes(skipped),
      });
    }
    if (plan.groups.length === 0) return graph;
    const byWeight = new Map<string, BranchPlan>();
    for (const group of plan.groups) {
      const weight = mergedWeight(graph, group);
      const bias = group.withBias ? mergedBias(graph, group) : undefined;
      for (const branch of group.branches) byWeight.set(attrsOf(branch.weight, 'weight').id, { group, branch, weight, ...(bias ? { bias } : {}) });
    }
    const planFor = (mm: Node): BranchPlan | undefined => {
      if (mm.op !== 'matmul' || !isOp(mm.inputs[1], 'weight')) return undefined;
      const p = byWeight.get(mm.inputs[1].attrs.id);
      return p && mm.attrs.transA === p.group.transA && mm.attrs.transB === p.group.transB ? p : undefined;
    };
    const rules: RewriteRule[] = [
      {
        name: 'merge-projection',
        root: 'matmul',
        apply: ({ node }, rc) => {
          const p = planFor(node);
          if (!p || p.branch.bias) return undefined;
          const mm = makeNode('matmul', [node.inputs[0], rc.addWeight(p.weight)], node.attrs);
          // in a group with biases, a branch without one reads the same biased matmul (its columns of the bias are 0)
          const merged = p.bias ? makeNode('add', [mm, rc.addWeight(p.bias)]) : mm;
          return lastAxisSlice(merged, p.branch.offset, p.branch.columns);
        },
      },
      {
        name: 'merge-biased-projection',
        root: 'add',
        apply: ({ node }, rc) => {
          const mm = node.inputs.find((x) => planFor(x)?.bias !== undefined);
          if (!mm) return undefined;
          const p = planFor(mm)!;
          const bias = node.inputs[0] === mm ? node.inputs[1] : node.inputs[0];
          if (bias !== p.branch.bias) return undefined;
          const merged = makeNode('add', [makeNode('matmul', [mm.inputs[0], rc.addWeight(p.weight)], mm.attrs), rc.addWeight(p.bias!)]);
          return lastAxisSlice(merged, p.branch.offset, p.branch.columns);
        },
      },
    ];
    const r = rewriteGraph(graph, rules, { options: ctx.options });
    countMatches(ctx, r.matches);
    for (const g of plan.groups) {
      const names = g.branches.map((b) => attrsOf(b.weight, 'weight').name);
      const total = g.branches.reduce((acc, b) => acc + b.columns, 0);
      ctx.report.add({
        pass: 'merge-projections',
        kind: 'fused',
        message: `merged ${g.branches.length} projections (${names.join(', ')}${g.withBias ? ', with biases' : ''}) into one matmul of ${total} columns`,
        nodes: names,
      });
    }
    return r.graph;
  },
};
