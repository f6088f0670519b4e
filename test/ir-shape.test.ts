/**
 * Shape inference: property tests of each op's type rule against small independent implementations, symbolic dims,
 * ill-typed builds (ShapeError naming the op and shapes), and node interning.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InputError, ShapeError, UnsupportedOpError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { dimAdd, dimDivExact, dimMul, dimSub, evalDim, numel, parseDim, shapeToString, sym, SymDim, type Dim } from '../src/ir/dim.js';
import type { DType } from '../src/ir/dtype.js';
import { makeNode, type Node } from '../src/ir/node.js';
import { broadcastShapes, type BinaryOp, type CompareOp, type ReduceOp } from '../src/ir/ops.js';
import { expectThrown } from './support/expect-thrown.js';

const RUNS = Number(process.env.PROP_RUNS ?? 200);

let inputCounter = 0;
/** A fresh input node of the given type (unique name, so never interned with another). */
function inp(shape: readonly Dim[], dtype: DType = 'f32'): Node {
  return makeNode('input', [], { name: `t${inputCounter++}`, dtype, shape: [...shape] });
}

/** numpy's broadcasting rule, written independently: null when the shapes are incompatible. */
function npBroadcast(shapes: readonly (readonly number[])[]): number[] | null {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const ds = shapes.map((s) => (i - (rank - s.length) >= 0 ? s[i - (rank - s.length)] : 1));
    const non1 = [...new Set(ds.filter((d) => d !== 1))];
    if (non1.length > 1) return null;
    out.push(non1.length ? non1[0] : 1);
  }
  return out;
}

/** Expects `f` to throw a ShapeError for `op` whose message mentions every given text. */
function expectShapeError(f: () => unknown, op: string, ...texts: string[]): void {
  const se = expectThrown(f, ShapeError, `expected a ShapeError from ${op}`);
  expect(se.op).toBe(op);
  expect(se.code).toBe('SHAPE_MISMATCH');
  expect(se.message.startsWith(`${op}:`)).toBe(true);
  for (const t of texts) expect(se.message).toContain(t);
}

const dimArb = fc.integer({ min: 1, max: 5 });
const shapeArb = (maxRank = 4): fc.Arbitrary<number[]> => fc.array(dimArb, { maxLength: maxRank });

/** A shape that broadcasts to `s`: leading dims dropped, some dims replaced by 1. */
function reducedOf(s: readonly number[]): fc.Arbitrary<number[]> {
  return fc
    .record({ drop: fc.integer({ min: 0, max: s.length }), ones: fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }) })
    .map(({ drop, ones }) => s.map((d, i) => (ones[i] ? 1 : d)).slice(drop));
}

/** Pairs of shapes, about half of them broadcast-compatible by construction, the rest arbitrary. */
const shapePairArb = fc.oneof(
  shapeArb(5).chain((base) => fc.tuple(reducedOf(base), reducedOf(base))),
  fc.tuple(shapeArb(4), shapeArb(4)),
  fc.tuple(fc.array(fc.integer({ min: 1, max: 2 }), { maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 2 }), { maxLength: 4 })),
);

describe('broadcasting', () => {
  it('binary elementwise ops follow numpy broadcasting; incompatible shapes throw ShapeError naming op and shapes', () => {
    fc.assert(
      fc.property(shapePairArb, fc.constantFrom<BinaryOp | CompareOp>('add', 'sub', 'mul', 'div', 'maximum', 'less', 'equal'), ([a, b], op) => {
        const want = npBroadcast([a, b]);
        const x = inp(a);
        const y = inp(b);
        if (want === null) {
          expectShapeError(() => makeNode(op, [x, y]), op, shapeToString(a), shapeToString(b));
          expect(() => broadcastShapes('expand', [a, b])).toThrow(ShapeError);
        } else {
          const n = makeNode(op, [x, y]);
          expect([...n.shape]).toEqual(want);
          expect(n.dtype).toBe(op === 'less' || op === 'equal' ? 'bool' : 'f32');
          expect([...makeNode(op, [y, x]).shape]).toEqual(want);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('where broadcasts all three operands', () => {
    fc.assert(
      fc.property(shapeArb(4).chain((base) => fc.tuple(reducedOf(base), reducedOf(base), fc.oneof(reducedOf(base), shapeArb(3)))), ([c, a, b]) => {
        const want = npBroadcast([c, a, b]);
        const f = (): Node => makeNode('where', [inp(c, 'bool'), inp(a), inp(b)]);
        if (want === null) expectShapeError(f, 'where', shapeToString(c), shapeToString(a), shapeToString(b));
        else expect([...f().shape]).toEqual(want);
      }),
      { numRuns: RUNS },
    );
  });

  it('expand broadcasts to the target shape', () => {
    fc.assert(
      fc.property(shapePairArb, ([a, target]) => {
        const want = npBroadcast([a, target]);
        const f = (): Node => makeNode('expand', [inp(a)], { shape: target });
        if (want === null) expectShapeError(f, 'expand', shapeToString(a), shapeToString(target));
        else expect([...f().shape]).toEqual(want);
      }),
      { numRuns: RUNS },
    );
  });

  it('symbolic dims broadcast with 1 and with themselves, not with other dims', () => {
    const seq = sym('seq');
    const past = sym('past');
    expect(makeNode('add', [inp([seq, 1]), inp([1, 4])]).shape).toEqual([seq, 4]);
    expect(makeNode('add', [inp([seq, 4]), inp([4])]).shape).toEqual([seq, 4]);
    expect(makeNode('mul', [inp([2, seq, 4]), inp([seq, 1])]).shape).toEqual([2, seq, 4]);
    expectShapeError(() => makeNode('add', [inp([seq]), inp([past])]), 'add', '[seq]', '[past]');
    expectShapeError(() => makeNode('add', [inp([seq]), inp([3])]), 'add', '[seq]', '[3]');
  });
});

describe('matmul', () => {
  const mmArb = fc.record({
    batch: shapeArb(3),
    dropA: fc.nat(3),
    dropB: fc.nat(3),
    onesA: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
    onesB: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
    m: dimArb,
    n: dimArb,
    k: dimArb,
    transA: fc.boolean(),
    transB: fc.boolean(),
  });

  it('output is [broadcast(batchA, batchB), M, N] with transposes as attributes', () => {
    fc.assert(
      fc.property(mmArb, ({ batch, dropA, dropB, onesA, onesB, m, n, k, transA, transB }) => {
        const bA = batch.map((d, i) => (onesA[i] ? 1 : d)).slice(Math.min(dropA, batch.length));
        const bB = batch.map((d, i) => (onesB[i] ? 1 : d)).slice(Math.min(dropB, batch.length));
        const A = inp(transA ? [...bA, k, m] : [...bA, m, k]);
        const B = inp(transB ? [...bB, n, k] : [...bB, k, n]);
        const y = makeNode('matmul', [A, B], { transA, transB });
        expect([...y.shape]).toEqual([...npBroadcast([bA, bB])!, m, n]);
        expect(y.attrs).toEqual({ transA, transB });
      }),
      { numRuns: RUNS },
    );
  });

  it('a contracted-dim mismatch throws ShapeError naming matmul and both shapes', () => {
    fc.assert(
      fc.property(dimArb, dimArb, dimArb, dimArb, fc.boolean(), fc.boolean(), (m, n, k, k2, transA, transB) => {
        fc.pre(k !== k2);
        const as = transA ? [k, m] : [m, k];
        const bs = transB ? [n, k2] : [k2, n];
        expectShapeError(() => makeNode('matmul', [inp(as), inp(bs)], { transA, transB }), 'matmul', shapeToString(as), shapeToString(bs));
      }),
      { numRuns: 50 },
    );
    expectShapeError(() => makeNode('matmul', [inp([2, 3]), inp([4, 5])]), 'matmul', '[2,3]', '[4,5]', '3 vs 4');
    expectShapeError(() => makeNode('matmul', [inp([3]), inp([3, 5])]), 'matmul', '[3]', '[3,5]');
    expectShapeError(() => makeNode('matmul', [inp([2, 2, 3]), inp([3, 3, 4])]), 'matmul', '[2]', '[3]');
  });

  it('symbolic contraction dims must match exactly', () => {
    const seq = sym('seq');
    const past = sym('past');
    expect(makeNode('matmul', [inp([4, seq]), inp([seq, 6])]).shape).toEqual([4, 6]);
    const t = dimAdd(past, seq);
    expect(makeNode('matmul', [inp([seq, t]), inp([t, 8])]).shape).toEqual([seq, 8]);
    expectShapeError(() => makeNode('matmul', [inp([4, seq]), inp([past, 6])]), 'matmul', '[4,seq]', '[past,6]');
  });
});

describe('reductions', () => {
  const redArb = shapeArb(5).chain((shape) =>
    fc.record({
      shape: fc.constant(shape),
      axes: fc.array(fc.integer({ min: -shape.length, max: Math.max(0, shape.length - 1) }), { maxLength: shape.length + 1 }).map((a) => (shape.length ? a : [])),
      keepDims: fc.boolean(),
      op: fc.constantFrom<ReduceOp>('sum', 'mean', 'max'),
    }),
  );

  it('drop (or keep as 1) the reduced axes; axes are normalized, deduplicated and sorted', () => {
    fc.assert(
      fc.property(redArb, ({ shape, axes, keepDims, op }) => {
        const r = shape.length;
        const norm = [...new Set(axes.map((a) => (a < 0 ? a + r : a)))].sort((p, q) => p - q);
        const y = makeNode(op, [inp(shape)], { axes, keepDims });
        const want = keepDims ? shape.map((d, i) => (norm.includes(i) ? 1 : d)) : shape.filter((_d, i) => !norm.includes(i));
        expect([...y.shape]).toEqual(want);
        expect(y.attrs).toEqual({ axes: norm, keepDims });
      }),
      { numRuns: RUNS },
    );
  });

  it('out-of-range axes and bad dtypes throw ShapeError', () => {
    expectShapeError(() => makeNode('sum', [inp([2, 3])], { axes: [2] }), 'sum', 'axis 2', 'rank 2');
    expectShapeError(() => makeNode('max', [inp([2, 3])], { axes: [-3] }), 'max', 'axis -3');
    expectShapeError(() => makeNode('mean', [inp([2, 3], 'i32')], { axes: [0] }), 'mean', 'i32[2,3]');
    expectShapeError(() => makeNode('sum', [inp([2], 'bool')], { axes: [0] }), 'sum', 'bool');
  });
});

describe('layout ops', () => {
  /** A random factorization of n into `parts` factors (shuffled). */
  function factorize(n: number, cuts: number[]): number[] {
    const primes: number[] = [];
    let m = n;
    for (let p = 2; p <= m; p++) while (m % p === 0) (primes.push(p), (m /= p));
    const out = cuts.map(() => 1);
    if (!out.length) out.push(1);
    primes.forEach((p, i) => (out[(cuts[i % cuts.length] ?? 0) % out.length] *= p));
    return out;
  }

  it('reshape: target shapes with -1 and 0 are resolved to explicit dims', () => {
    fc.assert(
      fc.property(
        shapeArb(4),
        fc.array(fc.nat(5), { minLength: 1, maxLength: 4 }),
        fc.option(fc.nat(3), { nil: undefined }),
        fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
        (shape, cuts, minusAt, zeros) => {
          const n = shape.reduce((a, b) => a * b, 1);
          const target = factorize(n, cuts);
          const spelled: number[] = [...target];
          spelled.forEach((d, i) => {
            if (zeros[i] && i < shape.length && shape[i] === d) spelled[i] = 0;
          });
          if (minusAt !== undefined) spelled[minusAt % spelled.length] = -1;
          const y = makeNode('reshape', [inp(shape)], { shape: spelled });
          expect([...y.shape]).toEqual(target);
          expect(y.attrs).toEqual({ shape: target });
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('reshape errors: element count, non-divisible -1, two -1s, bad dims', () => {
    expectShapeError(() => makeNode('reshape', [inp([2, 3])], { shape: [4, 2] }), 'reshape', '[2,3]', '[4,2]');
    expectShapeError(() => makeNode('reshape', [inp([2, 3])], { shape: [-1, 4] }), 'reshape', '[2,3]', '-1');
    expectShapeError(() => makeNode('reshape', [inp([2, 3])], { shape: [-1, -1] }), 'reshape', '-1');
    expectShapeError(() => makeNode('reshape', [inp([2, 3])], { shape: [6, -2] }), 'reshape', '-2');
    expectShapeError(() => makeNode('reshape', [inp([6])], { shape: [0, 0] }), 'reshape', '[6]');
  });

  it('transpose permutes dims (default: reversed); non-permutations throw', () => {
    fc.assert(
      fc.property(shapeArb(5).chain((s) => fc.tuple(fc.constant(s), fc.shuffledSubarray([...s.keys()], { minLength: s.length, maxLength: s.length }))), ([shape, perm]) => {
        expect([...makeNode('transpose', [inp(shape)], { perm }).shape]).toEqual(perm.map((p) => shape[p]));
      }),
      { numRuns: RUNS },
    );
    expect([...makeNode('transpose', [inp([2, 3, 4])]).shape]).toEqual([4, 3, 2]);
    expect(makeNode('transpose', [inp([2, 3, 4])]).attrs).toEqual({ perm: [2, 1, 0] });
    expectShapeError(() => makeNode('transpose', [inp([2, 3, 4])], { perm: [0, 0, 1] }), 'transpose', '[2,3,4]');
    expectShapeError(() => makeNode('transpose', [inp([2, 3])], { perm: [1, 0, 2] }), 'transpose', '[2,3]');
  });

  it('concat sums the axis and requires equal dims elsewhere', () => {
    fc.assert(
      fc.property(
        fc.array(dimArb, { minLength: 1, maxLength: 4 }),
        fc.nat(3),
        fc.array(dimArb, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        (shape, ax, sizes, negative) => {
          const axis = ax % shape.length;
          const parts = sizes.map((sz) => shape.map((d, i) => (i === axis ? sz : d)));
          const y = makeNode('concat', parts.map((p) => inp(p)), { axis: negative ? axis - shape.length : axis });
          const want = [...shape];
          want[axis] = sizes.reduce((a, b) => a + b, 0);
          expect([...y.shape]).toEqual(want);
          expect(y.attrs).toEqual({ axis });
        },
      ),
      { numRuns: RUNS },
    );
    expectShapeError(() => makeNode('concat', [inp([2, 3]), inp([3, 3])], { axis: 1 }), 'concat', '[2,3]', '[3,3]');
    expectShapeError(() => makeNode('concat', [inp([2, 3]), inp([2, 3, 1])], { axis: 0 }), 'concat', '[2,3]', '[2,3,1]');
    expectShapeError(() => makeNode('concat', [inp([2]), inp([2], 'i32')], { axis: 0 }), 'concat', 'f32[2]', 'i32[2]');
  });

  /** ONNX Slice, written independently: the indices taken along one axis of length n. */
  function onnxIndices(n: number, start: number, end: number | null, step: number): number[] {
    const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
    let s = start < 0 ? start + n : start;
    let e = end === null ? (step > 0 ? n : -1) : end < 0 ? end + n : end;
    if (step > 0) {
      s = clamp(s, 0, n);
      e = clamp(e, 0, n);
    } else {
      s = clamp(s, 0, n - 1);
      e = clamp(e, -1, n - 1);
    }
    const out: number[] = [];
    for (let i = s; step > 0 ? i < e : i > e; i += step) out.push(i);
    return out;
  }

  const sliceArb = fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 3 }).chain((shape) =>
    fc.record({
      shape: fc.constant(shape),
      specs: fc.array(
        fc.record({
          start: fc.integer({ min: -8, max: 8 }),
          end: fc.option(fc.integer({ min: -8, max: 8 }), { nil: null }),
          step: fc.constantFrom(1, 2, 3, -1, -2, -3),
          negAxis: fc.boolean(),
        }),
        { minLength: 1, maxLength: shape.length },
      ),
    }),
  );

  it('slice shapes follow ONNX semantics on static axes (steps, negative and out-of-range bounds)', () => {
    fc.assert(
      fc.property(sliceArb, ({ shape, specs }) => {
        const axes = specs.map((sp, i) => (sp.negAxis ? i - shape.length : i));
        const y = makeNode('slice', [inp(shape)], { axes, starts: specs.map((s) => s.start), ends: specs.map((s) => s.end), steps: specs.map((s) => s.step) });
        const want = shape.map((d, i) => (i < specs.length ? onnxIndices(d, specs[i].start, specs[i].end, specs[i].step).length : d));
        expect([...y.shape]).toEqual(want);
      }),
      { numRuns: RUNS },
    );
  });

  // ONNX clamps a negative-step start to [0, n-1], so x[-100::-1] of [0..4] is [0] (numpy would give []).
  it('slice with a negative step and start < -n follows ONNX (clamps start to 0)', () => {
    const y = makeNode('slice', [inp([5])], { axes: [0], starts: [-100], ends: [null], steps: [-1] });
    expect([...y.shape]).toEqual([1]);
  });

  it('slice errors: zero step, repeated axis, length mismatch, steps on symbolic axes', () => {
    expectShapeError(() => makeNode('slice', [inp([4])], { axes: [0], starts: [0], ends: [2], steps: [0] }), 'slice', 'step');
    expectShapeError(() => makeNode('slice', [inp([4, 4])], { axes: [0, -2], starts: [0, 0], ends: [2, 2] }), 'slice', 'repeated axis');
    expectShapeError(() => makeNode('slice', [inp([4])], { axes: [0], starts: [0, 1], ends: [2] }), 'slice', 'equal lengths');
    expectShapeError(() => makeNode('slice', [inp([sym('seq')])], { axes: [0], starts: [0], ends: [null], steps: [2] }), 'slice', '[seq]');
    expectShapeError(() => makeNode('slice', [inp([sym('seq')])], { axes: [0], starts: [-1], ends: [null] }), 'slice', '[seq]');
  });

  it('gather replaces the axis with the index shape', () => {
    fc.assert(
      fc.property(fc.array(dimArb, { minLength: 1, maxLength: 4 }), fc.nat(3), shapeArb(3), fc.constantFrom('i32', 'u32') as fc.Arbitrary<DType>, (shape, ax, ishape, idt) => {
        const axis = ax % shape.length;
        const y = makeNode('gather', [inp(shape), inp(ishape, idt)], { axis });
        expect([...y.shape]).toEqual([...shape.slice(0, axis), ...ishape, ...shape.slice(axis + 1)]);
      }),
      { numRuns: RUNS },
    );
    expect(makeNode('gather', [inp([5, 3]), inp([2, 7], 'i32')]).shape).toEqual([2, 7, 3]);
    expectShapeError(() => makeNode('gather', [inp([5, 3]), inp([2], 'f32')], { axis: 0 }), 'gather', 'f32[2]');
    expectShapeError(() => makeNode('gather', [inp([5, 3]), inp([2], 'i32')], { axis: 2 }), 'gather', 'axis 2');
  });
});

describe('symbolic dims', () => {
  const seq = sym('seq');
  const past = sym('past');
  const batch = sym('batch');

  it('are interned and canonical', () => {
    expect(sym('seq')).toBe(seq);
    expect(dimAdd(past, seq)).toBe(dimAdd(seq, past));
    expect((dimAdd(past, seq) as SymDim).text).toBe('past+seq');
    expect(dimMul(batch, seq)).toBe(dimMul(seq, batch));
    expect((dimMul(seq, batch) as SymDim).text).toBe('batch*seq');
    expect(dimSub(dimAdd(seq, 3), seq)).toBe(3);
    expect(dimSub(seq, seq)).toBe(0);
    expect(dimMul(seq, 0)).toBe(0);
    expect(dimMul(seq, 1)).toBe(seq);
    expect(dimAdd(seq, 0)).toBe(seq);
    expect(dimDivExact(dimMul(batch, seq), seq)).toBe(batch);
    expect(dimDivExact(dimMul(dimMul(batch, seq), 64), 64)).toBe(dimMul(batch, seq));
    expect(dimDivExact(dimAdd(seq, 1), seq)).toBeUndefined();
    expect(dimDivExact(dimMul(seq, 6), 4)).toBeUndefined();
    expect(dimDivExact(dimAdd(past, seq), dimAdd(seq, past))).toBe(1);
    expect(parseDim('seq+past')).toBe(dimAdd(past, seq));
    expect(parseDim('2*batch*seq')).toBe(dimMul(2, dimMul(seq, batch)));
    expect(() => sym('1x')).toThrow(InputError);
  });

  /** Random polynomials over three symbols, as term lists. */
  const termArb = fc.record({ c: fc.integer({ min: -4, max: 4 }), vars: fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 3 }) });
  const polyArb = fc.array(termArb, { maxLength: 5 });
  function build(terms: readonly { c: number; vars: readonly string[] }[], reverse: boolean): Dim {
    let p: Dim = 0;
    const ts = reverse ? [...terms].reverse() : terms;
    for (const t of ts) {
      let m: Dim = t.c;
      const vs = reverse ? [...t.vars].reverse() : t.vars;
      for (const v of vs) m = reverse ? dimMul(sym(v), m) : dimMul(m, sym(v));
      p = reverse ? dimAdd(m, p) : dimAdd(p, m);
    }
    return p;
  }
  const evalTerms = (terms: readonly { c: number; vars: readonly string[] }[], env: Record<string, number>): number =>
    terms.reduce((acc, t) => acc + t.vars.reduce((m, v) => m * env[v], t.c), 0) + 0; // + 0: no -0

  it('arithmetic is canonical (=== regardless of construction order) and evaluates correctly', () => {
    fc.assert(
      fc.property(polyArb, polyArb, fc.record({ a: fc.integer({ min: 0, max: 9 }), b: fc.integer({ min: 0, max: 9 }), c: fc.integer({ min: 0, max: 9 }) }), (p, q, env) => {
        const P = build(p, false);
        expect(build(p, true)).toBe(P);
        expect(evalDim(P, env) + 0).toBe(evalTerms(p, env));
        const Q = build(q, false);
        expect(dimAdd(P, Q)).toBe(dimAdd(Q, P));
        expect(dimMul(P, Q)).toBe(dimMul(Q, P));
        expect(dimSub(dimAdd(P, Q), Q)).toBe(P);
        expect(evalDim(dimMul(P, Q), env) + 0).toBe(evalTerms(p, env) * evalTerms(q, env) + 0);
        expect(parseDim(typeof P === 'number' ? P : P.text)).toBe(P);
        // exact division by a monomial undoes multiplication by it
        const mono = dimMul(3, sym('b'));
        expect(dimDivExact(dimMul(P, mono), mono)).toBe(P);
      }),
      { numRuns: RUNS },
    );
  });

  it('reshape of [batch, seq, 64] infers batch*seq for -1 and splits the last dim', () => {
    const x = inp([batch, seq, 64]);
    const flat = makeNode('reshape', [x], { shape: [-1, 64] });
    expect(flat.shape[0]).toBe(dimMul(batch, seq));
    expect(shapeToString(flat.shape)).toBe('[batch*seq,64]');
    expect(makeNode('reshape', [x], { shape: [batch, seq, 8, 8] }).shape).toEqual([batch, seq, 8, 8]);
    const z = makeNode('reshape', [x], { shape: [0, 0, 8, -1] });
    expect(z.shape).toEqual([batch, seq, 8, 8]);
    expect(makeNode('reshape', [x], { shape: [batch, seq, 8, 8] })).toBe(z);
    expect(makeNode('reshape', [x], { shape: [-1] }).shape).toEqual([dimMul(64, dimMul(batch, seq))]);
    expect(makeNode('reshape', [flat], { shape: [batch, -1, 64] }).shape).toEqual([batch, seq, 64]);
    expect(makeNode('reshape', [x], { shape: [-1, seq, 64] }).shape).toEqual([batch, seq, 64]);
    expectShapeError(() => makeNode('reshape', [x], { shape: [-1, 7] }), 'reshape', '[batch,seq,64]');
    expectShapeError(() => makeNode('reshape', [x], { shape: [seq, seq, 64] }), 'reshape', '[batch,seq,64]', '[seq,seq,64]');
    expect(numel(flat.shape)).toBe(numel(x.shape));
  });

  it('concat and slice produce symbolic dims', () => {
    const k = makeNode('concat', [inp([1, past, 2, 4]), inp([1, seq, 2, 4])], { axis: 1 });
    expect(k.shape[1]).toBe(dimAdd(past, seq));
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [1, 'seq', 8]);
    const last = b.sliceAxis(x, 1, dimSub(seq, 1) as SymDim, null);
    expect(last.shape).toEqual([1, 1, 8]);
    expect(b.sliceAxis(x, 1, 1, null).shape).toEqual([1, dimSub(seq, 1), 8]);
    expect(b.sliceAxis(k, 1, 0, past).shape).toEqual([1, past, 2, 4]);
  });
});

describe('ill-typed builds', () => {
  it('name the op and the shapes', () => {
    expectShapeError(() => makeNode('add', [inp([2, 3]), inp([2, 3], 'i32')]), 'add', 'f32[2,3]', 'i32[2,3]');
    expectShapeError(() => makeNode('rmsnorm', [inp([2, 4]), inp([5])]), 'rmsnorm', '[5]', '[2,4]');
    expectShapeError(() => makeNode('layernorm', [inp([2, 4]), inp([4]), inp([3])]), 'layernorm', '[3]', '[2,4]');
    expectShapeError(() => makeNode('attention', [inp([1, 2, 3, 4]), inp([1, 2, 2, 4]), inp([1, 2, 2, 4])]), 'attention', '(3)', '(2)');
    expectShapeError(() => makeNode('attention', [inp([1, 2, 4, 4]), inp([1, 2, 2, 8]), inp([1, 2, 2, 8])]), 'attention', '[1,2,4,4]', '[1,2,2,8]');
    expectShapeError(() => makeNode('attention', [inp([1, 2, 4, 4]), inp([1, 3, 2, 4]), inp([1, 2, 2, 4])]), 'attention', '[1,3,2,4]', '[1,2,2,4]');
    expectShapeError(
      () => makeNode('attention', [inp([1, 2, 4, 4]), inp([1, 3, 2, 4]), inp([1, 3, 2, 4]), inp([3, 2])]),
      'attention',
      '[3,2]',
      '[1,4,2,3]',
    );
    expectShapeError(() => makeNode('rope', [inp([1, 2, 2, 4]), inp([2], 'f32')]), 'rope', 'f32[2]');
    expectShapeError(() => makeNode('rope', [inp([1, 2, 2, 4]), inp([3], 'i32')]), 'rope', '[3]', '[1,2,2,4]');
    expectShapeError(() => makeNode('rope', [inp([1, 2, 2, 5]), inp([2], 'i32')]), 'rope', 'rotaryDim 5');
    expectShapeError(() => makeNode('softmax', [inp([2, 3], 'i32')]), 'softmax', 'i32[2,3]');
    expectShapeError(() => makeNode('exp', [inp([2], 'i32')]), 'exp', 'i32[2]');
    expectShapeError(() => makeNode('where', [inp([2]), inp([2]), inp([2])]), 'where', 'f32[2]');
    expectShapeError(() => makeNode('add', [inp([2], 'bool'), inp([2], 'bool')]), 'add', 'bool');
    expectShapeError(() => makeNode('add', [inp([2])]), 'add', '2 operands, got 1');
    expectShapeError(() => makeNode('constant', [], { dtype: 'f32', shape: [2, 2], values: [1, 2, 3] }), 'constant', '[2,2]');
    expectShapeError(() => makeNode('constant', [], { dtype: 'f32', shape: [4097], values: [0] }), 'constant', 'too large');
  });

  it('an unknown op is an UnsupportedOpError', () => {
    const err = expectThrown(() => makeNode('frobnicate' as never, []), UnsupportedOpError);
    expect(err.ops).toEqual(['frobnicate']);
    expect(err.message).toContain('frobnicate');
  });
});

describe('interning', () => {
  const a = inp([2, 3]);
  const c = inp([2, 3]);

  it('building the same node twice returns the same object', () => {
    expect(makeNode('exp', [a])).toBe(makeNode('exp', [a]));
    expect(makeNode('matmul', [a, inp([3, 4])], { transB: false })).not.toBe(undefined);
    const w = inp([3, 4]);
    expect(makeNode('matmul', [a, w])).toBe(makeNode('matmul', [a, w], { transA: false, transB: false }));
    const b1 = new GraphBuilder();
    const b2 = new GraphBuilder();
    expect(b1.constant(2)).toBe(b2.constant(2));
    expect(b1.add(a, 1)).toBe(b2.add(a, 1));
  });

  it('commutative ops are canonical; the others are not', () => {
    for (const op of ['add', 'mul', 'maximum', 'minimum', 'equal'] as const) expect(makeNode(op, [a, c])).toBe(makeNode(op, [c, a]));
    for (const op of ['sub', 'div', 'pow', 'less', 'greater'] as const) expect(makeNode(op, [a, c])).not.toBe(makeNode(op, [c, a]));
  });

  it('different attributes make different nodes; equal normalized attributes the same node', () => {
    expect(makeNode('softmax', [a], { axis: 0 })).not.toBe(makeNode('softmax', [a], { axis: 1 }));
    expect(makeNode('softmax', [a], { axis: -1 })).toBe(makeNode('softmax', [a], { axis: 1 }));
    expect(makeNode('softmax', [a])).toBe(makeNode('softmax', [a], { axis: 1 }));
    expect(makeNode('sum', [a], { axes: [1, 0] })).toBe(makeNode('sum', [a], { axes: [-1, 0, 0] }));
    expect(makeNode('sum', [a], { axes: [1] })).not.toBe(makeNode('sum', [a], { axes: [1], keepDims: true }));
    expect(makeNode('sum', [a], { axes: [1] })).not.toBe(makeNode('mean', [a], { axes: [1] }));
    expect(makeNode('gelu', [a])).toBe(makeNode('gelu', [a], { approximate: 'none' }));
    expect(makeNode('gelu', [a])).not.toBe(makeNode('gelu', [a], { approximate: 'tanh' }));
    expect(makeNode('exp', [a], { ignored: 1 })).toBe(makeNode('exp', [a]));
    expect(makeNode('reshape', [a], { shape: [-1, 3] })).toBe(makeNode('reshape', [a], { shape: [0, 3] }));
    expect(makeNode('reshape', [a], { shape: [3, 2] })).not.toBe(makeNode('reshape', [a], { shape: [6] }));
    expect(makeNode('transpose', [a])).toBe(makeNode('transpose', [a], { perm: [1, 0] }));
    expect(makeNode('cast', [a], { to: 'f16' })).not.toBe(makeNode('cast', [a], { to: 'i32' }));
    const one = makeNode('constant', [], { dtype: 'f32', shape: [3], values: [1, 1, 1] });
    expect(one).toBe(makeNode('constant', [], { dtype: 'f32', shape: [3], values: [1] }));
    expect(one).not.toBe(makeNode('constant', [], { dtype: 'f32', shape: [], values: [1] }));
    expect(one).not.toBe(makeNode('constant', [], { dtype: 'i32', shape: [3], values: [1] }));
    expect(makeNode('constant', [], { dtype: 'f32', shape: [], values: [0] })).not.toBe(makeNode('constant', [], { dtype: 'f32', shape: [], values: [-0] }));
    expect(makeNode('slice', [a], { axes: [1], starts: [-2], ends: [null] })).toBe(makeNode('slice', [a], { axes: [-1], starts: [1], ends: [3], steps: [1] }));
    expect(makeNode('attention', [inp([1, 2, 2, 4]), inp([1, 2, 2, 4]), inp([1, 2, 2, 4])]).attrs).toEqual({ causal: false, scale: 0.5 });
  });

  it('nodes record their inferred type, frozen', () => {
    const n = makeNode('add', [a, inp([3])]);
    expect(n.typeString()).toBe('f32[2,3]');
    expect(Object.isFrozen(n)).toBe(true);
    expect(Object.isFrozen(n.shape)).toBe(true);
    expect(Object.isFrozen(n.attrs)).toBe(true);
  });
});
