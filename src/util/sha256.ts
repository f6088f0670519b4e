/**
 * SHA-256 content hashes (FIPS 180-4) as lowercase hex: one-shot over bytes held in memory ({@link sha256Hex}, with
 * `crypto.subtle`), and incremental over a stream ({@link createSha256}: Node's native hash when running in Node,
 * else a small pure-JS implementation), so weights that stream from a file or the network to the GPU can be checked
 * without holding a second copy of them.
 * @module
 */
import { importNodeBuiltin } from './node-builtin.js';

/** An incremental SHA-256: feed bytes in order with `update`, then read the hash once with `hex`. */
export interface Sha256 {
  /** Adds bytes (they are read before `update` returns; the caller may reuse the array). */
  update(bytes: Uint8Array): void;
  /** The hash of everything added, as 64 lowercase hex digits (no more `update` after this). */
  hex(): string;
}

/** The SHA-256 of `bytes` as lowercase hex, with `crypto.subtle` (Node 20 and browsers). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = (globalThis as { crypto?: Crypto }).crypto?.subtle;
  if (!subtle) {
    const h = new Sha256Js();
    h.update(bytes);
    return h.hex();
  }
  const digest = await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return toHex(new Uint8Array(digest));
}

/** An incremental SHA-256: Node's `crypto.createHash('sha256')` in Node, {@link Sha256Js} elsewhere. */
export async function createSha256(): Promise<Sha256> {
  if (typeof process !== 'undefined' && typeof process.versions?.node === 'string') {
    try {
      const { createHash } = await importNodeBuiltin<typeof import('node:crypto')>('crypto');
      const h = createHash('sha256');
      return { update: (b) => void h.update(b), hex: () => h.digest('hex') };
    } catch {
      // fall through to the portable implementation
    }
  }
  return new Sha256Js();
}

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** The portable incremental SHA-256 (used where Node's `crypto` is not available). */
export class Sha256Js implements Sha256 {
  private readonly h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  private readonly w = new Uint32Array(64);
  private readonly block = new Uint8Array(64);
  private blockLength = 0;
  private total = 0;
  private finished = false;

  /** Adds bytes. */
  update(bytes: Uint8Array): void {
    if (this.finished) throw new Error('Sha256Js: update after hex()');
    this.total += bytes.byteLength;
    let i = 0;
    if (this.blockLength > 0) {
      const take = Math.min(64 - this.blockLength, bytes.byteLength);
      this.block.set(bytes.subarray(0, take), this.blockLength);
      this.blockLength += take;
      i = take;
      if (this.blockLength < 64) return;
      this.compress(this.block, 0);
      this.blockLength = 0;
    }
    for (; i + 64 <= bytes.byteLength; i += 64) this.compress(bytes, i);
    if (i < bytes.byteLength) {
      this.block.set(bytes.subarray(i));
      this.blockLength = bytes.byteLength - i;
    }
  }

  /** The hash, as lowercase hex. */
  hex(): string {
    if (!this.finished) {
      const bits = this.total * 8;
      const pad = new Uint8Array((this.blockLength < 56 ? 64 : 128) - this.blockLength);
      pad[0] = 0x80;
      const dv = new DataView(pad.buffer);
      dv.setUint32(pad.length - 8, Math.floor(bits / 2 ** 32));
      dv.setUint32(pad.length - 4, bits >>> 0);
      this.update(pad);
      this.finished = true;
    }
    const out = new Uint8Array(32);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) dv.setUint32(4 * i, this.h[i]);
    return toHex(out);
  }

  private compress(b: Uint8Array, at: number): void {
    const w = this.w;
    for (let t = 0; t < 16; t++) {
      const o = at + 4 * t;
      w[t] = (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
    }
    for (let t = 16; t < 64; t++) {
      const x = w[t - 15];
      const y = w[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    const h = this.h;
    let a = h[0] | 0;
    let bb = h[1] | 0;
    let c = h[2] | 0;
    let d = h[3] | 0;
    let e = h[4] | 0;
    let f = h[5] | 0;
    let g = h[6] | 0;
    let hh = h[7] | 0;
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (S0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
}

function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}
