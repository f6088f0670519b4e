/**
 * The rope family as the compiler sees it: a `rope` over `[B, S, H, D]` with `[S]` positions (shared by the batch
 * rows; `[1, S]` too) or `[B, S]` positions (a row each), or a
 * `fused {kind: 'rope'}` whose program is a head slice (axis 2, step 1) then the rope: the kernel reads that window
 * of heads in place from the wider tensor (q or k of a merged QKV projection); either may end in an elementwise
 * epilogue whose operands are scalars, `[D]`, `[H, D]` or the output's shape (the shift and scale of centered cached
 * keys, the queries' matching scale).
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { UnsupportedOpError } from '../../errors.js';
import { headSliceWindow } from '../../ir/head-window.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import type { KernelFamily } from '../family.js';
import { generateRopeKernel, type RopeEpilogueBroadcast, type RopeSpec } from '../rope.js';
import { numel, type Dim } from '../../ir/dim.js';
import { epilogueExpr, pointwiseEpilogue } from './epilogue.js';
import { acceptsWhenSpecBuilds, dimText, floatStorage, launchOf, unfuse } from './common.js';

/** The rope kernel spec of a plain or fused rope, with the tensor it reads and the positions. Throws {@link UnsupportedOpError} for other forms. */
export function ropeSpecOf(node: Node): { spec: RopeSpec; x: Node; pos: Node; epilogueOperands: readonly Node[] } {
  const label = printNode(node);
  const steps = node.op === 'fused' ? unfuse(node) : [node];
  const at = steps.findIndex((st) => st.op === 'rope');
  const rope = steps[at];
  if (!rope || at > 1) throw new UnsupportedOpError(['fused:rope'], `the WebGPU rope kernel takes at most a head-slice prologue: ${label}`);
  const [sliced, pos] = rope.inputs;
  let x = sliced;
  let source: RopeSpec['source'];
  if (at === 1) {
    source = sliced === steps[0] ? headSliceWindow(steps[0]) : undefined;
    if (!source) throw new UnsupportedOpError(['fused:rope'], `the WebGPU rope kernel takes only a head-slice prologue: ${label}`);
    x = steps[0].inputs[0];
  }
  const [b, s, h, d] = sliced.shape;
  if (typeof h !== 'number' || typeof d !== 'number' || pos.rank < 1 || pos.rank > 2) throw new UnsupportedOpError(['rope'], `WebGPU rope takes [B, S, H, D] with static H and D and [S] or [B, S] positions: ${label}`);
  const ep = steps.length > at + 1 ? pointwiseEpilogue('rope', rope, steps.slice(at + 1), ropeBroadcast) : undefined;
  // [S] and [1, S] positions are shared by every batch row; [B, S] gives each row its own
  const perBatch = pos.rank === 2 && pos.shape[0] !== 1;
  const spec: RopeSpec = {
    seq: dimText(s),
    batch: dimText(b),
    numHeads: h,
    headDim: d,
    rotaryDim: attrsOf(rope, 'rope').rotaryDim,
    theta: attrsOf(rope, 'rope').theta,
    style: attrsOf(rope, 'rope').style,
    dtype: floatStorage(node),
    positions: { kind: 'buffer', dtype: pos.dtype === 'u32' ? 'u32' : 'i32', ...(perBatch ? { perBatch } : {}) },
    ...(source ? { source } : {}),
    ...(ep
      ? {
          epilogue: {
            operands: ep.operands.map((o, i) => ({ dtype: o.dtype as 'f32' | 'f16', broadcast: ep.broadcasts[i] })),
            expr: (y: string, load: (i: number) => string) => epilogueExpr(ep.body, y, load),
            helpers: ep.helpers,
          },
        }
      : {}),
    nodes: [label],
  };
  return { spec, x, pos, epilogueOperands: ep?.operands ?? [] };
}

/** How an epilogue operand of shape `shape` maps onto a rope output `[B, S, H, D]`. */
function ropeBroadcast(shape: readonly Dim[], out: readonly Dim[]): RopeEpilogueBroadcast | undefined {
  if (numel(shape) === 1) return 'scalar';
  if (shape.length === out.length && shape.every((x, i) => x === out[i])) return 'full';
  const r = out.length;
  const lead = (k: number): boolean => shape.slice(0, -k).every((x) => x === 1);
  if (shape.length >= 2 && shape[shape.length - 1] === out[r - 1] && shape[shape.length - 2] === out[r - 2] && lead(2)) return 'head';
  if (shape[shape.length - 1] === out[r - 1] && lead(1)) return 'dim';
  return undefined;
}

/** The rope family: rotary embeddings, reading a head window of a wider tensor in place. */
export const ropeFamily: KernelFamily = {
  name: 'rope',
  ops: ['rope'],
  fusion: {
    kind: 'rope',
    epilogueAnchor: true,
    prologues: true,
    accepts: acceptsWhenSpecBuilds(ropeSpecOf),
  },
  variants: ['rope'],
  features: ['shader-f16'],
  lower: (node) => {
    const { spec, x, pos, epilogueOperands } = ropeSpecOf(node);
    return [launchOf(node, generateRopeKernel(spec), [x, pos, ...epilogueOperands])];
  },
};
