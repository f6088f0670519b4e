/**
 * Paged-KV lowering: each `attention(q, concat(past_k.L, k), concat(past_v.L, v))` of a causal LM becomes
 * `attention(q, k, v)` reading layer L of the paged KV cache, recorded in the graph's `meta.pagedKv` (see
 * `src/ir/paged-kv.ts`), and the `present_*` outputs are dropped: the engine keeps keys and values in its KV pools
 * instead of passing them through the graph. Values that are a head slice read only by their cache concat (v of a
 * merged QKV projection) are fused into the attention, so the KV-cache write reads them in place with no slice copy.
 * A graph without past keys (an encoder, an ONNX model) is left as it is.
 * @module
 */
import { UnsupportedOpError } from '../errors.js';
import { isOp } from '../ir/attrs.js';
import { Graph } from '../ir/graph.js';
import { headSliceWindow } from '../ir/head-window.js';
import { makeNode, type Node } from '../ir/node.js';
import type { PagedAttention } from '../ir/paged-kv.js';
import { buildFusedNode } from './fuse-elementwise.js';
import { countMatches, type Pass } from './pass.js';
import { rewriteGraph } from './rewrite.js';

/** The layer of a `past_k.L` / `past_v.L` input, or `undefined`. */
function pastLayer(n: Node, prefix: 'past_k' | 'past_v'): number | undefined {
  const m = isOp(n, 'input') ? new RegExp(`^${prefix}\\.(\\d+)$`).exec(n.attrs.name) : null;
  return m ? Number(m[1]) : undefined;
}

/** The `lower-paged-kv` pass. */
export const lowerPagedKvPass: Pass = {
  name: 'lower-paged-kv',
  description: 'make attentions over concat(past_k.L, k) read the paged KV cache (recorded in meta.pagedKv) and drop the present_* outputs',
  run(g, ctx) {
    if (!g.inputs.some((i) => pastLayer(i, 'past_k') !== undefined)) return g;
    const paged = new Map<Node, PagedAttention>();
    const users = g.users();
    const r = rewriteGraph(
      g.withOutputs(g.outputs.filter((o) => !o.name.startsWith('present_'))),
      [
        {
          name: 'paged-attention',
          root: 'attention',
          apply: ({ node }) => {
            const [q, kc, vc, mask] = node.inputs;
            if (mask || kc.op !== 'concat' || vc.op !== 'concat' || kc.inputs.length !== 2 || vc.inputs.length !== 2) return undefined;
            const lk = pastLayer(kc.inputs[0], 'past_k');
            const lv = pastLayer(vc.inputs[0], 'past_v');
            if (lk === undefined || lk !== lv || q.shape[0] !== 1) return undefined;
            // keys/values already in quantized-cache form (the quantize-kv-cache pass): the KV-cache write quantizes them
            const stored = (x: Node): Node => {
              if (!isOp(x, 'kv_quantize')) return x;
              const kv = ctx.target?.kv.dtype;
              if (kv !== x.attrs.dtype) throw new UnsupportedOpError(['kv_quantize'], `layer ${lk} caches ${x.attrs.dtype} keys/values but the target's KV cache is ${kv ?? 'absent'}: compile with kv.dtype '${x.attrs.dtype}'`);
              return x.inputs[0];
            };
            const [k, v] = [stored(kc.inputs[1]), stored(vc.inputs[1])];
            const rep = makeNode('attention', [q, k, v], node.attrs);
            const window = headSliceWindow(v);
            if (window && (users.get(v) ?? []).every((u) => u === vc)) {
              const fused = buildFusedNode({ kind: 'attention', nodes: [v, rep], root: rep });
              if (fused) {
                paged.set(fused, { layer: lk, k, v: v.inputs[0], vHeads: window });
                return fused;
              }
            }
            paged.set(rep, { layer: lk, k, v });
            return rep;
          },
        },
      ],
    );
    countMatches(ctx, r.matches);
    const layers = [...paged.values()].map((p) => p.layer);
    ctx.report.add({ pass: 'lower-paged-kv', kind: 'layout', message: `${paged.size} attention${paged.size === 1 ? '' : 's'} read the paged KV cache (layers ${layers.join(', ') || 'none'}); ${[...paged.values()].filter((p) => p.vHeads).length} read their values in place` });
    return new Graph(r.graph.inputs, r.graph.outputs, r.graph.weights, { ...r.graph.meta, pagedKv: paged });
  },
};
