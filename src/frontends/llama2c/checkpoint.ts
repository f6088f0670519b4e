/**
 * Reader for llama2.c legacy ("version 0") checkpoints, as loaded by llama2.c's `run.c`: a 28-byte header of seven
 * little-endian int32s followed by float32 tensors back to back. Produces plain `Float32Array`s (views into the
 * file's bytes where alignment allows), with no dependency on the IR.
 * @module
 */

import { ModelFormatError } from '../../errors.js';

/** Hyperparameters of a llama2.c model, from the checkpoint header. */
export interface Llama2cConfig {
  /** Model (residual stream) width. */
  dim: number;
  /** FFN hidden width. */
  hiddenDim: number;
  /** Number of transformer layers. */
  nLayers: number;
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads (fewer than `nHeads` for grouped-query attention). */
  nKvHeads: number;
  /** Vocabulary size (the absolute value of the header field). */
  vocabSize: number;
  /** Maximum sequence length. */
  seqLen: number;
  /** Whether the classifier shares the token-embedding matrix (header `vocab_size` > 0). */
  sharedClassifier: boolean;
  /** `dim / nHeads`. */
  headSize: number;
  /** `dim * nKvHeads / nHeads`: the width of the key and value projections. */
  kvDim: number;
}

/** The weights of a llama2.c model; matrices are row-major `[out, in]` (run.c computes `out[i] = Σ_j W[i*in+j] x[j]`). */
export interface Llama2cWeights {
  /** Token embedding `[vocabSize, dim]`. */
  tokenEmbedding: Float32Array;
  /** Per layer: attention RMSNorm weight `[dim]`. */
  rmsAtt: Float32Array[];
  /** Per layer: query projection `[dim, dim]`. */
  wq: Float32Array[];
  /** Per layer: key projection `[kvDim, dim]`. */
  wk: Float32Array[];
  /** Per layer: value projection `[kvDim, dim]`. */
  wv: Float32Array[];
  /** Per layer: attention output projection `[dim, dim]`. */
  wo: Float32Array[];
  /** Per layer: FFN RMSNorm weight `[dim]`. */
  rmsFfn: Float32Array[];
  /** Per layer: FFN gate projection `[hiddenDim, dim]`. */
  w1: Float32Array[];
  /** Per layer: FFN down projection `[dim, hiddenDim]`. */
  w2: Float32Array[];
  /** Per layer: FFN up projection `[hiddenDim, dim]`. */
  w3: Float32Array[];
  /** Final RMSNorm weight `[dim]`. */
  rmsFinal: Float32Array;
  /** Classifier `[vocabSize, dim]`; the very same array as `tokenEmbedding` when the classifier is shared. */
  wcls: Float32Array;
}

/** A parsed llama2.c checkpoint. */
export interface Llama2cCheckpoint {
  /** Hyperparameters from the header. */
  config: Llama2cConfig;
  /** The weight tensors. */
  weights: Llama2cWeights;
}

/**
 * Size of the checkpoint header in bytes.
 * @internal
 */
export const LLAMA2C_HEADER_BYTES = 28;

const HEADER_FIELDS = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'] as const;

interface RawHeader {
  dim: number;
  hidden_dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  vocab_size: number;
  seq_len: number;
}

/** One tensor of the body, in file order; `perLayer` tensors are stacked `[nLayers, ...]`. */
interface Section {
  name: string;
  /** Elements per layer (or in total when not per layer). */
  count: number;
  perLayer: boolean;
}

function readHeader(bytes: Uint8Array, file: string | undefined): RawHeader {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] = HEADER_FIELDS.map((field, i) => {
    const off = 4 * i;
    if (off + 4 > bytes.byteLength) {
      throw new ModelFormatError(
        `header.${field}`,
        off,
        `file is ${bytes.byteLength} bytes, shorter than the ${LLAMA2C_HEADER_BYTES}-byte llama2.c header`,
        file,
      );
    }
    return dv.getInt32(off, true);
  });
  return { dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len };
}

/** Validates the header and derives the config; throws a ModelFormatError naming the bad field. */
function validateHeader(h: RawHeader, file: string | undefined): Llama2cConfig {
  const off = (f: (typeof HEADER_FIELDS)[number]): number => 4 * HEADER_FIELDS.indexOf(f);
  for (const f of HEADER_FIELDS) {
    if (f === 'vocab_size') {
      if (h.vocab_size === 0) throw new ModelFormatError(`header.${f}`, off(f), 'vocab_size is 0', file);
    } else if (h[f] <= 0) {
      throw new ModelFormatError(`header.${f}`, off(f), `${f} must be positive, got ${h[f]}`, file);
    }
  }
  if (h.dim % h.n_heads !== 0) {
    throw new ModelFormatError('header.n_heads', off('n_heads'), `dim ${h.dim} is not divisible by n_heads ${h.n_heads}`, file);
  }
  if (h.n_heads % h.n_kv_heads !== 0) {
    throw new ModelFormatError(
      'header.n_kv_heads',
      off('n_kv_heads'),
      `n_heads ${h.n_heads} is not divisible by n_kv_heads ${h.n_kv_heads}`,
      file,
    );
  }
  // dim * n_kv_heads can reach 2^62, past exact Number arithmetic: test the remainder with BigInt.
  if ((BigInt(h.dim) * BigInt(h.n_kv_heads)) % BigInt(h.n_heads) !== 0n) {
    throw new ModelFormatError(
      'header.n_kv_heads',
      off('n_kv_heads'),
      `dim * n_kv_heads (${h.dim} * ${h.n_kv_heads}) is not divisible by n_heads ${h.n_heads}`,
      file,
    );
  }
  const headSize = h.dim / h.n_heads;
  return {
    dim: h.dim,
    hiddenDim: h.hidden_dim,
    nLayers: h.n_layers,
    nHeads: h.n_heads,
    nKvHeads: h.n_kv_heads,
    vocabSize: Math.abs(h.vocab_size),
    seqLen: h.seq_len,
    sharedClassifier: h.vocab_size > 0,
    headSize,
    kvDim: (h.dim * h.n_kv_heads) / h.n_heads,
  };
}

/** The body's tensors in file order (as run.c's `memory_map_weights`). */
function sections(c: Llama2cConfig): Section[] {
  const s: Section[] = [
    { name: 'token_embedding_table', count: c.vocabSize * c.dim, perLayer: false },
    { name: 'rms_att_weight', count: c.dim, perLayer: true },
    { name: 'wq', count: c.dim * c.dim, perLayer: true },
    { name: 'wk', count: c.kvDim * c.dim, perLayer: true },
    { name: 'wv', count: c.kvDim * c.dim, perLayer: true },
    { name: 'wo', count: c.dim * c.dim, perLayer: true },
    { name: 'rms_ffn_weight', count: c.dim, perLayer: true },
    { name: 'w1', count: c.hiddenDim * c.dim, perLayer: true },
    { name: 'w2', count: c.dim * c.hiddenDim, perLayer: true },
    { name: 'w3', count: c.hiddenDim * c.dim, perLayer: true },
    { name: 'rms_final_weight', count: c.dim, perLayer: false },
    // Legacy RoPE tables, skipped by run.c: seq_len * head_size / 2 floats each (C integer division).
    { name: 'freq_cis_real', count: Math.floor((c.seqLen * c.headSize) / 2), perLayer: false },
    { name: 'freq_cis_imag', count: Math.floor((c.seqLen * c.headSize) / 2), perLayer: false },
  ];
  if (!c.sharedClassifier) s.push({ name: 'wcls', count: c.vocabSize * c.dim, perLayer: false });
  return s;
}

/** Expected file size in bytes (a Number: may exceed 2^53 for absurd headers, which is still far above any file). */
function expectedBytes(c: Llama2cConfig): number {
  let floats = 0;
  for (const s of sections(c)) floats += s.perLayer ? s.count * c.nLayers : s.count;
  return LLAMA2C_HEADER_BYTES + 4 * floats;
}

/**
 * Finds the first tensor (per layer for stacked tensors) that does not fit in `length` bytes.
 * @returns its name (e.g. `wq[3]`) and byte offset, or null if everything fits.
 */
function firstMissing(c: Llama2cConfig, length: number): { name: string; offset: number; bytes: number } | null {
  let off = LLAMA2C_HEADER_BYTES;
  for (const s of sections(c)) {
    const layers = s.perLayer ? c.nLayers : 1;
    const bytes = 4 * s.count;
    if (off + bytes * layers <= length) {
      off += bytes * layers;
      continue;
    }
    const l = Math.max(0, Math.floor((length - off) / bytes));
    return { name: s.perLayer ? `${s.name}[${l}]` : s.name, offset: off + l * bytes, bytes };
  }
  return null;
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Parses a llama2.c version-0 checkpoint.
 *
 * Validates the header (positive sizes, `dim % n_heads`, `n_heads % n_kv_heads`, `dim * n_kv_heads % n_heads`) and
 * that the file is exactly as long as the header implies (legacy RoPE tables and, when `vocab_size < 0`, the
 * separate classifier included) before allocating anything. The returned arrays are views into `bytes` when its
 * byte offset is 4-aligned (on little-endian hosts); otherwise the body is copied once.
 * @param bytes - The whole file.
 * @param file - File name for error messages.
 * @throws `ModelFormatError` naming the header field or tensor and its byte offset.
 */
export function parseLlama2cCheckpoint(bytes: Uint8Array, file?: string): Llama2cCheckpoint {
  const header = readHeader(bytes, file);
  const config = validateHeader(header, file);
  const expected = expectedBytes(config);
  const actual = bytes.byteLength;
  if (actual < expected) {
    const miss = firstMissing(config, actual);
    // miss is non-null whenever actual < expected.
    const m = miss ?? { name: 'body', offset: LLAMA2C_HEADER_BYTES, bytes: 0 };
    throw new ModelFormatError(
      m.name,
      m.offset,
      `file is ${actual} bytes but the header implies ${expected} bytes; tensor ${m.name} (${m.bytes} bytes at offset ${m.offset}) does not fit`,
      file,
    );
  }
  if (actual > expected) {
    let hint = '';
    if (config.sharedClassifier && actual - expected === 4 * config.vocabSize * config.dim) {
      hint = ' (exactly the size of a separate [vocab_size, dim] classifier: should header.vocab_size be negative?)';
    }
    throw new ModelFormatError(
      'trailing data',
      expected,
      `file is ${actual} bytes but the header implies ${expected} bytes: ${actual - expected} unexpected trailing bytes after the last tensor${hint}`,
      file,
    );
  }

  // Aligned little-endian float32 storage for the body.
  let buf: ArrayBufferLike;
  let base: number;
  if (littleEndian && bytes.byteOffset % 4 === 0) {
    buf = bytes.buffer;
    base = bytes.byteOffset;
  } else {
    const body = new Float32Array((actual - LLAMA2C_HEADER_BYTES) / 4);
    if (littleEndian) {
      new Uint8Array(body.buffer).set(bytes.subarray(LLAMA2C_HEADER_BYTES));
    } else {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let i = 0; i < body.length; i++) body[i] = dv.getFloat32(LLAMA2C_HEADER_BYTES + 4 * i, true);
    }
    buf = body.buffer;
    base = -LLAMA2C_HEADER_BYTES;
  }
  let off = LLAMA2C_HEADER_BYTES;
  const take = (count: number): Float32Array => {
    const a = new Float32Array(buf, base + off, count);
    off += 4 * count;
    return a;
  };
  const c = config;
  const perLayer = (count: number): Float32Array[] => Array.from({ length: c.nLayers }, () => take(count));
  const tokenEmbedding = take(c.vocabSize * c.dim);
  const rmsAtt = perLayer(c.dim);
  const wq = perLayer(c.dim * c.dim);
  const wk = perLayer(c.kvDim * c.dim);
  const wv = perLayer(c.kvDim * c.dim);
  const wo = perLayer(c.dim * c.dim);
  const rmsFfn = perLayer(c.dim);
  const w1 = perLayer(c.hiddenDim * c.dim);
  const w2 = perLayer(c.dim * c.hiddenDim);
  const w3 = perLayer(c.hiddenDim * c.dim);
  const rmsFinal = take(c.dim);
  off += 4 * 2 * Math.floor((c.seqLen * c.headSize) / 2); // legacy RoPE tables
  const wcls = c.sharedClassifier ? tokenEmbedding : take(c.vocabSize * c.dim);
  return { config, weights: { tokenEmbedding, rmsAtt, wq, wk, wv, wo, rmsFfn, w1, w2, w3, rmsFinal, wcls } };
}

/**
 * Reads and parses a llama2.c version-0 checkpoint file.
 * @param path - Path of the `.bin` checkpoint.
 * @throws `ModelFormatError` as {@link parseLlama2cCheckpoint}.
 */
export async function readLlama2cCheckpoint(path: string): Promise<Llama2cCheckpoint> {
  const { readFile } = await import('node:fs/promises');
  const b = await readFile(path);
  return parseLlama2cCheckpoint(new Uint8Array(b.buffer, b.byteOffset, b.byteLength), path);
}

/**
 * Whether `bytes` plausibly is a llama2.c version-0 checkpoint: a valid header and a file size that matches it
 * exactly. Never throws.
 * @param bytes - The whole file.
 * @internal
 */
export function looksLikeLlama2cCheckpoint(bytes: Uint8Array): boolean {
  try {
    const config = validateHeader(readHeader(bytes, undefined), undefined);
    return expectedBytes(config) === bytes.byteLength;
  } catch {
    return false;
  }
}
