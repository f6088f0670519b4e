/**
 * `quantize-kv-cache`: with `options.kvCache` `int8` or `int4`, every `concat(past_k.L, k)` / `concat(past_v.L, v)` of
 * a causal LM becomes `concat(past_*.L, kv_quantize(k))`, so the keys and values a step appends — and attends to in
 * that same step — are what a quantized KV cache reads back (see `src/ir/kv-cache-quant.ts`), and the `present_*`
 * outputs the CPU reference feeds back as the next step's past hold only such values. This makes the CPU reference
 * backend the oracle of the WebGPU engines' integer KV pools. Without the option (or with `f32`/`f16`) the pass changes
 * nothing; WebGPU engines take the KV type from the target instead (`lower-paged-kv` accepts the quantized form).
 * @module
 */
import { InputError } from '../errors.js';
import { isOp } from '../ir/attrs.js';
import { isQuantizedKv, KV_CACHE_DTYPES } from '../ir/kv-cache-quant.js';
import { makeNode } from '../ir/node.js';
import { countMatches, type Pass } from './pass.js';
import { rewriteGraph } from './rewrite.js';

/** The `quantize-kv-cache` pass. */
export const quantizeKvCachePass: Pass = {
  name: 'quantize-kv-cache',
  description: "make the keys and values a causal LM caches what an options.kvCache ('int8' | 'int4') cache reads back (nothing without it)",
  run(graph, ctx) {
    const kv = ctx.options.kvCache;
    if (kv === undefined || kv === 'f32' || kv === 'f16') return graph;
    if (typeof kv !== 'string' || !isQuantizedKv(kv)) throw new InputError(`kvCache must be one of ${KV_CACHE_DTYPES.join(', ')}, got ${JSON.stringify(kv)}`);
    let layers = 0;
    const r = rewriteGraph(graph, [
      {
        name: 'quantize-appended-kv',
        root: 'concat',
        apply: ({ node }) => {
          const [past, fresh] = node.inputs;
          if (node.inputs.length !== 2 || !isOp(past, 'input') || !/^past_[kv]\.\d+$/.test(past.attrs.name) || fresh.op === 'kv_quantize' || fresh.dtype !== 'f32') return undefined;
          layers++;
          return makeNode('concat', [past, makeNode('kv_quantize', [fresh], { dtype: kv })], node.attrs);
        },
      },
    ]);
    countMatches(ctx, r.matches);
    if (layers === 0) return graph;
    ctx.report.add({ pass: 'quantize-kv-cache', kind: 'precision', message: `${layers} cached key/value tensor(s) stored as ${kv} with a scale per token and head` });
    return r.graph;
  },
};
