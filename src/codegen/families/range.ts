/**
 * The range family as the compiler sees it: a `range` node (the index vector `[0, …, length - 1]` over a dim known at
 * run time) becomes one range kernel.
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { printNode } from '../../ir/printer.js';
import type { KernelFamily } from '../family.js';
import { generateRangeKernel } from '../range.js';
import { dimText, launchOf } from './common.js';

/** The range family. */
export const rangeFamily: KernelFamily = {
  name: 'range',
  ops: ['range'],
  variants: ['range'],
  features: [],
  lower: (node) => [launchOf(node, generateRangeKernel({ length: dimText(attrsOf(node, 'range').length), nodes: [printNode(node)] }), [])],
};
