/**
 * Weight layout (TVM Relax's `ConvertLayout`, for weights): every weight is stored, at compile time, in the layout the
 * kernel reading it wants, so nothing is transposed at run time. Three rewrite rules:
 *
 * | rule | fact |
 * | --- | --- |
 * | `weight-layout-matmul` | `matmul(A, W)` with `W` a dense 2-D weight stored against the preferred layout → `matmul(A, Wᵀ, transB = !transB)` with `Wᵀ` a new weight |
 * | `weight-layout-transpose` | `transpose(W, perm)` of a dense weight → a new weight holding the permuted data |
 * | `weight-layout-fused` | the same as the first rule for every `matmul` step of a `fused` program whose B operand is a weight operand of the fused node |
 *
 * **Preferred layout.** Decode GEMV on our target reads a weight best as `[N, K]` (one contiguous row per output;
 * measured 3.6x faster than `[K, N]` on lavapipe), which is `matmul(A, W, transB = true)`. `'NK'` is the default;
 * `options.preferredWeightLayout` or an optional `preferredWeightLayout` field of the device profile (`'NK' | 'KN'`)
 * can ask for `'KN'` (`transB = false`) instead; options beat the profile.
 *
 * **Recording the layout.** A {@link WeightEntry} has no room for metadata, so a new entry records its layout in its
 * name (`${name}^T` for a 2-D transpose, `${name}^T(2,0,1)` for another permutation), in the report (one `layout`
 * entry per new weight), and in {@link weightLayoutOrigin}, which maps a derived entry to its source and permutation.
 * Transposing a derived entry starts again from its source, so `Wᵀᵀ` is `W` itself, never a third copy. Transposed
 * entries are cached per (entry, permutation): compiling the same weights twice yields the same entries and nodes.
 *
 * **Duplication.** When a weight is read in two layouts (two matmuls with different `transB`, or a matmul and a
 * gather), both are kept and the report says what the second copy costs. Replaced entries that nothing reads any more
 * stay in the store for `dce` to drop.
 *
 * **Left alone**, with a report entry: encoded weights (quantized, codebook, sparse: their encoder chose the layout
 * and their groups run along the last axis) and matmul weights of rank other than 2. B operands that are not weights
 * (activations, KV caches) are computed at run time and are not this pass's business. Unlike `fold-constants`, this
 * pass transposes weights of any size: it is the pass that owns weight layout.
 *
 * Inside `fused` nodes every `matmul` step whose B operand is a weight operand of the fused node is handled (not only
 * a leading one); when another step also reads that operand, the transposed weight is added as a new operand, and
 * operands no step reads any more are dropped.
 * @module
 */
import { UsageError } from '../errors.js';
import { weightNode } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { WeightStore, type WeightArray, type WeightEntry } from '../ir/weights.js';
import type { DeviceProfile } from '../ir/device-profile.js';
import { countMatches, describeNodes, type Pass, type PassContext } from './pass.js';
import { pat } from './pattern.js';
import { rewriteGraph, type RewriteContext, type RewriteRule } from './rewrite.js';

/**
 * How a 2-D matmul weight is stored: `[N, K]` (one row per output, read with `transB`) or `[K, N]`.
 * @internal
 */
export type WeightLayout = 'NK' | 'KN';

/**
 * The layout used when neither the options nor the device profile name one.
 * @internal
 */
export const DEFAULT_WEIGHT_LAYOUT: WeightLayout = 'NK';

/**
 * Where a derived (transposed) weight entry came from.
 * @internal
 */
export interface WeightLayoutOrigin {
  /** The entry it was computed from. */
  readonly source: WeightEntry;
  /** `derived.shape[i] = source.shape[perm[i]]`. */
  readonly perm: readonly number[];
}

/**
 * The preferred layout of matmul weights: `options.preferredWeightLayout`, else the device profile's optional
 * `preferredWeightLayout` field, else {@link DEFAULT_WEIGHT_LAYOUT}. Throws {@link UsageError} for another value.
 * @internal
 */
export function preferredWeightLayout(options: Readonly<Record<string, unknown>>, device?: DeviceProfile): WeightLayout {
  const fromProfile = device ? (device as DeviceProfile & { readonly preferredWeightLayout?: unknown }).preferredWeightLayout : undefined;
  const v = options.preferredWeightLayout ?? fromProfile ?? DEFAULT_WEIGHT_LAYOUT;
  if (v !== 'NK' && v !== 'KN') throw new UsageError(`preferredWeightLayout must be 'NK' or 'KN', got ${JSON.stringify(v)}`);
  return v;
}

const origins = new WeakMap<WeightEntry, WeightLayoutOrigin>();
const transposedCache = new WeakMap<WeightEntry, Map<string, WeightEntry>>();

/**
 * The source and permutation of an entry this pass derived, or `undefined` for any other entry.
 * @internal
 */
export function weightLayoutOrigin(e: WeightEntry): WeightLayoutOrigin | undefined {
  return origins.get(e);
}

function isIdentity(perm: readonly number[]): boolean {
  return perm.every((p, i) => p === i);
}

function permuteData(values: WeightArray, shape: readonly number[], perm: readonly number[]): WeightArray {
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p]);
  const inStrides = new Array<number>(rank);
  for (let i = rank - 1, acc = 1; i >= 0; i--) {
    inStrides[i] = acc;
    acc *= shape[i];
  }
  const step = perm.map((p) => inStrides[p]);
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new (values.constructor as new (n: number) => WeightArray)(n);
  const idx = new Array<number>(rank).fill(0);
  let off = 0;
  for (let k = 0; k < n; k++) {
    out[k] = values[off];
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      off += step[d];
      if (idx[d] < outShape[d]) break;
      off -= step[d] * idx[d];
      idx[d] = 0;
    }
  }
  return out;
}

function derivedName(name: string, perm: readonly number[]): string {
  return perm.length === 2 ? `${name}^T` : `${name}^T(${perm.join(',')})`;
}

/**
 * A dense weight entry holding `e`'s data permuted by `perm` (`out.shape[i] = e.shape[perm[i]]`), named
 * `${name}^T`. An entry this pass derived is permuted from its source instead (the identity gives the source back),
 * and results are cached per (entry, permutation).
 * @internal
 */
export function transposeWeightEntry(e: WeightEntry, perm: readonly number[]): WeightEntry {
  if (e.encoding.kind !== 'dense') throw new UsageError(`cannot re-lay out weight '${e.name}': its ${e.encoding.kind} encoding fixes the layout`);
  if (perm.length !== e.shape.length || [...perm].sort((a, b) => a - b).some((p, i) => p !== i))
    throw new UsageError(`[${perm}] is not a permutation of the axes of weight '${e.name}' [${e.shape}]`);
  const origin = origins.get(e);
  if (origin) {
    const composed = perm.map((p) => origin.perm[p]);
    return isIdentity(composed) ? origin.source : transposeWeightEntry(origin.source, composed);
  }
  if (isIdentity(perm)) return e;
  let cache = transposedCache.get(e);
  if (!cache) transposedCache.set(e, (cache = new Map()));
  const key = perm.join(',');
  let out = cache.get(key);
  if (!out) {
    const values = permuteData(e.data.values, e.shape, perm);
    out = WeightStore.entry(derivedName(e.name, perm), e.dtype, perm.map((p) => e.shape[p]), { values });
    origins.set(out, Object.freeze({ source: e, perm: Object.freeze([...perm]) }));
    cache.set(key, out);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// rules

/** What one run of the pass records for its report. */
interface LayoutRun {
  readonly layout: WeightLayout;
  /** Why each entry the run produced (derived or restored) is read in its layout, by entry id. */
  readonly why: Map<string, string>;
  /** Weights left in their layout, with the reason. */
  readonly skipped: Map<string, string>;
}

function storedLayout(transB: boolean): WeightLayout {
  return transB ? 'NK' : 'KN';
}

function reasonFor(layout: WeightLayout): string {
  return layout === 'NK'
    ? 'stored [N, K] (one row per output) for the matmul, read with transB: decode GEMV reads this layout 3.6x faster than [K, N] on lavapipe'
    : 'stored [K, N] for the matmul, read without transB: the device profile (or options) prefers [K, N] weights';
}

/** The entry of `b` when it is a weight the rules may re-lay out as a matmul operand; records why not otherwise. */
function matmulWeight(b: Node, ctx: RewriteContext, run: LayoutRun): WeightEntry | undefined {
  if (!isOp(b, 'weight')) return undefined;
  const e = ctx.weights.get(b.attrs.id);
  if (e.encoding.kind !== 'dense') {
    run.skipped.set(e.name, `${e.encoding.kind} encoding fixes its layout`);
    return undefined;
  }
  if (e.shape.length !== 2) {
    run.skipped.set(e.name, `rank-${e.shape.length} (batched) weights are read as they are stored`);
    return undefined;
  }
  return e;
}

/** The weight node of `e` permuted by `perm`, added to the store when new. */
function permutedWeight(e: WeightEntry, perm: readonly number[], why: string, ctx: RewriteContext, run: LayoutRun): Node {
  const t = transposeWeightEntry(e, perm);
  run.why.set(t.id, why);
  return ctx.weights.has(t.id) ? weightNode(t) : ctx.addWeight(t);
}

function layoutRules(run: LayoutRun): RewriteRule[] {
  return [
    {
      name: 'weight-layout-matmul',
      root: 'matmul',
      apply: ({ node }, ctx) => {
        const [a, b] = node.inputs;
        const { transA, transB } = attrsOf(node, 'matmul');
        if (storedLayout(transB) === run.layout) return undefined;
        const e = matmulWeight(b, ctx, run);
        if (!e) return undefined;
        return makeNode('matmul', [a, permutedWeight(e, [1, 0], reasonFor(run.layout), ctx, run)], { ...node.attrs, transA, transB: !transB });
      },
    },
    {
      name: 'weight-layout-transpose',
      root: 'transpose',
      pattern: pat.op('transpose', [pat.weight('w')]),
      apply: ({ node, captures: { w } }, ctx) => {
        const { perm } = attrsOf(node, 'transpose');
        if (isIdentity(perm)) return undefined;
        const e = ctx.weights.get(attrsOf(w, 'weight').id);
        if (e.encoding.kind !== 'dense') {
          run.skipped.set(e.name, `${e.encoding.kind} encoding fixes its layout (the transpose stays a run-time op)`);
          return undefined;
        }
        return permutedWeight(e, perm, `transpose [${perm}] of the weight done at compile time (no transpose kernel at run time)`, ctx, run);
      },
    },
    {
      name: 'weight-layout-fused',
      root: 'fused',
      apply: ({ node }, ctx) => {
        const { kind, steps } = attrsOf(node, 'fused');
        const inputs = [...node.inputs];
        const out = steps.map((st) => ({ op: st.op, args: [...st.args], attrs: st.attrs }));
        let changed = false;
        steps.forEach((st, j) => {
          if (st.op !== 'matmul' || st.args[1] < 0) return;
          const bi = st.args[1];
          const { transB } = attrsOf(st, 'matmul');
          if (storedLayout(transB) === run.layout) return;
          const e = matmulWeight(node.inputs[bi], ctx, run);
          if (!e) return;
          const t = permutedWeight(e, [1, 0], `${reasonFor(run.layout)} (inside a fused ${kind} kernel)`, ctx, run);
          const sharedOperand = steps.some((s, k) => s.args.some((a, ai) => a === bi && !(k === j && ai === 1)));
          let at = inputs.indexOf(t);
          if (at < 0 && sharedOperand) at = inputs.push(t) - 1;
          else if (at < 0) inputs[(at = bi)] = t;
          out[j] = { op: 'matmul', args: [st.args[0], at], attrs: { ...st.attrs, transB: !transB } };
          changed = true;
        });
        if (!changed) return undefined;
        // drop operands no step reads any more, renumbering the references
        const renumber = new Map<number, number>();
        const kept: Node[] = [];
        inputs.forEach((x, i) => {
          if (!out.some((s) => s.args.includes(i))) return;
          renumber.set(i, kept.length);
          kept.push(x);
        });
        const steps2 = out.map((s) => ({ ...s, args: s.args.map((a) => (a >= 0 ? renumber.get(a)! : a)) }));
        return makeNode('fused', kept, { kind, steps: steps2 });
      },
    },
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// the pass

function entryBytes(e: WeightEntry): number {
  return Object.values(e.data).reduce((acc, a) => acc + a.byteLength, 0);
}

function usersOfWeights(g: Graph): Map<string, Node[]> {
  const m = new Map<string, Node[]>();
  for (const n of g.nodes())
    for (const x of new Set(n.inputs))
      if (isOp(x, 'weight')) {
        const id = x.attrs.id;
        let l = m.get(id);
        if (!l) m.set(id, (l = []));
        l.push(n);
      }
  return m;
}

function runLayout(graph: Graph, ctx: PassContext): Graph {
  const pass = 'layout';
  const run: LayoutRun = { layout: preferredWeightLayout(ctx.options, ctx.device), why: new Map(), skipped: new Map() };
  const r = rewriteGraph(graph, layoutRules(run), { options: { ...ctx.options, device: ctx.device } });
  countMatches(ctx, r.matches);
  const g = r.graph;
  const report = (message: string, nodes?: readonly string[]): void => ctx.report.add({ pass, kind: 'layout', message, ...(nodes ? { nodes } : {}) });
  const users = usersOfWeights(g);
  for (const [id, why] of run.why) {
    const readers = users.get(id);
    if (!readers) continue;
    const e = g.weights.get(id);
    const origin = weightLayoutOrigin(e);
    if (origin) report(`weight '${origin.source.name}' [${origin.source.shape}] → '${e.name}' [${e.shape}]: ${why}`, describeNodes(readers));
    else report(`weight '${e.name}' [${e.shape}] is read as stored again (its transposed copy was transposed back): ${why}`, describeNodes(readers));
    const src = origin?.source;
    const srcReaders = src ? users.get(src.id) : undefined;
    if (src && srcReaders)
      report(
        `weight '${src.name}' is kept in two layouts, [${src.shape}] ('${src.name}', read by ${srcReaders.length}) and [${e.shape}] ('${e.name}', read by ${readers.length}): ` +
          `${entryBytes(e)} extra bytes`,
        [...describeNodes(srcReaders), ...describeNodes(readers)],
      );
  }
  for (const [name, why] of run.skipped) report(`weight '${name}' left in its stored layout: ${why}`, [name]);
  return g;
}

/**
 * The `layout` pass: stores matmul weights in the layout their kernels read best (`[N, K]` by default) and turns
 * transposes of weights into transposed weights, at compile time; see the module comment.
 */
export const layoutPass: Pass = {
  name: 'layout',
  description: 'store weights pre-transposed in the layout their kernels read ([N, K] for decode GEMV by default): no transposes at run time',
  run: runLayout,
};
