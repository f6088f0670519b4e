/**
 * Splitting weights larger than one storage binding (`maxStorageBufferBindingSize` of the target device):
 *
 * - `matmul(x, W)` with `W` a dense 2-D weight of `N` output rows (stored `[N, K]`, `transB`) becomes
 *   `concat(matmul(x, W₀), …, matmul(x, Wₖ))` over row blocks that each fit;
 * - an embedding `gather(W, ids)` over a `[V, D]` table becomes a sum of lookups into row blocks, each masked to the
 *   ids it holds.
 *
 * Any other weight that does not fit is a compile-time {@link DeviceError} (`LIMIT_EXCEEDED`) naming the tensor and
 * the limit, as is a weight whose single row is already too large.
 * @module
 */
import { DeviceError } from '../errors.js';
import { isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { byteSize } from '../ir/dtype.js';
import { WeightStore, type WeightEntry } from '../ir/weights.js';
import { countMatches, type Pass } from './pass.js';
import { rewriteGraph, type RewriteContext, type RewriteRule } from './rewrite.js';

function entryBytes(e: WeightEntry): number {
  return Object.values(e.data).reduce((a, arr) => Math.max(a, arr.byteLength), 0);
}

/** Row blocks of a dense 2-D weight, each within `limit` bytes. */
function rowBlocks(e: WeightEntry, limit: number): WeightEntry[] {
  const [rows, cols] = e.shape;
  const rowBytes = cols * byteSize(e.dtype);
  const per = Math.floor(limit / rowBytes);
  if (per < 1) throw new DeviceError('LIMIT_EXCEEDED', `weight '${e.name}' has rows of ${rowBytes} bytes, more than one storage binding allows (maxStorageBufferBindingSize ${limit})`);
  const values = e.data.values;
  const out: WeightEntry[] = [];
  for (let r0 = 0; r0 < rows; r0 += per) {
    const r1 = Math.min(rows, r0 + per);
    out.push(WeightStore.entry(`${e.name}[${r0}:${r1}]`, e.dtype, [r1 - r0, cols], { values: values.subarray(r0 * cols, r1 * cols) }));
  }
  return out;
}

function limitOf(ctx: RewriteContext): number {
  const device = ctx.options.device as { maxStorageBufferBindingSize?: number } | undefined;
  return device?.maxStorageBufferBindingSize ?? Number.MAX_SAFE_INTEGER;
}

function oversized(n: Node, ctx: RewriteContext): WeightEntry | undefined {
  if (!isOp(n, 'weight')) return undefined;
  const e = ctx.weights.get(n.attrs.id);
  return entryBytes(e) > limitOf(ctx) ? e : undefined;
}

const splitMatmul: RewriteRule = {
  name: 'split-matmul-weight',
  root: 'matmul',
  apply({ node }, ctx) {
    const [x, w] = node.inputs;
    const e = oversized(w, ctx);
    if (!e || e.encoding.kind !== 'dense' || e.shape.length !== 2 || !node.attrs.transB) return undefined;
    const parts = rowBlocks(e, limitOf(ctx)).map((p) => makeNode('matmul', [x, ctx.addWeight(p)], node.attrs));
    return makeNode('concat', parts, { axis: node.rank - 1 });
  },
};

const splitEmbedding: RewriteRule = {
  name: 'split-embedding-table',
  root: 'gather',
  apply({ node }, ctx) {
    const [w, ids] = node.inputs;
    const e = oversized(w, ctx);
    if (!e || e.encoding.kind !== 'dense' || e.shape.length !== 2 || node.attrs.axis !== 0 || ids.dtype !== 'i32') return undefined;
    let sum: Node | undefined;
    let r0 = 0;
    for (const p of rowBlocks(e, limitOf(ctx))) {
      const rows = p.shape[0];
      const c = (v: number): Node => makeNode('constant', [], { dtype: 'i32', shape: [], values: [v] });
      const local = makeNode('sub', [ids, c(r0)]);
      const inside = makeNode('where', [makeNode('less', [local, c(0)]), makeNode('constant', [], { dtype: 'bool', shape: [], values: [0] }), makeNode('less', [local, c(rows)])]);
      const clamped = makeNode('minimum', [makeNode('maximum', [local, c(0)]), c(rows - 1)]);
      const rowsOut = makeNode('gather', [ctx.addWeight(p), clamped], { axis: 0 });
      const zero = makeNode('constant', [], { dtype: node.dtype, shape: [], values: [0] });
      const masked = makeNode('where', [makeNode('reshape', [inside], { shape: [...inside.shape, 1] }), rowsOut, zero]);
      sum = sum ? makeNode('add', [sum, masked]) : masked;
      r0 += rows;
    }
    return sum;
  },
};

/** The `split-large-weights` pass (run before codegen for a device with a storage-binding limit). */
export const splitLargeWeightsPass: Pass = {
  name: 'split-large-weights',
  description: 'split weights larger than one storage binding into row blocks (matmul outputs concatenated, embedding lookups summed)',
  run(graph, ctx) {
    const r = rewriteGraph(graph, [splitMatmul, splitEmbedding], { options: { ...ctx.options, device: ctx.device } });
    countMatches(ctx, r.matches);
    for (const [rule, n] of Object.entries(r.matches)) ctx.report.add({ pass: 'split-large-weights', kind: 'layout', message: `${rule}: ${n} weight(s) split to fit ${ctx.device.maxStorageBufferBindingSize} bytes per binding` });
    const limit = ctx.device.maxStorageBufferBindingSize;
    for (const n of r.graph.nodes()) {
      if (!isOp(n, 'weight')) continue;
      const e = r.graph.weights.get(n.attrs.id);
      if (entryBytes(e) > limit)
        throw new DeviceError('LIMIT_EXCEEDED', `weight '${e.name}' (${e.dtype}[${e.shape}], ${entryBytes(e)} bytes) does not fit one storage binding (maxStorageBufferBindingSize ${limit}) and no rule splits it`);
    }
    return r.graph;
  },
};
