/**
 * llama2.c checkpoint → Llama IR graph.
 * @module
 */
import type { Graph } from '../../ir/graph.js';
import { buildLlama, type LlamaBuildOptions, type LlamaConfig, type LlamaWeights } from '../../models/llama.js';
import type { Llama2cCheckpoint } from './checkpoint.js';

/** A Llama model's config and weights. */
export interface LlamaModelData {
  /** Hyper-parameters. */
  config: LlamaConfig;
  /** Weights. */
  weights: LlamaWeights;
}

/** The Llama config and weights of a llama2.c checkpoint (run.c's maths: RoPE θ 10000 on adjacent pairs, eps 1e-5). */
export function llama2cToLlama(ck: Llama2cCheckpoint): LlamaModelData {
  const c = ck.config;
  const w = ck.weights;
  const config: LlamaConfig = {
    dim: c.dim,
    hiddenDim: c.hiddenDim,
    nLayers: c.nLayers,
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    vocabSize: c.vocabSize,
    seqLen: c.seqLen,
    ropeTheta: 10000,
    ropeStyle: 'interleaved',
    normEps: 1e-5,
    sharedClassifier: c.sharedClassifier,
  };
  const weights: LlamaWeights = {
    tokenEmbedding: w.tokenEmbedding,
    layers: w.wq.map((_x, l) => ({ rmsAtt: w.rmsAtt[l], wq: w.wq[l], wk: w.wk[l], wv: w.wv[l], wo: w.wo[l], rmsFfn: w.rmsFfn[l], w1: w.w1[l], w2: w.w2[l], w3: w.w3[l] })),
    rmsFinal: w.rmsFinal,
    wcls: c.sharedClassifier ? undefined : w.wcls,
  };
  return { config, weights };
}

/** Builds the IR graph of a llama2.c checkpoint. */
export function llama2cGraph(ck: Llama2cCheckpoint, opts: LlamaBuildOptions = {}): Graph {
  const { config, weights } = llama2cToLlama(ck);
  return buildLlama(config, weights, opts);
}
