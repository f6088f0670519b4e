/**
 * Gradient checking of {@link gradientGraph} against central finite differences on the CPU reference interpreter.
 *
 * For a graph, the loss is `Σ_outputs Σ out · r` with fixed random weights `r` (one per float output). Autodiff gives
 * the gradient of that loss with respect to every f32 input and weight (weights are made inputs, so quantized ones are
 * checked with respect to their decoded values, and a separate comparison checks that the straight-through gradient of
 * the original encoded weight is that same gradient). Finite differences use a fourth-order central stencil
 * `(8(L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h` with `h = 2^-7` (so `x ± h` is exact in f32 for |x| < 2), the
 * loss summed in float64 from the f32 outputs.
 *
 * Non-smooth points are not tolerated but avoided: every evaluation of the stencil also computes the graph's
 * *decisions* (each bool or integer value, the sign of each `relu`/`abs` operand, the order of each `maximum`/
 * `minimum` pair, the arg-max pattern of each `max` reduction); when any of them differs from its value at the centre,
 * the stencil crossed a kink, and the inputs are drawn again (same ranges, new values). So are points where the loss
 * bends too sharply for the step (the central differences at h and 2h disagree by more than the tolerance, which
 * happens next to the singular point of a norm over one or two elements). A case whose inputs keep landing on such
 * points is reported as rejected, not as passed.
 * @module
 */
import { gradientGraph, gradientName } from '../../src/autodiff/gradient.js';
import { weightsToInputs } from '../../src/autodiff/weights-as-inputs.js';
import { isFloat } from '../../src/ir/dtype.js';
import { Graph, topoOrder } from '../../src/ir/graph.js';
import { makeNode, type Node } from '../../src/ir/node.js';
import { verifyGraphProblems } from '../../src/ir/verifier.js';
import { runGraph } from '../../src/runtime/cpu/interpreter.js';
import { Tensor } from '../../src/runtime/cpu/tensor.js';
import { Rng } from '../../src/util/random.js';
import type { GraphCase } from './random-graph.js';

/** What checking one case found. */
export interface GradientCheckReport {
  /** Why the case was not checked (no float output, no float leaf, or kinks at every draw); undefined when checked. */
  skipped?: string;
  /** Mismatches between autodiff and finite differences (empty when the case passes). */
  failures: string[];
  /** Ops (and op variants, e.g. `gelu:tanh`, `attention:gqa`) that lay on a differentiated path. */
  covered: Set<string>;
  /** Number of gradient components compared. */
  comparisons: number;
  /** The largest `|autodiff - fd| / tolerance` seen (below 1 when the case passes): the margin of the check. */
  worst: number;
  /** Input draws needed to find a smooth point (1 = the generator's own inputs). */
  draws: number;
}

/** Options of {@link checkGradients}. */
export interface GradientCheckOptions {
  /** Elements checked one by one per leaf (the rest are covered by one random-direction check); default 6. */
  elementsPerLeaf?: number;
  /** Input draws before giving up on a case (default 6). */
  maxDraws?: number;
  /** Finite-difference step (default 2^-7; a power of two keeps `x ± h` exact). */
  h?: number;
}

const RTOL = 2e-3;

const scalar = (like: Node, v: number): Node => makeNode('constant', [], { dtype: like.dtype, shape: [], values: [v] });

/** The graph's decision values: what must not change within a finite-difference stencil. */
function decisions(nodes: readonly Node[]): Node[] {
  const out = new Set<Node>();
  for (const n of nodes) {
    if (n.op === 'input' || n.op === 'weight' || n.op === 'constant' || n.op === 'range') continue;
    if (!isFloat(n.dtype)) {
      out.add(n);
      continue;
    }
    if (n.op === 'relu' || n.op === 'abs') out.add(makeNode('greater', [n.inputs[0], scalar(n, 0)])).add(makeNode('less', [n.inputs[0], scalar(n, 0)]));
    if (n.op === 'maximum' || n.op === 'minimum') out.add(makeNode('greater', n.inputs)).add(makeNode('equal', n.inputs));
    if (n.op === 'max') {
      const x = n.inputs[0];
      const axes = n.attrs.axes as number[];
      const kept = n.attrs.keepDims ? n : makeNode('reshape', [n], { shape: x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) });
      out.add(makeNode('equal', [x, kept]));
    }
  }
  return [...out];
}

/** The differentiated path's ops, with variants worth covering separately. */
function coverage(nodes: readonly Node[], leaves: ReadonlySet<Node>, graph: Graph): Set<string> {
  const onPath = new Set<Node>();
  const covered = new Set<string>();
  for (const n of nodes) {
    if (leaves.has(n)) {
      onPath.add(n);
      if (n.op === 'weight') covered.add(graph.weights.get(String(n.attrs.id)).encoding.kind === 'dense' ? 'weight:dense' : 'weight:encoded');
      continue;
    }
    if (!isFloat(n.dtype) || !n.inputs.some((x) => onPath.has(x))) continue;
    onPath.add(n);
    covered.add(n.op);
    const [a, b] = n.inputs;
    if (n.op === 'gelu') covered.add(`gelu:${String(n.attrs.approximate)}`);
    if (n.op === 'rope') covered.add(`rope:${String(n.attrs.style)}`);
    if (n.op === 'slice' && (n.attrs.steps as number[]).some((s) => s !== 1)) covered.add('slice:strided');
    if (n.op === 'gather' && a.op === 'weight') covered.add('gather:embedding');
    if (n.op === 'matmul' && (a.rank !== b.rank || a.shape.slice(0, -2).some((d, i) => d !== b.shape[i]))) covered.add('matmul:batch-broadcast');
    if (n.op === 'matmul' && (n.attrs.transA || n.attrs.transB)) covered.add('matmul:transposed');
    if (n.op === 'attention') {
      if (n.inputs[0].shape[2] !== n.inputs[1].shape[2]) covered.add('attention:gqa');
      if (n.attrs.causal) covered.add('attention:causal');
      if (n.inputs[3]) covered.add(`attention:mask-${n.inputs[3].dtype === 'bool' ? 'bool' : 'float'}`);
    }
    if ((n.op === 'add' || n.op === 'mul' || n.op === 'sub' || n.op === 'div') && (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])))
      covered.add(`${n.op}:broadcast`);
  }
  return covered;
}

/** Σ out·r in float64 over the float outputs. */
function weightedSum(outs: Record<string, Tensor>, names: readonly string[], rs: readonly Tensor[]): number {
  let s = 0;
  names.forEach((name, i) => {
    const o = outs[name].numbers;
    const r = rs[i].numbers;
    for (let k = 0; k < o.length; k++) s += o[k] * r[k];
  });
  return s;
}

/** Same tensor, values redrawn uniformly within the original's range. */
function redraw(t: Tensor, rng: Rng): Tensor {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of t.numbers) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  if (!(hi > lo)) return t;
  return new Tensor(t.dtype, t.shape, rng.uniforms(t.size, lo, hi));
}

/** Checks autodiff against finite differences on one generated case (see the module comment). */
export function checkGradients(c: GraphCase, opts: GradientCheckOptions = {}): GradientCheckReport {
  const g = c.graph;
  const rng = new Rng(c.seed ^ 0x5bd1e995);
  const report: GradientCheckReport = { failures: [], covered: new Set(), comparisons: 0, draws: 0, worst: 0 };
  const floatOuts = g.outputs.filter((o) => o.node.dtype === 'f32');
  if (!floatOuts.length) return { ...report, skipped: 'no float output' };
  const nodes = g.nodes();
  const inputNames = g.inputs.filter((i) => i.dtype === 'f32').map((i) => String(i.attrs.name));
  const weightNodes = nodes.filter((n) => n.op === 'weight' && n.dtype === 'f32');
  const weightNames = weightNodes.map((n) => String(n.attrs.name));
  const leaves = [...inputNames, ...weightNames];
  if (!leaves.length) return { ...report, skipped: 'no float leaf' };

  // the loss as a graph: Σ sum(out · r), r an extra input per float output
  const base = runGraph(g, c.inputs, { bindings: c.bindings });
  const rInputs = floatOuts.map((o, i) => makeNode('input', [], { name: `__r${i}`, dtype: 'f32', shape: [...o.node.shape] }));
  const rs = floatOuts.map((o) => new Tensor('f32', base[o.name].shape, rng.uniforms(base[o.name].size, -1, 1)));
  const rFeed = Object.fromEntries(rs.map((t, i) => [`__r${i}`, t]));
  let loss: Node | undefined;
  floatOuts.forEach((o, i) => {
    const term = makeNode('sum', [makeNode('mul', [o.node, rInputs[i]])], { axes: o.node.shape.map((_d, k) => k), keepDims: false });
    loss = loss ? makeNode('add', [loss, term]) : term;
  });
  const lossGraph = new Graph([...g.inputs, ...rInputs], [{ name: 'loss', node: loss! }], g.weights);
  const promoted = weightsToInputs(lossGraph, weightNames);
  const ad = gradientGraph(promoted.graph, { wrt: leaves, loss: 'loss' });
  for (const problem of verifyGraphProblems(ad)) report.failures.push(`the gradient graph does not verify: ${problem}`);
  report.covered = coverage(topoOrder([loss!]), new Set([...g.inputs.filter((i) => i.dtype === 'f32'), ...weightNodes]), g);

  // the weights as weights (quantized ones straight-through) give the same gradient as the weights as inputs
  const direct = runGraph(gradientGraph(lossGraph, { wrt: leaves, loss: 'loss', encodedWeights: 'ste' }), { ...c.inputs, ...rFeed }, { bindings: c.bindings });
  const viaInputs = runGraph(ad, { ...c.inputs, ...promoted.values, ...rFeed }, { bindings: c.bindings });
  for (const name of leaves) {
    const a = direct[gradientName(name)].numbers;
    const b = viaInputs[gradientName(name)].numbers;
    for (let k = 0; k < a.length; k++)
      if (Math.abs(a[k] - b[k]) > 1e-5 * (1 + Math.abs(b[k]))) {
        report.failures.push(`grad of weight '${name}'[${k}] as a weight ${a[k]} vs as an input ${b[k]}`);
        break;
      }
  }

  // finite differences on the forward graph with its decisions as extra outputs
  const decisionNodes = decisions(nodes);
  const fdGraph = weightsToInputs(
    new Graph(g.inputs, [...floatOuts, ...decisionNodes.map((node, i) => ({ name: `__d${i}`, node }))], g.weights),
    weightNames,
  ).graph;
  const outNames = floatOuts.map((o) => o.name);
  const maxDraws = opts.maxDraws ?? 6;
  const H = opts.h ?? 2 ** -7;
  const perLeaf = opts.elementsPerLeaf ?? 6;
  for (let draw = 0; draw < maxDraws; draw++) {
    report.draws = draw + 1;
    let values: Record<string, Tensor> = { ...c.inputs, ...promoted.values };
    if (draw > 0) values = Object.fromEntries(Object.entries(values).map(([k, t]) => [k, leaves.includes(k) ? redraw(t, rng) : t]));
    const centre = runGraph(fdGraph, values, { bindings: c.bindings });
    const grads = runGraph(ad, { ...values, ...rFeed }, { bindings: c.bindings });
    // the size of the loss's terms, which bounds the f32 rounding noise in it
    let scale = 1;
    outNames.forEach((name, i) => centre[name].numbers.forEach((v: number, k: number) => (scale += Math.abs(v * rs[i].numbers[k]))));
    const atol = 1e-4 * scale;
    let kinked = false;
    const failures: string[] = [];
    let comparisons = 0;
    let worst = 0;
    /** L at values + t·direction (direction on one leaf), or undefined when a decision changed. */
    const lossAt = (leaf: string, direction: Float32Array, t: number): number | undefined => {
      const x = values[leaf].data as Float32Array;
      const moved = new Float32Array(x.length);
      for (let k = 0; k < x.length; k++) moved[k] = x[k] + t * direction[k];
      const out = runGraph(fdGraph, { ...values, [leaf]: new Tensor('f32', values[leaf].shape, moved) }, { bindings: c.bindings });
      for (let i = 0; i < decisionNodes.length; i++) {
        // decisions may be i64 (bigints): compared as they are
        const a = out[`__d${i}`].data;
        const b = centre[`__d${i}`].data;
        for (let k = 0; k < a.length; k++) if (a[k] !== b[k] && !(Number.isNaN(a[k]) && Number.isNaN(b[k]))) return undefined;
      }
      return weightedSum(out, outNames, rs);
    };
    const compare = (leaf: string, what: string, direction: Float32Array): boolean => {
      const ls = [2 * H, H, -H, -2 * H].map((t) => lossAt(leaf, direction, t));
      if (ls.some((l) => l === undefined)) return false;
      const [p2, p1, m1, m2] = ls as number[];
      const fd = (8 * (p1 - m1) - (p2 - m2)) / (12 * H);
      // the second-order estimates at h and 2h differ by about h²·L'''/2: when that exceeds the tolerance, the loss
      // bends too sharply within the stencil (a norm over one or two elements near its singular point, a softened
      // step) for any finite difference at this h to mean anything, the smooth analogue of a kink
      if (Math.abs((p1 - m1) / (2 * H) - (p2 - m2) / (4 * H)) > RTOL * Math.abs(fd) + atol) return false;
      const gr = grads[gradientName(leaf)].numbers;
      let adv = 0;
      for (let k = 0; k < direction.length; k++) adv += gr[k] * direction[k];
      comparisons++;
      const tol = RTOL * Math.max(Math.abs(adv), Math.abs(fd)) + atol;
      worst = Math.max(worst, Math.abs(adv - fd) / tol);
      if (!(Math.abs(adv - fd) <= tol)) failures.push(`d loss/d ${leaf}${what}: autodiff ${adv}, finite differences ${fd} (atol ${atol.toExponential(2)})`);
      return true;
    };
    for (const leaf of leaves) {
      const n = values[leaf].size;
      const picks = n <= perLeaf ? Array.from({ length: n }, (_v, k) => k) : Array.from({ length: perLeaf }, () => rng.int(n));
      for (const k of picks) {
        const e = new Float32Array(n);
        e[k] = 1;
        if (!compare(leaf, `[${k}]`, e)) kinked = true;
        if (kinked) break;
      }
      if (!kinked && n > perLeaf) {
        const dir = Float32Array.from({ length: n }, () => (rng.next() < 0.5 ? -1 : 1));
        if (!compare(leaf, ' along a random ±1 direction', dir)) kinked = true;
      }
      if (kinked) break;
    }
    if (kinked) continue;
    report.failures.push(...failures);
    report.comparisons = comparisons;
    report.worst = worst;
    return report;
  }
  return { ...report, skipped: `a kink or a sharp bend within ±2h at each of ${maxDraws} draws` };
}
