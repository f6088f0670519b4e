/**
 * `tensorwright serve`: loads a model (a model file on the CPU reference or WebGPU, or a saved engine on WebGPU), or a
 * folder of models loaded on demand, puts each behind a continuous-batching {@link ServingSession}, and answers the
 * OpenAI-compatible HTTP API of {@link createOpenAiServer} until SIGINT or SIGTERM.
 * @module
 */
import type { KvCacheDType } from '../ir/target.js';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InputError, OverloadedError, UsageError } from '../errors.js';
import { cpuProfile } from '../ir/device-profile.js';
import { runPasses } from '../passes/pipeline.js';
import { compileWithTimingCache } from './tuned-compile.js';
import { Engine } from '../runtime/engine.js';
import { requestGPUDevice } from '../runtime/device.js';
import { loadTokenizer } from '../runtime/tokenizer-loader.js';
import { CpuPagedExecutor } from '../runtime/serving/cpu-paged-executor.js';
import { EngineSessionExecutor } from '../runtime/serving/engine-session-executor.js';
import { BatchedEngineExecutor } from '../runtime/serving/batched-engine-executor.js';
import { ServingSession } from '../runtime/serving/serving-session.js';
import { kvH2oFlag, kvWindowFlag, refuseKvH2o } from './kv-window-flag.js';
import type { BatchExecutor } from '../runtime/serving/batch-executor.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { ChatTemplate } from './chat-template.js';
import { requireEngineFolder, requireFile, requireFileOrFolder, requireFolder } from './file-arguments.js';
import { openModel, pickBackend } from './model-input.js';
import { createOpenAiServer, type ModelProvider, type ServedModel } from './openai-server.js';
import { log } from './output.js';
import { keyOffsetModel } from './key-offset-model.js';

/** Options of the `serve` command (as parsed from the command line). */
export interface ServeCommandOptions {
  /** A model file or Hugging Face folder. */
  model?: string;
  /** A saved engine directory. */
  engine?: string;
  /** A folder of models (files, Hugging Face folders or engine folders), each served under its name, loaded on first use. */
  models?: string;
  /** Tokenizer file (default: the model's own, or one found beside it). */
  tokenizer?: string;
  /** Port to listen on (0 = any free port; default 8080). */
  port: number;
  /** Host to listen on (default 127.0.0.1). */
  host?: string;
  /** Token budget of one scheduler step. */
  maxBatchTokens: number;
  /** Blocks of the KV pool (default: 8 full contexts on the CPU backend, one per engine session on WebGPU). */
  kvBlocks?: number;
  /** Tokens per KV block (CPU backend; an engine's own block size is used on WebGPU). */
  kvBlockSize?: number;
  /** Element type of the KV cache of model files (default f32; a saved engine keeps its own). */
  kvDtype?: KvCacheDType;
  /** Center the cached keys and values and balance the key channels on statistics of this text (`--kv-calib`; for int8/int4 KV caches). */
  kvCalib?: string;
  /** Most requests waiting; past it requests get 429 (default 256). */
  maxWaiting?: number;
  /** What preemption does when the KV pool is full (default `recompute`; `swap` needs an executor that can). */
  preemption?: 'recompute' | 'swap';
  /** Backend for model files. */
  backend: 'cpu' | 'webgpu' | 'auto';
  /** Engine sessions (resident sequences) per model on WebGPU, until the engine runs batches itself (default 4). */
  engineSessions?: number;
  /** With `--models`: most models loaded at once; idle ones are unloaded least recently used first (default 2). */
  maxLoadedModels?: number;
  /**
   * With `--models`: most MiB the loaded models hold together (their GPU buffers, or host memory on the CPU backend);
   * idle ones are unloaded least recently used first to make room, and a model that cannot fit gets HTTP 429 (the
   * others are busy) or 400 (larger than the budget alone). Default: no budget.
   */
  memoryBudget?: number;
  /** Most positions to compile a model for. */
  maxContext?: number;
  /**
   * WebGPU model files: time the candidate variants of the tunable kernels for the batched steps the server runs
   * (`batchTokens` rows) and keep the fastest in the timing cache (`compile --tune`'s tuner).
   */
  tune?: boolean;
  /** The timing cache file (default: the user cache directory's); used when present, written by `--tune`. */
  timingCache?: string;
  /**
   * `SINKS,RECENT`: every request keeps only its first and most recent tokens' K/V (a sliding window with attention
   * sinks, StreamingLLM) and may run past the context (CPU backend, or WebGPU model files with an f32/f16 KV cache).
   */
  kvWindow?: string;
  /**
   * `BUDGET,RECENT`: every request keeps at most BUDGET tokens' K/V under H2O heavy-hitter eviction (its last RECENT
   * tokens and the blocks that received the most attention) and may run past the context (CPU backend unless `backend` is `webgpu`; not with a saved engine).
   */
  kvH2o?: string;
  /** The name clients use for a single `--model`/`--engine` (default: its file name). */
  servedModelName?: string;
}

/** A running server. */
export interface RunningServer {
  /** Its base URL (`http://host:port`). */
  readonly url: string;
  /** The HTTP server. */
  readonly server: Server;
  /** The models. */
  readonly models: ModelProvider;
  /** Stops listening, cancels every request and frees the models. */
  close(): Promise<void>;
}

/** Loads one model (file, folder or engine) behind a serving session. */
export async function loadServedModel(id: string, path: string, o: ServeCommandOptions, engineFolder: boolean): Promise<ServedModel> {
  let executor: BatchExecutor;
  let tokenizer: TextTokenizer | undefined;
  const chat = ChatTemplate.find(path, o.tokenizer);
  const kvH2o = kvH2oFlag(o.kvH2o);
  if (kvH2o) refuseKvH2o(o);
  // a saved engine is served with one engine session per sequence, which cannot evict blocks
  if (kvH2o && engineFolder) throw new UsageError('--kv-h2o does not go with a saved engine (served one session per sequence): pass the model file, with --backend webgpu for the GPU');
  if (engineFolder) {
    const engine = await Engine.load(path);
    const lm = engine.manifest.lm;
    if (!lm) throw new InputError(`the engine ${path} is not a causal LM`);
    const tokPath = o.tokenizer ?? (existsSync(join(path, 'tokenizer.bin')) ? join(path, 'tokenizer.bin') : undefined);
    tokenizer = tokPath ? await loadTokenizer(tokPath, { vocabSize: lm.vocabSize, bosId: lm.bosId, eosIds: lm.stopTokens }) : undefined;
    executor = await EngineSessionExecutor.create(engine, { sessions: o.engineSessions, numBlocks: o.kvBlocks });
  } else {
    const opened = await openModel(path, o.tokenizer, { maxContext: o.maxContext });
    const model = o.kvCalib ? await keyOffsetModel(opened.model, opened.tokenizer, o.kvCalib) : opened.model;
    tokenizer = opened.tokenizer;
    // H2O runs on the CPU reference unless --backend webgpu asks for the GPU
    const backend = kvH2o && o.backend !== 'webgpu' ? 'cpu' : await pickBackend(o.backend, { model, kvDtype: o.kvDtype });
    if (backend === 'cpu') {
      const graph = runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile, options: { kvCache: o.kvDtype } }).graph;
      const blockSize = o.kvBlockSize ?? 16;
      executor = new CpuPagedExecutor(graph, { numBlocks: o.kvBlocks ?? 8 * Math.ceil(model.maxPositions / blockSize), blockSize, maxPositions: model.maxPositions, stopTokens: model.stopTokens });
    } else {
      const handle = await requestGPUDevice();
      try {
        // batch-invariant kernels: a request's tokens do not depend on what else the step runs
        // (the timing cache's picks for this device when it has them, or timed now with --tune: what a batched step runs)
        const { engine } = await compileWithTimingCache(model, { prefillChunk: 64, batchInvariant: true, kv: { dtype: o.kvDtype }, onProgress: log }, handle, o, log);
        const session = await engine.createSession({ device: handle, kvBlocks: o.kvBlocks });
        executor = new BatchedEngineExecutor(session, { maxPositions: model.maxPositions, vocabSize: model.config.vocabSize, stopTokens: model.stopTokens }, async () => {
          await session.destroy();
          await handle.destroy();
        });
      } catch (e) {
        await handle.destroy();
        throw e;
      }
    }
  }
  const kvWindow = kvWindowFlag(o.kvWindow);
  if (kvWindow && o.kvCalib) throw new UsageError('--kv-window does not go with --kv-calib: centered keys do not rotate with their offsets');
  const session = new ServingSession(executor, { tokenizer, maxBatchTokens: o.maxBatchTokens, maxWaiting: o.maxWaiting ?? 256, preemption: o.preemption, kvWindow, kvEviction: kvH2o });
  log(`serve: model '${id}' ready (${engineFolder ? 'engine, webgpu' : 'model file'}; context ${executor.maxPositions}, KV ${executor.kv.numBlocks} blocks of ${executor.kv.blockSize}, ${session.scheduler.maxSequences === Infinity ? 'sequences bounded by the pool' : `at most ${session.scheduler.maxSequences} sequences at once`}, preemption by ${session.scheduler.swapping ? 'swap' : 'recompute'}; chat template: ${chat.origin})`);
  return { id, session, tokenizer, chat, maxPositions: executor.maxPositions, vocabSize: executor.vocabSize, memoryBytes: executor.memoryBytes, slidingWindow: kvWindow !== undefined || kvH2o !== undefined };
}

/** The one model of `--model` or `--engine`. */
class SingleModel implements ModelProvider {
  constructor(private readonly model: ServedModel) {}
  ids(): readonly string[] {
    return [this.model.id];
  }
  async get(id: string): Promise<ServedModel | undefined> {
    return id === this.model.id ? this.model : undefined;
  }
  loaded(): readonly ServedModel[] {
    return [this.model];
  }
  async close(): Promise<void> {
    await this.model.session.close();
  }
}

/** On-disk bytes of a model file or folder: what loading it is expected to hold, before it is loaded. */
function diskBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((a, name) => a + diskBytes(join(path, name)), 0);
}

const MiB = 1024 * 1024;
/** How long a model waits for busy models to go idle and make room under `--memory-budget`. */
const MEMORY_WAIT_MS = 30_000;

/**
 * The models of a `--models` folder, loaded on first use. Idle ones are unloaded, least recently used first, past
 * `--max-loaded-models` or to keep the loaded models' memory within `--memory-budget` (a model about to load counts
 * its size on disk until it reports what it holds).
 */
class ModelFolder implements ModelProvider {
  private readonly entries = new Map<string, { path: string; engine: boolean }>();
  private readonly live = new Map<string, Promise<ServedModel>>();
  private readonly ready = new Map<string, ServedModel>();
  /** Bytes each live model holds, or is expected to hold while it loads. */
  private readonly bytes = new Map<string, number>();
  constructor(
    dir: string,
    private readonly o: ServeCommandOptions,
  ) {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const isDir = statSync(path).isDirectory();
      if (isDir && existsSync(join(path, 'engine.json'))) this.entries.set(name, { path, engine: true });
      else if (isDir && existsSync(join(path, 'config.json'))) this.entries.set(name, { path, engine: false });
      else if (!isDir && ['.bin', '.gguf', '.onnx'].includes(extname(name)) && !/^tok(enizer|\d+)/.test(name)) this.entries.set(basename(name, extname(name)), { path, engine: false });
    }
    if (this.entries.size === 0) throw new InputError(`--models ${dir} holds no models (model files, Hugging Face folders or engine folders)`);
  }
  ids(): readonly string[] {
    return [...this.entries.keys()];
  }
  get(id: string): Promise<ServedModel | undefined> {
    const e = this.entries.get(id);
    if (!e) return Promise.resolve(undefined);
    let p = this.live.get(id);
    if (p) {
      // most recently used last
      this.live.delete(id);
      this.live.set(id, p);
      return p;
    }
    p = this.load(id, e);
    p.catch(() => {
      this.live.delete(id);
      this.bytes.delete(id);
    });
    this.live.set(id, p);
    return p;
  }
  private async load(id: string, e: { path: string; engine: boolean }): Promise<ServedModel> {
    const budget = this.o.memoryBudget;
    if (budget !== undefined) {
      const expected = diskBytes(e.path);
      if (expected > budget * MiB) throw new InputError(`the model '${id}' is ${(expected / MiB).toFixed(1)} MiB on disk, more than the --memory-budget of ${budget} MiB`);
      this.bytes.set(id, expected);
      // unload idle models; while the others are busy, wait (a bounded time) for one to finish, then try again
      const until = Date.now() + MEMORY_WAIT_MS;
      for (;;) {
        await this.unloadIdle(id);
        if (this.heldBytes() <= budget * MiB || Date.now() >= until) break;
        // busy models finishing, or models still loading (which may then be evicted when idle)
        const busy = [...this.ready.entries()].filter(([other, m]) => other !== id && !m.session.scheduler.idle).map(([, m]) => m.session.idle());
        const loading = [...this.live.entries()].filter(([other]) => other !== id && !this.ready.has(other)).map(([, p]) => p.then(() => undefined, () => undefined));
        if (busy.length + loading.length === 0) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([...busy, ...loading, new Promise((r) => (timer = setTimeout(r, Math.max(0, until - Date.now()))))]);
        clearTimeout(timer);
        await new Promise((r) => setImmediate(r));
      }
      if (this.heldBytes() > budget * MiB)
        throw new OverloadedError(`loading the model '${id}' (${(expected / MiB).toFixed(1)} MiB) would pass the --memory-budget of ${budget} MiB, and the loaded models stayed busy for ${MEMORY_WAIT_MS / 1000} s; retry later`);
    }
    const m = await loadServedModel(id, e.path, this.o, e.engine);
    if (budget !== undefined && m.memoryBytes !== undefined) {
      if (m.memoryBytes > budget * MiB) {
        await m.session.close();
        throw new InputError(`the model '${id}' holds ${(m.memoryBytes / MiB).toFixed(1)} MiB loaded, more than the --memory-budget of ${budget} MiB`);
      }
      this.bytes.set(id, m.memoryBytes);
    }
    this.ready.set(id, m);
    await this.unloadIdle(id);
    return m;
  }
  /** Bytes the live models hold (or are expected to). */
  heldBytes(): number {
    return [...this.live.keys()].reduce((a, id) => a + (this.bytes.get(id) ?? 0), 0);
  }
  loaded(): readonly ServedModel[] {
    return [...this.ready.values()];
  }
  /** Unloads idle models other than `keep`, least recently used first, while past the count limit or the budget. */
  private async unloadIdle(keep: string): Promise<void> {
    const limit = this.o.maxLoadedModels ?? 2;
    const budget = this.o.memoryBudget === undefined ? Infinity : this.o.memoryBudget * MiB;
    for (const id of [...this.live.keys()]) {
      if (this.live.size <= limit && this.heldBytes() <= budget) return;
      if (id === keep) continue;
      const m = this.ready.get(id);
      if (!m || !m.session.scheduler.idle) continue;
      const why = this.live.size > limit ? `more than ${limit} loaded` : `${(this.heldBytes() / MiB).toFixed(1)} MiB held, over the memory budget of ${this.o.memoryBudget} MiB`;
      this.live.delete(id);
      this.ready.delete(id);
      this.bytes.delete(id);
      log(`serve: unloading model '${id}' (${why})`);
      await m.session.close();
    }
  }
  async close(): Promise<void> {
    for (const m of this.ready.values()) await m.session.close();
  }
}

/** Checks the options, loads the model(s) and starts listening. */
export async function startServer(o: ServeCommandOptions): Promise<RunningServer> {
  if ([o.model, o.engine, o.models].filter((x) => x !== undefined).length !== 1) throw new UsageError('give exactly one of --model <file>, --engine <dir> and --models <dir>');
  if (!['cpu', 'webgpu', 'auto'].includes(o.backend)) throw new UsageError(`--backend must be cpu, webgpu or auto, got ${o.backend}`);
  if (o.engine && o.backend === 'cpu') throw new UsageError('a saved engine runs on WebGPU; use --model for the CPU backend');
  if (o.tune && (o.engine || o.backend === 'cpu'))
    throw new UsageError(o.engine ? `--tune compiles a model file; the saved engine ${o.engine} keeps the kernels it was compiled with (tune those with compile --tune)` : '--tune times WebGPU kernels; the CPU backend has none');
  if (o.model) requireFileOrFolder('--model', o.model);
  if (o.engine) requireEngineFolder('--engine', o.engine);
  if (o.models) requireFolder('--models', o.models);
  if (o.tokenizer) requireFile('--tokenizer', o.tokenizer);
  let models: SingleModel | ModelFolder;
  if (o.models) models = new ModelFolder(o.models, o);
  else {
    const path = (o.model ?? o.engine)!;
    const id = o.servedModelName ?? basename(path, extname(path));
    models = new SingleModel(await loadServedModel(id, path, o, o.engine !== undefined));
  }
  const server = createOpenAiServer(models);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.host ?? '127.0.0.1', () => resolve());
    });
  } catch (e) {
    await models.close();
    throw new InputError(`cannot listen on ${o.host ?? '127.0.0.1'}:${o.port}: ${(e as Error).message}`);
  }
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  return {
    url,
    server,
    models,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await models.close();
    },
  };
}

/** Runs `tensorwright serve` until SIGINT or SIGTERM. */
export async function serveCommand(o: ServeCommandOptions): Promise<void> {
  const running = await startServer(o);
  log(`serve: listening on ${running.url} (/v1/completions, /v1/chat/completions, /v1/models, /metrics, /health)`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  log('serve: shutting down');
  await running.close();
}
