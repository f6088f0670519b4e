/**
 * The tokenizer interface text generation uses; the llama2.c, Hugging Face and GGUF tokenizers all implement it.
 * @module
 */

/** What generation needs of a tokenizer. */
export interface TextTokenizer {
  /** Token ids of a prompt, with the model's BOS first when it uses one. */
  encode(text: string): number[];
  /** Text of a sequence of ids. */
  decode(ids: readonly number[]): string;
  /** Text that `token` adds after `prev` (for streaming output). */
  decodePiece(prev: number, token: number): string;
}
