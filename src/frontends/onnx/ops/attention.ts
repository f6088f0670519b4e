/**
 * `Attention` and `RotaryEmbedding` (opset 23).
 *
 * `Attention` takes `q`, `k`, `v` as 3-D `[B, S, H·D]` (with `q_num_heads`/`kv_num_heads`) or 4-D `[B, H, S, D]`,
 * optional `attn_mask` (bool, true = attend, or float, added; a last dim shorter than the total length is padded with
 * masked entries), `past_key`/`past_value` `[B, Hkv, P, D]` (the `present_*` outputs are their concatenation with
 * `k`/`v`), `is_causal` and `scale`. It becomes the IR `attention` op (GQA included). Causal masking follows the
 * ONNX reference: query `i` sees key `j` when `j <= i + past`; with as many new keys as queries that is the IR's
 * (bottom-right aligned) causal flag, otherwise an explicit mask over static lengths. `softcap` (applied to the scaled
 * scores before the mask, as the reference does) and the `qk_matmul_output` output (modes 0..3: scores, softcapped,
 * masked, softmax) need the scores themselves, so those nodes are composed from matmul/softmax primitives instead.
 * `nonpad_kv_seqlen` (opset 24) is unsupported.
 *
 * `RotaryEmbedding` rotates the first `rotary_embedding_dim` dims of each head (halves, or interleaved pairs) by the
 * angles in `cos_cache`/`sin_cache`, gathered at `position_ids` when given. With constant caches that hold the standard
 * tables (`theta` solved and every entry checked) and position ids it becomes the IR `rope` op; otherwise it is
 * composed from gathers, slices and elementwise ops.
 * @module
 */
import { dimDivExact, dimMul, type Dim } from '../../../ir/dim.js';
import { isFloat } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import { solveTheta } from '../../../ir/rope.js';
import { Tensor } from '../../../runtime/cpu/tensor.js';
import type { OpContext } from '../context.js';
import { unsqueeze } from './shape.js';
import type { Converter } from './types.js';

/** `[B, S, H, D] ↔ [B, H, S, D]`. */
const SWAP = [0, 2, 1, 3];

/** `[B, S, H·D]` (heads given) or `[B, H, S, D]` as `[B, H, S, D]`. */
function toBHSD(c: OpContext, x: Node, heads: number | undefined, what: string): Node {
  if (x.rank === 4) return x;
  if (x.rank !== 3) throw c.malformed(`${what} must be 3-D or 4-D, got [${x.shape.join(', ')}]`);
  if (!heads) throw c.malformed(`3-D ${what} needs its head count attribute`);
  const [b, s, hd] = x.shape;
  const d = dimDivExact(hd, heads);
  if (d === undefined) throw c.malformed(`${what} hidden size ${hd} is not a multiple of ${heads} heads`);
  return c.op('transpose', [c.reshape(x, [b, s, heads, d])], { perm: SWAP });
}

/** A `[S, T]` bool table keeping key `j` for query `i` when `j <= i + past` (ONNX's causal mask). */
function causalTable(c: OpContext, s: Dim, t: Dim, past: Dim): Node {
  if (typeof s !== 'number' || typeof t !== 'number' || typeof past !== 'number')
    c.unsupported(`is_causal with ${s} queries over ${t} keys after ${past} past ones (symbolic and not aligned)`);
  c.checkTableSize(s * t, 'the causal mask');
  const keep = new Uint8Array(s * t);
  for (let i = 0; i < s; i++) for (let j = 0; j <= Math.min(i + past, t - 1); j++) keep[i * t + j] = 1;
  return c.fromHost(new Tensor('bool', [s, t], keep), 'causal_mask');
}

/** The mask padded along its last axis to `t` with masked entries (false, or -inf). */
function padMask(c: OpContext, mask: Node, t: Dim): Node {
  const last = mask.shape[mask.rank - 1];
  if (last === t) return mask;
  if (typeof last !== 'number' || typeof t !== 'number' || last > t) c.unsupported(`attn_mask last dim ${last} for ${t} keys`);
  const shape = [...mask.shape];
  shape[shape.length - 1] = t - last;
  const fill = mask.dtype === 'bool' ? c.scalar(0, 'bool') : c.scalar(-Infinity, mask);
  return c.op('concat', [mask, c.op('expand', [fill], { shape })], { axis: mask.rank - 1 });
}

/** `k` `[B, Hkv, T, D]` repeated to `[B, Hkv·g, T, D]` (query head `h` reads KV head `floor(h / g)`). */
function repeatHeads(c: OpContext, k: Node, g: number): Node {
  if (g === 1) return k;
  const [b, h, t, d] = k.shape;
  const five = c.reshape(k, [b, h, 1, t, d]);
  return c.reshape(c.op('expand', [five], { shape: [b, h, g, t, d] }), [b, dimMul(h, g), t, d]);
}

const attention: Converter = (c: OpContext) => {
  if (c.hasInput(6)) c.unsupported('nonpad_kv_seqlen');
  const qIn = c.x(0);
  const q = toBHSD(c, qIn, c.int('q_num_heads', 0), 'Q');
  const k = toBHSD(c, c.x(1), c.int('kv_num_heads', 0), 'K');
  const v = toBHSD(c, c.x(2), c.int('kv_num_heads', 0), 'V');
  const [pastK, pastV] = [c.opt(4), c.opt(5)];
  if (!pastK !== !pastV) throw c.malformed('past_key and past_value must be given together');
  const kAll = pastK ? c.op('concat', [pastK, k], { axis: 2 }) : k;
  const vAll = pastV ? c.op('concat', [pastV, v], { axis: 2 }) : v;
  const [b, hq, s, d] = q.shape;
  const [, hkv, t] = kAll.shape;
  const past = pastK ? pastK.shape[2] : 0;
  const dv = vAll.shape[3];
  if (typeof hq !== 'number' || typeof hkv !== 'number' || hq % hkv !== 0) throw c.malformed(`query heads ${hq} are not a multiple of KV heads ${hkv}`);
  if (!c.has('scale') && typeof d !== 'number') c.unsupported('default scale with a symbolic head size');
  const scale = c.has('scale') ? c.float('scale') : 1 / Math.sqrt(d as number);
  const softcap = c.float('softcap', 0);
  const mode = c.int('qk_matmul_output_mode', 0);
  if (mode < 0 || mode > 3) throw c.malformed(`qk_matmul_output_mode ${mode}`);
  const composed = softcap !== 0 || !!c.node.output[3];
  let mask = c.opt(3);
  if (mask) {
    if (mask.dtype !== 'bool' && mask.dtype !== q.dtype) mask = c.cast(mask, q.dtype);
    mask = padMask(c, mask, t);
  }
  // causal: key j is seen by query i when j <= i + past; with as many new keys as queries, that is the IR's flag
  const causal = c.int('is_causal', 0) === 1;
  const irCausal = causal && !composed && k.shape[2] === s;
  if (causal && !irCausal) {
    const table = causalTable(c, s, t, past);
    mask = !mask ? table : c.op('where', [table, mask, mask.dtype === 'bool' ? c.scalar(0, 'bool') : c.scalar(-Infinity, mask)]);
  }
  const layoutOut = (y: Node): Node => (qIn.rank === 3 ? c.reshape(c.op('transpose', [y], { perm: SWAP }), [b, s, dimMul(hq, dv)]) : y);
  const present = [c.out(kAll, c.type(1)), c.out(vAll, c.type(2))];
  if (!composed) {
    const [qs, ks, vs] = [q, kAll, vAll].map((x) => c.op('transpose', [x], { perm: SWAP }));
    const y = c.op('attention', mask ? [qs, ks, vs, mask] : [qs, ks, vs], { causal: irCausal, scale });
    return [c.out(layoutOut(c.op('transpose', [y], { perm: SWAP })), c.type(0)), ...present];
  }
  // composed, in the reference's order: scores, softcap, mask, softmax (each stage a qk_matmul_output mode)
  const g = hq / hkv;
  const stages: Node[] = [];
  let scores = c.op('mul', [c.op('matmul', [q, repeatHeads(c, kAll, g)], { transA: false, transB: true }), c.scalar(scale, q)]);
  stages.push(scores);
  if (softcap !== 0) scores = c.op('mul', [c.op('tanh', [c.op('div', [scores, c.scalar(softcap, scores)])]), c.scalar(softcap, scores)]);
  stages.push(scores);
  if (mask) scores = mask.dtype === 'bool' ? c.op('where', [mask, scores, c.scalar(-Infinity, scores)]) : c.op('add', [scores, mask]);
  stages.push(scores);
  const probs = c.op('softmax', [scores], { axis: 3 });
  stages.push(probs);
  const y = c.op('matmul', [probs, repeatHeads(c, vAll, g)], { transA: false, transB: false });
  return [c.out(layoutOut(y), c.type(0)), ...present, c.out(stages[mode], c.type(0))];
};

const rotaryEmbedding: Converter = (c: OpContext) => {
  const xIn = c.x(0);
  const cosCache = c.x(1);
  const sinCache = c.x(2);
  const positions = c.opt(3);
  const interleaved = c.int('interleaved', 0) === 1;
  let heads = c.int('num_heads', 0);
  // to [B, S, H, D]
  let x: Node;
  if (xIn.rank === 4) x = c.op('transpose', [xIn], { perm: SWAP });
  else if (xIn.rank === 3) {
    const [b, s, hd] = xIn.shape;
    if (!heads) {
      const half = cosCache.shape[cosCache.rank - 1];
      const hs = typeof half === 'number' && c.int('rotary_embedding_dim', 0) === 0 ? 2 * half : undefined;
      const n = hs === undefined ? undefined : dimDivExact(hd, hs);
      if (typeof n !== 'number') throw c.malformed('3-D input needs num_heads');
      heads = n;
    }
    const d = dimDivExact(hd, heads);
    if (d === undefined) throw c.malformed(`hidden size ${hd} is not a multiple of ${heads} heads`);
    x = c.reshape(xIn, [b, s, heads, d]);
  } else throw c.malformed(`input must be 3-D or 4-D, got [${xIn.shape.join(', ')}]`);
  const [b, s, h, d] = x.shape;
  if (typeof d !== 'number') c.unsupported('a symbolic head size');
  const rd = c.int('rotary_embedding_dim', 0) || d;
  if (rd % 2 !== 0 || rd > d) throw c.malformed(`rotary_embedding_dim ${rd} for head size ${d}`);
  const back = (y: Node): Node => (xIn.rank === 4 ? c.op('transpose', [y], { perm: SWAP }) : c.reshape(y, xIn.shape));
  // the rope op, when the caches hold the standard tables and positions index them
  if (positions && isFloat(x.dtype)) {
    const theta = cachedTheta(c, cosCache, sinCache, rd);
    if (theta !== undefined) {
      const y = c.op('rope', [x, c.cast(positions, 'i32')], { theta, style: interleaved ? 'interleaved' : 'half', rotaryDim: rd });
      return [c.out(back(y), c.type(0))];
    }
  }
  // composed: cos/sin [B, S, rd/2] broadcast over heads
  const table = (cache: Node): Node => {
    const rows = positions ? c.op('gather', [cache, positions.dtype === 'i64' ? positions : c.cast(positions, 'i32')], { axis: 0 }) : cache;
    const sliced = rows.shape[rows.rank - 1] === rd / 2 ? rows : c.op('slice', [rows], { axes: [rows.rank - 1], starts: [0], ends: [rd / 2], steps: [1] });
    return c.cast(c.reshape(sliced, [sliced.shape[0], sliced.shape[1], 1, rd / 2]), x.dtype);
  };
  const [cos, sin] = [table(cosCache), table(sinCache)];
  const part = (start: number, end: number, step = 1): Node => c.op('slice', [x], { axes: [3], starts: [start], ends: [end], steps: [step] });
  const [x1, x2] = interleaved ? [part(0, rd, 2), part(1, rd, 2)] : [part(0, rd / 2), part(rd / 2, rd)];
  const o1 = c.op('sub', [c.op('mul', [x1, cos]), c.op('mul', [x2, sin])]);
  const o2 = c.op('add', [c.op('mul', [x2, cos]), c.op('mul', [x1, sin])]);
  const rotated = interleaved
    ? c.reshape(c.op('concat', [unsqueeze(c, o1, [4]), unsqueeze(c, o2, [4])], { axis: 4 }), [b, s, h, rd])
    : c.op('concat', [o1, o2], { axis: 3 });
  const y = rd === d ? rotated : c.op('concat', [rotated, part(rd, d)], { axis: 3 });
  return [c.out(back(y), c.type(0))];
};

/** The `theta` of constant `[rows, rd/2]` caches holding the standard rotary tables, or `undefined`. */
function cachedTheta(c: OpContext, cosCache: Node, sinCache: Node, rd: number): number | undefined {
  if (cosCache.rank !== 2 || cosCache.shape[1] !== rd / 2 || typeof cosCache.shape[0] !== 'number') return undefined;
  const cosV = c.readValues(cosCache);
  const sinV = c.readValues(sinCache);
  if (!cosV || !sinV) return undefined;
  const rows = cosCache.shape[0];
  const half = rd / 2;
  // widen to [rows, rd] with each pair duplicated across the halves, the layout solveTheta reads
  const widen = (v: ArrayLike<number>): Float64Array => {
    const out = new Float64Array(rows * rd);
    for (let p = 0; p < rows; p++) for (let i = 0; i < half; i++) out[p * rd + i] = out[p * rd + i + half] = v[p * half + i];
    return out;
  };
  return solveTheta(widen(cosV), widen(sinV), rows, rd, 'half');
}

/** The attention converters, by ONNX op type. */
export const ATTENTION_CONVERTERS: Readonly<Record<string, Converter>> = {
  Attention: attention,
  RotaryEmbedding: rotaryEmbedding,
};

