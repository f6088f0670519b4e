/**
 * Centered keys (and optionally values) for a quantized KV cache: a calibrated per-(layer, KV head, channel) mean is
 * subtracted from every key before it is cached, so an int8/int4 cache spends its levels on how keys differ rather
 * than on the large, nearly constant component some channels carry (the slowest RoPE pairs, on Llama models).
 * Attention does not change: for a query `q`, `q · (k_j − μ) = q · k_j − q · μ`, and a shift common to every key `j`
 * cancels in the softmax. Values centered the same way get their mean added back to the attention output, which is
 * exact because the softmax weights sum to 1: `Σ_j p_j (v_j − ν) + ν = Σ_j p_j v_j`.
 *
 * The means are measured on the keys and values as the cache stores them (keys after RoPE, at each token's own
 * position) from a calibration text run through the CPU reference ({@link calibrateKvOffsets}) and applied as a graph
 * rewrite ({@link centerCachedKv}): `concat(past_k.L, k)` becomes `concat(past_k.L, k − μ_L)` (a `[1, 1, Hkv, D]`
 * weight), and with values `attention(q, K, concat(past_v.L, v))` becomes
 * `attention(q, K, concat(past_v.L, v − ν_L)) + ν_L` (ν repeated over each KV head's query heads). Every backend
 * then caches and attends to the same centered tensors; saved engines carry the means as weights.
 *
 * So that none of this costs a kernel of its own, the rewrite prefers forms the fusion passes absorb: when `v` is a
 * reshaped projection, `−ν` is that projection's bias (merged with q and k's, a matmul epilogue); when the attention
 * output is reshaped into the output projection alone, `ν` moves past it as the bias `ν·W_oᵀ`; the keys' shift and
 * scale and the queries' scale follow the rope (a rope epilogue).
 * @module
 */
import { InputError } from '../errors.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import type { Graph } from '../ir/graph.js';
import { makeNode, type Node } from '../ir/node.js';
import { decodeWeight, WeightStore } from '../ir/weights.js';
import { rewriteGraph, type RewriteContext } from '../passes/rewrite.js';
import { runGraph } from '../runtime/cpu/interpreter.js';
import { windowInputs } from './capture.js';

/** Calibrated means of what a KV cache stores, per layer index `L` (of `past_k.L` / `past_v.L`), head-major. */
export interface KvOffsets {
  /** KV heads. */
  readonly heads: number;
  /** Key head dim. */
  readonly headDim: number;
  /** Value head dim. */
  readonly valueDim: number;
  /** Per layer, the mean cached key (`heads × headDim`). */
  readonly keys: ReadonlyMap<number, Float32Array>;
  /** Per layer, the mean cached value (`heads × valueDim`). */
  readonly values: ReadonlyMap<number, Float32Array>;
  /**
   * Per layer, each key channel's spread (its largest deviation from its mean on the calibration text) over the mean
   * spread of its head's channels (`heads × headDim`): what {@link CenterOptions.scaleKeys} divides centered keys by, so
   * that every channel of a centered key spans about the same range.
   */
  readonly keySpread: ReadonlyMap<number, Float32Array>;
  /** Tokens averaged per layer. */
  readonly tokens: number;
}

/** What {@link centerCachedKv} centers. */
export interface CenterOptions {
  /** Center the values too (default false: keys only). */
  readonly values?: boolean;
  /**
   * Also divide each centered key channel by its relative spread and multiply the queries' channel by the same factor
   * (`q · k` unchanged): every channel of a cached key then uses the integer range alike (default false).
   */
  readonly scaleKeys?: boolean;
}

/** The `concat(past_<kind>.L, x)` nodes of a causal LM graph, by layer: what the cache appends each step. */
function appended(graph: Graph, kind: 'k' | 'v'): Map<number, { concat: Node; fresh: Node }> {
  const out = new Map<number, { concat: Node; fresh: Node }>();
  for (const n of graph.nodes()) {
    const l = layerOf(n, kind);
    if (l !== undefined) out.set(l, { concat: n, fresh: n.inputs[1] });
  }
  return out;
}

/** The layer of `concat(past_<kind>.L, x)`, else undefined. */
function layerOf(n: Node, kind: 'k' | 'v'): number | undefined {
  if (!isOp(n, 'concat') || n.inputs.length !== 2) return undefined;
  const past = n.inputs[0];
  const m = isOp(past, 'input') ? (kind === 'k' ? /^past_k\.(\d+)$/ : /^past_v\.(\d+)$/).exec(past.attrs.name) : null;
  return m ? Number(m[1]) : undefined;
}

function staticDims(n: Node, what: string): [number, number] {
  const [, , h, d] = n.shape;
  if (n.shape.length !== 4 || typeof h !== 'number' || typeof d !== 'number') throw new InputError(`KV offsets: cached ${what} must be [batch, seq, heads, dim] with static heads and dim, got [${n.shape.join(', ')}]`);
  return [h, d];
}

/**
 * Runs the windows through `graph` (positions from 0, empty caches) on the CPU reference and returns each layer's mean
 * cached key and value. Throws `InputError` when the graph caches no keys or a window is empty.
 */
export function calibrateKvOffsets(graph: Graph, windows: readonly (readonly number[])[], onProgress?: (line: string) => void): KvOffsets {
  const keys = appended(graph, 'k');
  const values = appended(graph, 'v');
  if (keys.size === 0 || values.size !== keys.size) throw new InputError('KV offsets: the graph does not cache keys and values (concat(past_k.L, k), concat(past_v.L, v))');
  if (!windows.length || windows.some((w) => w.length < 2)) throw new InputError('KV offsets need at least one token window of two or more tokens (its BOS is not counted)');
  const [heads, headDim] = staticDims([...keys.values()][0].fresh, 'keys');
  const [, valueDim] = staticDims([...values.values()][0].fresh, 'values');
  const watched = new Map<Node, { sum: Float64Array; lo?: Float64Array; hi?: Float64Array }>();
  const ranges = new Map<number, { lo: Float64Array; hi: Float64Array }>();
  const sums = { k: new Map<number, Float64Array>(), v: new Map<number, Float64Array>() };
  for (const [kind, map, row] of [['k', keys, heads * headDim], ['v', values, heads * valueDim]] as const)
    for (const [l, { fresh }] of map) {
      const sum = new Float64Array(row);
      sums[kind].set(l, sum);
      if (kind === 'k') {
        const range = { lo: new Float64Array(row).fill(Infinity), hi: new Float64Array(row).fill(-Infinity) };
        ranges.set(l, range);
        watched.set(fresh, { sum, ...range });
      } else watched.set(fresh, { sum });
    }
  let tokens = 0;
  windows.forEach((w, i) => {
    runGraph(graph, windowInputs(graph, w), {
      observe: (node, value) => {
        const w = watched.get(node);
        if (!w) return;
        const { sum: s, lo, hi } = w;
        const x = value.data as ArrayLike<number>;
        // the window's first position is BOS, whose keys and values are outliers (an attention sink): not counted
        for (let o = s.length; o < x.length; o += s.length)
          for (let j = 0; j < s.length; j++) {
            const v = x[o + j];
            s[j] += v;
            if (lo && hi) {
              if (v < lo[j]) lo[j] = v;
              if (v > hi[j]) hi[j] = v;
            }
          }
      },
    });
    tokens += w.length - 1;
    onProgress?.(`KV offsets: window ${i + 1}/${windows.length} (${w.length} tokens)`);
  });
  const mean = (m: Map<number, Float64Array>): Map<number, Float32Array> => new Map([...m].map(([l, s]) => [l, Float32Array.from(s, (x) => x / tokens)]));
  const keySpread = new Map<number, Float32Array>();
  for (const [l, { lo, hi }] of ranges) {
    const m = sums.k.get(l)!;
    // each channel's largest deviation from its mean, over the mean of its head's channels
    const dev = Float64Array.from(lo, (x, j) => Math.max(hi[j] - m[j] / tokens, m[j] / tokens - x, 0));
    const spread = new Float32Array(dev.length);
    for (let h = 0; h < heads; h++) {
      let avg = 0;
      for (let d = 0; d < headDim; d++) avg += dev[h * headDim + d] / headDim;
      // a channel that never moves keeps at least 1/1000 of its head's mean deviation
      for (let d = 0; d < headDim; d++) spread[h * headDim + d] = avg > 0 ? Math.max(dev[h * headDim + d] / avg, 1e-3) : 1;
    }
    keySpread.set(l, spread);
  }
  return { heads, headDim, valueDim, keys: mean(sums.k), values: mean(sums.v), keySpread, tokens };
}

/** The name of layer `l`'s key (`k`) or value (`v`) mean weight. */
function centerName(kind: 'k' | 'v', l: number): string {
  return `past_${kind}.${l}.center`;
}

/** Whether `fresh` is already `x − <the center weight of layer l>`, or (values) `reshape(matmul + <−ν bias>)`. */
function isCentered(fresh: Node, kind: 'k' | 'v', l: number): boolean {
  if (isOp(fresh, 'sub') && isOp(fresh.inputs[1], 'weight') && attrsOf(fresh.inputs[1], 'weight').name === centerName(kind, l)) return true;
  const add = isOp(fresh, 'reshape') ? fresh.inputs[0] : undefined;
  return !!add && isOp(add, 'add') && isOp(add.inputs[1], 'weight') && attrsOf(add.inputs[1], 'weight').name === `${centerName(kind, l)}.bias`;
}

/** The dense (decoded) values of a `weight` node's entry. */
function weightValues(w: Node, ctx: RewriteContext): Float32Array {
  return decodeWeight(ctx.weights.get(attrsOf(w, 'weight').id));
}

/** Whether `fresh` is already `(x − μ) · 1/spread` of layer l. */
function isScaled(fresh: Node, l: number): boolean {
  return isOp(fresh, 'mul') && isOp(fresh.inputs[1], 'weight') && attrsOf(fresh.inputs[1], 'weight').name === `${centerName('k', l)}.inv_spread`;
}

/**
 * `graph` with every cached key (and with `values`, every cached value) centered on `offsets`. Throws `InputError`
 * when a layer's offsets are missing or do not fit its cache (offsets calibrated on another model), or when a centered
 * value cache is read by something other than an attention.
 */
export function centerCachedKv(graph: Graph, offsets: KvOffsets, opts: CenterOptions = {}): Graph {
  for (const [kind, dim, means] of [['k', offsets.headDim, offsets.keys], ['v', offsets.valueDim, offsets.values]] as const) {
    if (kind === 'v' && !opts.values) continue;
    for (const [l, { fresh }] of appended(graph, kind)) {
      const mu = means.get(l);
      const [h, d] = staticDims(fresh, kind === 'k' ? 'keys' : 'values');
      if (!mu) throw new InputError(`KV offsets: none for layer ${l} (past_${kind}.${l})`);
      if (h !== offsets.heads || d !== dim || mu.length !== h * d) throw new InputError(`KV offsets: layer ${l}'s cached ${kind === 'k' ? 'keys' : 'values'} are [.., ${h}, ${d}], the offsets [${offsets.heads}, ${dim}]`);
    }
  }
  const weightOf = (kind: 'k' | 'v', l: number): ReturnType<typeof WeightStore.entry> =>
    WeightStore.entry(centerName(kind, l), 'f32', [1, 1, offsets.heads, kind === 'k' ? offsets.headDim : offsets.valueDim], { values: (kind === 'k' ? offsets.keys : offsets.values).get(l)! });
  const D = offsets.headDim;
  const Dv = offsets.valueDim;
  /** Per query head (head `h` reads KV head `floor(h / g)`), the KV heads' `dim`-vectors of `perKv`. */
  const perQueryHead = (perKv: Float32Array, hq: number, dim: number): Float32Array => {
    const g = hq / offsets.heads;
    return Float32Array.from({ length: hq * dim }, (_x, i) => perKv[Math.floor(Math.floor(i / dim) / g) * dim + (i % dim)]);
  };
  return rewriteGraph(graph, [
    {
      // the cache appends k − μ (divided by each channel's spread with scaleKeys)
      name: 'center-cached-keys',
      root: 'concat',
      apply({ node }, ctx) {
        const l = layerOf(node, 'k');
        const fresh = node.inputs[1];
        if (l === undefined || fresh.dtype !== 'f32' || isCentered(fresh, 'k', l) || isScaled(fresh, l)) return undefined;
        const centered = makeNode('sub', [fresh, ctx.addWeight(weightOf('k', l))]);
        if (!opts.scaleKeys) return makeNode('concat', [node.inputs[0], centered], node.attrs);
        const inv = WeightStore.entry(`${centerName('k', l)}.inv_spread`, 'f32', [1, 1, offsets.heads, D], { values: Float32Array.from(offsets.keySpread.get(l)!, (x) => 1 / x) });
        return makeNode('concat', [node.inputs[0], makeNode('mul', [centered, ctx.addWeight(inv)])], node.attrs);
      },
    },
    {
      // the cache appends v − ν (what the present_v output carries to the next step too); when v is a reshaped
      // projection read by nothing else, −ν becomes the projection's bias (a matmul epilogue, merged with q and k's)
      name: 'center-cached-values',
      root: 'concat',
      apply({ node }, ctx) {
        if (!opts.values) return undefined;
        const l = layerOf(node, 'v');
        const fresh = node.inputs[1];
        if (l === undefined || fresh.dtype !== 'f32' || isCentered(fresh, 'v', l)) return undefined;
        const mm = isOp(fresh, 'reshape') ? fresh.inputs[0] : undefined;
        if (mm && isOp(mm, 'matmul') && mm.shape[mm.rank - 1] === offsets.heads * Dv && ctx.useCount(mm) === 1 && !ctx.isOutput(mm)) {
          const bias = WeightStore.entry(`${centerName('v', l)}.bias`, 'f32', [offsets.heads * Dv], { values: Float32Array.from(offsets.values.get(l)!, (x) => -x) });
          return makeNode('concat', [node.inputs[0], makeNode('reshape', [makeNode('add', [mm, ctx.addWeight(bias)])], fresh.attrs)], node.attrs);
        }
        return makeNode('concat', [node.inputs[0], makeNode('sub', [fresh, ctx.addWeight(weightOf('v', l))])], node.attrs);
      },
    },
    {
      // the attention over a layer's cache, once: queries times the key spreads (1 without scaleKeys), which also
      // marks the attention as rewritten, and ν added back to its output when the values are centered
      name: 'attend-centered-cache',
      root: 'attention',
      apply({ node }, ctx) {
        if (!opts.scaleKeys && !opts.values) return undefined;
        const l = layerOf(node.inputs[1], 'k');
        const q = node.inputs[0];
        const marker = `${centerName('k', l ?? -1)}.query_spread`;
        if (l === undefined || (isOp(q, 'mul') && isOp(q.inputs[1], 'weight') && attrsOf(q.inputs[1], 'weight').name === marker)) return undefined;
        const hq = node.shape[2] as number;
        const spread = opts.scaleKeys ? offsets.keySpread.get(l)! : new Float32Array(offsets.heads * D).fill(1);
        const w = WeightStore.entry(marker, 'f32', [1, 1, hq, D], { values: perQueryHead(spread, hq, D) });
        const out = makeNode('attention', [makeNode('mul', [q, ctx.addWeight(w)]), ...node.inputs.slice(1)], node.attrs);
        const v = node.inputs[2];
        const lv = layerOf(v, 'v');
        if (!opts.values || lv === undefined || !isCentered(v.inputs[1], 'v', lv)) return out;
        const addBack = WeightStore.entry(`${centerName('v', lv)}.add_back`, 'f32', [1, 1, hq, Dv], { values: perQueryHead(offsets.values.get(lv)!, hq, Dv) });
        return makeNode('add', [out, ctx.addWeight(addBack)]);
      },
    },
    {
      // ν added back after the attention, when its output is reshaped into the output projection alone: moved past
      // the projection as a bias, (a + ν)·Wᵀ = a·Wᵀ + ν·Wᵀ (a matmul epilogue instead of a kernel of its own)
      name: 'fold-value-add-back',
      root: 'matmul',
      apply({ node }, ctx) {
        const [a, w] = node.inputs;
        const add = isOp(a, 'reshape') ? a.inputs[0] : undefined;
        const nu = add && isOp(add, 'add') ? add.inputs[1] : undefined;
        if (!add || !nu || !isOp(nu, 'weight') || !attrsOf(nu, 'weight').name.endsWith('.add_back') || !isOp(w, 'weight') || w.rank !== 2) return undefined;
        if (ctx.useCount(add) !== 1 || ctx.useCount(a) !== 1 || ctx.isOutput(add) || ctx.isOutput(a)) return undefined;
        const { transA, transB } = attrsOf(node, 'matmul');
        const [r, c] = w.shape as [number, number];
        const k = transB ? c : r;
        const n = transB ? r : c;
        const v = weightValues(nu, ctx);
        if (transA || v.length !== k || a.shape[a.rank - 1] !== k) return undefined;
        const wv = weightValues(w, ctx);
        const bias = new Float32Array(n);
        for (let j = 0; j < n; j++) {
          let acc = 0;
          for (let i = 0; i < k; i++) acc += v[i] * wv[transB ? j * k + i : i * n + j];
          bias[j] = acc;
        }
        const b = ctx.addWeight(WeightStore.entry(`${attrsOf(nu, 'weight').name}.projected`, 'f32', [n], { values: bias }));
        return makeNode('add', [makeNode('matmul', [makeNode('reshape', [add.inputs[0]], a.attrs), w], node.attrs), b]);
      },
    },
  ]).graph;
}
