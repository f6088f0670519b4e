/**
 * The single-file engine container: `engine.json` and `weights.bin` in one file (or one `Response`, one
 * `ArrayBuffer`), laid out so the weights can stream to the GPU right after the manifest is read.
 *
 * Layout (integers little-endian):
 *
 * | offset    | bytes | field                                                               |
 * |-----------|-------|---------------------------------------------------------------------|
 * | 0         | 8     | magic: ASCII `TWENGINE`                                             |
 * | 8         | 4     | u32 container version ({@link ENGINE_CONTAINER_VERSION})            |
 * | 12        | 4     | u32 manifest length `M` in bytes                                    |
 * | 16        | 8     | u64 weights length `W` in bytes (below 2^53)                        |
 * | 24        | M     | the manifest, UTF-8 JSON (the text of `engine.json`)                |
 * | 24 + M    | P     | zero bytes, so the weights start at a multiple of 256               |
 * | 24 + M + P| W     | the weights (the bytes of `weights.bin`); the file ends here        |
 * @module
 */
import { ModelFormatError } from '../errors.js';
import { parseEngineManifest, type EngineManifest } from './engine-manifest.js';
import { bytesWeightSource, streamWeightSource, type EngineWeightSource } from './weight-source.js';

/** The container's first 8 bytes: `TWENGINE`. */
export const ENGINE_CONTAINER_MAGIC = 'TWENGINE';
/** The container version this runtime writes and reads. */
export const ENGINE_CONTAINER_VERSION = 1;
/** Bytes of the fixed header (magic, version, manifest length, weights length). */
export const ENGINE_CONTAINER_HEADER_BYTES = 24;
/** The weights section starts at a multiple of this. */
export const ENGINE_CONTAINER_ALIGN = 256;

/** The fixed header of a container. */
export interface EngineContainerHeader {
  /** Container version. */
  readonly version: number;
  /** Bytes of the manifest JSON. */
  readonly manifestLength: number;
  /** Bytes of the weights. */
  readonly weightsLength: number;
  /** Offset of the weights (the header, the manifest and the padding before them). */
  readonly weightsOffset: number;
}

/** A container's contents, with the weights as a source (a view of the bytes, or the rest of a stream). */
export interface EngineContainer {
  /** The manifest. */
  readonly manifest: EngineManifest;
  /** The weights. */
  readonly weights: EngineWeightSource;
}

/** Whether `bytes` (the first bytes of a file at least) start with the container magic. */
export function isEngineContainer(bytes: Uint8Array): boolean {
  if (bytes.byteLength < 8) return false;
  for (let i = 0; i < 8; i++) if (bytes[i] !== ENGINE_CONTAINER_MAGIC.charCodeAt(i)) return false;
  return true;
}

/** The header, manifest and padding of a container holding `manifest` and `weightsLength` bytes of weights. */
export function engineContainerHead(manifest: EngineManifest, weightsLength: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(manifest));
  const weightsOffset = Math.ceil((ENGINE_CONTAINER_HEADER_BYTES + json.byteLength) / ENGINE_CONTAINER_ALIGN) * ENGINE_CONTAINER_ALIGN;
  const head = new Uint8Array(weightsOffset);
  for (let i = 0; i < 8; i++) head[i] = ENGINE_CONTAINER_MAGIC.charCodeAt(i);
  const dv = new DataView(head.buffer);
  dv.setUint32(8, ENGINE_CONTAINER_VERSION, true);
  dv.setUint32(12, json.byteLength, true);
  dv.setUint32(16, weightsLength % 2 ** 32, true);
  dv.setUint32(20, Math.floor(weightsLength / 2 ** 32), true);
  head.set(json, ENGINE_CONTAINER_HEADER_BYTES);
  return head;
}

/**
 * Reads the fixed header from the first {@link ENGINE_CONTAINER_HEADER_BYTES} bytes (or more) of a container.
 * Throws `ModelFormatError` naming the field for a wrong magic, an unknown version or impossible lengths.
 */
export function parseEngineContainerHeader(bytes: Uint8Array, file?: string): EngineContainerHeader {
  if (bytes.byteLength < ENGINE_CONTAINER_HEADER_BYTES) throw new ModelFormatError('header', 0, `${bytes.byteLength} bytes, too short for the ${ENGINE_CONTAINER_HEADER_BYTES}-byte container header`, file);
  if (!isEngineContainer(bytes)) throw new ModelFormatError('magic', 0, `not a single-file tensorwright engine (the file does not start with ${ENGINE_CONTAINER_MAGIC})`, file);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== ENGINE_CONTAINER_VERSION) throw new ModelFormatError('version', 8, `container version ${version} is not supported (this runtime reads version ${ENGINE_CONTAINER_VERSION})`, file);
  const manifestLength = dv.getUint32(12, true);
  const hi = dv.getUint32(20, true);
  if (hi >= 2 ** 21) throw new ModelFormatError('weightsLength', 16, `weights length is 2^53 bytes or more`, file);
  const weightsLength = hi * 2 ** 32 + dv.getUint32(16, true);
  const weightsOffset = Math.ceil((ENGINE_CONTAINER_HEADER_BYTES + manifestLength) / ENGINE_CONTAINER_ALIGN) * ENGINE_CONTAINER_ALIGN;
  return { version, manifestLength, weightsLength, weightsOffset };
}

function manifestOf(bytes: Uint8Array, h: EngineContainerHeader, file?: string): EngineManifest {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(ENGINE_CONTAINER_HEADER_BYTES, ENGINE_CONTAINER_HEADER_BYTES + h.manifestLength));
  } catch {
    throw new ModelFormatError('manifest', ENGINE_CONTAINER_HEADER_BYTES, 'the manifest is not valid UTF-8', file);
  }
  const m = parseEngineManifest(text, file);
  if (m.weightsByteLength !== undefined && m.weightsByteLength !== h.weightsLength)
    throw new ModelFormatError('weightsLength', 16, `the header gives ${h.weightsLength} bytes of weights; the manifest records ${m.weightsByteLength}`, file);
  return m;
}

/** Splits a whole container held in memory; the weights stay a view of `bytes` (no copy). */
export function parseEngineContainer(bytes: Uint8Array, file?: string): EngineContainer {
  const h = parseEngineContainerHeader(bytes, file);
  if (bytes.byteLength < h.weightsOffset) throw new ModelFormatError('manifest', ENGINE_CONTAINER_HEADER_BYTES, `the container ends after ${bytes.byteLength} bytes, inside its ${h.manifestLength}-byte manifest`, file);
  const manifest = manifestOf(bytes, h, file);
  const end = h.weightsOffset + h.weightsLength;
  if (bytes.byteLength !== end)
    throw new ModelFormatError('weights', Math.min(bytes.byteLength, end), `the container has ${bytes.byteLength} bytes; its header says ${end} (${h.weightsLength} bytes of weights at ${h.weightsOffset})`, file);
  return { manifest, weights: bytesWeightSource(bytes.subarray(h.weightsOffset, end), { description: file ?? 'the single-file engine' }) };
}

/**
 * Reads a container's header and manifest off the front of a stream; the weights are the rest of it, a one-shot
 * source (read by the first session).
 */
export async function readEngineContainerStream(stream: ReadableStream<Uint8Array>, description: string): Promise<EngineContainer> {
  const reader = stream.getReader();
  let head = new Uint8Array(0);
  let h: EngineContainerHeader | undefined;
  try {
    for (;;) {
      if (!h && head.byteLength >= ENGINE_CONTAINER_HEADER_BYTES) h = parseEngineContainerHeader(head, description);
      if (h && head.byteLength >= h.weightsOffset) break;
      const { done, value } = await reader.read();
      if (done) {
        if (!h) parseEngineContainerHeader(head, description); // throws: too short
        throw new ModelFormatError('manifest', ENGINE_CONTAINER_HEADER_BYTES, `the container ends after ${head.byteLength} bytes, inside its ${h!.manifestLength}-byte manifest`, description);
      }
      const grown = new Uint8Array(head.byteLength + value.byteLength);
      grown.set(head);
      grown.set(value, head.byteLength);
      head = grown;
    }
  } catch (e) {
    await reader.cancel().catch(() => undefined);
    throw e;
  } finally {
    reader.releaseLock();
  }
  const header = h!;
  const manifest = manifestOf(head, header, description);
  const rest = head.subarray(header.weightsOffset);
  return { manifest, weights: streamWeightSource(stream, header.weightsLength, description, rest) };
}

/** The container as one array (header, manifest, padding, weights), reading the weights from `weights` once. */
export async function encodeEngineContainer(manifest: EngineManifest, weights: EngineWeightSource, weightsLength: number): Promise<Uint8Array> {
  const head = engineContainerHead(manifest, weightsLength);
  const out = new Uint8Array(head.byteLength + weightsLength);
  out.set(head);
  let at = head.byteLength;
  for await (const piece of weights.read()) {
    if (at + piece.byteLength > out.byteLength) throw new ModelFormatError('weights.bin', at - head.byteLength, `${weights.description} is longer than the ${weightsLength} bytes expected`);
    out.set(piece, at);
    at += piece.byteLength;
  }
  if (at !== out.byteLength) throw new ModelFormatError('weights.bin', at - head.byteLength, `${weights.description} has ${at - head.byteLength} bytes; ${weightsLength} expected`);
  return out;
}
