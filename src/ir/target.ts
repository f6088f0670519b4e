/**
 * What every compiler stage may know about the device it compiles for: the {@link Target}, built once (from an
 * adapter, or from a named profile for compiling without one) and read by the passes, the kernel selection and the
 * engine builder alike. Nothing after the Target is built looks at the adapter again.
 *
 * The types live in the IR layer because the graph passes and the kernel generators both read them; the Target is
 * built in `src/codegen/target.ts`, where the kernel families that supply its fusion patterns are known.
 * @module
 */
import type { DeviceProfile } from './device-profile.js';
import type { Node } from './node.js';
import type { KvCacheDType } from './kv-cache-quant.js';

export type { DeviceProfile } from './device-profile.js';
export type { KvCacheDType } from './kv-cache-quant.js';

/**
 * The kind of device: `cpu` (the reference backend), `software-gpu` (a CPU rasterizer behind WebGPU: lavapipe,
 * SwiftShader, WARP) or `gpu` (real hardware). Schedule rules branch on it.
 */
export type DeviceClass = 'cpu' | 'software-gpu' | 'gpu';

/** The precision policy: `auto` follows the cost profile, `f32` keeps everything f32, `f16` stores in f16 where the rules allow. */
export type PrecisionPolicy = 'auto' | 'f32' | 'f16';

/** The paged KV cache's layout: tokens per block and the element type of keys and values. */
export interface KvCacheLayout {
  /** Tokens per KV-cache block (a power of two from 1 to 256). */
  readonly blockSize: number;
  /** Element type of the cached keys and values (`int8`/`int4`: with a scale per token and head, see `kv-cache-quant`). */
  readonly dtype: KvCacheDType;
}

/**
 * The IR forms the target's kernels implement as one fused kernel, gathered from the kernel families: the fusion
 * passes form only these, so nothing has to be unfused later.
 */
export interface FusionPatterns {
  /** Ops that may anchor an epilogue region (`fused {kind: op}` = anchor then elementwise epilogue). */
  readonly epilogueAnchors: readonly string[];
  /** Anchor ops whose operands may take a slice-view prologue. */
  readonly prologueAnchors: readonly string[];
  /** Ops an elementwise kernel computes (and so may be absorbed into an elementwise program or an epilogue). */
  readonly elementwiseOps: ReadonlySet<string>;
  /** Whether a kernel of the target computes this candidate `fused` node as it is (its family's own check). */
  accepts(fused: Node): boolean;
}

/** Identity of the adapter a target was built from (empty strings when built from a named profile). */
export interface TargetAdapter {
  /** GPU vendor. */
  readonly vendor: string;
  /** GPU architecture. */
  readonly architecture: string;
  /** Device name. */
  readonly device: string;
  /** Driver description. */
  readonly description: string;
}

/** The subgroup sizes a device may use. */
export interface SubgroupSizes {
  /** Smallest subgroup size. */
  readonly min: number;
  /** Largest subgroup size. */
  readonly max: number;
}

/** Everything the compiler stages know about the device they compile for. */
export interface Target {
  /** Short name for reports: the profile's name (`lavapipe`, `discrete-gpu`, `cpu`). */
  readonly name: string;
  /** The kind of device, decided once when the target is built. */
  readonly deviceClass: DeviceClass;
  /** The adapter the target was built from. */
  readonly adapter: TargetAdapter;
  /** WebGPU features the kernels may use (sorted). */
  readonly features: readonly string[];
  /** WebGPU limits by name. */
  readonly limits: Readonly<Record<string, number>>;
  /** Subgroup sizes the device may use, when known. */
  readonly subgroupSize?: SubgroupSizes;
  /** WGSL language features the implementation supports (`packed_4x8_integer_dot_product`, …), sorted; absent when unknown. */
  readonly wgslLanguageFeatures?: readonly string[];
  /** The cost profile graph passes read. */
  readonly profile: DeviceProfile;
  /** The precision policy. */
  readonly precision: PrecisionPolicy;
  /** The paged KV cache's layout. */
  readonly kv: KvCacheLayout;
  /** The fused forms the target's kernels implement. */
  readonly fusion: FusionPatterns;
}

/** Whether `target` has a WebGPU feature. */
export function hasFeature(target: Pick<Target, 'features'>, feature: string): boolean {
  return target.features.includes(feature);
}

/** Whether `target`'s WGSL has a language feature (`navigator.gpu.wgslLanguageFeatures`). */
export function hasLanguageFeature(target: Pick<Target, 'wgslLanguageFeatures'>, feature: string): boolean {
  return target.wgslLanguageFeatures?.includes(feature) ?? false;
}

/** The one subgroup size the device always uses, when it reports a fixed one. */
export function fixedSubgroupSize(target: Pick<Target, 'subgroupSize'>): number | undefined {
  const s = target.subgroupSize;
  return s && s.min === s.max ? s.min : undefined;
}
