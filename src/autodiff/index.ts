/**
 * Reverse-mode automatic differentiation on the IR, and training on the CPU reference backend: gradient graphs,
 * losses, Adam, a trainer.
 * @module
 */
export * from './gradient.js';
export { VJP_RULES, unbroadcast, type VjpRule, type VjpContext } from './vjp-rules.js';
export * from './losses.js';
export * from './adam.js';
export * from './trainer.js';
export * from './weights-as-inputs.js';
