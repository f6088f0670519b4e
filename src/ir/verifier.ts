/**
 * The verifier: checks a graph's invariants, which passes must preserve. Nodes are type-checked at construction, so
 * this catches what construction cannot see: graph-level facts (inputs declared, weights present in the store with the
 * same type, unique names) and nodes whose recorded type no longer matches their op's rule.
 * @module
 */
import { VerifyError, TensorwrightError } from '../errors.js';
import { isOp } from './attrs.js';
import { attrKey, type Node } from './node.js';
import type { Graph } from './graph.js';
import { getOpDef } from './ops.js';
import { localNames, printNode } from './printer.js';
import { shapeToString } from './dim.js';

/** Problems found in a graph (empty when it is valid). */
export function verifyGraphProblems(g: Graph): string[] {
  const problems: string[] = [];
  const nodes = g.nodes();
  const name = localNames(nodes);
  const declared = new Set<Node>(g.inputs);
  const inputNames = new Set<string>();
  for (const i of g.inputs) {
    const nm = i.attrs.name;
    if (inputNames.has(nm)) problems.push(`input name '${nm}' is declared twice`);
    inputNames.add(nm);
  }
  for (const n of nodes) {
    const where = (): string => printNode(n, name);
    try {
      const def = getOpDef(n.op);
      def.checkArity(n.inputs.length);
      const canon = def.normalize ? def.normalize(n.inputs, n.attrs) : n.attrs;
      if (attrKey(canon) !== attrKey(n.attrs)) problems.push(`attributes are not canonical: ${where()}`);
      const t = def.infer(n.inputs, n.attrs);
      if (t.dtype !== n.dtype || shapeToString(t.shape) !== shapeToString(n.shape))
        problems.push(`recorded type ${n.typeString()} disagrees with the op's rule (${t.dtype}${shapeToString(t.shape)}): ${where()}`);
    } catch (e) {
      problems.push(`${e instanceof TensorwrightError ? e.message : String(e)}: ${where()}`);
    }
    if (isOp(n, 'input') && !declared.has(n)) problems.push(`input '${n.attrs.name}' is used but not a graph input: ${where()}`);
    if (isOp(n, 'weight')) {
      const id = n.attrs.id;
      if (!g.weights.has(id)) problems.push(`weight ${id} is not in the weight store: ${where()}`);
      else {
        const e = g.weights.get(id);
        if (e.dtype !== n.dtype || shapeToString(e.shape) !== shapeToString(n.shape))
          problems.push(`weight '${e.name}' is ${e.dtype}${shapeToString(e.shape)} in the store but ${n.typeString()} in the graph: ${where()}`);
      }
    }
  }
  return problems;
}

/** Throws {@link VerifyError} listing every problem (with the offending nodes printed) when the graph is invalid. */
export function verifyGraph(g: Graph, context = 'graph'): void {
  const problems = verifyGraphProblems(g);
  if (problems.length) throw new VerifyError(`${context} failed verification:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
}

