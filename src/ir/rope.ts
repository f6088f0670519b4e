/**
 * Rotary position embedding (RoPE) maths shared by every layer: the frequency of a rotary pair, computed exactly as the
 * reference kernels, the WGSL kernels and llama2.c do, and the inverse problem, solving `theta` from cos/sin tables
 * (used by the `recognize-rope` pass and the ONNX importer).
 * @module
 */
import { attrsOf, type OpLike, type RopeAttrs } from './attrs.js';
import type { Graph } from './graph.js';

/** Where the two elements of rotary pair `i` live: `i` and `i + D/2` (`half`, NeoX) or `2i` and `2i + 1` (`interleaved`). */
export type RopeStyle = 'half' | 'interleaved';

/**
 * RoPE frequency for rotary pair `i` (0-based pair index) with `rotaryDim` rotated dims, computed in float32 as
 * llama2.c's run.c does (`1 / powf(theta, 2i / rotaryDim)`), so the reference reproduces its rounding.
 * @internal
 */
export function ropeFrequency(theta: number, i: number, rotaryDim: number): number {
  return Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / rotaryDim))));
}

/**
 * The `theta` whose rotary tables the caches `[rows, d]` hold, or `undefined`. Pair `i` lives in columns `i` and
 * `i + d/2` (half) or `2i` and `2i + 1` (interleaved). `theta` is solved from row 1 (whose angles are the frequencies
 * themselves), snapped to an integer when within 1e-5 relative of one, and every entry of both caches is then checked
 * against `cos/sin(p · theta^(-2i/d))` within 1e-5 plus the float32 rounding of the angle. Used by the `recognize-rope`
 * pass and by the ONNX importer to map `RotaryEmbedding` with constant caches to a `rope` node.
 * @internal
 */
export function solveTheta(cos: ArrayLike<number>, sin: ArrayLike<number>, rows: number, d: number, style: RopeStyle): number | undefined {
  const half = d / 2;
  if (rows < 2 || d < 4 || d % 2 !== 0) return undefined;
  const columns = (i: number): [number, number] => (style === 'half' ? [i, i + half] : [2 * i, 2 * i + 1]);
  // row 1 holds cos/sin of the frequencies theta^(-2i/d); the last pair pins theta most precisely
  const last = half - 1;
  const [c] = columns(last);
  const freq = Math.atan2(sin[d + c], cos[d + c]);
  if (!(freq > 0 && freq < 1)) return undefined;
  let theta = Math.pow(freq, -d / (2 * last));
  if (Math.abs(theta - Math.round(theta)) <= 1e-5 * theta) theta = Math.round(theta);
  if (!Number.isFinite(theta)) return undefined;
  for (let p = 0; p < rows; p++)
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * ropeFrequency(theta, i, d));
      const tol = 1e-5 + Math.abs(angle) * 2 ** -22;
      const [c0, c1] = columns(i);
      for (const j of [c0, c1])
        if (Math.abs(cos[p * d + j] - Math.cos(angle)) > tol || Math.abs(sin[p * d + j] - Math.sin(angle)) > tol) return undefined;
    }
  return theta;
}

/**
 * The attributes of a graph's `rope` ops (nodes, or steps of fused kernels) when they all agree (queries and keys
 * alike); else undefined (no rope, several configurations, or a rotary embedding built from primitive ops, as scaled
 * RoPE is). What a key shift of a sliding KV window needs to rotate cached keys to new positions.
 */
export function graphRopeAttrs(graph: Graph): RopeAttrs | undefined {
  let found: RopeAttrs | undefined;
  let agree = true;
  const visit = (x: OpLike): void => {
    if (x.op === 'fused') for (const st of attrsOf(x, 'fused').steps) visit(st);
    if (x.op !== 'rope') return;
    const a = attrsOf(x, 'rope');
    if (found && (found.theta !== a.theta || found.style !== a.style || found.rotaryDim !== a.rotaryDim)) agree = false;
    found = a;
  };
  for (const n of graph.nodes()) visit(n);
  return agree ? found : undefined;
}
