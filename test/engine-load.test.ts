// Engine.load from every kind of source (directory, file: URL, { manifest, weights }, fetched URLs, Response, bytes,
// single-file path), the single-file container, the chunked weight uploader, the Cache API / OPFS caches (with fakes
// injected through the options) and the runtime's tokenizer loader. The GPU part runs stories260K loaded each way and
// checks its greedy ids against the CPU reference.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../src/compile.js';
import { InputError, ModelFormatError } from '../src/errors.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { generateTokens } from '../src/runtime/generate.js';
import { Engine, type SessionLoadProgress } from '../src/runtime/engine.js';
import { encodeEngineContainer, engineContainerHead, parseEngineContainer, readEngineContainerStream } from '../src/runtime/engine-container.js';
import type { CacheLike, CacheStorageLike, OpfsDirectoryLike, OpfsFileLike } from '../src/runtime/engine-cache.js';
import { ENGINE_FORMAT_VERSION, type EngineManifest } from '../src/runtime/engine-manifest.js';
import { loadTokenizer } from '../src/runtime/tokenizer-loader.js';
import { bytesWeightSource, streamWeightSource, type EngineWeightSource } from '../src/runtime/weight-source.js';
import { uploadWeights } from '../src/runtime/weight-upload.js';
import { Llama2cTokenizer } from '../src/tokenizers/llama2c.js';
import { HfTokenizer } from '../src/tokenizers/hf.js';
import { Rng } from '../src/util/random.js';
import { Sha256Js, sha256Hex } from '../src/util/sha256.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('engine loading golden tests');

const tmp = mkdtempSync(join(tmpdir(), 'tw-engine-load-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------- helpers: synthetic engines, fakes

function randomBytes(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rng.next() * 256));
}

/** A manifest with weights of the given part lengths, laid out like the compiler's packer (256-aligned). */
function syntheticEngine(lengths: number[], seed = 1): { manifest: EngineManifest; bytes: Uint8Array } {
  let at = 0;
  const weights = lengths.map((n, i) => {
    const part = { role: 'values', array: 'u8' as const, byteOffset: at, byteLength: n };
    at += Math.ceil(n / 256) * 256;
    return { id: `w${i}`, name: `w${i}`, dtype: 'f32' as const, shape: [n], encoding: { kind: 'dense' } as EngineManifest['weights'][number]['encoding'], parts: [part] };
  });
  const bytes = randomBytes(at, seed);
  const manifest = {
    format: 'tensorwright-engine',
    version: ENGINE_FORMAT_VERSION,
    created: { by: 'test', at: '' },
    device: { description: 'test', features: [] },
    model: { family: 'graph', config: {} },
    kernels: [],
    weights,
    slots: [],
    inputs: [],
    outputs: [],
    plans: [],
    requiredFeatures: [],
    weightsByteLength: bytes.byteLength,
    weightsSha256: createHash('sha256').update(bytes).digest('hex'),
  } as EngineManifest;
  return { manifest, bytes };
}

/** A GPUQueue stand-in that applies writes to byte arrays and records their sizes. */
class FakeQueue {
  readonly sizes: number[] = [];
  drains = 0;
  writeBuffer(buffer: { bytes: Uint8Array }, offset: number, data: ArrayBuffer, dataOffset: number, size: number): void {
    expect(offset % 4, 'buffer offset is a multiple of 4').toBe(0);
    expect(size % 4, 'size is a multiple of 4').toBe(0);
    buffer.bytes.set(new Uint8Array(data, dataOffset, size), offset);
    this.sizes.push(size);
  }
  async onSubmittedWorkDone(): Promise<void> {
    this.drains++;
  }
}

/** Uploads with the fake queue; returns the bytes each part's buffer received and the progress reports. */
async function fakeUpload(manifest: EngineManifest, source: EngineWeightSource, chunkBytes: number) {
  const queue = new FakeQueue();
  const buffers = manifest.weights.map((w) => ({ bytes: new Uint8Array(Math.max(16, Math.ceil(w.parts[0].byteLength / 4) * 4)) }));
  const targets = manifest.weights.map((w, i) => ({ byteOffset: w.parts[0].byteOffset, byteLength: w.parts[0].byteLength, buffer: buffers[i] as unknown as GPUBuffer }));
  const progress: [number, number][] = [];
  await uploadWeights(queue as unknown as GPUQueue, targets, source, { chunkBytes, expectedBytes: manifest.weightsByteLength, sha256: manifest.weightsSha256, onProgress: (l, t) => progress.push([l, t]) });
  return { queue, buffers, progress };
}

/** A stream that hands out `bytes` in pieces of uneven (mostly odd) sizes. */
function unevenStream(bytes: Uint8Array, seed = 7): ReadableStream<Uint8Array> {
  const rng = new Rng(seed);
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (at >= bytes.byteLength) return ctl.close();
      const n = 1 + Math.floor(rng.next() * 5000);
      ctl.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
}

/** A fetch over an in-memory site; counts requests per path. */
function fakeFetch(files: Map<string, Uint8Array>) {
  const counts = new Map<string, number>();
  const fetch = async (url: string): Promise<Response> => {
    const path = new URL(url).pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const body = files.get(path);
    if (!body) return new Response('not found', { status: 404, statusText: 'Not Found' });
    return new Response(unevenStream(body), { headers: { 'content-length': String(body.byteLength) } });
  };
  return { fetch, counts };
}

class FakeCache implements CacheLike {
  readonly entries = new Map<string, { bytes: Uint8Array; headers: Headers }>();
  async match(key: string): Promise<Response | undefined> {
    const e = this.entries.get(key);
    return e ? new Response(e.bytes.slice(), { headers: e.headers }) : undefined;
  }
  async put(key: string, r: Response): Promise<void> {
    this.entries.set(key, { bytes: new Uint8Array(await r.arrayBuffer()), headers: r.headers });
  }
  async delete(key: string): Promise<boolean> {
    return this.entries.delete(key);
  }
}

class FakeCacheStorage implements CacheStorageLike {
  readonly caches = new Map<string, FakeCache>();
  async open(name: string): Promise<FakeCache> {
    if (!this.caches.has(name)) this.caches.set(name, new FakeCache());
    return this.caches.get(name)!;
  }
}

class FakeOpfsDir implements OpfsDirectoryLike {
  readonly files = new Map<string, Uint8Array>();
  readonly dirs = new Map<string, FakeOpfsDir>();
  async getDirectoryHandle(name: string, o?: { create?: boolean }): Promise<FakeOpfsDir> {
    if (!this.dirs.has(name)) {
      if (!o?.create) throw new Error('NotFoundError');
      this.dirs.set(name, new FakeOpfsDir());
    }
    return this.dirs.get(name)!;
  }
  async getFileHandle(name: string, o?: { create?: boolean }): Promise<OpfsFileLike> {
    if (!this.files.has(name)) {
      if (!o?.create) throw new Error('NotFoundError');
      this.files.set(name, new Uint8Array(0)); // as OPFS does: the empty file exists before anything is written
    }
    return {
      getFile: async () => new Blob([this.files.get(name)!.slice()]),
      createWritable: async () => {
        const parts: Uint8Array[] = [];
        return {
          write: async (d: Uint8Array) => void parts.push(d.slice()),
          close: async () => {
            const all = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
            let at = 0;
            for (const p of parts) {
              all.set(p, at);
              at += p.byteLength;
            }
            this.files.set(name, all);
          },
          abort: async () => undefined,
        };
      },
    };
  }
  async removeEntry(name: string): Promise<void> {
    this.files.delete(name);
  }
}

async function readAll(source: EngineWeightSource): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of source.read()) parts.push(p.slice());
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function expectFormatError(e: unknown, field: string): void {
  expect(e).toBeInstanceOf(ModelFormatError);
  expect((e as ModelFormatError).field).toBe(field);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

// ---------------------------------------------------------------- without a GPU

describe('SHA-256', () => {
  it('the portable implementation agrees with node:crypto and crypto.subtle over uneven splits', async () => {
    const rng = new Rng(3);
    for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 70_001]) {
      const bytes = randomBytes(n, n + 1);
      const want = createHash('sha256').update(bytes).digest('hex');
      const h = new Sha256Js();
      for (let at = 0; at < n; ) {
        const k = Math.min(n - at, Math.floor(rng.next() * 200));
        h.update(bytes.subarray(at, at + k));
        at += k;
      }
      expect(h.hex(), `${n} bytes`).toBe(want);
      expect(await sha256Hex(bytes)).toBe(want);
    }
  });
});

describe('single-file container', () => {
  const { manifest, bytes } = syntheticEngine([100, 7, 4096, 3]);

  it('round-trips manifest and weights; the weights start 256-aligned and stay a view', async () => {
    const file = await encodeEngineContainer(manifest, bytesWeightSource(bytes), bytes.byteLength);
    expect(new TextDecoder().decode(file.subarray(0, 8))).toBe('TWENGINE');
    const c = parseEngineContainer(file);
    expect(c.manifest).toEqual(manifest);
    expect(c.weights.bytes!.byteOffset % 256).toBe(0);
    expect(c.weights.bytes!.buffer).toBe(file.buffer);
    expect(c.weights.bytes).toEqual(bytes);
    const streamed = await readEngineContainerStream(unevenStream(file), 'stream');
    expect(streamed.manifest).toEqual(manifest);
    expect(await readAll(streamed.weights)).toEqual(bytes);
    expect(() => streamed.weights.read()).toThrow(InputError); // one-shot
  });

  it('names the field of a bad magic, version, truncation or trailing bytes', async () => {
    const file = await encodeEngineContainer(manifest, bytesWeightSource(bytes), bytes.byteLength);
    const bad = file.slice();
    bad[0] = 0x58;
    expectFormatError(await rejection(Engine.load(bad)), 'magic');
    const v2 = file.slice();
    v2[8] = 2;
    expectFormatError(await rejection(Engine.load(v2)), 'version');
    expectFormatError(await rejection(Engine.load(file.subarray(0, 10))), 'header');
    expectFormatError(await rejection(Engine.load(file.subarray(0, 40))), 'manifest');
    expectFormatError(await rejection(Engine.load(file.subarray(0, file.byteLength - 1))), 'weights');
    const longer = new Uint8Array(file.byteLength + 1);
    longer.set(file);
    expectFormatError(await rejection(Engine.load(longer)), 'weights');
    expectFormatError(await rejection(readEngineContainerStream(unevenStream(file.subarray(0, 40)), 's')), 'manifest');
  });

  it('a corrupted weight byte in a single-file engine is a ModelFormatError naming weightsSha256', async () => {
    const file = await encodeEngineContainer(manifest, bytesWeightSource(bytes), bytes.byteLength);
    file[file.byteLength - 300] ^= 1;
    const e = await rejection(Engine.load(file.buffer as ArrayBuffer));
    expectFormatError(e, 'weightsSha256');
    expect(String((e as Error).message)).toMatch(/SHA-256/);
    // with verification off it loads (the bytes are the caller's business)
    await expect(Engine.load(file, { verify: false })).resolves.toBeInstanceOf(Engine);
  });

  it('the header is the manifest JSON padded to 256 bytes', () => {
    const head = engineContainerHead(manifest, bytes.byteLength);
    const json = JSON.stringify(manifest);
    expect(head.byteLength % 256).toBe(0);
    expect(new DataView(head.buffer).getUint32(12, true)).toBe(new TextEncoder().encode(json).byteLength);
    expect(new TextDecoder().decode(head.subarray(24, 24 + json.length))).toBe(json);
  });
});

describe('weight uploader (fake queue)', () => {
  // parts with lengths that are not multiples of 4, and one larger than several chunks
  const { manifest, bytes } = syntheticEngine([5, 1030, 70_001, 3, 256, 9000], 11);
  const expectParts = (buffers: { bytes: Uint8Array }[]): void =>
    manifest.weights.forEach((w, i) => {
      const p = w.parts[0];
      expect(buffers[i].bytes.subarray(0, p.byteLength), w.name).toEqual(bytes.subarray(p.byteOffset, p.byteOffset + p.byteLength));
      expect(buffers[i].bytes.subarray(p.byteLength, Math.ceil(p.byteLength / 4) * 4).every((b) => b === 0), `${w.name} padding`).toBe(true);
    });

  for (const [what, source] of [
    ['bytes in memory', () => bytesWeightSource(bytes)],
    ['an uneven stream', () => streamWeightSource(unevenStream(bytes), bytes.byteLength, 'stream')],
  ] as const)
    it(`from ${what}: writes ≤ chunk size, reproduces every part, reports monotone progress up to the total`, async () => {
      for (const chunk of [4096, 1 << 16, 8 << 20]) {
        const { queue, buffers, progress } = await fakeUpload(manifest, source(), chunk);
        expect(Math.max(...queue.sizes)).toBeLessThanOrEqual(chunk);
        expectParts(buffers);
        const loaded = progress.map((p) => p[0]);
        expect(loaded).toEqual([...loaded].sort((a, b) => a - b));
        expect(progress.every(([, t]) => t === bytes.byteLength)).toBe(true);
        expect(progress[progress.length - 1]).toEqual([bytes.byteLength, bytes.byteLength]);
        if (chunk === 4096) expect(progress.length).toBeGreaterThan(10);
      }
    });

  it('a flipped byte fails the hash check (weightsSha256) and invalidates the source; a short stream names weights.bin', async () => {
    const bad = bytes.slice();
    bad[2000] ^= 0x80;
    let invalidated = 0;
    const source = { ...bytesWeightSource(bad), invalidate: async () => void invalidated++ };
    expectFormatError(await rejection(fakeUpload(manifest, source, 4096)), 'weightsSha256');
    expect(invalidated).toBe(1);
    expectFormatError(await rejection(fakeUpload(manifest, bytesWeightSource(bytes.subarray(0, 5000)), 4096)), 'weights.bin');
    const longer = new Uint8Array(bytes.byteLength + 4);
    longer.set(bytes);
    expectFormatError(await rejection(fakeUpload(manifest, bytesWeightSource(longer), 4096)), 'weightsByteLength');
  });

  it('the engine rejects payload offsets that are not multiples of 4', () => {
    const w = manifest.weights[0];
    const m = { ...manifest, weights: [{ ...w, parts: [{ ...w.parts[0], byteOffset: 2 }] }] };
    expect(() => new Engine(m, bytes)).toThrow(ModelFormatError);
  });
});

describe('Engine.load sources and caches (no GPU: the weights are read back from the source)', () => {
  const { manifest, bytes } = syntheticEngine([1000, 20_000, 7], 5);
  const site = new Map<string, Uint8Array>([
    ['/m/engine.json', new TextEncoder().encode(JSON.stringify(manifest))],
    ['/m/weights.bin', bytes],
    ['/assets/engine-abc123.json', new TextEncoder().encode(JSON.stringify(manifest))],
    ['/assets/weights-def456.bin', bytes],
  ]);

  it('a directory, its file: URL and { manifest, weights } paths all read the same manifest and bytes', async () => {
    const dir = join(tmp, 'synthetic');
    await new Engine(manifest, bytes).save(dir);
    expect(JSON.parse(readFileSync(join(dir, 'engine.json'), 'utf8'))).toEqual(manifest);
    for (const src of [dir, pathToFileURL(dir), pathToFileURL(dir).href, { manifest: join(dir, 'engine.json'), weights: join(dir, 'weights.bin') }]) {
      const e = await Engine.load(src);
      expect(e.manifest).toEqual(manifest);
      expect(e.weights.bytes).toBeUndefined(); // streamed, not held
      expect(await readAll(e.weights)).toEqual(bytes);
    }
    // saving over the files the engine streams from (written beside, then renamed)
    await (await Engine.load(dir)).save(dir);
    expect(await readAll((await Engine.load(dir)).weights)).toEqual(bytes);
    await expect(Engine.load(join(tmp, 'nowhere'))).rejects.toThrow(InputError);
  });

  it('a URL of an engine directory and hashed { manifest, weights } URLs fetch the files (each session refetches the weights)', async () => {
    const { fetch, counts } = fakeFetch(site);
    const e = await Engine.load('https://example.test/m', { fetch });
    expect(e.manifest).toEqual(manifest);
    expect(await readAll(e.weights)).toEqual(bytes);
    expect(await readAll(e.weights)).toEqual(bytes);
    expect(counts.get('/m/weights.bin')).toBe(2);
    const p = await Engine.load({ manifest: new URL('https://example.test/assets/engine-abc123.json'), weights: 'https://example.test/assets/weights-def456.bin' }, { fetch });
    expect(await readAll(p.weights)).toEqual(bytes);
    await expect(Engine.load('https://example.test/missing/', { fetch })).rejects.toThrow(/HTTP 404/);
  });

  it('a Response holds a single-file engine, read once', async () => {
    const file = await new Engine(manifest, bytes).toSingleFile();
    const e = await Engine.load(new Response(unevenStream(file)));
    expect(e.manifest).toEqual(manifest);
    expect(await readAll(e.weights)).toEqual(bytes);
    expect(() => e.weights.read()).toThrow(InputError);
    await expect(Engine.load(new Response('x', { status: 500 }))).rejects.toThrow(InputError);
  });

  for (const mode of ['cache-api', 'opfs'] as const)
    it(`cache '${mode}': the first session downloads into the cache, later loads read it without fetching the weights; a corrupted entry fails its hash and is deleted`, async () => {
      const { fetch, counts } = fakeFetch(site);
      const caches = new FakeCacheStorage();
      const opfs = new FakeOpfsDir();
      const opts = { fetch, cache: mode, caches, opfs };
      const e1 = await Engine.load('https://example.test/m/', opts);
      const reports: [number, number | undefined][] = [];
      expect(await e1.weights.prepare!((p) => reports.push([p.loadedBytes, p.totalBytes]))).toBe(true);
      expect(reports[reports.length - 1]).toEqual([bytes.byteLength, bytes.byteLength]);
      expect(counts.get('/m/weights.bin')).toBe(1);
      const e2 = await Engine.load('https://example.test/m/', opts);
      expect(await e2.weights.prepare!(() => undefined)).toBe(false);
      expect(await readAll(e2.weights)).toEqual(bytes);
      expect(counts.get('/m/weights.bin')).toBe(1); // read from the cache
      // offline: the manifest comes from the cache too
      const offline = async (): Promise<Response> => {
        throw new TypeError('network down');
      };
      const e3 = await Engine.load('https://example.test/m/', { ...opts, fetch: offline });
      expect(e3.manifest).toEqual(manifest);
      expect(await readAll(e3.weights)).toEqual(bytes);
      // corrupt the stored weights: the upload's hash check fails, names the field, and drops the entry
      const stored = mode === 'cache-api' ? [...caches.caches.get('tensorwright-engines')!.entries.values()].map((x) => x.bytes) : [...opfs.dirs.get('tensorwright-engines')!.files.values()];
      const weightsEntry = stored.find((b) => b.byteLength === bytes.byteLength)!;
      weightsEntry[123] ^= 0xff;
      expectFormatError(await rejection(fakeUpload(manifest, e3.weights, 1 << 16)), 'weightsSha256');
      const e4 = await Engine.load('https://example.test/m/', opts);
      expect(await e4.weights.prepare!(() => undefined)).toBe(true); // downloaded again
      expect(counts.get('/m/weights.bin')).toBe(2);
      const { buffers } = await fakeUpload(manifest, e4.weights, 1 << 16);
      expect(buffers[1].bytes.subarray(0, 20_000)).toEqual(bytes.subarray(1024, 21_024));
    });

  it('an unknown cache mode is an InputError; a host without the storage falls back to no cache', async () => {
    const { fetch } = fakeFetch(site);
    await expect(Engine.load('https://example.test/m/', { fetch, cache: 'disk' as 'opfs' })).rejects.toThrow(InputError);
    const e = await Engine.load('https://example.test/m/', { fetch, cache: 'cache-api' }); // Node has no globalThis.caches
    expect(e.weights.prepare).toBeUndefined();
  });
});

describe('loadTokenizer', () => {
  const wordLevel = {
    version: '1.0',
    added_tokens: [{ id: 0, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: null,
    model: { type: 'WordLevel', vocab: { '<s>': 0, '<unk>': 1, hello: 2, world: 3 }, unk_token: '<unk>' },
  };

  it('tells a tokenizer.json from a llama2.c .bin by its bytes, from bytes, a Response, a path or a file: URL', async () => {
    const jsonBytes = new TextEncoder().encode(JSON.stringify(wordLevel));
    const hf = await loadTokenizer(jsonBytes, { bosId: 0, eosIds: [1] });
    expect(hf).toBeInstanceOf(HfTokenizer);
    expect(hf.encode('hello world')).toEqual(HfTokenizer.fromJson(wordLevel).encode('hello world'));
    expect((hf as HfTokenizer).bosId).toBe(0);
    const fromResponse = await loadTokenizer(new Response(jsonBytes));
    expect(fromResponse.encode('world hello')).toEqual([3, 2]);
    const path = join(tmp, 'tokenizer.json');
    writeFileSync(path, jsonBytes);
    expect((await loadTokenizer(pathToFileURL(path))).encode('hello')).toEqual([2]);
    expect(await loadTokenizer(join(tmp, 'absent.bin'), { optional: true })).toBeUndefined();
    await expect(loadTokenizer(join(tmp, 'absent.bin'))).rejects.toThrow(InputError);
    expectFormatError(await rejection(loadTokenizer(new TextEncoder().encode('{ not json'))), 'json');
  });

  it.skipIf(!hasShared)('reads tok512.bin without being told its vocab size, as Llama2cTokenizer.fromFile does', async () => {
    const file = sharedPath('models/stories260K/tok512.bin');
    const ref = await Llama2cTokenizer.fromFile(file, 512);
    const t = await loadTokenizer(file);
    expect(t).toBeInstanceOf(Llama2cTokenizer);
    expect((t as Llama2cTokenizer).vocabSize).toBe(512);
    expect(t.encode('Once upon a time')).toEqual(ref.encode('Once upon a time'));
    expectFormatError(await rejection(loadTokenizer(file, { vocabSize: 511 })), 'vocab[511]');
    const truncated = await rejection(loadTokenizer(readFileSync(file).subarray(0, 1000)));
    expect(truncated).toBeInstanceOf(ModelFormatError);
    expect((truncated as ModelFormatError).field).toMatch(/^vocab\[\d+\]/);
  });
});

// ---------------------------------------------------------------- stories260K on the GPU, loaded every way

const LONG = 600_000;
let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

describe.skipIf(!hasShared)('stories260K loaded every way on WebGPU', () => {
  const steps = 40;
  const chunk = 1 << 16;
  let model: LoadedModel;
  let compiled: Engine;
  let dir: string;
  let prompt: number[];
  let reference: number[];
  beforeAll(async () => {
    if (!gpu) return;
    model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    compiled = await compile(model, { device: gpu.info });
    dir = join(tmp, 'stories260K');
    await compiled.save(dir);
    copyFileSync(sharedPath('models/stories260K/tok512.bin'), join(dir, 'tokenizer.bin'));
    await compiled.saveSingleFile(join(tmp, 'stories260K.twengine'));
    prompt = JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-1.json'), 'utf8')).prompt_ids;
    const cpu = await generateTokens(new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), model.maxPositions), prompt, { steps, temperature: 0, topp: 0.9, seed: 1, stopTokens: model.stopTokens });
    reference = cpu.generated;
  }, LONG);

  /** Creates a session with weight writes instrumented, generates greedily, and checks chunks and progress. */
  async function run(engine: Engine): Promise<number[]> {
    const queue = gpu!.device.queue;
    const write = queue.writeBuffer.bind(queue);
    const weightLabels = new Set(engine.manifest.weights.flatMap((w) => w.parts.map((p) => `${w.name}.${p.role}`)));
    const sizes: number[] = [];
    (queue as { writeBuffer: unknown }).writeBuffer = (buffer: GPUBuffer, offset: number, data: ArrayBuffer, dataOffset?: number, size?: number) => {
      if (weightLabels.has(buffer.label)) sizes.push(size ?? data.byteLength);
      return write(buffer, offset, data, dataOffset, size);
    };
    const reports: SessionLoadProgress[] = [];
    let session;
    try {
      session = await engine.createSession({ device: gpu!, uploadChunkBytes: chunk, onProgress: (p) => reports.push(p) });
    } finally {
      delete (queue as { writeBuffer?: unknown }).writeBuffer;
    }
    try {
      const total = engine.manifest.weightsByteLength!;
      expect(sizes.length).toBeGreaterThan(0);
      expect(Math.max(...sizes)).toBeLessThanOrEqual(chunk);
      const bytes = reports.filter((r) => r.stage === 'weights').map((r) => r.loadedBytes!);
      expect(bytes).toEqual([...bytes].sort((a, b) => a - b));
      expect(bytes[bytes.length - 1]).toBe(total);
      expect(reports.filter((r) => r.stage === 'weights').every((r) => r.totalBytes === total)).toBe(true);
      expect(reports[reports.length - 1].stage).toBe('done');
      const downloaded = reports.filter((r) => r.stage === 'download').map((r) => r.loadedBytes!);
      expect(downloaded).toEqual([...downloaded].sort((a, b) => a - b));
      if (downloaded.length) expect(downloaded[downloaded.length - 1]).toBe(total);
      const r = await session.generate(prompt, { steps, temperature: 0, topp: 0.9, seed: 1 });
      return r.generated;
    } finally {
      await session.destroy();
    }
  }

  it('the compiled engine and the engine loaded from its directory generate the CPU reference ids', async (ctx) => {
    if (!gpu) return ctx.skip();
    expect(compiled.manifest.weightsSha256).toBe(createHash('sha256').update(compiled.weightBytes).digest('hex'));
    expect(await run(compiled)).toEqual(reference);
    const fromDir = await Engine.load(dir);
    expect(await run(fromDir)).toEqual(reference);
    const tok = await fromDir.loadTokenizer();
    expect(tok?.encode('Once upon a time')).toEqual(prompt);
  }, LONG);

  it('loaded from a file: URL, { manifest, weights }, fetched URLs, a Response, an ArrayBuffer and a single-file path: the same ids', async (ctx) => {
    if (!gpu) return ctx.skip();
    const single = readFileSync(join(tmp, 'stories260K.twengine'));
    const site = new Map([
      ['/e/engine.json', readFileSync(join(dir, 'engine.json'))],
      ['/e/weights.bin', readFileSync(join(dir, 'weights.bin'))],
      ['/e/tokenizer.bin', readFileSync(join(dir, 'tokenizer.bin'))],
    ]);
    const { fetch, counts } = fakeFetch(site);
    const caches = new FakeCacheStorage();
    const sources: [string, () => Promise<Engine>][] = [
      ['file: URL', () => Engine.load(pathToFileURL(dir).href)],
      ['{ manifest, weights }', () => Engine.load({ manifest: join(dir, 'engine.json'), weights: join(dir, 'weights.bin') })],
      ['https URL with a cache', () => Engine.load('https://example.test/e/', { fetch, cache: 'cache-api', caches })],
      ['https URL, weights from the cache', () => Engine.load('https://example.test/e/', { fetch, cache: 'cache-api', caches })],
      ['Response', () => Engine.load(new Response(unevenStream(single)))],
      ['ArrayBuffer', () => Engine.load(single.buffer.slice(single.byteOffset, single.byteOffset + single.byteLength))],
      ['single-file path', () => Engine.load(join(tmp, 'stories260K.twengine'))],
    ];
    for (const [what, load] of sources) {
      const engine = await load();
      expect(await run(engine), what).toEqual(reference);
    }
    expect(counts.get('/e/weights.bin')).toBe(1); // the second URL load read the cache
    const viaUrl = await Engine.load('https://example.test/e/', { fetch });
    expect((await viaUrl.loadTokenizer())?.encode('Once upon a time')).toEqual(prompt);
  }, LONG);

  it('a corrupted byte of weights.bin fails createSession with a ModelFormatError naming weightsSha256', async (ctx) => {
    if (!gpu) return ctx.skip();
    const bad = join(tmp, 'stories260K-bad');
    cpSync(dir, bad, { recursive: true });
    const w = readFileSync(join(bad, 'weights.bin'));
    w[w.byteLength >> 1] ^= 0x10;
    writeFileSync(join(bad, 'weights.bin'), w);
    const engine = await Engine.load(bad);
    expectFormatError(await rejection(engine.createSession({ device: gpu })), 'weightsSha256');
    // the device stays usable (the failed session popped its error scopes and released its buffers)
    expect(await run(await Engine.load(dir))).toEqual(reference);
  }, LONG);
});
