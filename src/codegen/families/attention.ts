/**
 * The attention family as the compiler sees it: an `attention` over contiguous K/V (with an optional mask), and,
 * after the `lower-paged-kv` stage, an attention reading a layer's paged KV cache (a plain `attention`, or a
 * `fused {kind: 'attention'}` whose program is the values' head slice then the attention), which lowers to the
 * KV-cache write and the paged kernel (or, split-KV, the partial kernel into a scratch buffer of the node and the
 * merge). The variant comes from the schedule rules (`src/codegen/schedule/attention.ts`), or a `--tune` measurement.
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { InputError, UnsupportedOpError } from '../../errors.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import { generateAttentionMassKernel } from '../attention-mass.js';
import {
  generateAttentionKernel,
  generateKvCacheWriteKernel,
  generatePagedAttentionKernel,
  generateSplitKvMergeKernel,
  splitKvScratchElements,
  splitKvSplits,
  type AttentionVariant,
  type PagedAttentionSpec,
} from '../attention.js';
import type { KernelFamily, KvOperand, Launch, LowerContext, ScratchOperand } from '../family.js';
import type { KernelSchedule } from '../../runtime/kernel-source.js';
import { chooseAttentionVariant, chooseSplitKv, chooseSubgroupDecode, decodeRowLanes, splitKvVariant } from '../schedule/attention.js';
import { fixedSubgroupSize, hasFeature } from '../../ir/target.js';
import { chooseScheduledVariant, kernelSignature } from '../schedule/tuning.js';
import { dimText, floatStorage, launchOf, unfuse } from './common.js';

/**
 * The attention variant `v` with its tuning for the target where `v` names only a kind (decode: lanes per head, see
 * {@link decodeRowLanes}); a variant with its own tuning is kept.
 */
function attentionVariant(ctx: LowerContext, v: AttentionVariant['kind'] | AttentionVariant, D: number, Dv: number): AttentionVariant {
  if (typeof v !== 'string') return v;
  const rowLanes = decodeRowLanes(D, Dv, ctx.target.deviceClass === 'software-gpu');
  if (v === 'split-kv') return { ...splitKvVariant(ctx.maxKvLen ?? 2048), rowLanes };
  if (v === 'decode-subgroup') {
    const sg = fixedSubgroupSize(ctx.target);
    if (sg === undefined || !hasFeature(ctx.target, 'subgroups')) throw new InputError('the decode-subgroup attention needs the subgroups feature and one fixed subgroup size');
    return { kind: v, subgroupSize: sg };
  }
  return v === 'decode' ? { kind: v, rowLanes } : { kind: v };
}

/**
 * The variant of the paged ragged attention: the forced one, else the schedule rules' pick among single-pass
 * `decode-subgroup` (software rasterizers, {@link chooseSubgroupDecode}), the tiled `decode`, and `split-kv`
 * ({@link chooseSplitKv}), or a measured pick (`compile --tune` times them).
 */
function pagedVariant(ctx: LowerContext, spec: PagedAttentionSpec, D: number, Dv: number): { variant: AttentionVariant; schedule?: KernelSchedule } {
  const forced = ctx.variants?.attention;
  if (forced) return { variant: attentionVariant(ctx, forced, D, Dv) };
  const sg = fixedSubgroupSize(ctx.target);
  const software = ctx.target.deviceClass === 'software-gpu';
  const kvDType = spec.kvDType ?? spec.dtype;
  const subgroup = chooseSubgroupDecode({ software, subgroupSize: hasFeature(ctx.target, 'subgroups') ? sg : undefined, D, Dv, floatPool: kvDType === 'f32' || kvDType === 'f16' });
  const tiled = attentionVariant(ctx, 'decode', D, Dv);
  const single = subgroup ?? tiled;
  const split = attentionVariant(ctx, 'split-kv', D, Dv);
  const perRow = generatePagedAttentionKernel({ ...spec, variant: tiled }).grid[0];
  const useSplit = chooseSplitKv({ software, rows: ctx.expectedSeq, workgroupsPerRow: typeof perRow === 'number' ? perRow : spec.numKvHeads, maxKvLen: ctx.maxKvLen });
  const { nodes: _nodes, variant: _v, ...shape } = spec;
  const signature = kernelSignature('paged-attention', { ...shape, rows: ctx.expectedSeq, maxKvLen: ctx.maxKvLen ?? null });
  // the tiled layout is a candidate beside the subgroup one, and split-KV when the context spans more than one split
  const maxKvLen = ctx.maxKvLen;
  const candidates = (): AttentionVariant[] => {
    const list = [single, ...(subgroup ? [tiled] : []), ...(maxKvLen !== undefined && splitKvSplits(splitKvVariant(maxKvLen)) > 1 ? [split] : [])];
    return list.length > 1 ? list : [];
  };
  return chooseScheduledVariant(signature, useSplit ? split : single, candidates, ctx.tuning);
}

function lowerAttention(node: Node, ctx: LowerContext): Launch[] {
  const label = printNode(node);
  // a paged attention fused with its values' head slice (see PagedAttention.vHeads): the attention is the last step
  const att = node.op === 'fused' ? unfuse(node).at(-1)! : node;
  const [q, k, v, mask] = att.inputs;
  const [B, S, Hq, D] = q.shape;
  const [, T, Hkv] = k.shape;
  const Dv = v.shape[3];
  if (typeof Hq !== 'number' || typeof Hkv !== 'number' || typeof D !== 'number' || typeof Dv !== 'number')
    throw new UnsupportedOpError(['attention'], `attention kernels need static head counts and dims: ${label}`);
  const software = ctx.target.deviceClass === 'software-gpu';
  const heads = { numHeads: Hq, numKvHeads: Hkv, headDim: D, valueDim: Dv, dtype: floatStorage(node), causal: attrsOf(att, 'attention').causal, scale: attrsOf(att, 'attention').scale, staticLoops: !software, nodes: [label] };
  const paged = ctx.paged.get(node);
  if (paged) {
    const { blockSize, dtype: kvDType } = ctx.target.kv;
    const write = generateKvCacheWriteKernel({
      numKvHeads: Hkv,
      headDim: D,
      valueDim: Dv,
      blockSize,
      dtype: kvDType,
      sourceDType: floatStorage(paged.k),
      seq: dimText(S),
      ragged: true,
      ...(paged.vHeads ? { valueSource: paged.vHeads } : {}),
      nodes: [label],
    });
    // the rows are a ragged batch of sequences: one query position per workgroup (the decode layout) for every
    // token count, so a row's arithmetic is the same whatever else is in the batch (batch invariance)
    const spec: PagedAttentionSpec = { ...heads, kvDType, blockSize, seq: dimText(S), ragged: true };
    const { variant, schedule } = pagedVariant(ctx, spec, D, Dv);
    const attn = { ...generatePagedAttentionKernel({ ...spec, variant }), ...(schedule ? { schedule } : {}) };
    const kv = (which: 'k' | 'v'): KvOperand => ({ kind: 'kv', layer: paged.layer, which });
    const rows: KvOperand[] = [{ kind: 'input', name: 'positions' }, { kind: 'input', name: 'row_seq' }];
    // H2O eviction's observer: the softmax weights this attention gives each cached key, added to the mass buffer
    // (float pools only: integer KV caches cannot shift keys, so they never evict)
    const observer =
      (kvDType === 'f32' || kvDType === 'f16') && heads.causal
        ? {
            kernel: generateAttentionMassKernel({ numHeads: Hq, numKvHeads: Hkv, headDim: D, dtype: heads.dtype, kvDType, blockSize, scale: heads.scale, seq: dimText(S), nodes: [label] }),
            operands: [q, kv('k'), { kind: 'block-table' } as const, ...rows, { kind: 'attention-mass' } as const],
            label: `attention mass (layer ${paged.layer})`,
          }
        : undefined;
    const withObserver = (l: Launch): Launch => (observer ? { ...l, observer } : l);
    const writeLaunch: Launch = { kernel: write, operands: [paged.k, paged.v, { kind: 'block-table' }, ...rows, kv('k'), kv('v')], label: `kv-cache write (layer ${paged.layer})` };
    if (variant.kind !== 'split-kv') return [writeLaunch, withObserver(launchOf(node, attn, [q, kv('k'), kv('v'), { kind: 'block-table' }, ...rows]))];
    // split-KV: the partial states of every split go to a scratch buffer of this node, then the merge writes the output
    const splits = splitKvSplits(variant);
    const partials: ScratchOperand = { kind: 'scratch', name: 'attention-splits', elements: splitKvScratchElements(Hq, Dv, splits, dimText(S)) };
    const merge = generateSplitKvMergeKernel({ numHeads: Hq, valueDim: Dv, splits, dtype: heads.dtype, seq: dimText(S), nodes: [label] });
    return [
      writeLaunch,
      { kernel: attn, operands: [q, kv('k'), kv('v'), { kind: 'block-table' }, ...rows, partials], label: `${label} (split-kv partials)` },
      withObserver(launchOf(node, schedule ? { ...merge, schedule } : merge, [partials])),
    ];
  }
  if (node.op === 'fused') throw new UnsupportedOpError(['fused:attention'], `a fused attention must read the paged KV cache: ${label}`);
  const spec = {
    ...heads,
    batch: dimText(B),
    seq: dimText(S),
    kvLen: dimText(T),
    mask: mask ? { dtype: mask.dtype === 'bool' ? ('bool' as const) : floatStorage(mask), shape: mask.shape.map(dimText) } : undefined,
    variant: attentionVariant(ctx, chooseAttentionVariant(dimText(S)), D, Dv),
  };
  return [launchOf(node, generateAttentionKernel(spec), [q, k, v, ...(mask ? [mask] : [])])];
}

/** The attention family: flash and decode attention over contiguous or paged K/V, and the KV-cache write. */
export const attentionFamily: KernelFamily = {
  name: 'attention',
  ops: ['attention'],
  // the fused form (values' head slice then the attention) is made by the paged-KV lowering, not by epilogue fusion
  fusion: { kind: 'attention', accepts: () => false },
  variants: ['decode', 'prefill-flash', 'paged-ragged-decode', 'paged-ragged-split-kv', 'split-kv-merge', 'kv-cache-write'],
  features: ['shader-f16'],
  lower: lowerAttention,
};
