/**
 * Paged-KV attention as the graph records it: after the `lower-paged-kv` stage, each attention that reads a layer's
 * KV cache is listed in the graph's `meta.pagedKv` with its layer and the new keys and values it appends; kernel
 * selection and the engine builder read that list.
 * @module
 */
import type { Graph } from './graph.js';
import type { HeadWindow } from './head-window.js';
import type { Node } from './node.js';

/**
 * A paged-attention node: its KV-cache layer and the new keys/values it appends.
 * @internal
 */
export interface PagedAttention {
  /** Decoder layer (index of the K/V pools). */
  readonly layer: number;
  /** New keys `[1, S, Hkv, D]`. */
  readonly k: Node;
  /** New values `[1, S, Hkv, Dv]`, or the wider `[1, S, heads, Dv]` tensor they are a head slice of (see `vHeads`). */
  readonly v: Node;
  /**
   * When set, `v` is the source the new values are heads `firstHead ..` of (a merged QKV projection), and the
   * attention node is a `fused {kind: 'attention'}` whose program is that head slice then the attention: the KV-cache
   * write reads the values in place and no slice copy runs.
   */
  readonly vHeads?: HeadWindow;
}

/**
 * The paged attentions the `lower-paged-kv` stage recorded on `graph` (empty before it ran).
 * @internal
 */
export function pagedAttentionOf(graph: Graph): ReadonlyMap<Node, PagedAttention> {
  return (graph.meta.pagedKv as ReadonlyMap<Node, PagedAttention> | undefined) ?? new Map();
}
