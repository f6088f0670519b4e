/**
 * Dimensions: a dim is a non-negative integer or a symbolic expression over named sizes (`batch`, `seq`, `past`, …).
 *
 * Symbolic dims are polynomials with integer coefficients over symbol names, kept in a canonical form and interned,
 * so two dims are equal exactly when they are `===`. That is enough for what shape inference needs: `past + seq`
 * from a concat, `batch * seq` from a reshape, exact division when a reshape infers a `-1`.
 * @module
 */
import { InputError } from '../errors.js';

/** A symbolic dimension: a canonical, interned polynomial over symbol names. Compare with `===`. */
export class SymDim {
  /** Monomial key (symbol names sorted, joined by `*`; `''` for the constant term) to its non-zero coefficient. */
  readonly terms: ReadonlyMap<string, number>;
  /** Canonical text, e.g. `past+seq` or `2*batch*seq`; also the interning key. */
  readonly text: string;
  private constructor(terms: ReadonlyMap<string, number>, text: string) {
    this.terms = terms;
    this.text = text;
  }
  private static readonly table = new Map<string, SymDim>();
  /** Interns a polynomial; returns a plain number when it has no symbolic term. @internal */
  static make(terms: Map<string, number>): Dim {
    for (const [k, c] of terms) if (c === 0) terms.delete(k);
    const keys = [...terms.keys()].sort(compareMonomials);
    if (keys.length === 0) return 0;
    if (keys.length === 1 && keys[0] === '') return terms.get('')!;
    const text = keys
      .map((k, i) => {
        const c = terms.get(k)!;
        const sign = c < 0 ? '-' : i === 0 ? '' : '+';
        const mag = Math.abs(c);
        if (k === '') return `${sign}${mag}`;
        return `${sign}${mag === 1 ? '' : `${mag}*`}${k}`;
      })
      .join('');
    let d = SymDim.table.get(text);
    if (!d) {
      const sorted = new Map<string, number>();
      for (const k of keys) sorted.set(k, terms.get(k)!);
      d = new SymDim(sorted, text);
      SymDim.table.set(text, d);
    }
    return d;
  }
  /** The canonical text. */
  toString(): string {
    return this.text;
  }
  /** The symbol names this dim mentions. */
  symbols(): string[] {
    const out = new Set<string>();
    for (const k of this.terms.keys()) if (k) for (const s of k.split('*')) out.add(s);
    return [...out].sort();
  }
}

function compareMonomials(a: string, b: string): number {
  // higher degree first, then lexicographic; constant last
  if (a === '') return b === '' ? 0 : 1;
  if (b === '') return -1;
  const da = a.split('*').length;
  const db = b.split('*').length;
  return da !== db ? db - da : a < b ? -1 : a > b ? 1 : 0;
}

/** One dimension of a shape: a known size or a symbolic expression. */
export type Dim = number | SymDim;

/** A tensor shape. */
export type Shape = readonly Dim[];

const SYMBOL_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A named symbolic dimension, e.g. `sym('seq')`. Names are identifiers. */
export function sym(name: string): SymDim {
  if (!SYMBOL_RE.test(name)) throw new InputError(`symbolic dim name ${JSON.stringify(name)} is not an identifier`);
  return SymDim.make(new Map([[name, 1]])) as SymDim;
}

function termsOf(d: Dim): Map<string, number> {
  if (typeof d === 'number') return new Map(d === 0 ? [] : [['', d]]);
  return new Map(d.terms);
}

/** `a + b`. */
export function dimAdd(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  const t = termsOf(a);
  for (const [k, c] of termsOf(b)) t.set(k, (t.get(k) ?? 0) + c);
  return SymDim.make(t);
}

/** `a - b`. */
export function dimSub(a: Dim, b: Dim): Dim {
  return dimAdd(a, dimMul(b, -1));
}

function mulMonomials(a: string, b: string): string {
  if (a === '') return b;
  if (b === '') return a;
  return [...a.split('*'), ...b.split('*')].sort().join('*');
}

/** `a * b`. */
export function dimMul(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a * b;
  const t = new Map<string, number>();
  for (const [ka, ca] of termsOf(a))
    for (const [kb, cb] of termsOf(b)) {
      const k = mulMonomials(ka, kb);
      t.set(k, (t.get(k) ?? 0) + ca * cb);
    }
  return SymDim.make(t);
}

/** Product of dims (1 for an empty list). */
export function dimProduct(dims: readonly Dim[]): Dim {
  let p: Dim = 1;
  for (const d of dims) p = dimMul(p, d);
  return p;
}

function divMonomial(a: string, b: string): string | undefined {
  if (b === '') return a;
  const rest = a === '' ? [] : a.split('*');
  for (const s of b.split('*')) {
    const i = rest.indexOf(s);
    if (i < 0) return undefined;
    rest.splice(i, 1);
  }
  return rest.join('*');
}

/**
 * Exact division `a / b`, or `undefined` when it is not provably exact. `b` must be a number or a single-term
 * polynomial (e.g. `seq`, `4*batch`).
 */
export function dimDivExact(a: Dim, b: Dim): Dim | undefined {
  if (typeof a === 'number' && typeof b === 'number') return b !== 0 && a % b === 0 ? a / b : undefined;
  const tb = termsOf(b);
  if (tb.size !== 1) return a === b ? 1 : undefined;
  const [[kb, cb]] = [...tb];
  const t = new Map<string, number>();
  for (const [ka, ca] of termsOf(a)) {
    const k = divMonomial(ka, kb);
    if (k === undefined || ca % cb !== 0) return undefined;
    t.set(k, ca / cb);
  }
  return SymDim.make(t);
}

/** True when the dim is a known number. */
export function isStaticDim(d: Dim): d is number {
  return typeof d === 'number';
}

/** True when every dim of the shape is a known number. */
export function isStaticShape(s: Shape): s is readonly number[] {
  return s.every(isStaticDim);
}

/** Text of a dim. */
export function dimToString(d: Dim): string {
  return typeof d === 'number' ? String(d) : d.text;
}

/** Text of a shape, e.g. `[batch,seq,64]`. */
export function shapeToString(s: Shape): string {
  return `[${s.map(dimToString).join(',')}]`;
}

/** Values for symbolic dims at run time. */
export type DimBindings = Readonly<Record<string, number>>;

/** Evaluates a dim with the given symbol values; throws {@link InputError} naming an unbound symbol. */
export function evalDim(d: Dim, bindings: DimBindings): number {
  if (typeof d === 'number') return d;
  let total = 0;
  for (const [k, c] of d.terms) {
    let v = c;
    if (k)
      for (const s of k.split('*')) {
        const b = bindings[s];
        if (b === undefined) throw new InputError(`symbolic dim '${s}' (in ${d.text}) has no value`);
        v *= b;
      }
    total += v;
  }
  return total;
}

/** Evaluates every dim of a shape. */
export function evalShape(s: Shape, bindings: DimBindings): number[] {
  return s.map((d) => evalDim(d, bindings));
}

/** Substitutes values for some symbols, leaving the others symbolic. */
export function substituteDim(d: Dim, bindings: DimBindings): Dim {
  if (typeof d === 'number') return d;
  let out: Dim = 0;
  for (const [k, c] of d.terms) {
    let term: Dim = c;
    if (k) for (const s of k.split('*')) term = dimMul(term, bindings[s] ?? sym(s));
    out = dimAdd(out, term);
  }
  return out;
}

/** Whether two shapes are the same dim for dim (dims are interned, so `===` is equality). */
export function shapeEquals(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Row-major strides of a static shape: `stridesOf([2, 3, 4])` is `[12, 4, 1]`. */
export function stridesOf(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

/** Number of elements of a shape (a dim, symbolic when the shape is). */
export function numel(s: Shape): Dim {
  return dimProduct(s);
}

/** Parses the text form back (`past+seq`, `2*batch`, `64`); used for JSON round trips of shapes. */
export function parseDim(text: string | number): Dim {
  if (typeof text === 'number') return text;
  let out: Dim = 0;
  const src = text.replace(/\s+/g, '');
  const re = /([+-]?)([^+-]+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(src))) {
    let term: Dim = m[1] === '-' ? -1 : 1;
    for (const f of m[2].split('*')) term = dimMul(term, /^\d+$/.test(f) ? Number(f) : sym(f));
    out = dimAdd(out, term);
  }
  return out;
}

/** A JSON-friendly form of a shape (numbers stay numbers, symbolic dims become their text). */
export function shapeToJSON(s: Shape): (number | string)[] {
  return s.map((d) => (typeof d === 'number' ? d : d.text));
}
