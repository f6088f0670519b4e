/**
 * Kernel selection: every node of a scheduled graph becomes the launches of the kernel family that implements it
 * (looked up in the registry, `src/codegen/families/index.ts`), with the variant its schedule rules pick for the
 * target. Views (reshapes, inputs, weights, constants) and empty tensors launch nothing. The launches bind graph
 * nodes; the engine builder turns those into buffers.
 * @module
 */
import { attrsOf, isOp } from '../ir/attrs.js';
import { UnsupportedOpError } from '../errors.js';
import { numel } from '../ir/dim.js';
import type { Node } from '../ir/node.js';
import { printNode } from '../ir/printer.js';
import type { Launch, LowerContext } from './family.js';
import { familyOf } from './families/index.js';

/** Ops that are views or leaves: they name a buffer, and launch nothing. */
const NO_KERNEL = new Set(['input', 'weight', 'constant', 'reshape']);

/**
 * The engine input a constant holding symbolic dims is bound as (the runtime computes its values on each run from
 * the dims' bindings), or `undefined` for any other node.
 */
export function computedInputName(n: Node): string | undefined {
  return isOp(n, 'constant') && n.attrs.values.some((v) => typeof v !== 'number') ? `dims#${n.id}` : undefined;
}

/** The launches computing `node` (none for views and empty tensors); throws {@link UnsupportedOpError} when no family takes it. */
export function lowerNode(node: Node, ctx: LowerContext): Launch[] {
  if (NO_KERNEL.has(node.op) || numel(node.shape) === 0) return [];
  const family = familyOf(node, ctx);
  if (!family) throw new UnsupportedOpError([node.op === 'fused' ? `fused:${attrsOf(node, 'fused').kind}` : node.op], `no WebGPU kernel for ${printNode(node)}`);
  return family.lower(node, ctx);
}

/** Every launch of a schedule, in order; throws one {@link UnsupportedOpError} listing every node no kernel covers. */
export function lowerSchedule(schedule: readonly Node[], ctx: LowerContext): Launch[] {
  const out: Launch[] = [];
  const unsupported: UnsupportedOpError[] = [];
  for (const node of schedule) {
    try {
      out.push(...lowerNode(node, ctx));
    } catch (e) {
      if (e instanceof UnsupportedOpError) unsupported.push(e);
      else throw e;
    }
  }
  if (unsupported.length)
    throw new UnsupportedOpError(
      [...new Set(unsupported.flatMap((e) => e.ops))],
      `${unsupported.length} node(s) have no WebGPU kernel: ${unsupported.map((e) => e.message).join('; ')}`,
    );
  return out;
}
