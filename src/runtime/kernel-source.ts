/**
 * The contract between kernel generators and the runtime: a {@link KernelSource} is WGSL plus everything needed to
 * launch it without the compiler — its storage bindings in order, the `u32` parameters it reads from a uniform buffer
 * (values of symbolic dims such as `seq` or `past+seq`, known only at run time), and its dispatch grid as a small
 * expression over those parameters. Kernel sources are plain JSON, so saved engines carry them as they are.
 *
 * Binding convention: storage buffers at `@group(0) @binding(0..n-1)` in {@link KernelSource.bindings} order; when
 * `params` is non-empty, a uniform buffer `params` at `@binding(n)` holding one `u32` per parameter (declared with
 * `paramsStruct` in the codegen).
 * @module
 */
// the declarations name WebGPU types (GPUDevice, …): a consumer's compiler gets them from @webgpu/types, a dependency
/// <reference types="@webgpu/types" preserve="true" />
import { InputError } from '../errors.js';
import { evalDim, parseDim, type DimBindings } from '../ir/dim.js';

/** A storage buffer the kernel binds. */
export interface KernelBinding {
  /** Name in the WGSL source (also used in error messages). */
  readonly name: string;
  /** Read-only or written. */
  readonly access: 'read' | 'read_write';
}

/**
 * A dispatch-grid size: a number, a parameter name, or `{ceilDiv: [a, b]}`, `{mul: [...]}`, `{min: [...]}`,
 * `{max: [...]}` over grid expressions.
 */
export type GridExpr = number | string | GridCeilDiv | GridMul | GridMin | GridMax;

/** `ceil(a / b)`. */
export interface GridCeilDiv {
  /** Dividend and divisor. */
  readonly ceilDiv: readonly [GridExpr, GridExpr];
}
/** Product. */
export interface GridMul {
  /** Factors. */
  readonly mul: readonly GridExpr[];
}
/** Minimum. */
export interface GridMin {
  /** Operands. */
  readonly min: readonly GridExpr[];
}
/** Maximum. */
export interface GridMax {
  /** Operands. */
  readonly max: readonly GridExpr[];
}

/** A generated kernel, ready to launch. */
export interface KernelSource {
  /** Kernel family (`elementwise`, `matmul`, `attention`, …). */
  readonly family: string;
  /** Variant chosen within the family (e.g. `gemv-nk-wg64`), for reports and the timing cache. */
  readonly variant: string;
  /** WGSL source. */
  readonly wgsl: string;
  /** Storage bindings, in binding order. */
  readonly bindings: readonly KernelBinding[];
  /**
   * Uniform parameters in order: each is the text of a dim expression over the graph's symbols (`seq`, `past+seq`)
   * or a number, evaluated at dispatch time.
   */
  readonly params: readonly string[];
  /** Dispatch grid `[x, y, z]`. */
  readonly grid: readonly [GridExpr, GridExpr, GridExpr];
  /**
   * The graph nodes the kernel implements (printed form, for profiles and errors; never part of the WGSL). When equal
   * kernels are merged, the union of their nodes (capped).
   */
  readonly nodes: readonly string[];
  /**
   * The WebGPU features the WGSL needs (`shader-f16`, `subgroups`), declared by the generator together with the WGSL's
   * `enable` directives. Absent in engines saved before it existed: `kernelFeaturesOf` then reads the directives.
   */
  readonly features?: readonly string[];
  /** How the variant was chosen, for tunable kernels (absent for the others and in engines saved before tuning). */
  readonly schedule?: KernelSchedule;
}

/**
 * How a tunable kernel's variant was chosen: by the schedule rules (`heuristic`), by a timing table measured on the
 * device (`tuned`), or as a tuner round's trial (`explore`). Kernels whose variant the caller forced have none.
 */
export interface KernelSchedule {
  /** Who chose. */
  readonly source: 'heuristic' | 'tuned' | 'explore';
  /** The kernel signature the choice is keyed by (family and code-deciding spec, no graph names). */
  readonly signature: string;
  /** The chosen variant with its tuning, as canonical JSON (keys sorted): what a timing cache stores. */
  readonly variant: string;
  /** Index of the chosen variant among the candidates the rules allow (0 is the rules' own pick). */
  readonly candidate: number;
  /** Candidates the rules allow for the signature (absent when they were not enumerated: no tuning was asked for). */
  readonly candidates?: number;
}

/**
 * The WebGPU features a kernel needs: its declared {@link KernelSource.features}, or, for kernels saved without them,
 * those its WGSL's `enable` directives (and subgroup builtins) ask for.
 * @internal
 */
export function kernelFeaturesOf(k: KernelSource): readonly string[] {
  if (k.features) return k.features;
  const f: string[] = [];
  if (/^\s*enable f16;/m.test(k.wgsl)) f.push('shader-f16');
  if (/^\s*enable subgroups;/m.test(k.wgsl) || /\bsubgroup[A-Z]/.test(k.wgsl)) f.push('subgroups');
  return f;
}

/**
 * Values of a kernel's params for the given symbol bindings.
 * @internal
 */
export function evalParams(params: readonly string[], bindings: DimBindings): Uint32Array {
  // uniform buffers are sized in 16-byte units
  const out = new Uint32Array(Math.max(4, Math.ceil(params.length / 4) * 4));
  params.forEach((p, i) => {
    const v = evalDim(parseDim(p), bindings);
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new InputError(`kernel parameter ${p} = ${v} is not a u32`);
    out[i] = v;
  });
  return out;
}

/**
 * Evaluates a grid expression; parameter names resolve through `params`/`values` (by position).
 * @internal
 */
export function evalGrid(e: GridExpr, params: readonly string[], values: Uint32Array | DimBindings): number {
  if (typeof e === 'number') return e;
  if (typeof e === 'string') {
    const i = params.indexOf(e);
    if (i >= 0 && values instanceof Uint32Array) return values[i];
    return evalDim(parseDim(e), values instanceof Uint32Array ? {} : values);
  }
  if ('ceilDiv' in e) return Math.ceil(evalGrid(e.ceilDiv[0], params, values) / evalGrid(e.ceilDiv[1], params, values));
  if ('mul' in e) return e.mul.reduce<number>((a, x) => a * evalGrid(x, params, values), 1);
  if ('min' in e) return Math.min(...e.min.map((x) => evalGrid(x, params, values)));
  return Math.max(...e.max.map((x) => evalGrid(x, params, values)));
}

/**
 * The pipeline layout of a kernel, built from its binding list (storage buffers, then the params uniform). An explicit
 * layout rather than `'auto'`: auto layouts drop bindings the WGSL never reads (a params uniform whose values only
 * size the grid), and binding those would then fail.
 * @internal
 */
export function kernelPipelineLayout(device: GPUDevice, kernel: KernelSource): GPUPipelineLayout {
  const entries: GPUBindGroupLayoutEntry[] = kernel.bindings.map((b, binding) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' } }));
  if (kernel.params.length) entries.push({ binding: kernel.bindings.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
  return device.createPipelineLayout({ bindGroupLayouts: [device.createBindGroupLayout({ label: `${kernel.family}/${kernel.variant}`, entries })] });
}
