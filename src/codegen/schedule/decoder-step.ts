/**
 * When the one-workgroup whole decode step (`src/codegen/decoder-step.ts`) replaces the decode plan: the model must
 * fit it (a plain llama decoder with dense f32 weights, an f32 KV cache, workgroup memory and storage bindings within
 * the device's limits) and the cost model must say it is faster than the plan's dispatches.
 *
 * The cost model: the plan costs one launch per dispatch plus its multiply-adds at the device's rate; the whole step
 * costs one launch plus its multiply-adds at the rate of one workgroup. On lavapipe (measured on the 2-core CI kind of
 * machine) a launch with its barrier and readback costs about 50 µs and one workgroup does about 0.5 G multiply-adds
 * per second, so stories260K (≈0.5 M multiply-adds per token at 200 positions) takes ≈1 ms as one workgroup and
 * ≈3 ms as 54 dispatches; a 15M model (≈15 M) is better left to the plan. Real GPUs launch in ≈10 µs and run one
 * workgroup far below the device's rate, so only the smallest decoders qualify there.
 * @module
 */
import type { Target } from '../../ir/target.js';
import { decoderStepBindingNames, decoderStepLayout, decoderStepWorkgroupBytes, type DecoderStepSpec } from '../decoder-step.js';

/** The decoder shapes the rule reads (a llama config with its defaults applied). */
export type DecoderStepShape = Omit<DecoderStepSpec, 'blockSize' | 'workgroupSize' | 'staticLoops'>;

/** What else decides whether the whole step may be used. */
export interface DecoderStepContext {
  /** Dispatches of the decode plan it would replace. */
  readonly planDispatches: number;
  /** Whether every weight is dense f32 and the graph is the plain decoder (no biases, outliers, W8A8). */
  readonly plainWeights: boolean;
  /** `true`: use it whenever it fits; `false`: never; absent: when the cost model says it is faster. */
  readonly force?: boolean;
  /** Whether the engine must be batch-invariant (the decode plan must compute rows as the prefill plan does). */
  readonly batchInvariant: boolean;
}

/** The rule's answer: a spec to generate, or why not. */
export type DecoderStepChoice = { readonly use: true; readonly spec: DecoderStepSpec; readonly why: string } | { readonly use: false; readonly why: string };

/** Launch cost (ms) and one-workgroup and whole-device multiply-add rates (per ms), per device class. */
const COSTS = {
  'software-gpu': { launchMs: 0.05, workgroupMacsPerMs: 0.5e6, deviceMacsPerMs: 1e6 },
  gpu: { launchMs: 0.01, workgroupMacsPerMs: 20e6, deviceMacsPerMs: 2e9 },
} as const;

/** Multiply-adds of one decode token at `positions` cached positions. */
export function decoderStepMacs(s: DecoderStepShape, positions: number): number {
  const qDim = s.heads * s.headDim;
  const kvDim = s.kvHeads * s.headDim;
  const perLayer = s.dim * (qDim + 2 * kvDim) + qDim * s.dim + 3 * s.dim * s.hiddenDim + 2 * s.heads * s.headDim * positions;
  return s.layers * perLayer + s.dim * s.vocab;
}

/** Whether (and with which spec) the whole-step kernel replaces the decode plan on `target`. */
export function decoderStepFit(s: DecoderStepShape, target: Pick<Target, 'deviceClass' | 'limits' | 'kv'>, c: DecoderStepContext): DecoderStepChoice {
  if (c.force === false) return { use: false, why: 'turned off' };
  if (c.batchInvariant) return { use: false, why: 'the engine is batch-invariant (decode must compute rows as prefill does)' };
  if (!c.plainWeights) return { use: false, why: 'the decoder is not a plain llama with dense f32 weights' };
  if (target.kv.dtype !== 'f32') return { use: false, why: `the KV cache is ${target.kv.dtype}, the kernel reads f32` };
  const maxInvocations = target.limits.maxComputeInvocationsPerWorkgroup ?? 256;
  const workgroupSize = Math.min(64, maxInvocations);
  // software rasterizers compile loops with hidden trip counts much faster (see the spec's staticLoops)
  const spec: DecoderStepSpec = { ...s, blockSize: target.kv.blockSize, workgroupSize, staticLoops: target.deviceClass !== 'software-gpu' };
  const bytes = decoderStepWorkgroupBytes(spec);
  const maxBytes = target.limits.maxComputeWorkgroupStorageSize ?? 16384;
  if (bytes > maxBytes) return { use: false, why: `it needs ${bytes} bytes of workgroup memory, more than ${maxBytes}` };
  const bindings = decoderStepBindingNames(s.layers).length;
  const maxBindings = target.limits.maxStorageBuffersPerShaderStage ?? 8;
  if (bindings > maxBindings) return { use: false, why: `it binds ${bindings} storage buffers, more than maxStorageBuffersPerShaderStage ${maxBindings}` };
  const weightBytes = decoderStepLayout(spec).words * 4;
  const maxBinding = target.limits.maxStorageBufferBindingSize ?? 128 * 1024 * 1024;
  if (weightBytes > maxBinding) return { use: false, why: `its packed weights take ${weightBytes} bytes, more than one storage binding (maxStorageBufferBindingSize ${maxBinding})` };
  if (s.heads * s.maxPositions * 4 > maxBinding) return { use: false, why: `its attention scores take ${s.heads * s.maxPositions * 4} bytes, more than one storage binding (maxStorageBufferBindingSize ${maxBinding})` };
  if (c.force) return { use: true, spec, why: 'asked for' };
  const k = COSTS[target.deviceClass === 'software-gpu' ? 'software-gpu' : 'gpu'];
  // judged at a quarter of the context: short generations dominate, and attention grows with the position
  const macs = decoderStepMacs(s, Math.ceil(s.maxPositions / 4));
  const stepMs = k.launchMs + macs / k.workgroupMacsPerMs;
  const planMs = c.planDispatches * k.launchMs + macs / k.deviceMacsPerMs;
  const est = `${stepMs.toFixed(2)} ms as one workgroup vs ${planMs.toFixed(2)} ms as ${c.planDispatches} dispatches`;
  return stepMs < planMs ? { use: true, spec, why: `cost model: ${est}` } : { use: false, why: `cost model: ${est}` };
}
