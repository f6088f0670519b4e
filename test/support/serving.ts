// Shared setup of the serving tests: stories260K on the CPU reference (optimized as `generate --backend cpu` does),
// its golden run.c outputs, and paged CPU executors over it.
import { readdirSync, readFileSync } from 'node:fs';
import { loadModel } from '../../src/frontends/load.js';
import { cpuProfile } from '../../src/ir/device-profile.js';
import type { Graph } from '../../src/ir/graph.js';
import { runPasses } from '../../src/passes/pipeline.js';
import { CpuPagedExecutor } from '../../src/runtime/serving/cpu-paged-executor.js';
import { sharedPath } from './shared.js';

export interface Golden {
  prompt: string;
  steps: number;
  prompt_ids: number[];
  generated_ids: number[];
}

export function goldens(): Golden[] {
  const dir = sharedPath('golden/stories260K');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(`${dir}/${f}`, 'utf8')) as Golden);
}

export interface Stories {
  graph: Graph;
  maxPositions: number;
  stopTokens: readonly number[];
  executor(numBlocks: number, blockSize?: number): CpuPagedExecutor;
}

let cached: Promise<Stories> | undefined;
export function stories260K(): Promise<Stories> {
  cached ??= (async () => {
    const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    const graph = runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile }).graph;
    return {
      graph,
      maxPositions: model.maxPositions,
      stopTokens: model.stopTokens,
      executor: (numBlocks: number, blockSize = 4) => new CpuPagedExecutor(graph, { numBlocks, blockSize, maxPositions: model.maxPositions, stopTokens: model.stopTokens }),
    };
  })();
  return cached;
}
