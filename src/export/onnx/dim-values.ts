/**
 * Symbolic dims as ONNX values: the exported graph computes each symbolic size it needs (a reshape's target, a
 * slice's bound, `past + seq`) from the shapes of its inputs at run time. A symbol is read with
 * `Shape(input, start=axis, end=axis+1)` from a graph input that has it as a plain dim; a polynomial over symbols
 * (`2*batch*seq`, `past+seq`) becomes `Mul`/`Add` over those int64 `[1]` values. A symbol no input has is an
 * {@link UnsupportedOpError} naming it: the graph could not know its value.
 * @module
 */
import { UnsupportedOpError } from '../../errors.js';
import type { Dim, Shape } from '../../ir/dim.js';
import type { OnnxGraphWriter } from './graph-writer.js';

/** Where a symbol can be read: an exported graph input and the axis that holds it. */
export interface SymbolSource {
  /** ONNX name of the graph input. */
  readonly input: string;
  /** Axis of the input whose size is the symbol. */
  readonly axis: number;
}

/** Turns dims and shapes into int64 ONNX values, computing each symbolic one once. */
export class DimValues {
  private readonly cache = new Map<string, string>();
  constructor(
    private readonly w: OnnxGraphWriter,
    /** Symbol name to where it is read. */
    private readonly sources: ReadonlyMap<string, SymbolSource>,
  ) {}

  /** An int64 `[1]` value holding `d`. */
  dim(d: Dim): string {
    if (typeof d === 'number') return this.w.int64([d]);
    const hit = this.cache.get(d.text);
    if (hit) return hit;
    let sum: string | undefined;
    for (const [monomial, coef] of d.terms) {
      let term: string | undefined = monomial === '' ? this.w.int64([coef]) : undefined;
      if (monomial !== '') {
        for (const s of monomial.split('*')) term = term ? this.w.op('Mul', [term, this.symbol(s, d.text)]) : this.symbol(s, d.text);
        if (coef !== 1) term = this.w.op('Mul', [term!, this.w.int64([coef])]);
      }
      sum = sum ? this.w.op('Add', [sum, term!]) : term;
    }
    this.cache.set(d.text, sum!);
    return sum!;
  }

  /** An int64 `[shape.length]` value holding `shape` (a constant when it is static). */
  shape(shape: Shape): string {
    if (shape.every((d) => typeof d === 'number')) return this.w.int64(shape as readonly number[]);
    return this.memo(`shape:${shape.map(String).join(',')}`, () => this.w.op('Concat', shape.map((d) => this.dim(d)), { axis: 0 }));
  }

  /** An int64 `[n]` value of `dims`, each a dim or a fixed int64 (e.g. INT64_MAX for "to the end"). */
  list(dims: readonly (Dim | bigint)[]): string {
    if (dims.every((d) => typeof d === 'number' || typeof d === 'bigint')) return this.w.int64(dims as readonly (number | bigint)[]);
    return this.memo(`list:${dims.map(String).join(',')}`, () => this.w.op('Concat', dims.map((d) => (typeof d === 'bigint' ? this.w.int64([d]) : this.dim(d))), { axis: 0 }));
  }

  /** The value `make` computes, computed once per `key` (shapes, position ranges, causal masks). */
  memo(key: string, make: () => string): string {
    let v = this.cache.get(key);
    if (v === undefined) this.cache.set(key, (v = make()));
    return v;
  }

  private symbol(name: string, inDim: string): string {
    const key = `$${name}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const src = this.sources.get(name);
    if (!src)
      throw new UnsupportedOpError(['dim'], `symbolic dim '${name}' (in ${inDim}) is no dim of any graph input, so the exported graph cannot compute it; inputs with plain symbolic dims: ${[...this.sources.keys()].join(', ') || 'none'}`);
    const v = this.w.op('Shape', [src.input], { start: src.axis, end: src.axis + 1 });
    this.cache.set(key, v);
    return v;
  }
}
