/**
 * Engine files on a Node file system: reading an engine directory (`engine.json` + `weights.bin`) or a single-file
 * engine, weight sources that read a file in chunks, and writing both forms. The only runtime module that imports
 * Node's `fs`; the browser-clean runtime reaches it through a dynamic import when it runs in Node.
 * @module
 */
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError, ModelFormatError } from '../../errors.js';
import { engineContainerHead, ENGINE_CONTAINER_HEADER_BYTES, isEngineContainer, parseEngineContainerHeader } from '../engine-container.js';
import { parseEngineManifest, type EngineManifest } from '../engine-manifest.js';
import type { EngineWeightSource } from '../weight-source.js';

/** Bytes read from a file per chunk. */
const READ_CHUNK = 8 << 20;

/** What {@link readEngineFiles} found: the manifest, a source over the weights, and where a tokenizer would be. */
export interface EngineOnDisk {
  /** The manifest. */
  readonly manifest: EngineManifest;
  /** The weights, read from the file at each session's creation. */
  readonly weights: EngineWeightSource;
  /** `tokenizer.bin` beside the engine (whether or not it exists). */
  readonly tokenizer: string;
}

/** A path from a path or a `file:` URL. */
export function toPath(p: string | URL): string {
  return typeof p === 'string' ? (p.startsWith('file:') ? fileURLToPath(p) : p) : fileURLToPath(p);
}

/**
 * A weight source over `length` bytes of the file at `path` from `offset` (default: the whole file). Each read opens
 * the file and reads it front to back into one reused buffer.
 */
export function fileWeightSource(path: string, offset: number, length: number): EngineWeightSource {
  return {
    byteLength: length,
    description: path,
    async *read() {
      const fh = await open(path, 'r').catch((e: Error) => {
        throw new InputError(`cannot open ${path}: ${e.message}`);
      });
      try {
        const buf = new Uint8Array(Math.min(READ_CHUNK, Math.max(1, length)));
        let done = 0;
        while (done < length) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.byteLength, length - done), offset + done);
          if (bytesRead === 0) return; // shorter than expected: the uploader reports where it ended
          done += bytesRead;
          yield buf.subarray(0, bytesRead);
        }
      } finally {
        await fh.close();
      }
    },
  };
}

/** A weight source over a whole local file (`InputError` when it is missing). */
export async function localWeightSource(path: string | URL): Promise<EngineWeightSource> {
  const p = toPath(path);
  return fileWeightSource(p, 0, await sizeOf(p, 'weights file'));
}

/** Reads an engine's `engine.json` (`InputError` when missing, `ModelFormatError` when malformed). */
export async function readEngineManifestFile(path: string): Promise<EngineManifest> {
  const text = await readFile(path, 'utf8').catch(() => {
    throw new InputError(`no engine manifest at ${path}`);
  });
  return parseEngineManifest(text, path);
}

/** Size of a file, or an `InputError` naming what is missing. */
async function sizeOf(path: string, what: string): Promise<number> {
  const s = await stat(path).catch(() => {
    throw new InputError(`no ${what} at ${path}`);
  });
  return s.size;
}

/**
 * Opens an engine on disk: a directory holding `engine.json` and `weights.bin` (as `Engine.save` writes it), or a
 * single-file engine (as `Engine.saveSingleFile` writes it). Reads the manifest now and the weights later.
 */
export async function readEngineFiles(path: string | URL): Promise<EngineOnDisk> {
  const p = toPath(path);
  const s = await stat(p).catch(() => {
    throw new InputError(`no engine at ${p}`);
  });
  if (s.isDirectory()) {
    if (!(await stat(join(p, 'engine.json')).catch(() => undefined))) throw new InputError(`no engine at ${p} (engine.json is missing)`);
    return readEnginePair(join(p, 'engine.json'), join(p, 'weights.bin'), join(p, 'tokenizer.bin'));
  }
  const fh = await open(p, 'r');
  try {
    const head = new Uint8Array(ENGINE_CONTAINER_HEADER_BYTES);
    const { bytesRead } = await fh.read(head, 0, head.byteLength, 0);
    if (!isEngineContainer(head.subarray(0, bytesRead))) throw new ModelFormatError('magic', 0, 'neither an engine directory nor a single-file engine', p);
    const h = parseEngineContainerHeader(head.subarray(0, bytesRead), p);
    if (s.size !== h.weightsOffset + h.weightsLength)
      throw new ModelFormatError('weights', Math.min(s.size, h.weightsOffset), `the file has ${s.size} bytes; its header says ${h.weightsOffset + h.weightsLength}`, p);
    const json = new Uint8Array(h.manifestLength);
    await fh.read(json, 0, json.byteLength, ENGINE_CONTAINER_HEADER_BYTES);
    const manifest = parseEngineManifest(new TextDecoder().decode(json), p);
    if (manifest.weightsByteLength !== undefined && manifest.weightsByteLength !== h.weightsLength)
      throw new ModelFormatError('weightsLength', 16, `the header gives ${h.weightsLength} bytes of weights; the manifest records ${manifest.weightsByteLength}`, p);
    return { manifest, weights: fileWeightSource(p, h.weightsOffset, h.weightsLength), tokenizer: join(p, '..', 'tokenizer.bin') };
  } finally {
    await fh.close();
  }
}

/** Opens an engine given as its two files (and where its tokenizer would be). */
export async function readEnginePair(manifestPath: string | URL, weightsPath: string | URL, tokenizerPath?: string | URL): Promise<EngineOnDisk> {
  const m = toPath(manifestPath);
  const w = toPath(weightsPath);
  const manifest = await readEngineManifestFile(m);
  return { manifest, weights: await localWeightSource(w), tokenizer: tokenizerPath ? toPath(tokenizerPath) : join(m, '..', 'tokenizer.bin') };
}

/** Writes `engine.json` and `weights.bin` into `dir` (created if needed), streaming the weights from `weights`. */
export async function writeEngineDir(dir: string, manifest: EngineManifest, weights: EngineWeightSource): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeStream(join(dir, 'weights.bin'), [], weights);
  await writeFile(join(dir, 'engine.json'), JSON.stringify(manifest));
}

/** Writes a single-file engine (see `engine-container.ts`) to `path`, streaming the weights from `weights`. */
export async function writeEngineFile(path: string, manifest: EngineManifest, weights: EngineWeightSource, weightsLength: number): Promise<void> {
  await writeStream(path, [engineContainerHead(manifest, weightsLength)], weights);
}

/** Writes `head` then the weights to a temporary file beside `path`, then renames it (so a source may be `path` itself). */
async function writeStream(path: string, head: Uint8Array[], weights: EngineWeightSource): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    for (const h of head) await fh.write(h);
    for await (const piece of weights.read()) await fh.write(piece);
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
}

/** The bytes of a local file (`InputError` when it cannot be read). */
export async function readLocalFile(path: string | URL): Promise<Uint8Array> {
  const p = toPath(path);
  const b = await readFile(p).catch((e: Error) => {
    throw new InputError(`cannot read ${p}: ${e.message}`);
  });
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Whether a local file exists. */
export async function localFileExists(path: string | URL): Promise<boolean> {
  return (await stat(toPath(path)).catch(() => undefined))?.isFile() ?? false;
}
