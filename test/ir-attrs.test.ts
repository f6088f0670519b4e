/**
 * Typed attributes: `attrsOf` returns an op's canonical attributes typed (and checks the op), `isOp` narrows,
 * `typedOp` narrows per case of a switch, and fused programs carry their steps as attribute values without casts.
 * @module
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { InternalError, TensorwrightError } from '../src/errors.js';
import { attrsOf, isOp, typedOp, type FusedAttrs, type MatmulAttrs, type SliceAttrs, type TransposeAttrs } from '../src/ir/attrs.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { sym } from '../src/ir/dim.js';
import { makeNode, type Node } from '../src/ir/node.js';
import type { FusedStep } from '../src/ir/ops.js';
import { expectThrown } from './support/expect-thrown.js';

const b = new GraphBuilder();
const x = b.input('x', 'f32', ['seq', 8, 16]);

describe('attrsOf', () => {
  it('returns the canonical attributes, typed for the op', () => {
    const s = b.slice(x, { axes: [-1], starts: [-4], ends: [null] });
    const a = attrsOf(s, 'slice');
    expectTypeOf(a).toEqualTypeOf<SliceAttrs>();
    expect(a).toEqual({ axes: [2], starts: [12], ends: [16], steps: [1] });
    const t = attrsOf(b.transpose(x), 'transpose');
    expectTypeOf(t.perm).toEqualTypeOf<readonly number[]>();
    expect(t.perm).toEqual([2, 1, 0]);
    expect(attrsOf(x, 'input')).toEqual({ name: 'x', dtype: 'f32', shape: [sym('seq'), 8, 16] });
    expect(attrsOf(b.matmul(x, b.transpose(x, [0, 2, 1])), 'matmul')).toEqual({ transA: false, transB: false });
  });

  it('reads fused steps as well as nodes', () => {
    const step: FusedStep = { op: 'matmul', args: [0, 1], attrs: { transA: false, transB: true } };
    expectTypeOf(attrsOf(step, 'matmul')).toEqualTypeOf<MatmulAttrs>();
    expect(attrsOf(step, 'matmul').transB).toBe(true);
  });

  it('throws a typed internal error naming both ops when the node is another op', () => {
    const e = expectThrown(() => attrsOf(x, 'slice'), InternalError);
    expect(e).toBeInstanceOf(TensorwrightError);
    expect(e.code).toBe('INTERNAL');
    expect(e.message).toContain("expected a 'slice' node, got 'input'");
  });
});

describe('isOp and typedOp', () => {
  it('isOp narrows a node to its typed attributes', () => {
    const n: Node = b.transpose(x, [1, 0, 2]);
    expect(isOp(n, 'slice')).toBe(false);
    if (!isOp(n, 'transpose')) throw new Error('expected a transpose');
    expectTypeOf(n.attrs).toMatchTypeOf<TransposeAttrs>();
    expect(n.attrs.perm.every((p, i) => p === [1, 0, 2][i])).toBe(true);
  });

  it('typedOp narrows the attributes in each case of a switch over the op', () => {
    const perm = (n: Node): readonly number[] | undefined => {
      const t = typedOp(n);
      switch (t.op) {
        case 'transpose':
          return t.attrs.perm;
        case 'slice':
          return t.attrs.axes;
        default:
          return undefined;
      }
    };
    expect(perm(b.transpose(x))).toEqual([2, 1, 0]);
    expect(perm(b.slice(x, { axes: [1], starts: [0], ends: [2] }))).toEqual([1]);
    expect(perm(x)).toBeUndefined();
  });
});

describe('fused attributes', () => {
  it('a fused node is built from typed steps and reads them back typed', () => {
    const y = b.input('y', 'f32', ['seq', 8, 16]);
    const steps: FusedStep[] = [
      { op: 'add', args: [0, 1], attrs: {} },
      { op: 'gelu', args: [-1], attrs: { approximate: 'tanh' } },
    ];
    const f = makeNode('fused', [x, y], { kind: 'elementwise', steps });
    const a = attrsOf(f, 'fused');
    expectTypeOf(a).toEqualTypeOf<FusedAttrs>();
    expect(a.kind).toBe('elementwise');
    expect(a.steps.map((s) => s.op)).toEqual(['add', 'gelu']);
    expect(attrsOf(a.steps[1], 'gelu').approximate).toBe('tanh');
  });
});
