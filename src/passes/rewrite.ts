/**
 * The rewrite driver: one engine runs every rule-based pass (tinygrad's `graph_rewrite`, MLIR's greedy driver).
 *
 * A {@link RewriteRule} names the op(s) it is rooted at, optionally a {@link Pattern} to match there, and a
 * `benefit` (higher first). Its `apply` returns a replacement node (built with `makeNode`, so it is interned and
 * type-checked) or `undefined`; it never mutates anything, and all graph-level effects (new weights) go through the
 * {@link RewriteContext}.
 *
 * {@link rewriteGraph} sweeps the graph bottom-up in topological order, rebuilding each node on its already-rewritten
 * operands and applying rules at it until none fires; then it sweeps again until a sweep changes nothing. Everything
 * is iterative (no recursion over the graph), and one sweep costs O(nodes × rules rooted at each node's op).
 *
 * Guards:
 * - A replacement must have the dtype and shape of the node it replaces, or {@link VerifyError} is thrown naming the
 *   rule and printing both. A rule that tries to build an ill-typed node (`makeNode` throws `ShapeError`) gets the
 *   same treatment.
 * - If the rules at one node return to a node they already produced there (a ping-pong such as `A: x→y`, `B: y→x`),
 *   or fire more than `ruleLimit` times at one node, or the graph still changes after `maxIterations` sweeps,
 *   {@link RewriteLimitError} is thrown naming the rules involved. A rule set that does not converge is a bug, so
 *   the driver stops with an error rather than returning a half-rewritten graph.
 * @module
 */
import { ShapeError, TensorwrightError, VerifyError } from '../errors.js';
import { weightNode } from '../ir/builder.js';
import { shapeEquals } from '../ir/dim.js';
import type { Graph, GraphOutput } from '../ir/graph.js';
import { withInputs, type Node } from '../ir/node.js';
import type { OpName } from '../ir/ops.js';
import { printNodeContext } from '../ir/printer.js';
import type { WeightEntry, WeightStore } from '../ir/weights.js';
import { matchPattern, type Captures, type Pattern } from './pattern.js';

/** What a rule's `apply` receives: the node the rule is rooted at and what its pattern captured. */
export interface RewriteMatch {
  /** The node being rewritten (already rebuilt on rewritten operands). */
  readonly node: Node;
  /** Captures bound by the rule's pattern (empty when it has none). */
  readonly captures: Captures;
}

/** The services and facts a rule may use. Rules must not keep it past their `apply` call. */
export interface RewriteContext {
  /** The graph as it stood at the start of the current sweep. */
  readonly graph: Graph;
  /** The current weight store (including weights added during this rewrite). */
  readonly weights: WeightStore;
  /** Adds a weight to the store (persistently: the input graph's store is untouched) and returns its `weight` node. */
  addWeight(entry: WeightEntry): Node;
  /**
   * Number of distinct nodes using `node`, counted in the graph as it stood at the start of the current sweep (for a
   * node that replaced others in this sweep, the users of those it replaced). A node that a rule created during this
   * sweep has no known users yet and counts as `Infinity`, so "only if it has a single user" decisions wait for the
   * next sweep, where counts are exact. Graph outputs are not counted: see {@link RewriteContext.isOutput}.
   */
  useCount(node: Node): number;
  /** Whether `node` is (or replaced) one of the graph's outputs. */
  isOutput(node: Node): boolean;
  /** Free-form options of the pass (device profile, thresholds, …). */
  readonly options: Readonly<Record<string, unknown>>;
}

/** A rewrite rule. */
export interface RewriteRule {
  /** Name used in match counts, reports and error messages. */
  readonly name: string;
  /** The op(s) this rule is rooted at: it is only tried on nodes with one of these ops. */
  readonly root: OpName | readonly OpName[];
  /** A pattern the root node must match before `apply` is called (once per match, until one returns a node). */
  readonly pattern?: Pattern;
  /** Priority among rules rooted at the same op: higher is tried first (default 1; ties keep list order). */
  readonly benefit?: number;
  /** Returns the replacement for `match.node`, or `undefined` (or the node itself) to decline. Must not mutate. */
  apply(match: RewriteMatch, ctx: RewriteContext): Node | undefined;
}

/** Options of {@link rewriteGraph}. */
export interface RewriteOptions {
  /** Most sweeps (default 32): the last one must change nothing, or {@link RewriteLimitError} is thrown. */
  maxIterations?: number;
  /** Most rule applications at one node within one sweep (default 64). */
  ruleLimit?: number;
  /** Free-form options handed to rules as {@link RewriteContext.options}. */
  options?: Readonly<Record<string, unknown>>;
}

/** Result of {@link rewriteGraph}. */
export interface RewriteResult {
  /** The rewritten graph (the input graph itself, by identity, when no rule fired). */
  readonly graph: Graph;
  /** How many times each rule fired, by rule name (rules that never fired are absent). */
  readonly matches: Record<string, number>;
  /** Sweeps run, the last one being the sweep that found nothing to do. */
  readonly sweeps: number;
}

/** A rule set did not converge: a ping-pong between rules, or too many rewrites at a node or sweeps overall. */
export class RewriteLimitError extends TensorwrightError {
  /** The rules involved (in the order they fired, for a ping-pong; all that fired, for the sweep limit). */
  readonly rules: readonly string[];
  constructor(rules: readonly string[], message: string) {
    super('REWRITE_DID_NOT_CONVERGE', message);
    this.rules = rules;
  }
}

const DEFAULT_MAX_ITERATIONS = 32;
const DEFAULT_RULE_LIMIT = 64;

/** Rules grouped by root op, each list sorted by descending benefit (stable). */
function indexRules(rules: readonly RewriteRule[]): Map<OpName, RewriteRule[]> {
  const index = new Map<OpName, RewriteRule[]>();
  for (const rule of rules)
    for (const op of typeof rule.root === 'string' ? [rule.root] : rule.root) {
      let list = index.get(op);
      if (!list) index.set(op, (list = []));
      list.push(rule);
    }
  for (const list of index.values()) list.sort((a, b) => (b.benefit ?? 1) - (a.benefit ?? 1));
  return index;
}

function sameType(a: Node, b: Node): boolean {
  return a.dtype === b.dtype && shapeEquals(a.shape, b.shape);
}

function illTyped(rule: RewriteRule, node: Node, replacement: Node): VerifyError {
  return new VerifyError(
    `rewrite rule '${rule.name}' replaced a ${node.typeString()} node with a ${replacement.typeString()} one\n` +
      `node:\n${printNodeContext(node)}\nreplacement:\n${printNodeContext(replacement)}`,
  );
}

function rebuiltType(old: Node, rebuilt: Node): VerifyError {
  return new VerifyError(
    `rebuilding a '${old.op}' node on rewritten operands of the same types changed its type from ${old.typeString()} to ` +
      `${rebuilt.typeString()} (its op's attribute normalization is not idempotent)\nnode:\n${printNodeContext(old)}`,
  );
}

/** The state of one sweep; implements the context rules see. */
class Sweep implements RewriteContext {
  readonly graph: Graph;
  readonly options: Readonly<Record<string, unknown>>;
  private store: WeightStore;
  private pending: WeightEntry[] = [];
  /** Old nodes each node stands for (a node that a rule produced maps to the nodes it replaced). */
  readonly origins = new Map<Node, Node[]>();
  private usersOf: Map<Node, Set<Node>> | undefined;
  private readonly outputs: Set<Node>;

  constructor(graph: Graph, store: WeightStore, options: Readonly<Record<string, unknown>>) {
    this.graph = graph;
    this.store = store;
    this.options = options;
    this.outputs = new Set(graph.outputNodes);
  }

  get weights(): WeightStore {
    if (this.pending.length) {
      this.store = this.store.with(...this.pending);
      this.pending = [];
    }
    return this.store;
  }

  addWeight(entry: WeightEntry): Node {
    this.pending.push(entry);
    return weightNode(entry);
  }

  private originsOf(node: Node): readonly Node[] | undefined {
    const o = this.origins.get(node);
    if (o) return o;
    return this.users().has(node) || this.outputs.has(node) ? [node] : undefined;
  }

  private users(): Map<Node, Set<Node>> {
    if (!this.usersOf) {
      const m = new Map<Node, Set<Node>>();
      for (const n of this.graph.nodes()) {
        if (!m.has(n)) m.set(n, new Set());
        for (const x of n.inputs) {
          let s = m.get(x);
          if (!s) m.set(x, (s = new Set()));
          s.add(n);
        }
      }
      this.usersOf = m;
    }
    return this.usersOf;
  }

  useCount(node: Node): number {
    const origins = this.originsOf(node);
    if (!origins) return Infinity;
    if (origins.length === 1) return this.users().get(origins[0])?.size ?? 0;
    const own = new Set(origins);
    const all = new Set<Node>();
    for (const o of origins) for (const u of this.users().get(o) ?? []) if (!own.has(u)) all.add(u);
    return all.size;
  }

  isOutput(node: Node): boolean {
    return (this.originsOf(node) ?? []).some((o) => this.outputs.has(o));
  }

  /** Records that `replacement` now stands for `old`. */
  stand(old: Node, replacement: Node): void {
    let o = this.origins.get(replacement);
    if (!o) {
      o = replacement !== old && this.users().has(replacement) ? [replacement] : [];
      this.origins.set(replacement, o);
    }
    if (!o.includes(old)) o.push(old);
  }
}

/**
 * Rewrites `graph` with `rules` to a fixpoint (see the module comment for the sweep order and the guards). Throws
 * {@link VerifyError} when a rule returns a replacement of another type, {@link RewriteLimitError} when the rules do
 * not converge.
 */
export function rewriteGraph(graph: Graph, rules: readonly RewriteRule[], opts: RewriteOptions = {}): RewriteResult {
  const index = indexRules(rules);
  const maxIterations = opts.maxIterations ?? DEFAULT_MAX_ITERATIONS;
  const ruleLimit = opts.ruleLimit ?? DEFAULT_RULE_LIMIT;
  const options = opts.options ?? {};
  const matches: Record<string, number> = {};
  let current = graph;
  for (let sweep = 1; ; sweep++) {
    const ctx = new Sweep(current, current.weights, options);
    const fired: Record<string, number> = {};
    const memo = new Map<Node, Node>();
    for (const old of current.nodes()) {
      let node = old.inputs.length ? withInputs(old, old.inputs.map((x) => memo.get(x)!)) : old;
      if (node !== old && !sameType(old, node)) throw rebuiltType(old, node);
      if (index.has(node.op)) node = rewriteNode(node, ctx, index, ruleLimit, fired);
      memo.set(old, node);
      ctx.stand(old, node);
    }
    for (const [name, count] of Object.entries(fired)) matches[name] = (matches[name] ?? 0) + count;
    if (Object.keys(fired).length === 0) return { graph: current, matches, sweeps: sweep };
    if (sweep >= maxIterations) {
      const names = Object.keys(fired);
      throw new RewriteLimitError(
        names,
        `rewrite did not converge after ${maxIterations} sweeps; rules still firing in the last sweep: ${Object.entries(fired)
          .map(([n, c]) => `${n} (${c}x)`)
          .join(', ')}`,
      );
    }
    const outputs: GraphOutput[] = current.outputs.map((o) => ({ name: o.name, node: memo.get(o.node)! }));
    current = current.withOutputs(outputs, ctx.weights);
  }
}

/** Applies rules at one node until none fires; returns the final node. */
function rewriteNode(start: Node, ctx: Sweep, index: Map<OpName, RewriteRule[]>, ruleLimit: number, fired: Record<string, number>): Node {
  let node = start;
  const seen: Node[] = [start];
  const trail: string[] = [];
  for (;;) {
    const step = applyFirst(node, ctx, index.get(node.op) ?? []);
    if (!step) return node;
    const [rule, replacement] = step;
    fired[rule.name] = (fired[rule.name] ?? 0) + 1;
    trail.push(rule.name);
    if (seen.includes(replacement))
      throw new RewriteLimitError(
        [...new Set(trail)],
        `rewrite rules ping-pong at a node: ${trail.join(' -> ')} returned to a node they had already produced\nnode:\n${printNodeContext(start)}`,
      );
    if (trail.length > ruleLimit)
      throw new RewriteLimitError(
        [...new Set(trail)],
        `more than ${ruleLimit} rewrites at one node (rules: ${[...new Set(trail)].join(', ')}); the rule set does not converge\nnode:\n${printNodeContext(start)}`,
      );
    seen.push(replacement);
    node = replacement;
  }
}

/** The first rule (by benefit) that returns a replacement for `node`, with that replacement (type-checked). */
function applyFirst(node: Node, ctx: RewriteContext, rules: readonly RewriteRule[]): [RewriteRule, Node] | undefined {
  for (const rule of rules) {
    const matches = rule.pattern ? matchPattern(rule.pattern, node) : [{}];
    for (const captures of matches) {
      let replacement: Node | undefined;
      try {
        replacement = rule.apply({ node, captures }, ctx);
      } catch (e) {
        // building an ill-typed node throws ShapeError; inside a pass that is a bug in the rule: say which
        if (e instanceof ShapeError) throw new VerifyError(`rewrite rule '${rule.name}' built an ill-typed node (${e.message})\nnode:\n${printNodeContext(node)}`);
        throw e;
      }
      if (replacement === undefined || replacement === node) continue;
      if (!sameType(node, replacement)) throw illTyped(rule, node, replacement);
      return [rule, replacement];
    }
  }
  return undefined;
}
