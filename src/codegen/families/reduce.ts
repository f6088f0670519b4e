/**
 * The reduction family as the compiler sees it: `sum`, `mean` and `max` over any axes.
 * @module
 */
import type { KernelFamily } from '../family.js';
import { generateReduceKernel } from '../reduce.js';
import { launchOf } from './common.js';

/** The reduction family. */
export const reduceFamily: KernelFamily = {
  name: 'reduce',
  ops: ['sum', 'mean', 'max'],
  variants: ['reduce'],
  features: ['shader-f16'],
  lower: (node) => [launchOf(node, generateReduceKernel(node), [node.inputs[0]])],
};
