/**
 * The kernel contract as codegen sees it: {@link KernelSource} and friends (defined by the runtime, which launches
 * kernels without the compiler) plus the WGSL declaration of the params uniform.
 * @module
 */
export { evalGrid, evalParams, type GridExpr, type GridCeilDiv, type GridMul, type GridMin, type GridMax, type KernelBinding, type KernelSource } from '../runtime/kernel-source.js';

/** WGSL declaration of the params uniform for `params` at `@binding(binding)`: `params.p0`, `params.p1`, … */
export function paramsStruct(params: readonly string[], binding: number): string {
  if (params.length === 0) return '';
  const fields = params.map((p, i) => `  p${i}: u32, // ${p.replace(/[^A-Za-z0-9_+*\- ]/g, '?')}`).join('\n');
  return `struct Params {\n${fields}\n}\n@group(0) @binding(${binding}) var<uniform> params: Params;\n`;
}
