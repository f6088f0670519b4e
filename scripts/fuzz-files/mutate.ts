/**
 * The file fuzzer's mutations: byte-level (flip bits, set bytes, truncate, extend, delete, duplicate), integer header
 * fields set to the values that break size arithmetic (0, -1, 2^31, 2^32, 2^53, 2^63, …) at the offsets `fields.ts`
 * locates, two fields of a role swapped (tensor offsets, dims), and JSON documents (safetensors headers, config.json,
 * tokenizer.json, engine.json) edited at the paths each format cares about. Every mutation is a pure function of its
 * inputs and an {@link Rng}, and describes itself in one line, so a case reproduces from its seed alone.
 * @module
 */
import { Rng } from '../../src/util/random.js';
import { FIELD_BYTES, readVarint, type Field } from './fields.js';

/** A mutated file and what was done to it. */
export interface Mutated {
  /** The new bytes. */
  readonly bytes: Uint8Array;
  /** One line saying what changed. */
  readonly what: string;
}

/** A random element of a non-empty list. */
export function pick<T>(rng: Rng, list: readonly T[]): T {
  return list[rng.int(list.length)];
}

/** A random index by weight. */
export function pickWeighted(rng: Rng, weights: readonly number[]): number {
  const total = weights.reduce((a, b) => a + b, 0);
  let r = rng.next() * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i];
    if (r < 0) return i;
  }
  return weights.length - 1;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** How a value reads in a description: powers of two as `2^k`, others in decimal. */
function show(v: bigint): string {
  if (v > 1n && (v & (v - 1n)) === 0n) return `2^${v.toString(2).length - 1}`;
  if (v > 2n && ((v + 1n) & v) === 0n) return `2^${v.toString(2).length}-1`;
  return v.toString();
}

/** The values a lying integer field takes, for a field of `bits` bits whose current value is `old`. */
function specialInteger(rng: Rng, old: bigint, bits: number): bigint {
  const mod = 1n << BigInt(bits);
  const all = (mod - 1n) as bigint;
  const choices: bigint[] = [0n, 1n, all, 1n << 31n, (1n << 31n) - 1n, 1n << 32n, (1n << 32n) - 1n, 1n << 53n, (1n << 53n) + 1n, 1n << 63n, 255n, 65536n, old + 1n, old - 1n, old * 2n, old / 2n, old * 1000n, BigInt(rng.int(64)), BigInt(Math.floor(rng.next() * 2 ** 32))];
  return ((pick(rng, choices) % mod) + mod) % mod;
}

/** The value of a fixed-size or varint field. */
export function readField(bytes: Uint8Array, f: Field): bigint {
  if (f.kind === 'varint') return readVarint(bytes, f.offset, bytes.length)?.value ?? 0n;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (f.offset + f.length > bytes.length) return 0n;
  switch (f.kind) {
    case 'u8':
      return BigInt(dv.getUint8(f.offset));
    case 'i32':
    case 'u32':
    case 'f32':
      return BigInt(dv.getUint32(f.offset, true));
    case 'u64':
      return dv.getBigUint64(f.offset, true);
  }
}

/** The varint encoding of `v`, at least `minLength` bytes (non-minimal encodings pad with continuation bits). */
function encodeVarint(v: bigint, minLength = 1): Uint8Array {
  const out: number[] = [];
  let x = v;
  do {
    out.push(Number(x & 0x7fn));
    x >>= 7n;
  } while (x > 0n || out.length < minLength);
  for (let i = 0; i < out.length - 1; i++) out[i] |= 0x80;
  return Uint8Array.from(out);
}

/** `bytes` with `length` bytes at `offset` replaced by `with`. */
function splice(bytes: Uint8Array, offset: number, length: number, replacement: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length - length + replacement.length);
  out.set(bytes.subarray(0, offset));
  out.set(replacement, offset);
  out.set(bytes.subarray(offset + length), offset + replacement.length);
  return out;
}

/**
 * `bytes` with field `f` set to `v` (reduced to the field's width). A varint keeps its length when `v` fits in it
 * (padded, non-minimal) and is otherwise spliced in longer, which shifts everything after it; with `fixLengths`, the
 * length prefixes of the messages around it grow with it, so the file still parses and the value itself is the lie.
 */
export function writeField(bytes: Uint8Array, f: Field, v: bigint, fixLengths = false): Uint8Array {
  if (f.kind === 'varint') {
    const fits = v < 1n << BigInt(7 * f.length);
    let out = splice(bytes, f.offset, f.length, encodeVarint(v & ((1n << 64n) - 1n), fits ? f.length : 1));
    let delta = fits ? 0 : out.length - bytes.length;
    if (fixLengths && delta !== 0)
      for (const p of [...(f.parents ?? [])].reverse()) {
        const cur = readVarint(out, p.offset, out.length);
        if (!cur) break;
        const len = cur.value + BigInt(delta);
        const size = cur.end - p.offset;
        const enc = encodeVarint(len, len < 1n << BigInt(7 * size) ? size : 1);
        out = splice(out, p.offset, size, enc);
        delta += enc.length - size;
      }
    return out;
  }
  if (f.offset + f.length > bytes.length) return bytes;
  const out = bytes.slice();
  const dv = new DataView(out.buffer);
  const bits = 8 * FIELD_BYTES[f.kind];
  const x = v & ((1n << BigInt(bits)) - 1n);
  if (f.kind === 'u64') dv.setBigUint64(f.offset, x, true);
  else if (f.kind === 'u8') dv.setUint8(f.offset, Number(x));
  else dv.setUint32(f.offset, Number(x), true);
  return out;
}

/** Special float values for float fields (token scores, metadata floats). */
const SPECIAL_FLOATS = [0, -0, 1, -1, NaN, Infinity, -Infinity, 3.4e38, -3.4e38, 1e-45, 0.5];

/** Sets one located field to a special value, or swaps two fields of one role. */
export function mutateField(rng: Rng, bytes: Uint8Array, fields: readonly Field[]): Mutated | undefined {
  if (fields.length === 0) return undefined;
  // a role first, then a field of it: thousands of string lengths do not drown the header
  const groups = [...new Set(fields.map((f) => f.group))];
  // a protobuf length prefix that lies only breaks the framing: values (dims, types, attributes) get most mutations
  const group = groups[pickWeighted(rng, groups.map((g) => (g.startsWith('onnx length') ? 0.15 : 1)))];
  const inGroup = fields.filter((f) => f.group === group);
  const f = pick(rng, inGroup);
  if (inGroup.length > 1 && f.kind !== 'varint' && rng.next() < 0.15) {
    const g = pick(rng, inGroup);
    if (g !== f && g.kind === f.kind) {
      const a = readField(bytes, f);
      const b = readField(bytes, g);
      return { bytes: writeField(writeField(bytes, f, b), g, a), what: `swap ${f.name} @${hex(f.offset)} and ${g.name} @${hex(g.offset)}` };
    }
  }
  if (f.kind === 'f32') {
    const v = pick(rng, SPECIAL_FLOATS);
    const out = bytes.slice();
    if (f.offset + 4 <= out.length) new DataView(out.buffer).setFloat32(f.offset, v, true);
    return { bytes: out, what: `${f.name} @${hex(f.offset)} f32 := ${v}` };
  }
  const bits = f.kind === 'varint' ? 64 : 8 * FIELD_BYTES[f.kind];
  const v = specialInteger(rng, readField(bytes, f), bits);
  // a protobuf value (not a length) keeps the messages around it consistent most of the time
  const fix = f.kind === 'varint' && !f.name.includes(' length @') && rng.next() < 0.75;
  return { bytes: writeField(bytes, f, v, fix), what: `${f.name} @${hex(f.offset)} ${f.kind} := ${show(v)}${fix ? ' (lengths fixed up)' : ''}` };
}

/** A byte-level mutation anywhere in the file (biased towards its first KiB, where headers live). */
export function mutateBytes(rng: Rng, bytes: Uint8Array): Mutated {
  const n = bytes.length;
  const at = (): number => (n === 0 ? 0 : rng.next() < 0.5 ? rng.int(Math.min(n, 1024)) : rng.int(n));
  const op = rng.int(8);
  if (n === 0 || op === 6) {
    const extra = new Uint8Array(1 + rng.int(rng.next() < 0.5 ? 16 : 4096));
    const random = rng.next() < 0.5;
    if (random) for (let i = 0; i < extra.length; i++) extra[i] = rng.int(256);
    const out = new Uint8Array(n + extra.length);
    out.set(bytes);
    out.set(extra, n);
    return { bytes: out, what: `extend by ${extra.length} ${random ? 'random' : 'zero'} bytes` };
  }
  switch (op) {
    case 0: {
      const out = bytes.slice();
      const k = 1 + rng.int(8);
      const where: number[] = [];
      for (let i = 0; i < k; i++) {
        const p = at();
        out[p] ^= 1 << rng.int(8);
        where.push(p);
      }
      return { bytes: out, what: `flip ${k} bit(s) at ${where.map(hex).join(',')}` };
    }
    case 1: {
      const out = bytes.slice();
      const p = at();
      const v = pick(rng, [0, 0xff, 0x7f, 0x80, rng.int(256)]);
      const len = Math.min(1 + rng.int(8), n - p);
      out.fill(v, p, p + len);
      return { bytes: out, what: `set ${len} byte(s) at ${hex(p)} to ${hex(v)}` };
    }
    case 2:
    case 3: {
      const cut = op === 2 ? rng.int(n) : Math.max(0, n - 1 - rng.int(Math.min(n, 64)));
      return { bytes: bytes.slice(0, cut), what: `truncate to ${cut} of ${n} bytes` };
    }
    case 4: {
      const p = at();
      const len = Math.min(1 + rng.int(64), n - p);
      const out = new Uint8Array(n - len);
      out.set(bytes.subarray(0, p));
      out.set(bytes.subarray(p + len), p);
      return { bytes: out, what: `delete ${len} byte(s) at ${hex(p)}` };
    }
    case 5: {
      const p = at();
      const len = Math.min(1 + rng.int(64), n - p);
      const out = new Uint8Array(n + len);
      out.set(bytes.subarray(0, p + len));
      out.set(bytes.subarray(p, p + len), p + len);
      out.set(bytes.subarray(p + len), p + 2 * len);
      return { bytes: out, what: `duplicate ${len} byte(s) at ${hex(p)}` };
    }
    default: {
      // copy one 4- or 8-byte word over another: plausible values in the wrong place
      const w = rng.next() < 0.5 ? 4 : 8;
      if (n < 2 * w) return mutateBytes(rng, bytes.slice(0, n - 1));
      const from = rng.int(n - w);
      const to = at() % (n - w);
      const out = bytes.slice();
      out.copyWithin(to, from, from + w);
      return { bytes: out, what: `copy ${w} bytes from ${hex(from)} to ${hex(to)}` };
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// JSON

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A path into a JSON document. */
export type JsonPath = readonly (string | number)[];

/** Every path in a document (the root excluded), parents before children. */
export function jsonPaths(doc: Json, limit = 100_000): JsonPath[] {
  const out: JsonPath[] = [];
  const walk = (v: Json, path: (string | number)[]): void => {
    if (out.length >= limit) return;
    if (Array.isArray(v)) v.forEach((x, i) => (out.push([...path, i]), walk(x, [...path, i])));
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push([...path, k]), walk(x, [...path, k]);
  };
  walk(doc, []);
  return out;
}

/** How a path reads (`kv.numBlocks`, `weights[3].parts[0].byteOffset`). */
export function pathText(path: JsonPath): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

function parentOf(doc: Json, path: JsonPath): { parent: Json[] | { [k: string]: Json }; key: string | number } | undefined {
  let v: Json = doc;
  for (const p of path.slice(0, -1)) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, Json>)[p];
  }
  if (v === null || typeof v !== 'object') return undefined;
  const key = path[path.length - 1];
  if (!Object.prototype.hasOwnProperty.call(v, key)) return undefined;
  return { parent: v, key };
}

/** Number texts JSON.stringify cannot write but a file can hold (they parse as Infinity, 2^64+1, …). */
const RAW_NUMBERS = ['1e999', '-1e999', '18446744073709551617', '-0', '1e-400', '9007199254740993'];

/** Marker strings that {@link serializeJson} replaces by raw number texts. */
const RAW_MARK = '\u0000raw:';

/** Numbers that break size arithmetic in JSON fields. */
const SPECIAL_NUMBERS = [0, -1, 1, 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e12, 1e308, -1e308, 1.5, -0.5, 0.1, 65536, 255];

/** Values of other types to put where a number, string, array or object was. */
const OTHER_VALUES: Json[] = [null, true, false, '', 'x', '-1', [], {}, [0], [-1, 2 ** 53], { kind: 'arena' }];

/**
 * Edits one path of `doc` in place: a `interesting` path most of the time, else any. Numbers take special values or
 * small changes, any value may take another type or be deleted, arrays lose or duplicate an element, and two values
 * under the same key name (two tensors' `data_offsets`, two parts' `byteOffset`) may be swapped.
 */
export function mutateJson(rng: Rng, doc: Json, paths: readonly JsonPath[], interesting: readonly RegExp[]): string | undefined {
  if (paths.length === 0) return undefined;
  let candidates = paths;
  if (interesting.length && rng.next() < 0.8) {
    const re = pick(rng, interesting);
    const hits = paths.filter((p) => re.test(pathText(p)));
    if (hits.length) candidates = hits;
  }
  const path = pick(rng, candidates);
  const at = parentOf(doc, path);
  if (!at) return undefined;
  const { parent, key } = at;
  const old = (parent as Record<string | number, Json>)[key];
  const text = pathText(path);
  const set = (v: Json): void => {
    (parent as Record<string | number, Json>)[key] = v;
  };
  const r = rng.next();
  if (r < 0.08) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key as string];
    return `delete ${text}`;
  }
  if (r < 0.16) {
    // swap with a value under the same last key elsewhere (another tensor's offsets, another part's byteOffset)
    const last = path[path.length - 1];
    const same = paths.filter((p) => p !== path && p[p.length - 1] === last && p.length === path.length);
    if (same.length) {
      const other = pick(rng, same);
      const o = parentOf(doc, other);
      if (o) {
        const ov = (o.parent as Record<string | number, Json>)[o.key];
        (o.parent as Record<string | number, Json>)[o.key] = old;
        set(ov);
        return `swap ${text} and ${pathText(other)}`;
      }
    }
  }
  if (Array.isArray(old) && old.length && r < 0.3) {
    if (rng.next() < 0.5) {
      const i = rng.int(old.length);
      old.splice(i, 1);
      return `drop ${text}[${i}]`;
    }
    const i = rng.int(old.length);
    old.splice(i, 0, structuredClone(old[i]));
    return `duplicate ${text}[${i}]`;
  }
  if (typeof old === 'number' || r < 0.55) {
    const q = rng.next();
    if (q < 0.1) {
      const raw = pick(rng, RAW_NUMBERS);
      set(`${RAW_MARK}${raw}`);
      return `${text} := ${raw}`;
    }
    const v = typeof old === 'number' && q < 0.4 ? pick(rng, [old + 1, old - 1, old * 2, Math.floor(old / 2), -old, old * 1000]) : pick(rng, SPECIAL_NUMBERS);
    set(v);
    return `${text} := ${v}`;
  }
  if (typeof old === 'string' && rng.next() < 0.5) {
    const v = pick(rng, ['', old.slice(0, Math.max(0, old.length - 1)), `${old}x`, old.toUpperCase(), `${old}${old}`, '__proto__', 'constructor']);
    set(v);
    return `${text} := ${JSON.stringify(v)}`;
  }
  const v = structuredClone(pick(rng, OTHER_VALUES));
  set(v);
  return `${text} := ${JSON.stringify(v)}`;
}

/** JSON text of a mutated document, with the raw number markers written as raw numbers. */
export function serializeJson(doc: Json): string {
  const text = JSON.stringify(doc);
  return text.includes('\\u0000raw:') ? text.replace(/"\\u0000raw:([^"]*)"/g, '$1') : text;
}
