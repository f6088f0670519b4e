/**
 * Rotary position embedding kernel family: rotates `x` `[B, S, H, D]` at per-token positions, either read from a
 * `positions` buffer (i32 or u32: `[S]` shared by every batch row, or `[B, S]`, each row its own) or computed as
 * `past + s` from the params uniform (a KV-cache step needs no positions buffer). Styles: `interleaved` (llama2.c / Meta: adjacent pairs `(2i, 2i+1)`) and `half` (NeoX / HF:
 * pairs `(i, i + rotaryDim/2)`); dims from `rotaryDim` to `D` are copied unchanged.
 *
 * Numerics follow the CPU reference: the inverse frequencies `1 / theta^(2i / rotaryDim)` are computed on the host
 * exactly as the reference does (f32 pow, f32 reciprocal) and embedded as f32 constants; the angle is `f32(pos) *
 * freq` rounded to f32 before cos/sin. The kernel then reduces the angle modulo 2π (Cody–Waite with a three-part 2π)
 * so GPUs whose cos/sin are only accurate on [-π, π] stay within ~1e-6 of `Math.cos`; WGSL's cos/sin may still
 * differ from JS in the last bits.
 *
 * An optional elementwise epilogue ({@link RopeSpec.epilogue}) is applied to each rotated value before it is stored.
 *
 * Supported shapes: any B and S (dynamic), H, D; even rotaryDim <= D. One invocation per (token, rotated pair), which
 * takes one cos and one sin for that pair of every head (the angle depends on the position and the pair only), and
 * one per (token, copied dim); grid `[ceil((rotaryDim/2 + D - rotaryDim) / workgroupSize), S, B]` (S and B at most
 * 65535). f32 or f16 storage, f32 math. (One invocation per element took a cos and a sin per element: twice per pair
 * and once more per head; on lavapipe, where they are polynomials, that was most of a batched step's rope time.)
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { ropeFrequency } from '../ir/rope.js';
import { KernelParams, type DimLike, type HeadWindow, type KernelBinding, type KernelSource } from './kernel.js';
import { enableDirectives, kernelFeatures, literal, wgslHelperSources } from './wgsl.js';

/** Positions read from a `positions` binding of `[S]` integers. */
export interface RopeBufferPositions {
  /** Source kind. */
  readonly kind: 'buffer';
  /** Storage type of the positions (default i32). */
  readonly dtype?: 'i32' | 'u32';
  /** The buffer is `[B, S]`, a row of positions per batch row (default: `[S]`, shared by every batch row). */
  readonly perBatch?: boolean;
}

/** Position of token `s` is `past + s`, with `past` from the params uniform (a KV-cache step needs no buffer). */
export interface RopeOffsetPositions {
  /** Source kind. */
  readonly kind: 'offset';
  /** Tokens before the first one (default `'past'`). */
  readonly past?: DimLike;
}

/** Where the positions come from. */
export type RopePositions = RopeBufferPositions | RopeOffsetPositions;

/** How a rope epilogue operand maps onto the output `[B, S, H, D]`. */
export type RopeEpilogueBroadcast =
  /** One value. */
  | 'scalar'
  /** `[D]`: indexed by the element's dim. */
  | 'dim'
  /** `[H, D]` (after leading 1s): one value per (head, dim), shared by every token. */
  | 'head'
  /** The output's own shape. */
  | 'full';

/** An elementwise epilogue fused into the rope's store (a per-channel shift or scale of the rotated values). */
export interface RopeEpilogue {
  /** Extra operands, bound after x and the positions, in this order. */
  readonly operands: readonly { readonly dtype: 'f32' | 'f16'; readonly broadcast: RopeEpilogueBroadcast }[];
  /** The stored value's f32 expression, given the rotated value's expression and a loader of operand `i` at the element. */
  readonly expr: (y: string, load: (i: number) => string) => string;
  /** Names of WGSL helpers the expression calls. */
  readonly helpers?: readonly string[];
}

/** What {@link generateRopeKernel} builds. */
export interface RopeSpec {
  /** Tokens S (default `'seq'`). */
  readonly seq?: DimLike;
  /** Batch rows B (default 1). */
  readonly batch?: DimLike;
  /** Heads H. */
  readonly numHeads: number;
  /** Head dim D. */
  readonly headDim: number;
  /** Rotated dims (even, <= D; default D). */
  readonly rotaryDim?: number;
  /** Base (default 10000). */
  readonly theta?: number;
  /** Pairing of rotated dims (default `interleaved`). */
  readonly style?: 'interleaved' | 'half';
  /** Storage type of x and out. */
  readonly dtype: 'f32' | 'f16';
  /** Position source (default: an i32 `positions` buffer). */
  readonly positions?: RopePositions;
  /** Lanes per workgroup (default 64). */
  readonly workgroupSize?: 64 | 128 | 256;
  /**
   * Where x's heads sit in a wider source (default: x is `[B, S, H, D]` itself): x is heads `firstHead ..
   * firstHead + H - 1` of a `[B, S, numHeads, D]` buffer, as when q and k are head slices of a merged QKV projection.
   * The kernel reads them in place (a slice on the head axis folded into the load), so no copy runs first.
   */
  readonly source?: HeadWindow;
  /** Elementwise ops applied to each rotated value before it is stored. */
  readonly epilogue?: RopeEpilogue;
  /** The graph nodes implemented (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/** 2π split so that `k * TWO_PI_A` is exact for |k| < 2^15 (Cody–Waite). */
const TWO_PI_A = 6.28125;
const TWO_PI_B = Math.fround(2 * Math.PI - TWO_PI_A);
const TWO_PI_C = Math.fround(2 * Math.PI - TWO_PI_A - TWO_PI_B);

/**
 * Rotary embedding of `x` `[B, S, H, D]` (or of a window of heads of a wider `[B, S, heads, D]` source, see
 * {@link RopeSpec.source}): bindings `x`, [`positions`], `out`; params: the dynamic ones of S, B and past.
 * @throws {@link ShapeError} for a bad rotaryDim; {@link InputError} for a bad theta.
 */
export function generateRopeKernel(spec: RopeSpec): KernelSource {
  const { numHeads: H, headDim: D } = spec;
  if (!Number.isInteger(H) || H < 1 || !Number.isInteger(D) || D < 1) throw new ShapeError('rope', `heads and head dim must be positive integers, got ${H} and ${D}`);
  const rd = spec.rotaryDim ?? D;
  if (!Number.isInteger(rd) || rd <= 0 || rd > D || rd % 2 !== 0) throw new ShapeError('rope', `rotaryDim ${rd} must be even and in (0, ${D}]`);
  const theta = spec.theta ?? 10000;
  if (!(theta > 0) || !Number.isFinite(theta)) throw new InputError(`rope theta must be positive, got ${theta}`);
  const src = spec.source ?? { numHeads: H, firstHead: 0 };
  if (!Number.isInteger(src.numHeads) || !Number.isInteger(src.firstHead) || src.firstHead < 0 || src.firstHead + H > src.numHeads)
    throw new ShapeError('rope', `heads ${src.firstHead}..${src.firstHead + H - 1} are not inside a source of ${src.numHeads} heads`);
  const windowed = src.numHeads !== H;
  const style = spec.style ?? 'interleaved';
  const pos = spec.positions ?? { kind: 'buffer' };
  const WG = spec.workgroupSize ?? 64;
  const params = new KernelParams();
  const seq = spec.seq ?? 'seq';
  const seqGrid = params.grid(seq);
  const batch = KernelParams.canon(spec.batch ?? 1, 'rope batch');
  const batchGrid = params.grid(batch);
  if (typeof seqGrid === 'number' && seqGrid > 65535) throw new ShapeError('rope', `S = ${seqGrid} exceeds the 65535 workgroups of a grid dimension`);
  if (typeof batch === 'number' && batch > 65535) throw new ShapeError('rope', `B = ${batch} exceeds the 65535 workgroups of a grid dimension`);
  const batched = batch !== 1;
  const half = rd / 2;
  const freqs = Array.from({ length: half }, (_v, i) => literal('f32', ropeFrequency(theta, i, rd)));
  const dt = spec.dtype;
  const bindings: KernelBinding[] = [{ name: 'x', access: 'read' }];
  const decls = [`@group(0) @binding(0) var<storage, read> x: array<${dt}>; // ${windowed ? '[B, S, SRC_HEADS, D]: heads FIRST_HEAD .. FIRST_HEAD + NUM_HEADS - 1 are rotated' : '[B, S, H, D]'}`];
  let position: string;
  if (pos.kind === 'buffer') {
    const pdt = pos.dtype ?? 'i32';
    decls.push(`@group(0) @binding(1) var<storage, read> positions: array<${pdt}>; // ${pos.perBatch ? '[B, S]' : '[S]'}`);
    bindings.push({ name: 'positions', access: 'read' });
    position = pos.perBatch ? 'f32(positions[row])' : 'f32(positions[s])';
  } else position = `f32(${params.ref(pos.past ?? 'past')} + s)`;
  const epilogue = spec.epilogue;
  const epIndex: Record<RopeEpilogueBroadcast, string> = { scalar: '0u', dim: 'd', head: 'e', full: 'base + d' };
  (epilogue?.operands ?? []).forEach((o, i) => {
    decls.push(`@group(0) @binding(${bindings.length}) var<storage, read> ep_${i}: array<${o.dtype}>; // epilogue operand ${i} (${o.broadcast})`);
    bindings.push({ name: `ep_${i}`, access: 'read' });
  });
  const stored = epilogue
    ? epilogue.expr('y', (i) => {
        const o = epilogue.operands[i];
        if (!o) throw new InputError(`rope epilogue reads operand ${i} of ${epilogue.operands.length}`);
        return `f32(ep_${i}[${epIndex[o.broadcast]}])`;
      })
    : 'y';
  decls.push(`@group(0) @binding(${bindings.length}) var<storage, read_write> out: array<${dt}>; // [B, S, H, D]`);
  bindings.push({ name: 'out', access: 'read_write' });
  const load = (e: string): string => (dt === 'f32' ? `x[${e}]` : `f32(x[${e}])`);
  // the pair of dims invocation j rotates: interleaved (2j, 2j+1); half (j, j + HALF)
  const pairing = style === 'interleaved' ? ['    let d0 = 2u * j;', '    let d1 = d0 + 1u;'] : ['    let d0 = j;', '    let d1 = j + HALF;'];
  const store = (d: string, y: string): string[] => [
    '      {',
    `        let d = ${d};`,
    '        let e = h * HEAD_DIM + d; // (head, dim) within the token',
    `        let y = ${y};`,
    `        out[base + d] = ${dt === 'f16' ? `f16(${stored})` : stored};`,
    '      }',
  ];
  const headLoop = (inner: string[]): string[] => [
    '    for (var h = 0u; h < NUM_HEADS; h++) {',
    '      let base = (row * NUM_HEADS + h) * HEAD_DIM; // element 0 of this (token, head) in out',
    windowed ? '      let src = (row * SRC_HEADS + FIRST_HEAD + h) * HEAD_DIM; // and in x' : '      let src = base; // and in x',
    ...inner,
    '    }',
  ];
  const nodes = spec.nodes ?? [];
  const features = kernelFeatures({ f16: dt === 'f16' || (epilogue?.operands ?? []).some((o) => o.dtype === 'f16') });
  const helpers = wgslHelperSources(epilogue?.helpers ?? []);
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: rope (${style}, rotaryDim=${rd} of ${D}, theta=${theta}, positions ${pos.kind === 'buffer' ? (pos.perBatch ? 'from a [B, S] buffer' : 'from a buffer') : 'past + s'}, ${dt})`,
    '//   out = x rotated by angle pos * INV_FREQ[i] on each pair of dims; dims >= ROTARY_DIM copied',
    '',
    `const NUM_HEADS: u32 = ${H}u;`,
    ...(windowed ? [`const SRC_HEADS: u32 = ${src.numHeads}u; // heads per token in x`, `const FIRST_HEAD: u32 = ${src.firstHead}u; // x's head of output head 0`] : []),
    `const HEAD_DIM: u32 = ${D}u;`,
    `const ROTARY_DIM: u32 = ${rd}u;`,
    `const HALF: u32 = ${half}u; // rotated pairs`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    `// 1 / theta^(2i / ROTARY_DIM), as the reference computes it (f32)`,
    `const INV_FREQ = array<f32, ${half}>(${freqs.join(', ')});`,
    `const INV_TWO_PI: f32 = ${literal('f32', 1 / (2 * Math.PI))};`,
    `const TWO_PI_A: f32 = ${literal('f32', TWO_PI_A)}; // 2π = A + B + C, A exact in few bits`,
    `const TWO_PI_B: f32 = ${literal('f32', TWO_PI_B)};`,
    `const TWO_PI_C: f32 = ${literal('f32', TWO_PI_C)};`,
    '',
    ...decls,
    params.decl(bindings.length),
    ...(helpers.length ? [...helpers, ''] : []),
    '// a - k * 2π with |result| <= π (k = round(a / 2π))',
    'fn reduce_angle(a: f32) -> f32 {',
    '  let k = round(a * INV_TWO_PI);',
    '  var r = fma(-k, TWO_PI_A, a);',
    '  r = fma(-k, TWO_PI_B, r);',
    '  return fma(-k, TWO_PI_C, r);',
    '}',
    '',
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    '  // invocation j < HALF rotates pair j of every head (one cos/sin for all of them); the rest copy dim ROTARY_DIM + j - HALF',
    '  let j = wid.x * WORKGROUP_SIZE + lid;',
    '  if (j >= HALF + HEAD_DIM - ROTARY_DIM) { return; }',
    '  let s = wid.y;',
    batched ? `  let row = wid.z * ${params.ref(seq)} + s; // (batch row, token)` : '  let row = s;',
    ...(params.list.length ? ['  _ = params; // S and B size the grid'] : []),
    '  if (j < HALF) {',
    ...pairing,
    `    let angle = ${position} * INV_FREQ[j];`,
    '    let r = reduce_angle(angle);',
    '    let c = cos(r);',
    '    let sn = sin(r);',
    ...headLoop([`      let v0 = ${load('src + d0')};`, `      let v1 = ${load('src + d1')};`, ...store('d0', 'v0 * c - v1 * sn'), ...store('d1', 'v0 * sn + v1 * c')]),
    '  } else {',
    '    let dc = ROTARY_DIM + j - HALF;',
    ...headLoop(store('dc', load('src + dc'))),
    '  }',
    '}',
    '',
  ].join('\n');
  return {
    family: 'rope',
    variant: `${style}-${pos.kind}${pos.kind === 'buffer' && pos.perBatch ? '-per-batch' : ''}${windowed ? '-window' : ''}${batched ? '-batched' : ''}${epilogue ? `-ep${epilogue.operands.length}` : ''}-wg${WG}`,
    wgsl,
    bindings,
    params: [...params.list],
    grid: [Math.ceil((half + D - rd) / WG), seqGrid, batchGrid],
    nodes: [...nodes],
    features,
  };
}
