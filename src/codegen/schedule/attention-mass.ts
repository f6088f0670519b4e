/**
 * Schedule rule of the attention-mass kernel (`src/codegen/attention-mass.ts`): lanes per workgroup. One workgroup
 * serves one row of the batch and its lanes stride over the row's keys, so a row of a few hundred keys keeps 64 lanes
 * busy, and the merge of the lanes' (max, sum) pairs stays a short tree.
 * @module
 */

/**
 * Lanes per workgroup of the attention-mass kernel: 64 (two warps / one wavefront; keys per row are the context,
 * hundreds to thousands, and the kernel runs only in steps an H2O policy observes).
 * @internal
 */
export function attentionMassWorkgroupSize(): 64 {
  return 64;
}
