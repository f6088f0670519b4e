/**
 * The W8A8 matmul family: a plain or fused matmul (the dense family's forms: gate and elementwise epilogue) with
 * activation quantization (`actQuant`) whose B is a `weight` stored as int8 per output channel, symmetric, `[N, K]`
 * and read with `transB`. Its kernel (`src/codegen/matmul/w8a8-gemv.ts`) rounds each row of A to int8 and multiplies
 * integers, with `dot4I8Packed` where the target's WGSL has the `packed_4x8_integer_dot_product` language feature
 * (the schedule rule, `src/codegen/schedule/w8a8-matmul.ts`, decides), unpacking the bytes otherwise.
 *
 * It sits first in the registry and takes **every** matmul with `actQuant`, so no float kernel ever computes one as
 * if it had none; one whose B it cannot read is an {@link UnsupportedOpError} naming the node.
 * @module
 */
import { UnsupportedOpError } from '../../errors.js';
import { attrsOf } from '../../ir/attrs.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import { isInt8PerChannel } from '../../runtime/cpu/w8a8.js';
import type { KernelFamily, Launch, LowerContext } from '../family.js';
import type { KernelSource } from '../kernel.js';
import { generateW8A8GemvKernel, PACKED_DOT_FEATURE, type W8A8GemvVariant, type W8A8MatmulSpec } from '../matmul/w8a8-gemv.js';
import { chooseW8A8Variant, w8a8Candidates } from '../schedule/w8a8-matmul.js';
import { chooseScheduledVariant, kernelSignature } from '../schedule/tuning.js';
import { acceptsWhenSpecBuilds, generatesFor, launchOf, unfuse } from './common.js';
import { matmulSpecOf } from './matmul.js';

/** The matmul step of a plain or fused matmul node. */
function matmulStep(node: Node): Node | undefined {
  const mm = node.op === 'fused' ? unfuse(node)[0] : node;
  return mm.op === 'matmul' ? mm : undefined;
}

/** Whether `node` is a plain or fused matmul with activation quantization. */
export function isW8A8Matmul(node: Node): boolean {
  const mm = matmulStep(node);
  return !!mm && attrsOf(mm, 'matmul').actQuant !== undefined;
}

function takes(node: Node): boolean {
  return isW8A8Matmul(node);
}

function lower(node: Node, ctx: LowerContext): Launch[] {
  const mm = matmulStep(node)!;
  const B = mm.inputs[1];
  const enc = B.op === 'weight' ? ctx.weightEncoding(B) : undefined;
  if (!enc || !attrsOf(mm, 'matmul').transB || !isInt8PerChannel({ encoding: enc, shape: B.shape as number[] }))
    throw new UnsupportedOpError(['matmul'], `a W8A8 matmul needs B to be a weight stored as int8 per output channel [N, K], read with transB: ${printNode(mm)}`);
  const { spec: base, operands } = matmulSpecOf(node);
  const spec: W8A8MatmulSpec = { ...base, expectedM: ctx.expectedSeq, actScale: attrsOf(mm, 'matmul').actQuant!.scale };
  const generate = (v: W8A8GemvVariant): KernelSource => generateW8A8GemvKernel(spec, v);
  const candidates = (): W8A8GemvVariant[] => w8a8Candidates(spec, ctx.target).filter((v) => generatesFor(() => generate(v)));
  const { variant, schedule } = chooseScheduledVariant(kernelSignature('w8a8-matmul', spec), chooseW8A8Variant(spec, ctx.target), candidates, ctx.tuning);
  const parts = ['packed', 'scales'].map((part) => ({ kind: 'weight-part' as const, node: B, part }));
  return [launchOf(node, { ...generate(variant), schedule }, [operands[0], ...parts, ...operands.slice(2)])];
}

/**
 * The W8A8 matmul family. Its fused form is the dense family's (the dense family declares the epilogue anchor).
 * `features` lists the WGSL language feature its packed variant requires (not a device feature: the kernel carries
 * a `requires` directive, and the schedule rule picks it only where the target's WGSL has it).
 */
export const w8a8MatmulFamily: KernelFamily = {
  name: 'w8a8-matmul',
  ops: ['matmul'],
  fusion: { kind: 'matmul', accepts: acceptsWhenSpecBuilds(matmulSpecOf) },
  takes,
  variants: ['w8a8-gemv'],
  features: ['shader-f16', PACKED_DOT_FEATURE],
  lower,
};
