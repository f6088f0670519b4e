/**
 * Weight quantization, as `--quant` asks: the 2-D weights that matmuls multiply by, and the embedding tables that
 * `gather` reads rows of, become {@link QuantizedEncoding} weights (integer schemes, round to nearest) or
 * {@link CodebookEncoding} weights (codebook schemes: NF4, k-means, ternary, binary, log2; one table per weight,
 * `src/ir/codebook.ts`) under the {@link QuantScheme} in `options.quant` (absent: the pass changes nothing). The layouts (rows of K; `[K, N]`
 * weights transposed; tied tables quantized once) are the re-encoding driver's ({@link reencodeWeights}).
 *
 * Weights already quantized in the file (GGUF, ONNX Q/DQ) are re-quantized from their decoded values, unless they
 * are in the scheme already: `--quant` asks for its scheme. Codebook and sparse weights are left as they are.
 *
 * A weight whose rows (K) are no multiple of the group size stays as it is, and the report says so (llama.cpp does
 * the same and keeps such tensors in a wider type); when no weight at all can take the scheme, the pass throws an
 * {@link InputError} naming the scheme and the first weight with its constraint.
 * @module
 */
import { InputError } from '../errors.js';
import { quantizeCodebook } from '../ir/codebook.js';
import type { IntQuantScheme, QuantScheme } from '../ir/quant-scheme.js';
import { quantizeWeight, type CodebookEncoding, type QuantizedEncoding } from '../ir/weights.js';
import type { Pass } from './pass.js';
import { reencodeWeights, type WeightEncoder } from './reencode-weights.js';

/** The same integer scheme as `s`, already: re-quantizing it would only lose precision. */
function alreadyIn(enc: QuantizedEncoding, s: IntQuantScheme, rowLength: number): boolean {
  return enc.bits === s.bits && enc.hasZeroPoint === s.asymmetric && !enc.hasMin && enc.groupSize === (s.groupSize === 'channel' ? rowLength : s.groupSize);
}

/** The encoder of a scheme. */
function quantizer(s: QuantScheme): WeightEncoder {
  return {
    tables: true,
    accepts: (e) => e.encoding.kind === 'dense' || e.encoding.kind === 'quantized',
    encode(source, name, [rows, cols], values, dtype, transposed) {
      if (source.encoding.kind === 'quantized' && s.kind !== 'codebook' && !transposed && alreadyIn(source.encoding, s, cols)) return 'already';
      const group = s.groupSize === 'channel' ? cols : s.groupSize;
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
