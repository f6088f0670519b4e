/**
 * The compiled-graph differential: random graphs compiled for WebGPU and run on a device, compared output by output
 * with the CPU reference interpreter, in batches (k cases merged into one engine), with failures isolated, minimized
 * and described by their seed.
 * @module
 */
import { compileGraph, compileGraphEngine } from '../../src/compile.js';
import { UnsupportedOpError } from '../../src/errors.js';
import type { DType } from '../../src/ir/dtype.js';
import { Graph, topoOrder } from '../../src/ir/graph.js';
import { makeNode, withInputs, type Node } from '../../src/ir/node.js';
import { printGraph } from '../../src/ir/printer.js';
import type { GPUDeviceHandle } from '../../src/runtime/device.js';
import type { Target } from '../../src/ir/target.js';
import { createTarget } from '../../src/codegen/target.js';
import { bindInputs, runGraph } from '../../src/runtime/cpu/interpreter.js';
import type { Tensor } from '../../src/runtime/cpu/tensor.js';
import { mergeGraphCases } from './merge-graphs.js';
import { buildRandomGraph, compareTensors, type GraphCase, type RandomGraphOptions } from './random-graph.js';

/**
 * What the engines are compiled for: the device's own target (`device`: lavapipe in CI, a software GPU), or a
 * GPU-class target with the device's features and limits (`gpu-class`: the schedule rules of real GPUs, f16 storage
 * where the precision rules allow), run on the same device.
 */
export type EngineKind = 'device' | 'gpu-class';

/** The target of an engine kind on `gpu`. */
export function targetFor(kind: EngineKind, gpu: GPUDeviceHandle): Target {
  if (kind === 'device') return createTarget(gpu.info);
  const a = gpu.info.adapter;
  return createTarget({ ...gpu.info, adapter: { ...a, vendor: 'gpu-class', architecture: 'gpu-class', device: `gpu-class profile on ${a.device}`, description: 'gpu-class', isFallbackAdapter: false } });
}

/** A graph with inputs and symbol values: what one differential run needs. */
export interface DiffSubject {
  /** The graph. */
  graph: Graph;
  /** Its inputs. */
  inputs: Record<string, Tensor>;
  /** Values of symbolic dims no input binds (and of the others). */
  bindings: Record<string, number>;
  /** The target the graph is compiled for. */
  target: Target;
}

/** How a run went wrong: an output differs from the reference, or compiling or running threw. */
export interface DiffFailure {
  /** `mismatch` (numbers), or `error` (something threw). */
  kind: 'mismatch' | 'error';
  /** The output that differs (mismatch), or the error's class name (error). */
  where: string;
  /** What differs, or the error message. */
  message: string;
}

/**
 * Tolerances of float outputs, relative to the output's largest magnitude: f32 values computed in f32 agree to a few
 * ulp per op; f16 values, or f32 values computed through f16 storage (a target with f16 precision), to some f16
 * roundings (f16's epsilon is 9.8e-4).
 */
const F32_TOLERANCE = { rtol: 1e-4, atol: 1e-5 };
const F16_TOLERANCE = { rtol: 1e-2, atol: 1e-2 };

/**
 * The tolerance an output is compared with: integers and bools exactly; floats by dtype and by whether the engine
 * stores activations in f16 (`f16Storage`), with `atol` scaled by the largest magnitude of the reference output (a
 * value computed from large intermediates carries their absolute error).
 */
export function toleranceFor(ref: Tensor, f16Storage = false): { rtol: number; atol: number } {
  const float: readonly DType[] = ['f32', 'f16'];
  if (!float.includes(ref.dtype)) return { rtol: 0, atol: 0 };
  const t = ref.dtype === 'f16' || f16Storage ? F16_TOLERANCE : F32_TOLERANCE;
  let scale = 1;
  const data = ref.numbers;
  for (let i = 0; i < data.length; i++) if (Number.isFinite(data[i])) scale = Math.max(scale, Math.abs(data[i]));
  return { rtol: t.rtol, atol: t.atol * scale };
}

/** Symbol values a graph runs with: the case's bindings plus what its inputs bind. */
function bindingsOf(s: DiffSubject): Record<string, number> {
  return { ...s.bindings, ...bindInputs(s.graph, s.inputs, s.bindings) };
}

/** Compiles `s` for the device and runs it once; returns its outputs. */
export async function runOnDevice(s: DiffSubject, gpu: GPUDeviceHandle): Promise<Record<string, Tensor>> {
  const engine = await compileGraph(s.graph, bindingsOf(s), { target: s.target });
  const session = await engine.createSession({ device: gpu });
  try {
    const used = new Set(engine.manifest.inputs.map((i) => i.name));
    return await session.run(Object.fromEntries(Object.entries(s.inputs).filter(([k]) => used.has(k))), { bindings: bindingsOf(s) });
  } finally {
    await session.destroy();
  }
}

/** The first output of `got` that differs from `want` (reference), or null. */
export function firstMismatch(got: Record<string, Tensor>, want: Record<string, Tensor>, f16Storage: boolean, names: Record<string, string> = {}): DiffFailure | null {
  for (const [name, ref] of Object.entries(want)) {
    const out = got[names[name] ?? name];
    if (!out) return { kind: 'mismatch', where: name, message: 'missing from the device outputs' };
    const d = compareTensors(out, ref, toleranceFor(ref, f16Storage));
    if (d) return { kind: 'mismatch', where: name, message: `device vs reference: ${d}` };
  }
  return null;
}

function errorFailure(e: unknown): DiffFailure {
  const err = e instanceof Error ? e : new Error(String(e));
  return { kind: 'error', where: err.constructor.name, message: err.message };
}

/** Runs `s` alone on the device and against the reference; the failure, or null when they agree. */
export async function diffOne(s: DiffSubject, gpu: GPUDeviceHandle): Promise<DiffFailure | null> {
  let want: Record<string, Tensor>;
  try {
    want = runGraph(s.graph, s.inputs, { bindings: s.bindings });
  } catch (e) {
    const f = errorFailure(e);
    return { ...f, message: `the CPU reference failed: ${f.message}` };
  }
  try {
    return firstMismatch(await runOnDevice(s, gpu), want, usesF16Storage(s.target));
  } catch (e) {
    return errorFailure(e);
  }
}

/** Whether a target may store activations in f16. */
function usesF16Storage(t: Target): boolean {
  return t.profile.hasF16 && t.precision !== 'f32';
}

/** Whether compiling the case is refused with a typed {@link UnsupportedOpError} (its message), or null. */
export function unsupportedReason(c: DiffSubject): string | null {
  try {
    compileGraphEngine(c.graph, bindingsOf(c), { target: c.target });
    return null;
  } catch (e) {
    if (e instanceof UnsupportedOpError) return e.message;
    return null; // other errors surface when the case runs
  }
}

// --- minimization ----------------------------------------------------------------------------------------------

/** `g` with nodes replaced (operands first), keeping the named outputs; inputs are the reachable `input` nodes. */
function replaceNodes(g: Graph, outputs: readonly { name: string; node: Node }[], replace: ReadonlyMap<Node, Node>): Graph {
  const map = new Map<Node, Node>();
  for (const n of topoOrder(outputs.map((o) => o.node))) map.set(n, replace.get(n) ?? withInputs(n, n.inputs.map((x) => map.get(x)!)));
  const outs = outputs.map((o) => ({ name: o.name, node: map.get(o.node)! }));
  const inputs = topoOrder(outs.map((o) => o.node)).filter((n) => n.op === 'input');
  return new Graph(inputs, outs, g.weights);
}

/** Keeps only the inputs `g` declares. */
function inputsFor(g: Graph, all: Record<string, Tensor>): Record<string, Tensor> {
  return Object.fromEntries(g.inputs.map((i) => [String(i.attrs.name), all[String(i.attrs.name)]]));
}

/** Whether `f` is the same failure as `orig` (a mismatch, or an error of the same class). */
function sameFailure(f: DiffFailure | null, orig: DiffFailure): boolean {
  return !!f && f.kind === orig.kind && (f.kind === 'mismatch' || f.where === orig.where);
}

/**
 * Shrinks a failing subject while it keeps failing the same way: first to the one failing output, then by moving the
 * output to an operand of its node, then by cutting subgraphs (a node becomes a new input holding its reference
 * value). Returns the smallest failing subject found and its failure.
 */
export async function minimizeFailure(s: DiffSubject, failure: DiffFailure, gpu: GPUDeviceHandle, maxTries = 150): Promise<{ subject: DiffSubject; failure: DiffFailure; tries: number }> {
  let cur = s;
  let fail = failure;
  let tries = 0;
  const attempt = async (cand: DiffSubject): Promise<boolean> => {
    if (tries >= maxTries) return false;
    tries++;
    let f: DiffFailure | null;
    try {
      f = await diffOne(cand, gpu);
    } catch (e) {
      f = errorFailure(e);
    }
    if (!sameFailure(f, fail)) return false;
    cur = cand;
    fail = f!;
    return true;
  };
  // 1. one output: the failing one when known, else each in turn
  if (cur.graph.outputs.length > 1) {
    const order = [...cur.graph.outputs].sort((a, b) => (a.name === fail.where ? -1 : b.name === fail.where ? 1 : 0));
    for (const o of order) {
      const g = replaceNodes(cur.graph, [o], new Map());
      if (await attempt({ ...cur, graph: g, inputs: inputsFor(g, cur.inputs) })) break;
    }
  }
  // reference values of every node, for cuts
  let changed = true;
  while (changed && tries < maxTries) {
    changed = false;
    const out = cur.graph.outputs[0];
    // 2. the output moves to an operand of its node
    for (const x of out.node.inputs) {
      if (x.op === 'input' || x.op === 'weight' || x.op === 'constant') continue;
      const g = replaceNodes(cur.graph, [{ name: out.name, node: x }], new Map());
      if (await attempt({ ...cur, graph: g, inputs: inputsFor(g, cur.inputs) })) {
        changed = true;
        break;
      }
    }
    if (changed) continue;
    // 3. cut: an inner node becomes an input holding its reference value (from the output backwards)
    const inner = cur.graph.nodes().filter((n) => n !== out.node && !['input', 'weight', 'constant'].includes(n.op));
    let values: Record<string, Tensor>;
    try {
      const all = new Graph(cur.graph.inputs, inner.map((n) => ({ name: `n${n.id}`, node: n })), cur.graph.weights);
      values = inner.length ? runGraph(all, cur.inputs, { bindings: cur.bindings }) : {};
    } catch {
      break;
    }
    for (const n of [...inner].reverse()) {
      const name = `cut${n.id}`;
      const leaf = makeNode('input', [], { name, dtype: n.dtype, shape: [...n.shape] });
      const g = replaceNodes(cur.graph, [out], new Map([[n, leaf]]));
      if (await attempt({ ...cur, graph: g, inputs: inputsFor(g, { ...cur.inputs, [name]: values[`n${n.id}`] }) })) {
        changed = true;
        break;
      }
    }
  }
  return { subject: cur, failure: fail, tries };
}

// --- batches ---------------------------------------------------------------------------------------------------

/** What happened to one case. */
export interface CaseOutcome {
  /** The case's seed (with the generator options, `buildRandomGraph(seed, opts)` rebuilds it). */
  seed: number;
  /** `pass`, `unsupported` (a typed refusal to compile), or `fail`. */
  status: 'pass' | 'unsupported' | 'fail';
  /** The refusal's message, or the failure report (seed, failure, minimized graph). */
  detail?: string;
}

/** Options of {@link runDifferentialBatch}. */
export interface BatchOptions {
  /** Generator options (the seed alone is not enough to rebuild a case without them). */
  gen: RandomGraphOptions;
  /** Where a failure report says the batch came from (reproduction hints). */
  origin: string;
  /** What the engine is compiled for. */
  engine: EngineKind;
}

/** A generated case and the target it is compiled for. */
type Case = GraphCase & { target: Target };

/** A failure report: the seed, how to rebuild the case, the failure, and the minimized graph. */
function report(c: GraphCase, o: BatchOptions, failure: DiffFailure, min: { subject: DiffSubject; failure: DiffFailure; tries: number }): string {
  return [
    `case seed=${c.seed} steps=${c.steps} bindings=${JSON.stringify(c.bindings)}, engine for the ${o.engine} target (${o.origin}; rebuild: buildRandomGraph(${c.seed}, ${JSON.stringify({ ...o.gen, steps: c.steps })}))`,
    `  ${failure.kind} at ${failure.where}: ${failure.message}`,
    `  minimized in ${min.tries} tries to ${min.subject.graph.size} nodes, ${min.failure.kind} at ${min.failure.where}: ${min.failure.message}`,
    `  inputs: ${Object.entries(min.subject.inputs).map(([k, t]) => `${k}=${t.dtype}[${t.shape}]`).join(' ')} bindings=${JSON.stringify(min.subject.bindings)}`,
    printGraph(min.subject.graph).replace(/^/gm, '    '),
  ].join('\n');
}

/**
 * Runs the cases of `seeds` as one merged engine (the cases the compiler refuses with a typed error are set apart);
 * when the batch fails, each case runs alone, and a case that fails alone is minimized and reported.
 */
export async function runDifferentialBatch(seeds: readonly number[], gpu: GPUDeviceHandle, o: BatchOptions): Promise<CaseOutcome[]> {
  const outcomes = new Map<number, CaseOutcome>();
  const target = targetFor(o.engine, gpu);
  const f16 = usesF16Storage(target);
  const cases = seeds.map((seed) => ({ ...buildRandomGraph(seed, o.gen), target }));
  const refs = new Map<Case, Record<string, Tensor>>();
  const runnable: Case[] = [];
  for (const c of cases) {
    const why = unsupportedReason(c);
    if (why !== null) {
      outcomes.set(c.seed, { seed: c.seed, status: 'unsupported', detail: why });
      continue;
    }
    try {
      refs.set(c, runGraph(c.graph, c.inputs, { bindings: c.bindings }));
      runnable.push(c);
    } catch (e) {
      outcomes.set(c.seed, { seed: c.seed, status: 'fail', detail: `case seed=${c.seed}: the CPU reference failed: ${(e as Error).message}` });
    }
  }
  const suspects: Case[] = [];
  let mergedThrew = false;
  if (runnable.length) {
    const merged = mergeGraphCases(runnable);
    let got: Record<string, Tensor> | undefined;
    try {
      got = await runOnDevice({ ...merged, target }, gpu);
    } catch {
      mergedThrew = true;
      suspects.push(...runnable);
    }
    if (got) runnable.forEach((c, i) => (firstMismatch(got, refs.get(c)!, f16, merged.outputNames[i]) ? suspects.push(c) : outcomes.set(c.seed, { seed: c.seed, status: 'pass' })));
  }
  const failedAlone = new Map<Case, DiffFailure>();
  for (const c of suspects) {
    const alone = await diffOne(c, gpu);
    if (alone) failedAlone.set(c, alone);
  }
  for (const c of suspects) {
    const alone = failedAlone.get(c);
    // a merged run that threw is explained by the cases that fail alone; the others pass
    if (!alone && mergedThrew && failedAlone.size) {
      outcomes.set(c.seed, { seed: c.seed, status: 'pass' });
      continue;
    }
    if (!alone) {
      // fails only next to other cases: report the batch
      outcomes.set(c.seed, { seed: c.seed, status: 'fail', detail: `case seed=${c.seed} passes alone but fails merged with seeds ${runnable.map((x) => x.seed).join(', ')} (${o.origin})` });
      continue;
    }
    const min = await minimizeFailure(c, alone, gpu);
    outcomes.set(c.seed, { seed: c.seed, status: 'fail', detail: report(c, o, alone, min) });
  }
  return seeds.map((s) => outcomes.get(s)!);
}
