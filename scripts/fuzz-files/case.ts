/**
 * One fuzz case: case `k` of run seed `S` draws a seed from the corpus and stacks one to three mutations on its files,
 * all from a generator seeded by `(S, k)` alone, so `--seed S --only k` rebuilds exactly the same files.
 * @module
 */
import { readFileSync } from 'node:fs';
import { Rng } from '../../src/util/random.js';
import type { FileKind, Seed } from './corpus.js';
import { engineContainerFields, ggufFields, llama2cFields, llama2cTokenizerFields, onnxFields, safetensorsFields, type Field } from './fields.js';
import { jsonPaths, mutateBytes, mutateField, mutateJson, pickWeighted, serializeJson, type Json, type Mutated } from './mutate.js';

/** The files of one case, ready to be written into a folder. */
export interface FuzzCase {
  /** Case index within the run. */
  readonly index: number;
  /** The seed it was made from. */
  readonly seed: Seed;
  /** File name → bytes (every file of the seed, mutated or not). */
  readonly files: ReadonlyMap<string, Uint8Array>;
  /** What was done, one line per mutation. */
  readonly description: readonly string[];
}

/** The generator of case `index` of run `seed` (a 32-bit mix of both). */
export function caseRng(seed: number, index: number): Rng {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return new Rng(h >>> 0);
}

/** Paths of each JSON file kind that a lying file would lie in (the mutator prefers them). */
const INTERESTING: Readonly<Record<string, readonly RegExp[]>> = {
  'safetensors-header': [/\.data_offsets\[\d\]$/, /\.data_offsets$/, /\.shape\[\d+\]$/, /\.shape$/, /\.dtype$/, /^__metadata__/],
  'config-json': [
    /^(hidden_size|intermediate_size|num_hidden_layers|num_attention_heads|num_key_value_heads|vocab_size|max_position_embeddings|head_dim|n_embd|n_head|n_layer|n_positions|n_inner|sliding_window|max_window_layers)$/,
    /^(rope_theta|rms_norm_eps|layer_norm_epsilon|partial_rotary_factor)$/,
    /^rope_scaling/,
    /^(model_type|hidden_act|activation_function|tie_word_embeddings|use_sliding_window)$/,
    /^(bos_token_id|eos_token_id|bos_token|eos_token)/,
  ],
  'tokenizer-json': [/^model\.(type|vocab|merges|unk_token|byte_fallback|ignore_merges)$/, /^model\.vocab\./, /^model\.merges\[\d+\]$/, /^added_tokens\[\d+\]\.(id|content)$/, /^(pre_tokenizer|normalizer|decoder|post_processor)(\.|$)/],
  'engine-json': [
    /^kv\.(numBlocks|layers|numKvHeads|headDim|blockSize|dtype)$/,
    /^lm\.(maxPositions|vocabSize|bosId|stopTokens|logits)/,
    /^lm\.(argmax|sampler)\./,
    /^weights\[\d+\]\.parts\[\d+\]\.(byteOffset|byteLength|role|array)$/,
    /^weights\[\d+\]\.(shape|encoding|dtype)/,
    /^slots\[\d+\]$/,
    /^plans\[\d+\]\.(maxSeq|name)$/,
    /^plans\[\d+\]\.dispatches\[\d+\]\.(kernel|bindings)/,
    /^(inputs|outputs)\[\d+\]\.(maxBytes|shape|values|ref|dtype|name)/,
    /^kernels\[\d+\]\.(params|grid|bindings|wgsl|features)/,
    /^(version|format|requiredFeatures|kv|lm|plans|slots|weights)$/,
  ],
  'index-json': [/^weight_map\./, /^weight_map$/, /^metadata/],
};

/** Parsed seed files, kept per worker: bytes, located fields, parsed JSON and its paths. */
export class SeedCache {
  private readonly bytes = new Map<string, Uint8Array>();
  private readonly fields = new Map<string, Field[]>();
  private readonly json = new Map<string, { doc: Json; paths: (string | number)[][] } | null>();

  /** The bytes of a seed file. */
  read(path: string): Uint8Array {
    let b = this.bytes.get(path);
    if (!b) {
      b = new Uint8Array(readFileSync(path));
      this.bytes.set(path, b);
    }
    return b;
  }

  /** The located fields of a seed file (or of mutated bytes, when `bytes` differ from the seed's). */
  fieldsOf(key: string, kind: FileKind, bytes: Uint8Array, fresh: boolean): Field[] {
    const locate = (): Field[] => {
      switch (kind) {
        case 'llama2c':
          return llama2cFields(bytes);
        case 'llama2c-tokenizer':
          return llama2cTokenizerFields(bytes);
        case 'gguf':
          return ggufFields(bytes);
        case 'safetensors':
          return safetensorsFields(bytes);
        case 'onnx':
          return onnxFields(bytes);
        case 'engine-container':
          return engineContainerFields(bytes);
        default:
          return [];
      }
    };
    if (!fresh) return locate();
    let f = this.fields.get(key);
    if (!f) this.fields.set(key, (f = locate()));
    return f;
  }

  /** A JSON document and its paths (a fresh copy of the doc; `null` when the text is not JSON). */
  jsonOf(key: string, text: string, fresh: boolean): { doc: Json; paths: (string | number)[][] } | null {
    const parse = (): { doc: Json; paths: (string | number)[][] } | null => {
      try {
        const doc = JSON.parse(text) as Json;
        return { doc, paths: jsonPaths(doc) as (string | number)[][] };
      } catch {
        return null;
      }
    };
    if (!fresh) return parse();
    if (!this.json.has(key)) this.json.set(key, parse());
    const j = this.json.get(key)!;
    return j && { doc: structuredClone(j.doc), paths: j.paths };
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** One mutation of one file, by the file's kind. */
function mutateFile(rng: Rng, cache: SeedCache, key: string, kind: FileKind, bytes: Uint8Array, fresh: boolean): Mutated {
  const r = rng.next();
  switch (kind) {
    case 'llama2c':
    case 'llama2c-tokenizer':
    case 'gguf':
    case 'onnx': {
      if (r < 0.7) return mutateField(rng, bytes, cache.fieldsOf(key, kind, bytes, fresh)) ?? mutateBytes(rng, bytes);
      return mutateBytes(rng, bytes);
    }
    case 'safetensors': {
      if (r < 0.25) return mutateField(rng, bytes, cache.fieldsOf(key, kind, bytes, fresh)) ?? mutateBytes(rng, bytes);
      if (r < 0.75 && bytes.length >= 8) {
        const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
        if (n <= bytes.length - 8) {
          const j = cache.jsonOf(`${key}#header`, decoder.decode(bytes.subarray(8, 8 + n)), fresh);
          if (j) {
            const what = mutateJson(rng, j.doc, j.paths, INTERESTING['safetensors-header']);
            if (what) {
              let text = serializeJson(j.doc);
              const pad = rng.next() < 0.7;
              if (pad) while ((8 + encoder.encode(text).length) % 8) text += ' ';
              const header = encoder.encode(text);
              const out = new Uint8Array(8 + header.length + bytes.length - 8 - n);
              new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
              out.set(header, 8);
              out.set(bytes.subarray(8 + n), 8 + header.length);
              return { bytes: out, what: `header ${what}` };
            }
          }
        }
      }
      return mutateBytes(rng, bytes);
    }
    case 'engine-container': {
      if (r < 0.25) return mutateField(rng, bytes, cache.fieldsOf(key, kind, bytes, fresh)) ?? mutateBytes(rng, bytes);
      if (r < 0.8 && bytes.length >= 24) {
        const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const m = dv.getUint32(12, true);
        const w = Number(dv.getBigUint64(16, true));
        const weightsAt = Math.ceil((24 + m) / 256) * 256;
        if (24 + m <= bytes.length && weightsAt + w === bytes.length) {
          const j = cache.jsonOf(`${key}#manifest`, decoder.decode(bytes.subarray(24, 24 + m)), fresh);
          const what = j && mutateJson(rng, j.doc, j.paths, INTERESTING['engine-json']);
          if (j && what) {
            // rebuilt as the writer lays it out: new manifest length, padding to 256, the weights unchanged
            const manifest = encoder.encode(serializeJson(j.doc));
            const at = Math.ceil((24 + manifest.length) / 256) * 256;
            const out = new Uint8Array(at + w);
            out.set(bytes.subarray(0, 24));
            new DataView(out.buffer).setUint32(12, manifest.length, true);
            out.set(manifest, 24);
            out.set(bytes.subarray(weightsAt), at);
            return { bytes: out, what: `manifest ${what}` };
          }
        }
      }
      return mutateBytes(rng, bytes);
    }
    case 'config-json':
    case 'tokenizer-json':
    case 'engine-json':
    case 'index-json': {
      if (r < 0.85) {
        const j = cache.jsonOf(key, decoder.decode(bytes), fresh);
        if (j) {
          const what = mutateJson(rng, j.doc, j.paths, INTERESTING[kind] ?? []);
          if (what) return { bytes: encoder.encode(serializeJson(j.doc)), what };
        }
      }
      return mutateBytes(rng, bytes);
    }
    case 'raw':
      return mutateBytes(rng, bytes);
  }
}

/** Builds case `index` of run `seed` over the given corpus. */
export function makeCase(seeds: readonly Seed[], cache: SeedCache, seed: number, index: number): FuzzCase {
  const rng = caseRng(seed, index);
  const s = seeds[pickWeighted(rng, seeds.map((x) => x.weight))];
  const files = new Map<string, Uint8Array>(s.files.map((f) => [f.name, cache.read(f.path)]));
  const touched = new Set<string>();
  const description: string[] = [];
  const targets = s.files.filter((f) => f.weight > 0);
  const count = 1 + pickWeighted(rng, [0.6, 0.25, 0.15]);
  for (let m = 0; m < count && targets.length; m++) {
    const f = targets[pickWeighted(rng, targets.map((x) => x.weight))];
    const bytes = files.get(f.name)!;
    const out = mutateFile(rng, cache, f.path, f.kind, bytes, !touched.has(f.name));
    files.set(f.name, out.bytes);
    touched.add(f.name);
    description.push(`${f.name}: ${out.what}`);
  }
  return { index, seed: s, files, description };
}
