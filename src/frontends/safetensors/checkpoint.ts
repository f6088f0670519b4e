/**
 * A safetensors checkpoint of one file or of shards listed by a `model.safetensors.index.json`
 * (`{"metadata": {...}, "weight_map": {tensor name: shard file}}`), read as one set of named tensors.
 * @module
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, normalize, relative, sep } from 'node:path';
import { InputError, ModelFormatError } from '../../errors.js';
import { SafetensorsFile, type SafetensorsArray, type SafetensorsTensorInfo } from './reader.js';

/** The index file name Hugging Face writes beside sharded checkpoints. */
export const SAFETENSORS_INDEX_FILE = 'model.safetensors.index.json';

/** The single-file checkpoint name Hugging Face writes. */
export const SAFETENSORS_SINGLE_FILE = 'model.safetensors';

/** A parsed `model.safetensors.index.json`. */
export interface SafetensorsIndex {
  /** Tensor name → shard file name (relative to the index's folder). */
  readonly weightMap: Readonly<Record<string, string>>;
  /** The `metadata` object (e.g. `total_size`), as given. */
  readonly metadata: Readonly<Record<string, unknown>>;
}

/**
 * Parses an index file's text; shard names must be relative paths inside the index's folder.
 * @internal
 */
export function parseSafetensorsIndex(text: string, file?: string): SafetensorsIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError('index', 0, `not valid JSON: ${(e as Error).message}`, file);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelFormatError('index', 0, 'must be a JSON object', file);
  const { weight_map: map, metadata } = json as Record<string, unknown>;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new ModelFormatError('weight_map', 0, 'must be an object mapping tensor names to shard files', file);
  const weightMap: Record<string, string> = {};
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '') throw new ModelFormatError(`weight_map['${name}']`, 0, `shard must be a file name, got ${JSON.stringify(shard)}`, file);
    const norm = normalize(shard);
    if (isAbsolute(shard) || norm === '..' || norm.startsWith(`..${sep}`) || norm.startsWith('../'))
      throw new ModelFormatError(`weight_map['${name}']`, 0, `shard ${JSON.stringify(shard)} is outside the checkpoint folder`, file);
    weightMap[name] = shard;
  }
  const meta = typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata) ? (metadata as Record<string, unknown>) : {};
  return { weightMap: Object.freeze(weightMap), metadata: Object.freeze({ ...meta }) };
}

/** Whether `child` (a real path) is `root` or inside it. */
function inside(root: string, child: string): boolean {
  const r = relative(root, child);
  return r === '' || (!isAbsolute(r) && r !== '..' && !r.startsWith(`..${sep}`));
}

/**
 * A shard is checked through symlinks, not only by the path the index gives: its real path must be a regular file
 * inside the checkpoint folder's real path, or, when the folder is a Hugging Face hub snapshot
 * (`models--org--name/snapshots/<revision>`, whose files are links to `../../blobs/<hash>`), inside that repository's
 * `blobs` folder. Throws {@link ModelFormatError} naming the index entry otherwise.
 */
function checkShardLocation(dir: string, shardPath: string, field: string, indexFile: string): void {
  const root = realpathSync(dir);
  const real = realpathSync(shardPath);
  const snapshots = dirname(root);
  const hubBlobs = basename(snapshots) === 'snapshots' ? join(dirname(snapshots), 'blobs') : undefined;
  if (!inside(root, real) && !(hubBlobs && inside(hubBlobs, real)))
    throw new ModelFormatError(field, 0, `shard ${basename(shardPath)} resolves (through a symbolic link) to ${real}, outside the checkpoint folder`, indexFile);
  if (!statSync(real).isFile()) throw new ModelFormatError(field, 0, `shard ${basename(shardPath)} is not a regular file`, indexFile);
}

/**
 * Named tensors from one safetensors file or from the shards of an index. Every shard's header is opened and
 * validated up front, and every tensor the index maps must be in its shard; tensor data is read on demand.
 */
export class SafetensorsCheckpoint {
  /** The index, for sharded checkpoints. */
  readonly index: SafetensorsIndex | undefined;
  /** The file opened: the index, or the single safetensors file. */
  readonly path: string;
  /** The shards (one for a single-file checkpoint). */
  readonly files: readonly SafetensorsFile[];
  private readonly owner: Map<string, SafetensorsFile>;

  private constructor(path: string, files: SafetensorsFile[], owner: Map<string, SafetensorsFile>, index?: SafetensorsIndex) {
    this.path = path;
    this.files = files;
    this.owner = owner;
    this.index = index;
  }

  /**
   * Opens a checkpoint: a folder (its `model.safetensors.index.json`, else `model.safetensors`, else its only
   * `.safetensors` file), an index file, or a safetensors file.
   * @throws `InputError` when nothing is found; `ModelFormatError` for a malformed index or shard.
   */
  static open(path: string): SafetensorsCheckpoint {
    const st = existsSync(path) ? statSync(path) : undefined;
    if (!st) throw new InputError(`checkpoint ${path} does not exist`);
    if (st.isDirectory()) {
      const idx = join(path, SAFETENSORS_INDEX_FILE);
      if (existsSync(idx)) return SafetensorsCheckpoint.open(idx);
      const single = join(path, SAFETENSORS_SINGLE_FILE);
      if (existsSync(single)) return SafetensorsCheckpoint.open(single);
      throw new InputError(`${path} holds neither ${SAFETENSORS_INDEX_FILE} nor ${SAFETENSORS_SINGLE_FILE}`);
    }
    if (basename(path).endsWith('.index.json')) return SafetensorsCheckpoint.openIndex(path);
    const f = SafetensorsFile.open(path);
    return new SafetensorsCheckpoint(path, [f], new Map(f.names().map((n) => [n, f])));
  }

  private static openIndex(path: string): SafetensorsCheckpoint {
    const index = parseSafetensorsIndex(readFileSync(path, 'utf8'), path);
    const dir = dirname(path);
    const shards = new Map<string, SafetensorsFile>();
    const owner = new Map<string, SafetensorsFile>();
    try {
      for (const [name, shard] of Object.entries(index.weightMap)) {
        let f = shards.get(shard);
        if (!f) {
          const p = join(dir, shard);
          if (!existsSync(p)) throw new ModelFormatError(`weight_map['${name}']`, 0, `shard ${shard} does not exist`, path);
          checkShardLocation(dir, p, `weight_map['${name}']`, path);
          f = SafetensorsFile.open(p);
          shards.set(shard, f);
        }
        if (!f.has(name)) throw new ModelFormatError(`weight_map['${name}']`, 0, `shard ${shard} has no tensor '${name}'`, path);
        owner.set(name, f);
      }
    } catch (e) {
      for (const f of shards.values()) f.close();
      throw e;
    }
    return new SafetensorsCheckpoint(path, [...shards.values()], owner, index);
  }

  /** Opens a single safetensors file held in memory (for tests and embedders). */
  static fromBytes(bytes: Uint8Array, file = 'model.safetensors'): SafetensorsCheckpoint {
    const f = SafetensorsFile.fromBytes(bytes, file);
    return new SafetensorsCheckpoint(file, [f], new Map(f.names().map((n) => [n, f])));
  }

  /** All tensor names. */
  names(): string[] {
    return [...this.owner.keys()];
  }

  /** Whether a tensor exists. */
  has(name: string): boolean {
    return this.owner.has(name);
  }

  /** A tensor's header entry; throws {@link ModelFormatError} naming the checkpoint when absent. */
  info(name: string): SafetensorsTensorInfo {
    return this.file(name).info(name);
  }

  /** A tensor as float32. */
  float32(name: string): Float32Array {
    return this.file(name).float32(name);
  }

  /** A tensor as the typed array of its dtype. */
  values(name: string): SafetensorsArray {
    return this.file(name).values(name);
  }

  /** Total bytes of tensor data. */
  get dataBytes(): number {
    let n = 0;
    for (const f of this.files) for (const t of f.header.tensors) if (this.owner.get(t.name) === f) n += t.byteLength;
    return n;
  }

  /** Closes every shard. */
  close(): void {
    for (const f of this.files) f.close();
  }

  private file(name: string): SafetensorsFile {
    const f = this.owner.get(name);
    if (!f) throw new ModelFormatError(`tensor '${name}'`, 0, 'no such tensor in the checkpoint', this.path);
    return f;
  }
}
