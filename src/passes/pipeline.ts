/**
 * The pass manager: the registry of passes, the optimization-level presets, and {@link runPasses}, which runs a
 * pipeline with the verifier after every pass (in tests by default), times each pass, and prints the IR after the
 * passes asked for (MLIR's `--print-ir-after`).
 *
 * Adding a pass: write `src/passes/<name>.ts` exporting a {@link Pass}, add it to {@link ALL_PASSES}, and name it in
 * the presets that should run it.
 * @module
 */
import { UsageError, VerifyError } from '../errors.js';
import type { Graph } from '../ir/graph.js';
import { printGraph } from '../ir/printer.js';
import { verifyGraph } from '../ir/verifier.js';
import { csePass } from './cse.js';
import { dcePass } from './dce.js';
import { cpuProfile, type DeviceProfile } from '../ir/device-profile.js';
import type { Target } from '../ir/target.js';
import { foldConstantsPass } from './fold-constants.js';
import { OptimizationReport, type Pass, type PassContext } from './pass.js';
import { simplifyPass } from './simplify.js';
import { recognizeNormsPass } from './recognize-norms.js';
import { recognizeActivationsPass } from './recognize-activations.js';
import { recognizeRopePass } from './recognize-rope.js';
import { recognizeAttentionPass } from './recognize-attention.js';
import { mergeProjectionsPass } from './merge-projections.js';
import { mixedPrecisionPass } from './mixed-precision.js';
import { quantizeWeightsPass } from './quantize-weights.js';
import { quantizeKvCachePass } from './quantize-kv-cache.js';
import { sparsifyWeightsPass } from './sparsify-weights.js';
import { layoutPass } from './layout.js';
import { fuseEpiloguesPass } from './fuse-epilogues.js';
import { fuseElementwisePass } from './fuse-elementwise.js';
import { memoryPlanPass } from './memory-plan.js';
import { splitLargeWeightsPass } from './split-large-weights.js';
import { repackQuantizedWeightsPass } from './repack-quantized-weights.js';
import { legalizeWebGPUPass } from './legalize-webgpu.js';
import { lowerPagedKvPass } from './lower-paged-kv.js';
import { materializeOutputsPass } from './materialize-outputs.js';

// The pass interface lives in pass.ts so that pass files can import it (and `rewritePass`) without an import cycle
// through this registry; it is re-exported here for users of the pass manager.
export { OptimizationReport, type Pass, type PassContext, type PassOptions, type ReportEntry, type ReportKind } from './pass.js';

/** Every pass, in the order they usually run. One line per pass. */
export const ALL_PASSES: readonly Pass[] = [
  foldConstantsPass,
  simplifyPass,
  recognizeNormsPass,
  recognizeActivationsPass,
  recognizeRopePass,
  recognizeAttentionPass,
  csePass,
  mergeProjectionsPass,
  sparsifyWeightsPass,
  quantizeWeightsPass,
  quantizeKvCachePass,
  mixedPrecisionPass,
  layoutPass,
  fuseEpiloguesPass,
  fuseElementwisePass,
  dcePass,
  repackQuantizedWeightsPass,
  splitLargeWeightsPass,
  legalizeWebGPUPass,
  lowerPagedKvPass,
  materializeOutputsPass,
  memoryPlanPass,
];

/** The registry: pass name to pass. */
export const PASSES: Readonly<Record<string, Pass>> = Object.freeze(Object.fromEntries(ALL_PASSES.map((p) => [p.name, p])));

/**
 * The clean-up and recognition prefix of O2 and O3: recognitions run after folding so scales are constants, and
 * folding runs again after them (a recognizer may reshape a small weight, which folds to a constant), so O3 reaches
 * its fixpoint in one run.
 */
const RECOGNIZE = ['fold-constants', 'simplify', 'recognize-norms', 'recognize-activations', 'recognize-rope', 'recognize-attention', 'simplify', 'fold-constants', 'cse'];

/** Optimization levels as lists of pass names (O0 runs nothing). */
export const PRESETS: Readonly<Record<'O0' | 'O1' | 'O2' | 'O3', readonly string[]>> = Object.freeze({
  O0: [],
  // O1: exact clean-ups; O2: + recognition of norms/activations/rope/attention, projection merging, precision and
  // layouts; O3: + fusion and memory planning
  O1: ['fold-constants', 'simplify', 'cse', 'sparsify-weights', 'quantize-weights', 'quantize-kv-cache', 'layout', 'dce'],
  O2: [...RECOGNIZE, 'merge-projections', 'sparsify-weights', 'quantize-weights', 'quantize-kv-cache', 'mixed-precision', 'layout', 'dce'],
  O3: [...RECOGNIZE, 'merge-projections', 'sparsify-weights', 'quantize-weights', 'quantize-kv-cache', 'mixed-precision', 'layout', 'fuse-epilogues', 'fuse-elementwise', 'cse', 'dce', 'plan-memory'],
});

function isPreset(spec: string): spec is keyof typeof PRESETS {
  return Object.prototype.hasOwnProperty.call(PRESETS, spec);
}

function lookup(name: string): Pass {
  const p = Object.prototype.hasOwnProperty.call(PASSES, name) ? PASSES[name] : undefined;
  if (!p) throw new UsageError(`unknown pass '${name}'; known passes: ${Object.keys(PASSES).join(', ')}; presets: ${Object.keys(PRESETS).join(', ')}`);
  return p;
}

/**
 * The passes a spec names: a preset (`O0`…`O3`) or a comma-separated list of pass names and presets
 * (`simplify,cse`, `O1,fuse-elementwise`; an empty spec is the empty pipeline). Throws {@link UsageError} naming an unknown pass and listing the known ones.
 */
export function resolvePipeline(spec: string): Pass[] {
  // items are pass names or presets (a preset in a list expands in place: `O1,fuse-elementwise`)
  return spec
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0)
    .flatMap((x) => (isPreset(x) ? PRESETS[x].map(lookup) : [lookup(x)]));
}

/** Options of {@link runPasses}. */
export interface RunPassesOptions {
  /** Verify the input graph and the graph after every pass (default: on under vitest or `NODE_ENV=test`). */
  verify?: boolean;
  /** Print the IR after these passes (by name), or after every pass. */
  printIrAfter?: readonly string[] | 'all';
  /** Where printed IR goes (default `console.error`, keeping stdout clean). */
  print?: (text: string) => void;
  /** The target device's cost profile (default: the target's profile, else {@link cpuProfile}). */
  device?: DeviceProfile;
  /** The target (absent: the CPU reference backend). Its precision policy is the default of `options.precision`. */
  target?: Target;
  /** Pass-specific options (e.g. `{ maxFoldElements: 1 << 20 }`). */
  options?: Readonly<Record<string, unknown>>;
}

/** How long one pass took. */
export interface PassTiming {
  /** Pass name. */
  readonly name: string;
  /** Wall time in milliseconds. */
  readonly ms: number;
}

/** Result of {@link runPasses}. */
export interface PipelineResult {
  /** The optimized graph. */
  readonly graph: Graph;
  /** Per-pass wall times, in run order. */
  readonly timings: PassTiming[];
  /** What the passes did. */
  readonly report: OptimizationReport;
  /** Rewrite-rule match counts over the whole run, by rule name. */
  readonly matches: Record<string, number>;
}

function verifyByDefault(): boolean {
  const env = typeof process !== 'undefined' ? process.env : undefined;
  return !!env && (!!env.VITEST || env.NODE_ENV === 'test');
}

/**
 * Runs `passes` (a list, or a spec for {@link resolvePipeline}) over `graph`. With verification on, the input graph
 * and the result of every pass are checked with {@link verifyGraph}; a failure throws {@link VerifyError} naming the
 * pass that produced the bad graph (a pass that itself throws a `VerifyError`, such as an ill-typed rewrite rule,
 * gets the pass name prefixed).
 */
export function runPasses(graph: Graph, passes: readonly Pass[] | string, opts: RunPassesOptions = {}): PipelineResult {
  const list = typeof passes === 'string' ? resolvePipeline(passes) : passes;
  const verify = opts.verify ?? verifyByDefault();
  const print = opts.print ?? ((text: string) => console.error(text));
  const printAfter = opts.printIrAfter ?? [];
  if (printAfter !== 'all')
    for (const name of printAfter)
      if (!list.some((p) => p.name === name) && !Object.prototype.hasOwnProperty.call(PASSES, name))
        throw new UsageError(`--print-ir-after: unknown pass '${name}'; known passes: ${Object.keys(PASSES).join(', ')}`);
  for (const [option, pass] of [['quant', 'quantize-weights'], ['sparsity', 'sparsify-weights']] as const)
    if (opts.options?.[option] && !list.some((p) => p.name === pass))
      throw new UsageError(`a ${option === 'quant' ? 'quantization scheme' : 'sparsity pattern'} was given but the pipeline (${list.map((p) => p.name).join(', ') || 'empty'}) has no '${pass}' pass to apply it`);
  const kv = opts.options?.kvCache;
  if ((kv === 'int8' || kv === 'int4') && !list.some((p) => p.name === 'quantize-kv-cache'))
    throw new UsageError(`an ${kv} KV cache was asked for but the pipeline (${list.map((p) => p.name).join(', ') || 'empty'}) has no 'quantize-kv-cache' pass to apply it`);
  const target = opts.target;
  const device = opts.device ?? target?.profile ?? cpuProfile;
  const precision = opts.options?.precision ?? (target ? { default: target.precision } : undefined);
  const ctx: PassContext = { options: { ...opts.options, ...(precision ? { precision } : {}), device }, device, ...(target ? { target } : {}), report: new OptimizationReport(), matches: {} };
  const timings: PassTiming[] = [];
  if (verify) verifyGraph(graph, 'input graph');
  let g = graph;
  for (const pass of list) {
    const t0 = performance.now();
    try {
      g = pass.run(g, ctx);
    } catch (e) {
      if (e instanceof VerifyError) throw new VerifyError(`in pass '${pass.name}': ${e.message}`);
      throw e;
    }
    timings.push({ name: pass.name, ms: performance.now() - t0 });
    if (verify) verifyGraph(g, `graph after pass '${pass.name}'`);
    if (printAfter === 'all' || printAfter.includes(pass.name)) print(`// ----- IR after ${pass.name} ----- //\n${pass.print ? pass.print(g) : printGraph(g)}`);
  }
  return { graph: g, timings, report: ctx.report, matches: ctx.matches };
}
