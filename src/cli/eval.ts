/**
 * `tensorwright eval`: how much a compressed model (`--quant`, `--sparsity`) loses, measured the way every later
 * compression step is judged. The text is teacher-forced through the model as given (on the chosen backend) and
 * through the f32 model on the CPU reference backend, and the two next-token distributions are compared at every
 * position:
 *
 * - `ppl`, `ppl_f32`: perplexity of the text under each;
 * - `kl_mean`, `kl_p99`: KL(f32 ‖ model) per position, its mean and 99th percentile (nats);
 * - `top1_agreement`: the share of positions where both pick the same most likely token;
 * - `weight_bytes`, `weight_bytes_f32`: stored weight bytes of the model as run and of the f32 model;
 * - `kv_dtype`: the KV cache's element type (`--kv-dtype int8` scores a quantized KV cache against the f32 model).
 *
 * With `--reference`, the f32 model is another file (the original of a compressed file that `quantize` wrote), and
 * the model under test runs as loaded. {@link evalGraphs} computes the same figures for two graphs in memory.
 *
 * Texts longer than the context are cut into windows of `maxPositions` tokens, each starting at BOS, scored
 * independently (non-overlapping windows, as llama.cpp's `perplexity` does).
 *
 * With `--kv-window SINKS,RECENT` the model under test instead reads the whole text as one stream, a token at a time,
 * through the serving scheduler's sliding KV window with attention sinks (StreamingLLM) on the paged CPU executor:
 * `ppl` is the streaming perplexity in a cache of `kv_window.kv_bytes`, and `ppl_f32` stays the f32 model restarted
 * every context window (`--max-context` sets that window). `--kv-window 0,RECENT` is a plain sliding window.
 * `--kv-h2o BUDGET,RECENT` streams it the same way through a cache bounded by H2O heavy-hitter eviction instead
 * (`kv_h2o` in the result).
 * @module
 */
import { readFile } from 'node:fs/promises';
import { InputError, UsageError } from '../errors.js';
import type { LoadedModel } from '../frontends/load.js';
import type { Graph } from '../ir/graph.js';
import { weightTotals } from '../ir/stats.js';
import { cpuProfile } from '../ir/device-profile.js';
import { runPasses } from '../passes/pipeline.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';
import { describeDevice, requestGPUDevice } from '../runtime/device.js';
import { compile, compressionOf } from '../compile.js';
import type { KvCacheDType, PrecisionPolicy } from '../ir/target.js';
import type { BatchExecutor } from '../runtime/serving/batch-executor.js';
import { BatchedEngineExecutor } from '../runtime/serving/batched-engine-executor.js';
import { CpuPagedExecutor } from '../runtime/serving/cpu-paged-executor.js';
import { kvEvictionBlocks, type KvEviction } from '../runtime/serving/kv-eviction.js';
import { kvWindowBlocks, type KvWindow } from '../runtime/serving/kv-window.js';
import { kvH2oFlag, kvWindowFlag, refuseKvH2o } from './kv-window-flag.js';
import { Scheduler } from '../runtime/serving/scheduler.js';
import { openModel, pickBackend } from './model-input.js';
import { log } from './output.js';
import { requireFile, requireFileOrFolder } from './file-arguments.js';
import { calibrateModelW8A8, w8a8Model } from './w8a8-model.js';
import { keyOffsetModel } from './key-offset-model.js';

/** Options of the `eval` command. */
export interface EvalCommandOptions {
  /** Model file. */
  model: string;
  /** Tokenizer file (default: the model's own, or one beside it). */
  tokenizer?: string;
  /** The text file to score. */
  text: string;
  /** Weight quantization scheme (default none). */
  quant?: string;
  /** Weight sparsity (default none). */
  sparsity?: string;
  /** Backend of the model under test (the f32 reference always runs on the CPU). */
  backend: 'cpu' | 'webgpu' | 'auto';
  /** Most tokens to score (default: the whole text). */
  maxTokens?: number;
  /** Precision policy of the WebGPU engine (default `auto`). */
  precision?: PrecisionPolicy;
  /** Element type of the model's KV cache (default f32; `int8`/`int4` on the CPU: the same semantics, f32 storage). */
  kvDtype?: KvCacheDType;
  /** Print the JSON object only (it is printed either way; without this a summary line goes to stderr too). */
  json: boolean;
  /** Most positions the model is compiled for: a file's declared context is capped to it (default 8192). */
  maxContext?: number;
  /**
   * The model to compare against (default: `model` itself, uncompressed): the f32 original of a compressed file, such
   * as `quantize` writes. It must have the same vocabulary; it runs on the CPU reference backend.
   */
  reference?: string;
  /** Center the cached keys on offsets calibrated on this text (for an int8/int4 KV cache; never the evaluation text). */
  kvCalib?: string;
  /** W8A8 activation scales (`static` or `per-token`): calibrate on `calib` and score the W8A8 model. */
  w8a8?: string;
  /** With `w8a8`: SmoothQuant's migration strength α first. */
  smoothquant?: number;
  /** With `w8a8`: the calibration text (never the evaluation text). */
  calib?: string;
  /** With `w8a8`: most calibration tokens. */
  calibTokens?: number;
  /** `SINKS,RECENT`: stream the text through a sliding KV window with attention sinks (CPU backend, f32 KV). */
  kvWindow?: string;
  /** With `kvWindow`: tokens per KV block, to which sinks and window are rounded up (default 16). */
  kvBlockSize?: number;
  /** `BUDGET,RECENT`: stream the text through a cache bounded by H2O heavy-hitter eviction (f32 KV; the CPU backend unless `backend` is `webgpu`). */
  kvH2o?: string;
}

/** The `kv_h2o` part of {@link EvalResult}. */
export interface EvalKvH2o {
  /** Tokens of K/V kept at most, as asked. */
  budget_tokens: number;
  /** Recent tokens always kept, as asked. */
  recent_tokens: number;
  /** Tokens per KV block (budget and recent part are rounded up to whole blocks). */
  block_size: number;
  /** Most positions the cache holds: budget blocks × block_size. */
  cache_positions: number;
  /** K/V bytes of that cache (f32, all layers). */
  kv_bytes: number;
  /** K/V bytes of a cache of the model's whole context. */
  kv_bytes_full_context: number;
  /** Blocks H2O dropped. */
  evicted_blocks: number;
}

/** The `kv_window` part of {@link EvalResult}. */
export interface EvalKvWindow {
  /** Tokens kept from the start of the text, as asked. */
  sink_tokens: number;
  /** Recent tokens kept, as asked. */
  window_tokens: number;
  /** Tokens per KV block (sinks and window are rounded up to whole blocks). */
  block_size: number;
  /** Most positions the windowed cache holds: `(sink blocks + recent blocks) × block_size`. */
  cache_positions: number;
  /** K/V bytes of that cache (f32, all layers). */
  kv_bytes: number;
  /** K/V bytes of a cache of the model's whole context. */
  kv_bytes_full_context: number;
  /** K/V shifts made (one per drop of old blocks). */
  shifts: number;
}

/** The JSON object `eval` prints. */
export interface EvalResult {
  /** Positions scored (tokens predicted). */
  tokens: number;
  /** Perplexity under the model as given. */
  ppl: number;
  /** Perplexity under the f32 model (CPU reference). */
  ppl_f32: number;
  /** Mean KL(f32 ‖ model) per position, in nats. */
  kl_mean: number;
  /** 99th percentile of the per-position KL. */
  kl_p99: number;
  /** Share of positions where the two argmaxes agree. */
  top1_agreement: number;
  /** Stored bytes of the weights as run. */
  weight_bytes: number;
  /** Stored bytes of the f32 weights. */
  weight_bytes_f32: number;
  /** Element type of the model's KV cache. */
  kv_dtype: KvCacheDType;
  /** With `--kv-window`: the window and the memory it takes. */
  kv_window?: EvalKvWindow;
  /** With `--kv-h2o`: the budget and the memory it takes. */
  kv_h2o?: EvalKvH2o;
}

/** Per-position log-probabilities of a causal LM over a window (rows of `vocab`). */
interface WindowScorer {
  /** Log-softmax rows for each position of `ids` (the logits after ids[0..i]). */
  score(ids: readonly number[]): Promise<Float64Array[]>;
  close(): Promise<void>;
}

function logSoftmax(logits: ArrayLike<number>, offset: number, vocab: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[offset + i]);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[offset + i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(vocab);
  for (let i = 0; i < vocab; i++) out[i] = logits[offset + i] - lse;
  return out;
}

/** A scorer on the CPU reference backend: one forward over the whole window, logits at every position. */
function cpuScorer(model: LoadedModel, passes: string, options: Record<string, unknown>): { scorer: WindowScorer; graph: Graph } {
  const graph = runPasses(model.build({ lastTokenLogitsOnly: false }), passes, { device: cpuProfile, options }).graph;
  return { graph, scorer: graphScorer(graph, model) };
}

/** A scorer on WebGPU: the engine decodes the window one token at a time and the logits are read back each step. */
async function webgpuScorer(model: LoadedModel, o: EvalCommandOptions): Promise<{ scorer: WindowScorer; weightBytes: number; device: string }> {
  const handle = await requestGPUDevice();
  const engine = await compile(model, { device: handle.info, quant: o.quant, sparsity: o.sparsity, precision: o.precision, kv: { dtype: o.kvDtype }, prefillChunk: 8, onProgress: log });
  const session = await engine.createSession({ device: handle });
  const vocab = model.config.vocabSize;
  const weightBytes = engine.manifest.weights.reduce((a, w) => a + w.parts.reduce((b, p) => b + p.byteLength, 0), 0);
  return {
    weightBytes,
    device: describeDevice(handle.info),
    scorer: {
      async score(ids) {
        session.reset();
        const rows: Float64Array[] = [];
        for (const id of ids) {
          await session.step([id], { temperature: 0, topp: 1, coin: 0 });
          rows.push(logSoftmax(await session.lastLogits(), 0, vocab));
        }
        return rows;
      },
      async close() {
        await session.destroy();
        await handle.destroy();
      },
    },
  };
}

/** A paged executor a text is streamed through, with the logits after each of its one-token steps. */
interface StreamBackend {
  /** The executor. */
  readonly executor: BatchExecutor;
  /** Bytes of K/V one cached position takes over all layers. */
  readonly kvBytesPerPosition: number;
  /** Sets what gets the logits after every step (each step runs one token). */
  listen(f: (logits: Float32Array) => void): void;
  /** Frees what it holds. */
  close(): Promise<void>;
}

/** The paged CPU executor over `graph` as a {@link StreamBackend}. */
function cpuStream(graph: Graph, model: LoadedModel, numBlocks: number, blockSize: number): StreamBackend {
  const executor = new CpuPagedExecutor(graph, { numBlocks, blockSize, maxPositions: model.maxPositions, stopTokens: model.stopTokens });
  return {
    executor,
    kvBytesPerPosition: executor.kvBytesPerPosition,
    listen: (f) => void (executor.onLogits = (_seq, logits) => f(logits)),
    close: async () => {},
  };
}

/**
 * A WebGPU engine of `model` (f32 KV in blocks of `blockSize`; its attention-mass observers and key shift serve H2O)
 * on the scheduler's block tables as a {@link StreamBackend}: every step's one token is sampled greedily so that its
 * logits are computed, and the executor reports it unsampled to the scheduler when the step did not ask.
 */
async function webgpuStream(model: LoadedModel, o: EvalCommandOptions, numBlocks: number, blockSize: number): Promise<StreamBackend & { device: string; weightBytes: number }> {
  const handle = await requestGPUDevice();
  try {
    const engine = await compile(model, { device: handle.info, quant: o.quant, sparsity: o.sparsity, precision: o.precision, kv: { blockSize }, prefillChunk: 8, batchInvariant: true, onProgress: log });
    const session = await engine.createSession({ device: handle, kvBlocks: numBlocks });
    const lm = engine.manifest.lm!;
    const kv = engine.manifest.kv!;
    const executor = new BatchedEngineExecutor(session, { maxPositions: lm.maxPositions, vocabSize: lm.vocabSize, stopTokens: lm.stopTokens });
    let listener: ((logits: Float32Array) => void) | undefined;
    const step = executor.step.bind(executor);
    executor.step = async (b) => {
      const e = b.entries[0];
      if (b.entries.length !== 1 || e.tokens.length !== 1) throw new InputError(`eval streams one token a step, got ${b.entries.length} entries`);
      const ids = await step({ ...b, entries: [{ ...e, sampling: e.sampling ?? { temperature: 0, topp: 1, coin: 0 } }] });
      const [rows] = await session.lastBatchLogits();
      listener?.(rows[rows.length - 1]);
      return e.sampling ? ids : [-1];
    };
    return {
      executor,
      kvBytesPerPosition: kv.layers * 2 * kv.numKvHeads * kv.headDim * 4,
      listen: (f) => void (listener = f),
      close: async () => {
        await session.destroy();
        await handle.destroy();
      },
      device: describeDevice(handle.info),
      weightBytes: engine.manifest.weights.reduce((a, w) => a + w.parts.reduce((b, p) => b + p.byteLength, 0), 0),
    };
  } catch (e) {
    await handle.destroy();
    throw e;
  }
}

/**
 * The text streamed once through a bounded KV cache (a sliding window, or H2O eviction) on a paged executor (prompt
 * tokens run one per step, so every token is predicted from the cache as it stands then). {@link WindowScorer.score}
 * hands out the stream's rows for consecutive windows of the comparison: each call returns the next `ids.length` rows
 * (the stream starts at BOS once, not at every window, which is the point).
 */
function streamingScorer(
  backend: StreamBackend,
  model: LoadedModel,
  ids: readonly number[],
  targets: number,
  bound: { window: KvWindow } | { eviction: KvEviction },
  blockSize: number,
): { scorer: WindowScorer; info: () => EvalKvWindow | EvalKvH2o } {
  const vocab = model.config.vocabSize;
  const capacity = boundCapacity(bound, blockSize, model.maxPositions);
  const executor = backend.executor;
  let shifts = 0;
  const step = executor.step.bind(executor);
  executor.step = (b) => {
    shifts += b.shifts?.length ?? 0;
    return step(b);
  };
  const scheduler = new Scheduler(executor, { maxBatchTokens: 1, prefixCaching: false, ...('window' in bound ? { kvWindow: bound.window } : { kvEviction: bound.eviction }) });
  const flag = 'window' in bound ? '--kv-window' : '--kv-h2o';
  const rows: Float64Array[] = [];
  backend.listen((logits) => void rows.push(logSoftmax(logits, 0, vocab)));
  let running: Promise<void> | undefined;
  let done = false;
  const start = (): Promise<void> => {
    running ??= (async () => {
      scheduler.add({ promptIds: ids.slice(0, targets), maxTokens: 1, temperature: 0, topP: 1, topK: 0, seed: 0, ignoreStopTokens: true }, { onToken: () => {}, onFinish: () => void (done = true) });
      let last = performance.now();
      while (!done) {
        await scheduler.step();
        if (performance.now() - last > 10_000) {
          log(`eval ${flag}: streamed ${rows.length}/${targets} tokens`);
          last = performance.now();
        }
      }
    })();
    return running;
  };
  let cursor = 0;
  return {
    scorer: {
      async score(inputs) {
        await start();
        const out = rows.slice(cursor, cursor + inputs.length);
        cursor += inputs.length;
        return out;
      },
      close: () => backend.close(),
    },
    info: () => {
      const memory = { block_size: blockSize, cache_positions: capacity, kv_bytes: capacity * backend.kvBytesPerPosition, kv_bytes_full_context: model.maxPositions * backend.kvBytesPerPosition };
      if ('window' in bound) return { sink_tokens: bound.window.sinkTokens, window_tokens: bound.window.windowTokens, ...memory, shifts };
      return { budget_tokens: bound.eviction.budgetTokens, recent_tokens: bound.eviction.recentTokens, ...memory, evicted_blocks: scheduler.evictedBlocks };
    },
  };
}

/** Positions a bounded cache holds at most (a window's sinks and recent blocks, or H2O's budget), in whole blocks. */
function boundCapacity(bound: { window: KvWindow } | { eviction: KvEviction }, blockSize: number, maxPositions: number): number {
  return 'window' in bound ? kvWindowBlocks(bound.window, blockSize, maxPositions).capacity : kvEvictionBlocks(bound.eviction, blockSize, maxPositions).capacity;
}

function argmax(row: Float64Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** The q-quantile (0..1) of `xs` by the nearest-rank method. */
export function quantile(xs: readonly number[], q: number): number {
  if (!xs.length) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** The figures of {@link EvalResult} that compare two scorers (all but the byte counts). */
type Comparison = Omit<EvalResult, 'weight_bytes' | 'weight_bytes_f32' | 'kv_dtype'>;

/** Scores `targets` tokens of `ids` (BOS first) under both scorers, window by window. */
async function compareScorers(model: LoadedModel, ids: readonly number[], targets: number, reference: WindowScorer, underTest: WindowScorer): Promise<Comparison> {
  const ctx = model.maxPositions;
  let nll = 0;
  let nllF32 = 0;
  let agree = 0;
  const kls: number[] = [];
  const t0 = performance.now();
  // windows of ctx positions: BOS then up to ctx-1 text tokens, predicting each next token
  for (let at = 0; at < targets; at += ctx - 1) {
    const count = Math.min(ctx - 1, targets - at);
    const window = [model.bosId, ...ids.slice(1 + at, 1 + at + count)];
    const inputs = window.slice(0, count);
    // predicts window[1..count]: the first `count` positions of the window
    const [p, q] = [await reference.score(inputs), await underTest.score(inputs)];
    for (let i = 0; i < count; i++) {
      const next = window[i + 1];
      nllF32 -= p[i][next];
      nll -= q[i][next];
      let kl = 0;
      for (let v = 0; v < p[i].length; v++) kl += Math.exp(p[i][v]) * (p[i][v] - q[i][v]);
      kls.push(Math.max(kl, 0));
      if (argmax(p[i]) === argmax(q[i])) agree++;
    }
    log(`eval: ${at + count}/${targets} tokens (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  return {
    tokens: targets,
    ppl: Math.exp(nll / targets),
    ppl_f32: Math.exp(nllF32 / targets),
    kl_mean: kls.reduce((a, b) => a + b, 0) / targets,
    kl_p99: quantile(kls, 0.99),
    top1_agreement: agree / targets,
  };
}

/**
 * The `eval` figures of graph `underTest` against graph `reference` (both causal LMs of `model`'s shape, built with
 * logits at every position), on the CPU reference backend after the O3 passes, for the text tokens `ids` (BOS first).
 * Weight bytes are those of the two graphs as given.
 */
export async function evalGraphs(model: LoadedModel, ids: readonly number[], reference: Graph, underTest: Graph, maxTokens = Infinity): Promise<EvalResult> {
  const targets = Math.min(ids.length - 1, maxTokens);
  if (targets < 1) throw new InputError('the text has no tokens to score');
  const scorer = (g: Graph): WindowScorer => graphScorer(runPasses(g, 'O3', { device: cpuProfile }).graph, model);
  const c = await compareScorers(model, ids, targets, scorer(reference), scorer(underTest));
  return { ...c, weight_bytes: weightTotals(underTest).bytes, weight_bytes_f32: weightTotals(reference).bytes, kv_dtype: 'f32' };
}

/** A scorer over an already optimized graph on the CPU reference backend. */
function graphScorer(graph: Graph, model: LoadedModel): WindowScorer {
  const lm = new CpuCausalLM(graph, model.maxPositions);
  const vocab = model.config.vocabSize;
  return {
    async score(ids) {
      lm.reset();
      const all = lm.stepAll(ids);
      return ids.map((_t, i) => logSoftmax(all, i * vocab, vocab));
    },
    async close() {},
  };
}

/** The `--reference` model, checked against the model under test (same vocabulary, at least its context). */
async function openReference(path: string, model: LoadedModel, maxContext?: number): Promise<LoadedModel> {
  requireFileOrFolder('--reference', path);
  const ref = (await openModel(path, undefined, { maxContext })).model;
  if (ref.config.vocabSize !== model.config.vocabSize) throw new UsageError(`--reference ${path} has a vocabulary of ${ref.config.vocabSize} tokens, the model ${model.config.vocabSize}`);
  if (ref.maxPositions < model.maxPositions) throw new UsageError(`--reference ${path} supports ${ref.maxPositions} positions, fewer than the model's ${model.maxPositions}`);
  return ref;
}

/** Runs the command; resolves to the result (also printed as one JSON object on stdout). */
export async function evalCommand(o: EvalCommandOptions): Promise<EvalResult> {
  if (o.maxTokens !== undefined && !(Number.isInteger(o.maxTokens) && o.maxTokens >= 1)) throw new UsageError(`--max-tokens must be a positive integer, got ${o.maxTokens}`);
  requireFileOrFolder('--model', o.model);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  requireFile('--text', o.text);
  const { model, tokenizer } = await openModel(o.model, o.tokenizer, { maxContext: o.maxContext });
  if (!tokenizer) throw new UsageError(`eval needs a tokenizer: pass --tokenizer <file> (none found for ${o.model})`);
  const text = await readFile(o.text, 'utf8');
  const ids = tokenizer.encode(text);
  if (ids[0] !== model.bosId) ids.unshift(model.bosId);
  const targets = Math.min(ids.length - 1, o.maxTokens ?? Infinity);
  if (targets < 1) throw new InputError(`${o.text} has no tokens to score`);
  const kvWindow = kvWindowFlag(o.kvWindow);
  if (kvWindow && o.kvCalib) throw new UsageError('--kv-window does not go with --kv-calib: centered keys do not rotate with their offsets');
  if (kvWindow && o.backend === 'webgpu') throw new UsageError('--kv-window runs on the CPU backend for now (the WebGPU engine has no key shift yet): pass --backend cpu');
  if (kvWindow && o.kvDtype && o.kvDtype !== 'f32') throw new UsageError('--kv-window takes an f32 KV cache for now (no key shift of int8/int4 blocks yet)');
  const kvH2o = kvH2oFlag(o.kvH2o);
  if (kvH2o) refuseKvH2o(o);
  if (o.kvBlockSize !== undefined && !kvWindow && !kvH2o) throw new UsageError('--kv-block-size goes with --kv-window or --kv-h2o');
  // a bounded cache streams on the CPU reference unless --backend webgpu asks for the GPU (H2O only, for now)
  const backend = kvWindow || (kvH2o && o.backend !== 'webgpu') ? 'cpu' : await pickBackend(o.backend);
  const passes = 'O3';

  const refModel = o.reference ? await openReference(o.reference, model, o.maxContext) : model;
  let tested = model;
  if (o.w8a8 !== undefined) {
    if (o.w8a8 !== 'static' && o.w8a8 !== 'per-token') throw new UsageError(`--w8a8 must be static or per-token, got '${o.w8a8}'`);
    if (!o.calib) throw new UsageError('--w8a8 needs --calib <file>: a calibration text (never the evaluation text)');
    requireFile('--calib', o.calib);
    tested = w8a8Model(model, await calibrateModelW8A8(model, tokenizer, { activations: o.w8a8, alpha: o.smoothquant, calib: o.calib, calibTokens: o.calibTokens }));
  } else if (o.smoothquant !== undefined || o.calib) throw new UsageError('--smoothquant and --calib go with --w8a8');
  if (o.kvCalib) tested = await keyOffsetModel(tested, tokenizer, o.kvCalib);
  const reference = cpuScorer(refModel, passes, {});
  const compression = compressionOf(o);
  let underTest: WindowScorer;
  let weightBytes: number;
  let windowInfo: (() => EvalKvWindow | EvalKvH2o) | undefined;
  if (kvWindow || kvH2o) {
    const bound = kvWindow ? { window: kvWindow } : { eviction: kvH2o! };
    const blockSize = o.kvBlockSize ?? 16;
    const numBlocks = boundCapacity(bound, blockSize, tested.maxPositions) / blockSize;
    let stream: StreamBackend;
    if (backend === 'cpu') {
      const graph = runPasses(tested.build({ lastTokenLogitsOnly: true }), passes, { device: cpuProfile, options: { ...compression } }).graph;
      stream = cpuStream(graph, tested, numBlocks, blockSize);
      weightBytes = weightTotals(graph).bytes;
    } else {
      const gpu = await webgpuStream(tested, o, numBlocks, blockSize);
      stream = gpu;
      weightBytes = gpu.weightBytes;
      log(`eval: webgpu on ${gpu.device}`);
    }
    const st = streamingScorer(stream, tested, ids, targets, bound, blockSize);
    underTest = st.scorer;
    windowInfo = st.info;
  } else if (backend === 'cpu') {
    const kvQuantized = o.kvDtype === 'int8' || o.kvDtype === 'int4';
    const c = Object.keys(compression).length || refModel !== model || tested !== model || kvQuantized ? cpuScorer(tested, passes, { ...compression, kvCache: o.kvDtype }) : reference;
    underTest = c.scorer;
    weightBytes = weightTotals(c.graph).bytes;
  } else {
    const w = await webgpuScorer(tested, o);
    underTest = w.scorer;
    weightBytes = w.weightBytes;
    log(`eval: webgpu on ${w.device}`);
  }
  const f32 = weightTotals(runPasses(refModel.build({ lastTokenLogitsOnly: false }), 'O0', { device: cpuProfile }).graph);

  let r: EvalResult;
  try {
    r = { ...(await compareScorers(model, ids, targets, reference.scorer, underTest)), weight_bytes: weightBytes, weight_bytes_f32: f32.parameters * 4, kv_dtype: o.kvDtype ?? 'f32' };
    if (windowInfo) {
      const info = windowInfo();
      if ('budget_tokens' in info) r.kv_h2o = info;
      else r.kv_window = info;
    }
  } finally {
    await underTest.close();
  }
  process.stdout.write(`${JSON.stringify(r)}\n`);
  const w8a8 = o.w8a8 ? [`w8a8 ${o.w8a8}${o.smoothquant !== undefined ? `, smoothquant ${o.smoothquant}` : ''}`] : [];
  const kv = o.kvDtype && o.kvDtype !== 'f32' ? [`kv ${o.kvDtype}`] : [];
  if (r.kv_window) kv.push(`kv window ${r.kv_window.sink_tokens}+${r.kv_window.window_tokens} in ${r.kv_window.cache_positions} positions, ${r.kv_window.kv_bytes} of ${r.kv_window.kv_bytes_full_context} KV bytes`);
  if (r.kv_h2o) kv.push(`kv h2o ${r.kv_h2o.budget_tokens} (recent ${r.kv_h2o.recent_tokens}) in ${r.kv_h2o.cache_positions} positions, ${r.kv_h2o.kv_bytes} of ${r.kv_h2o.kv_bytes_full_context} KV bytes, ${r.kv_h2o.evicted_blocks} blocks evicted`);
  if (!o.json) log(`eval [${[backend, ...Object.values(compression).map((x) => x.name), ...w8a8, ...kv].join(', ')}]: ${targets} tokens, ppl ${r.ppl.toFixed(4)} (f32 ${r.ppl_f32.toFixed(4)}), KL mean ${r.kl_mean.toExponential(3)} p99 ${r.kl_p99.toExponential(3)}, top-1 agreement ${(100 * r.top1_agreement).toFixed(2)}%`);
  return r;
}
