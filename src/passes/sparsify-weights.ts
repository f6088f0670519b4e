/**
 * Weight sparsity by magnitude pruning, as `--sparsity` asks: the 2-D weights matmuls multiply by become N:M-sparse
 * ({@link NMSparseEncoding}) or block-sparse ({@link BlockSparseEncoding}) under the {@link SparsityScheme} in
 * `options.sparsity` (absent: the pass changes nothing). Layouts are the re-encoding driver's
 * ({@link reencodeWeights}: rows of K; `[K, N]` weights transposed). Embedding tables stay dense (no kernel looks
 * rows up in a sparse table).
 *
 * The pattern must fit every matmul weight: M dividing K, or B dividing both dims; otherwise the pass throws an
 * {@link InputError} naming the weight and the constraint (no padding). Weights stored quantized, codebook or already
 * sparse are left as they are and the report says so. Kept values are f32 here; with `--quant` too, the
 * `quantize-weights` pass (which runs after this one) quantizes an N:M weight's kept values.
 * @module
 */
import { InputError } from '../errors.js';
import type { SparsityScheme } from '../ir/sparsity-scheme.js';
import { pruneNM, toBlockSparse } from '../ir/sparsify.js';
import type { Pass } from './pass.js';
import { reencodeWeights, type WeightEncoder } from './reencode-weights.js';

function sparsifier(s: SparsityScheme): WeightEncoder {
  return {
    tables: false,
    accepts: () => true,
    encode(source, name, [rows, cols], values) {
      if (source.encoding.kind !== 'dense') return { keep: `${source.encoding.kind}-encoded` };
      if (s.kind === 'nm') {
        if (cols % s.m !== 0) throw new InputError(`--sparsity ${s.name}: weight '${source.name}' has rows of ${cols} (K), not a multiple of M = ${s.m}`);
        return pruneNM(`${name}@${s.name}`, [rows, cols], values(), { n: s.n, m: s.m });
      }
      if (rows % s.block !== 0 || cols % s.block !== 0)
        throw new InputError(`--sparsity ${s.name}: weight '${source.name}' is [${rows}, ${cols}] (N, K), not divisible into ${s.block}x${s.block} blocks`);
      return toBlockSparse(`${name}@${s.name}`, [rows, cols], values(), { blockRows: s.block, blockCols: s.block, density: s.density });
    },
  };
}

/** The `sparsify-weights` pass. */
export const sparsifyWeightsPass: Pass = {
  name: 'sparsify-weights',
  description: 'prune matmul weights to options.sparsity (N:M or block-sparse, by magnitude; nothing without it)',
  run(graph, ctx) {
    const scheme = ctx.options.sparsity as SparsityScheme | undefined;
    if (!scheme) return graph;
    const r = reencodeWeights(graph, ctx, sparsifier(scheme));
    if (r.encoded === 0) throw new InputError(`--sparsity ${scheme.name}: the model has no dense matmul weights to prune${r.kept.size ? ` (${[...r.kept].map(([n, why]) => `'${n}' is ${why}`).join(', ')})` : ''}`);
    const kept = [...r.kept].map(([name, why]) => `'${name}' (${why})`);
    const mb = (b: number): string => (b / 2 ** 20).toFixed(2);
    ctx.report.add({
      pass: 'sparsify-weights',
      kind: 'precision',
      message: `${r.encoded} weight(s) pruned to ${scheme.name}: ${mb(r.bytesBefore)} MiB -> ${mb(r.bytesAfter)} MiB${kept.length ? `; kept as they were: ${kept.join(', ')}` : ''}`,
    });
    return r.graph;
  },
};
