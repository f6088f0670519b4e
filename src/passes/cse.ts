/**
 * Common-subexpression elimination. Most of it is free: nodes are interned, so two structurally equal computations
 * are already one node, and commutative operands are put in canonical order when a node is built. Constants are
 * nodes too (their values are attributes), so equal constants are already one node.
 *
 * What interning cannot see is weights with equal content under different ids (a tied embedding stored twice, the
 * all-ones RMSNorm scales of a freshly initialized model). This pass hashes the payload of every weight the graph
 * references and points duplicates (same dtype, shape, encoding and bytes) at one entry; nodes above them then
 * become equal and intern together as the graph is rebuilt. The dropped entries are left for `dce`.
 * @module
 */
import { attrsOf, isOp } from '../ir/attrs.js';
import { attrKey, type Node } from '../ir/node.js';
import type { WeightArray, WeightEntry } from '../ir/weights.js';
import { countMatches, describeNodes, type Pass } from './pass.js';
import { rewriteGraph, type RewriteRule } from './rewrite.js';

function bytesOf(a: WeightArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** FNV-1a over the bytes of an array. */
function hashBytes(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Everything but the payload bytes: dtype, shape, encoding and the layout of the buffers. */
function headerKey(e: WeightEntry): string {
  const buffers = Object.keys(e.data)
    .sort()
    .map((k) => `${k}:${e.data[k].constructor.name}:${e.data[k].length}`);
  return `${e.dtype}[${e.shape.join(',')}]${attrKey(e.encoding)}{${buffers.join(',')}}`;
}

function sameContent(a: WeightEntry, b: WeightEntry): boolean {
  return Object.keys(a.data).every((k) => sameBytes(bytesOf(a.data[k]), bytesOf(b.data[k])));
}

/**
 * For each weight node whose entry duplicates an earlier one (in topological order), the node of that earlier entry.
 * Payloads are only hashed when two entries share a header, and hash-equal ones are compared byte for byte.
 * @internal
 */
export function duplicateWeights(nodes: readonly Node[], entryOf: (n: Node) => WeightEntry): Map<Node, Node> {
  const byHeader = new Map<string, Node[]>();
  for (const n of nodes) {
    if (!isOp(n, 'weight')) continue;
    const key = headerKey(entryOf(n));
    const list = byHeader.get(key);
    if (list) list.push(n);
    else byHeader.set(key, [n]);
  }
  const replace = new Map<Node, Node>();
  for (const group of byHeader.values()) {
    if (group.length < 2) continue;
    const byHash = new Map<string, Node[]>();
    for (const n of group) {
      const e = entryOf(n);
      const h = Object.keys(e.data)
        .sort()
        .map((k) => hashBytes(bytesOf(e.data[k])))
        .join(',');
      const kept = byHash.get(h) ?? [];
      const canon = kept.find((k) => sameContent(entryOf(k), e));
      if (canon) replace.set(n, canon);
      else byHash.set(h, [...kept, n]);
    }
  }
  return replace;
}

/** The `cse` pass: merges weights with identical content (everything else is CSE'd by interning). */
export const csePass: Pass = {
  name: 'cse',
  description: 'merge weights with identical content (structurally equal nodes are already one node by interning)',
  run(graph, ctx) {
    const replace = duplicateWeights(graph.nodes(), (n) => graph.weights.get(attrsOf(n, 'weight').id));
    if (replace.size === 0) return graph;
    const rule: RewriteRule = {
      name: 'merge-duplicate-weight',
      root: 'weight',
      apply: ({ node }) => replace.get(node),
    };
    const r = rewriteGraph(graph, [rule], { options: ctx.options });
    countMatches(ctx, r.matches);
    const merged = [...replace.keys()];
    const pairs = merged.map((n) => `${attrsOf(n, 'weight').name} = ${attrsOf(replace.get(n)!, 'weight').name}`);
    const shown = pairs.length > 8 ? [...pairs.slice(0, 8), `… ${pairs.length - 8} more`] : pairs;
    ctx.report.add({
      pass: 'cse',
      kind: 'removed',
      message: `merged ${merged.length} duplicate weight${merged.length === 1 ? '' : 's'} (${shown.join(', ')})`,
      nodes: describeNodes(merged),
    });
    return r.graph;
  },
};
