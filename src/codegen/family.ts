/**
 * What a kernel family is, as the rest of the compiler sees it: the IR forms it implements (plain ops, and fused
 * forms as fusion patterns the fusion passes take from the {@link Target}), the variants it has, the WebGPU
 * features it may use, and how it lowers a node to launches. The schedule rules that pick a variant live apart from
 * the generators (`src/codegen/schedule/`), and the registry of families is `src/codegen/families/index.ts`: adding a
 * family is one file and one line there.
 * @mergeModuleWith compile
 * @module
 */
import { Node } from '../ir/node.js';
import type { PagedAttention } from '../ir/paged-kv.js';
import type { Target } from '../ir/target.js';
import type { WeightEncoding } from '../ir/weights.js';
import type { AttentionVariant } from './attention.js';
import type { KernelSource } from './kernel.js';
import type { MatmulVariantKind } from './matmul/spec.js';
import type { TuningRequest } from './schedule/tuning.js';

/** Kernel variants forced over the schedule rules (tuning, debugging). */
export interface LowerVariants {
  /** Matmul variant kind. */
  readonly matmul?: MatmulVariantKind;
  /** Attention variant: a kind, or a kind with its tuning. */
  readonly attention?: AttentionVariant['kind'] | AttentionVariant;
}

/** A layer's K or V pool of the paged KV cache. */
export interface KvPoolOperand {
  /** Always `kv`. */
  readonly kind: 'kv';
  /** Decoder layer. */
  readonly layer: number;
  /** Keys or values. */
  readonly which: 'k' | 'v';
}

/** The block tables of the batch's sequences, `[B, table_stride]` (position block → pool block). */
export interface BlockTableOperand {
  /** Always `block-table`. */
  readonly kind: 'block-table';
}

/**
 * A per-row input of a ragged batch that the runtime writes each step: `positions` (each row's position in its
 * sequence) or `row_seq` (each row's sequence, its row of the block table). Both are i32 `[seq]`.
 */
export interface RowInputOperand {
  /** Always `input`. */
  readonly kind: 'input';
  /** Which input. */
  readonly name: 'positions' | 'row_seq';
}

/**
 * The attention-mass buffer of H2O eviction (f32 `[rows, table_stride · blockSize]`, see `src/codegen/attention-mass.ts`),
 * which the runtime clears before a step that observes the mass and reads back after it.
 */
export interface AttentionMassOperand {
  /** Always `attention-mass`. */
  readonly kind: 'attention-mass';
}

/**
 * A buffer a launch binds that is not a graph value: a KV pool, the block tables, a per-row input of the batch, or the
 * attention-mass buffer.
 */
export type KvOperand = KvPoolOperand | BlockTableOperand | RowInputOperand | AttentionMassOperand;

/**
 * A scratch buffer owned by the node being lowered: one launch of the node writes it and a later launch of the same
 * node reads it (the split-KV attention's partial softmax states), so its contents never outlive the node. Scratch
 * buffers of one `name` are one engine buffer, sized for the largest use over every plan at the plan's own dims (its
 * most rows): nodes run one after another, and no two nodes' uses overlap.
 */
export interface ScratchOperand {
  /** Always `scratch`. */
  readonly kind: 'scratch';
  /** The buffer's name (uses of one name share it). */
  readonly name: string;
  /** Its f32 elements: a number or a dim expression over the plan's dims (`seq*640`). */
  readonly elements: number | string;
}

/**
 * One payload part of an encoded weight (`packed`, `scales`, `zeroPoints`, `mins` of a quantized weight; `values`,
 * `indices` of an N:M-sparse one; `rowPtr`, `colIdx`, `blocks` of a block-sparse one), for kernels that read the
 * encoded bytes themselves (the engine builder binds that part of the weight's entry).
 */
export interface WeightPartOperand {
  /** Always `weight-part`. */
  readonly kind: 'weight-part';
  /** The `weight` node. */
  readonly node: Node;
  /** The payload role (a key of the weight entry's `data`). */
  readonly part: string;
}

/**
 * What a launch binds, in binding order: graph values (the engine builder finds their buffers), parts of encoded
 * weights, KV-cache buffers, or scratch buffers of the node.
 */
export type LaunchOperand = Node | WeightPartOperand | KvOperand | ScratchOperand;

/**
 * Whether a launch operand is a graph value (rather than a KV-cache buffer).
 * @internal
 */
export function isGraphOperand(x: LaunchOperand): x is Node {
  return x instanceof Node;
}

/** One kernel launch: the kernel, what it binds (its output last), and a label naming the graph nodes it computes. */
export interface Launch {
  /** The kernel. */
  readonly kernel: KernelSource;
  /** Its storage bindings, in order. */
  readonly operands: readonly LaunchOperand[];
  /** The graph nodes it computes (printed), for profiles and errors. */
  readonly label: string;
  /**
   * A launch that observes this one for H2O eviction (a paged attention's attention-mass kernel): the engine runs it
   * right after this launch, reading the same buffers, in the steps that ask for the attention mass, and never
   * otherwise. Its operands must still hold their values then (they are this launch's operands).
   */
  readonly observer?: Omit<Launch, 'observer'>;
}

/**
 * What lowering knows besides the node.
 * @internal
 */
export interface LowerContext {
  /** The target. */
  readonly target: Target;
  /** The number of new tokens the plan is for (decode GEMV vs prefill GEMM, decode vs flash attention). */
  readonly expectedSeq: number;
  /** Attention nodes that read the paged KV cache. */
  readonly paged: ReadonlyMap<Node, PagedAttention>;
  /**
   * The most keys one query may attend to (a causal LM's `maxPositions`), when known: the split-KV decode attention
   * sizes its split count for it.
   */
  readonly maxKvLen?: number;
  /** Variants to use instead of the schedule rules. */
  readonly variants?: LowerVariants;
  /** Measured picks for tunable kernels, and the tuner's trial round (absent: the schedule rules decide). */
  readonly tuning?: TuningRequest;
  /**
   * The storage encoding of a `weight` node's entry in the graph's weight store (dense for any other node): the
   * graph sees a quantized weight as a plain f32 tensor, and families that read encoded bytes ask here.
   */
  weightEncoding(node: Node): WeightEncoding;
}

/**
 * The fused forms a family implements.
 * @internal
 */
export interface FamilyFusion {
  /** The fused `kind` the family lowers (the anchor op's name for epilogue fusion). */
  readonly kind: string;
  /** Whether the fusion pass may grow an epilogue region around this op (the anchor, same as `kind`). */
  readonly epilogueAnchor?: boolean;
  /** Whether the anchor's operands may take a slice-view prologue. */
  readonly prologues?: boolean;
  /** Pointwise ops the family computes inside a fused program (the elementwise family's). */
  readonly pointwiseOps?: ReadonlySet<string>;
  /** Whether one kernel of the family computes this candidate fused node of its kind. */
  accepts(fused: Node): boolean;
}

/**
 * A kernel family.
 * @internal
 */
export interface KernelFamily {
  /** Name, as in `KernelSource.family`. */
  readonly name: string;
  /** The plain ops it lowers. */
  readonly ops: readonly string[];
  /** The fused forms it lowers. */
  readonly fusion?: FamilyFusion;
  /**
   * Whether the family takes this node of one of its forms (default: every one). Several families may implement one
   * form (a dense matmul and a dequantizing matmul); the registry gives a node to the first, in registry order, that
   * takes it. Without a context (no weight store to consult) a family that needs one declines.
   */
  takes?(node: Node, ctx?: LowerContext): boolean;
  /** Its variants (names, for reports and tuning). */
  readonly variants: readonly string[];
  /** WebGPU features its kernels use when the target has them (a kernel declares what it actually needs). */
  readonly features: readonly string[];
  /** The launches computing `node` (the family's schedule rules pick the variant). */
  lower(node: Node, ctx: LowerContext): Launch[];
}
