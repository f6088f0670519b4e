/**
 * Weight quantization, as `--quant` asks: the 2-D weights that matmuls multiply by, and the embedding tables that
 * `gather` reads rows of, become {@link QuantizedEncoding} weights (integer schemes, round to nearest) or
 * {@link CodebookEncoding} weights (codebook schemes: NF4, k-means, ternary, binary, log2; one table per weight,
 * `src/ir/codebook.ts`) under the {@link QuantScheme} in `options.quant` (absent: the pass changes nothing).
 *
 * - `matmul(x, W)` with `W` stored `[N, K]` (`transB`, the Hugging Face and llama2.c layout) is quantized as stored:
 *   groups run along K, the axis the dequantizing kernels reduce.
 * - `matmul(x, W)` with `W` stored `[K, N]` (ONNX) gets a transposed `[N, K]` copy, quantized, read with `transB`.
 * - `gather(T, ids)` over a `[V, D]` table: groups run along D. A table tied to the classifier is one weight, so both
 *   uses read the same quantized entry.
 * - Weights already quantized in the file (GGUF, ONNX Q/DQ) are re-quantized from their decoded values: `--quant`
 *   asks for its scheme. Codebook and sparse weights are left as they are.
 *
 * A weight whose rows (K) are no multiple of the group size stays as it is, and the report says so (llama.cpp does
 * the same and keeps such tensors in a wider type); when no weight at all can take the scheme, the pass throws an
 * {@link InputError} naming the scheme and the first weight with its constraint.
 * @module
 */
import { InputError } from '../errors.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { quantizeCodebook } from '../ir/codebook.js';
import type { IntQuantScheme, QuantScheme } from '../ir/quant-scheme.js';
import { decodeWeight, quantizeWeight, type CodebookEncoding, type QuantizedEncoding, type WeightEntry } from '../ir/weights.js';
import { countMatches, type Pass } from './pass.js';
import { rewriteGraph, type RewriteContext, type RewriteRule } from './rewrite.js';

/** Weights a run quantized and those it left, shared by the rules of one run. */
interface QuantizeRun {
  readonly scheme: QuantScheme;
  /** By source weight id and orientation (`rows` as stored, `cols` transposed): the quantized weight node. */
  readonly done: Map<string, Node>;
  /** Weight name → why it stays as it is. */
  readonly kept: Map<string, string>;
  /** Weights found already in the scheme. */
  already: number;
  bytesBefore: number;
  bytesAfter: number;
}

function payloadBytes(e: WeightEntry): number {
  return Object.values(e.data).reduce((a, arr) => a + arr.byteLength, 0);
}

/** Whether the pass re-encodes this weight at all (dense or quantized, 2-D, float). */
function quantizable(e: WeightEntry): boolean {
  return (e.encoding.kind === 'dense' || e.encoding.kind === 'quantized') && e.shape.length === 2 && (e.dtype === 'f32' || e.dtype === 'f16');
}

/** The same integer scheme as `s`, already: re-quantizing it would only lose precision. */
function alreadyIn(enc: QuantizedEncoding, s: IntQuantScheme, rowLength: number): boolean {
  return enc.bits === s.bits && enc.hasZeroPoint === s.asymmetric && !enc.hasMin && enc.groupSize === (s.groupSize === 'channel' ? rowLength : s.groupSize);
}

/**
 * The quantized weight node for `w` read as rows of length K (`transposed`: `w` is `[K, N]` and its transpose is
 * quantized), or `undefined` when it stays (the reason is recorded).
 */
function quantized(w: Node, transposed: boolean, ctx: RewriteContext, run: QuantizeRun): Node | undefined {
  if (!isOp(w, 'weight')) return undefined;
  const e = ctx.weights.get(w.attrs.id);
  if (!quantizable(e)) return undefined;
  const key = `${e.id}:${transposed ? 'cols' : 'rows'}`;
  const hit = run.done.get(key);
  if (hit) return hit;
  const [rows, cols] = transposed ? [e.shape[1], e.shape[0]] : [e.shape[0], e.shape[1]];
  const s = run.scheme;
  if (e.encoding.kind === 'quantized' && s.kind !== 'codebook' && !transposed && alreadyIn(e.encoding, s, cols)) {
    run.already++;
    return undefined;
  }
  const group = s.groupSize === 'channel' ? cols : s.groupSize;
  if (group !== undefined && cols % group !== 0) {
    run.kept.set(e.name, `rows of ${cols} are no multiple of group ${group}`);
    return undefined;
  }
  let values = decodeWeight(e);
  if (transposed) {
    const t = new Float32Array(values.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[r * cols + c] = values[c * rows + r];
    values = t;
  }
  const name = `${e.name}@${s.name}${transposed ? '^T' : ''}`;
  const q =
    s.kind === 'codebook'
      ? quantizeCodebook(name, [rows, cols], values, { levels: s.levels, indexBits: s.indexBits, scaleGroupSize: group, dtype: e.dtype })
      : quantizeWeight(name, [rows, cols], values, { bits: s.bits, groupSize: group!, hasZeroPoint: s.asymmetric, dtype: e.dtype });
  run.bytesBefore += payloadBytes(e);
  run.bytesAfter += payloadBytes(q);
  const node = ctx.addWeight(q);
  run.done.set(key, node);
  return node;
}

function rules(run: QuantizeRun): RewriteRule[] {
  return [
    {
      name: 'quantize-matmul-weight',
      root: 'matmul',
      apply({ node }, ctx) {
        const [x, w] = node.inputs;
        const { transB } = attrsOf(node, 'matmul');
        const q = quantized(w, !transB, ctx, run);
        return q && makeNode('matmul', [x, q], { ...node.attrs, transB: true });
      },
    },
    {
      name: 'quantize-embedding-table',
      root: 'gather',
      apply({ node }, ctx) {
        const [table, ids] = node.inputs;
        if (attrsOf(node, 'gather').axis !== 0) return undefined;
        const q = quantized(table, false, ctx, run);
        return q && makeNode('gather', [q, ids], node.attrs);
      },
    },
  ];
}

/** Names the weights matmuls and embeddings read, for the error when none could be quantized. */
function candidates(nodes: readonly Node[]): Node[] {
  return nodes.filter((n) => (n.op === 'matmul' && n.inputs[1].op === 'weight') || (n.op === 'gather' && n.inputs[0].op === 'weight'));
}

/** The `quantize-weights` pass. */
export const quantizeWeightsPass: Pass = {
  name: 'quantize-weights',
  description: 'quantize matmul weights and embedding tables to options.quant (integers or codebooks; nothing without it)',
  run(graph, ctx) {
    const scheme = ctx.options.quant as QuantScheme | undefined;
    if (!scheme) return graph;
    const run: QuantizeRun = { scheme, done: new Map(), kept: new Map(), already: 0, bytesBefore: 0, bytesAfter: 0 };
    const r = rewriteGraph(graph, rules(run), { options: ctx.options });
    countMatches(ctx, r.matches);
    const kept = [...run.kept].map(([name, why]) => `'${name}' (${why})`);
    if (run.done.size === 0 && run.already === 0) {
      if (kept.length) throw new InputError(`--quant ${scheme.name}: no weight can be quantized: ${kept.join(', ')}`);
      const seen = candidates(graph.nodes());
      throw new InputError(
        seen.length
          ? `--quant ${scheme.name}: none of the ${seen.length} matmul weights and embedding tables is a 2-D float weight in dense or quantized storage`
          : `--quant ${scheme.name}: the model has no matmul weights or embedding tables to quantize`,
      );
    }
    const mb = (b: number): string => (b / 2 ** 20).toFixed(2);
    ctx.report.add({
      pass: 'quantize-weights',
      kind: 'precision',
      message: `${run.done.size} weight(s) quantized to ${scheme.name}: ${mb(run.bytesBefore)} MiB -> ${mb(run.bytesAfter)} MiB${kept.length ? `; kept as they were: ${kept.join(', ')}` : ''}`,
    });
    return r.graph;
  },
};
