/**
 * The engine artifact: what `compile()` produces and the runtime executes, as plain JSON plus one binary file of
 * weights already in kernel layout. Versioned; the runtime refuses versions it does not know.
 *
 * An engine has one or more *plans* (ordered dispatches): a `prefill` plan for many tokens and a `decode` plan for a
 * few, each picked by the number of new tokens, sharing the weights, the activation arena and the KV cache.
 * @module
 */
import { ModelFormatError } from '../errors.js';
import type { DType } from '../ir/dtype.js';
import type { KvCacheDType } from '../ir/kv-cache-quant.js';
import type { WeightEncoding } from '../ir/weights.js';
import type { KernelSource } from './kernel-source.js';
import { validateEngineManifest } from './engine-manifest-schema.js';

/**
 * Current artifact version. 3: causal-LM plans run a ragged batch of sequences (per-row `positions` and `row_seq`
 * inputs, per-sequence block tables, logits at the rows `logit_rows` lists, one sampler launch per sampled row);
 * version 2 engines ran one sequence and this runtime cannot drive their kernels. 2: the GPU sampler takes its
 * settings as run-time params (version 1 compiled them into its WGSL).
 */
export const ENGINE_FORMAT_VERSION = 3;

/** One payload buffer of a weight inside `weights.bin`. */
export interface WeightPartManifest {
  /** Role (`values`, `packed`, `scales`, …). */
  readonly role: string;
  /** Typed-array kind of the payload. */
  readonly array: 'f32' | 'u16' | 'i32' | 'u32' | 'u8';
  /** Byte offset in `weights.bin`. */
  readonly byteOffset: number;
  /** Byte length. */
  readonly byteLength: number;
}

/** A weight as the engine stores it. */
export interface WeightManifest {
  /** Weight id in the compiled graph. */
  readonly id: string;
  /** Model name of the weight. */
  readonly name: string;
  /** Logical dtype. */
  readonly dtype: DType;
  /** Logical shape. */
  readonly shape: readonly number[];
  /** Storage encoding. */
  readonly encoding: WeightEncoding;
  /** Payload buffers. */
  readonly parts: readonly WeightPartManifest[];
}

/** An activation slot. */
export interface ArenaRef {
  /** Discriminant. */
  readonly kind: 'arena';
  /** Slot index ({@link EngineManifest.slots}). */
  readonly slot: number;
  /** Bytes of the value (at the plan's sizes). */
  readonly size: number;
}
/** One payload buffer of a weight. */
export interface WeightRef {
  /** Discriminant. */
  readonly kind: 'weight';
  /** Index into {@link EngineManifest.weights}. */
  readonly weight: number;
  /** Payload role (`values`, `packed`, `scales`, …). */
  readonly part: string;
}
/** A caller-provided input. */
export interface InputRef {
  /** Discriminant. */
  readonly kind: 'input';
  /** Input name. */
  readonly name: string;
}
/** One layer's K or V pool of the paged KV cache. */
export interface KvRef {
  /** Discriminant. */
  readonly kind: 'kv';
  /** Decoder layer. */
  readonly layer: number;
  /** Keys or values. */
  readonly which: 'k' | 'v';
}
/** The block tables of a step's sequences: `[B, table_stride]` u32 block ids, one row per sequence of the batch. */
export interface BlockTableRef {
  /** Discriminant. */
  readonly kind: 'block-table';
}
/** The sampled-token buffer (one u32, read back after each step). */
export interface SampleRef {
  /** Discriminant. */
  readonly kind: 'sample';
}

/**
 * A scratch buffer ({@link EngineManifest.scratch}): written by one dispatch of a node and read by a later dispatch of
 * the same node (the split-KV attention's partial softmax states), never across nodes.
 */
export interface ScratchRef {
  /** Discriminant. */
  readonly kind: 'scratch';
  /** Index into {@link EngineManifest.scratch}. */
  readonly index: number;
  /** Bytes the dispatch uses (at the plan's sizes), at most the buffer's. */
  readonly size: number;
}

/**
 * The attention-mass buffer of H2O eviction: f32 `[rows, table_stride · blockSize]`, cleared before a step that
 * observes the attention mass and read back after it; only the dispatches of {@link KvManifest.attentionMass} bind it.
 */
export interface AttentionMassRef {
  /** Discriminant. */
  readonly kind: 'attention-mass';
}

/** Where a kernel binding's buffer comes from. */
export type BufferRef = ArenaRef | WeightRef | InputRef | KvRef | BlockTableRef | SampleRef | AttentionMassRef | ScratchRef;

/** A dispatch run right after dispatch `after` of a plan, in the steps that observe the attention mass. */
export interface ObserverManifest {
  /** Index of the observed dispatch in its plan (the observers of a plan in increasing order). */
  readonly after: number;
  /** The launch: an attention-mass kernel binding the observed attention's q, its layer's K pool, the block tables, `positions`, `row_seq` and the attention-mass buffer. */
  readonly dispatch: DispatchManifest;
}

/** Who wrote the artifact, and when. */
export interface EngineProvenance {
  /** Producer. */
  readonly by: string;
  /** ISO time. */
  readonly at: string;
}

/** The device an engine was compiled for. */
export interface EngineDevice {
  /** Adapter description. */
  readonly description: string;
  /** Enabled features. */
  readonly features: readonly string[];
}

/** The model an engine was compiled from. */
export interface EngineModel {
  /** Model family (`llama`, `gpt2`, `graph`). */
  readonly family: string;
  /** Its config, for reports. */
  readonly config: unknown;
}

/** One kernel launch. */
export interface DispatchManifest {
  /** Index into {@link EngineManifest.kernels}. */
  readonly kernel: number;
  /** Buffers for the kernel's storage bindings, in order. */
  readonly bindings: readonly BufferRef[];
  /** What it computes (printed node or a short description), for profiles and errors. */
  readonly label: string;
}

/** An ordered list of dispatches for a range of new-token counts. */
export interface PlanManifest {
  /** `prefill` or `decode`. */
  readonly name: string;
  /** Largest number of new tokens this plan serves. */
  readonly maxSeq: number;
  /** The launches. */
  readonly dispatches: readonly DispatchManifest[];
}

/** A graph input or output as the engine exposes it. */
export interface IOManifest {
  /** Name. */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /** Shape as dim texts (`seq`, `64`). */
  readonly shape: readonly string[];
  /** Bytes of the largest value the engine accepts. */
  readonly maxBytes: number;
  /** For outputs: where the value lives in the arena. */
  readonly ref?: BufferRef;
  /**
   * For inputs the runtime computes (constants holding symbolic dims, such as a position `seq_len`): the element
   * values as dim texts (`seq`, `past+seq`, `3`; one value fills every element), evaluated with each run's bindings
   * and written before the dispatches. The caller does not pass these.
   */
  readonly values?: readonly string[];
}

/** The paged KV cache an engine owns. */
export interface KvManifest {
  /** Decoder layers. */
  readonly layers: number;
  /** KV heads. */
  readonly numKvHeads: number;
  /** Head dim. */
  readonly headDim: number;
  /** Tokens per block. */
  readonly blockSize: number;
  /** Blocks per layer pool. */
  readonly numBlocks: number;
  /**
   * Storage dtype: `f32`, `f16`, or `int8`/`int4` with a scale per (token, head) in the block layout of
   * `src/ir/kv-cache-quant.ts` (added in version 3 without a version change: runtimes that predate it refuse such
   * engines by this field, and read every engine they could read before).
   */
  readonly dtype: KvCacheDType;
  /**
   * The key shift of a sliding KV window with attention sinks (optional; f32/f16 pools of a model with one `rope`
   * configuration): a rope kernel over the whole K pool seen as `[blocks, blockSize, numKvHeads, headDim]` with an i32
   * position per slot (bindings `x` = a K pool, `positions`, `out` = a scratch pool; dynamic dim `blocks`). The
   * session rotates the blocks it names by `−delta` and copies them back. Engines without it cannot shift keys.
   */
  readonly keyShift?: {
    /** Index of the key-shift kernel in the engine's kernels. */
    readonly kernel: number;
    /** What it computes (the rope it applies), for profiles and errors. */
    readonly label: string;
  };
  /**
   * The attention-mass observers of H2O heavy-hitter eviction (optional; f32/f16 pools): per plan (in the order of
   * {@link EngineManifest.plans}; empty for a plan without them, such as the whole-step decode kernel), one dispatch
   * after each layer's paged attention that adds the softmax weight each cached key receives, summed over query
   * heads, to the attention-mass buffer (see `src/codegen/attention-mass.ts`). A session runs them only in steps that
   * ask, on a plan that has them. Engines without them cannot run H2O eviction. (Added in version 3 without a version
   * change: runtimes that predate it ignore the field, and no plan dispatch binds the attention-mass buffer.)
   */
  readonly attentionMass?: {
    /** What they compute, for profiles and errors. */
    readonly label: string;
    /** Per plan, its observers. */
    readonly plans: readonly (readonly ObserverManifest[])[];
  };
}

/** Causal-LM facts the generation loop needs. */
export interface LMManifest {
  /** The output holding the last position's logits. */
  readonly logits: string;
  /** Vocabulary size. */
  readonly vocabSize: number;
  /** Longest sequence. */
  readonly maxPositions: number;
  /** Begin-of-sequence id. */
  readonly bosId: number;
  /** Ids that stop generation. */
  readonly stopTokens: readonly number[];
  /** GPU sampling: the argmax launch (reads the logits, writes the `sample` buffer). */
  readonly argmax: DispatchManifest;
  /**
   * GPU sampling at temperature > 0: temperature, top-p, top-k and the coin are run-time params (see
   * src/runtime/sampler-params.ts), so one engine takes any sampling settings.
   */
  readonly sampler: DispatchManifest;
}

/** The whole manifest (`engine.json`). */
export interface EngineManifest {
  /** Always `tensorwright-engine`. */
  readonly format: 'tensorwright-engine';
  /** {@link ENGINE_FORMAT_VERSION} at the time it was written. */
  readonly version: number;
  /** Producer and time. */
  readonly created: EngineProvenance;
  /** The device it was compiled for (kernels were chosen for it). */
  readonly device: EngineDevice;
  /** Model family and config, for reports. */
  readonly model: EngineModel;
  /** Every kernel, deduplicated. */
  readonly kernels: readonly KernelSource[];
  /** Every weight. */
  readonly weights: readonly WeightManifest[];
  /**
   * Bytes of each activation slot: activations with disjoint lifetimes share a slot (a buffer), and a kernel's
   * operands and result are never in the same slot (WebGPU forbids binding a buffer writable twice in a dispatch).
   */
  readonly slots: readonly number[];
  /**
   * Bytes of each scratch buffer (absent: none): buffers that pass data between the dispatches of one node, sized for
   * the largest plan (added in version 3 without a version change: runtimes that predate it refuse such engines by
   * their bindings' `scratch` kind, and read every engine they could read before).
   */
  readonly scratch?: readonly number[];
  /** Inputs the caller provides (an LM's `tokens` and `positions` are written by the runtime). */
  readonly inputs: readonly IOManifest[];
  /** Outputs that can be read back. */
  readonly outputs: readonly IOManifest[];
  /** Plans, by increasing `maxSeq`. */
  readonly plans: readonly PlanManifest[];
  /** The paged KV cache, for causal LMs. */
  readonly kv?: KvManifest;
  /** Causal-LM facts, for causal LMs. */
  readonly lm?: LMManifest;
  /** Features the kernels need. */
  readonly requiredFeatures: readonly string[];
  /** Bytes of `weights.bin` (absent in engines written before it was recorded). */
  readonly weightsByteLength?: number;
  /**
   * SHA-256 of `weights.bin`, 64 lowercase hex digits (absent in engines written before it was recorded). The runtime
   * checks it whenever the weights pass through JS: loading from bytes, from a cache, a file or the network.
   */
  readonly weightsSha256?: string;
}

/**
 * Parses the text of `engine.json` and checks it against the engine manifest schema
 * ({@link validateEngineManifest}): every way of loading an engine (a folder, a single file, a URL, bytes) reads its
 * manifest here. Throws `ModelFormatError` (naming `engine.json`, or the field by its path) when it is not JSON, not a
 * tensorwright engine of a version this runtime reads, or breaks the schema.
 *
 * Where an engine may come from: loading one compiles its WGSL on the GPU and runs its dispatches, so only load
 * engines you trust. The schema turns a corrupt or hostile manifest into a typed error; `weightsSha256` makes
 * tampering with the weights detectable (the runtime checks it as they stream); neither makes untrusted WGSL safe.
 */
export function parseEngineManifest(text: string, file?: string): EngineManifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError('engine.json', 0, `not valid JSON: ${(e as Error).message}`, file);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelFormatError('engine.json', 0, 'must be a JSON object', file);
  return validateEngineManifest(json, undefined, file);
}
