/**
 * The `naive` matmul variant: one invocation per output element and a plain loop over K (the correctness and
 * benchmark baseline).
 * @module
 */
import type { KernelSource } from '../kernel.js';
import type { NaiveMatmulVariant } from './spec.js';
import { Ctx, assemble, bindingsOf, checkPositiveInt, gridOf, header, matmulFeatures, sizeLets, storeFn, tileIndexLines, toF32 } from './common.js';

export function genNaive(c: Ctx, v: NaiveMatmulVariant): KernelSource {
  const wg = v.workgroupSize ?? 64;
  checkPositiveInt('workgroupSize', wg);
  const nTiles = Math.ceil(c.nOut / wg);
  const aElem = (row: string, k: string): string => toF32(c.dt.a, c.transA ? `a[a_base + (${k}) * M + ${row}]` : `a[a_base + (${row}) * K + ${k}]`);
  const bElem = (k: string, col: string): string => toF32(c.dt.b, c.transB ? `b[b_base + (${col}) * K + ${k}]` : `b[b_base + (${k}) * N_B + ${col}]`);
  const { decls, list } = bindingsOf(c, false, false);
  const gated = c.G === 2;
  const main = [
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(1),
    `  let row = tile_m;`,
    `  let col = tile_n * WORKGROUP_SIZE + li;`,
    `  if (col >= N_OUT) { return; }`,
    `  var acc = 0.0;`,
    ...(gated ? [`  var up = 0.0;`] : []),
    `  for (var k = 0u; k < K * one; k++) {`,
    `    let x = ${aElem('row', 'k')};`,
    `    acc += x * ${bElem('k', 'col')};`,
    ...(gated ? [`    up += x * ${bElem('k', 'col + N_OUT')};`] : []),
    `  }`,
    `  store_out(out_base, row, col, M, acc${gated ? ', up' : ''});`,
    `}`,
  ];
  const name = `naive-wg${wg}`;
  const fns = storeFn(c);
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: false,
      header: header(c, name, ['one invocation per output element, a plain loop over K (the reference variant)']),
      consts: [`const N_B: u32 = ${c.N}u;`, `const WORKGROUP_SIZE: u32 = ${wg}u;`, `const N_TILES: u32 = ${nTiles}u; // workgroups along N`],
      decls,
      fns,
      main,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, 1),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, false),
  };
}
