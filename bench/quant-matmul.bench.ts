/**
 * Quantized matmul kernel benchmarks on a WebGPU device: matmuls over weights stored `[N, K]` (4096x4096 and
 * 11008x4096, N rows of K as bench/matmul.bench.ts stores its GEMV weights) quantized to int8, int4 and int2 (groups
 * of 32, zero points: `--quant int8`, `int4-g32`, `int2-g32`) and to codebooks (`nf4`, `codebook16`,
 * `codebook256`) and to W8A8 (`w8a8`: int8 per output channel, int8 activations with per-token scales, the
 * `w8a8-matmul` family's kernel), at decode M = 1, 4, 16 and at a prefill M (128; 32 with `--quick`), next to the dense f32 matmul of
 * the same shape and M, all in one run on one device with the same host wait (see bench/matmul.bench.ts for how a
 * cycle is measured).
 *
 * Kernels are built as the compiler builds them: each case is a `linear` node over the weight, lowered by the kernel
 * family the registry gives it ({@link familyOf}: dequant-matmul, codebook-matmul or matmul) with the device's
 * {@link Target}, so the families' schedule rules pick the variant. Weights are encoded with the encoders the
 * `quantize-weights` pass uses (`quantizeWeight`, `quantizeCodebook`); a dense f32 weight larger than one storage
 * binding is split by rows (one dispatch per part, all in one submit), as `split-large-weights` splits it.
 *
 * Before a kernel is timed, one run of it is checked (not timed) against `x · decode(W)ᵀ` on the host: every output
 * finite (the output starts as NaN, so unwritten elements fail), and a sample of elements within
 * 1e-4·Σ|x·w| + 1e-6 of the f64 reference; a mismatch throws, so the bench never times a broken kernel.
 *
 * Each row reports the median ms, the weight's effective GB/s (its payload bytes — packed integers or indices,
 * scales, zero points, tables — over the median time; prefill kernels may read a weight block more than once, so
 * there it is a lower bound on traffic) and the speed-up over the f32 kernel at the same M and shape.
 *
 * There is no N:M-sparse kernel with quantized values (the 2:4 encoding keeps f32 values), so 2:4 is compared with
 * dense f32 only, in bench/sparse-matmul.bench.ts.
 *
 * Run directly with `npx tsx bench/quant-matmul.bench.ts` (flags: `--quick`, `--json`, `--wait
 * poll|sleep-then-poll`, and to run a part: `--formats int8,w8a8`, `--shape 4096x4096`, `--m 1`), or call {@link runQuantMatmulBench} from the bench runner.
 * @module
 */
import { familyOf } from '../src/codegen/families/index.js';
import { isGraphOperand, type Launch, type LowerContext } from '../src/codegen/family.js';
import { isOp, type ActivationQuant } from '../src/ir/attrs.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { quantizeCodebook } from '../src/ir/codebook.js';
import type { Node } from '../src/ir/node.js';
import { parseQuantScheme, type QuantScheme } from '../src/ir/quant-scheme.js';
import type { Target } from '../src/ir/target.js';
import { decodeWeight, quantizeWeight, WeightStore, type WeightEntry } from '../src/ir/weights.js';
import { defaultGpuWaitMode, GpuWaiter, type GpuWaitMode } from '../src/runtime/webgpu/gpu-wait.js';
import { Rng } from '../src/util/random.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { int8WeightOfEntry, w8a8Matmul } from '../src/runtime/cpu/w8a8.js';
import { bufferOf, payloadBytes, readF32, runStandalone, splitRows, targetOf } from './common.js';
import { measureCycle, prepareKernel, submitOnce, type MatmulBenchRow, type Prepared } from './matmul.bench.js';

/** The quantization schemes benchmarked by default (`--quant` names). */
export const QUANT_BENCH_FORMATS: readonly string[] = ['int8', 'int4-g32', 'int2-g32', 'nf4', 'codebook16', 'codebook256', 'w8a8'];

/**
 * The W8A8 format: int8 weights per output channel (symmetric) and int8 activations with per-token scales, the
 * `w8a8-matmul` family's kernel (checked against the CPU reference's W8A8 arithmetic, not against `x · Wᵀ`).
 */
export const W8A8_BENCH_FORMAT = 'w8a8';

/** A benchmarked weight format: a `--quant` scheme or W8A8. */
type BenchFormat = QuantScheme | typeof W8A8_BENCH_FORMAT;

/** Options of {@link runQuantMatmulBench}. */
export interface QuantMatmulBenchOptions {
  /** Prefill M 32 instead of 128, and short sampling. */
  readonly quick?: boolean;
  /** Max seconds of sampling per case (benchmark.js `maxTime`). Default 2 (1 when quick). */
  readonly maxTime?: number;
  /** Weight shapes `[N, K]` (default 4096x4096 and 11008x4096). */
  readonly shapes?: readonly (readonly [number, number])[];
  /** Decode Ms (default 1, 4, 16). */
  readonly decodeMs?: readonly number[];
  /** Prefill M (default 128; 32 when quick; 0: none). */
  readonly prefillM?: number;
  /** Schemes (default {@link QUANT_BENCH_FORMATS}); the f32 baseline always runs first. */
  readonly formats?: readonly string[];
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
  /** The WGSL language features of the device's GPU object (`handle.info.wgslLanguageFeatures`; W8A8 uses dot4I8Packed with `packed_4x8_integer_dot_product`). */
  readonly languageFeatures?: readonly string[];
  /** How each cycle awaits the GPU (default `poll`; the bench runners pass the device's {@link defaultGpuWaitMode}). */
  readonly wait?: GpuWaitMode;
}

/** One measured case of {@link runQuantMatmulBench}. `seconds` is the mean; the figures below use the median. */
export interface QuantMatmulBenchRow extends MatmulBenchRow {
  /** `f32`, or the `--quant` scheme name. */
  readonly format: string;
  /** Output columns (weight rows). */
  readonly N: number;
  /** Reduction length (weight columns). */
  readonly K: number;
  /** Rows of x. */
  readonly M: number;
  /** Median seconds per cycle. */
  readonly median: number;
  /** Bytes of the weight's payload as stored on the device. */
  readonly weightBytes: number;
  /** `weightBytes` over the median time, in GB/s. */
  readonly weightGbps: number;
  /** The f32 kernel's median over this one's, at the same shape and M (1 for f32). */
  readonly speedup: number;
  /** Largest error of the checked outputs, relative to the tolerance (below 1 passes). */
  readonly checkError: number;
}

/** Encodes `values` ([N, K]) under `s` exactly as the `quantize-weights` pass's encoder does (W8A8: as `calibrateW8A8` does). */
function encode(s: BenchFormat, name: string, N: number, K: number, values: Float32Array): WeightEntry {
  if (s === W8A8_BENCH_FORMAT) return quantizeWeight(`${name}@w8a8`, [N, K], values, { bits: 8, groupSize: K });
  const group = s.groupSize === 'channel' ? K : s.groupSize;
  if (group !== undefined && K % group !== 0) throw new Error(`${s.name}: K = ${K} is no multiple of group ${group}`);
  return s.kind === 'codebook'
    ? quantizeCodebook(`${name}@${s.name}`, [N, K], values, { levels: s.levels, indexBits: s.indexBits, scaleGroupSize: group })
    : quantizeWeight(`${name}@${s.name}`, [N, K], values, { bits: s.bits, groupSize: group!, hasZeroPoint: s.asymmetric });
}

/** The launch the compiler would make for `y = x · Wᵀ` (x `[M, K]`, W the entry) on `target`, with its nodes. */
function lowerLinear(entry: WeightEntry, M: number, target: Target, actQuant?: ActivationQuant): { launch: Launch; x: Node; y: Node } {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [M, entry.shape[1]]);
  const w = b.weight(entry);
  const y = b.matmul(x, w, { transB: true, actQuant });
  const ctx: LowerContext = {
    target,
    expectedSeq: M,
    paged: new Map(),
    weightEncoding: (n) => (isOp(n, 'weight') && n.attrs.id === entry.id ? entry.encoding : { kind: 'dense' }),
  };
  const family = familyOf(y, ctx);
  if (!family) throw new Error(`no kernel family takes a matmul over ${entry.name}`);
  const launches = family.lower(y, ctx);
  if (launches.length !== 1) throw new Error(`${family.name} lowered ${entry.name} to ${launches.length} launches`);
  if (launches[0].kernel.params.length) throw new Error(`${launches[0].kernel.variant}: a static shape needs no params`);
  return { launch: launches[0], x, y };
}

/** One weight as the device holds it: row parts (one unless a dense weight outgrows a binding), each with its entry and buffers. */
interface DeviceWeight {
  readonly parts: { readonly rows: number; readonly entry: WeightEntry; readonly buffers: ReadonlyMap<string, GPUBuffer> }[];
  readonly bytes: number;
  destroy(): void;
}

function uploadWeight(device: GPUDevice, entries: readonly WeightEntry[]): DeviceWeight {
  const parts = entries.map((entry) => ({ rows: entry.shape[0], entry, buffers: new Map(Object.entries(entry.data).map(([role, d]) => [role, bufferOf(device, d)])) }));
  return {
    parts,
    bytes: entries.reduce((a, e) => a + payloadBytes(e), 0),
    destroy: () => parts.forEach((p) => p.buffers.forEach((b) => b.destroy())),
  };
}

/** The buffer each of `launch`'s operands binds: x, the weight (dense) or its parts, the output. */
function bindingsOf(launch: Launch, x: Node, y: Node, bufs: { x: GPUBuffer; out: GPUBuffer; weight: ReadonlyMap<string, GPUBuffer> }): GPUBuffer[] {
  return launch.operands.map((op) => {
    if (op === x) return bufs.x;
    if (op === y) return bufs.out;
    const role = isGraphOperand(op) ? (isOp(op, 'weight') ? 'values' : undefined) : op.kind === 'weight-part' ? op.part : undefined;
    const b = role && bufs.weight.get(role);
    if (!b) throw new Error(`${launch.kernel.variant}: no buffer for operand ${JSON.stringify(role ?? String(op))}`);
    return b;
  });
}

/**
 * Checks one run's output (`out`, [M, N] row-major over the parts) against `x · Wᵀ` with `w` W's decoded values:
 * every element finite, sampled rows × sampled columns within tolerance. Returns the largest error / tolerance;
 * throws above 1.
 */
export function checkMatmulOutput(what: string, out: Float32Array, x: Float32Array, w: Float32Array, M: number, N: number, K: number): number {
  for (let i = 0; i < M * N; i++) if (!Number.isFinite(out[i])) throw new Error(`${what}: output [${Math.floor(i / N)}, ${i % N}] is ${out[i]} (not written, or overflowed)`);
  const rows = M <= 16 ? Array.from({ length: M }, (_, i) => i) : [...new Set([0, 1, M >> 1, M - 2, M - 1])];
  const cols = [...new Set([...Array.from({ length: Math.min(N, 64) }, (_, j) => Math.round((j * (N - 1)) / Math.max(1, Math.min(N, 64) - 1))), 1, N - 2].filter((n) => n >= 0 && n < N))];
  let worst = 0;
  for (const m of rows)
    for (const n of cols) {
      let s = 0;
      let a = 0;
      for (let k = 0; k < K; k++) {
        const p = x[m * K + k] * w[n * K + k];
        s += p;
        a += Math.abs(p);
      }
      const tol = 1e-4 * a + 1e-6;
      const err = Math.abs(out[m * N + n] - s) / tol;
      if (!(err <= 1)) throw new Error(`${what}: output [${m}, ${n}] is ${out[m * N + n]}, want ${s} (tolerance ${tol.toExponential(2)})`);
      worst = Math.max(worst, err);
    }
  return worst;
}

/**
 * Checks a W8A8 kernel's output (`out`, [M, N]) against the CPU reference's W8A8 product of `x` and the int8 weight
 * `w`: every element finite and within 1e-5 of |reference| + 1e-6 (the integer dots are exact; only the f32 rescale
 * and a rounding tie can differ). Returns the largest error / tolerance; throws above 1.
 */
export function checkW8A8Output(what: string, out: Float32Array, x: Float32Array, w: WeightEntry, M: number, q: ActivationQuant): number {
  const want = w8a8Matmul(Tensor.from('f32', [M, w.shape[1]], x), int8WeightOfEntry(w), q).data as Float32Array;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const tol = 1e-5 * Math.abs(want[i]) + 1e-6;
    const err = Math.abs(out[i] - want[i]) / tol;
    if (!(err <= 1)) throw new Error(`${what}: output [${Math.floor(i / w.shape[0])}, ${i % w.shape[0]}] is ${out[i]}, want ${want[i]}`);
    worst = Math.max(worst, err);
  }
  return worst;
}

/**
 * Runs the quantized matmul benchmarks on `device` and returns one row per case: per shape, per format (f32 first),
 * per M. Each kernel is checked against the host reference before it is timed (see the module comment).
 */
export async function runQuantMatmulBench(device: GPUDevice, options: QuantMatmulBenchOptions = {}): Promise<QuantMatmulBenchRow[]> {
  const quick = options.quick ?? false;
  const maxTime = options.maxTime ?? (quick ? 1 : 2);
  const log = options.log ?? (() => {});
  const waiter = new GpuWaiter({ mode: options.wait ?? 'poll' });
  const firstUse = new GpuWaiter({ mode: 'poll' });
  const target = targetOf(device, options.languageFeatures);
  const limit = device.limits.maxStorageBufferBindingSize;
  const prefill = options.prefillM ?? (quick ? 32 : 128);
  const decodeMs = options.decodeMs ?? [1, 4, 16];
  const ms = [...decodeMs, ...(prefill && !decodeMs.includes(prefill) ? [prefill] : [])];
  const schemes = (options.formats ?? QUANT_BENCH_FORMATS).map((f): BenchFormat => {
    if (f === W8A8_BENCH_FORMAT) return f;
    const s = parseQuantScheme(f);
    if (!s) throw new Error(`quant bench: '${f}' is no quantization scheme`);
    return s;
  });
  const rows: QuantMatmulBenchRow[] = [];
  for (const [N, K] of options.shapes ?? [[4096, 4096], [11008, 4096]]) {
    const dense = new Rng(N + K).normals(N * K, 0.05);
    const xs = new Map(ms.map((M) => [M, new Rng(1000 + M).normals(M * K, 1)]));
    const f32Median = new Map<number, number>();
    for (const s of [undefined, ...schemes]) {
      const format = s === undefined ? 'f32' : s === W8A8_BENCH_FORMAT ? s : s.name;
      const actQuant: ActivationQuant | undefined = s === W8A8_BENCH_FORMAT ? { scale: 'per-token' } : undefined;
      const t0 = performance.now();
      let entries: WeightEntry[];
      if (s) entries = [encode(s, 'w', N, K, dense)];
      else {
        let row = 0;
        entries = splitRows(N, K, limit).map((n, p) => {
          const e = WeightStore.entry(`w.part${p}`, 'f32', [n, K], { values: dense.subarray(row * K, (row + n) * K) });
          row += n;
          return e;
        });
      }
      const weight = uploadWeight(device, entries);
      const decoded = s && !actQuant ? decodeWeight(entries[0]) : dense;
      log(`${N}x${K} ${format}: encoded in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${(weight.bytes / 2 ** 20).toFixed(2)} MiB`);
      for (const M of ms) {
        const shape = `${decodeMs.includes(M) ? 'gemv' : 'gemm'} M=${M} ${N}x${K}`;
        const what = `${shape} ${format}`;
        const xv = xs.get(M)!;
        const x = bufferOf(device, xv);
        const parts = weight.parts.map((p) => {
          const { launch, x: xn, y } = lowerLinear(p.entry, M, target, actQuant);
          const out = bufferOf(device, new Float32Array(M * p.rows).fill(NaN));
          return { launch, out, rows: p.rows, bindings: bindingsOf(launch, xn, y, { x, out, weight: p.buffers }) };
        });
        const prepared = await Promise.all(parts.map((p) => prepareKernel(device, p.launch.kernel, [p.bindings])));
        const run: Prepared = { encode: (pass) => prepared.forEach((q) => q.encode(pass)) };
        // lavapipe compiles the pipeline on its first dispatch: keep that (hundreds of ms) out of the waiter's estimate
        await submitOnce(device, run, firstUse, 'first use');
        const got = new Float32Array(M * N);
        let col = 0;
        for (const p of parts) {
          const o = await readF32(device, p.out, M * p.rows);
          for (let m = 0; m < M; m++) got.set(o.subarray(m * p.rows, (m + 1) * p.rows), m * N + col);
          col += p.rows;
        }
        const checkWhat = `${what} (${parts[0].launch.kernel.variant})`;
        const checkError = actQuant ? checkW8A8Output(checkWhat, got, xv, entries[0], M, actQuant) : checkMatmulOutput(checkWhat, got, xv, decoded, M, N, K);
        const m = await measureCycle(what, () => submitOnce(device, run, waiter, what), maxTime);
        if (!s) f32Median.set(M, m.median);
        const speedup = (f32Median.get(M) ?? m.median) / m.median;
        const impl = [...new Set(parts.map((p) => `${p.launch.kernel.family}/${p.launch.kernel.variant}`))].join(' + ');
        rows.push({
          case: what,
          impl,
          ...m,
          format,
          N,
          K,
          M,
          weightBytes: weight.bytes,
          weightGbps: weight.bytes / m.median / 1e9,
          gflops: (2 * M * N * K) / m.median / 1e9,
          speedup,
          checkError,
          note: `${speedup.toFixed(2)}x f32${parts.length > 1 ? `; weight split in ${parts.length} bindings` : ''}`,
        });
        log(`${what} | ${impl}: ${(m.median * 1000).toFixed(2)} ms median, ${(weight.bytes / m.median / 1e9).toFixed(1)} GB/s of weight, ${speedup.toFixed(2)}x f32 (checked: error ${checkError.toFixed(3)} of tolerance)`);
        x.destroy();
        for (const p of parts) p.out.destroy();
      }
      weight.destroy();
    }
  }
  return rows;
}

function fmt(x: number, digits: number): string {
  return x.toFixed(digits);
}

/** The rows as an aligned text table: median ms, spread, weight MiB and GB/s, speed-up over f32, kernel. */
export function formatQuantMatmulBench(rows: readonly QuantMatmulBenchRow[]): string {
  const head = ['case', 'median ms', '±%', 'weight MiB', 'weight GB/s', 'vs f32', 'impl'];
  const body = rows.map((r) => [r.case, fmt(r.median * 1000, 2), fmt(r.rme, 1), fmt(r.weightBytes / 2 ** 20, 2), fmt(r.weightGbps, 1), `${fmt(r.speedup, 2)}x`, r.impl]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  return [head, ...body].map((cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

/** The value after `--flag` in `args`, if any. */
function flagValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Command-line selections: `--formats int8,w8a8`, `--shape 4096x4096`, `--m 1,4` (decode Ms; no prefill row then). */
function selection(args: readonly string[]): Pick<QuantMatmulBenchOptions, 'formats' | 'shapes' | 'decodeMs' | 'prefillM'> {
  const formats = flagValue(args, '--formats')?.split(',');
  const shape = flagValue(args, '--shape')?.split('x').map(Number) as [number, number] | undefined;
  const ms = flagValue(args, '--m')?.split(',').map(Number);
  return { ...(formats ? { formats } : {}), ...(shape ? { shapes: [shape] } : {}), ...(ms ? { decodeMs: ms, prefillM: 0 } : {}) };
}

runStandalone(import.meta.url, { label: 'quant-matmul-bench', run: (device, o) => runQuantMatmulBench(device, { quick: o.quick, wait: o.wait, log: o.log, languageFeatures: o.languageFeatures, ...selection(o.args) }), format: formatQuantMatmulBench });
