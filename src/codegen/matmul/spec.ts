/**
 * What a matmul kernel computes ({@link MatmulSpec}: sizes, transposes, storage types, the fused epilogue and the
 * SwiGLU gate) and the variants the family has, with their tuning parameters.
 * @module
 */
import { WGSL_HELPERS } from '../wgsl.js';

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
