/**
 * What the kernel families share when they read IR nodes: dims as kernel dim expressions, storage types, a fused
 * node's program as real nodes, quantized weights and their payload parts, and the launch record.
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { InputError, UnsupportedOpError } from '../../errors.js';
import type { Dim } from '../../ir/dim.js';
import { makeNode, type Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import type { QuantizedEncoding } from '../../ir/weights.js';
import { dequantParts, type DequantWeightFormat } from '../dequant.js';
import type { Launch, LaunchOperand, LowerContext, WeightPartOperand } from '../family.js';
import type { KernelSource } from '../kernel.js';
import type { WeightEncoding } from '../../ir/weights.js';

/** A dim as a kernel dim: a number, or the text of its expression (`seq`, `past+seq`). */
export function dimText(d: Dim): number | string {
  return typeof d === 'number' ? d : d.text;
}

/** The float storage type of `n`; throws {@link UnsupportedOpError} for other data. */
export function floatStorage(n: Node): 'f32' | 'f16' {
  if (n.dtype !== 'f32' && n.dtype !== 'f16') throw new UnsupportedOpError([n.op], `WebGPU kernels for ${printNode(n)} need f32 or f16 data, got ${n.dtype}`);
  return n.dtype;
}

/** Rebuilds a fused node's program as real nodes over its operands; returns them in step order. */
export function unfuse(fused: Node): Node[] {
  const { steps } = attrsOf(fused, 'fused');
  const out: Node[] = [];
  for (const st of steps) out.push(makeNode(st.op, st.args.map((r) => (r >= 0 ? fused.inputs[r] : out[-r - 1])), st.attrs));
  return out;
}

/**
 * The encoding of `n` when it is a quantized `weight` that the dequantizing kernels read (f32 scales, see
 * `src/codegen/dequant.ts`), else `undefined`.
 */
export function dequantEncodingOf(n: Node, ctx: Pick<LowerContext, 'weightEncoding'>): QuantizedEncoding | undefined {
  if (n.op !== 'weight') return undefined;
  const enc = ctx.weightEncoding(n);
  return enc.kind === 'quantized' && enc.scaleDType === 'f32' ? enc : undefined;
}

/** The launch operands binding the payload parts of quantized `weight`, read in format `w`, in binding order. */
export function weightPartOperands(weight: Node, w: DequantWeightFormat): WeightPartOperand[] {
  return dequantParts(w).map((part) => ({ kind: 'weight-part', node: weight, part }));
}

/** A launch of `kernel` binding `operands` then `node` itself (the output), labelled with the node. */
export function launchOf(node: Node, kernel: KernelSource, operands: readonly LaunchOperand[]): Launch {
  return { kernel, operands: [...operands, node], label: printNode(node) };
}

/**
 * Whether a generator accepts a variant: false when it throws {@link InputError} or {@link UnsupportedOpError}
 * (tuning candidates its kernel does not take), other errors propagate.
 */
export function generatesFor(generate: () => unknown): boolean {
  try {
    generate();
    return true;
  } catch (e) {
    if (e instanceof InputError || e instanceof UnsupportedOpError) return false;
    throw e;
  }
}

/**
 * A fusion check from a family's spec builder: a fused node is accepted when `specOf` builds a kernel spec for it,
 * and rejected when it throws {@link UnsupportedOpError} (other errors propagate).
 */
export function acceptsWhenSpecBuilds(specOf: (fused: Node) => unknown): (fused: Node) => boolean {
  return (fused) => {
    try {
      specOf(fused);
      return true;
    } catch (e) {
      if (e instanceof UnsupportedOpError) return false;
      throw e;
    }
  };
}

/**
 * The weight B of a plain or fused matmul and its encoding, when B is a 2-D `weight` stored `[N, K]` (read with
 * `transB`) whose encoding is of kind `kind`; otherwise `undefined`. How the families over encoded weights recognise
 * their nodes.
 */
export function encodedMatmulWeight<K extends WeightEncoding['kind']>(node: Node, ctx: Pick<LowerContext, 'weightEncoding'>, kind: K): { weight: Node; encoding: Extract<WeightEncoding, { kind: K }> } | undefined {
  const mm = node.op === 'fused' ? unfuse(node)[0] : node;
  if (mm.op !== 'matmul') return undefined;
  const [, B] = mm.inputs;
  if (B.op !== 'weight' || B.rank !== 2 || !mm.attrs.transB) return undefined;
  const enc = ctx.weightEncoding(B);
  return enc.kind === kind ? { weight: B, encoding: enc as Extract<WeightEncoding, { kind: K }> } : undefined;
}
