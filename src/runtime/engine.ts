/**
 * The engine runtime: loads a compiled engine (manifest + weights in kernel layout) onto a WebGPU device and runs
 * it. It needs no compiler: kernels arrive as WGSL, dispatch grids and parameters as small expressions.
 *
 * Costs it is designed around (lavapipe): ~6–10 µs per dispatch, ~17 µs per submit, ~60–80 µs per readback, and
 * Dawn busy-polling the JS thread while a GPU promise is pending. So a generation step is one command buffer with
 * every dispatch plus GPU sampling, one `writeBuffer` of all kernel parameters, and one 4-byte readback: a single
 * await per token, made through a {@link GpuWaiter} that sleeps through most of the step before it awaits (so the
 * polling does not take a core from a software device's threads).
 * @module
 */
import { CacheFullError, DeviceError, InputError, ModelFormatError } from '../errors.js';
import type { DimBindings } from '../ir/dim.js';
import { byteSize } from '../ir/dtype.js';
import { kvPoolLayout } from '../ir/kv-cache-quant.js';
import { evalDim, parseDim } from '../ir/dim.js';
import { BlockAllocator } from './block-allocator.js';
import { asInputDType, Tensor } from './cpu/tensor.js';
import { requestGPUDevice, type GPUDeviceHandle } from './device.js';
import { encodeEngineContainer } from './engine-container.js';
import { resolveEngineSource, type EngineLoadOptions, type EngineSource, type FetchLike } from './engine-load.js';
import { ENGINE_FORMAT_VERSION, type BufferRef, type DispatchManifest, type EngineManifest, type IOManifest, type ObserverManifest, type PlanManifest } from './engine-manifest.js';
import { checkEngineLimits } from './engine-manifest-schema.js';
import { evalGrid, evalParams, kernelPipelineLayout } from './kernel-source.js';
import { fromDeviceBytes, toDeviceBytes } from './webgpu/one-shot.js';
import { defaultGpuWaitMode, GpuWaiter, type GpuWaitMode } from './webgpu/gpu-wait.js';
import { XorShiftRng } from '../util/random.js';
import { samplerParamValues, type SamplerStepSettings } from './sampler-params.js';
import { validateSampling } from './sampling.js';
import { createSha256, sha256Hex } from '../util/sha256.js';
import { nodeEngineFiles } from './node-access.js';
import { loadTokenizer, type RuntimeTokenizer } from './tokenizer-loader.js';
import { bytesWeightSource, type EngineWeightSource } from './weight-source.js';
import { DEFAULT_UPLOAD_CHUNK_BYTES, uploadWeights, type WeightUploadTarget } from './weight-upload.js';

/** Uniform-buffer offset stride per dispatch (WebGPU's `minUniformBufferOffsetAlignment` is at most 256). */
const PARAMS_STRIDE = 256;

/** Options of {@link Engine.createSession}. */
export interface SessionOptions {
  /** The device to run on (default: a new device, destroyed with the session). */
  readonly device?: GPUDeviceHandle;
  /** Record per-kernel GPU times with `timestamp-query` ({@link EngineSession.lastProfile}). */
  readonly profile?: boolean;
  /**
   * How the host waits for each step's readback (default: {@link defaultGpuWaitMode} of the device:
   * `sleep-then-poll` for dawn.node on a software adapter, where Dawn's busy polling would take a core from the device).
   */
  readonly wait?: GpuWaitMode;
  /**
   * Called as each stage of loading the engine onto the device finishes ({@link EngineSession.loadTimings}), and
   * during the `download` and `weights` stages as bytes arrive (default: the `onProgress` given to {@link Engine.load}).
   */
  readonly onProgress?: (progress: SessionLoadProgress) => void;
  /**
   * Largest `queue.writeBuffer` call that uploads weights, in bytes (default 8 MiB, or the engine's load option): the
   * weights stream from their source to the GPU in chunks of at most this size.
   */
  readonly uploadChunkBytes?: number;
  /**
   * Blocks in the paged KV cache's pool (default: the engine's `kv.numBlocks`, room for one sequence of the whole
   * context). Sequences of a batch share the pool, so serving many at once wants more; each block costs
   * `2 x layers x blockSize x kvHeads x headDim x 4` bytes (2 for an f16 cache).
   */
  readonly kvBlocks?: number;
}

/**
 * A stage of {@link Engine.createSession}, in the order they run. `download` runs only for an engine loaded from a
 * URL with a cache, when the cache does not hold the weights yet.
 */
export type SessionLoadStage = 'download' | 'device' | 'buffers' | 'weights' | 'shader-modules' | 'pipelines' | 'bind-groups' | 'done';

/**
 * Where the time of {@link Engine.createSession} went, in wall-clock milliseconds per stage. The shader modules and
 * pipelines compile while the weights upload, so `shaderModulesMs + pipelinesMs` and `weightsMs` overlap (each is its
 * own stage's wall time); the other stages run one after another.
 */
export interface SessionLoadTimings {
  /** Downloading the weights into the cache (0 when there was nothing to download). */
  downloadMs: number;
  /** Requesting the device (0 when the session was given one). */
  deviceMs: number;
  /** Creating the activation, input, KV-cache, sampling and params buffers. */
  buffersMs: number;
  /** Creating the weight buffers and streaming the weights into them (reading the source, `writeBuffer` per chunk, hashing). */
  weightsMs: number;
  /** Creating one shader module per distinct kernel and waiting for its compilation messages (WGSL front end). */
  shaderModulesMs: number;
  /** Creating one compute pipeline per distinct kernel, all in parallel (the driver's shader compiler: LLVM on lavapipe), while the weights upload. */
  pipelinesMs: number;
  /** Creating one bind group per dispatch of every plan, then waiting for the device's validation of the setup. */
  bindGroupsMs: number;
  /** The whole of `createSession`. */
  totalMs: number;
  /** Shader modules and pipelines created: the engine's distinct kernels. */
  pipelines: number;
  /** Bind groups created: the dispatches of every plan plus the samplers. */
  bindGroups: number;
}

/**
 * What {@link SessionOptions.onProgress} receives: the stage just finished and the timings so far; during the
 * `download` and `weights` stages also byte counts, as the bytes arrive.
 */
export interface SessionLoadProgress {
  /**
   * The stage that finished (`done` last, when the session is ready), or, for a report with `loadedBytes` below
   * `totalBytes`, the stage that is running.
   */
  readonly stage: SessionLoadStage;
  /** Milliseconds the stage took (for `done`: the total); so far, for a report of a running stage. */
  readonly ms: number;
  /** Timings so far (stages not run yet are 0). */
  readonly timings: Readonly<SessionLoadTimings>;
  /**
   * For `download` and `weights`: bytes of `weights.bin` done so far. Non-decreasing within a stage; the stage's
   * last report has it equal to `totalBytes`.
   */
  readonly loadedBytes?: number;
  /** For `download` and `weights`: bytes of `weights.bin` in all. */
  readonly totalBytes?: number;
}

/** One line describing load timings, e.g. for a CLI's progress output. */
export function formatLoadTimings(t: SessionLoadTimings): string {
  const ms = (x: number): string => `${x.toFixed(0)} ms`;
  return `engine: loaded in ${ms(t.totalMs)} (${t.downloadMs > 0 ? `download ${ms(t.downloadMs)}, ` : ''}device ${ms(t.deviceMs)}, buffers ${ms(t.buffersMs)}, weights ${ms(t.weightsMs)}, ${t.pipelines} shader modules ${ms(t.shaderModulesMs)}, ${t.pipelines} pipelines ${ms(t.pipelinesMs)}, ${t.bindGroups} bind groups ${ms(t.bindGroupsMs)})`;
}

/** Options of the {@link Engine} constructor (`Engine.load` sets them from its own options). */
export interface EngineOptions {
  /** Default {@link SessionOptions.onProgress} of the engine's sessions. */
  readonly onProgress?: (progress: SessionLoadProgress) => void;
  /** Default {@link SessionOptions.uploadChunkBytes} of the engine's sessions. */
  readonly uploadChunkBytes?: number;
  /** Check the weights against the manifest's `weightsSha256` when they stream through JS (default true). */
  readonly verify?: boolean;
  /** Where the engine's tokenizer would be ({@link Engine.loadTokenizer}): a path in Node, or a URL. */
  readonly tokenizer?: string | URL;
  /** The `fetch` for the tokenizer URL (default `globalThis.fetch`). */
  readonly fetch?: FetchLike;
}

/**
 * A compiled engine: the manifest plus a source of its weights. A compiled engine (from `compile()`) or one loaded
 * from bytes holds the weights in memory; one loaded from a file, URL or stream holds only the manifest, and each
 * {@link Engine.createSession} streams the weights from their source to the GPU.
 */
export class Engine {
  /** The weights: `weights.bin`, at the offsets the manifest gives. */
  readonly weights: EngineWeightSource;

  constructor(
    /** The manifest. */
    readonly manifest: EngineManifest,
    weights: Uint8Array | EngineWeightSource,
    /** Defaults of the engine's sessions, and where its tokenizer is. */
    readonly options: EngineOptions = {},
  ) {
    if (manifest.format !== 'tensorwright-engine') throw new ModelFormatError('format', 0, `not a tensorwright engine manifest (format ${JSON.stringify(manifest.format)})`);
    if (manifest.version !== ENGINE_FORMAT_VERSION) throw new ModelFormatError('version', 0, `engine format version ${manifest.version} is not supported (this runtime reads version ${ENGINE_FORMAT_VERSION})`);
    this.weights = weights instanceof Uint8Array ? bytesWeightSource(weights) : weights;
    const length = this.weights.byteLength ?? manifest.weightsByteLength;
    for (const w of manifest.weights)
      for (const p of w.parts) {
        if (!Number.isSafeInteger(p.byteOffset) || p.byteOffset < 0 || p.byteOffset % 4 !== 0 || !Number.isSafeInteger(p.byteLength) || p.byteLength < 0)
          throw new ModelFormatError(`weights[${w.name}].${p.role}`, p.byteOffset, `payload at byte offset ${p.byteOffset} with ${p.byteLength} bytes: offsets must be non-negative multiples of 4`);
        if (length !== undefined && p.byteOffset + p.byteLength > length)
          throw new ModelFormatError(`weights[${w.name}].${p.role}`, p.byteOffset, `payload of ${p.byteLength} bytes runs past the end of weights.bin (${length} bytes)`);
      }
  }

  /**
   * The weight bytes, for an engine that holds them in memory (compiled, or loaded from bytes). Throws `InputError`
   * for an engine whose weights stream from a file, URL or response: use {@link Engine.weights} there.
   */
  get weightBytes(): Uint8Array {
    if (!this.weights.bytes) throw new InputError(`the weights of this engine are not in memory (they stream from ${this.weights.description})`);
    return this.weights.bytes;
  }

  /** Bytes of `weights.bin`, when known without reading it (always for compiled engines and current manifests). */
  get weightsByteLength(): number | undefined {
    return this.manifest.weightsByteLength ?? this.weights.byteLength;
  }

  /**
   * Loads an engine (see {@link EngineSource}: a directory or single-file path in Node, a URL of an engine directory,
   * `{ manifest, weights }` URLs, a `Response` or bytes of a single-file engine). Reads the manifest now; the weights
   * are read by each session (streamed, not kept in memory), except from bytes.
   */
  static async load(source: EngineSource, options: EngineLoadOptions = {}): Promise<Engine> {
    const r = await resolveEngineSource(source, options);
    return new Engine(r.manifest, r.weights, { onProgress: options.onProgress, uploadChunkBytes: options.uploadChunkBytes, verify: options.verify, tokenizer: r.tokenizer, fetch: options.fetch });
  }

  /** The manifest with `weightsByteLength` and `weightsSha256` filled in (reading the weights once when they are missing). */
  async completeManifest(): Promise<EngineManifest> {
    const m = this.manifest;
    if (m.weightsSha256 !== undefined && m.weightsByteLength !== undefined) return m;
    const bytes = this.weights.bytes;
    if (bytes) return { ...m, weightsByteLength: bytes.byteLength, weightsSha256: await sha256Hex(bytes) };
    const h = await createSha256();
    let n = 0;
    for await (const piece of this.weights.read()) {
      h.update(piece);
      n += piece.byteLength;
    }
    return { ...m, weightsByteLength: n, weightsSha256: h.hex() };
  }

  /** Writes `engine.json` and `weights.bin` into `dir` (created if needed). Node only. */
  async save(dir: string): Promise<void> {
    const files = await nodeEngineFiles(`Engine.save(${JSON.stringify(dir)})`);
    await files.writeEngineDir(dir, await this.completeManifest(), this.weights);
  }

  /** Writes the engine as one file (the single-file container, see `engine-container.ts`). Node only. */
  async saveSingleFile(path: string): Promise<void> {
    const files = await nodeEngineFiles(`Engine.saveSingleFile(${JSON.stringify(path)})`);
    const m = await this.completeManifest();
    await files.writeEngineFile(path, m, this.weights, m.weightsByteLength!);
  }

  /** The engine as one single-file container in memory (what `Engine.load` reads from bytes or a `Response`). */
  async toSingleFile(): Promise<Uint8Array> {
    const m = await this.completeManifest();
    return encodeEngineContainer(m, this.weights, m.weightsByteLength!);
  }

  /**
   * The tokenizer stored with the engine (`tokenizer.bin` beside a directory or URL source, or the `tokenizer` of
   * `{ manifest, weights, tokenizer }`), or undefined when there is none. See {@link loadTokenizer}.
   */
  async loadTokenizer(): Promise<RuntimeTokenizer | undefined> {
    const at = this.options.tokenizer;
    if (at === undefined) return undefined;
    const lm = this.manifest.lm;
    return loadTokenizer(at, { vocabSize: lm?.vocabSize, bosId: lm?.bosId, eosIds: lm?.stopTokens, fetch: this.options.fetch, optional: true });
  }

  /** Creates a session: GPU buffers, pipelines and bind groups on `device` (a new device when omitted). */
  async createSession(opts: SessionOptions = {}): Promise<EngineSession> {
    if (opts.kvBlocks !== undefined && !(Number.isInteger(opts.kvBlocks) && opts.kvBlocks >= 1)) throw new InputError(`kvBlocks must be a positive integer, got ${opts.kvBlocks}`);
    const t0 = performance.now();
    const onProgress = opts.onProgress ?? this.options.onProgress;
    let downloadMs = 0;
    if (this.weights.prepare) {
      const early: SessionLoadTimings = { downloadMs: 0, deviceMs: 0, buffersMs: 0, weightsMs: 0, shaderModulesMs: 0, pipelinesMs: 0, bindGroupsMs: 0, totalMs: 0, pipelines: 0, bindGroups: 0 };
      let last = { loadedBytes: 0, totalBytes: 0 };
      const downloaded = await this.weights.prepare((p) => {
        last = { loadedBytes: p.loadedBytes, totalBytes: Math.max(p.totalBytes ?? 0, p.loadedBytes) };
        early.downloadMs = performance.now() - t0;
        onProgress?.({ stage: 'download', ms: early.downloadMs, timings: early, ...last });
      });
      downloadMs = performance.now() - t0;
      if (downloaded) {
        early.downloadMs = downloadMs;
        onProgress?.({ stage: 'download', ms: downloadMs, timings: early, ...last });
      }
    }
    const t1 = performance.now();
    const handle = opts.device ?? (await requestGPUDevice({ requiredFeatures: this.manifest.requiredFeatures as GPUFeatureName[] }));
    const waiter = new GpuWaiter({ mode: opts.wait ?? defaultGpuWaitMode(handle.info) });
    const s = new EngineSession(this, handle, opts.device === undefined, opts.profile ?? false, waiter);
    s.kvBlockCount = opts.kvBlocks ?? this.manifest.kv?.numBlocks ?? 0;
    const timings = s.loadTimings;
    timings.downloadMs = downloadMs;
    timings.deviceMs = performance.now() - t1;
    onProgress?.({ stage: 'device', ms: timings.deviceMs, timings });
    try {
      await s.init(onProgress, { chunkBytes: opts.uploadChunkBytes ?? this.options.uploadChunkBytes ?? DEFAULT_UPLOAD_CHUNK_BYTES, verify: this.options.verify ?? true });
    } catch (e) {
      await s.destroy().catch(() => undefined);
      throw e;
    }
    timings.totalMs = performance.now() - t0;
    onProgress?.({ stage: 'done', ms: timings.totalMs, timings });
    return s;
  }
}

interface PreparedDispatch {
  readonly manifest: DispatchManifest;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly paramsIndex: number; // -1 when the kernel has no params
  /** Its params and grid at the last bindings it was encoded with (steps of a decode loop repeat them). */
  last?: { readonly key: string; readonly values: Uint32Array; readonly grid: [number, number, number] };
}

interface PreparedPlan {
  readonly manifest: PlanManifest;
  readonly dispatches: PreparedDispatch[];
  /** Its attention-mass observers (H2O) as the manifest gives them; empty when it has none. */
  readonly observerManifests: readonly ObserverManifest[];
  /** The observers prepared, each with the index of the dispatch it follows (on the first step that observes). */
  observers?: { readonly after: number; readonly d: PreparedDispatch }[];
}

/** Per-kernel GPU time from a profiled step. */
export interface KernelTiming {
  /** Dispatch label. */
  readonly label: string;
  /** Kernel family and variant. */
  readonly kernel: string;
  /** The kernel's index in the manifest's `kernels`. */
  readonly kernelIndex: number;
  /** GPU time in milliseconds. */
  readonly ms: number;
  /** Bytes of the weight payloads the dispatch binds (packed parts of a quantized weight count as stored). */
  readonly weightBytes: number;
  /** Bytes of the activation buffers it binds, at the plan's planned sizes (an upper bound for shorter inputs). */
  readonly activationBytes: number;
}

/** Options of {@link EngineSession.generate}. */
export interface EngineGenerateOptions {
  /** Positions to run, prompt included. */
  steps: number;
  /** 0 = greedy (argmax on the GPU). */
  temperature: number;
  /** Nucleus threshold (1 or 0 = off). */
  topp: number;
  /** Top-k (0 = off). */
  topk?: number;
  /** RNG seed (run.c's generator). */
  seed: number;
  /** Called with each new token. */
  onToken?: (id: number) => void;
}

/** What {@link EngineSession.generate} returns. */
export interface EngineGenerateResult {
  /** New tokens. */
  generated: number[];
  /** Seconds for the prompt. */
  prefillSeconds: number;
  /** Seconds for the rest. */
  decodeSeconds: number;
  /** Whether a stop token ended it. */
  stopped: boolean;
}

/** A sequence in an {@link EngineSession}'s KV cache (from {@link EngineSession.createSequence}); compare by identity. */
export interface SequenceHandle {
  /** Its id, unique within the session (what a `CacheFullError`'s `sequence` names). */
  readonly id: number;
}

/** The KV cache's block counts ({@link EngineSession.kvBlocks}). */
export interface KvBlockCounts {
  /** Blocks in the pool. */
  readonly total: number;
  /** Blocks none of the session's own sequences holds (after {@link EngineSession.stepPaged}: the whole pool). */
  readonly free: number;
  /** Tokens per block. */
  readonly blockSize: number;
}

/** One sequence's part of a batched step ({@link EngineSession.stepBatch}). */
export interface BatchEntry {
  /** The sequence. */
  readonly seq: SequenceHandle;
  /** Tokens to run at its next positions (at least one: a decode step's last token, or a chunk of a prompt). */
  readonly tokens: readonly number[];
  /**
   * Sampling settings and coin for the token after the entry's last one (temperature 0: argmax); absent: nothing is
   * sampled (a prompt chunk that is not the last).
   */
  readonly sampling?: SamplerStepSettings;
  /**
   * Sample after every token of the entry, each with `sampling` (the same settings and coin), not only after the
   * last: what speculative decoding's verification needs (default false).
   */
  readonly allRows?: boolean;
}

/**
 * One sequence's part of a step whose KV blocks the caller manages ({@link EngineSession.stepPaged}): a serving
 * scheduler with its own block manager (reference counts, copy-on-write, a prefix cache) hands the engine each
 * sequence's block table instead of letting the engine allocate.
 */
export interface PagedBatchEntry {
  /** Tokens to run at positions `start, start + 1, …` (at least one). */
  readonly tokens: readonly number[];
  /** Position of `tokens[0]`: how many tokens of the sequence already have K/V in the blocks of `blockTable`. */
  readonly start: number;
  /** Physical KV blocks of the sequence in logical order, covering positions `0 .. start + tokens.length - 1`. */
  readonly blockTable: readonly number[];
  /** As {@link BatchEntry.sampling}. */
  readonly sampling?: SamplerStepSettings;
  /** As {@link BatchEntry.allRows}. */
  readonly allRows?: boolean;
  /**
   * Compute the attention mass the entry's cached positions receive in this step (H2O eviction; an engine with
   * {@link EngineSession.tracksAttention}), for {@link EngineSession.lastAttentionMass}.
   */
  readonly attentionMass?: boolean;
}

/** A KV block copy made before a {@link EngineSession.stepPaged} step (copy-on-write): block `src` into block `dst`. */
export interface KvBlockCopy {
  /** Block copied from. */
  readonly src: number;
  /** Block copied to. */
  readonly dst: number;
}

/** One step laid out for the GPU: its rows, per-entry block tables and sampled rows, and the block copies before it. */
interface StepRows {
  /** Rows (tokens) in all. */
  readonly T: number;
  readonly tokens: Int32Array<ArrayBuffer>;
  readonly positions: Int32Array<ArrayBuffer>;
  /** Per row, its entry. */
  readonly rowSeq: Int32Array<ArrayBuffer>;
  /** `[entries, maxBlocks]` block tables. */
  readonly tables: Uint32Array<ArrayBuffer>;
  /** Rows whose logits are computed. */
  readonly logitRows: readonly number[];
  /** Per logit row, its entry and sampler settings. */
  readonly sampled: readonly { entry: number; sampling: SamplerStepSettings }[];
  /** Per entry, its indices into `logitRows`. */
  readonly rowsOf: number[][];
  /** Copy-on-write copies to make first. */
  readonly copies: readonly { from: number; to: number }[];
  /** Per entry, whether the step computes its attention mass (absent: none does). */
  readonly attentionMass?: readonly boolean[];
}

/**
 * An engine on a device: owns the GPU buffers and the paged KV cache, shared by any number of sequences
 * ({@link EngineSession.createSequence}, {@link EngineSession.stepBatch}), plus one sequence of the single-sequence
 * API ({@link EngineSession.step}, {@link EngineSession.generate}).
 */
export class EngineSession {
  private readonly m: EngineManifest;
  private device!: GPUDevice;
  private slots: GPUBuffer[] = [];
  private scratch: GPUBuffer[] = [];
  private weightBuffers: Map<string, GPUBuffer>[] = [];
  private inputBuffers = new Map<string, GPUBuffer>();
  private kvBuffers: { k: GPUBuffer; v: GPUBuffer }[] = [];
  /** Every kernel's pipeline, by manifest index. */
  private pipelines: GPUComputePipeline[] = [];
  /** The key shift's buffers and launches, made on its first use ({@link EngineSession.shiftKeys}). */
  private keyShift?: { scratch: GPUBuffer; positions: GPUBuffer; params: GPUBuffer; bindGroups: GPUBindGroup[]; grid: [number, number, number] };
  private blockTable?: GPUBuffer;
  /** H2O's attention-mass buffer `[maxTokens, maxBlocks · blockSize]` f32 and its readback (engines with observers). */
  private massBuffer?: GPUBuffer;
  private massRead?: GPUBuffer;
  /** Per entry of the last step, the attention mass of its positions (undefined for entries that did not ask). */
  private lastMass: (Float64Array | undefined)[] = [];
  private sampleBuffer!: GPUBuffer;
  private sampleRead!: GPUBuffer;
  private paramsBuffer!: GPUBuffer;
  private paramsSlots = 0;
  /** The host copy of every dispatch's params, written to {@link EngineSession.paramsBuffer} each step. */
  private paramsStaging = new Uint32Array(0);
  private plans: PreparedPlan[] = [];
  /** Per sampled row of a step: its argmax launch and its sampler launch (each with its own params slot). */
  private argmaxRows: PreparedDispatch[] = [];
  private samplerRows: PreparedDispatch[] = [];
  private prepareDispatch?: (x: DispatchManifest) => PreparedDispatch;
  private allocator?: BlockAllocator;
  /** The sequence of the single-sequence API ({@link EngineSession.step}); -1 before its first use. */
  private seqId = -1;
  /** Live sequences of the batched API, by id. */
  private readonly sequences = new Map<number, SequenceHandle>();
  private maxBlocks = 0;
  private cowScratch?: GPUBuffer;
  /** Set by the first {@link EngineSession.stepPaged}: the caller owns the KV blocks, the session's allocator is unused. */
  private callerPaged = false;
  /** @internal Blocks in the KV pool (set before `init`). */
  kvBlockCount = 0;
  /** What the last step sampled: per entry, the rows of the logits output that belong to it. */
  private lastRows: number[][] = [];
  private broken: DeviceError | undefined;
  private querySet?: GPUQuerySet;
  private destroyed = false;
  /** Per-kernel times of the last profiled step (when the session was created with `profile`). */
  lastProfile: KernelTiming[] = [];
  /** Where the time of creating this session went ({@link Engine.createSession}). */
  readonly loadTimings: SessionLoadTimings = { downloadMs: 0, deviceMs: 0, buffersMs: 0, weightsMs: 0, shaderModulesMs: 0, pipelinesMs: 0, bindGroupsMs: 0, totalMs: 0, pipelines: 0, bindGroups: 0 };

  /** @internal */
  constructor(
    /** The engine. */
    readonly engine: Engine,
    /** The device handle. */
    readonly handle: GPUDeviceHandle,
    private readonly ownsDevice: boolean,
    private readonly profile: boolean,
    /** How this session waits for the GPU. */
    readonly waiter: GpuWaiter,
  ) {
    this.m = engine.manifest;
  }

  /** @internal */
  async init(onProgress: ((progress: SessionLoadProgress) => void) | undefined, upload: { chunkBytes: number; verify: boolean }): Promise<void> {
    const timings = this.loadTimings;
    let mark = performance.now();
    const stageDone = (stage: Exclude<SessionLoadStage, 'download' | 'device' | 'done'>, key: 'buffersMs' | 'weightsMs' | 'shaderModulesMs' | 'pipelinesMs' | 'bindGroupsMs', bytes?: { loadedBytes: number; totalBytes: number }): void => {
      const now = performance.now();
      timings[key] += now - mark;
      mark = now;
      onProgress?.({ stage, ms: timings[key], timings, ...bytes });
    };
    const d = (this.device = this.handle.device);
    for (const f of this.m.requiredFeatures)
      if (!d.features.has(f)) throw new DeviceError('DEVICE_ERROR', `the engine needs the '${f}' feature, which this device lacks (${this.handle.info.adapter.description})`);
    this.handle.lost.then((r) => {
      if (!r.expected) this.broken = new DeviceError('DEVICE_LOST', `the GPU device was lost (${r.reason}: ${r.message}); create a new session`);
    });
    checkEngineLimits(this.m, this.handle.info.limits);
    d.pushErrorScope('out-of-memory');
    d.pushErrorScope('validation');
    const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const limits = this.handle.info.limits;
    const maxBinding = limits.maxStorageBufferBindingSize ?? 134217728;
    this.slots = this.m.slots.map((bytes, i) => {
      if (bytes > maxBinding) throw new DeviceError('LIMIT_EXCEEDED', `activation buffer ${i} needs ${bytes} bytes, more than maxStorageBufferBindingSize ${maxBinding}`);
      return d.createBuffer({ label: `activations ${i}`, size: Math.max(256, align(bytes, 256)), usage: storage });
    });
    this.scratch = (this.m.scratch ?? []).map((bytes, i) => {
      if (bytes > maxBinding) throw new DeviceError('LIMIT_EXCEEDED', `scratch buffer ${i} needs ${bytes} bytes, more than maxStorageBufferBindingSize ${maxBinding}`);
      return d.createBuffer({ label: `scratch ${i}`, size: Math.max(256, align(bytes, 256)), usage: storage });
    });
    for (const io of this.m.inputs) this.inputBuffers.set(io.name, d.createBuffer({ label: `input ${io.name}`, size: Math.max(16, align(io.maxBytes, 4)), usage: storage }));
    if (this.m.kv) {
      const kv = this.m.kv;
      const bytes = this.kvBlockCount * this.kvBlockBytes();
      if (bytes > maxBinding || bytes > (limits.maxBufferSize ?? Infinity))
        throw new DeviceError('LIMIT_EXCEEDED', `a KV pool of ${this.kvBlockCount} blocks needs ${bytes} bytes per layer and K/V, more than the device allows in one buffer (maxStorageBufferBindingSize ${maxBinding}, maxBufferSize ${limits.maxBufferSize ?? 'unlimited'})`);
      for (let l = 0; l < kv.layers; l++)
        this.kvBuffers.push({ k: d.createBuffer({ label: `kv.${l}.k`, size: bytes, usage: storage }), v: d.createBuffer({ label: `kv.${l}.v`, size: bytes, usage: storage }) });
      this.maxBlocks = Math.ceil((this.m.lm?.maxPositions ?? kv.numBlocks * kv.blockSize) / kv.blockSize);
      // one table row per sequence of a step (at most one sequence per token)
      this.blockTable = d.createBuffer({ label: 'block tables', size: Math.max(16, this.maxTokens * this.maxBlocks * 4), usage: storage });
      this.cowScratch = d.createBuffer({ label: 'copy-on-write block', size: Math.max(16, this.kvBlockBytes()), usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      this.allocator = new BlockAllocator(this.kvBlockCount, kv.blockSize);
    }
    // one sampled id per token a step may run (engines that are not language models sample nothing)
    const sampleBytes = Math.max(16, align(this.sampledRowsMax * 4, 16));
    this.sampleBuffer = d.createBuffer({ label: 'sampled tokens', size: sampleBytes, usage: storage });
    this.sampleRead = d.createBuffer({ label: 'sampled tokens readback', size: sampleBytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    // parameter slots: one per dispatch that has params, in every plan, plus the two samplers
    const kernels = this.m.kernels;
    // parameter slots: one per dispatch that has params, in every plan, plus an argmax and a sampler launch per
    // row a step may sample
    const observers = this.m.kv?.attentionMass?.plans.flat().map((o) => o.dispatch) ?? [];
    const dispatchesWithParams = [...this.m.plans.flatMap((p) => p.dispatches), ...observers].filter((x) => kernels[x.kernel].params.length).length + 2 * this.sampledRowsMax;
    this.paramsBuffer = d.createBuffer({ label: 'kernel params', size: Math.max(PARAMS_STRIDE, dispatchesWithParams * PARAMS_STRIDE), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    stageDone('buffers', 'buffersMs');
    // shader modules and pipelines, compiled once per distinct kernel (all in parallel within each stage), while the
    // weights upload: the driver's compiler and the weight stream overlap
    const compileStart = performance.now();
    const compiling = (async (): Promise<GPUComputePipeline[]> => {
      const modules = await Promise.all(
        kernels.map(async (k) => {
          const module = d.createShaderModule({ label: `${k.family}/${k.variant}`, code: k.wgsl });
          const info = await module.getCompilationInfo();
          const errs = info.messages.filter((x) => x.type === 'error');
          if (errs.length) throw new DeviceError('DEVICE_ERROR', `WGSL of ${k.family}/${k.variant} does not compile: ${errs.map((e) => `line ${e.lineNum}: ${e.message}`).join('; ')}`);
          return module;
        }),
      );
      timings.pipelines = kernels.length;
      const modulesDone = performance.now();
      timings.shaderModulesMs += modulesDone - compileStart;
      onProgress?.({ stage: 'shader-modules', ms: timings.shaderModulesMs, timings });
      const created = await Promise.all(
        kernels.map((k, i) => d.createComputePipelineAsync({ label: `${k.family}/${k.variant}`, layout: kernelPipelineLayout(d, k), compute: { module: modules[i], entryPoint: 'main' } })),
      );
      timings.pipelinesMs += performance.now() - modulesDone;
      return created;
    })();
    // an upload error must not leave this promise's failure unhandled
    compiling.catch(() => undefined);
    // weights: one buffer per payload part, streamed from the engine's weight source in chunks
    const targets: WeightUploadTarget[] = [];
    for (const w of this.m.weights) {
      const parts = new Map<string, GPUBuffer>();
      for (const p of w.parts) {
        if (p.byteLength > maxBinding)
          throw new DeviceError('LIMIT_EXCEEDED', `weight '${w.name}' (${p.role}, ${p.byteLength} bytes) exceeds maxStorageBufferBindingSize ${maxBinding}`);
        const buf = d.createBuffer({ label: `${w.name}.${p.role}`, size: Math.max(16, align(p.byteLength, 4)), usage: storage });
        parts.set(p.role, buf);
        targets.push({ byteOffset: p.byteOffset, byteLength: p.byteLength, buffer: buf });
      }
      this.weightBuffers.push(parts);
    }
    const source = this.engine.weights;
    let bytes = { loadedBytes: 0, totalBytes: 0 };
    try {
      await uploadWeights(d.queue, targets, source, {
        chunkBytes: upload.chunkBytes,
        expectedBytes: this.m.weightsByteLength ?? source.byteLength,
        sha256: upload.verify && !source.verified ? this.m.weightsSha256 : undefined,
        onProgress: (loadedBytes, totalBytes) => {
          bytes = { loadedBytes, totalBytes };
          if (loadedBytes < totalBytes) onProgress?.({ stage: 'weights', ms: timings.weightsMs + performance.now() - mark, timings, ...bytes });
        },
      });
    } catch (e) {
      await d.popErrorScope();
      await d.popErrorScope();
      throw e;
    }
    stageDone('weights', 'weightsMs', bytes);
    const pipelines = await compiling;
    this.pipelines = pipelines;
    onProgress?.({ stage: 'pipelines', ms: timings.pipelinesMs, timings });
    mark = performance.now();
    const prepare = (this.prepareDispatch = (x: DispatchManifest): PreparedDispatch => {
      const k = kernels[x.kernel];
      if (x.bindings.length !== k.bindings.length) throw new ModelFormatError('dispatch', 0, `dispatch '${x.label}' gives ${x.bindings.length} buffers to a kernel with ${k.bindings.length} bindings`);
      const entries: GPUBindGroupEntry[] = x.bindings.map((ref, binding) => ({ binding, resource: this.resource(ref, maxBinding, x.label) }));
      let paramsIndex = -1;
      if (k.params.length) {
        paramsIndex = this.paramsSlots++;
        entries.push({ binding: x.bindings.length, resource: { buffer: this.paramsBuffer, offset: paramsIndex * PARAMS_STRIDE, size: PARAMS_STRIDE } });
      }
      const pipeline = pipelines[x.kernel];
      timings.bindGroups++;
      return { manifest: x, pipeline, bindGroup: d.createBindGroup({ label: x.label, layout: pipeline.getBindGroupLayout(0), entries }), paramsIndex };
    });
    this.plans = this.m.plans.map((p, i) => ({ manifest: p, dispatches: p.dispatches.map(prepare), observerManifests: this.m.kv?.attentionMass?.plans[i] ?? [] }));
    if (this.m.lm) {
      // the sampled row 0's launches now (the single-sequence path); the other rows' when a step first needs them
      this.samplerRow(0, true);
      this.samplerRow(0, false);
    }
    if (this.profile && d.features.has('timestamp-query')) {
      const maxD = Math.max(...this.plans.map((p) => p.dispatches.length + p.observerManifests.length)) + this.sampledRowsMax;
      this.querySet = d.createQuerySet({ type: 'timestamp', count: 2 * maxD });
    }
    const invalid = await d.popErrorScope();
    const oom = await d.popErrorScope();
    if (oom) throw new DeviceError('OUT_OF_MEMORY', `the GPU ran out of memory creating the engine's buffers (activations ${this.m.slots.reduce((a, b) => a + b, 0)} bytes): ${oom.message}`);
    if (invalid) throw new DeviceError('DEVICE_ERROR', `WebGPU rejected the engine's setup: ${invalid.message}`);
    stageDone('bind-groups', 'bindGroupsMs');
  }

  private resource(ref: BufferRef, maxBinding: number, label: string): GPUBufferBinding {
    switch (ref.kind) {
      case 'arena': {
        const b = this.slots[ref.slot];
        if (!b) throw new ModelFormatError('dispatch', 0, `'${label}' binds activation buffer ${ref.slot}, which the engine does not have`);
        if (ref.size > maxBinding) throw new DeviceError('LIMIT_EXCEEDED', `'${label}' binds ${ref.size} bytes, more than maxStorageBufferBindingSize ${maxBinding}`);
        return { buffer: b };
      }
      case 'weight': {
        const b = this.weightBuffers[ref.weight]?.get(ref.part);
        if (!b) throw new ModelFormatError('dispatch', 0, `'${label}' binds weight #${ref.weight}.${ref.part}, which the engine does not have`);
        return { buffer: b };
      }
      case 'input': {
        const b = this.inputBuffers.get(ref.name);
        if (!b) throw new ModelFormatError('dispatch', 0, `'${label}' binds input '${ref.name}', which the engine does not declare`);
        return { buffer: b };
      }
      case 'kv': {
        const b = this.kvBuffers[ref.layer];
        if (!b) throw new ModelFormatError('dispatch', 0, `'${label}' binds KV layer ${ref.layer}, which the engine does not have`);
        return { buffer: ref.which === 'k' ? b.k : b.v };
      }
      case 'block-table':
        if (!this.blockTable) throw new ModelFormatError('dispatch', 0, `'${label}' binds the block table of an engine without a KV cache`);
        return { buffer: this.blockTable };
      case 'sample':
        return { buffer: this.sampleBuffer };
      case 'attention-mass':
        if (!this.massBuffer) throw new ModelFormatError('dispatch', 0, `'${label}' binds the attention-mass buffer of an engine without attention-mass observers`);
        return { buffer: this.massBuffer };
      case 'scratch': {
        const b = this.scratch[ref.index];
        if (!b) throw new ModelFormatError('dispatch', 0, `'${label}' binds scratch buffer ${ref.index}, which the engine does not have`);
        return { buffer: b };
      }
    }
  }

  private check(): void {
    if (this.destroyed) throw new DeviceError('DEVICE_ERROR', 'this session was destroyed');
    if (this.broken) throw this.broken;
    if (this.handle.isLost()) throw new DeviceError('DEVICE_LOST', 'the GPU device was lost; create a new session');
  }

  /** The plan for `seq` new tokens: the first whose `maxSeq` covers them (and, with `observed`, that has observers). */
  private planFor(seq: number, observed = false): PreparedPlan {
    const p = this.plans.find((x) => seq <= x.manifest.maxSeq && (!observed || x.observerManifests.length > 0));
    if (!p) throw new InputError(`${seq} new tokens exceed the largest plan (${this.plans[this.plans.length - 1]?.manifest.maxSeq ?? 0})`);
    return p;
  }

  /** Encodes a plan's dispatches (and optionally a sampler) into `enc`, writing every kernel's params first. */
  private encode(enc: GPUCommandEncoder, plan: PreparedPlan, bindings: DimBindings, extra: { d: PreparedDispatch; params: Uint32Array }[] = [], observed = false): void {
    const kernels = this.m.kernels;
    // with `observed`, each observer right after the dispatch it follows (observers are in increasing order)
    const dispatches = observed ? this.observedDispatches(plan) : plan.dispatches;
    const all = [...dispatches.map((d) => ({ d, params: undefined as Uint32Array | undefined })), ...extra];
    const words = (this.paramsSlots * PARAMS_STRIDE) / 4;
    if (this.paramsStaging.length !== words) this.paramsStaging = new Uint32Array(words);
    const slots = this.paramsStaging; // writeBuffer copies it: one array serves every step
    const grids: [number, number, number][] = [];
    // a decode loop encodes the same plan at the same bindings step after step: evaluate each dispatch's params and
    // grid once per distinct bindings, not per step
    const key = Object.keys(bindings)
      .sort()
      .map((k) => `${k}=${bindings[k]}`)
      .join(',');
    for (const { d, params } of all) {
      const k = kernels[d.manifest.kernel];
      let values: Uint32Array;
      let grid: [number, number, number];
      if (!params && d.last?.key === key) ({ values, grid } = d.last);
      else {
        values = params ?? (k.params.length ? evalParams(k.params, bindings) : new Uint32Array(0));
        grid = this.checkedGrid(d.manifest.kernel, k.grid.map((g) => evalGrid(g, k.params, values.length ? values : bindings)), bindings);
        if (!params) d.last = { key, values, grid };
      }
      if (d.paramsIndex >= 0) slots.set(values, (d.paramsIndex * PARAMS_STRIDE) / 4);
      grids.push(grid);
    }
    this.device.queue.writeBuffer(this.paramsBuffer, 0, slots.buffer as ArrayBuffer, 0, slots.byteLength);
    const timed = this.querySet !== undefined;
    let pass: GPUComputePassEncoder | undefined;
    all.forEach(({ d }, i) => {
      if (timed) pass = enc.beginComputePass({ timestampWrites: { querySet: this.querySet!, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      else pass ??= enc.beginComputePass({ label: plan.manifest.name });
      const [x, y, z] = grids[i];
      if (x > 0 && y > 0 && z > 0) {
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(x, y, z);
      }
      if (timed) pass.end();
    });
    if (!timed) pass?.end();
  }

  /**
   * A dispatch grid as evaluated for this step: whole non-negative numbers (a grid expression dividing by a parameter
   * that is 0 gives Infinity, which WebGPU rejects with a TypeError) within the device's workgroup limit.
   */
  private checkedGrid(kernel: number, grid: number[], bindings: DimBindings): [number, number, number] {
    const limit = this.handle.info.limits.maxComputeWorkgroupsPerDimension ?? 65535;
    const at = (): string => Object.entries(bindings).map(([k, v]) => `${k}=${v}`).join(' ');
    grid.forEach((n, axis) => {
      if (!Number.isInteger(n) || n < 0) throw new ModelFormatError(`kernels[${kernel}].grid[${axis}]`, 0, `the dispatch grid evaluates to ${n} at ${at()}`);
      if (n > limit) throw new DeviceError('LIMIT_EXCEEDED', `kernel ${kernel}'s dispatch grid needs ${n} workgroups along ${'xyz'[axis]} at ${at()}, more than maxComputeWorkgroupsPerDimension ${limit}`);
    });
    return grid as [number, number, number];
  }

  /** The weight and activation bytes a dispatch binds (for profiles). */
  private boundBytes(d: PreparedDispatch): { weightBytes: number; activationBytes: number } {
    let weightBytes = 0;
    let activationBytes = 0;
    for (const b of d.manifest.bindings) {
      if (b.kind === 'weight') weightBytes += this.m.weights[b.weight]?.parts.find((p) => p.role === b.part)?.byteLength ?? 0;
      else if (b.kind === 'arena' || b.kind === 'scratch') activationBytes += b.size;
    }
    return { weightBytes, activationBytes };
  }

  private async readProfile(dispatches: readonly PreparedDispatch[]): Promise<void> {
    const count = dispatches.length;
    if (!this.querySet) return;
    const d = this.device;
    const resolve = d.createBuffer({ size: count * 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = d.createBuffer({ size: count * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = d.createCommandEncoder();
    enc.resolveQuerySet(this.querySet, 0, 2 * count, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, count * 16);
    d.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    resolve.destroy();
    read.destroy();
    this.lastProfile = dispatches.map((d, i) => ({ label: d.manifest.label, kernel: this.kernelName(d), kernelIndex: d.manifest.kernel, ms: Number(t[2 * i + 1] - t[2 * i]) / 1e6, ...this.boundBytes(d) }));
  }

  /**
   * Runs the engine once on host inputs (for graphs without a KV cache: encoders, ONNX models) and reads back every
   * output. Symbolic dims are bound from the inputs' shapes; `bindings` gives the values of dims no input binds (a
   * `range` over a symbol, as the reference interpreter's `runGraph` takes them), and must agree with the inputs.
   */
  async run(inputs: Readonly<Record<string, Tensor>>, opts: { readonly bindings?: DimBindings } = {}): Promise<Record<string, Tensor>> {
    this.check();
    const bindings: Record<string, number> = {};
    for (const [k, v] of Object.entries(opts.bindings ?? {})) {
      if (!Number.isInteger(v) || v < 0) throw new InputError(`dim '${k}' = ${v} is not a size`);
      bindings[k] = v;
    }
    for (const io of this.m.inputs) {
      if (io.values) continue; // computed below
      const given = inputs[io.name];
      if (!given) throw new InputError(`missing engine input '${io.name}'`);
      const t = asInputDType(given, io.dtype);
      if (t.dtype !== io.dtype) throw new InputError(`input '${io.name}' must be ${io.dtype}, got ${t.dtype}`);
      if (t.shape.length !== io.shape.length) throw new InputError(`input '${io.name}' must have rank ${io.shape.length}, got [${t.shape}]`);
      io.shape.forEach((d, i) => {
        if (/^\d+$/.test(d)) {
          if (Number(d) !== t.shape[i]) throw new InputError(`input '${io.name}' dim ${i} must be ${d}, got ${t.shape[i]}`);
        } else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(d)) {
          if (bindings[d] !== undefined && bindings[d] !== t.shape[i]) throw new InputError(`input '${io.name}' dim ${i} is ${t.shape[i]} but '${d}' is ${bindings[d]}`);
          bindings[d] = t.shape[i];
        }
      });
      const bytes = toDeviceBytes(t);
      if (bytes.byteLength > io.maxBytes) throw new InputError(`input '${io.name}' has ${bytes.byteLength} bytes, more than the ${io.maxBytes} the engine was compiled for`);
      this.device.queue.writeBuffer(this.inputBuffers.get(io.name)!, 0, bytes.buffer as ArrayBuffer, bytes.byteOffset, align(bytes.byteLength, 4));
    }
    this.writeComputedInputs(bindings);
    const seq = bindings.seq ?? 1;
    const plan = this.planFor(seq);
    const enc = this.device.createCommandEncoder();
    this.encode(enc, plan, bindings);
    const reads = this.m.outputs.map((o) => {
      const shape = o.shape.map((d) => evalDim(parseDim(d), bindings));
      const bytes = align(shape.reduce((a, b) => a * b, 1) * byteSize(o.dtype), 4);
      const ref = o.ref as { slot: number };
      const read = this.device.createBuffer({ size: Math.max(16, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      if (bytes > 0) enc.copyBufferToBuffer(this.slots[ref.slot], 0, read, 0, bytes);
      return { o, shape, read };
    });
    this.device.queue.submit([enc.finish()]);
    const submittedAt = performance.now();
    const out: Record<string, Tensor> = {};
    for (const [i, { o, shape, read }] of reads.entries()) {
      if (i === 0) await this.waiter.wait(`run:${plan.manifest.name}:${JSON.stringify(bindings)}`, submittedAt, () => read.mapAsync(GPUMapMode.READ));
      else await read.mapAsync(GPUMapMode.READ);
      out[o.name] = fromDeviceBytes(o.dtype, shape, read.getMappedRange().slice(0));
      read.unmap();
      read.destroy();
    }
    await this.readProfile(plan.dispatches);
    this.check();
    return out;
  }

  /** Writes the inputs the engine computes from dim bindings ({@link IOManifest.values}). */
  private writeComputedInputs(bindings: DimBindings): void {
    for (const io of this.m.inputs) {
      if (!io.values) continue;
      const count = io.shape.reduce((a, d) => a * Number(d), 1);
      const values = io.values.map((v) => evalDim(parseDim(v), bindings));
      const full = values.length === 1 ? new Array<number>(count).fill(values[0]) : values;
      const data = io.dtype === 'f32' ? Float32Array.from(full) : io.dtype === 'u32' ? Uint32Array.from(full) : Int32Array.from(full);
      if (data.byteLength) this.device.queue.writeBuffer(this.inputBuffers.get(io.name)!, 0, data.buffer as ArrayBuffer, 0, data.byteLength);
    }
  }

  private kernelName(d: PreparedDispatch): string {
    const k = this.m.kernels[d.manifest.kernel];
    return `${k.family}/${k.variant}`;
  }

  /** Most tokens one step runs (the largest plan's), over all the sequences of a batch; also the most sequences. */
  get maxTokens(): number {
    return this.m.plans.reduce((a, p) => Math.max(a, p.maxSeq), 1);
  }

  /** Bytes of one KV block in one layer's K (or V) pool. */
  private kvBlockBytes(): number {
    const kv = this.m.kv;
    return kv ? kvPoolLayout(kv.dtype, kv.blockSize, kv.numKvHeads, kv.headDim).blockBytes : 0;
  }

  /** The argmax (`greedy`) or sampler launch of sampled row `row`, made on first use. */
  /** Most rows one step samples: a token per row of a language model's step; none for other engines (their plans may be unbounded). */
  private get sampledRowsMax(): number {
    return this.m.lm ? this.maxTokens : 0;
  }

  private samplerRow(row: number, greedy: boolean): PreparedDispatch {
    const list = greedy ? this.argmaxRows : this.samplerRows;
    list[row] ??= this.prepareDispatch!(greedy ? this.m.lm!.argmax : this.m.lm!.sampler);
    return list[row];
  }

  private lmAllocator(): { lm: NonNullable<EngineManifest['lm']>; allocator: BlockAllocator } {
    const lm = this.m.lm;
    if (!lm || !this.allocator) throw new InputError('this engine is not a causal LM');
    if (this.callerPaged) throw new InputError("this session's KV blocks are managed by its caller (stepPaged): the session's own sequences are not available");
    return { lm, allocator: this.allocator };
  }

  /** Forgets the current sequence of the single-sequence API (frees its KV blocks). */
  reset(): void {
    if (this.allocator && this.seqId >= 0) this.allocator.release(this.seqId);
    this.seqId = this.allocator ? this.allocator.createSequence() : -1;
  }

  /** Tokens in the current sequence of the single-sequence API. */
  get position(): number {
    return this.allocator && this.seqId >= 0 ? this.allocator.sequence(this.seqId).length : 0;
  }

  /**
   * Runs `tokens` at the next positions of the current sequence and samples the next token on the GPU with the given
   * settings (any of them: they are run-time params of the sampler) and coin; only its id is read back. Long prompts
   * are split into chunks of the largest plan's size (chunked prefill). This is {@link EngineSession.stepBatch} with
   * one entry, on a sequence the session keeps ({@link EngineSession.reset} starts a new one).
   * Throws {@link errors!InputError | InputError} for bad settings, before anything runs.
   */
  async step(tokens: readonly number[], sampling: SamplerStepSettings): Promise<number> {
    this.check();
    checkSampling(sampling);
    this.lmAllocator();
    if (tokens.length === 0) throw new InputError('step needs at least one token');
    if (this.seqId < 0) this.reset();
    const seq = { id: this.seqId };
    const maxChunk = this.maxTokens;
    let result = -1;
    for (let at = 0; at < tokens.length; at += maxChunk) {
      const last = at + maxChunk >= tokens.length;
      const ids = await this.runBatch([{ seq, tokens: tokens.slice(at, at + maxChunk), sampling: last ? sampling : undefined }]);
      if (last) result = ids[0][0];
    }
    return result;
  }

  /** Most tokens {@link EngineSession.stepAllLogits} runs at once: a step's token budget ({@link EngineSession.maxTokens}). */
  get maxVerifyTokens(): number {
    return this.m.lm ? this.maxTokens : 0;
  }

  /**
   * Runs `tokens` (at most {@link EngineSession.maxVerifyTokens}) at the next positions of the current sequence in one
   * step and reads back the logits after every one of them: `tokens.length` rows of the vocabulary size, row-major
   * (speculative decoding verifies a draft with these). It is {@link EngineSession.stepBatch} with one `allRows`
   * entry on the session's own sequence.
   */
  async stepAllLogits(tokens: readonly number[]): Promise<Float32Array> {
    this.check();
    const { lm } = this.lmAllocator();
    const max = this.maxVerifyTokens;
    if (tokens.length === 0 || tokens.length > max) throw new InputError(`stepAllLogits takes 1 to ${max} tokens, got ${tokens.length}`);
    if (this.seqId < 0) this.reset();
    await this.runBatch([{ seq: { id: this.seqId }, tokens, sampling: { temperature: 0, topp: 1, coin: 0 }, allRows: true }]);
    const rows = (await this.lastBatchLogits())[0];
    const out = new Float32Array(rows.length * lm.vocabSize);
    rows.forEach((r, i) => out.set(r, i * lm.vocabSize));
    return out;
  }

  /**
   * Rolls the current sequence back to its first `length` positions (e.g. after a rejected speculative draft): the
   * KV entries past it are forgotten, and the next step runs at position `length`.
   */
  truncate(length: number): void {
    this.lmAllocator();
    if (!(Number.isInteger(length) && length >= 0 && length <= this.position)) throw new InputError(`cannot roll the sequence of ${this.position} positions back to ${length}`);
    if (this.seqId < 0) this.reset();
    this.allocator!.truncate(this.seqId, length);
  }

  /** Starts an empty sequence in the KV cache, for {@link EngineSession.stepBatch}. */
  createSequence(): SequenceHandle {
    this.check();
    const { allocator } = this.lmAllocator();
    const h: SequenceHandle = Object.freeze({ id: allocator.createSequence() });
    this.sequences.set(h.id, h);
    return h;
  }

  /**
   * Starts a sequence that shares `seq`'s tokens and KV blocks (copy-on-write: no copy is made now; the first write
   * into a shared, partly filled block copies that block on the GPU). For `n > 1` samples or beam search from one
   * prompt. Throws `InputError` for a handle that is not live.
   */
  forkSequence(seq: SequenceHandle): SequenceHandle {
    this.check();
    const { allocator } = this.lmAllocator();
    this.live(seq);
    const h: SequenceHandle = Object.freeze({ id: allocator.fork(seq.id) });
    this.sequences.set(h.id, h);
    return h;
  }

  /** Frees a sequence's KV blocks (blocks shared with a fork stay until their last owner lets go); the handle dies. */
  releaseSequence(seq: SequenceHandle): void {
    const { allocator } = this.lmAllocator();
    this.live(seq);
    allocator.release(seq.id);
    this.sequences.delete(seq.id);
  }

  /** Tokens a sequence holds (its next token's position). */
  sequenceLength(seq: SequenceHandle): number {
    this.live(seq);
    return this.lmAllocator().allocator.sequence(seq.id).length;
  }

  /**
   * Drops a sequence's tokens past `length` (e.g. rejected speculative tokens); their blocks return to the pool.
   * Throws `InputError` when `length` is negative or more than the sequence holds.
   */
  truncateSequence(seq: SequenceHandle, length: number): void {
    this.live(seq);
    if (!Number.isInteger(length)) throw new InputError(`truncateSequence: length must be an integer, got ${length}`);
    this.lmAllocator().allocator.truncate(seq.id, length);
  }

  /** The KV cache's blocks: how many there are, how many are free, and the tokens each holds. */
  kvBlocks(): KvBlockCounts {
    // after stepPaged the caller's block manager knows which blocks hold what; `free` counts the session's own
    const allocator = this.allocator;
    if (!this.m.lm || !allocator) throw new InputError('this engine is not a causal LM');
    return { total: allocator.numBlocks, free: allocator.freeBlocks, blockSize: allocator.blockSize };
  }

  private live(seq: SequenceHandle): void {
    if (this.sequences.get(seq?.id) !== seq) throw new InputError(`sequence ${String(seq?.id)} is not a live sequence of this session (created by createSequence or forkSequence, not released)`);
  }

  /**
   * Runs one step over several sequences: each entry's tokens go at the next positions of its sequence, all in one
   * ragged batch (one command buffer, one readback). Every entry with `sampling` gets a token sampled on the GPU
   * after its last token (or after each of its tokens with `allRows`), with its own settings and coin.
   *
   * Returns, per entry, the ids sampled for it: `[]` without `sampling`, one id by default, one per token with
   * `allRows`. A sequence's logits and ids do not depend on the other entries (batch invariance): every kernel
   * computes a row the same way whatever the batch holds.
   *
   * Throws `InputError` (before anything runs) for a bad entry: a handle that is not live, a sequence named twice, no
   * tokens, an id outside the vocabulary, bad sampling settings, or more tokens in all than
   * {@link EngineSession.maxTokens}; `CacheFullError` (allocating nothing; its `sequence` names the entry's
   * sequence) when a sequence would pass the engine's positions or the pool has no blocks left for it.
   */
  async stepBatch(entries: readonly BatchEntry[]): Promise<number[][]> {
    this.check();
    this.lmAllocator();
    if (!Array.isArray(entries) || entries.length === 0) throw new InputError('stepBatch needs at least one entry');
    const seen = new Set<number>();
    for (const [i, e] of entries.entries()) {
      this.live(e.seq);
      if (seen.has(e.seq.id)) throw new InputError(`stepBatch: sequence ${e.seq.id} appears twice (entries ${[...entries].findIndex((x) => x.seq.id === e.seq.id)} and ${i})`);
      seen.add(e.seq.id);
      if (e.sampling) checkSampling(e.sampling);
    }
    return this.runBatch(entries);
  }

  /**
   * Runs one step over sequences whose KV blocks the caller manages (a serving scheduler's block manager): each
   * entry brings its block table and start position, and `copies` (copy-on-write) are made before anything runs.
   * Otherwise as {@link EngineSession.stepBatch}: one ragged batch, one readback, batch-invariant rows.
   *
   * The first call hands the KV pool to the caller for the rest of the session: the session's own sequences
   * ({@link EngineSession.createSequence}, {@link EngineSession.step}) are refused after it, and it is refused while
   * any of them holds blocks. Throws `InputError` (before anything runs) for a bad entry: no tokens, an id outside the
   * vocabulary, a table that does not cover its positions or names a block outside the pool, a position past the
   * engine's context, bad sampling settings, or more tokens in all than {@link EngineSession.maxTokens}.
   */
  async stepPaged(entries: readonly PagedBatchEntry[], copies: readonly KvBlockCopy[] = []): Promise<number[][]> {
    this.check();
    const lm = this.m.lm;
    if (!lm || !this.allocator || !this.m.kv) throw new InputError('this engine is not a causal LM');
    if (!this.callerPaged) {
      if (this.allocator.freeBlocks !== this.allocator.numBlocks)
        throw new InputError(`stepPaged: ${this.allocator.numBlocks - this.allocator.freeBlocks} KV block(s) are held by the session's own sequences; release them first`);
      this.callerPaged = true;
    }
    if (!Array.isArray(entries) || entries.length === 0) throw new InputError('stepPaged needs at least one entry');
    const { blockSize } = this.m.kv;
    const pool = this.kvBlockCount;
    const block = (b: unknown, what: string): number => {
      if (!(Number.isInteger(b) && (b as number) >= 0 && (b as number) < pool)) throw new InputError(`stepPaged: ${what} names block ${String(b)}, outside the pool of ${pool}`);
      return b as number;
    };
    const cowCopies = copies.map((c, i) => ({ from: block(c?.src, `copy ${i}'s src`), to: block(c?.dst, `copy ${i}'s dst`) }));
    let T = 0;
    for (const [i, e] of entries.entries()) {
      if (!Array.isArray(e?.tokens) || e.tokens.length === 0) throw new InputError(`stepPaged: entry ${i} has no tokens`);
      for (const t of e.tokens) if (!Number.isInteger(t) || t < 0 || t >= lm.vocabSize) throw new InputError(`token id ${t} is outside the vocabulary (0..${lm.vocabSize - 1})`);
      if (!(Number.isInteger(e.start) && e.start >= 0)) throw new InputError(`stepPaged: entry ${i}'s start must be a non-negative integer, got ${String(e.start)}`);
      const end = e.start + e.tokens.length;
      if (end > lm.maxPositions) throw new CacheFullError(`entry ${i} would reach ${end} positions; the engine supports ${lm.maxPositions}`);
      const need = Math.ceil(end / blockSize);
      if (!Array.isArray(e.blockTable) || e.blockTable.length < need || e.blockTable.length > this.maxBlocks)
        throw new InputError(`stepPaged: entry ${i}'s block table has ${Array.isArray(e.blockTable) ? e.blockTable.length : 'no'} block(s); positions 0..${end - 1} need ${need} (at most ${this.maxBlocks})`);
      e.blockTable.forEach((b: number, j: number) => block(b, `entry ${i}'s table[${j}]`));
      if (e.sampling) checkSampling(e.sampling);
      T += e.tokens.length;
    }
    if (T > this.maxTokens) throw new InputError(`a step takes at most ${this.maxTokens} tokens over all its sequences, got ${T}`);
    const observed = entries.map((e) => e.attentionMass === true);
    if (observed.some((x) => x) && !this.tracksAttention)
      throw new InputError('stepPaged: this engine has no attention-mass observers (H2O eviction needs an engine compiled with them, over an f32 or f16 KV cache)');
    const tables = new Uint32Array(entries.length * this.maxBlocks);
    entries.forEach((e, b) => tables.set(e.blockTable, b * this.maxBlocks));
    return this.submitStep({ T, ...this.layRows(entries), tables, copies: cowCopies, ...(observed.some((x) => x) ? { attentionMass: observed } : {}) });
  }

  /** Per-row tokens, positions and entries, and which rows are sampled, for entries starting at known positions. */
  private layRows(entries: readonly { tokens: readonly number[]; start: number; sampling?: SamplerStepSettings; allRows?: boolean }[]): Pick<StepRows, 'tokens' | 'positions' | 'rowSeq' | 'logitRows' | 'sampled' | 'rowsOf'> {
    const T = entries.reduce((a, e) => a + e.tokens.length, 0);
    const tokens = new Int32Array(T);
    const positions = new Int32Array(T);
    const rowSeq = new Int32Array(T);
    const logitRows: number[] = [];
    const sampled: { entry: number; sampling: SamplerStepSettings }[] = [];
    const rowsOf: number[][] = [];
    let r = 0;
    entries.forEach((e, b) => {
      const mine: number[] = [];
      e.tokens.forEach((t, i) => {
        tokens[r] = t;
        positions[r] = e.start + i;
        rowSeq[r] = b;
        if (e.sampling && (e.allRows || i === e.tokens.length - 1)) {
          mine.push(logitRows.length);
          logitRows.push(r);
          sampled.push({ entry: b, sampling: e.sampling });
        }
        r++;
      });
      rowsOf.push(mine);
    });
    return { tokens, positions, rowSeq, logitRows, sampled, rowsOf };
  }

  /** Bytes of one KV block across every layer's K and V pools (what {@link EngineSession.readKvBlocks} returns per block). */
  get kvBlockBytesAllLayers(): number {
    return this.kvBlockBytes() * 2 * this.kvBuffers.length;
  }

  /**
   * Reads KV blocks back to host memory (preemption by swapping, in caller-paged mode): per block, its bytes in every
   * layer's K then V pool, {@link EngineSession.kvBlockBytesAllLayers} bytes each.
   */
  async readKvBlocks(blocks: readonly number[]): Promise<Uint8Array[]> {
    this.check();
    const bytes = this.kvBlockBytes();
    const per = this.kvBlockBytesAllLayers;
    for (const b of blocks) if (!(Number.isInteger(b) && b >= 0 && b < this.kvBlockCount)) throw new InputError(`readKvBlocks: block ${b} is outside the pool of ${this.kvBlockCount}`);
    if (blocks.length === 0) return [];
    const d = this.device;
    const staging = d.createBuffer({ label: 'kv swap-out', size: per * blocks.length, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      const enc = d.createCommandEncoder();
      blocks.forEach((b, i) => {
        let at = i * per;
        for (const { k, v } of this.kvBuffers)
          for (const pool of [k, v]) {
            enc.copyBufferToBuffer(pool, b * bytes, staging, at, bytes);
            at += bytes;
          }
      });
      d.queue.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ).catch((e: unknown) => {
        throw this.broken ?? new DeviceError('DEVICE_LOST', `reading KV blocks failed: ${(e as Error).message}`);
      });
      const all = new Uint8Array(staging.getMappedRange().slice(0));
      staging.unmap();
      return blocks.map((_b, i) => all.subarray(i * per, (i + 1) * per));
    } finally {
      staging.destroy();
    }
  }

  /** Writes blocks read by {@link EngineSession.readKvBlocks} back into (possibly other) pool blocks. */
  writeKvBlocks(blocks: readonly number[], data: readonly Uint8Array[]): void {
    this.check();
    const bytes = this.kvBlockBytes();
    const per = this.kvBlockBytesAllLayers;
    if (blocks.length !== data.length) throw new InputError(`writeKvBlocks: ${blocks.length} block(s) but ${data.length} payload(s)`);
    blocks.forEach((b, i) => {
      if (!(Number.isInteger(b) && b >= 0 && b < this.kvBlockCount)) throw new InputError(`writeKvBlocks: block ${b} is outside the pool of ${this.kvBlockCount}`);
      if (data[i].byteLength !== per) throw new InputError(`writeKvBlocks: payload ${i} has ${data[i].byteLength} bytes; a block holds ${per}`);
      let at = 0;
      for (const { k, v } of this.kvBuffers)
        for (const pool of [k, v]) {
          this.device.queue.writeBuffer(pool, b * bytes, data[i].buffer as ArrayBuffer, data[i].byteOffset + at, bytes);
          at += bytes;
        }
    });
  }

  /**
   * Whether the engine computes the attention mass of entries that ask ({@link PagedBatchEntry.attentionMass}): it
   * carries attention-mass observers (H2O heavy-hitter eviction; compiled for f32/f16 KV caches).
   */
  get tracksAttention(): boolean {
    return this.m.kv?.attentionMass !== undefined && this.plans.some((p) => p.observerManifests.length > 0);
  }

  /**
   * A plan's dispatches with its attention-mass observers, each right after the dispatch it follows; the first call
   * creates the attention-mass buffer and its readback, and the observers' bind groups.
   */
  private observedDispatches(plan: PreparedPlan): PreparedDispatch[] {
    const kv = this.m.kv!;
    if (!this.massBuffer) {
      const bytes = Math.max(16, this.maxTokens * this.maxBlocks * kv.blockSize * 4);
      this.massBuffer = this.device.createBuffer({ label: 'attention mass', size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      this.massRead = this.device.createBuffer({ label: 'attention mass readback', size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    }
    const observers = (plan.observers ??= plan.observerManifests.map((o) => ({ after: o.after, d: this.prepareDispatch!(o.dispatch) })));
    return plan.dispatches.flatMap((d, i) => [d, ...observers.filter((o) => o.after === i).map((o) => o.d)]);
  }

  /**
   * After a {@link EngineSession.stepPaged} step: per entry, the attention mass its positions `0 .. start +
   * tokens.length − 1` received in the step (the softmax weights of every layer's attention, summed over query heads
   * and the entry's tokens; f32 on the GPU, summed over tokens in float64), or undefined for an entry that did not ask.
   */
  lastAttentionMass(): readonly (Float64Array | undefined)[] {
    return this.lastMass;
  }

  /** Whether {@link EngineSession.shiftKeys} is available: the engine carries a key-shift kernel. */
  get canShiftKeys(): boolean {
    return this.m.kv?.keyShift !== undefined;
  }

  /**
   * The key shift of sliding KV windows with attention sinks (caller-paged mode): rotates the keys in each shift's
   * blocks, in every layer, back by its `delta` positions, with the kernel the compiler emitted from the model's rope
   * (the rope at position `−delta` over the K pool into a scratch pool, then the named blocks copied back; values are
   * unchanged). Encoded and submitted now, so it lands before the next step. A block may appear once.
   */
  shiftKeys(shifts: readonly { readonly blocks: readonly number[]; readonly delta: number }[]): void {
    this.check();
    const kv = this.m.kv;
    if (!kv) throw new InputError('this engine has no KV cache');
    if (!kv.keyShift)
      throw new InputError(`this engine cannot shift cached keys: it has no key-shift kernel (KV cache ${kv.dtype}; one is emitted for f32/f16 caches of models with a single rope configuration)`);
    const bs = kv.blockSize;
    const positions = new Int32Array(this.kvBlockCount * bs);
    const blocks = new Set<number>();
    for (const s of shifts) {
      if (!(Number.isInteger(s.delta) && s.delta > 0)) throw new InputError(`shiftKeys: delta must be a positive integer, got ${s.delta}`);
      for (const b of s.blocks) {
        if (!(Number.isInteger(b) && b >= 0 && b < this.kvBlockCount)) throw new InputError(`shiftKeys: block ${b} is outside the pool of ${this.kvBlockCount}`);
        if (blocks.has(b)) throw new InputError(`shiftKeys: block ${b} is named twice`);
        blocks.add(b);
        positions.fill(-s.delta, b * bs, (b + 1) * bs);
      }
    }
    if (blocks.size === 0) return;
    const d = this.device;
    const k = this.m.kernels[kv.keyShift.kernel];
    if (!this.keyShift) {
      const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      const scratch = d.createBuffer({ label: 'kv key shift scratch', size: this.kvBuffers[0].k.size, usage: storage });
      const pos = d.createBuffer({ label: 'kv key shift positions', size: Math.max(16, positions.byteLength), usage: storage });
      const values = evalParams(k.params, { blocks: this.kvBlockCount });
      const params = d.createBuffer({ label: 'kv key shift params', size: PARAMS_STRIDE, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      if (values.length) d.queue.writeBuffer(params, 0, values.buffer as ArrayBuffer, values.byteOffset, values.byteLength);
      const pipeline = this.pipelines[kv.keyShift.kernel];
      const bindGroups = this.kvBuffers.map(({ k: pool }, l) =>
        d.createBindGroup({
          label: `${kv.keyShift!.label} ${l}`,
          layout: pipeline.getBindGroupLayout(0),
          entries: [{ binding: 0, resource: { buffer: pool } }, { binding: 1, resource: { buffer: pos } }, { binding: 2, resource: { buffer: scratch } }, ...(values.length ? [{ binding: 3, resource: { buffer: params, size: PARAMS_STRIDE } }] : [])],
        }),
      );
      const grid = this.checkedGrid(kv.keyShift.kernel, k.grid.map((g) => evalGrid(g, k.params, values.length ? values : { blocks: this.kvBlockCount })), { blocks: this.kvBlockCount });
      this.keyShift = { scratch, positions: pos, params, bindGroups, grid };
    }
    const st = this.keyShift;
    d.queue.writeBuffer(st.positions, 0, positions);
    const bytes = this.kvBlockBytes();
    const enc = d.createCommandEncoder({ label: kv.keyShift.label });
    this.kvBuffers.forEach(({ k: pool }, l) => {
      const pass = enc.beginComputePass({ label: `${kv.keyShift!.label} ${l}` });
      pass.setPipeline(this.pipelines[kv.keyShift!.kernel]);
      pass.setBindGroup(0, st.bindGroups[l]);
      pass.dispatchWorkgroups(...st.grid);
      pass.end();
      for (const b of blocks) enc.copyBufferToBuffer(st.scratch, b * bytes, pool, b * bytes, bytes);
    });
    d.queue.submit([enc.finish()]);
  }

  /** Runs a batch whose sequences are checked; validates tokens and room, then encodes and submits one step. */
  private async runBatch(entries: readonly BatchEntry[]): Promise<number[][]> {
    const { lm, allocator } = this.lmAllocator();
    let T = 0;
    for (const e of entries) {
      if (!Array.isArray(e.tokens) || e.tokens.length === 0) throw new InputError(`stepBatch: the entry of sequence ${e.seq.id} has no tokens`);
      for (const t of e.tokens) if (!Number.isInteger(t) || t < 0 || t >= lm.vocabSize) throw new InputError(`token id ${t} is outside the vocabulary (0..${lm.vocabSize - 1})`);
      T += e.tokens.length;
    }
    if (T > this.maxTokens) throw new InputError(`a step takes at most ${this.maxTokens} tokens over all its sequences, got ${T}`);
    // room: positions, then blocks for all entries together (nothing is allocated unless every entry fits)
    let need = 0;
    for (const e of entries) {
      const len = allocator.sequence(e.seq.id).length;
      if (len + e.tokens.length > lm.maxPositions)
        throw new CacheFullError(`sequence ${e.seq.id} would reach ${len + e.tokens.length} positions; the engine supports ${lm.maxPositions}`, e.seq.id);
      need += allocator.blocksNeeded(e.seq.id, e.tokens.length);
      if (need > allocator.freeBlocks)
        throw new CacheFullError(`KV cache full: sequence ${e.seq.id} needs ${allocator.blocksNeeded(e.seq.id, e.tokens.length)} more block(s) of ${allocator.blockSize} tokens for ${e.tokens.length} token(s) and the step's earlier entries ${need - allocator.blocksNeeded(e.seq.id, e.tokens.length)}; ${allocator.freeBlocks} free of ${allocator.numBlocks}`, e.seq.id);
    }
    const tables = new Uint32Array(entries.length * this.maxBlocks);
    const copies: { from: number; to: number }[] = [];
    const placed = entries.map((e, b) => {
      const { start, copy } = allocator.reserve(e.seq.id, e.tokens.length);
      if (copy) copies.push(copy);
      tables.set(allocator.tableArray(e.seq.id, this.maxBlocks), b * this.maxBlocks);
      return { tokens: e.tokens, start, sampling: e.sampling, allRows: e.allRows };
    });
    return this.submitStep({ T, ...this.layRows(placed), tables, copies });
  }

  /**
   * Encodes and submits one step whose rows, block tables and copy-on-write copies are laid out; reads back the
   * sampled ids, per entry.
   */
  private async submitStep(step: StepRows): Promise<number[][]> {
    const { T, tokens, positions, rowSeq, tables, logitRows, sampled, rowsOf, copies, attentionMass } = step;
    const lm = this.m.lm!;
    this.lastRows = rowsOf;
    this.lastMass = [];
    const d = this.device;
    const outs = Math.max(1, logitRows.length); // no sampled row: the logits of row 0 are computed and ignored
    d.queue.writeBuffer(this.blockTable!, 0, tables.buffer as ArrayBuffer, 0, tables.byteLength);
    d.queue.writeBuffer(this.inputBuffers.get('tokens')!, 0, tokens);
    d.queue.writeBuffer(this.inputBuffers.get('positions')!, 0, positions);
    d.queue.writeBuffer(this.inputBuffers.get('row_seq')!, 0, rowSeq);
    const rowsIn = this.inputBuffers.get('logit_rows');
    if (rowsIn) d.queue.writeBuffer(rowsIn, 0, Int32Array.from(logitRows.length ? logitRows : [0]));
    const observed = attentionMass !== undefined;
    const plan = this.planFor(T, observed);
    const bindings = { seq: T, past: 0, batch: 1, outs, table_stride: this.maxBlocks };
    this.writeComputedInputs(bindings);
    const enc = d.createCommandEncoder();
    // the observers add to the attention-mass rows of this step: they start at 0
    const massStride = this.maxBlocks * (this.m.kv?.blockSize ?? 0);
    if (observed) {
      this.observedDispatches(plan); // creates the buffer on first use
      enc.clearBuffer(this.massBuffer!, 0, T * massStride * 4);
    }
    // copy-on-write: a shared, partly filled block gets its copy before this step writes into it
    const blockBytes = this.kvBlockBytes();
    for (const { from, to } of copies)
      for (const { k, v } of this.kvBuffers)
        for (const pool of [k, v]) {
          enc.copyBufferToBuffer(pool, from * blockBytes, this.cowScratch!, 0, blockBytes);
          enc.copyBufferToBuffer(this.cowScratch!, 0, pool, to * blockBytes, blockBytes);
        }
    const extra = sampled.map(({ sampling }, i) => {
      const s = this.samplerRow(i, sampling.temperature === 0);
      return { d: s, params: evalParams(this.m.kernels[s.manifest.kernel].params, { ...bindings, sample_row: i, ...samplerParamValues(sampling, lm.vocabSize) }) };
    });
    this.encode(enc, plan, bindings, extra, observed);
    if (sampled.length) enc.copyBufferToBuffer(this.sampleBuffer, 0, this.sampleRead, 0, align(sampled.length * 4, 4));
    if (observed) enc.copyBufferToBuffer(this.massBuffer!, 0, this.massRead!, 0, T * massStride * 4);
    d.queue.submit([enc.finish()]);
    const submittedAt = performance.now();
    const ids = rowsOf.map(() => [] as number[]);
    if (sampled.length) {
      await this.waiter.wait(`${plan.manifest.name}:${T}`, submittedAt, () =>
        this.sampleRead.mapAsync(GPUMapMode.READ, 0, align(sampled.length * 4, 4)).catch((e: unknown) => {
          throw this.broken ?? new DeviceError('DEVICE_LOST', `reading the sampled tokens failed: ${(e as Error).message}`);
        }),
      );
      const got = new Uint32Array(this.sampleRead.getMappedRange(0, align(sampled.length * 4, 4)).slice(0));
      this.sampleRead.unmap();
      sampled.forEach(({ entry }, i) => ids[entry].push(got[i]));
    }
    if (observed) {
      const map = (): Promise<void> =>
        this.massRead!.mapAsync(GPUMapMode.READ, 0, T * massStride * 4).catch((e: unknown) => {
          throw this.broken ?? new DeviceError('DEVICE_LOST', `reading the attention mass failed: ${(e as Error).message}`);
        });
      // after the sampled ids' readback the step is done; a step that samples nothing waits here
      if (sampled.length) await map();
      else await this.waiter.wait(`${plan.manifest.name}:${T}:mass`, submittedAt, map);
      const rows = new Float32Array(this.massRead!.getMappedRange(0, T * massStride * 4).slice(0));
      this.massRead!.unmap();
      // per entry that asked: the mass of its positions 0 .. end - 1, summed over its rows (in float64, as the CPU)
      this.lastMass = rowsOf.map((_r, b) => {
        if (!attentionMass[b]) return undefined;
        let end = 0;
        for (let r = 0; r < T; r++) if (rowSeq[r] === b) end = Math.max(end, positions[r] + 1);
        const mass = new Float64Array(end);
        for (let r = 0; r < T; r++) if (rowSeq[r] === b) for (let j = 0; j <= positions[r]; j++) mass[j] += rows[r * massStride + j];
        return mass;
      });
    }
    if (this.querySet) await this.readProfile([...(observed ? this.observedDispatches(plan) : plan.dispatches), ...extra.map((x) => x.d)]);
    this.check();
    return ids;
  }

  /**
   * Reads back the logits of the last step's sampled rows, per entry of that step (for tests, tools and speculative
   * decoding's acceptance test): `[entry][row]` of `vocabSize` floats, in the order of the ids
   * {@link EngineSession.stepBatch} or {@link EngineSession.stepPaged} returned.
   */
  async lastBatchLogits(): Promise<Float32Array[][]> {
    this.check();
    // after stepBatch or stepPaged alike (the rows of the last step, whoever manages its blocks)
    const lm = this.m.lm;
    if (!lm) throw new InputError('this engine is not a causal LM');
    const n = this.lastRows.reduce((a, x) => a + x.length, 0);
    if (n === 0) return this.lastRows.map(() => []);
    const all = await this.readLogitRows(n, lm.vocabSize);
    return this.lastRows.map((rows) => rows.map((i) => all.slice(i * lm.vocabSize, (i + 1) * lm.vocabSize)));
  }

  private async readLogitRows(rows: number, vocab: number): Promise<Float32Array> {
    const o = this.m.outputs.find((x) => x.name === this.m.lm!.logits)!;
    const ref = o.ref as { slot: number };
    const bytes = rows * vocab * 4;
    const read = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(this.slots[ref.slot], 0, read, 0, bytes);
    this.device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    read.destroy();
    return out;
  }

  /**
   * Reads back the logits of the last step's first sampled row (for tests and tools; generation itself reads only
   * token ids): after {@link EngineSession.step}, the logits its token was sampled from.
   */
  async lastLogits(): Promise<Float32Array> {
    this.check();
    const { lm } = this.lmAllocator();
    return this.readLogitRows(1, lm.vocabSize);
  }

  /** Generates from a prompt (run.c's step counting; GPU sampling, one readback per token). */
  async generate(promptIds: readonly number[], o: EngineGenerateOptions): Promise<EngineGenerateResult> {
    const lm = this.m.lm;
    if (!lm) throw new InputError('this engine is not a causal LM');
    if (promptIds.length === 0) throw new InputError('the prompt has no tokens (it needs at least BOS)');
    const steps = Math.min(o.steps, lm.maxPositions);
    if (promptIds.length > steps) throw new InputError(`the prompt has ${promptIds.length} tokens, more than steps (${steps})`);
    validateSampling(o);
    const rng = new XorShiftRng(o.seed);
    const sampling = (): SamplerStepSettings => ({ temperature: o.temperature, topp: o.topp, topk: o.topk, coin: o.temperature === 0 ? 0 : rng.nextF32() });
    this.reset();
    const t0 = performance.now();
    let next = await this.step(promptIds, sampling());
    const t1 = performance.now();
    const generated: number[] = [];
    let stopped = false;
    for (let pos = promptIds.length - 1; pos < steps; pos++) {
      if (lm.stopTokens.includes(next)) {
        stopped = true;
        break;
      }
      generated.push(next);
      o.onToken?.(next);
      if (pos + 1 >= steps) break;
      next = await this.step([next], sampling());
    }
    return { generated, prefillSeconds: (t1 - t0) / 1000, decodeSeconds: (performance.now() - t1) / 1000, stopped };
  }

  /** Every GPU buffer the session created. */
  private buffers(): (GPUBuffer | undefined)[] {
    return [...this.slots, ...this.scratch, ...this.inputBuffers.values(), ...this.weightBuffers.flatMap((m) => [...m.values()]), ...this.kvBuffers.flatMap((k) => [k.k, k.v]), this.blockTable, this.cowScratch, this.sampleBuffer, this.sampleRead, this.paramsBuffer, this.keyShift?.scratch, this.keyShift?.positions, this.keyShift?.params, this.massBuffer, this.massRead];
  }

  /**
   * Bytes of GPU memory the session holds: weights, KV pool, activation slots and the rest of its buffers (what a
   * memory budget over several models counts; 0 once destroyed).
   */
  get deviceBytes(): number {
    if (this.destroyed) return 0;
    // buffers shared between weight maps (one weight bound by several kernels) count once
    return [...new Set(this.buffers())].reduce((a, b) => a + (b?.size ?? 0), 0);
  }

  /** Releases the session's GPU buffers (and its device, when the session created it). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const b of new Set(this.buffers())) b?.destroy();
    this.querySet?.destroy();
    if (this.ownsDevice) await this.handle.destroy();
  }
}

/** Checks one step's sampling settings and coin (`InputError`). */
function checkSampling(sampling: SamplerStepSettings): void {
  validateSampling({ ...sampling, seed: 0 });
  if (!(sampling.coin >= 0 && sampling.coin < 1)) throw new InputError(`the sampling coin must be in [0, 1), got ${sampling.coin}`);
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
