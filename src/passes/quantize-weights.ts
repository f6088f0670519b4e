/**
 * Weight quantization, as `--quant` asks: the 2-D weights that matmuls multiply by, and the embedding tables that
 * `gather` reads rows of, become {@link QuantizedEncoding} weights (integer schemes, round to nearest) or
 * {@link CodebookEncoding} weights (codebook schemes: NF4, k-means, ternary, binary, log2; one table per weight,
 * `src/ir/codebook.ts`) under the {@link QuantScheme} in `options.quant` (absent: the pass changes nothing). The layouts (rows of K; `[K, N]`
 * weights transposed; tied tables quantized once) are the re-encoding driver's ({@link reencodeWeights}).
 *
 * Weights already quantized in the file (GGUF, ONNX Q/DQ) are re-quantized from their decoded values, unless they
 * are in the scheme already: `--quant` asks for its scheme. Codebook weights are left as they are.
 *
 * N:M-sparse weights (from `sparsify-weights`, which runs first) keep their positions and get their kept values
 * quantized ({@link quantizeNMValues}): the group size counts kept values, so it must divide the compacted row
 * length (`K · n / m`), or the weight stays as it is and the report says so. Codebook schemes cannot store sparse
 * values, nor can any scheme store block-sparse blocks: both are {@link InputError}s naming the scheme and weight.
 *
 * A weight whose rows (K) are no multiple of the group size stays as it is, and the report says so (llama.cpp does
 * the same and keeps such tensors in a wider type); when no weight at all can take the scheme, the pass throws an
 * {@link InputError} naming the scheme and the first weight with its constraint.
 * @module
 */
import { InputError } from '../errors.js';
import { quantizeCodebook } from '../ir/codebook.js';
import type { IntQuantScheme, QuantScheme } from '../ir/quant-scheme.js';
import { quantizeNMValues } from '../ir/sparsify.js';
import { quantizeWeight, type CodebookEncoding, type NMSparseEncoding, type QuantizedEncoding, type WeightEntry } from '../ir/weights.js';
import type { Pass } from './pass.js';
import { reencodeWeights, type EncodeOutcome, type WeightEncoder } from './reencode-weights.js';

/** The same integer scheme as `s`, already: re-quantizing it would only lose precision. */
function alreadyIn(enc: QuantizedEncoding, s: IntQuantScheme, rowLength: number): boolean {
  return enc.bits === s.bits && enc.hasZeroPoint === s.asymmetric && !enc.hasMin && enc.groupSize === groupOf(s, rowLength);
}

/** Elements per group under `s` for rows of `rowLength` (`-ch`: the whole row); `undefined` for schemes with no groups. */
function groupOf(s: QuantScheme, rowLength: number): number | undefined {
  return s.groupSize === 'channel' ? rowLength : s.groupSize;
}

/** The kept values of N:M-sparse `source` (stored `[N, K]`, rows of `cols`) quantized to `s`, or why not. */
function quantizedNMValues(source: WeightEntry, enc: NMSparseEncoding, s: QuantScheme, name: string, cols: number, transposed: boolean): EncodeOutcome {
  if (s.kind === 'codebook') throw new InputError(`--quant ${s.name}: weight '${source.name}' is ${enc.n}:${enc.m}-sparse, and codebook schemes cannot store sparse values (integer schemes can: int8, int4, …)`);
  if (transposed) return { keep: `${enc.n}:${enc.m}-sparse, read [K, N]` };
  const rowLength = (cols / enc.m) * enc.n;
  if (enc.quantizedValues && alreadyIn(enc.quantizedValues, s, rowLength)) return 'already';
  const group = groupOf(s, rowLength)!;
  if (rowLength % group !== 0) return { keep: `${enc.n}:${enc.m}-sparse rows of ${rowLength} kept values are no multiple of group ${group}` };
  return quantizeNMValues(`${name}@${s.name}`, source, { bits: s.bits, groupSize: group, hasZeroPoint: s.asymmetric });
}

/** The encoder of a scheme. */
function quantizer(s: QuantScheme): WeightEncoder {
  return {
    tables: true,
    accepts: (e) => ['dense', 'quantized', 'sparse-nm', 'sparse-block'].includes(e.encoding.kind),
    encode(source, name, [rows, cols], values, dtype, transposed) {
      if (source.encoding.kind === 'sparse-nm') return quantizedNMValues(source, source.encoding, s, name, cols, transposed);
      if (source.encoding.kind === 'sparse-block')
        throw new InputError(`--quant ${s.name}: weight '${source.name}' is block-sparse, whose blocks cannot be quantized (N:M sparsity can: --sparsity 2:4)`);
      if (source.encoding.kind === 'quantized' && s.kind !== 'codebook' && !transposed && alreadyIn(source.encoding, s, cols)) return 'already';
      const group = groupOf(s, cols);
      if (group !== undefined && cols % group !== 0) return { keep: `rows of ${cols} are no multiple of group ${group}` };
      const q = `${name}@${s.name}`;
      return s.kind === 'codebook'
        ? quantizeCodebook(q, [rows, cols], values(), { levels: s.levels, indexBits: s.indexBits, scaleGroupSize: group, dtype })
        : quantizeWeight(q, [rows, cols], values(), { bits: s.bits, groupSize: group!, hasZeroPoint: s.asymmetric, dtype });
    },
  };
}

/** The `quantize-weights` pass. */
export const quantizeWeightsPass: Pass = {
  name: 'quantize-weights',
  description: 'quantize matmul weights and embedding tables to options.quant (integers or codebooks; nothing without it)',
  run(graph, ctx) {
    const scheme = ctx.options.quant as QuantScheme | undefined;
    if (!scheme) return graph;
    const r = reencodeWeights(graph, ctx, quantizer(scheme));
    const kept = [...r.kept].map(([name, why]) => `'${name}' (${why})`);
    if (r.encoded === 0 && r.already === 0) {
      if (kept.length) throw new InputError(`--quant ${scheme.name}: no weight can be quantized: ${kept.join(', ')}`);
      throw new InputError(
        r.candidates
          ? `--quant ${scheme.name}: none of the ${r.candidates} matmul weights and embedding tables is a 2-D float weight in dense or quantized storage`
          : `--quant ${scheme.name}: the model has no matmul weights or embedding tables to quantize`,
      );
    }
    const mb = (b: number): string => (b / 2 ** 20).toFixed(2);
    ctx.report.add({
      pass: 'quantize-weights',
      kind: 'precision',
      message: `${r.encoded} weight(s) quantized to ${scheme.name}: ${mb(r.bytesBefore)} MiB -> ${mb(r.bytesAfter)} MiB${kept.length ? `; kept as they were: ${kept.join(', ')}` : ''}`,
    });
    return r.graph;
  },
};
