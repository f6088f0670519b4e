/**
 * Real exported transformer graphs (`../shared/onnx/models`): each imports, goes through O3 (verifier on), and
 * matches onnxruntime's reference outputs on the CPU backend (the backend tests' tolerances: rtol 1e-3, atol 1e-7
 * for f32). The optimized graphs must contain what the recognizers make of them (attention, layernorm, gelu —
 * standalone or as the anchor of a fused kernel), and launch no more kernels per forward than onnxruntime's own
 * optimizer (level "all") leaves nodes (`ort-optimized-node-counts.json`); both numbers are printed.
 *
 * What each model holds: `attention_past_state` is one attention block (no norm); `gpt2_megatron`'s attention
 * multiplies the scores by a runtime float mask (`scores * m - 10000 * (1 - m)`, Megatron's ltor form), which is
 * masked attention only for m ∈ {0, 1} — not provable for a graph input, so recognize-attention leaves it alone.
 *
 * WebGPU (one shared device; skipped without an adapter unless `REQUIRE_WEBGPU=1`): each model is optimized for the
 * device, compiled into an engine and run once per data set, and must match the same reference outputs within the
 * same tolerances (f32 rtol 1e-3, atol 1e-7; integer outputs exact).
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { cpuRunner, runOnnxTestFolder, webgpuRunner } from '../src/cli/onnx-test.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { readOnnx } from '../src/frontends/onnx/index.js';
import type { Graph } from '../src/ir/graph.js';
import type { FusedStep } from '../src/ir/ops.js';
import { countKernels } from '../src/ir/stats.js';
import { runPasses } from '../src/passes/pipeline.js';
import { hasShared, noteMissingShared, requiredPresent, sharedPath } from './support/shared.js';

/** The recognized ops each optimized model must contain. */
const EXPECTED: Readonly<Record<string, readonly string[]>> = {
  gpt2_past: ['attention', 'layernorm', 'gelu'],
  bert_toy_optimized: ['attention', 'layernorm', 'gelu'],
  TFBertForQuestionAnswering: ['attention', 'layernorm', 'gelu'],
  attention_past_state: ['attention'],
  gpt2_megatron: ['layernorm', 'gelu'],
};

/** Ops of a graph, counting the steps of fused nodes (a fused attention kernel is still attention). */
function opsWithFused(g: Graph): Record<string, number> {
  const h: Record<string, number> = {};
  for (const n of g.nodes()) {
    h[n.op] = (h[n.op] ?? 0) + 1;
    if (n.op === 'fused') for (const st of n.attrs.steps as unknown as FusedStep[]) h[st.op] = (h[st.op] ?? 0) + 1;
  }
  return h;
}

const modelsDir = sharedPath('onnx', 'models');
const present = hasShared && requiredPresent(modelsDir);
if (!present) noteMissingShared('ONNX model tests');

describe.skipIf(!present)('exported transformer models (cpu)', () => {
  const ort = present ? (JSON.parse(readFileSync(sharedPath('onnx', 'models', 'ort-optimized-node-counts.json'), 'utf8')) as Record<string, { original: number; ort_all: number }>) : {};

  for (const name of Object.keys(EXPECTED)) {
    it(`${name}: imports, matches onnxruntime after O3, recognizes ${EXPECTED[name].join('/')}, launches no more kernels than ORT leaves nodes`, async () => {
      const dir = sharedPath('onnx', 'models', name);
      const result = await runOnnxTestFolder(dir, cpuRunner);
      expect(result.detail).toBe('1 data set matched');
      expect(result.status).toBe('pass');

      const model = await readOnnx(`${dir}/model.onnx`);
      const optimized = runPasses(model.graph, 'O3', { verify: true }).graph;
      const ops = opsWithFused(optimized);
      for (const op of EXPECTED[name]) expect(ops[op] ?? 0, `${name} after O3 has ${op}`).toBeGreaterThan(0);
      const kernels = countKernels(optimized);
      console.log(
        `${name}: ${ort[name].original} ONNX nodes; onnxruntime (all) leaves ${ort[name].ort_all} nodes; tensorwright O3: ${kernels} kernel launches per forward ` +
          `(${countKernels(model.graph)} before; attention ${ops.attention ?? 0}, layernorm ${ops.layernorm ?? 0}, gelu ${ops.gelu ?? 0})`,
      );
      expect(kernels).toBeLessThanOrEqual(ort[name].ort_all);
    });
  }
});

const gpu = present ? await acquireTestDevice() : null;
afterAll(async () => gpu?.destroy());

describe.skipIf(!present || !gpu)('exported transformer models (webgpu)', () => {
  for (const name of Object.keys(EXPECTED)) {
    it(`${name}: matches onnxruntime on WebGPU`, async () => {
      const run = (await webgpuRunner({ device: gpu! }))!;
      const t0 = performance.now();
      const result = await runOnnxTestFolder(sharedPath('onnx', 'models', name), run);
      await run.close();
      console.log(`${name} (webgpu): ${result.status}, ${result.detail} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      expect(result.detail).toBe('1 data set matched');
      expect(result.status).toBe('pass');
    }, 300_000);
  }
});
