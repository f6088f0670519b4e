/**
 * The range kernel: writes the i32 vector `[0, 1, …, length - 1]` for a `range` node whose length is known only at
 * run time (a static one is folded to a constant before codegen). One invocation per element.
 * @module
 */
import { flatKernel } from './gather.js';
import { KernelParams, type DimLike, type KernelSource } from './kernel.js';

/** What {@link generateRangeKernel} builds. */
export interface RangeSpec {
  /** How many values (a number or a dim expression such as `seq`). */
  readonly length: DimLike;
  /** Lanes per workgroup (default 64). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** The graph nodes implemented (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/** `out[i] = i` for `i < length`: binding `out` (i32); params: the length when dynamic. */
export function generateRangeKernel(spec: RangeSpec): KernelSource {
  const params = new KernelParams();
  const length = KernelParams.canon(spec.length, 'range length');
  const WG = spec.workgroupSize ?? 64;
  return flatKernel({
    family: 'range',
    variant: `wg${WG}`,
    title: `[0, 1, ..., LENGTH - 1] as i32, LENGTH = ${length}`,
    nodes: spec.nodes,
    dtypes: ['i32'],
    decls: ['@group(0) @binding(0) var<storage, read_write> out: array<i32>;'],
    bindings: [{ name: 'out', access: 'read_write' }],
    params,
    consts: [],
    total: params.ref(length),
    totalGrid: params.grid(length),
    body: ['  out[i] = i32(i);'],
    workgroupSize: WG,
  });
}
