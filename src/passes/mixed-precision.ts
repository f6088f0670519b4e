/**
 * Mixed precision (TVM Relax's `ToMixedPrecision`): chooses, per op, whether it stores its result (and computes) in
 * f32 or f16. Accumulating in f32 inside a kernel is the kernel's business; the IR records the storage dtype.
 *
 * **Driven by the device profile** (`options.precision.default`, `'auto'` when absent):
 * - `!device.hasF16`: everything stays f32 (report: "f16 unavailable"); f16 overrides are ignored and reported.
 * - `device.hasF16 && !device.f16Faster` (lavapipe, where f16 arithmetic measured ~2.7x slower than f32): everything
 *   stays f32 (report: "f16 slower on this device") unless the user forces f16 (`default: 'f16'`, or an `ops`,
 *   `layers` or `nodes` override asking for f16).
 * - f16 faster: matmuls and elementwise ops run in f16, under the sensitivity rules below.
 *
 * **Sensitivity rules** (what stays f32 when f16 is in use; see {@link F32_SENSITIVE_OPS}):
 * - `softmax`, `rmsnorm`, `layernorm`, the reductions `sum`/`mean`, and `exp`, `log`, `pow`;
 * - `attention` (its softmax over the scores is the sensitive part; a fused attention kernel could keep f16 storage
 *   with an f32 softmax, but until codegen says so the op stays f32 by default: force it with `ops.attention`);
 * - the residual stream: an `add` whose result feeds a norm (or a softmax: additive masks are far outside f16's
 *   range) or a graph output, possibly through data-movement ops, and every `add` continuing such a stream (one of
 *   its operands is a residual add). Bias adds inside a block are not on the stream and go f16.
 *
 * Data movement and exact selection (`reshape`, `transpose`, `slice`, `concat`, `gather`, `expand`, `where`,
 * `maximum`, `minimum`, `relu`, `neg`, `abs`, reduce-`max`) compute nothing that rounds, so they *follow* their
 * operands: f16 when every operand is f16, else f32 (see {@link FOLLOW_OPS}).
 *
 * **Leaves.** Graph inputs and outputs keep their declared dtypes (casts are inserted after inputs and before outputs).
 * f32 weights and constants that f16 ops read are converted at compile time, not cast at run time: a weight gets a
 * new store entry `${name}@f16` (dense: half bits in a `Uint16Array`; encoded weights keep their payload and get
 * the logical dtype f16, so their kernel dequantizes to f16), a constant becomes an f16 constant. A weight read by
 * both f32 and f16 ops (a tied embedding) is kept in both dtypes, and the report says so. The replaced f32 entries
 * stay in the store for `dce` to drop.
 *
 * **Casts** are inserted only at f32/f16 boundaries, one per (value, dtype) (nodes are interned, so consumers
 * share it). The pass never produces `cast(cast(x, f16), f32)` for an f32 `x`: that pair is lossy, so `simplify`
 * must not remove it, and it is avoided instead (a value is rounded to f16 only when an f16 op computes it).
 *
 * **Overrides** ({@link PrecisionOptions}, read from `options.precision`): `nodes` beats `layers` beats `ops` beats
 * the rules. A layer key (`'layers.3'`) matches weight names at a segment boundary (`layers.3.wq`,
 * `model.layers.3.wq`, not `layers.30.wq`); a node belongs to the layers its weight operands name, and a node
 * without weight operands belongs to a layer when all of its operands that belong anywhere belong to that layer (so
 * a layer's activations, rope and attention go with its projections, while the residual add joining two layers
 * belongs to neither). Layer overrides apply to compute ops, not to data movement, which follows its operands.
 *
 * Only nodes whose dtype is f32 are decided: i32/u32/bool values, f16 values and explicit `cast`s keep their dtype,
 * so the pass is idempotent. `fused` nodes keep their dtypes too: run this pass before fusion.
 *
 * Unlike most passes this one is not a rewrite-rule set: each decision depends on the node's users (the residual
 * stream), on the layer a node belongs to and on global options, and a local rule that casts around every node would
 * leave lossy `f32→f16→f32` pairs behind. It analyses the whole graph, then rebuilds it once, in topological order.
 *
 * The report has one `precision` entry per decision group (op kind and reason, or overridden layer), not per node.
 * @module
 */
import { UsageError } from '../errors.js';
import { weightNode } from '../ir/builder.js';
import type { DType } from '../ir/dtype.js';
import type { Graph, GraphOutput } from '../ir/graph.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, withInputs, type Node } from '../ir/node.js';
import { isOpName, type OpName } from '../ir/ops.js';
import { decodeWeight, floatToHalf, halfToFloat, WeightStore, type WeightEntry } from '../ir/weights.js';
import { describeNodes, type Pass, type PassContext } from './pass.js';

/** A storage (and compute) precision the pass can choose. */
export type Precision = 'f32' | 'f16';

/** User overrides of the precision decisions, read from `options.precision`. */
export interface PrecisionOptions {
  /**
   * `'auto'` (default): follow the device profile (f16 where faster and available, under the sensitivity rules).
   * `'f16'`: use f16 wherever the sensitivity rules allow, even where f16 is slower. `'f32'`: f32 everywhere
   * except where an override asks for f16.
   */
  readonly default?: Precision | 'auto';
  /** Precision per op name (`{ softmax: 'f16', matmul: 'f32' }`); beats the sensitivity rules. */
  readonly ops?: Readonly<Partial<Record<OpName, Precision>>>;
  /** Precision per layer key, matched against weight names (`{ 'layers.3': 'f32' }`); beats `ops`. */
  readonly layers?: Readonly<Record<string, Precision>>;
  /** Precision of individual nodes, by node or by node id (of the graph the pass receives); beats everything. */
  readonly nodes?: ReadonlyMap<Node, Precision> | Readonly<Record<string, Precision>>;
}

/**
 * Ops kept in f32 when f16 is in use, with the reason the report gives. `ops` overrides can still force them.
 * @internal
 */
export const F32_SENSITIVE_OPS: Readonly<Partial<Record<OpName, string>>> = Object.freeze({
  softmax: 'numerically sensitive: exponentials overflow f16 and the normalizing sum loses precision',
  rmsnorm: 'numerically sensitive: the mean of squares overflows f16 and the normalization amplifies rounding',
  layernorm: 'numerically sensitive: mean and variance lose precision in f16',
  sum: 'reduction: long f16 accumulations lose precision',
  mean: 'reduction: long f16 accumulations lose precision',
  exp: 'numerically sensitive: exp overflows f16 above 11.1',
  log: 'numerically sensitive: log of f16-rounded inputs loses relative precision',
  pow: 'numerically sensitive: pow overflows and underflows f16',
  attention: 'attention keeps its softmax over the scores in f32 (f32 by default; force with ops.attention)',
});

/**
 * Ops that only move or select values (exact in either dtype): they follow their operands' precision (f16 when all
 * are f16, else f32) rather than being decided, so they never add a cast of their own.
 * @internal
 */
export const FOLLOW_OPS: ReadonlySet<OpName> = new Set<OpName>(['reshape', 'transpose', 'slice', 'concat', 'gather', 'expand', 'where', 'maximum', 'minimum', 'relu', 'neg', 'abs', 'max']);

const LEAVES: ReadonlySet<OpName> = new Set<OpName>(['input', 'weight', 'constant']);
/** Ops a value passes through unchanged on its way to a norm, softmax or output (for the residual-stream rule). */
const MOVEMENT: ReadonlySet<OpName> = new Set<OpName>(['reshape', 'transpose', 'slice', 'expand', 'concat']);
const COMPARE: ReadonlySet<OpName> = new Set<OpName>(['equal', 'less', 'greater']);
const RESIDUAL_REASON = 'the running hidden state (an add feeding a norm, a softmax, a graph output or the next residual add) stays f32';
const FOLLOW_REASON = 'follows its operands (data movement and selection are exact in either dtype)';
const MAX_LISTED_NODES = 16;

/** Largest finite f16 value. */
const F16_MAX = 65504;

function isPrecision(v: unknown): v is Precision {
  return v === 'f32' || v === 'f16';
}

/**
 * Reads and checks `options.precision`; throws {@link UsageError} naming the bad field.
 * @internal
 */
export function readPrecisionOptions(options: Readonly<Record<string, unknown>>): PrecisionOptions {
  const raw = options.precision;
  if (raw === undefined) return {};
  if (raw === null || typeof raw !== 'object') throw new UsageError(`options.precision must be an object, got ${JSON.stringify(raw)}`);
  const p = raw as PrecisionOptions;
  if (p.default !== undefined && p.default !== 'auto' && !isPrecision(p.default))
    throw new UsageError(`options.precision.default must be 'auto', 'f32' or 'f16', got ${JSON.stringify(p.default)}`);
  for (const [k, v] of Object.entries(p.ops ?? {})) {
    if (!isOpName(k)) throw new UsageError(`options.precision.ops: unknown op '${k}'`);
    if (!isPrecision(v)) throw new UsageError(`options.precision.ops.${k} must be 'f32' or 'f16', got ${JSON.stringify(v)}`);
  }
  for (const [k, v] of Object.entries(p.layers ?? {}))
    if (!isPrecision(v)) throw new UsageError(`options.precision.layers['${k}'] must be 'f32' or 'f16', got ${JSON.stringify(v)}`);
  const nodes = p.nodes instanceof Map ? [...p.nodes.values()] : Object.values(p.nodes ?? {});
  for (const v of nodes) if (!isPrecision(v)) throw new UsageError(`options.precision.nodes: precision must be 'f32' or 'f16', got ${JSON.stringify(v)}`);
  return p;
}

function isBoundary(c: string): boolean {
  return c === '' || !/[A-Za-z0-9_]/.test(c);
}

/**
 * Whether weight `name` belongs to layer `key`: `key` occurs in it between segment boundaries.
 * @internal
 */
export function weightInLayer(name: string, key: string): boolean {
  if (!key) return false;
  for (let at = name.indexOf(key); at >= 0; at = name.indexOf(key, at + 1))
    if (isBoundary(at === 0 ? '' : name.charAt(at - 1)) && isBoundary(name.charAt(at + key.length))) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------------------------
// compile-time conversion of leaves

const f16Entries = new WeakMap<WeightEntry, WeightEntry>();
const f16Overflow = new WeakMap<WeightEntry, number>();

/**
 * The f16 version of an f32 weight entry, named `${name}@f16` (cached per entry, so converting the same weight twice
 * gives the same entry and the same graph nodes). Dense weights get half bits in a `Uint16Array`; encoded weights keep
 * their payload and get the logical dtype f16 (their kernel dequantizes to f16).
 * @internal
 */
export function weightToF16(e: WeightEntry): WeightEntry {
  let out = f16Entries.get(e);
  if (out) return out;
  if (e.dtype !== 'f32') throw new UsageError(`weightToF16: weight '${e.name}' is ${e.dtype}, not f32`);
  if (e.encoding.kind === 'dense') {
    const v = decodeWeight(e);
    const bits = new Uint16Array(v.length);
    let overflow = 0;
    for (let i = 0; i < v.length; i++) {
      bits[i] = floatToHalf(v[i]);
      if (Number.isFinite(v[i]) && Math.abs(v[i]) > F16_MAX) overflow++;
    }
    out = WeightStore.entry(`${e.name}@f16`, 'f16', e.shape, { values: bits });
    if (overflow) f16Overflow.set(out, overflow);
  } else out = WeightStore.entry(`${e.name}@f16`, 'f16', e.shape, e.data, e.encoding);
  f16Entries.set(e, out);
  return out;
}

function constantToF16(c: Node): Node {
  const values = attrsOf(c, 'constant').values.map((v) => (typeof v === 'number' ? halfToFloat(floatToHalf(v)) : v));
  return makeNode('constant', [], { dtype: 'f16', shape: [...c.shape], values });
}

function bytesOf(e: WeightEntry): number {
  return Object.values(e.data).reduce((acc, a) => acc + a.byteLength, 0);
}

// ---------------------------------------------------------------------------------------------------------------
// analysis

/** How a node's precision is determined. */
type Role = 'leaf' | 'fixed' | 'follow' | 'decide';

/** One decision group of the report. */
interface Group {
  readonly label: string;
  readonly precision: Precision;
  readonly reason: string;
  readonly nodes: Node[];
}

/** What the planner needs to know about the run. */
interface Setting {
  /** Whether the rules may pick f16 (device fast, or forced by `default: 'f16'`). */
  readonly rulesUseF16: boolean;
  /** Reason for f32 when the rules do not use f16. */
  readonly f32Reason: string;
  /** Reason for f16 where the rules pick it. */
  readonly f16Reason: string;
}

/** The result of analysing a graph: each node's role and precision, and the report groups. */
interface Plan {
  readonly flexible: Set<Node>;
  /** For every non-leaf, non-flexible node: the precision its f32 operands are given in (absent: as they are). */
  readonly operandPrecision: Map<Node, Precision>;
  readonly groups: Map<string, Group>;
}

function overrideOf(n: Node, p: PrecisionOptions): { precision: Precision; label: string; source: string } | undefined {
  const nodes = p.nodes;
  const byNode = nodes instanceof Map ? nodes.get(n) : nodes ? (nodes as Readonly<Record<string, Precision>>)[String(n.id)] : undefined;
  if (byNode) return { precision: byNode, label: `node ${n.op}#${n.id}`, source: 'options.precision.nodes' };
  const byOp = p.ops?.[n.op];
  if (byOp) return { precision: byOp, label: n.op, source: `options.precision.ops.${n.op}` };
  return undefined;
}

/**
 * The adds on the residual stream: those feeding a norm, a softmax or a graph output (possibly through data
 * movement), and those continuing such a stream.
 */
function residualAdds(graph: Graph, order: readonly Node[]): Set<Node> {
  const users = graph.users();
  const outputs = new Set(graph.outputNodes);
  const sink = new Map<Node, boolean>();
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    let s = outputs.has(n);
    for (const u of users.get(n) ?? []) {
      if (s) break;
      if ((u.op === 'rmsnorm' || u.op === 'layernorm' || u.op === 'softmax') && u.inputs[0] === n) s = true;
      else if (MOVEMENT.has(u.op) && sink.get(u)) s = true;
    }
    sink.set(n, s);
  }
  const stream = new Set<Node>();
  const residual = new Set<Node>();
  for (const n of order) {
    if (n.op === 'add' && n.dtype === 'f32' && (sink.get(n) || n.inputs.some((x) => stream.has(x)))) {
      residual.add(n);
      stream.add(n);
    } else if (MOVEMENT.has(n.op) && n.inputs.some((x) => stream.has(x))) stream.add(n);
  }
  return residual;
}

function plan(graph: Graph, setting: Setting, p: PrecisionOptions): Plan {
  const order = graph.nodes();
  const flexible = new Set<Node>();
  const precisionOf = new Map<Node, Precision>();
  const operandPrecision = new Map<Node, Precision>();
  const groups = new Map<string, Group>();
  const residual = residualAdds(graph, order);
  const layerKeys = Object.keys(p.layers ?? {}).sort((a, b) => b.length - a.length);
  const layerState = layerKeys.map(() => new Map<Node, boolean>());
  const weightNames = new Map<Node, string[]>();

  const group = (label: string, precision: Precision, reason: string, n: Node): void => {
    const key = `${label}\u0000${precision}\u0000${reason}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { label, precision, reason, nodes: [] }));
    g.nodes.push(n);
  };
  /** Precision an f32-typed operand has after the rewrite (flexible operands have none: they are materialized). */
  const newPrecision = (x: Node): Precision | undefined => (flexible.has(x) ? undefined : precisionOf.get(x) ?? 'f32');
  const vote = (n: Node): Precision | undefined => {
    const votes = n.inputs.filter((x) => x.dtype === 'f32').map(newPrecision).filter((v) => v !== undefined);
    if (votes.length === 0) return undefined;
    return votes.every((v) => v === 'f16') ? 'f16' : 'f32';
  };
  /** Names of the weights a node reads directly or through flexible (constant) data movement. */
  const namesOf = (n: Node): string[] => {
    let names = weightNames.get(n);
    if (!names) {
      names = [];
      for (const x of n.inputs) {
        if (isOp(x, 'weight')) names.push(x.attrs.name);
        else if (flexible.has(x)) names.push(...namesOf(x));
      }
      weightNames.set(n, names);
    }
    return names;
  };
  const layerOverride = (n: Node): { key: string; precision: Precision } | undefined => {
    for (let i = 0; i < layerKeys.length; i++) if (layerState[i].get(n)) return { key: layerKeys[i], precision: p.layers![layerKeys[i]] };
    return undefined;
  };

  for (const n of order) {
    let role: Role;
    const override = overrideOf(n, p);
    if (LEAVES.has(n.op)) role = 'leaf';
    else if (n.dtype !== 'f32' || n.op === 'cast' || n.op === 'fused') role = 'fixed';
    else if (FOLLOW_OPS.has(n.op) && !override) role = 'follow';
    else role = 'decide';

    if (role === 'leaf') {
      if (n.dtype === 'f32' && n.op !== 'input') flexible.add(n);
      continue;
    }
    // layer membership (needed by 'decide' nodes, and inherited through every non-flexible node)
    const names = namesOf(n);
    layerKeys.forEach((key, i) => {
      let state: boolean | undefined;
      if (names.length) state = names.every((nm) => weightInLayer(nm, key));
      else {
        const known = n.inputs.map((x) => layerState[i].get(x)).filter((s) => s !== undefined);
        if (known.length) state = known.every((s) => s);
      }
      if (state !== undefined) layerState[i].set(n, state);
    });

    if (role === 'fixed') {
      if (n.op === 'cast') continue;
      if (COMPARE.has(n.op)) operandPrecision.set(n, vote(n) ?? 'f32');
      else operandPrecision.set(n, 'f32');
      if (n.op === 'fused' && n.dtype === 'f32') group('fused', 'f32', 'fused programs keep their dtypes (run mixed-precision before fusion)', n);
      continue;
    }
    if (role === 'follow') {
      const v = vote(n);
      if (v === undefined) {
        layerKeys.forEach((_k, i) => layerState[i].delete(n));
        flexible.add(n);
        continue;
      }
      precisionOf.set(n, v);
      operandPrecision.set(n, v);
      group(n.op, v, FOLLOW_REASON, n);
      continue;
    }
    // decide
    let precision: Precision, label: string, reason: string;
    const layer = override ? undefined : layerOverride(n);
    if (override) {
      ({ precision, label } = override);
      reason = `user override (${override.source})`;
    } else if (layer) {
      precision = layer.precision;
      label = `layer '${layer.key}'`;
      reason = 'user override (options.precision.layers)';
    } else if (!setting.rulesUseF16) {
      [precision, label, reason] = ['f32', n.op, setting.f32Reason];
    } else if (F32_SENSITIVE_OPS[n.op]) {
      [precision, label, reason] = ['f32', n.op, F32_SENSITIVE_OPS[n.op]!];
    } else if (residual.has(n)) {
      [precision, label, reason] = ['f32', 'add (residual stream)', RESIDUAL_REASON];
    } else {
      [precision, label, reason] = ['f16', n.op, setting.f16Reason];
    }
    precisionOf.set(n, precision);
    operandPrecision.set(n, precision);
    group(label, precision, reason, n);
  }
  return { flexible, operandPrecision, groups };
}

// ---------------------------------------------------------------------------------------------------------------
// rebuild

interface Rebuilt {
  readonly outputs: GraphOutput[];
  readonly added: WeightEntry[];
  /** Original f32 entries converted to f16, with the dtypes they are read in. */
  readonly weightUses: Map<WeightEntry, Set<DType>>;
}

function rebuild(graph: Graph, pl: Plan): Rebuilt {
  const newOf = new Map<Node, Node>();
  const materialized = new Map<Node, Map<Precision, Node>>();
  const added = new Map<string, WeightEntry>();
  const weightUses = new Map<WeightEntry, Set<DType>>();

  const current = (x: Node): Node => newOf.get(x) ?? x;
  const materialize = (x: Node, r: Precision): Node => {
    let m = materialized.get(x);
    if (!m) materialized.set(x, (m = new Map()));
    let out = m.get(r);
    if (out) return out;
    if (isOp(x, 'weight')) {
      const e = graph.weights.get(x.attrs.id);
      let uses = weightUses.get(e);
      if (!uses) weightUses.set(e, (uses = new Set()));
      uses.add(r);
      if (r === 'f32') out = x;
      else {
        const f16 = weightToF16(e);
        added.set(f16.id, f16);
        out = weightNode(f16);
      }
    } else if (x.op === 'constant') out = r === 'f32' ? x : constantToF16(x);
    else out = withInputs(x, x.inputs.map((y) => (y.dtype === 'f32' ? materialize(y, r) : current(y))));
    m.set(r, out);
    return out;
  };
  const operand = (x: Node, r: Precision | undefined): Node => {
    if (pl.flexible.has(x)) return materialize(x, r ?? 'f32');
    const v = current(x);
    if (r === undefined || x.dtype !== 'f32' || v.dtype === r) return v;
    return makeNode('cast', [v], { to: r });
  };

  for (const n of graph.nodes()) {
    if (!n.inputs.length || pl.flexible.has(n)) continue;
    const r = pl.operandPrecision.get(n);
    newOf.set(
      n,
      withInputs(
        n,
        n.inputs.map((x) => operand(x, r)),
      ),
    );
  }
  const outputs = graph.outputs.map((o) => {
    const declared = o.node.dtype;
    const node = declared === 'f32' || declared === 'f16' ? operand(o.node, declared) : current(o.node);
    return { name: o.name, node };
  });
  return { outputs, added: [...added.values()], weightUses };
}

// ---------------------------------------------------------------------------------------------------------------
// the pass

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function listed(nodes: readonly Node[]): string[] {
  const shown = describeNodes(nodes.slice(0, MAX_LISTED_NODES));
  if (nodes.length > MAX_LISTED_NODES) shown.push(`… and ${nodes.length - MAX_LISTED_NODES} more`);
  return shown;
}

function asksForF16(p: PrecisionOptions): boolean {
  const nodes = p.nodes instanceof Map ? [...p.nodes.values()] : Object.values(p.nodes ?? {});
  return p.default === 'f16' || Object.values(p.ops ?? {}).includes('f16') || Object.values(p.layers ?? {}).includes('f16') || nodes.includes('f16');
}

function hasOverrides(p: PrecisionOptions): boolean {
  const nodes = p.nodes instanceof Map ? p.nodes.size : Object.keys(p.nodes ?? {}).length;
  return Object.keys(p.ops ?? {}).length > 0 || Object.keys(p.layers ?? {}).length > 0 || nodes > 0;
}

/** Runs the analysis and the rebuild; see the module comment. */
function runMixedPrecision(graph: Graph, ctx: PassContext): Graph {
  const pass = 'mixed-precision';
  const device = ctx.device;
  const p = readPrecisionOptions(ctx.options);
  const mode = p.default ?? 'auto';
  const forced = asksForF16(p);
  const report = (message: string, nodes?: readonly string[]): void => ctx.report.add({ pass, kind: 'precision', message, ...(nodes ? { nodes } : {}) });

  let setting: Setting;
  if (!device.hasF16) {
    report(`f16 unavailable on ${device.name} (no shader-f16): every op stays f32${forced ? '; precision overrides asking for f16 are ignored' : ''}`);
    return graph;
  }
  if (mode === 'f32') {
    if (!forced) {
      report(`options.precision.default is 'f32': every op stays f32`);
      return graph;
    }
    setting = { rulesUseF16: false, f32Reason: "options.precision.default is 'f32'", f16Reason: '' };
  } else if (!device.f16Faster) {
    const slower = `f16 slower on this device (${device.name}: f16 arithmetic measured slower than f32)`;
    if (!forced) {
      if (hasOverrides(p)) report(`${slower}: every op stays f32 (the overrides given only ask for f32)`);
      else report(`${slower}: every op stays f32; force f16 with options.precision`);
      return graph;
    }
    report(`${slower}, but options.precision asks for f16: ${mode === 'f16' ? 'the sensitivity rules apply as on a fast device' : 'only the overridden ops go f16'}`);
    setting = mode === 'f16' ? { rulesUseF16: true, f32Reason: '', f16Reason: "forced by options.precision.default = 'f16'" } : { rulesUseF16: false, f32Reason: slower, f16Reason: '' };
  } else {
    setting = { rulesUseF16: true, f32Reason: '', f16Reason: `f16 is faster on ${device.name}` };
  }

  const pl = plan(graph, setting, p);
  for (const g of pl.groups.values()) report(`${g.label} → ${g.precision}: ${g.reason} (${plural(g.nodes.length, 'node')})`, listed(g.nodes));

  const r = rebuild(graph, pl);
  if (r.outputs.every((o, i) => o.node === graph.outputs[i].node) && r.added.every((e) => graph.weights.has(e.id))) return graph;
  const result = graph.withOutputs(r.outputs, graph.weights.with(...r.added.filter((e) => !graph.weights.has(e.id))));

  const live = new Set<string>();
  for (const n of result.nodes()) if (isOp(n, 'weight')) live.add(n.attrs.id);
  const converted = [...r.weightUses.entries()].filter(([, uses]) => uses.has('f16'));
  if (converted.length) {
    const before = converted.reduce((acc, [e]) => acc + bytesOf(e), 0);
    const after = converted.reduce((acc, [e]) => acc + bytesOf(weightToF16(e)), 0);
    report(`converted ${plural(converted.length, 'weight')} to f16 at compile time (${before} → ${after} bytes)`, converted.map(([e]) => `${e.name} → ${e.name}@f16`));
    for (const [e] of converted) {
      const overflow = f16Overflow.get(weightToF16(e));
      if (overflow) report(`weight '${e.name}': ${plural(overflow, 'value')} beyond the f16 range (±${F16_MAX}) became ±inf`, [e.name]);
    }
  }
  for (const [e, uses] of converted)
    if (uses.has('f32') && live.has(e.id))
      report(`weight '${e.name}' is kept in both f32 and f16 (read by f32 and f16 ops): ${bytesOf(e)} + ${bytesOf(weightToF16(e))} bytes`, [e.name, `${e.name}@f16`]);
  const old = new Set(graph.nodes());
  const casts = result.nodes().filter((n) => n.op === 'cast' && !old.has(n));
  if (casts.length) report(`inserted ${plural(casts.length, 'cast')} at f32/f16 boundaries`, listed(casts));
  return result;
}

/**
 * The `mixed-precision` pass: chooses f32 or f16 per op from the device profile, the sensitivity rules and
 * `options.precision` ({@link PrecisionOptions}); converts weights read in f16 at compile time and inserts casts only
 * at f32/f16 boundaries. Graph inputs and outputs keep their dtypes.
 */
export const mixedPrecisionPass: Pass = {
  name: 'mixed-precision',
  description: 'choose f32 or f16 per op (device profile, sensitivity rules, user overrides); convert weights at compile time, cast at boundaries',
  run: runMixedPrecision,
};
