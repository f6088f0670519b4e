/**
 * Matmul kernel family: `out[b, m, n] = epilogue(sum_k A[b, m, k] * B[b, k, n])` for one (possibly broadcast) batch
 * dim, with optional transposes, f32 or f16 storage (always f32 accumulation), a fused epilogue computed before the
 * store, and the SwiGLU gate (`out[m, n] = act(acc[m, n]) * acc[m, n + N/2]`).
 *
 * Four variants, because the best kernel differs between software rasterizers and real GPUs:
 * - `gemm-subgroup`: no workgroup memory. Each lane of a subgroup loads the A values of one row once and shares them
 *   with the other lanes through `subgroupBroadcast` at constant lane indices; each lane keeps a register-blocked
 *   `subgroupSize x colsPerLane` output tile in named scalars, and every inner loop is unrolled in the generated text.
 *   Fast on Mesa's lavapipe (llvmpipe), where per-lane storage loads dominate and workgroup-memory tiling does not pay.
 * - `gemm-tiled`: the textbook GPU GEMM — A and B tiles staged in workgroup memory with vec4 global loads, a
 *   register-blocked `threadM x threadN` tile per thread. For real GPUs.
 * - `gemv`: for small M (decode). Groups of `lanesPerColumn` lanes split K between them for a block of output
 *   columns (split-K within a workgroup), read W rows with vec4 loads (best with W stored `[N, K]`, i.e. `transB`),
 *   and reduce with `subgroupAdd` or in workgroup memory.
 * - `naive`: one invocation per output element and a plain loop over K; the correctness and benchmark baseline.
 *
 * Every variant handles ragged shapes (M, N, K not multiples of the tile or of 4: loads are clamped or guarded,
 * vec4 paths only where the contiguous dim and the batch strides are multiples of 4), a dynamic M (a dim expression
 * such as `seq`, passed in the params uniform), and grids over the 65535-workgroups-per-dimension limit (the
 * workgroup index is linearized over a 2-D grid).
 *
 * Assumption of the subgroup variants: the device's subgroup size equals `subgroupSize` and subgroups are consecutive
 * ranges of `local_invocation_index` (true on lavapipe, size 8); {@link chooseMatmulVariant} only picks them when the
 * adapter reports a fixed subgroup size.
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { dimMul, parseDim, SymDim, type Dim } from '../ir/dim.js';
import type { DeviceProfile } from '../passes/device-profile.js';
import { KernelParams, paramsStruct, splitGrid, type DimLike, type GridExpr, type KernelBinding, type KernelSource } from './kernel.js';
import { enableDirectives, kernelFeatures, WGSL_HELPERS, wgslComment, type KernelFeature } from './wgsl.js';
import { isSoftwareAdapter } from '../runtime/device.js';

// ---------------------------------------------------------------------------------------------------------------
// spec

/** Storage type of a matmul operand or output (arithmetic is always f32). */
export type MatmulDType = 'f32' | 'f16';

/** An extra operand read by a matmul epilogue. */
export interface MatmulEpilogueOperand {
  /** Name (for the binding list and comments; never pasted into WGSL as code). */
  readonly name: string;
  /** Storage type. */
  readonly dtype: MatmulDType;
  /**
   * How it maps onto the output `[batch, M, N]` (N is the output width, `N/2` when gated):
   * `row` — one row of N values shared by every row (a bias); `col` — one column of M values, indexed by the row;
   * `full` — the output's own shape and batch stride (a residual); `scalar` — a single value.
   */
  readonly broadcast: 'row' | 'col' | 'full' | 'scalar';
}

/** An elementwise epilogue fused into the matmul's store. */
export interface MatmulEpilogue {
  /** Extra operands, bound after A and B in this order. */
  readonly operands: readonly MatmulEpilogueOperand[];
  /**
   * The WGSL f32 expression of the stored value, given the accumulator's expression and a loader returning the f32
   * expression of operand `i` at the output element (e.g. `(acc, load) => \`tw_gelu_erf(${acc} + ${load(0)})\``).
   */
  readonly expr: (acc: string, load: (i: number) => string) => string;
  /** Names of {@link WGSL_HELPERS} the expression calls (`erf`, `gelu_erf`, `sigmoid`, …). */
  readonly helpers?: readonly string[];
}

/** Activations available to the gated (SwiGLU / GeGLU) form. */
export type MatmulActivation = 'silu' | 'gelu' | 'gelu_tanh' | 'relu' | 'sigmoid' | 'identity';

/** Tuning of the `naive` variant. */
export interface NaiveMatmulVariant {
  /** Variant kind. */
  readonly kind: 'naive';
  /** Invocations per workgroup (along N). Default 64. */
  readonly workgroupSize?: number;
}

/** Tuning of the `gemm-subgroup` variant. */
export interface SubgroupGemmVariant {
  /** Variant kind. */
  readonly kind: 'gemm-subgroup';
  /** The device's (fixed) subgroup size; also the rows each lane shares per broadcast round. Default 8. */
  readonly subgroupSize?: number;
  /** A rows each lane loads (the subgroup's tile is `subgroupSize * rowsPerLane` rows). Default 1. */
  readonly rowsPerLane?: number;
  /** Output columns per lane. Default 4. */
  readonly colsPerLane?: number;
  /** Subgroups per workgroup, side by side along N. Default 8. */
  readonly subgroupsPerWorkgroup?: number;
}

/** Tuning of the `gemm-tiled` variant. */
export interface TiledGemmVariant {
  /** Variant kind. */
  readonly kind: 'gemm-tiled';
  /** Output rows per workgroup. Default 64. */
  readonly tileM?: number;
  /** Output columns per workgroup. Default 64. */
  readonly tileN?: number;
  /** K per workgroup-memory stage. Default 16. */
  readonly tileK?: number;
  /** Output rows per thread. Default 4. */
  readonly threadM?: number;
  /** Output columns per thread. Default 4. */
  readonly threadN?: number;
  /**
   * Whether the loop over one K tile has a constant trip count that shader compilers may unroll (default true: GPU
   * compilers profit). False hides it, which keeps lavapipe's compile time ~10x lower.
   */
  readonly unrollTileK?: boolean;
}

/** Tuning of the `gemv` variant. */
export interface GemvVariant {
  /** Variant kind. */
  readonly kind: 'gemv';
  /** Invocations per workgroup. Default 64. */
  readonly workgroupSize?: number;
  /** Lanes that split K for one block of columns (a power of two dividing the workgroup size). Default 8. */
  readonly lanesPerColumn?: number;
  /** Output columns per lane group. Default 4. */
  readonly colsPerGroup?: number;
  /** Output rows per workgroup (rows past M are computed on clamped data and not stored). Default 1. */
  readonly rowsPerBlock?: number;
  /** How the lanes of a group combine their partial sums. Default `subgroup` when lanesPerColumn > 1. */
  readonly reduction?: 'subgroup' | 'workgroup';
  /** The device's subgroup size (for `reduction: 'subgroup'`). Default 8. */
  readonly subgroupSize?: number;
}

/** A matmul variant with its tuning. */
export type MatmulVariant = NaiveMatmulVariant | SubgroupGemmVariant | TiledGemmVariant | GemvVariant;

/** The matmul variant names. */
export type MatmulVariantKind = MatmulVariant['kind'];

/** What one matmul kernel computes. */
export interface MatmulSpec {
  /** Rows of the output: a number or a dim expression evaluated at run time (`seq`, `past+seq`). */
  readonly M: number | string;
  /** Columns of `op(B)` (the output is `N/2` wide when {@link MatmulSpec.gated}). */
  readonly N: number;
  /** The contracted dim. */
  readonly K: number;
  /** Batch count (a number or dim expression). Default 1. */
  readonly batch?: number | string;
  /**
   * Elements between consecutive batches of each operand (0 broadcasts it). Defaults: dense, `M*K` for A, `K*N`
   * for B, `M*N_out` for the output.
   */
  readonly batchStrides?: { readonly a?: number | string; readonly b?: number | string; readonly out?: number | string };
  /** A is stored `[K, M]`. */
  readonly transA?: boolean;
  /** B is stored `[N, K]` (the usual weight layout; much faster for `gemv`). */
  readonly transB?: boolean;
  /** Storage types; `dtype` sets all three. Default f32. */
  readonly dtypes?: { readonly a?: MatmulDType; readonly b?: MatmulDType; readonly out?: MatmulDType };
  /** Storage type of A, B and the output, unless {@link MatmulSpec.dtypes} overrides one. */
  readonly dtype?: MatmulDType;
  /** Gated output: `out[m, n] = act(acc[m, n]) * acc[m, n + N/2]`, `N/2` wide; the epilogue then sees that value. */
  readonly gated?: { readonly activation: MatmulActivation };
  /** Fused epilogue, applied to the accumulator (or the gated value) before the store. */
  readonly epilogue?: MatmulEpilogue;
  /** Variant (a kind with default tuning, or a tuned variant). Default: {@link chooseMatmulVariant} for a plain GPU. */
  readonly variant?: MatmulVariantKind | MatmulVariant;
  /** Expected M when M is dynamic (guides {@link chooseMatmulVariant}; e.g. 1 for decode). */
  readonly expectedM?: number;
  /** Printed graph nodes the kernel implements, for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
  /** Max workgroups per grid dimension (the device limit). Default 65535. */
  readonly maxWorkgroupsPerDimension?: number;
}

// ---------------------------------------------------------------------------------------------------------------
// variant choice

/** What {@link chooseMatmulVariant} reads about a device: a `DeviceInfo` from `requestGPUDevice` fits. */
export interface MatmulDeviceInfo {
  /** Enabled features (`subgroups`, `shader-f16`, …). */
  readonly features: readonly string[];
  /** Adapter identity, as in `DeviceInfo.adapter`. */
  readonly adapter?: { readonly vendor?: string; readonly architecture?: string; readonly device?: string; readonly description?: string };
  /** GPU vendor (alternative to `adapter.vendor`). */
  readonly vendor?: string;
  /** GPU architecture (alternative to `adapter.architecture`). */
  readonly architecture?: string;
  /** Device name or driver description (alternative to `adapter.device` / `adapter.description`). */
  readonly description?: string;
  /** Subgroup sizes the adapter may use. */
  readonly subgroupSize?: { readonly min: number; readonly max: number };
  /** Device limits by WebGPU name (only `maxComputeInvocationsPerWorkgroup` is read). */
  readonly limits?: Readonly<Record<string, number>>;
  /** A device profile, or its name (`lavapipe`, `discrete-gpu`); `lavapipe` forces the software heuristic. */
  readonly profile?: DeviceProfile | string;
}

/** Largest M for which {@link chooseMatmulVariant} picks `gemv` on a real GPU. */
export const GEMV_MAX_M = 16;

/**
 * Largest M for which {@link chooseMatmulVariant} picks `gemv` on a software rasterizer. Measured on lavapipe
 * (4096x4096 weights stored [N, K]): at M = 4 the subgroup GEMM ran ~2x faster than `gemv` with 4 rows per
 * workgroup, at M = 16 ~4x faster; at M = 1 `gemv` was ahead. Per-lane loads are what costs there, and the GEMM
 * shares each activation value across the subgroup while `gemv` reloads it in every lane group.
 */
export const SOFTWARE_GEMV_MAX_M = 2;

/** True when the device is a CPU rasterizer (lavapipe/llvmpipe, SwiftShader, WARP). */
export function isSoftwareDevice(device: MatmulDeviceInfo): boolean {
  const profileName = typeof device.profile === 'string' ? device.profile : device.profile?.name;
  if (profileName === 'lavapipe') return true;
  if (profileName !== undefined && profileName !== 'cpu') return false;
  const a = device.adapter ?? {};
  return isSoftwareAdapter({ vendor: device.vendor, architecture: device.architecture, description: device.description }) || isSoftwareAdapter(a);
}

/**
 * Picks a variant and its tuning for `spec` on `device` (M is `spec.M` when static, else `spec.expectedM`).
 *
 * Software rasterizers (lavapipe), from measurements there: `gemv` for M ≤ {@link SOFTWARE_GEMV_MAX_M} (8 lanes per
 * column block reducing with subgroupAdd, or one lane per column block without subgroups); otherwise
 * `gemm-subgroup` when the device has subgroups of one fixed size — 8·rowsPerLane rows per subgroup, with
 * rowsPerLane 1 (M ≤ 8), 2, or 4 for large products (more reuse of every loaded value, at ~2x the compile time) —
 * and `gemm-tiled` without subgroups (2–4x faster than `naive` there). Real GPUs: `gemv` for M ≤ {@link GEMV_MAX_M}
 * (whole-workgroup split-K when N is small, else 32 lanes per column block), otherwise `gemm-tiled` with 64x64 tiles
 * (32x32 when the output is small).
 */
export function chooseMatmulVariant(spec: MatmulSpec, device: MatmulDeviceInfo): MatmulVariant {
  const hasSubgroups = device.features.includes('subgroups');
  const software = isSoftwareDevice(device);
  const fixedSg = device.subgroupSize && device.subgroupSize.min === device.subgroupSize.max ? device.subgroupSize.min : undefined;
  const parsedM = typeof spec.M === 'string' ? parseDim(spec.M) : spec.M;
  const m = typeof parsedM === 'number' ? parsedM : spec.expectedM;
  const nOut = spec.gated ? spec.N / 2 : spec.N;
  const maxInv = device.limits?.maxComputeInvocationsPerWorkgroup ?? 256;
  if (software) {
    const sg = fixedSg ?? 8; // lavapipe's subgroups are the SIMD width: 8 lanes with 256-bit vectors
    if (m !== undefined && m <= SOFTWARE_GEMV_MAX_M) {
      const rows = Math.max(1, m);
      return hasSubgroups
        ? { kind: 'gemv', workgroupSize: 64, lanesPerColumn: sg, colsPerGroup: 4, rowsPerBlock: rows, reduction: 'subgroup', subgroupSize: sg }
        : { kind: 'gemv', workgroupSize: 64, lanesPerColumn: 1, colsPerGroup: 4, rowsPerBlock: rows };
    }
    if (hasSubgroups && sg <= 16) {
      const big = (m ?? 0) * nOut >= 512 * 512;
      const rowsPerLane = m !== undefined && m <= sg ? 1 : big ? 4 : 2;
      // enough subgroups to cover N, at most 8 per workgroup
      const subgroupsPerWorkgroup = Math.max(1, Math.min(8, Math.ceil(nOut / (sg * 4))));
      return { kind: 'gemm-subgroup', subgroupSize: sg, rowsPerLane, colsPerLane: 4, subgroupsPerWorkgroup };
    }
    return { kind: 'gemm-tiled', tileM: 32, tileN: 32, tileK: 16, threadM: 2, threadN: 2, unrollTileK: false };
  }
  if (m !== undefined && m <= GEMV_MAX_M) {
    // enough column blocks to fill the GPU? otherwise split K across the whole workgroup
    const wg = Math.min(256, maxInv);
    const lanes = nOut / 4 < 1024 ? wg : Math.min(32, wg);
    const reduction = hasSubgroups && fixedSg !== undefined && lanes === fixedSg ? 'subgroup' : 'workgroup';
    return { kind: 'gemv', workgroupSize: wg, lanesPerColumn: lanes, colsPerGroup: 4, rowsPerBlock: Math.min(Math.max(1, m), 4), reduction, subgroupSize: fixedSg ?? 32 };
  }
  const small = (m ?? 1024) * nOut < 256 * 256;
  return small || maxInv < 256 ? { kind: 'gemm-tiled', tileM: 32, tileN: 32, tileK: 16, threadM: 2, threadN: 2 } : { kind: 'gemm-tiled', tileM: 64, tileN: 64, tileK: 16, threadM: 4, threadN: 4 };
}

/** WebGPU features a matmul kernel for `spec` needs (`shader-f16` for f16 storage, `subgroups` for subgroup variants). */
export function matmulRequiredFeatures(spec: MatmulSpec, variant: MatmulVariant = resolveVariant(spec)): string[] {
  const out: string[] = [];
  const dt = dtypesOf(spec);
  if ([dt.a, dt.b, dt.out, ...(spec.epilogue?.operands ?? []).map((o) => o.dtype)].includes('f16')) out.push('shader-f16');
  if (usesSubgroups(variant)) out.push('subgroups');
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// generation: shared pieces

/** A size known at compile time (`value`) or read from the params uniform (`ref` names it in WGSL). */
interface Size {
  readonly value?: number;
  /** WGSL expression of the size (a const name, a literal or `params.pN`). */
  readonly ref: string;
  /** Canonical dim-expression text (for grids and params), or the number. */
  readonly dim: number | string;
  /** Whether the value is a multiple of 4 for every binding of its symbols. */
  readonly mult4: boolean;
}

/** Everything the variant generators share. */
interface Ctx {
  readonly spec: MatmulSpec;
  readonly N: number; // columns of op(B)
  readonly nOut: number; // output columns
  readonly K: number;
  readonly G: 1 | 2; // accumulators per output (2 when gated)
  readonly transA: boolean;
  readonly transB: boolean;
  readonly dt: { a: MatmulDType; b: MatmulDType; out: MatmulDType };
  readonly M: Size;
  readonly batch: Size;
  readonly strideA: Size;
  readonly strideB: Size;
  readonly strideOut: Size;
  readonly params: string[];
  readonly helpers: Set<string>;
  readonly maxGrid: number;
}

function dtypesOf(spec: MatmulSpec): { a: MatmulDType; b: MatmulDType; out: MatmulDType } {
  const d = spec.dtype ?? 'f32';
  return { a: spec.dtypes?.a ?? d, b: spec.dtypes?.b ?? d, out: spec.dtypes?.out ?? d };
}

function usesSubgroups(v: MatmulVariant): boolean {
  return v.kind === 'gemm-subgroup' || (v.kind === 'gemv' && (v.lanesPerColumn ?? 8) > 1 && (v.reduction ?? 'subgroup') === 'subgroup');
}

function resolveVariant(spec: MatmulSpec): MatmulVariant {
  const v = spec.variant;
  if (v === undefined) return chooseMatmulVariant(spec, { features: [] });
  return typeof v === 'string' ? ({ kind: v } as MatmulVariant) : v;
}

function isMult4(d: Dim): boolean {
  if (typeof d === 'number') return d % 4 === 0;
  for (const c of (d as SymDim).terms.values()) if (c % 4 !== 0) return false;
  return true;
}

function checkPositiveInt(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new ShapeError('matmul', `${what} must be a positive integer, got ${v}`);
}

function makeCtx(spec: MatmulSpec): Ctx {
  checkPositiveInt('N', spec.N);
  checkPositiveInt('K', spec.K);
  if (spec.gated && spec.N % 2 !== 0) throw new ShapeError('matmul', `a gated matmul needs an even N, got ${spec.N}`);
  const params: string[] = [];
  const size = (name: string, x: number | string | Dim): Size => {
    const d: Dim = typeof x === 'string' ? parseDim(x) : x;
    if (typeof d === 'number') {
      if (!Number.isInteger(d) || d < 0) throw new ShapeError('matmul', `${name} must be a non-negative integer, got ${d}`);
      return { value: d, ref: name, dim: d, mult4: d % 4 === 0 };
    }
    const text = d.text;
    let i = params.indexOf(text);
    if (i < 0) i = params.push(text) - 1;
    return { ref: `params.p${i}`, dim: text, mult4: isMult4(d) };
  };
  const G = spec.gated ? 2 : 1;
  const nOut = spec.N / G;
  const M = size('M', spec.M);
  if (M.value === 0) throw new ShapeError('matmul', 'M must be at least 1');
  const batch = size('BATCH', spec.batch ?? 1);
  const mDim = typeof M.dim === 'number' ? M.dim : parseDim(M.dim);
  // with a single batch the strides are never used: keep them out of the params
  const s = batch.value === 1 ? { a: 0, b: 0, out: 0 } : spec.batchStrides ?? {};
  const strideA = size('A_BATCH_STRIDE', s.a ?? dimMul(mDim, spec.K));
  const strideB = size('B_BATCH_STRIDE', s.b ?? spec.K * spec.N);
  const strideOut = size('OUT_BATCH_STRIDE', s.out ?? dimMul(mDim, nOut));
  return {
    spec,
    N: spec.N,
    nOut,
    K: spec.K,
    G,
    transA: !!spec.transA,
    transB: !!spec.transB,
    dt: dtypesOf(spec),
    M,
    batch,
    strideA,
    strideB,
    strideOut,
    params,
    helpers: new Set(),
    maxGrid: spec.maxWorkgroupsPerDimension ?? 65535,
  };
}

/** `f32(x)` for f16 storage; `x` for f32. */
function toF32(dt: MatmulDType, e: string, vec4 = false): string {
  return dt === 'f16' ? (vec4 ? `vec4<f32>(${e})` : `f32(${e})`) : e;
}

/** A size as WGSL text inside `main` (static sizes are module constants, dynamic ones locals read from params). */
function sizeConsts(c: Ctx): string[] {
  const lines: string[] = [];
  for (const s of [c.M, c.batch, c.strideA, c.strideB, c.strideOut]) if (s.value !== undefined) lines.push(`const ${s.ref}: u32 = ${s.value}u;`);
  return lines;
}

/** `let` declarations at the top of `main` for the dynamic sizes, so the body always reads `M`, `BATCH`, …. */
function sizeLets(c: Ctx): string[] {
  const names: [string, Size][] = [['M', c.M], ['BATCH', c.batch], ['A_BATCH_STRIDE', c.strideA], ['B_BATCH_STRIDE', c.strideB], ['OUT_BATCH_STRIDE', c.strideOut]];
  return names.filter(([, s]) => s.value === undefined).map(([n, s]) => `  let ${n}: u32 = ${s.ref}; // ${wgslComment(String(s.dim))}`);
}

function activationExpr(act: MatmulActivation, x: string, helpers: Set<string>): string {
  switch (act) {
    case 'silu': helpers.add('sigmoid'); return `${x} * tw_sigmoid(${x})`;
    case 'sigmoid': helpers.add('sigmoid'); return `tw_sigmoid(${x})`;
    case 'gelu': helpers.add('erf'); helpers.add('gelu_erf'); return `tw_gelu_erf(${x})`;
    case 'gelu_tanh': helpers.add('gelu_tanh'); return `tw_gelu_tanh(${x})`;
    case 'relu': return `max(${x}, 0.0)`;
    case 'identity': return x;
  }
}

/** The `store_out` function: gate, epilogue and guarded store of one output element. */
function storeFn(c: Ctx): string[] {
  const gated = c.G === 2;
  const ep = c.spec.epilogue;
  const lines = [
    `// Stores output element (row, col) of the batch at out_base, after the ${gated ? 'gate and ' : ''}epilogue; skips rows >= rows and cols >= N_OUT.`,
    `fn store_out(out_base: u32, row: u32, col: u32, rows: u32, acc: f32${gated ? ', up: f32' : ''}) {`,
    `  if (row >= rows || col >= N_OUT) { return; }`,
    `  let i = out_base + row * N_OUT + col;`,
  ];
  let v = 'acc';
  if (gated) {
    lines.push(`  let gated = (${activationExpr(c.spec.gated!.activation, 'acc', c.helpers)}) * up;`);
    v = 'gated';
  }
  if (ep) {
    for (const h of ep.helpers ?? []) {
      if (!(h in WGSL_HELPERS)) throw new InputError(`matmul epilogue: unknown WGSL helper '${h}'`);
      if (h === 'gelu_erf') c.helpers.add('erf');
      c.helpers.add(h);
    }
    const load = (k: number): string => {
      const o = ep.operands[k];
      if (!o) throw new InputError(`matmul epilogue reads operand ${k}, but there are ${ep.operands.length}`);
      const idx = o.broadcast === 'row' ? 'col' : o.broadcast === 'col' ? 'row' : o.broadcast === 'scalar' ? '0u' : 'i';
      return toF32(o.dtype, `ep_${k}[${idx}]`);
    };
    lines.push(`  let y: f32 = ${ep.expr(v, load)};`);
    v = 'y';
  }
  lines.push(`  out[i] = ${c.dt.out === 'f16' ? `f16(${v})` : v};`, `}`);
  return lines;
}

/** Binding declarations (A, B, epilogue operands, out, params) and the binding list. */
function bindingsOf(c: Ctx, aVec4: boolean, bVec4: boolean): { decls: string[]; list: KernelBinding[] } {
  const arr = (dt: MatmulDType, vec4: boolean): string => (vec4 ? `array<vec4<${dt}>>` : `array<${dt}>`);
  const decls: string[] = [];
  const list: KernelBinding[] = [];
  const add = (name: string, wgslName: string, type: string, access: 'read' | 'read_write', comment: string): void => {
    decls.push(`@group(0) @binding(${list.length}) var<storage, ${access}> ${wgslName}: ${type}; // ${comment}`);
    list.push({ name, access });
  };
  add('a', 'a', arr(c.dt.a, aVec4), 'read', c.transA ? 'A stored [batch, K, M]' : 'A stored [batch, M, K]');
  add('b', 'b', arr(c.dt.b, bVec4), 'read', c.transB ? 'B stored [batch, N, K]' : 'B stored [batch, K, N]');
  (c.spec.epilogue?.operands ?? []).forEach((o, k) =>
    add(o.name, `ep_${k}`, arr(o.dtype, false), 'read', `epilogue operand ${k} (${o.broadcast})`),
  );
  add('out', 'out', arr(c.dt.out, false), 'read_write', `output [batch, M, ${c.nOut}]`);
  const ps = paramsStruct(c.params, list.length);
  if (ps) decls.push(ps.trimEnd());
  return { decls, list };
}

/** Grid `[x, y, 1]` for `nTiles * mTiles * batch` workgroups, linearized over x and y when x would exceed the limit. */
function gridOf(c: Ctx, nTiles: number, tileM: number): [GridExpr, GridExpr, GridExpr] {
  const mTiles: GridExpr = c.M.value !== undefined ? Math.ceil(c.M.value / tileM) : tileM === 1 ? c.M.dim : { ceilDiv: [c.M.dim, tileM] };
  const factors: GridExpr[] = [nTiles, mTiles, c.batch.value ?? c.batch.dim];
  if (factors.every((f) => typeof f === 'number')) {
    const total = (factors as number[]).reduce((a, b) => a * b, 1);
    const x = Math.min(total, c.maxGrid);
    return [x, Math.ceil(total / x), 1];
  }
  const dynamic = factors.filter((f) => f !== 1);
  const total: GridExpr = dynamic.length === 1 ? dynamic[0] : { mul: dynamic };
  return [{ min: [total, c.maxGrid] }, { ceilDiv: [total, c.maxGrid] }, 1];
}

/** The linear workgroup index, decomposed into (column tile, row tile, batch); returns early past the last batch. */
function tileIndexLines(tileM: number): string[] {
  return [
    `  let m_tiles = (M + ${tileM}u - 1u) / ${tileM}u;`,
    `  // linear workgroup index over a 2-D grid: column tile fastest, then row tile, then batch`,
    `  let wid = wg.x + wg.y * nwg.x;`,
    `  // always 1 (grids are 2-D); multiplying loop bounds by this opaque 1 keeps shader compilers from fully unrolling`,
    `  // the K loops, which makes lavapipe's (LLVM's) compile times explode without speeding them up`,
    `  let one = nwg.z;`,
    `  let tile_n = wid % N_TILES;`,
    `  let tile_m = (wid / N_TILES) % m_tiles;`,
    `  let batch = wid / (N_TILES * m_tiles);`,
    `  if (batch >= BATCH) { return; } // uniform: the whole workgroup leaves`,
    `  let a_base = batch * A_BATCH_STRIDE;`,
    `  let b_base = batch * B_BATCH_STRIDE;`,
    `  let out_base = batch * OUT_BATCH_STRIDE;`,
  ];
}

function header(c: Ctx, variantName: string, description: string[]): string[] {
  const shapeA = c.transA ? `[${c.batch.dim}, ${c.K}, ${c.M.dim}]` : `[${c.batch.dim}, ${c.M.dim}, ${c.K}]`;
  const shapeB = c.transB ? `[${c.batch.dim}, ${c.N}, ${c.K}]` : `[${c.batch.dim}, ${c.K}, ${c.N}]`;
  const lines = [
    `// tensorwright kernel: matmul (${variantName})`,
    `//   out[b, m, n] = ${c.G === 2 ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * B[b, k, n]`,
    `//   A ${c.dt.a} ${wgslComment(shapeA)}${c.transA ? ' (transposed)' : ''}, B ${c.dt.b} ${wgslComment(shapeB)}${c.transB ? ' (transposed)' : ''}, out ${c.dt.out}; f32 accumulation`,
    ...description.map((d) => `//   ${d}`),
  ];
  return lines;
}

/** The features a matmul kernel needs: f16 when any operand is stored as f16; subgroups for subgroup reductions. */
function matmulFeatures(c: Ctx, subgroups: boolean): KernelFeature[] {
  return kernelFeatures({ f16: [c.dt.a, c.dt.b, c.dt.out, ...(c.spec.epilogue?.operands ?? []).map((o) => o.dtype)].includes('f16'), subgroups });
}

function assemble(c: Ctx, parts: { subgroups: boolean; header: string[]; consts: string[]; decls: string[]; fns: string[]; workgroupVars?: string[]; main: string[] }): string {
  const helperOrder = ['erf', 'gelu_erf', 'gelu_tanh', 'tanh', 'sigmoid'];
  const helpers = [...c.helpers].sort((x, y) => helperOrder.indexOf(x) - helperOrder.indexOf(y)).map((h) => WGSL_HELPERS[h]);
  const enables = enableDirectives(matmulFeatures(c, parts.subgroups));
  return [
    ...enables,
    ...(enables.length ? [''] : []),
    ...parts.header,
    '',
    ...sizeConsts(c),
    `const N_OUT: u32 = ${c.nOut}u; // output columns`,
    `const K: u32 = ${c.K}u;`,
    ...parts.consts,
    '',
    ...parts.decls,
    '',
    ...(parts.workgroupVars?.length ? [...parts.workgroupVars, ''] : []),
    ...(helpers.length ? [...helpers, ''] : []),
    ...parts.fns,
    '',
    ...parts.main,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// operand fragments shared by gemm-subgroup and gemv

/**
 * How a kernel reads 4 consecutive k of A and B. A: `a_chunk(base, row, kc, rows)` → `vec4` of A[row, 4kc..4kc+3].
 * B either per column (`b_chunk(base, col, kc)` → B[4kc..4kc+3, col], the "dot" form) or, for B stored `[K, N]`
 * with N a multiple of 4, per row of 4 columns (`b_quad(base, k, q)` → B[k, 4q..4q+3], the "axpy" form).
 */
interface Fragments {
  readonly aVec4: boolean;
  readonly bVec4: boolean;
  /** True: B is read as rows of 4 columns (axpy form); false: as columns of 4 k (dot form). */
  readonly bQuads: boolean;
  /** Full 4-wide k chunks and the k left over. */
  readonly kChunks: number;
  readonly kTail: number;
  readonly fns: string[];
}

function fragments(c: Ctx, wantQuads: boolean): Fragments {
  const aVec4 = !c.transA && c.K % 4 === 0 && c.strideA.mult4;
  const bQuads = wantQuads && !c.transB && c.N % 4 === 0 && c.nOut % 4 === 0 && c.strideB.mult4;
  const bVec4 = bQuads || (c.transB && c.K % 4 === 0 && c.strideB.mult4);
  const kChunks = Math.floor(c.K / 4);
  const kTail = c.K % 4;
  const aElem = (k: string): string => toF32(c.dt.a, c.transA ? `a[base + (${k}) * rows + row]` : `a[base + row * K + ${k}]`);
  const bElem = (k: string): string => toF32(c.dt.b, c.transB ? `b[base + col * K + ${k}]` : `b[base + (${k}) * N_B + col]`);
  const vec = (elem: (k: string) => string, from: string, n: number): string =>
    `vec4<f32>(${[0, 1, 2, 3].map((i) => (i < n ? elem(`${from} + ${i}u`) : '0.0')).join(', ')})`;
  const fns: string[] = [];
  fns.push(`// A[row, 4*kc .. 4*kc+3] of the batch at base (rows = M, the row count)`);
  fns.push(`fn a_chunk(base: u32, row: u32, kc: u32, rows: u32) -> vec4<f32> {`);
  if (aVec4) fns.push(`  return ${toF32(c.dt.a, `a[base / 4u + row * K_VEC4 + kc]`, true)};`);
  else fns.push(`  let k = kc * 4u;`, `  return ${vec(aElem, 'k', 4)};`);
  fns.push(`}`);
  if (kTail) {
    fns.push(`// A[row, K - ${kTail} .. K-1], zero-padded to 4`);
    fns.push(`fn a_tail(base: u32, row: u32, rows: u32) -> vec4<f32> {`, `  return ${vec(aElem, `${kChunks * 4}u`, kTail)};`, `}`);
  }
  if (bQuads) {
    fns.push(`// B[k, 4*q .. 4*q+3] of the batch at base`);
    fns.push(`fn b_quad(base: u32, k: u32, q: u32) -> vec4<f32> {`, `  return ${toF32(c.dt.b, `b[base / 4u + k * N_B_VEC4 + q]`, true)};`, `}`);
  } else {
    fns.push(`// B[4*kc .. 4*kc+3, col] of the batch at base`);
    fns.push(`fn b_chunk(base: u32, col: u32, kc: u32) -> vec4<f32> {`);
    if (bVec4) fns.push(`  return ${toF32(c.dt.b, `b[base / 4u + col * K_VEC4 + kc]`, true)};`);
    else fns.push(`  let k = kc * 4u;`, `  return ${vec(bElem, 'k', 4)};`);
    fns.push(`}`);
    if (kTail) {
      fns.push(`// B[K - ${kTail} .. K-1, col], zero-padded to 4`);
      fns.push(`fn b_tail(base: u32, col: u32) -> vec4<f32> {`, `  return ${vec(bElem, `${kChunks * 4}u`, kTail)};`, `}`);
    }
  }
  return { aVec4, bVec4, bQuads, kChunks, kTail, fns };
}

function fragmentConsts(c: Ctx): string[] {
  return [
    `const N_B: u32 = ${c.N}u; // columns of B${c.G === 2 ? ' (gate and up halves)' : ''}`,
    ...(c.K % 4 === 0 ? [`const K_VEC4: u32 = ${c.K / 4}u;`] : []),
    ...(c.N % 4 === 0 ? [`const N_B_VEC4: u32 = ${c.N / 4}u;`] : []),
    `const K_CHUNKS: u32 = ${Math.floor(c.K / 4)}u; // full chunks of 4 k`,
  ];
}

/**
 * Unrolled multiply-accumulate of one k chunk: `rowVals[j]` is the vec4 expression of row j's A chunk, the B
 * fragment is loaded here. Accumulators: `acc_j_c` (`up_j_c` for the gate's second half), scalars in the dot form,
 * vec4 over 4 columns (`acc_j_q`) in the axpy form.
 */
function chunkMac(c: Ctx, f: Fragments, rowVals: readonly string[], cols: number, tail: boolean, indent: string): string[] {
  const L: string[] = [];
  const groups = c.G === 2 ? ['acc', 'up'] : ['acc'];
  if (f.bQuads) {
    const quads = cols / 4;
    const kn = tail ? f.kTail : 4;
    for (let g = 0; g < c.G; g++)
      for (let q = 0; q < quads; q++)
        for (let i = 0; i < kn; i++)
          L.push(`${indent}let b${groups[g] === 'up' ? 'u' : ''}_${i}_${q} = b_quad(b_base, ${tail ? `${f.kChunks * 4 + i}u` : `k + ${i}u`}, quad_${q}${g ? ' + H_VEC4' : ''});`);
    rowVals.forEach((x, j) => {
      L.push(`${indent}let x${j} = ${x};`);
      for (let g = 0; g < c.G; g++)
        for (let q = 0; q < quads; q++) {
          const terms = Array.from({ length: kn }, (_, i) => `x${j}.${'xyzw'[i]} * b${g ? 'u' : ''}_${i}_${q}`);
          L.push(`${indent}${groups[g]}_${j}_${q} += ${terms.join(' + ')};`);
        }
    });
  } else {
    for (let g = 0; g < c.G; g++)
      for (let cc = 0; cc < cols; cc++)
        L.push(`${indent}let b${g ? 'u' : ''}${cc} = ${tail ? `b_tail(b_base, col_${cc}${g ? ' + H' : ''})` : `b_chunk(b_base, col_${cc}${g ? ' + H' : ''}, kc)`};`);
    rowVals.forEach((x, j) => {
      L.push(`${indent}let x${j} = ${x};`);
      for (let g = 0; g < c.G; g++) for (let cc = 0; cc < cols; cc++) L.push(`${indent}${groups[g]}_${j}_${cc} += dot(x${j}, b${g ? 'u' : ''}${cc});`);
    });
  }
  return L;
}

/** Declarations of the accumulators (`rows` x `cols`, per gate half). */
function accDecls(c: Ctx, f: Fragments, rows: number, cols: number, indent: string): string[] {
  const L: string[] = [];
  const groups = c.G === 2 ? ['acc', 'up'] : ['acc'];
  for (const g of groups)
    for (let j = 0; j < rows; j++) {
      const names = f.bQuads ? Array.from({ length: cols / 4 }, (_, q) => `${g}_${j}_${q}`) : Array.from({ length: cols }, (_, cc) => `${g}_${j}_${cc}`);
      L.push(`${indent}${names.map((n) => `var ${n} = ${f.bQuads ? 'vec4<f32>(0.0)' : '0.0'};`).join(' ')}`);
    }
  return L;
}

/** The scalar accumulator of output (row j, column cc), for gate half g. */
function accOf(c: Ctx, f: Fragments, g: number, j: number, cc: number): string {
  const name = c.G === 2 && g === 1 ? 'up' : 'acc';
  return f.bQuads ? `${name}_${j}_${Math.floor(cc / 4)}.${'xyzw'[cc % 4]}` : `${name}_${j}_${cc}`;
}

/** Lines declaring the clamped column indices (`col_c`, or `quad_q` in the axpy form) of a lane's `cols` columns from `col0`. */
function columnLines(f: Fragments, cols: number, indent: string): string[] {
  const L: string[] = [];
  if (f.bQuads) {
    for (let q = 0; q < cols / 4; q++) L.push(`${indent}let quad_${q} = min(col0 / 4u + ${q}u, N_OUT / 4u - 1u);`);
  } else {
    for (let cc = 0; cc < cols; cc++) L.push(`${indent}let col_${cc} = min(col0 + ${cc}u, N_OUT - 1u);`);
  }
  return L;
}

// ---------------------------------------------------------------------------------------------------------------
// variants

function genNaive(c: Ctx, v: NaiveMatmulVariant): KernelSource {
  const wg = v.workgroupSize ?? 64;
  checkPositiveInt('workgroupSize', wg);
  const nTiles = Math.ceil(c.nOut / wg);
  const aElem = (row: string, k: string): string => toF32(c.dt.a, c.transA ? `a[a_base + (${k}) * M + ${row}]` : `a[a_base + (${row}) * K + ${k}]`);
  const bElem = (k: string, col: string): string => toF32(c.dt.b, c.transB ? `b[b_base + (${col}) * K + ${k}]` : `b[b_base + (${k}) * N_B + ${col}]`);
  const { decls, list } = bindingsOf(c, false, false);
  const gated = c.G === 2;
  const main = [
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(1),
    `  let row = tile_m;`,
    `  let col = tile_n * WORKGROUP_SIZE + li;`,
    `  if (col >= N_OUT) { return; }`,
    `  var acc = 0.0;`,
    ...(gated ? [`  var up = 0.0;`] : []),
    `  for (var k = 0u; k < K * one; k++) {`,
    `    let x = ${aElem('row', 'k')};`,
    `    acc += x * ${bElem('k', 'col')};`,
    ...(gated ? [`    up += x * ${bElem('k', 'col + N_OUT')};`] : []),
    `  }`,
    `  store_out(out_base, row, col, M, acc${gated ? ', up' : ''});`,
    `}`,
  ];
  const name = `naive-wg${wg}`;
  const fns = storeFn(c);
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: false,
      header: header(c, name, ['one invocation per output element, a plain loop over K (the reference variant)']),
      consts: [`const N_B: u32 = ${c.N}u;`, `const WORKGROUP_SIZE: u32 = ${wg}u;`, `const N_TILES: u32 = ${nTiles}u; // workgroups along N`],
      decls,
      fns,
      main,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, 1),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, false),
  };
}

function genSubgroupGemm(c: Ctx, v: SubgroupGemmVariant): KernelSource {
  const SG = v.subgroupSize ?? 8;
  const R = v.rowsPerLane ?? 1;
  const S = v.subgroupsPerWorkgroup ?? 8;
  let C = v.colsPerLane ?? 4;
  for (const [n, x] of [['subgroupSize', SG], ['rowsPerLane', R], ['colsPerLane', C], ['subgroupsPerWorkgroup', S]] as const) checkPositiveInt(n, x);
  const f = fragments(c, C % 4 === 0);
  if (f.bQuads && C % 4 !== 0) C = 4 * Math.ceil(C / 4);
  const tileM = SG * R;
  const tileN = S * SG * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const rowVals: string[] = [];
  for (let r = 0; r < R; r++) for (let s = 0; s < SG; s++) rowVals.push(`subgroupBroadcast(a_${r}, ${s}u)`);
  const { decls, list } = bindingsOf(c, f.aVec4, f.bVec4);
  const body: string[] = [];
  body.push(
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(tileM),
    `  let sg = li / SUBGROUP_SIZE;`,
    `  let row0 = tile_m * TILE_M;`,
    `  // this lane's first output column; its columns are col0 .. col0 + COLS_PER_LANE - 1`,
    `  let col0 = (tile_n * SUBGROUPS + sg) * SUBGROUP_TILE_N + lane * COLS_PER_LANE;`,
    ...columnLines(f, C, '  '),
    `  // the A rows this lane loads (clamped: rows past M compute garbage that is never stored)`,
    ...Array.from({ length: R }, (_, r) => `  let a_row_${r} = min(row0 + ${r * SG}u + lane, M - 1u);`),
    `  // accumulators: <acc|up>_<row j>_<column> for output row row0 + j`,
    ...accDecls(c, f, R * SG, C, '  '),
  );
  if (f.kChunks > 0) {
    body.push(`  for (var kc = 0u; kc < K_CHUNKS * one; kc++) {`);
    if (f.bQuads) body.push(`    let k = kc * 4u;`);
    body.push(...Array.from({ length: R }, (_, r) => `    let a_${r} = a_chunk(a_base, a_row_${r}, kc, M); // loaded once, shared by broadcast`));
    body.push(...chunkMac(c, f, rowVals, C, false, '    '));
    body.push(`  }`);
  }
  if (f.kTail > 0) {
    body.push(`  { // the last ${f.kTail} k`);
    body.push(...Array.from({ length: R }, (_, r) => `    let a_${r} = a_tail(a_base, a_row_${r}, M);`));
    body.push(...chunkMac(c, f, rowVals, C, true, '    '));
    body.push(`  }`);
  }
  for (let j = 0; j < R * SG; j++)
    for (let cc = 0; cc < C; cc++)
      body.push(`  store_out(out_base, row0 + ${j}u, col0 + ${cc}u, M, ${accOf(c, f, 0, j, cc)}${gated ? `, ${accOf(c, f, 1, j, cc)}` : ''});`);
  body.push(`}`);
  const name = `gemm-subgroup-sg${SG}-r${R}-c${C}-s${S}`;
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: true,
      header: header(c, name, [
        `each lane loads ${R} A row(s) per k chunk once and shares them by subgroupBroadcast (subgroup size ${SG});`,
        `each lane accumulates a ${R * SG} x ${C} output tile; ${S} subgroups per workgroup side by side along N`,
      ]),
      consts: [
        `const SUBGROUP_SIZE: u32 = ${SG}u; // must equal the device's subgroup size`,
        `const SUBGROUPS: u32 = ${S}u;`,
        `const WORKGROUP_SIZE: u32 = ${S * SG}u;`,
        `const COLS_PER_LANE: u32 = ${C}u;`,
        `const TILE_M: u32 = ${tileM}u; // rows per workgroup`,
        `const SUBGROUP_TILE_N: u32 = ${SG * C}u; // columns per subgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        ...(gated ? [`const H: u32 = ${c.nOut}u; // offset of the up half in B's columns`, ...(f.bQuads ? [`const H_VEC4: u32 = ${c.nOut / 4}u;`] : [])] : []),
        ...fragmentConsts(c),
      ],
      decls,
      fns: [...f.fns, '', ...storeFn(c)],
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, tileM),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, true),
  };
}

function genGemv(c: Ctx, v: GemvVariant): KernelSource {
  const WG = v.workgroupSize ?? 64;
  const L = v.lanesPerColumn ?? 8;
  let C = v.colsPerGroup ?? 4;
  const R = v.rowsPerBlock ?? 1;
  const SG = v.subgroupSize ?? 8;
  for (const [n, x] of [['workgroupSize', WG], ['lanesPerColumn', L], ['colsPerGroup', C], ['rowsPerBlock', R]] as const) checkPositiveInt(n, x);
  if ((L & (L - 1)) !== 0 || WG % L !== 0) throw new InputError(`gemv: lanesPerColumn (${L}) must be a power of two dividing the workgroup size (${WG})`);
  const reduction = L === 1 ? 'none' : v.reduction ?? 'subgroup';
  if (reduction === 'subgroup' && L !== SG) throw new InputError(`gemv: subgroup reduction needs lanesPerColumn (${L}) = subgroupSize (${SG})`);
  const f = fragments(c, C % 4 === 0);
  if (f.bQuads && C % 4 !== 0) C = 4 * Math.ceil(C / 4);
  const groups = WG / L;
  const tileN = groups * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const nAcc = R * c.G * C;
  const rowVals = Array.from({ length: R }, (_, r) => `a_chunk(a_base, a_row_${r}, kc, M)`);
  const tailVals = Array.from({ length: R }, (_, r) => `a_tail(a_base, a_row_${r}, M)`);
  const { decls, list } = bindingsOf(c, f.aVec4, f.bVec4);
  const body: string[] = [];
  const builtins = [
    '@builtin(workgroup_id) wg: vec3<u32>',
    '@builtin(num_workgroups) nwg: vec3<u32>',
    '@builtin(local_invocation_index) li: u32',
  ];
  body.push(
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(${builtins.join(', ')}) {`,
    ...sizeLets(c),
    ...tileIndexLines(R),
    `  let group = li / LANES_PER_COLUMN;`,
    `  let lane = li % LANES_PER_COLUMN; // lanes of a group split K: lane takes chunks lane, lane + LANES_PER_COLUMN, …`,
    `  let row0 = tile_m * ROWS;`,
    `  let col0 = (tile_n * GROUPS + group) * COLS;`,
    ...columnLines(f, C, '  '),
    ...Array.from({ length: R }, (_, r) => `  let a_row_${r} = min(row0 + ${r}u, M - 1u);`),
    ...accDecls(c, f, R, C, '  '),
  );
  const fullIters = Math.floor(f.kChunks / L);
  const remChunks = f.kChunks % L;
  if (fullIters > 0) {
    body.push(`  for (var i = 0u; i < ${fullIters}u * one; i++) {`, `    let kc = i * LANES_PER_COLUMN + lane;`);
    if (f.bQuads) body.push(`    let k = kc * 4u;`);
    body.push(...chunkMac(c, f, rowVals, C, false, '    '), `  }`);
  }
  if (remChunks > 0) {
    body.push(`  if (lane < ${remChunks}u) { // the last ${remChunks} chunk(s)`, `    let kc = ${fullIters}u * LANES_PER_COLUMN + lane;`);
    if (f.bQuads) body.push(`    let k = kc * 4u;`);
    body.push(...chunkMac(c, f, rowVals, C, false, '    '), `  }`);
  }
  if (f.kTail > 0) {
    body.push(`  if (lane == ${f.kChunks % L}u) { // the last ${f.kTail} k (the lane whose turn the next chunk would be)`);
    body.push(...chunkMac(c, f, tailVals, C, true, '    '), `  }`);
  }
  // reduction across the lanes of a group
  const accNames: string[] = [];
  for (let g = 0; g < c.G; g++) for (let j = 0; j < R; j++) for (let cc = 0; cc < C; cc++) accNames.push(accOf(c, f, g, j, cc));
  const finals = accNames.map((_, i) => `s${i}`);
  const workgroupVars: string[] = [];
  if (reduction === 'none') {
    accNames.forEach((a, i) => body.push(`  let s${i} = ${a};`));
  } else if (reduction === 'subgroup') {
    body.push(`  // sum over the group's lanes (one subgroup)`);
    accNames.forEach((a, i) => body.push(`  let s${i} = subgroupAdd(${a});`));
  } else {
    workgroupVars.push(`var<workgroup> partial: array<f32, ${WG * nAcc}>; // [accumulator][invocation]`);
    accNames.forEach((a, i) => body.push(`  partial[${i}u * WORKGROUP_SIZE + li] = ${a};`));
    body.push(`  workgroupBarrier();`);
    if (L <= 16) {
      // few lanes: one barrier, then the group's first lane adds the partial sums (barriers are costly on CPUs)
      body.push(`  // the group's first lane sums its ${L} lanes' partial sums from workgroup memory`);
      body.push(`  ${accNames.map((_, i) => `var s${i} = 0.0;`).join(' ')}`, `  if (lane == 0u) {`);
      accNames.forEach((_, i) =>
        body.push(`    s${i} = ${Array.from({ length: L }, (_, j) => `partial[${i}u * WORKGROUP_SIZE + li + ${j}u]`).join(' + ')};`),
      );
      body.push(`  }`);
    } else {
      body.push(`  // tree reduction over the group's lanes in workgroup memory`);
      for (let stride = L / 2; stride >= 1; stride /= 2) {
        body.push(`  if (lane < ${stride}u) {`);
        accNames.forEach((_, i) => body.push(`    partial[${i}u * WORKGROUP_SIZE + li] += partial[${i}u * WORKGROUP_SIZE + li + ${stride}u];`));
        body.push(`  }`, `  workgroupBarrier();`);
      }
      accNames.forEach((_, i) => body.push(`  let s${i} = partial[${i}u * WORKGROUP_SIZE + li];`));
    }
  }
  body.push(L > 1 ? `  if (lane == 0u) {` : `  {`);
  let i = 0;
  const perG = R * C;
  for (let j = 0; j < R; j++)
    for (let cc = 0; cc < C; cc++) {
      body.push(`    store_out(out_base, row0 + ${j}u, col0 + ${cc}u, M, ${finals[i]}${gated ? `, ${finals[i + perG]}` : ''});`);
      i++;
    }
  body.push(`  }`, `}`);
  const name = `gemv-l${L}-c${C}-r${R}-wg${WG}${reduction === 'none' ? '' : `-${reduction}`}`;
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: reduction === 'subgroup',
      header: header(c, name, [
        `groups of ${L} lane(s) split K (chunks of 4) for ${C} output columns x ${R} row(s); ${groups} groups per workgroup`,
        reduction === 'none' ? 'no cross-lane reduction' : `partial sums combined by ${reduction === 'subgroup' ? 'subgroupAdd' : 'a workgroup-memory tree'}`,
      ]),
      consts: [
        `const WORKGROUP_SIZE: u32 = ${WG}u;`,
        `const LANES_PER_COLUMN: u32 = ${L}u;`,
        `const GROUPS: u32 = ${groups}u; // lane groups per workgroup`,
        `const COLS: u32 = ${C}u; // output columns per group`,
        `const ROWS: u32 = ${R}u; // output rows per workgroup`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        ...(gated ? [`const H: u32 = ${c.nOut}u; // offset of the up half in B's columns`, ...(f.bQuads ? [`const H_VEC4: u32 = ${c.nOut / 4}u;`] : [])] : []),
        ...fragmentConsts(c),
      ],
      decls,
      fns: [...f.fns, '', ...storeFn(c)],
      workgroupVars,
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, R),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, reduction === 'subgroup'),
  };
}

function genTiled(c: Ctx, v: TiledGemmVariant): KernelSource {
  const TM = v.tileM ?? 64;
  const TN = v.tileN ?? 64;
  const TK = v.tileK ?? 16;
  const RM = v.threadM ?? 4;
  const RN = v.threadN ?? 4;
  for (const [n, x] of [['tileM', TM], ['tileN', TN], ['tileK', TK], ['threadM', RM], ['threadN', RN]] as const) checkPositiveInt(n, x);
  if (TM % RM || TN % RN || TK % 4) throw new InputError(`gemm-tiled: tileM/threadM, tileN/threadN must divide and tileK must be a multiple of 4`);
  const WM = TM / RM; // threads along M
  const WN = TN / RN; // threads along N
  const threads = WM * WN;
  const G = c.G;
  const TNB = TN * G; // B tile width (gate and up halves)
  const aVec4 = !c.transA && c.K % 4 === 0 && c.strideA.mult4;
  const bVec4n = !c.transB && c.N % 4 === 0 && c.nOut % 4 === 0 && c.strideB.mult4 && TN % 4 === 0;
  const bVec4k = c.transB && c.K % 4 === 0 && c.strideB.mult4;
  const bVec4 = bVec4n || bVec4k;
  const nTiles = Math.ceil(c.nOut / TN);
  const gated = G === 2;
  const { decls, list } = bindingsOf(c, aVec4, bVec4);
  const body: string[] = [];
  const aElem = (row: string, k: string): string => toF32(c.dt.a, c.transA ? `a[a_base + (${k}) * M + ${row}]` : `a[a_base + (${row}) * K + ${k}]`);
  const bElem = (k: string, col: string): string => toF32(c.dt.b, c.transB ? `b[b_base + (${col}) * K + ${k}]` : `b[b_base + (${k}) * N_B + ${col}]`);
  /** B column of tile column nn (gate half first, then the up half). */
  const bCol = (nn: string): string => (gated ? `(n0 + (${nn}) % TILE_N + select(0u, H, (${nn}) >= TILE_N))` : `(n0 + ${nn})`);
  const outCol = (nn: string): string => (gated ? `(n0 + (${nn}) % TILE_N)` : `(n0 + ${nn})`);
  const loads = (count: number, emit: (e: string, ind: string) => string[]): string[] => {
    const L: string[] = [];
    const per = Math.ceil(count / threads);
    for (let j = 0; j < per; j++) {
      const e = `li + ${j * threads}u`;
      if ((j + 1) * threads > count) L.push(`    if (${e} < ${count}u) {`, `      let e = ${e};`, ...emit('e', '      '), `    }`);
      else L.push(`    {`, `      let e = ${e};`, ...emit('e', '      '), `    }`);
    }
    return L;
  };
  // A tile: tile_a[kk * TILE_M + mm]
  const loadA = aVec4
    ? loads((TM * TK) / 4, (e, ind) => [
        `${ind}let mm = ${e} / ${TK / 4}u;`,
        `${ind}let kq = ${e} % ${TK / 4}u;`,
        `${ind}var v = vec4<f32>(0.0);`,
        `${ind}if (m0 + mm < M && k0 + kq * 4u < K) { v = ${toF32(c.dt.a, `a[a_base / 4u + (m0 + mm) * K_VEC4 + k0 / 4u + kq]`, true)}; }`,
        ...[0, 1, 2, 3].map((i) => `${ind}tile_a[(kq * 4u + ${i}u) * TILE_M + mm] = v.${'xyzw'[i]};`),
      ])
    : loads(TM * TK, (e, ind) => [
        c.transA ? `${ind}let mm = ${e} % TILE_M;` : `${ind}let mm = ${e} / TILE_K;`,
        c.transA ? `${ind}let kk = ${e} / TILE_M;` : `${ind}let kk = ${e} % TILE_K;`,
        `${ind}var v = 0.0;`,
        `${ind}if (m0 + mm < M && k0 + kk < K) { v = ${aElem('m0 + mm', 'k0 + kk')}; }`,
        `${ind}tile_a[kk * TILE_M + mm] = v;`,
      ]);
  // B tile: tile_b[kk * TILE_NB + nn]
  let loadB: string[];
  if (bVec4n)
    loadB = loads((TK * TNB) / 4, (e, ind) => [
      `${ind}let kk = ${e} / ${TNB / 4}u;`,
      `${ind}let nn = (${e} % ${TNB / 4}u) * 4u;`,
      `${ind}var v = vec4<f32>(0.0);`,
      `${ind}if (${outCol('nn')} < N_OUT && k0 + kk < K) { v = ${toF32(c.dt.b, `b[b_base / 4u + (k0 + kk) * N_B_VEC4 + ${bCol('nn')} / 4u]`, true)}; }`,
      ...[0, 1, 2, 3].map((i) => `${ind}tile_b[kk * TILE_NB + nn + ${i}u] = v.${'xyzw'[i]};`),
    ]);
  else if (bVec4k)
    loadB = loads((TK * TNB) / 4, (e, ind) => [
      `${ind}let nn = ${e} / ${TK / 4}u;`,
      `${ind}let kq = ${e} % ${TK / 4}u;`,
      `${ind}var v = vec4<f32>(0.0);`,
      `${ind}if (${outCol('nn')} < N_OUT && k0 + kq * 4u < K) { v = ${toF32(c.dt.b, `b[b_base / 4u + ${bCol('nn')} * K_VEC4 + k0 / 4u + kq]`, true)}; }`,
      ...[0, 1, 2, 3].map((i) => `${ind}tile_b[(kq * 4u + ${i}u) * TILE_NB + nn] = v.${'xyzw'[i]};`),
    ]);
  else
    loadB = loads(TK * TNB, (e, ind) => [
      c.transB ? `${ind}let kk = ${e} % TILE_K;` : `${ind}let nn = ${e} % TILE_NB;`,
      c.transB ? `${ind}let nn = ${e} / TILE_K;` : `${ind}let kk = ${e} / TILE_NB;`,
      `${ind}var v = 0.0;`,
      `${ind}if (${outCol('nn')} < N_OUT && k0 + kk < K) { v = ${bElem('k0 + kk', bCol('nn'))}; }`,
      `${ind}tile_b[kk * TILE_NB + nn] = v;`,
    ]);
  const accs: string[] = [];
  for (let g = 0; g < G; g++) for (let i = 0; i < RM; i++) accs.push(Array.from({ length: RN }, (_, j) => `var ${g ? 'up' : 'acc'}_${i}_${j} = 0.0;`).join(' '));
  body.push(
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(TM),
    `  let m0 = tile_m * TILE_M;`,
    `  let n0 = tile_n * TILE_N;`,
    `  // this thread's outputs: rows m0 + tm + THREADS_M * i, columns n0 + tn + THREADS_N * j (strided: no bank conflicts)`,
    `  let tm = li / THREADS_N;`,
    `  let tn = li % THREADS_N;`,
    ...accs.map((x) => `  ${x}`),
    `  for (var k0 = 0u; k0 < K * one; k0 += TILE_K) {`,
    `    // stage the A and B tiles (zero outside the matrices)`,
    ...loadA,
    ...loadB,
    `    workgroupBarrier();`,
    `    for (var kk = 0u; kk < TILE_K${v.unrollTileK === false ? ' * one' : ''}; kk++) {`,
    ...Array.from({ length: RM }, (_, i) => `      let a${i} = tile_a[kk * TILE_M + tm + ${i * WM}u];`),
    ...Array.from({ length: RN }, (_, j) => `      let b${j} = tile_b[kk * TILE_NB + tn + ${j * WN}u];`),
    ...(gated ? Array.from({ length: RN }, (_, j) => `      let bu${j} = tile_b[kk * TILE_NB + TILE_N + tn + ${j * WN}u];`) : []),
  );
  for (let i = 0; i < RM; i++) {
    body.push(`      ${Array.from({ length: RN }, (_, j) => `acc_${i}_${j} += a${i} * b${j};`).join(' ')}`);
    if (gated) body.push(`      ${Array.from({ length: RN }, (_, j) => `up_${i}_${j} += a${i} * bu${j};`).join(' ')}`);
  }
  body.push(`    }`, `    workgroupBarrier();`, `  }`);
  for (let i = 0; i < RM; i++)
    for (let j = 0; j < RN; j++) body.push(`  store_out(out_base, m0 + tm + ${i * WM}u, n0 + tn + ${j * WN}u, M, acc_${i}_${j}${gated ? `, up_${i}_${j}` : ''});`);
  body.push(`}`);
  const name = `gemm-tiled-${TM}x${TN}x${TK}-t${RM}x${RN}${v.unrollTileK === false ? '-rolled' : ''}`;
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: false,
      header: header(c, name, [
        `workgroup-memory tiles of ${TM}x${TK} (A) and ${TK}x${TN}${gated ? 'x2' : ''} (B), ${aVec4 || bVec4 ? 'vec4 global loads where aligned, ' : ''}${RM}x${RN} outputs per thread`,
      ]),
      consts: [
        `const N_B: u32 = ${c.N}u;`,
        ...(c.K % 4 === 0 ? [`const K_VEC4: u32 = ${c.K / 4}u;`] : []),
        ...(c.N % 4 === 0 ? [`const N_B_VEC4: u32 = ${c.N / 4}u;`] : []),
        `const TILE_M: u32 = ${TM}u;`,
        `const TILE_N: u32 = ${TN}u;`,
        `const TILE_NB: u32 = ${TNB}u; // B tile width${gated ? ' (gate half, then up half)' : ''}`,
        `const TILE_K: u32 = ${TK}u;`,
        `const THREADS_M: u32 = ${WM}u;`,
        `const THREADS_N: u32 = ${WN}u;`,
        `const WORKGROUP_SIZE: u32 = ${threads}u;`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N`,
        ...(gated ? [`const H: u32 = ${c.nOut}u; // offset of the up half in B's columns`] : []),
      ],
      decls,
      workgroupVars: [`var<workgroup> tile_a: array<f32, ${TM * TK}>; // [k][m]`, `var<workgroup> tile_b: array<f32, ${TK * TNB}>; // [k][n]`],
      fns: storeFn(c),
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, TM),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, false),
  };
}

/**
 * Generates the WGSL kernel for `spec` in the variant `spec.variant` (default: {@link chooseMatmulVariant} for a GPU
 * without subgroups).
 *
 * Bindings: `a`, `b`, the epilogue operands in order, `out`; then the params uniform when M, the batch or a batch
 * stride is a dim expression. Grid: the workgroup index is linear over `[x, y]` (column tiles fastest, then row
 * tiles, then batches).
 * @throws {@link ShapeError} for impossible sizes; {@link InputError} for inconsistent tuning or epilogues.
 */
export function generateMatmulKernel(spec: MatmulSpec): KernelSource {
  const c = makeCtx(spec);
  const v = resolveVariant(spec);
  switch (v.kind) {
    case 'naive': return genNaive(c, v);
    case 'gemm-subgroup': return genSubgroupGemm(c, v);
    case 'gemm-tiled': return genTiled(c, v);
    case 'gemv': return genGemv(c, v);
    default: throw new InputError(`unknown matmul variant ${JSON.stringify((v as { kind: unknown }).kind)}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// general form: dynamic N and K, integer data

/** What {@link generateGeneralMatmulKernel} computes: a plain batched matmul whose sizes may all be dim expressions. */
export interface GeneralMatmulSpec {
  /** Rows of the output (number or dim expression). */
  readonly M: DimLike;
  /** Columns of the output. */
  readonly N: DimLike;
  /** The contracted dim (0 gives zeros). */
  readonly K: DimLike;
  /** Batch count. Default 1. */
  readonly batch?: DimLike;
  /** Elements between consecutive batches of A and of B (0 broadcasts the operand). Default dense. */
  readonly batchStrides?: { readonly a?: DimLike; readonly b?: DimLike };
  /** A is stored `[K, M]`. */
  readonly transA?: boolean;
  /** B is stored `[N, K]`. */
  readonly transB?: boolean;
  /** Storage type of A, B and the output: floats accumulate in f32, i32 in i32 (wrapping on overflow). */
  readonly dtype: 'f32' | 'f16' | 'i32';
  /** Printed graph nodes the kernel implements, for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * The fallback for the matmuls the tuned variants do not take — a dynamic N or K (attention scores over a KV length
 * known only at run time), integer data (MatMulInteger), K = 0: one invocation per output element and a loop over
 * K, every size a literal or a params field. No epilogue (legalization leaves such matmuls unfused).
 *
 * Bindings `a`, `b`, `out`; params: the dynamic sizes. Grid: one lane per output element.
 */
export function generateGeneralMatmulKernel(spec: GeneralMatmulSpec): KernelSource {
  const params = new KernelParams();
  const [M, N, K, batch] = [spec.M, spec.N, spec.K, spec.batch ?? 1].map((d, i) => params.ref(KernelParams.canon(d, ['M', 'N', 'K', 'batch'][i])));
  const dense = (x: DimLike, y: DimLike): DimLike => {
    const d = dimMul(parseDim(x), parseDim(y));
    return typeof d === 'number' ? d : d.text;
  };
  const strideA = params.ref(spec.batchStrides?.a ?? dense(spec.M, spec.K));
  const strideB = params.ref(spec.batchStrides?.b ?? dense(spec.K, spec.N));
  const st = spec.dtype;
  const acc = st === 'i32' ? 'i32' : 'f32';
  const load = (e: string): string => (st === 'f16' ? `f32(${e})` : e);
  const aIdx = spec.transA ? `a_base + k * m_ + m` : `a_base + m * k_ + k`;
  const bIdx = spec.transB ? `b_base + n * k_ + k` : `b_base + k * n_ + n`;
  const total: GridExpr = { mul: [spec.M, spec.N, spec.batch ?? 1].map((d) => params.grid(d)) };
  const nodes = spec.nodes ?? [];
  const features = kernelFeatures({ f16: st === 'f16' });
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: matmul (general: sizes from params, ${st} data, ${acc} accumulation)`,
    `//   out[b, m, n] = sum_k A[b, m, k] * B[b, k, n]; A ${spec.transA ? '[batch, K, M]' : '[batch, M, K]'}, B ${spec.transB ? '[batch, N, K]' : '[batch, K, N]'}`,
    '',
    'const WORKGROUP_SIZE: u32 = 64u;',
    '',
    `@group(0) @binding(0) var<storage, read> a: array<${st}>;`,
    `@group(0) @binding(1) var<storage, read> b: array<${st}>;`,
    `@group(0) @binding(2) var<storage, read_write> out: array<${st}>;`,
    params.decl(3),
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    '  let i = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid; // output element',
    `  let m_ = ${M};`,
    `  let n_ = ${N};`,
    `  let k_ = ${K};`,
    `  if (i >= ${batch} * m_ * n_) { return; }`,
    '  let n = i % n_;',
    '  let m = (i / n_) % m_;',
    '  let bi = i / (n_ * m_);',
    `  let a_base = bi * ${strideA};`,
    `  let b_base = bi * ${strideB};`,
    `  var acc: ${acc} = ${acc}(0);`,
    '  for (var k = 0u; k < k_; k++) {',
    `    acc += ${load(`a[${aIdx}]`)} * ${load(`b[${bIdx}]`)};`,
    '  }',
    `  out[i] = ${st === 'f16' ? 'f16(acc)' : 'acc'};`,
    '}',
    '',
  ].join('\n');
  return {
    family: 'matmul',
    variant: `general-${st}`,
    wgsl,
    bindings: [
      { name: 'a', access: 'read' },
      { name: 'b', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    params: [...params.list],
    grid: splitGrid({ ceilDiv: [total, 64] }),
    nodes: [...nodes],
    features,
  };
}
