/**
 * The context length a loaded model is compiled for: what the file declares (GGUF `context_length`, Hugging Face
 * `max_position_embeddings`/`n_positions`, the llama2.c header's `seq_len`), capped by what the user allows. A file
 * can claim any context (2^31 fits in a few bytes), and the RoPE tables and the KV cache are sized by it, so it is
 * never taken blindly: the cap is {@link LoadModelOptions.maxContext}, {@link DEFAULT_MAX_CONTEXT} by default.
 * @module
 */
import { UsageError } from '../errors.js';

/** The context cap when the user sets none: 8192 positions (a 7B Llama's f32 KV cache for it is 4 GiB). */
export const DEFAULT_MAX_CONTEXT = 8192;

/** The largest cap a user may ask for (2^24 positions). */
export const MAX_CONTEXT_LIMIT = 1 << 24;

/** Options of `loadModel` that bound what a file may make us allocate. */
export interface LoadModelOptions {
  /**
   * Most positions (prompt plus generated tokens) the model is compiled for; a file declaring more is capped to it
   * (`LoadedModel.declaredContext` keeps the file's figure). Default {@link DEFAULT_MAX_CONTEXT}.
   */
  maxContext?: number;
}

/** The checked cap of `opts`; throws {@link UsageError} naming `maxContext` when it is not an integer in [1, 2^24]. */
export function contextCap(opts: LoadModelOptions = {}): number {
  const cap = opts.maxContext ?? DEFAULT_MAX_CONTEXT;
  if (!Number.isInteger(cap) || cap < 1 || cap > MAX_CONTEXT_LIMIT) throw new UsageError(`maxContext must be an integer in [1, ${MAX_CONTEXT_LIMIT}], got ${cap}`);
  return cap;
}
