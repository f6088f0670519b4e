/**
 * Re-encoding the weights matmuls multiply by (and, for encoders that ask, the embedding tables `gather` reads): the
 * shared driver of the weight-compression passes (`quantize-weights`, `sparsify-weights`). An encoder says which
 * stored weights it re-encodes and how; the driver finds them, in the layout the encoded-weight kernels read:
 *
 * - `matmul(x, W)` with `W` stored `[N, K]` (`transB`, the Hugging Face and llama2.c layout) is encoded as stored:
 *   rows of K, the axis the kernels reduce;
 * - `matmul(x, W)` with `W` stored `[K, N]` (ONNX) gets a transposed `[N, K]` copy, encoded and read with `transB`;
 * - `gather(T, ids)` over a `[V, D]` table, rows of D. A table tied to the classifier is one weight, so both uses
 *   read the same encoded entry.
 *
 * Each weight is encoded once per orientation. The encoder may keep a weight (saying why: the report lists it) or
 * throw a typed error naming it.
 * @module
 */
import { attrsOf, isOp } from '../ir/attrs.js';
import type { DType } from '../ir/dtype.js';
import type { Graph } from '../ir/graph.js';
import { makeNode, type Node } from '../ir/node.js';
import { decodeWeight, type WeightEntry } from '../ir/weights.js';
import { countMatches, type PassContext } from './pass.js';
import { rewriteGraph, type RewriteContext, type RewriteRule } from './rewrite.js';

/**
 * What an encoder does with one weight: a new entry, `'already'` (it is in the encoding), or a reason to keep it.
 * @internal
 */
export type EncodeOutcome = WeightEntry | 'already' | KeptWeight;

/**
 * An encoder's refusal: the weight stays as it is, for the reason given.
 * @internal
 */
export interface KeptWeight {
  /** Why the weight is kept (reported by `inspect` and in the pass statistics). */
  readonly keep: string;
}

/**
 * A weight encoder, as the compression passes define them.
 * @internal
 */
export interface WeightEncoder {
  /** Whether embedding tables are encoded too. */
  readonly tables: boolean;
  /** Whether a stored weight (2-D, float) is one this encoder re-encodes at all. */
  accepts(e: WeightEntry): boolean;
  /**
   * Encodes rows of `cols` values (`values`, row-major `[rows, cols]`, decoded from `source`) into an entry named
   * `name` of logical dtype `dtype`; `source` is as stored (before any transpose).
   */
  encode(source: WeightEntry, name: string, shape: readonly [number, number], values: () => Float32Array, dtype: DType, transposed: boolean): EncodeOutcome;
}

/**
 * What a run did: entries encoded, weights kept (name → why), weights already encoded, payload bytes.
 * @internal
 */
export interface ReencodeSummary {
  /** The graph after the run. */
  readonly graph: Graph;
  /** Encoded entries. */
  readonly encoded: number;
  /** Weight name → why it stays as it is. */
  readonly kept: ReadonlyMap<string, string>;
  /** Weights found already encoded. */
  readonly already: number;
  /** Payload bytes of the weights encoded, before. */
  readonly bytesBefore: number;
  /** Payload bytes of their encoded entries. */
  readonly bytesAfter: number;
  /** Matmul weights and embedding tables the graph has (for the caller's errors). */
  readonly candidates: number;
}

/**
 * Payload bytes of an entry.
 * @internal
 */
export function payloadBytes(e: WeightEntry): number {
  return Object.values(e.data).reduce((a, arr) => a + arr.byteLength, 0);
}

function floatMatrix(e: WeightEntry): boolean {
  return e.shape.length === 2 && (e.dtype === 'f32' || e.dtype === 'f16');
}

/**
 * Runs `encoder` over the graph's matmul weights (and tables).
 * @internal
 */
export function reencodeWeights(graph: Graph, ctx: PassContext, encoder: WeightEncoder): ReencodeSummary {
  const done = new Map<string, Node>();
  const kept = new Map<string, string>();
  let already = 0;
  let bytesBefore = 0;
  let bytesAfter = 0;

  const encoded = (w: Node, transposed: boolean, rctx: RewriteContext): Node | undefined => {
    if (!isOp(w, 'weight')) return undefined;
    const e = rctx.weights.get(w.attrs.id);
    if (!floatMatrix(e) || !encoder.accepts(e)) return undefined;
    const key = `${e.id}:${transposed ? 'cols' : 'rows'}`;
    const hit = done.get(key);
    if (hit) return hit;
    const [rows, cols] = transposed ? [e.shape[1], e.shape[0]] : [e.shape[0], e.shape[1]];
    const values = (): Float32Array => {
      const v = decodeWeight(e);
      if (!transposed) return v;
      const t = new Float32Array(v.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[r * cols + c] = v[c * rows + r];
      return t;
    };
    const out = encoder.encode(e, `${e.name}${transposed ? '^T' : ''}`, [rows, cols], values, e.dtype, transposed);
    if (out === 'already') {
      already++;
      return undefined;
    }
    if ('keep' in out) {
      kept.set(e.name, out.keep);
      return undefined;
    }
    bytesBefore += payloadBytes(e);
    bytesAfter += payloadBytes(out);
    const node = rctx.addWeight(out);
    done.set(key, node);
    return node;
  };

  const rules: RewriteRule[] = [
    {
      name: 'reencode-matmul-weight',
      root: 'matmul',
      apply({ node }, rctx) {
        const [x, w] = node.inputs;
        const q = encoded(w, !attrsOf(node, 'matmul').transB, rctx);
        return q && makeNode('matmul', [x, q], { ...node.attrs, transB: true });
      },
    },
  ];
  if (encoder.tables)
    rules.push({
      name: 'reencode-embedding-table',
      root: 'gather',
      apply({ node }, rctx) {
        const [table, ids] = node.inputs;
        if (attrsOf(node, 'gather').axis !== 0) return undefined;
        const q = encoded(table, false, rctx);
        return q && makeNode('gather', [q, ids], node.attrs);
      },
    });
  const r = rewriteGraph(graph, rules, { options: ctx.options });
  countMatches(ctx, r.matches);
  const candidates = graph.nodes().filter((n) => (n.op === 'matmul' && n.inputs[1].op === 'weight') || (encoder.tables && n.op === 'gather' && n.inputs[0].op === 'weight')).length;
  return { graph: r.graph, encoded: done.size, kept, already, bytesBefore, bytesAfter, candidates };
}
