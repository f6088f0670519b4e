/**
 * The kernel contract as codegen sees it: {@link KernelSource} and friends (defined by the runtime, which launches
 * kernels without the compiler), the params uniform ({@link KernelParams}: dims to `u32` fields, and its WGSL
 * declaration) and {@link splitGrid} for grids larger than one dimension allows.
 * @module
 */
import { InputError } from '../errors.js';
import { parseDim } from '../ir/dim.js';
import type { GridExpr, KernelSource } from '../runtime/kernel-source.js';
export { evalGrid, evalParams, type GridExpr, type GridCeilDiv, type GridMul, type GridMin, type GridMax, type KernelBinding, type KernelSource } from '../runtime/kernel-source.js';

/** WGSL declaration of the params uniform for `params` at `@binding(binding)`: `params.p0`, `params.p1`, … */
export function paramsStruct(params: readonly string[], binding: number): string {
  if (params.length === 0) return '';
  const fields = params.map((p, i) => `  p${i}: u32, // ${p.replace(/[^A-Za-z0-9_+*\- ]/g, '?')}`).join('\n');
  return `struct Params {\n${fields}\n}\n@group(0) @binding(${binding}) var<uniform> params: Params;\n`;
}

/** A dimension: a number, or a dim expression over graph symbols evaluated at run time (`'seq'`, `'batch*seq'`). */
export type DimLike = number | string;

/** Collects a kernel's params uniform: each distinct dim expression becomes one `u32` field `params.p<k>`. */
export class KernelParams {
  /** The param expressions, in field order (a {@link KernelSource.params}). */
  readonly list: string[] = [];

  /** `d` as a number or a canonical expression (whitespace removed, constant expressions folded). */
  static canon(d: DimLike, what: string): number | string {
    if (typeof d === 'number') {
      if (!Number.isInteger(d) || d < 0) throw new InputError(`${what} must be a non-negative integer, got ${d}`);
      return d;
    }
    const parsed = parseDim(d);
    if (typeof parsed === 'number') return KernelParams.canon(parsed, what);
    return d.replace(/\s+/g, '');
  }

  /** The WGSL `u32` expression of `d`: a literal, or the params field holding it (added on first use). */
  ref(d: DimLike): string {
    const c = KernelParams.canon(d, 'dim');
    if (typeof c === 'number') return `${c}u`;
    let i = this.list.indexOf(c);
    if (i < 0) i = this.list.push(c) - 1;
    return `params.p${i}`;
  }

  /** The grid expression of `d` (a param's own text, which `evalGrid` resolves by position). */
  grid(d: DimLike): GridExpr {
    const c = KernelParams.canon(d, 'dim');
    if (typeof c === 'string') this.ref(c);
    return c;
  }

  /** The params struct declaration at `@binding(binding)` (empty when there are no params). */
  decl(binding: number): string {
    return paramsStruct(this.list, binding);
  }
}

/** A grid covering `count` workgroups (a dim) in x, spilling into y above 65535; pair with `linearWorkgroup`. */
export function splitGrid(count: GridExpr): [GridExpr, GridExpr, GridExpr] {
  if (typeof count === 'number') return [Math.min(count, 65535), Math.ceil(count / 65535), 1];
  return [{ min: [count, 65535] }, { ceilDiv: [count, 65535] }, 1];
}

export type { HeadWindow } from '../ir/head-window.js';
