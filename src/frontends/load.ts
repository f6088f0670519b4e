/**
 * `loadModel(path)`: reads a model file, detects its format from the content (not the extension), and returns a
 * {@link LoadedModel} that can build the IR graph. Formats: llama2.c v0 checkpoints (more arrive with the ONNX,
 * safetensors and GGUF importers).
 * @module
 */
import { open, readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { InputError, ModelFormatError, UsageError } from '../errors.js';
import type { Graph } from '../ir/graph.js';
import { buildLlama, type LlamaBuildOptions, type LlamaConfig } from '../models/llama.js';
import { looksLikeLlama2cCheckpoint, parseLlama2cCheckpoint } from './llama2c/checkpoint.js';
import { llama2cToLlama } from './llama2c/model.js';
import type { Gpt2Config } from '../models/gpt2.js';
import { looksLikeGguf } from './gguf/reader.js';
import { loadGgufModel } from './gguf/model.js';
import { looksLikeSafetensors } from './safetensors/reader.js';
import { loadHfModel } from './hf/model.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { looksLikeOnnx } from './onnx/index.js';
import { contextCap, type LoadModelOptions } from './context.js';

/** A loaded causal language model, ready to be turned into a graph. */
export interface LoadedModel {
  /** Detected file format. */
  readonly format: 'llama2c' | 'safetensors' | 'gguf' | 'onnx';
  /** Model family. */
  readonly family: 'llama' | 'gpt2';
  /** File it came from. */
  readonly path: string;
  /** The model's hyper-parameters. */
  readonly config: LlamaConfig | Gpt2Config;
  /** The model's own tokenizer (a Hugging Face folder's tokenizer.json, a GGUF file's `tokenizer.ggml.*`). */
  readonly tokenizer?: TextTokenizer;
  /** Parameter count. */
  readonly parameters: number;
  /** Bytes of weights as stored. */
  readonly weightBytes: number;
  /** Longest sequence the model is compiled for: the file's declared context, capped by `maxContext` (see {@link LoadModelOptions}). */
  readonly maxPositions: number;
  /** The context length the file declares, when it may exceed {@link LoadedModel.maxPositions} (models built in code leave it out). */
  readonly declaredContext?: number;
  /** Begin-of-sequence token id. */
  readonly bosId: number;
  /** Tokens that end generation. */
  readonly stopTokens: readonly number[];
  /** Builds the IR graph (with KV-cache inputs/outputs). */
  build(opts?: LlamaBuildOptions): Graph;
}

/** Detects a model file's format from its first bytes and size; `undefined` when unknown. */
export function detectFormat(bytes: Uint8Array): LoadedModel['format'] | undefined {
  if (looksLikeGguf(bytes)) return 'gguf';
  if (looksLikeSafetensors(bytes)) return 'safetensors';
  if (looksLikeOnnx(bytes)) return 'onnx';
  if (looksLikeLlama2cCheckpoint(bytes)) return 'llama2c';
  return undefined;
}

/**
 * Loads a model file. Throws {@link ModelFormatError} (naming the field and byte offset) for malformed files. The
 * context the model is compiled for is the file's, capped by `opts.maxContext` (default 8192), never taken blindly.
 */
export async function loadModel(path: string, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  const maxContext = contextCap(opts);
  const st = await stat(path).catch(() => undefined);
  if (st?.isDirectory()) return loadHfModel(path, { maxContext });
  if (!st || !st.isFile()) throw new InputError(`model file ${path} does not exist or is not a file`);
  // look at the first bytes before reading everything (multi-GB GGUF files are read tensor by tensor)
  const fh = await open(path, 'r');
  const head = new Uint8Array(Math.min(st.size, 64));
  await fh.read(head, 0, head.length, 0);
  await fh.close();
  if (looksLikeGguf(head)) return loadGgufModel(path, { maxContext });
  if (looksLikeSafetensors(head)) return loadHfModel(path, { maxContext });
  if (looksLikeOnnx(head)) throw new UsageError(`${path} is an ONNX graph, not a causal-LM checkpoint: import it with readOnnx(path) (or run it with \`tensorwright onnx-test\`)`);
  const bytes = new Uint8Array(await readFile(path));
  const format = detectFormat(bytes);
  if (format !== 'llama2c') {
    // the llama2.c parser gives the most precise complaint for something that was meant to be one
    if (bytes.length >= 28 && path.endsWith('.bin')) parseLlama2cCheckpoint(bytes, path);
    throw new ModelFormatError('magic', 0, 'unrecognised model format (supported: llama2.c v0 checkpoint, GGUF, safetensors with config.json, a Hugging Face model folder)', path);
  }
  const ck = parseLlama2cCheckpoint(bytes, path);
  const { config, weights } = llama2cToLlama(ck);
  const declaredContext = config.seqLen;
  config.seqLen = Math.min(declaredContext, maxContext);
  const c = config;
  const kvDim = (c.dim / c.nHeads) * c.nKvHeads;
  const parameters =
    c.vocabSize * c.dim + c.nLayers * (2 * c.dim + 2 * c.dim * c.dim + 2 * kvDim * c.dim + 3 * c.hiddenDim * c.dim) + c.dim + (c.sharedClassifier ? 0 : c.vocabSize * c.dim);
  return {
    format,
    family: 'llama',
    path,
    config,
    parameters,
    weightBytes: parameters * 4,
    maxPositions: c.seqLen,
    declaredContext,
    bosId: 1,
    stopTokens: [1],
    build: (opts) => buildLlama(config, weights, opts),
  };
}

/** The tokenizer file to use for a model when none is given: `tokenizer.bin` or `tok<vocab>.bin` beside it. */
export function findTokenizerFor(modelPath: string, vocabSize: number): string | undefined {
  const dir = dirname(modelPath);
  for (const name of [`tok${vocabSize}.bin`, 'tokenizer.bin']) {
    const p = join(dir, name);
    if (existsSync(p) && basename(p) !== basename(modelPath)) return p;
  }
  return undefined;
}
