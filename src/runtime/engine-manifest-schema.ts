/**
 * The schema of a saved engine: {@link validateEngineManifest} checks an `engine.json` (parsed, of unknown shape)
 * against the types of `engine-manifest.ts` before the runtime reads any of it, and {@link checkEngineLimits} checks a
 * valid manifest against a device's limits before a session creates buffers.
 *
 * What is checked: the format name and version; the integrity fields (`weightsByteLength`, and `weightsSha256`, which
 * the runtime checks as the weights stream, so tampering with them is detectable); the kind and range of every field (strings, enums, non-negative
 * safe integers); that every reference points at something that exists (a dispatch's kernel, its bindings' slots,
 * weights and their parts, inputs and KV layers; the logits output; BOS and stop tokens inside the vocabulary); that
 * every weight part lies inside `weights.bin` (`byteOffset + byteLength` ≤ its size); that sizes the runtime turns
 * into host or GPU allocations are bounded (KV-cache geometry, block counts, positions, vocabulary, buffer bytes,
 * kernel parameters) before any allocation; and that dim expressions (shapes, parameters, grids) parse. Every
 * complaint is a `ModelFormatError` naming the field by its path (`kv.numBlocks`, `weights[3].parts[0].byteOffset`).
 *
 * Where an engine may come from: loading one means handing its WGSL to the GPU driver's shader compiler and its
 * dispatches to the device, so only load engines you trust (ones you compiled, or from a source you would take code
 * from). Validation makes a corrupt or hostile manifest fail with a typed error instead of a crash or an allocation
 * the file does not pay for; it does not make untrusted WGSL safe to run.
 *
 * Hand-written rather than built on a schema library: the runtime entry point stays dependency-free and small, and
 * most rules cross fields (offsets against the file size, references between dispatches, kernels and slots), which
 * schema libraries express no better than code.
 * @module
 */
import { DeviceError, ModelFormatError } from '../errors.js';
import { DTYPES } from '../ir/dtype.js';
import { parseDim } from '../ir/dim.js';
import { KV_CACHE_DTYPES, kvPoolLayout } from '../ir/kv-cache-quant.js';
import { ENGINE_FORMAT_VERSION, type BufferRef, type DispatchManifest, type EngineManifest } from './engine-manifest.js';

/** Bounds a manifest is held to before any device is known (far above what any real engine needs). */
export const ENGINE_MANIFEST_BOUNDS = Object.freeze({
  /** Bytes of one buffer (slot, input, KV pool, weight part): 2^40. */
  bufferBytes: 2 ** 40,
  /** Decoder layers of the KV cache. */
  kvLayers: 4096,
  /** KV heads, and head size. */
  kvHeads: 4096,
  /** Head size. */
  headDim: 4096,
  /** Tokens per KV block (a power of two). */
  blockSize: 4096,
  /** Blocks per KV pool (the host keeps a free list of them). */
  numBlocks: 2 ** 24,
  /** Positions of a sequence (the host keeps a block table for them). */
  maxPositions: 2 ** 24,
  /** Vocabulary size. */
  vocabSize: 2 ** 24,
  /** Kernel parameters: one 256-byte uniform slot holds 64 u32s. */
  kernelParams: 64,
  /** Storage bindings of one kernel. */
  kernelBindings: 64,
  /** Nesting of a dispatch-grid expression. */
  gridDepth: 8,
  /** Dims of a shape. */
  rank: 8,
  /** Payload parts of one weight. */
  weightParts: 16,
  /** Plans. */
  plans: 16,
  /** Scratch buffers. */
  scratchBuffers: 256,
  /** Stop tokens. */
  stopTokens: 1024,
});

/** Bytes per element of each weight-part array kind. */
const ARRAY_BYTES: Readonly<Record<string, number>> = { f32: 4, u16: 2, i32: 4, u32: 4, u8: 1 };

/** The weight encodings a manifest may name. */
const ENCODING_KINDS: readonly string[] = ['dense', 'quantized', 'codebook', 'sparse-nm', 'sparse-block'];

type Obj = Readonly<Record<string, unknown>>;

/** Field checks that throw a {@link ModelFormatError} naming the path. */
class Checker {
  constructor(private readonly file: string | undefined) {}

  fail(path: string, message: string, offset = 0): never {
    throw new ModelFormatError(path, offset, message, this.file);
  }

  obj(path: string, v: unknown): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(path, `must be an object, got ${describe(v)}`);
    return v as Obj;
  }

  arr(path: string, v: unknown, max: number, min = 0): readonly unknown[] {
    if (!Array.isArray(v)) this.fail(path, `must be an array, got ${describe(v)}`);
    if (v.length < min || v.length > max) this.fail(path, `must have ${min === max ? min : `${min} to ${max}`} elements, got ${v.length}`);
    return v;
  }

  str(path: string, v: unknown, nonEmpty = false): string {
    if (typeof v !== 'string') this.fail(path, `must be a string, got ${describe(v)}`);
    if (nonEmpty && v === '') this.fail(path, 'must not be empty');
    return v;
  }

  strs(path: string, v: unknown, max: number): readonly string[] {
    return this.arr(path, v, max).map((x, i) => this.str(`${path}[${i}]`, x));
  }

  oneOf<T extends string>(path: string, v: unknown, allowed: readonly T[]): T {
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) this.fail(path, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${describe(v)}`);
    return v as T;
  }

  /** An integer in [min, max]. */
  int(path: string, v: unknown, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(path, `must be an integer, got ${describe(v)}`);
    if (v < min || v > max) this.fail(path, `must be in [${min}, ${max}], got ${v}`);
    return v;
  }

  /** A finite number in [min, max]. */
  num(path: string, v: unknown, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(path, `must be a finite number, got ${describe(v)}`);
    if (v < min || v > max) this.fail(path, `must be in [${min}, ${max}], got ${v}`);
    return v;
  }

  /** A dim expression's text (`seq`, `past+seq`, `64`). */
  dim(path: string, v: unknown): string {
    const s = this.str(path, v, true);
    if (s.length > 256) this.fail(path, `dim expression of ${s.length} characters is too long`);
    try {
      parseDim(s);
    } catch (e) {
      this.fail(path, `${JSON.stringify(s)} is not a dim expression (${(e as Error).message})`);
    }
    return s;
  }
}

/** A value as a message quotes it (short). */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

/** A dispatch-grid expression: a count, a parameter or dim expression, or `{ceilDiv|mul|min|max: [...]}`. */
function checkGrid(c: Checker, path: string, e: unknown, depth: number): void {
  if (typeof e === 'number') {
    c.int(path, e, 0, 2 ** 32 - 1);
    return;
  }
  if (typeof e === 'string') {
    c.dim(path, e);
    return;
  }
  const o = c.obj(path, e);
  const keys = Object.keys(o);
  if (keys.length !== 1 || !['ceilDiv', 'mul', 'min', 'max'].includes(keys[0])) c.fail(path, `must be a number, a string or one of {ceilDiv}, {mul}, {min}, {max}, got keys ${describe(keys)}`);
  if (depth >= ENGINE_MANIFEST_BOUNDS.gridDepth) c.fail(path, `grid expression nested more than ${ENGINE_MANIFEST_BOUNDS.gridDepth} deep`);
  const k = keys[0];
  const args = k === 'ceilDiv' ? c.arr(`${path}.${k}`, o[k], 2, 2) : c.arr(`${path}.${k}`, o[k], 16, 1);
  args.forEach((x, i) => checkGrid(c, `${path}.${k}[${i}]`, x, depth + 1));
  if (k === 'ceilDiv' && args[1] === 0) c.fail(`${path}.ceilDiv[1]`, 'divides by 0');
}

/**
 * Checks a parsed `engine.json` against the engine manifest schema (see the module comment) and returns it typed.
 * @param value - The parsed JSON.
 * @param weightsByteLength - Size of `weights.bin` (default: the manifest's `weightsByteLength`): every weight part
 *   must lie inside it. When neither is known, the engine checks the parts against the weights it is given.
 * @param file - Where the manifest came from, for messages.
 * @throws `ModelFormatError` naming the first offending field by its path.
 */
export function validateEngineManifest(value: unknown, weightsByteLength?: number, file?: string): EngineManifest {
  const c: Checker = new Checker(file);
  const B = ENGINE_MANIFEST_BOUNDS;
  const m = c.obj('manifest', value);
  if (m.format !== 'tensorwright-engine') c.fail('format', `not a tensorwright engine manifest (format ${describe(m.format)})`);
  if (m.version !== ENGINE_FORMAT_VERSION) c.fail('version', `engine format version ${describe(m.version)} is not supported (this runtime reads version ${ENGINE_FORMAT_VERSION})`);
  // the integrity fields: the size of weights.bin and its SHA-256, which the runtime checks as the weights stream
  if (m.weightsSha256 !== undefined && !(typeof m.weightsSha256 === 'string' && /^[0-9a-f]{64}$/i.test(m.weightsSha256))) c.fail('weightsSha256', `must be 64 hex digits, got ${describe(m.weightsSha256)}`);
  const declared = m.weightsByteLength === undefined ? undefined : c.int('weightsByteLength', m.weightsByteLength, 0, Number.MAX_SAFE_INTEGER);
  const weightsEnd = weightsByteLength ?? declared ?? Number.MAX_SAFE_INTEGER;
  const created = c.obj('created', m.created);
  c.str('created.by', created.by);
  c.str('created.at', created.at);
  const device = c.obj('device', m.device);
  c.str('device.description', device.description);
  c.strs('device.features', device.features, 64);
  const model = c.obj('model', m.model);
  c.str('model.family', model.family);
  c.strs('requiredFeatures', m.requiredFeatures, 64);

  // kernels
  const kernels = c.arr('kernels', m.kernels, 2 ** 16).map((kv, i) => {
    const p = `kernels[${i}]`;
    const k = c.obj(p, kv);
    c.str(`${p}.family`, k.family, true);
    c.str(`${p}.variant`, k.variant);
    c.str(`${p}.wgsl`, k.wgsl, true);
    const bindings = c.arr(`${p}.bindings`, k.bindings, B.kernelBindings);
    const access = bindings.map((bv, j) => {
      const b = c.obj(`${p}.bindings[${j}]`, bv);
      c.str(`${p}.bindings[${j}].name`, b.name);
      return c.oneOf(`${p}.bindings[${j}].access`, b.access, ['read', 'read_write']);
    });
    const params = c.arr(`${p}.params`, k.params, B.kernelParams);
    params.forEach((x, j) => c.dim(`${p}.params[${j}]`, x));
    const grid = c.arr(`${p}.grid`, k.grid, 3, 3);
    grid.forEach((g, j) => checkGrid(c, `${p}.grid[${j}]`, g, 0));
    c.strs(`${p}.nodes`, k.nodes, 2 ** 16);
    if (k.features !== undefined) c.strs(`${p}.features`, k.features, 64);
    if (k.schedule !== undefined) {
      const sch = c.obj(`${p}.schedule`, k.schedule);
      c.oneOf(`${p}.schedule.source`, sch.source, ['heuristic', 'tuned', 'explore']);
      c.str(`${p}.schedule.signature`, sch.signature, true);
      c.str(`${p}.schedule.variant`, sch.variant, true);
      const n = sch.candidates === undefined ? 1024 : c.int(`${p}.schedule.candidates`, sch.candidates, 1, 1024);
      c.int(`${p}.schedule.candidate`, sch.candidate, 0, n - 1);
    }
    return { bindings: bindings.length, access };
  });

  // weights: every part inside weights.bin, roles unique per weight
  const weightRoles = c.arr('weights', m.weights, 2 ** 20).map((wv, i) => {
    const p = `weights[${i}]`;
    const w = c.obj(p, wv);
    c.str(`${p}.id`, w.id);
    c.str(`${p}.name`, w.name);
    c.oneOf(`${p}.dtype`, w.dtype, DTYPES);
    c.arr(`${p}.shape`, w.shape, B.rank).forEach((d, j) => c.int(`${p}.shape[${j}]`, d, 0, Number.MAX_SAFE_INTEGER));
    const enc = c.obj(`${p}.encoding`, w.encoding);
    c.oneOf(`${p}.encoding.kind`, enc.kind, ENCODING_KINDS);
    const roles = new Set<string>();
    c.arr(`${p}.parts`, w.parts, B.weightParts, 1).forEach((pv, j) => {
      const q = `${p}.parts[${j}]`;
      const part = c.obj(q, pv);
      const role = c.str(`${q}.role`, part.role, true);
      if (roles.has(role)) c.fail(`${q}.role`, `weight '${String(w.name)}' has two '${role}' parts`);
      roles.add(role);
      const array = c.oneOf(`${q}.array`, part.array, ['f32', 'u16', 'i32', 'u32', 'u8']);
      const offset = c.int(`${q}.byteOffset`, part.byteOffset, 0, Number.MAX_SAFE_INTEGER);
      if (offset % 4 !== 0) c.fail(`${q}.byteOffset`, `must be a multiple of 4, got ${offset}`, offset);
      const length = c.int(`${q}.byteLength`, part.byteLength, 0, B.bufferBytes);
      if (length % ARRAY_BYTES[array] !== 0) c.fail(`${q}.byteLength`, `${length} bytes is not a whole number of ${array} elements`, offset);
      if (offset + length > weightsEnd)
        c.fail(`${q}.byteOffset`, `payload [${offset}, ${offset + length}) of weight '${String(w.name)}' (${role}) runs past the end of weights.bin (${weightsEnd} bytes)`, offset);
    });
    return roles;
  });

  const slots = c.arr('slots', m.slots, 2 ** 16).map((s, i) => c.int(`slots[${i}]`, s, 0, B.bufferBytes));
  // scratch buffers: the session allocates each before any dispatch, so their sizes are bounded like slots'
  const scratch = m.scratch === undefined ? [] : c.arr('scratch', m.scratch, B.scratchBuffers).map((s, i) => c.int(`scratch[${i}]`, s, 0, B.bufferBytes));

  // the KV cache: every size the session allocates from is bounded here
  let kvLayers = 0;
  if (m.kv !== undefined) {
    const kv = c.obj('kv', m.kv);
    kvLayers = c.int('kv.layers', kv.layers, 1, B.kvLayers);
    const heads = c.int('kv.numKvHeads', kv.numKvHeads, 1, B.kvHeads);
    const headDim = c.int('kv.headDim', kv.headDim, 1, B.headDim);
    const blockSize = c.int('kv.blockSize', kv.blockSize, 1, B.blockSize);
    if ((blockSize & (blockSize - 1)) !== 0) c.fail('kv.blockSize', `must be a power of two, got ${blockSize}`);
    const numBlocks = c.int('kv.numBlocks', kv.numBlocks, 1, B.numBlocks);
    const dtype = c.oneOf('kv.dtype', kv.dtype, KV_CACHE_DTYPES);
    const pool = numBlocks * kvPoolLayout(dtype, blockSize, heads, headDim).blockBytes;
    if (pool > B.bufferBytes) c.fail('kv.numBlocks', `a KV pool of ${numBlocks} blocks x ${blockSize} tokens x ${heads} heads x ${headDim} (${dtype}) is ${pool} bytes, more than ${B.bufferBytes}`);
    if (kv.keyShift !== undefined) {
      const ks = c.obj('kv.keyShift', kv.keyShift);
      const k = c.int('kv.keyShift.kernel', ks.kernel, 0, kernels.length - 1);
      c.str('kv.keyShift.label', ks.label);
      // bindings x (a K pool), positions, out (a scratch pool)
      if (kernels[k].bindings !== 3) c.fail('kv.keyShift.kernel', `the key-shift kernel takes 3 buffers (K pool, positions, scratch), kernel ${k} takes ${kernels[k].bindings}`);
      if (dtype !== 'f32' && dtype !== 'f16') c.fail('kv.keyShift', `a key shift rotates f32 or f16 keys, the KV cache is ${dtype}`);
    }
  }

  // inputs and outputs
  const io = (key: 'inputs' | 'outputs'): Map<string, Obj> => {
    const names = new Map<string, Obj>();
    c.arr(key, m[key], 4096).forEach((v, i) => {
      const p = `${key}[${i}]`;
      const x = c.obj(p, v);
      const name = c.str(`${p}.name`, x.name, true);
      if (names.has(name)) c.fail(`${p}.name`, `'${name}' is declared twice`);
      names.set(name, x);
      c.oneOf(`${p}.dtype`, x.dtype, DTYPES);
      const shape = c.arr(`${p}.shape`, x.shape, B.rank).map((d, j) => c.dim(`${p}.shape[${j}]`, d));
      const maxBytes = c.int(`${p}.maxBytes`, x.maxBytes, 0, B.bufferBytes);
      if (x.values !== undefined) {
        // the runtime fills these from the values: the shape must be known and the values must fit the buffer
        const dims = shape.map((d, j) => (/^\d+$/.test(d) ? Number(d) : c.fail(`${p}.shape[${j}]`, `an input the runtime computes needs a fixed shape, got ${JSON.stringify(d)}`)));
        const count = dims.reduce((a, b) => a * b, 1);
        const values = c.arr(`${p}.values`, x.values, Math.max(1, count), 1);
        if (values.length !== 1 && values.length !== count) c.fail(`${p}.values`, `has ${values.length} values for ${count} elements`);
        values.forEach((d, j) => c.dim(`${p}.values[${j}]`, d));
        if (count * 4 > Math.max(16, maxBytes)) c.fail(`${p}.maxBytes`, `${maxBytes} bytes cannot hold the ${count} values the runtime writes`);
      }
    });
    return names;
  };
  const inputs = io('inputs');

  const ref = (path: string, v: unknown, observer = false): BufferRef => {
    const r = c.obj(path, v);
    const kind = c.oneOf(`${path}.kind`, r.kind, ['arena', 'weight', 'input', 'kv', 'block-table', 'sample', 'attention-mass', 'scratch']);
    switch (kind) {
      case 'arena': {
        const slot = c.int(`${path}.slot`, r.slot, 0, slots.length - 1);
        c.int(`${path}.size`, r.size, 0, slots[slot]);
        break;
      }
      case 'weight': {
        const w = c.int(`${path}.weight`, r.weight, 0, weightRoles.length - 1);
        const part = c.str(`${path}.part`, r.part);
        if (!weightRoles[w].has(part)) c.fail(`${path}.part`, `weight ${w} has no '${part}' part`);
        break;
      }
      case 'input':
        if (!inputs.has(c.str(`${path}.name`, r.name))) c.fail(`${path}.name`, `names input ${describe(r.name)}, which the engine does not declare`);
        break;
      case 'kv':
        if (m.kv === undefined) c.fail(path, 'binds the KV cache of an engine without one');
        c.int(`${path}.layer`, r.layer, 0, kvLayers - 1);
        c.oneOf(`${path}.which`, r.which, ['k', 'v']);
        break;
      case 'block-table':
        if (m.kv === undefined) c.fail(path, 'binds the block table of an engine without a KV cache');
        break;
      case 'sample':
        break;
      case 'attention-mass':
        if (!observer) c.fail(`${path}.kind`, 'only the attention-mass observers (kv.attentionMass) bind the attention-mass buffer');
        break;
      case 'scratch': {
        if (scratch.length === 0) c.fail(path, 'binds a scratch buffer of an engine without any (scratch)');
        const i = c.int(`${path}.index`, r.index, 0, scratch.length - 1);
        c.int(`${path}.size`, r.size, 0, scratch[i]);
        break;
      }
    }
    return r as unknown as BufferRef;
  };

  const outputs = io('outputs');
  for (const [i, o] of [...outputs.values()].entries()) {
    const r = ref(`outputs[${i}].ref`, o.ref);
    if (r.kind !== 'arena') c.fail(`outputs[${i}].ref.kind`, `an output is read back from an activation slot, got ${describe(r.kind)}`);
  }

  const dispatch = (path: string, v: unknown, observer = false): DispatchManifest => {
    const d = c.obj(path, v);
    const k = c.int(`${path}.kernel`, d.kernel, 0, kernels.length - 1);
    c.arr(`${path}.bindings`, d.bindings, kernels[k].bindings, kernels[k].bindings).forEach((b, j) => ref(`${path}.bindings[${j}]`, b, observer));
    c.str(`${path}.label`, d.label);
    return d as unknown as DispatchManifest;
  };

  let lastMaxSeq = 0;
  const plans = c.arr('plans', m.plans, B.plans);
  const planDispatches = plans.map((pv, i) => {
    const p = `plans[${i}]`;
    const plan = c.obj(p, pv);
    c.str(`${p}.name`, plan.name);
    const maxSeq = c.int(`${p}.maxSeq`, plan.maxSeq, lastMaxSeq + 1, 2 ** 32);
    lastMaxSeq = maxSeq;
    return c.arr(`${p}.dispatches`, plan.dispatches, 2 ** 20).map((d, j) => dispatch(`${p}.dispatches[${j}]`, d));
  });

  if (m.lm !== undefined) {
    const lm = c.obj('lm', m.lm);
    if (m.kv === undefined) c.fail('lm', 'a causal LM engine needs a KV cache (kv)');
    if (plans.length === 0) c.fail('plans', 'a causal LM engine needs at least one plan');
    const vocab = c.int('lm.vocabSize', lm.vocabSize, 1, B.vocabSize);
    const logits = c.str('lm.logits', lm.logits);
    const out = outputs.get(logits);
    if (!out) c.fail('lm.logits', `names output '${logits}', which the engine does not declare`);
    const slot = (out.ref as { slot: number }).slot;
    if (vocab * 4 > slots[slot]) c.fail('lm.vocabSize', `${vocab} logits do not fit the ${slots[slot]}-byte activation slot ${slot} of output '${logits}'`);
    c.int('lm.maxPositions', lm.maxPositions, 1, B.maxPositions);
    c.int('lm.bosId', lm.bosId, 0, vocab - 1);
    c.arr('lm.stopTokens', lm.stopTokens, B.stopTokens).forEach((t, i) => c.int(`lm.stopTokens[${i}]`, t, 0, vocab - 1));
    dispatch('lm.argmax', lm.argmax);
    dispatch('lm.sampler', lm.sampler);
    // the runtime writes each chunk's token ids (and positions) into these inputs
    for (const name of ['tokens', 'positions']) {
      const x = inputs.get(name);
      if (!x) {
        if (name === 'tokens') c.fail('inputs', "a causal LM engine needs a 'tokens' input");
        continue;
      }
      if (x.dtype !== 'i32') c.fail(`inputs['${name}'].dtype`, `must be "i32", got ${describe(x.dtype)}`);
      if ((x.maxBytes as number) < 4 * lastMaxSeq) c.fail(`inputs['${name}'].maxBytes`, `${String(x.maxBytes)} bytes cannot hold the ${lastMaxSeq} ids of the largest plan`);
    }
  }
  // H2O's attention-mass observers: per plan, in increasing order of the dispatch each follows, each an f32
  // read-write last binding on the attention-mass buffer (its other bindings as any dispatch's)
  if (m.kv !== undefined && (m.kv as Obj).attentionMass !== undefined) {
    const am = c.obj('kv.attentionMass', (m.kv as Obj).attentionMass);
    c.str('kv.attentionMass.label', am.label);
    if (m.lm === undefined) c.fail('kv.attentionMass', 'attention-mass observers need a causal LM engine (lm)');
    const kvDType = (m.kv as Obj).dtype;
    if (kvDType !== 'f32' && kvDType !== 'f16') c.fail('kv.attentionMass', `the attention mass reads f32 or f16 keys, the KV cache is ${describe(kvDType)}`);
    c.arr('kv.attentionMass.plans', am.plans, plans.length, plans.length).forEach((ov, i) => {
      let last = -1;
      c.arr(`kv.attentionMass.plans[${i}]`, ov, planDispatches[i].length).forEach((xv, j) => {
        const p = `kv.attentionMass.plans[${i}][${j}]`;
        const x = c.obj(p, xv);
        last = c.int(`${p}.after`, x.after, last + 1, planDispatches[i].length - 1);
        const d = dispatch(`${p}.dispatch`, x.dispatch, true);
        const masses = d.bindings.filter((b) => b.kind === 'attention-mass').length;
        if (masses !== 1 || d.bindings.at(-1)?.kind !== 'attention-mass') c.fail(`${p}.dispatch.bindings`, 'an observer binds the attention-mass buffer once, last');
        if (kernels[d.kernel].access.at(-1) !== 'read_write') c.fail(`${p}.dispatch.kernel`, 'an observer kernel writes the attention-mass buffer (its last binding read_write)');
      });
    });
  }
  return value as EngineManifest;
}

/** The limits {@link checkEngineLimits} reads (WebGPU limit names; absent ones are not checked). */
export type EngineDeviceLimits = Readonly<Record<string, number>>;

/**
 * Checks a validated manifest against a device's limits before a session creates anything on it: every buffer the
 * session creates against `maxBufferSize`, every storage binding (activation slots, scratch buffers, weight parts, inputs, KV pools,
 * the block table) against `maxStorageBufferBindingSize`, and each kernel's storage bindings against
 * `maxStorageBuffersPerShaderStage`.
 * @throws `DeviceError` (`LIMIT_EXCEEDED`) naming the buffer and the limit.
 */
export function checkEngineLimits(m: EngineManifest, limits: EngineDeviceLimits): void {
  const maxBuffer = limits.maxBufferSize ?? Infinity;
  const maxBinding = limits.maxStorageBufferBindingSize ?? Infinity;
  const fits = (what: string, bytes: number): void => {
    if (bytes > maxBinding) throw new DeviceError('LIMIT_EXCEEDED', `${what} needs ${bytes} bytes, more than maxStorageBufferBindingSize ${maxBinding}`);
    if (bytes > maxBuffer) throw new DeviceError('LIMIT_EXCEEDED', `${what} needs ${bytes} bytes, more than maxBufferSize ${maxBuffer}`);
  };
  m.slots.forEach((bytes, i) => fits(`activation buffer ${i}`, bytes));
  m.scratch?.forEach((bytes, i) => fits(`scratch buffer ${i}`, bytes));
  for (const io of m.inputs) fits(`input '${io.name}'`, io.maxBytes);
  for (const w of m.weights) for (const p of w.parts) fits(`weight '${w.name}' (${p.role})`, p.byteLength);
  if (m.kv) {
    const kv = m.kv;
    fits('each KV-cache pool (kv.numBlocks blocks of kv.blockSize x kv.numKvHeads x kv.headDim as kv.dtype)', kv.numBlocks * kvPoolLayout(kv.dtype, kv.blockSize, kv.numKvHeads, kv.headDim).blockBytes);
    // one table row per sequence of a step: at most one sequence per token of the largest plan
    const rows = Math.max(1, ...m.plans.map((p) => p.maxSeq));
    fits('the KV block tables', 4 * rows * Math.ceil((m.lm?.maxPositions ?? kv.numBlocks * kv.blockSize) / kv.blockSize));
    // H2O's attention mass: an f32 per row and position a table row covers
    if (kv.attentionMass) fits('the attention-mass buffer (kv.attentionMass)', 4 * rows * Math.ceil((m.lm?.maxPositions ?? kv.numBlocks * kv.blockSize) / kv.blockSize) * kv.blockSize);
  }
  const maxStorage = limits.maxStorageBuffersPerShaderStage;
  if (maxStorage !== undefined)
    m.kernels.forEach((k, i) => {
      if (k.bindings.length > maxStorage) throw new DeviceError('LIMIT_EXCEEDED', `kernel ${i} (${k.family}/${k.variant}) binds ${k.bindings.length} storage buffers, more than maxStorageBuffersPerShaderStage ${maxStorage}`);
    });
}
