/**
 * The distinct kernels of an engine: a kernel's WGSL is its identity (node ids and names never reach the WGSL), so
 * kernels with the same WGSL and the same launch shape are one kernel, one shader module and one pipeline, however
 * many layers run it. {@link KernelSet} collects kernels under that rule and keeps, per kernel, the graph nodes it
 * implements (for profiles and errors).
 * @module
 */
import { kernelFeaturesOf, type KernelSource } from '../runtime/kernel-source.js';

/** At most this many graph nodes are kept per merged kernel ({@link KernelSource.nodes}). */
export const MAX_KERNEL_NODES = 64;

/** What makes two kernels one: the WGSL, plus how it is launched (grid, params, binding access). */
function identityKey(k: KernelSource): string {
  return JSON.stringify([k.wgsl, k.grid, k.params, k.bindings.map((b) => b.access)]);
}

/** Kernels deduplicated by identity, in first-seen order; merged kernels list the union of their nodes. */
export class KernelSet {
  /** The distinct kernels; a dispatch refers to one by its index here. */
  readonly kernels: KernelSource[] = [];
  private readonly index = new Map<string, number>();

  /**
   * The index of `k`: a kernel identical to an earlier one gets that one's index, and its nodes join that kernel's
   * {@link KernelSource.nodes} (union, first-seen order, at most {@link MAX_KERNEL_NODES}).
   */
  add(k: KernelSource): number {
    const key = identityKey(k);
    const i = this.index.get(key);
    if (i === undefined) {
      this.index.set(key, this.kernels.length);
      return this.kernels.push(plainKernel(k)) - 1;
    }
    const prev = this.kernels[i];
    this.kernels[i] = { ...prev, nodes: mergeNodes(prev.nodes, k.nodes) };
    return i;
  }

  /** The WebGPU features the kernels need (the sorted union of their {@link KernelSource.features}). */
  requiredFeatures(): string[] {
    return requiredFeatures(this.kernels);
  }
}

/** Only the {@link KernelSource} fields of `k` (generators may return more, such as an elementwise kernel's nodes). */
function plainKernel(k: KernelSource): KernelSource {
  const { family, variant, wgsl, bindings, params, grid, features, schedule } = k;
  return { family, variant, wgsl, bindings, params, grid, nodes: mergeNodes([], k.nodes), ...(features ? { features: [...features] } : {}), ...(schedule ? { schedule: { ...schedule } } : {}) };
}

/** `a` then the entries of `b` not in `a`, at most {@link MAX_KERNEL_NODES} in all. */
function mergeNodes(a: readonly string[], b: readonly string[]): string[] {
  const out = [...a];
  for (const n of b) {
    if (out.length >= MAX_KERNEL_NODES) break;
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

/** The sorted union of the WebGPU features `kernels` need (declared, or read from saved kernels without them). */
export function requiredFeatures(kernels: readonly KernelSource[]): string[] {
  return [...new Set(kernels.flatMap((k) => kernelFeaturesOf(k)))].sort();
}
