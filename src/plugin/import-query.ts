/**
 * The `?tensorwright` import query: which imports the build plugin compiles (`./model.bin?tensorwright`,
 * `./model.gguf?tensorwright&quant=int4-g32`, `./hf-folder?tensorwright`, `./graph.onnx?tensorwright&dims=seq:8`), and
 * the compile options its parameters give. Options are checked here, so a bad one is an {@link InputError} naming
 * the parameter before anything is compiled.
 * @module
 */
import { InputError } from '../errors.js';

/** The name of the query parameter that marks a model import. */
export const IMPORT_QUERY_KEY = 'tensorwright';

/** What the build compiles a model for: the build machine's own adapter, or a named device profile. */
export type ModelTargetName = 'device' | 'portable' | 'swiftshader' | 'lavapipe' | 'discrete';

/** The targets a model import may name. */
export const MODEL_TARGETS: readonly ModelTargetName[] = ['device', 'portable', 'swiftshader', 'lavapipe', 'discrete'];

/**
 * Compile options of one model import, as query parameters (`?tensorwright&quant=int4-g32&kvBlockSize=16`) or as the
 * plugin's `defaults`. Every field is optional; absent ones take the compiler's defaults.
 */
export interface ModelImportOptions {
  /**
   * The device the kernels are compiled for, or several (`target=swiftshader,portable`): one engine each, and the
   * browser runs the first its adapter can (default: the plugin's `target`, itself `portable` by default).
   */
  target?: ModelTargetName | readonly ModelTargetName[];
  /** Weight quantization scheme, as `--quant` takes it (`int8`, `int4-g32`, `nf4`, …; `none`). */
  quant?: string;
  /** Weight sparsity pattern, as `--sparsity` takes it (`2:4`, `block32-0.1`; `none`). */
  sparsity?: string;
  /** Precision policy (`auto`, `f32`, `f16`). */
  precision?: 'auto' | 'f32' | 'f16';
  /** Tokens per paged-KV block (a power of two). */
  kvBlockSize?: number;
  /** KV-cache element type. */
  kvDtype?: 'f32' | 'f16' | 'int8' | 'int4';
  /** Pass pipeline (`O0`–`O3`). */
  passes?: string;
  /** Largest prompt chunk one prefill step takes. */
  prefillChunk?: number;
  /** ONNX graphs: the value of each symbolic input dim the engine is planned for (`dims=seq:8,batch:1`). */
  dims?: Readonly<Record<string, number>>;
}

/** A model import split into the file (or folder) it names and its options. */
export interface ModelImport {
  /** The file or folder path, as written before the query (relative paths are not resolved here). */
  readonly path: string;
  /** The options its query gives. */
  readonly options: ModelImportOptions;
}

const KNOWN = ['target', 'quant', 'sparsity', 'precision', 'kvBlockSize', 'kvDtype', 'passes', 'prefillChunk', 'dims'] as const;

/** Whether an import specifier or module id carries the `tensorwright` query parameter. */
export function isModelImport(id: string): boolean {
  const q = id.indexOf('?');
  if (q < 0) return false;
  return new URLSearchParams(id.slice(q + 1)).has(IMPORT_QUERY_KEY);
}

function integer(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min) throw new InputError(`?${IMPORT_QUERY_KEY} option ${name} must be an integer >= ${min}, got '${text}'`);
  return n;
}

function oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text)) throw new InputError(`?${IMPORT_QUERY_KEY} option ${name} must be one of ${allowed.join(', ')}, got '${text}'`);
  return text as T;
}

function parseDims(text: string): Record<string, number> {
  const dims: Record<string, number> = {};
  for (const part of text.split(',').filter((p) => p !== '')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*):(\d+)$/.exec(part);
    if (!m) throw new InputError(`?${IMPORT_QUERY_KEY} option dims must read name:value[,name:value…] (e.g. seq:8,batch:1), got '${text}'`);
    dims[m[1]] = integer(`dims.${m[1]}`, m[2], 1);
  }
  return dims;
}

/**
 * Reads the options of a `tensorwright` import query (the part after `?`, without it). Unknown parameters and bad
 * values are {@link InputError}s naming the parameter.
 */
export function parseImportOptions(query: string): ModelImportOptions {
  const params = new URLSearchParams(query);
  const o: ModelImportOptions = {};
  for (const [key, value] of params) {
    if (key === IMPORT_QUERY_KEY) {
      if (value !== '') throw new InputError(`the ${IMPORT_QUERY_KEY} query parameter takes no value (write ?${IMPORT_QUERY_KEY}&option=value), got '${value}'`);
      continue;
    }
    switch (key as (typeof KNOWN)[number]) {
      case 'target': {
        const names = value.split(',').map((t) => oneOf(key, t, MODEL_TARGETS));
        if (new Set(names).size !== names.length) throw new InputError(`?${IMPORT_QUERY_KEY} option target names a target twice: '${value}'`);
        o.target = names.length === 1 ? names[0] : names;
        break;
      }
      case 'quant':
      case 'sparsity':
      case 'passes':
        if (value === '') throw new InputError(`?${IMPORT_QUERY_KEY} option ${key} needs a value`);
        o[key as 'quant' | 'sparsity' | 'passes'] = value;
        break;
      case 'precision':
        o.precision = oneOf(key, value, ['auto', 'f32', 'f16'] as const);
        break;
      case 'kvDtype':
        o.kvDtype = oneOf(key, value, ['f32', 'f16', 'int8', 'int4'] as const);
        break;
      case 'kvBlockSize':
        o.kvBlockSize = integer(key, value, 1);
        break;
      case 'prefillChunk':
        o.prefillChunk = integer(key, value, 1);
        break;
      case 'dims':
        o.dims = parseDims(value);
        break;
      default:
        throw new InputError(`unknown ?${IMPORT_QUERY_KEY} option '${key}' (known: ${KNOWN.join(', ')})`);
    }
  }
  return o;
}

/** Splits a model import specifier or id (`path?tensorwright&…`) into its path and options. */
export function parseModelImport(id: string): ModelImport {
  const q = id.indexOf('?');
  if (q < 0 || !isModelImport(id)) throw new InputError(`'${id}' is not a model import (it needs the ?${IMPORT_QUERY_KEY} query)`);
  return { path: id.slice(0, q), options: parseImportOptions(id.slice(q + 1)) };
}

/** The targets options name, in order (`portable` when none). */
export function targetsOf(o: ModelImportOptions): readonly ModelTargetName[] {
  return o.target === undefined ? ['portable'] : typeof o.target === 'string' ? [o.target] : o.target;
}

/** The options of `defaults` overridden by those of `own`, with keys sorted (a stable cache key). */
export function mergeImportOptions(defaults: ModelImportOptions, own: ModelImportOptions): ModelImportOptions {
  const merged: Record<string, unknown> = { ...defaults, ...own };
  return Object.fromEntries(Object.keys(merged).filter((k) => merged[k] !== undefined).sort().map((k) => [k, merged[k]])) as ModelImportOptions;
}
