/**
 * What a pass is: a named, pure `Graph -> Graph` function with a context holding options (device profile,
 * thresholds) and the {@link OptimizationReport} it appends to. {@link rewritePass} turns a list of rewrite rules
 * into a pass, which is how most passes should be written.
 * @module
 */
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import type { DeviceProfile } from '../ir/device-profile.js';
import type { Target } from '../ir/target.js';
import { rewriteGraph, type RewriteRule } from './rewrite.js';

/** What a report entry is about. */
export type ReportKind = 'fused' | 'folded' | 'removed' | 'precision' | 'layout' | 'memory' | 'info';

/** One line of the optimization report. */
export interface ReportEntry {
  /** The pass that wrote it. */
  readonly pass: string;
  /** What kind of change it describes. */
  readonly kind: ReportKind;
  /** Human-readable description. */
  readonly message: string;
  /** The nodes involved, as printed text or names, when useful. */
  readonly nodes?: readonly string[];
}

/** What the passes of one pipeline run did, in order. */
export class OptimizationReport {
  private readonly list: ReportEntry[] = [];
  /** Appends an entry. */
  add(entry: ReportEntry): void {
    this.list.push(Object.freeze({ ...entry }));
  }
  /** All entries, in the order they were added. */
  get entries(): readonly ReportEntry[] {
    return this.list;
  }
  /** Entries of one kind. */
  ofKind(kind: ReportKind): ReportEntry[] {
    return this.list.filter((e) => e.kind === kind);
  }
  /** Entries written by one pass. */
  ofPass(pass: string): ReportEntry[] {
    return this.list.filter((e) => e.pass === pass);
  }
  /** The report as text, one `[pass] kind: message` line per entry. */
  toString(): string {
    return this.list.map((e) => `[${e.pass}] ${e.kind}: ${e.message}`).join('\n');
  }
}

/** Options passes read: the device profile plus free-form, pass-specific settings. */
export interface PassOptions {
  /** The target device. */
  readonly device?: DeviceProfile;
  /** Pass-specific settings (e.g. `maxFoldElements` for fold-constants). */
  readonly [key: string]: unknown;
}

/** What a pass sees besides the graph. */
export interface PassContext {
  /** Options for this pipeline run (`options.device` is the same profile as {@link PassContext.device}). */
  readonly options: PassOptions;
  /** The target device's cost profile (the target's `profile` when there is a target). */
  readonly device: DeviceProfile;
  /**
   * The target, when compiling for a WebGPU device (absent for the CPU reference backend): fusion passes form only
   * its {@link Target.fusion} patterns, lowering stages read its limits and KV-cache layout.
   */
  readonly target?: Target;
  /** The report passes append to. */
  readonly report: OptimizationReport;
  /** Rewrite-rule match counts of the whole run, by rule name; {@link countMatches} adds to it. */
  readonly matches: Record<string, number>;
}

/** A graph pass. */
export interface Pass {
  /** Registry name, kebab-case (`fold-constants`). */
  readonly name: string;
  /** One line saying what the pass does. */
  readonly description: string;
  /** Runs the pass. Must be pure: the input graph is left as it was. */
  run(graph: Graph, ctx: PassContext): Graph;
  /** The text `--print-ir-after` shows for this pass's result (default: the IR); a lowering stage adds what it decided. */
  print?(graph: Graph): string;
}

/** Adds rewrite match counts to the run's totals. */
export function countMatches(ctx: PassContext, matches: Readonly<Record<string, number>>): void {
  for (const [rule, n] of Object.entries(matches)) ctx.matches[rule] = (ctx.matches[rule] ?? 0) + n;
}

/** Specification of a pass made of rewrite rules. */
export interface RewritePassSpec {
  /** Pass name. */
  readonly name: string;
  /** What the pass does. */
  readonly description: string;
  /** The rules. */
  readonly rules: readonly RewriteRule[];
  /** Kind of the report entry written for each rule that fired (default `info`). */
  readonly kind?: ReportKind;
  /** Sweep limit (see {@link rewriteGraph}). */
  readonly maxIterations?: number;
  /** Per-node rewrite limit (see {@link rewriteGraph}). */
  readonly ruleLimit?: number;
}

/**
 * A pass that runs `rules` with {@link rewriteGraph} (options from the pass context, device included), adds the match
 * counts to the run's totals and reports each rule that fired.
 */
export function rewritePass(spec: RewritePassSpec): Pass {
  return {
    name: spec.name,
    description: spec.description,
    run(graph, ctx) {
      const r = rewriteGraph(graph, spec.rules, {
        maxIterations: spec.maxIterations,
        ruleLimit: spec.ruleLimit,
        options: { ...ctx.options, device: ctx.device },
      });
      countMatches(ctx, r.matches);
      for (const [rule, n] of Object.entries(r.matches))
        ctx.report.add({ pass: spec.name, kind: spec.kind ?? 'info', message: `${rule}: ${n} rewrite${n === 1 ? '' : 's'}` });
      return r.graph;
    },
  };
}

/** Short names of nodes for report entries (`matmul#12 f32[4,8]`). */
export function describeNodes(nodes: readonly Node[]): string[] {
  return nodes.map((n) => `${n.op}#${n.id} ${n.typeString()}`);
}
