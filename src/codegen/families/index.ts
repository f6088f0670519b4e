/**
 * The registry of kernel families: the one list the kernel selection and the target's fusion patterns read.
 * Adding a family is a file beside this one and a line in {@link KERNEL_FAMILIES}.
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import type { FusionPatterns } from '../../ir/target.js';
import type { Node } from '../../ir/node.js';
import type { FamilyFusion, KernelFamily, LowerContext } from '../family.js';
import { codebookGatherFamily } from './codebook-gather.js';
import { codebookMatmulFamily } from './codebook-matmul.js';
import { dequantGatherFamily } from './dequant-gather.js';
import { dequantMatmulFamily } from './dequant-matmul.js';
import { w8a8MatmulFamily } from './w8a8-matmul.js';
import { sparseNMMatmulFamily } from './sparse-nm-matmul.js';
import { blockSparseMatmulFamily } from './block-sparse-matmul.js';
import { attentionFamily } from './attention.js';
import { copyFamily } from './copy.js';
import { elementwiseFamily } from './elementwise.js';
import { matmulFamily } from './matmul.js';
import { normFamily } from './norm.js';
import { reduceFamily } from './reduce.js';
import { rangeFamily } from './range.js';
import { ropeFamily } from './rope.js';
import { softmaxFamily } from './softmax.js';

/** Every kernel family, one line each. */
export const KERNEL_FAMILIES: readonly KernelFamily[] = [w8a8MatmulFamily, dequantMatmulFamily, codebookMatmulFamily, sparseNMMatmulFamily, blockSparseMatmulFamily, matmulFamily, attentionFamily, normFamily, softmaxFamily, ropeFamily, reduceFamily, dequantGatherFamily, codebookGatherFamily, copyFamily, rangeFamily, elementwiseFamily];

/** What a node's family is looked up by: its op, or `fused:<kind>`. */
function formOf(node: Node): string {
  return node.op === 'fused' ? `fused:${attrsOf(node, 'fused').kind}` : node.op;
}

/** Families by form, in registry order, built from the registry. */
function index(families: readonly KernelFamily[]): Map<string, KernelFamily[]> {
  const m = new Map<string, KernelFamily[]>();
  const add = (form: string, f: KernelFamily): void => void m.set(form, [...(m.get(form) ?? []), f]);
  for (const f of families) {
    for (const op of f.ops) add(op, f);
    if (f.fusion) add(`fused:${f.fusion.kind}`, f);
  }
  return m;
}

const BY_FORM = index(KERNEL_FAMILIES);

/**
 * The family that lowers `node` (the first in registry order that takes it, given the lowering context), or
 * `undefined` when none does.
 */
export function familyOf(node: Node, ctx?: LowerContext): KernelFamily | undefined {
  return BY_FORM.get(formOf(node))?.find((f) => f.takes?.(node, ctx) ?? true);
}

/** The fusion patterns of a set of families: what the fusion passes may form for a target with these kernels. */
export function fusionPatternsOf(families: readonly KernelFamily[] = KERNEL_FAMILIES): FusionPatterns {
  const byKind = new Map<string, FamilyFusion[]>();
  for (const f of families) if (f.fusion) byKind.set(f.fusion.kind, [...(byKind.get(f.fusion.kind) ?? []), f.fusion]);
  return {
    epilogueAnchors: families.flatMap((f) => (f.fusion?.epilogueAnchor ? [f.fusion.kind] : [])),
    prologueAnchors: families.flatMap((f) => (f.fusion?.prologues ? [f.fusion.kind] : [])),
    elementwiseOps: new Set(families.flatMap((f) => [...(f.fusion?.pointwiseOps ?? [])])),
    // a fused form is accepted when some family of its kind computes it
    accepts: (fused) => (byKind.get(attrsOf(fused, 'fused').kind) ?? []).some((f) => f.accepts(fused)),
  };
}
