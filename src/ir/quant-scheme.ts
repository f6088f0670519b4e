/**
 * Weight quantization schemes as users name them (`--quant int4-g32`, `--quant nf4`), parsed once into a
 * {@link QuantScheme} that the `quantize-weights` pass applies and reports read. Two kinds:
 *
 * **Integers** (round to nearest, {@link IntQuantScheme}): `int{8,4,2}`, then optionally `-g{N}` (groups of N elements
 * along K, N a power of two from 8 to 1024) or `-ch` (one group per output channel), then optionally `-sym` (signed
 * values, no zero point) or `-asym`. The defaults are groups of 32 (llama.cpp's block size) and asymmetric (unsigned
 * values with a per-group zero point, as GPTQ/AWQ checkpoints and Q4_1 store them):
 *
 * | name | bits | group along K | zero point |
 * | --- | --- | --- | --- |
 * | `int8` = `int8-g32` | 8 | 32 | yes |
 * | `int4` = `int4-g32` | 4 | 32 | yes |
 * | `int4-g64`, `int4-g128` | 4 | 64, 128 | yes |
 * | `int2-g32` | 2 | 32 | yes |
 * | `int8-ch-sym` | 8 | one per output channel | no (TensorRT's weight-only INT8) |
 *
 * Why these defaults: on stories260K (64-wide rows), per-channel symmetric int8 agrees with the f32 model's top-1
 * token on 98.6% of `../shared/data/stories260K-eval-public.txt`, groups of 32 with zero points on 99.3%.
 *
 * **Codebooks** ({@link CodebookQuantScheme}, stored as a {@link CodebookEncoding} with one table per tensor; the
 * quantizers are `src/ir/codebook.ts`): a level set's name, then optionally `-g{N}` or `-ch` for the scale groups:
 *
 * | name | index bits | table | scales (default) |
 * | --- | --- | --- | --- |
 * | `nf4` = `nf4-g64`, `nf4-g32`, … | 4 | QLoRA's NormalFloat4 | absmax per group of 64 |
 * | `codebook16`, `codebook256` | 4, 8 | k-means over the values | none (`-g{N}`: absmax per group, k-means over the scaled values) |
 * | `ternary` = `ternary-g64` | 2 | `{-1, 0, 1}` | mean \|w\| of the kept elements per group of 64 (TWN threshold) |
 * | `binary` = `binary-g64` | 1 | `{-1, 1}` | mean \|w\| per group of 64 |
 * | `log2` = `log2-g64` | 4 | `±2^-k`, k = 0 … 7 | absmax per group of 64 |
 * @module
 */
import { InputError } from '../errors.js';
import type { CodebookLevels } from './codebook.js';

/** A round-to-nearest integer weight quantization scheme. */
export interface IntQuantScheme {
  /** Discriminant (absent on schemes built by hand: integers are the default kind). */
  readonly kind?: 'int';
  /** The name it was given by (`int4-g32`). */
  readonly name: string;
  /** Bits per stored value. */
  readonly bits: 8 | 4 | 2;
  /** Elements of one row (along K) sharing a scale, or `'channel'`: one scale per output row. */
  readonly groupSize: number | 'channel';
  /** Whether values are unsigned with a per-group zero point (otherwise symmetric, signed). */
  readonly asymmetric: boolean;
}

/** A codebook (look-up table) weight quantization scheme: one table per tensor, optional per-group scales. */
export interface CodebookQuantScheme {
  /** Discriminant. */
  readonly kind: 'codebook';
  /** The name it was given by (`nf4-g64`). */
  readonly name: string;
  /** The table's levels. */
  readonly levels: CodebookLevels;
  /** Bits per index. */
  readonly indexBits: 1 | 2 | 4 | 8;
  /** Elements of one row (along K) sharing a scale, `'channel'` (one per output row), or absent: no scales. */
  readonly groupSize?: number | 'channel';
}

/** A weight quantization scheme. */
export type QuantScheme = IntQuantScheme | CodebookQuantScheme;

/** Schemes named in help texts (every `int{8,4,2}[-gN|-ch][-sym|-asym]` and `<codebook>[-gN|-ch]` parses). */
export const QUANT_SCHEMES: readonly string[] = ['none', 'int8', 'int4', 'int4-g32', 'int4-g64', 'int4-g128', 'int2-g32', 'int8-ch-sym', 'nf4', 'nf4-g32', 'codebook16', 'codebook256', 'ternary', 'binary', 'log2'];

/** The grammar of scheme names, for error messages and help texts. */
export const QUANT_GRAMMAR = 'int8|int4|int2, then -g<N> or -ch, then -sym or -asym; or nf4|codebook16|codebook256|ternary|binary|log2, then -g<N> or -ch';

/** Group size of an integer scheme name without `-g` or `-ch`. */
export const DEFAULT_QUANT_GROUP = 32;

/** Scale group size of a codebook scheme name without `-g` or `-ch` (k-means codebooks: none). */
export const DEFAULT_CODEBOOK_GROUP = 64;

/** Each codebook name's levels and index bits. */
const CODEBOOKS: Readonly<Record<string, { levels: CodebookLevels; indexBits: 1 | 2 | 4 | 8 }>> = {
  nf4: { levels: 'nf4', indexBits: 4 },
  codebook16: { levels: 'kmeans', indexBits: 4 },
  codebook256: { levels: 'kmeans', indexBits: 8 },
  ternary: { levels: 'ternary', indexBits: 2 },
  binary: { levels: 'binary', indexBits: 1 },
  log2: { levels: 'log2', indexBits: 4 },
};

/**
 * The scheme `spec` names, or `undefined` for `none`.
 * @throws InputError for a name that is no scheme, listing the known ones.
 */
export function parseQuantScheme(spec: string): QuantScheme | undefined {
  const s = spec.trim().toLowerCase();
  if (s === 'none' || s === '') return undefined;
  const bad = (why: string): InputError => new InputError(`--quant '${spec}' ${why}; use ${QUANT_SCHEMES.join(', ')} (${QUANT_GRAMMAR})`);
  const checkGroup = (g: string): number => {
    const n = Number(g);
    if (!(n >= 8 && n <= 1024 && (n & (n - 1)) === 0)) throw bad(`has group size ${g}, not a power of two from 8 to 1024`);
    return n;
  };
  const cb = /^([a-z0-9]+?)(?:-g(\d+)|(-ch))?$/.exec(s);
  const book = cb && Object.hasOwn(CODEBOOKS, cb[1]) ? CODEBOOKS[cb[1]] : undefined;
  if (cb && book) {
    const group = cb[3] ? 'channel' : cb[2] !== undefined ? checkGroup(cb[2]) : book.levels === 'kmeans' ? undefined : DEFAULT_CODEBOOK_GROUP;
    return { kind: 'codebook', name: s, ...book, ...(group !== undefined ? { groupSize: group } : {}) };
  }
  const m = /^int(8|4|2)(?:-g(\d+)|(-ch))?(-sym|-asym)?$/.exec(s);
  if (!m) throw bad('is no quantization scheme');
  const group = m[3] ? 'channel' : m[2] === undefined ? DEFAULT_QUANT_GROUP : checkGroup(m[2]);
  return { name: s, bits: Number(m[1]) as 8 | 4 | 2, groupSize: group, asymmetric: m[4] !== '-sym' };
}
