/**
 * A causal LM on the CPU reference backend: runs a decoder graph built with KV-cache inputs (`past_k.L`, `past_v.L`)
 * and outputs (`present_k.L`, `present_v.L`), feeding each step's presents back as the next step's past.
 * @module
 */
import { InputError } from '../../errors.js';
import type { Graph } from '../../ir/graph.js';
import type { LMStepper } from '../generate.js';
import { runGraph } from './interpreter.js';
import { Tensor } from './tensor.js';

/** {@link LMStepper} over the reference interpreter. */
export class CpuCausalLM implements LMStepper {
  private past = new Map<string, Tensor>();
  private pos = 0;
  /** Positions run so far. */
  get position(): number {
    return this.pos;
  }
  constructor(
    /** The decoder graph (with `past_*` inputs and `present_*` outputs). */
    readonly graph: Graph,
    /** Longest sequence the model supports. */
    readonly maxPositions: number,
  ) {
    for (const inp of graph.inputs) {
      const name = inp.attrs.name;
      if (name.startsWith('past_')) {
        const shape = inp.shape.map((d) => (typeof d === 'number' ? d : 0));
        this.past.set(name, Tensor.zeros(inp.dtype, shape));
      }
    }
  }
  /** Forgets the cache. */
  reset(): void {
    for (const [k, t] of this.past) this.past.set(k, Tensor.zeros(t.dtype, [t.shape[0], 0, ...t.shape.slice(2)]));
    this.pos = 0;
  }
  /**
   * Rolls the cache back to its first `length` positions (e.g. after a rejected speculative draft); the next step runs
   * at position `length`.
   */
  truncate(length: number): void {
    if (!(Number.isInteger(length) && length >= 0 && length <= this.pos)) throw new InputError(`cannot roll the cache of ${this.pos} positions back to ${length}`);
    for (const [k, t] of this.past) {
      // [batch, positions, ...]: keep the first `length` positions of every batch row
      const [b, n, ...rest] = t.shape;
      const inner = rest.reduce((a, x) => a * x, 1);
      const out = Tensor.zeros(t.dtype, [b, length, ...rest]);
      for (let i = 0; i < b; i++) out.data.set(t.data.subarray(i * n * inner, (i * n + length) * inner) as never, i * length * inner);
      this.past.set(k, out);
    }
    this.pos = length;
  }
  step(tokens: readonly number[]): Float32Array {
    const logits = this.run(tokens);
    const vocab = logits.shape[logits.shape.length - 1];
    return (logits.data as Float32Array).slice(logits.data.length - vocab);
  }
  /**
   * Runs `tokens` at the next positions and returns the logits after each of them (`tokens.length` rows of the vocab
   * size, row-major). The graph must be built with logits at every position (not `lastTokenLogitsOnly`).
   */
  stepAll(tokens: readonly number[]): Float32Array {
    const logits = this.run(tokens);
    const rows = logits.shape.slice(0, -1).reduce((a, b) => a * b, 1);
    if (rows !== tokens.length) throw new InputError(`the graph returns logits for ${rows} of ${tokens.length} positions; build it with logits at every position`);
    return logits.data as Float32Array;
  }
  private run(tokens: readonly number[]): Tensor {
    if (this.pos + tokens.length > this.maxPositions) throw new InputError(`sequence would reach ${this.pos + tokens.length} positions, the model supports ${this.maxPositions}`);
    const inputs: Record<string, Tensor> = {
      tokens: Tensor.from('i32', [1, tokens.length], tokens),
      positions: Tensor.from('i32', [tokens.length], tokens.map((_t, i) => this.pos + i)),
    };
    for (const [k, t] of this.past) inputs[k] = t;
    const out = runGraph(this.graph, inputs);
    for (const k of this.past.keys()) this.past.set(k, out[k.replace('past_', 'present_')]);
    this.pos += tokens.length;
    return out.logits;
  }
}
