/**
 * Reverse-mode automatic differentiation on the IR, and training on the CPU reference backend: gradient graphs,
 * losses written with IR ops, Adam, and a trainer.
 * @module
 */
export { gradientGraph, gradientName, type GradientOptions } from './gradient.js';
export * from './losses.js';
export * from './adam.js';
export * from './trainer.js';
export * from './weights-as-inputs.js';
