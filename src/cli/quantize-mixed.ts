/**
 * `quantize --budget-bits AVG`: layer sensitivity and mixed bits per layer. Every candidate grid (`--candidate-bits`,
 * default 2,3,4,8) is computed for every layer with the chosen method (RTN or GPTQ, calibrated on `--calib`), then each
 * layer's **sensitivity** is measured as the mean KL(f32 ‖ model) per position on calibration windows (the first
 * `--sensitivity-tokens` positions of the calibration text, never the evaluation text) with that layer alone
 * quantized at that grid and every other weight f32, on the CPU reference backend. {@link allocateBits} then picks one
 * grid per layer minimising the sum of the sensitivities under the parameter-weighted average of bits per weight
 * (counted as `--budget-count` says, see {@link bitsPerWeight}), exactly. Weights no grid takes (rows no multiple of the
 * group) stay F32 and are left out of the average.
 *
 * Layers are independent for RTN and for GPTQ here (every Hessian comes from the f32 model), so the mixed graph is the
 * chosen layers' weights of the uniform runs. AWQ folds scales into shared norms and is not offered with a budget.
 * @module
 */
import { UsageError } from '../errors.js';
import { compressGraph, replaceWeights, type CompressMethod, type CompressResult, type LayerReport } from '../compress/compress-graph.js';
import type { GridSpec } from '../compress/grid.js';
import { allocateBits, bitsPerWeight, BIT_COUNTS, type BitCount } from '../compress/mixed-bits.js';
import type { LoadedModel } from '../frontends/load.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { cpuProfile } from '../ir/device-profile.js';
import type { Graph } from '../ir/graph.js';
import type { WeightEntry } from '../ir/weights.js';
import { runPasses } from '../passes/pipeline.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';

/** One layer of the mixed-bits report. */
export interface MixedBitsLayer {
  /** The weight's name. */
  readonly name: string;
  /** `[N, K]`. */
  readonly shape: readonly [number, number];
  /** Weights. */
  readonly params: number;
  /** Sensitivity: mean KL(f32 ‖ model) per calibration position with this layer alone at each grid bits (key: bits). */
  readonly kl: Readonly<Record<string, number>>;
  /** The grid bits chosen (absent: kept F32). */
  readonly bits?: number;
}

/** What `quantize --budget-bits` adds to the JSON result (`mixed_bits`). */
export interface MixedBitsReport {
  /** The budget: average bits per weight. */
  readonly budget_bits: number;
  /** How bits are counted for the budget. */
  readonly budget_count: BitCount;
  /** Candidate grid bits. */
  readonly candidates: readonly number[];
  /** Calibration positions the sensitivities were measured on. */
  readonly sensitivity_tokens: number;
  /** Whether the allocation is the exact optimum of the additive model. */
  readonly exact: boolean;
  /** Σ sensitivity of the chosen grids (the allocator's objective). */
  readonly predicted_kl_sum: number;
  /** Parameter-weighted average bits per weight of the chosen grids over the quantized layers, counted each way. */
  readonly average_bits: Readonly<Record<BitCount, number>>;
  /** Per layer. */
  readonly layers: readonly MixedBitsLayer[];
}

/** Options of {@link mixedBitsCompress}. */
export interface MixedBitsOptions {
  readonly method: CompressMethod;
  /** Group size and symmetry (the bits are the candidates'). */
  readonly spec: GridSpec;
  readonly candidates: readonly number[];
  readonly budgetBits: number;
  readonly count: BitCount;
  readonly actOrder?: boolean;
  readonly onProgress?: (line: string) => void;
}

/** Checks the mixed-bits flags; throws {@link UsageError}. */
export function checkMixedBitsFlags(method: string, candidates: readonly number[], count: string): void {
  if (method !== 'rtn' && method !== 'gptq') throw new UsageError(`--budget-bits works with --method rtn or gptq (AWQ folds scales into shared norms), got '${method}'`);
  if (!candidates.length || candidates.some((b) => ![8, 4, 3, 2].includes(b)) || new Set(candidates).size !== candidates.length)
    throw new UsageError(`--candidate-bits must be distinct values of 8, 4, 3, 2, got ${candidates.join(',')}`);
  if (!BIT_COUNTS.includes(count as BitCount)) throw new UsageError(`--budget-count must be one of ${BIT_COUNTS.join(', ')}, got '${count}'`);
}

function logSoftmaxRows(all: Float32Array, rows: number, vocab: number): Float64Array {
  const out = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) max = Math.max(max, all[r * vocab + v]);
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(all[r * vocab + v] - max);
    const lse = max + Math.log(sum);
    for (let v = 0; v < vocab; v++) out[r * vocab + v] = all[r * vocab + v] - lse;
  }
  return out;
}

/** Log-probabilities of every position of every window under `g` (CPU reference backend, O3). */
function windowLogProbs(g: Graph, model: LoadedModel, windows: readonly (readonly number[])[]): Float64Array[] {
  const lm = new CpuCausalLM(runPasses(g, 'O3', { device: cpuProfile }).graph, model.maxPositions);
  const vocab = model.config.vocabSize;
  return windows.map((w) => {
    lm.reset();
    return logSoftmaxRows(lm.stepAll(w), w.length, vocab);
  });
}

/** Mean KL(p ‖ q) per position. */
function meanKl(p: readonly Float64Array[], q: readonly Float64Array[], vocab: number): number {
  let [sum, n] = [0, 0];
  p.forEach((pw, i) => {
    const qw = q[i];
    for (let r = 0; r < pw.length / vocab; r++, n++) {
      let kl = 0;
      for (let v = r * vocab; v < (r + 1) * vocab; v++) kl += Math.exp(pw[v]) * (pw[v] - qw[v]);
      sum += Math.max(kl, 0);
    }
  });
  return sum / n;
}

function weightsByName(g: Graph): Map<string, { id: string; entry: WeightEntry }> {
  const out = new Map<string, { id: string; entry: WeightEntry }>();
  for (const n of g.nodes())
    if (isOp(n, 'weight')) {
      const id = attrsOf(n, 'weight').id;
      const entry = g.weights.get(id);
      out.set(entry.name, { id, entry });
    }
  return out;
}

/**
 * Compresses `f32` with mixed bits per layer: uniform runs at every candidate (calibrated on `calibWindows`),
 * sensitivities on `sensitivityWindows`, the exact allocation, and the graph with each layer's chosen weight.
 */
export function mixedBitsCompress(
  f32: Graph,
  model: LoadedModel,
  calibWindows: readonly (readonly number[])[],
  sensitivityWindows: readonly (readonly number[])[],
  o: MixedBitsOptions,
): CompressResult & { report: MixedBitsReport } {
  const progress = o.onProgress ?? ((): void => {});
  const cheapest = Math.min(...o.candidates.map((b) => bitsPerWeight({ ...o.spec, bits: b as GridSpec['bits'] }, o.count)));
  if (o.budgetBits < cheapest) throw new UsageError(`--budget-bits ${o.budgetBits} is below the cheapest choice (${cheapest} bits per weight counted as '${o.count}')`);
  const runs = new Map<number, { result: CompressResult; weights: Map<string, { id: string; entry: WeightEntry }> }>();
  for (const b of o.candidates) {
    progress(`mixed bits: ${o.method} at ${b} bits for every layer`);
    const result = compressGraph(f32, calibWindows, { method: o.method, spec: { ...o.spec, bits: b as GridSpec['bits'] }, actOrder: o.actOrder });
    runs.set(b, { result, weights: weightsByName(result.graph) });
  }
  const first = runs.get(o.candidates[0])!.result;
  const original = weightsByName(f32);
  const vocab = model.config.vocabSize;
  const reference = windowLogProbs(f32, model, sensitivityWindows);
  const quantized = first.layers.filter((l) => l.method !== 'f32');
  const sens = new Map<string, Record<string, number>>();
  quantized.forEach((l, i) => {
    const kl: Record<string, number> = {};
    for (const b of o.candidates) {
      const g = replaceWeights(f32, new Map([[original.get(l.name)!.id, runs.get(b)!.weights.get(l.name)!.entry]]));
      kl[b] = meanKl(reference, windowLogProbs(g, model, sensitivityWindows), vocab);
    }
    sens.set(l.name, kl);
    progress(`mixed bits: sensitivity ${i + 1}/${quantized.length} ${l.name}: ${o.candidates.map((b) => `${b} bits KL ${kl[b].toExponential(3)}`).join(', ')}`);
  });
  const specOf = (b: number): GridSpec => ({ ...o.spec, bits: b as GridSpec['bits'] });
  const alloc = allocateBits(
    quantized.map((l) => ({ params: l.shape[0] * l.shape[1], bits: o.candidates.map((b) => bitsPerWeight(specOf(b), o.count)), loss: o.candidates.map((b) => sens.get(l.name)![b]) })),
    o.budgetBits,
  );
  const chosen = new Map(quantized.map((l, i) => [l.name, o.candidates[alloc.choice[i]]]));
  const replacements = new Map<string, WeightEntry>();
  for (const [name, b] of chosen) replacements.set(original.get(name)!.id, runs.get(b)!.weights.get(name)!.entry);
  const layers: LayerReport[] = first.layers.map((l) => (chosen.has(l.name) ? runs.get(chosen.get(l.name)!)!.result.layers.find((x) => x.name === l.name)! : l));
  const params = quantized.reduce((a, l) => a + l.shape[0] * l.shape[1], 0);
  const average = Object.fromEntries(
    BIT_COUNTS.map((c) => [c, quantized.reduce((a, l) => a + bitsPerWeight(specOf(chosen.get(l.name)!), c) * l.shape[0] * l.shape[1], 0) / params]),
  ) as Record<BitCount, number>;
  const report: MixedBitsReport = {
    budget_bits: o.budgetBits,
    budget_count: o.count,
    candidates: o.candidates,
    sensitivity_tokens: sensitivityWindows.reduce((a, w) => a + w.length, 0),
    exact: alloc.exact,
    predicted_kl_sum: alloc.loss,
    average_bits: average,
    layers: first.layers.map((l) => ({ name: l.name, shape: l.shape, params: l.shape[0] * l.shape[1], kl: sens.get(l.name) ?? {}, ...(chosen.has(l.name) ? { bits: chosen.get(l.name) } : {}) })),
  };
  return { graph: replaceWeights(f32, replacements), layers, calibrationTokens: first.calibrationTokens, captured: first.captured, report };
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

/** The sensitivity table as text lines. */
export function mixedBitsTable(r: MixedBitsReport): string[] {
  const width = Math.max(5, ...r.layers.map((l) => l.name.length));
  const head = `${pad('layer', width)}  ${pad('params', 8)}  ${r.candidates.map((b) => pad(`KL@${b}`, 10)).join('  ')}  chosen`;
  const rows = r.layers.map((l) => `${pad(l.name, width)}  ${pad(String(l.params), 8)}  ${r.candidates.map((b) => pad(l.kl[b] === undefined ? '-' : l.kl[b].toExponential(3), 10)).join('  ')}  ${l.bits ?? 'f32'}`);
  const a = r.average_bits;
  return [
    head,
    ...rows,
    `(KL: mean KL(f32 ‖ model) per position on ${r.sensitivity_tokens} calibration positions, that layer alone quantized; budget ${r.budget_bits} bits per weight counted as '${r.budget_count}'; chosen: ${a.grid.toFixed(3)} grid bits, ${a.packed.toFixed(3)} with f16 scales packed, ${a.file.toFixed(3)} as written in GGUF blocks; ${r.exact ? 'exact optimum' : 'DP on rounded-up costs'}, Σ KL ${r.predicted_kl_sum.toExponential(3)})`,
  ];
}
