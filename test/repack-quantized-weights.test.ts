// The repack-quantized-weights pass: quantized weights the dequantizing kernels cannot read as stored ([K, N] with one
// group, under a transpose, f16 scales) are repacked losslessly: the graph computes exactly what it did (CPU
// reference), decoding the repacked entry gives the same values, and weights whose groups a transpose would break are
// left as they are.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import { decodeWeight, quantizeWeight, WeightStore, type QuantizedEncoding } from '../src/ir/weights.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';

const repack = (g: Graph): Graph => runPasses(g, 'repack-quantized-weights', { verify: true }).graph;
const matmulB = (g: Graph) => {
  const mm = g.nodes().find((n) => n.op === 'matmul')!;
  return { transB: mm.attrs.transB, entry: mm.inputs[1].op === 'weight' ? g.weights.get(String(mm.inputs[1].attrs.id)) : undefined };
};

describe('repack-quantized-weights', () => {
  const [K, N] = [32, 12];
  const x = Tensor.from('f32', [3, K], new Rng(2).normals(3 * K));

  it('a [K, N] weight with one group becomes [N, K] read with transB; values and outputs are exact', () => {
    for (const bits of [8, 4, 2] as const) {
      const b = new GraphBuilder();
      const w = quantizeWeight('w', [K, N], new Rng(bits).normals(K * N), { bits, groupSize: K * N, hasZeroPoint: true });
      const g = b.build({ y: b.matmul(b.input('x', 'f32', [3, K]), b.weight(w)) });
      const r = repack(g);
      const { transB, entry } = matmulB(r);
      expect(transB).toBe(true);
      expect(entry!.shape).toEqual([N, K]);
      const before = decodeWeight(w);
      const after = decodeWeight(entry!);
      for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) expect(after[n * K + k]).toBe(before[k * N + n]);
      expect(runGraph(r, { x }).y.data).toEqual(runGraph(g, { x }).y.data);
    }
  });

  it('matmul(x, transpose(W)) reads W with the other transB; f16 scales become f32 (the same values)', () => {
    const b = new GraphBuilder();
    const q = quantizeWeight('w', [N, K], new Rng(7).normals(N * K), { bits: 4, groupSize: 16 });
    const f16 = WeightStore.entry('w16', 'f32', q.shape, q.data, { ...(q.encoding as QuantizedEncoding), scaleDType: 'f16' });
    const g = b.build({ y: b.matmul(b.input('x', 'f32', [3, K]), b.transpose(b.weight(f16), [1, 0])) });
    const r = repack(g);
    const { transB, entry } = matmulB(r);
    expect(transB).toBe(true);
    expect((entry!.encoding as QuantizedEncoding).scaleDType).toBe('f32');
    expect(decodeWeight(entry!)).toEqual(decodeWeight(f16));
    expect(runGraph(r, { x }).y.data).toEqual(runGraph(g, { x }).y.data);
  });

  it('groups along N of a [K, N] weight are left as they are (a transpose would need a scale per element)', () => {
    const b = new GraphBuilder();
    const w = quantizeWeight('w_kn', [K, N], new Rng(3).normals(K * N), { bits: 8, groupSize: N });
    const g = b.build({ y: b.matmul(b.input('x', 'f32', [3, K]), b.weight(w)) });
    expect(matmulB(repack(g)).entry!.id).toBe(w.id);
  });
});
