/**
 * A llama2.c checkpoint rewritten as a GGUF file (architecture `llama`, F32 or Q4_0), so that our engine and
 * llama.cpp run the very same file in the LLM benchmark. It uses the tests' GGUF writer and llama.cpp's reference
 * Q4_0 quantizer (`test/support/write-gguf.ts`).
 *
 * - Tensors are named as llama.cpp names them (`token_embd`, `blk.N.attn_q`, …, `output_norm`; `output` only when
 *   the classifier is not shared). llama2.c's matrices are row-major `[out, in]`, which is ggml's `[in, out]`: the
 *   bytes are the same, only the dims are reversed. The weights stay in Meta's interleaved-rope layout, which is what
 *   llama.cpp's `llama` architecture rotates (as its own llama2.c converter leaves them).
 * - Q4_0 quantizes every matrix, the embedding included (`llama-quantize --pure`); the norms stay F32.
 * - The vocabulary is a placeholder SentencePiece one of the checkpoint's size (`<unk>`, `<s>`, `</s>`, the 256 byte
 *   tokens llama.cpp looks up, then `▁t<i>`): the benchmark feeds token ids, not text.
 * @module
 */
import { closeSync, openSync, readFileSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { parseLlama2cCheckpoint } from '../src/frontends/llama2c/index.js';
import { f32Bytes, G, ggufBytes, kv, quantizeQ4_0, T, type GgufTensor, type Kv } from '../test/support/write-gguf.js';

/** The GGUF tensor types the benchmark writes. */
export type BenchGgufType = 'F32' | 'Q4_0';

/** Writes `checkpoint` (a llama2.c `.bin`) as a GGUF file at `out`, its matrices in `type`; returns `out`. */
export function writeLlama2cAsGguf(checkpoint: string, out: string, type: BenchGgufType): string {
  const bytes = readFileSync(checkpoint);
  const { config: c, weights: w } = parseLlama2cCheckpoint(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), checkpoint);
  if (c.vocabSize < 259) throw new Error(`${checkpoint}: the placeholder vocabulary needs at least 259 tokens, the checkpoint has ${c.vocabSize}`);
  const tensors: GgufTensor[] = [];
  const matrix = (name: string, data: Float32Array, rows: number, cols: number): void => {
    const q = type === 'Q4_0' && cols % 32 === 0;
    tensors.push({ name, dims: [cols, rows], type: q ? G.Q4_0 : G.F32, data: q ? quantizeQ4_0(data) : f32Bytes(data) });
  };
  const vector = (name: string, data: Float32Array): void => {
    tensors.push({ name, dims: [data.length], type: G.F32, data: f32Bytes(data) });
  };
  matrix('token_embd.weight', w.tokenEmbedding, c.vocabSize, c.dim);
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    vector(`${p}attn_norm.weight`, w.rmsAtt[l]);
    matrix(`${p}attn_q.weight`, w.wq[l], c.dim, c.dim);
    matrix(`${p}attn_k.weight`, w.wk[l], c.kvDim, c.dim);
    matrix(`${p}attn_v.weight`, w.wv[l], c.kvDim, c.dim);
    matrix(`${p}attn_output.weight`, w.wo[l], c.dim, c.dim);
    vector(`${p}ffn_norm.weight`, w.rmsFfn[l]);
    matrix(`${p}ffn_gate.weight`, w.w1[l], c.hiddenDim, c.dim);
    matrix(`${p}ffn_down.weight`, w.w2[l], c.dim, c.hiddenDim);
    matrix(`${p}ffn_up.weight`, w.w3[l], c.hiddenDim, c.dim);
  }
  vector('output_norm.weight', w.rmsFinal);
  if (!c.sharedClassifier) matrix('output.weight', w.wcls, c.vocabSize, c.dim);
  const tokens = Array.from({ length: c.vocabSize }, (_v, i) =>
    i === 0 ? '<unk>' : i === 1 ? '<s>' : i === 2 ? '</s>' : i < 259 ? `<0x${(i - 3).toString(16).toUpperCase().padStart(2, '0')}>` : `▁t${i}`,
  );
  const a = 'llama';
  const meta: Kv[] = [
    kv.str('general.architecture', a),
    kv.str('general.name', `llama2.c ${c.dim}x${c.nLayers} (tensorwright bench)`),
    kv.u32('general.file_type', type === 'Q4_0' ? 2 : 0),
    kv.u32(`${a}.context_length`, c.seqLen),
    kv.u32(`${a}.embedding_length`, c.dim),
    kv.u32(`${a}.block_count`, c.nLayers),
    kv.u32(`${a}.feed_forward_length`, c.hiddenDim),
    kv.u32(`${a}.rope.dimension_count`, c.headSize),
    kv.u32(`${a}.attention.head_count`, c.nHeads),
    kv.u32(`${a}.attention.head_count_kv`, c.nKvHeads),
    kv.f32(`${a}.attention.layer_norm_rms_epsilon`, 1e-5),
    kv.f32(`${a}.rope.freq_base`, 10000),
    kv.str('tokenizer.ggml.model', 'llama'),
    kv.strs('tokenizer.ggml.tokens', tokens),
    { key: 'tokenizer.ggml.scores', type: T.ARRAY, arrayType: T.FLOAT32, value: tokens.map((_t, i) => (i < 259 ? 0 : -i)) },
    // 2 unknown, 3 control, 6 byte, 1 normal (llama.cpp's llama_token_type)
    { key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: tokens.map((_t, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1)) },
    kv.u32('tokenizer.ggml.bos_token_id', 1),
    kv.u32('tokenizer.ggml.eos_token_id', 2),
    kv.u32('tokenizer.ggml.unknown_token_id', 0),
  ];
  const tmp = `${out}.tmp-${process.pid}`;
  writeFileSync(tmp, ggufBytes(meta, tensors));
  renameSync(tmp, out);
  return out;
}

/**
 * `out`, rewritten from `checkpoint` by {@link writeLlama2cAsGguf} unless it is already there and newer than the
 * checkpoint.
 */
export function llama2cGguf(checkpoint: string, out: string, type: BenchGgufType): string {
  try {
    if (statSync(out).mtimeMs >= statSync(checkpoint).mtimeMs) return out;
  } catch {
    // not written yet
  }
  return writeLlama2cAsGguf(checkpoint, out, type);
}

/** The vocabulary size in a llama2.c checkpoint's header (its sixth int32, negative for an unshared classifier). */
export function llama2cVocabSize(checkpoint: string): number {
  const fd = openSync(checkpoint, 'r');
  try {
    const head = new Int32Array(7);
    readSync(fd, head, 0, 28, 0);
    return Math.abs(head[5]);
  } finally {
    closeSync(fd);
  }
}
