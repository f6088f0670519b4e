/**
 * The `gemm-tiled` matmul variant: A and B tiles staged in workgroup memory, a register-blocked tile per thread
 * (the textbook GPU GEMM).
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import type { TiledGemmVariant } from './spec.js';
import { Ctx, assemble, bindingsOf, checkPositiveInt, gridOf, header, matmulFeatures, sizeLets, storeFn, tileIndexLines, toF32 } from './common.js';

export function genTiled(c: Ctx, v: TiledGemmVariant): KernelSource {
  const TM = v.tileM ?? 64;
  const TN = v.tileN ?? 64;
  const TK = v.tileK ?? 16;
  const RM = v.threadM ?? 4;
  const RN = v.threadN ?? 4;
  for (const [n, x] of [['tileM', TM], ['tileN', TN], ['tileK', TK], ['threadM', RM], ['threadN', RN]] as const) checkPositiveInt(n, x);
  if (TM % RM || TN % RN || TK % 4) throw new InputError(`gemm-tiled: tileM/threadM, tileN/threadN must divide and tileK must be a multiple of 4`);
  const WM = TM / RM; // threads along M
  const WN = TN / RN; // threads along N
  const threads = WM * WN;
  const G = c.G;
  const TNB = TN * G; // B tile width (gate and up halves)
  const aVec4 = !c.transA && c.K % 4 === 0 && c.strideA.mult4;
  const bVec4n = !c.transB && c.N % 4 === 0 && c.nOut % 4 === 0 && c.strideB.mult4 && TN % 4 === 0;
  const bVec4k = c.transB && c.K % 4 === 0 && c.strideB.mult4;
  const bVec4 = bVec4n || bVec4k;
  const nTiles = Math.ceil(c.nOut / TN);
  const gated = G === 2;
  const { decls, list } = bindingsOf(c, aVec4, bVec4);
  const body: string[] = [];
  const aElem = (row: string, k: string): string => toF32(c.dt.a, c.transA ? `a[a_base + (${k}) * M + ${row}]` : `a[a_base + (${row}) * K + ${k}]`);
  const bElem = (k: string, col: string): string => toF32(c.dt.b, c.transB ? `b[b_base + (${col}) * K + ${k}]` : `b[b_base + (${k}) * N_B + ${col}]`);
  /** B column of tile column nn (gate half first, then the up half). */
  const bCol = (nn: string): string => (gated ? `(n0 + (${nn}) % TILE_N + select(0u, H, (${nn}) >= TILE_N))` : `(n0 + ${nn})`);
  const outCol = (nn: string): string => (gated ? `(n0 + (${nn}) % TILE_N)` : `(n0 + ${nn})`);
  const loads = (count: number, emit: (e: string, ind: string) => string[]): string[] => {
    const L: string[] = [];
    const per = Math.ceil(count / threads);
    for (let j = 0; j < per; j++) {
      const e = `li + ${j * threads}u`;
      if ((j + 1) * threads > count) L.push(`    if (${e} < ${count}u) {`, `      let e = ${e};`, ...emit('e', '      '), `    }`);
      else L.push(`    {`, `      let e = ${e};`, ...emit('e', '      '), `    }`);
    }
    return L;
  };
  // A tile: tile_a[kk * TILE_M + mm]
  const loadA = aVec4
    ? loads((TM * TK) / 4, (e, ind) => [
        `${ind}let mm = ${e} / ${TK / 4}u;`,
        `${ind}let kq = ${e} % ${TK / 4}u;`,
        `${ind}var v = vec4<f32>(0.0);`,
        `${ind}if (m0 + mm < M && k0 + kq * 4u < K) { v = ${toF32(c.dt.a, `a[a_base / 4u + (m0 + mm) * K_VEC4 + k0 / 4u + kq]`, true)}; }`,
        ...[0, 1, 2, 3].map((i) => `${ind}tile_a[(kq * 4u + ${i}u) * TILE_M + mm] = v.${'xyzw'[i]};`),
      ])
    : loads(TM * TK, (e, ind) => [
        c.transA ? `${ind}let mm = ${e} % TILE_M;` : `${ind}let mm = ${e} / TILE_K;`,
        c.transA ? `${ind}let kk = ${e} / TILE_M;` : `${ind}let kk = ${e} % TILE_K;`,
        `${ind}var v = 0.0;`,
        `${ind}if (m0 + mm < M && k0 + kk < K) { v = ${aElem('m0 + mm', 'k0 + kk')}; }`,
        `${ind}tile_a[kk * TILE_M + mm] = v;`,
      ]);
  // B tile: tile_b[kk * TILE_NB + nn]
  let loadB: string[];
  if (bVec4n)
    loadB = loads((TK * TNB) / 4, (e, ind) => [
      `${ind}let kk = ${e} / ${TNB / 4}u;`,
      `${ind}let nn = (${e} % ${TNB / 4}u) * 4u;`,
      `${ind}var v = vec4<f32>(0.0);`,
      `${ind}if (${outCol('nn')} < N_OUT && k0 + kk < K) { v = ${toF32(c.dt.b, `b[b_base / 4u + (k0 + kk) * N_B_VEC4 + ${bCol('nn')} / 4u]`, true)}; }`,
      ...[0, 1, 2, 3].map((i) => `${ind}tile_b[kk * TILE_NB + nn + ${i}u] = v.${'xyzw'[i]};`),
    ]);
  else if (bVec4k)
    loadB = loads((TK * TNB) / 4, (e, ind) => [
      `${ind}let nn = ${e} / ${TK / 4}u;`,
      `${ind}let kq = ${e} % ${TK / 4}u;`,
      `${ind}var v = vec4<f32>(0.0);`,
      `${ind}if (${outCol('nn')} < N_OUT && k0 + kq * 4u < K) { v = ${toF32(c.dt.b, `b[b_base / 4u + ${bCol('nn')} * K_VEC4 + k0 / 4u + kq]`, true)}; }`,
      ...[0, 1, 2, 3].map((i) => `${ind}tile_b[(kq * 4u + ${i}u) * TILE_NB + nn] = v.${'xyzw'[i]};`),
    ]);
  else
    loadB = loads(TK * TNB, (e, ind) => [
      c.transB ? `${ind}let kk = ${e} % TILE_K;` : `${ind}let nn = ${e} % TILE_NB;`,
      c.transB ? `${ind}let nn = ${e} / TILE_K;` : `${ind}let kk = ${e} / TILE_NB;`,
      `${ind}var v = 0.0;`,
      `${ind}if (${outCol('nn')} < N_OUT && k0 + kk < K) { v = ${bElem('k0 + kk', bCol('nn'))}; }`,
      `${ind}tile_b[kk * TILE_NB + nn] = v;`,
    ]);
  const accs: string[] = [];
  for (let g = 0; g < G; g++) for (let i = 0; i < RM; i++) accs.push(Array.from({ length: RN }, (_, j) => `var ${g ? 'up' : 'acc'}_${i}_${j} = 0.0;`).join(' '));
  body.push(
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(TM),
    `  let m0 = tile_m * TILE_M;`,
    `  let n0 = tile_n * TILE_N;`,
    `  // this thread's outputs: rows m0 + tm + THREADS_M * i, columns n0 + tn + THREADS_N * j (strided: no bank conflicts)`,
    `  let tm = li / THREADS_N;`,
    `  let tn = li % THREADS_N;`,
    ...accs.map((x) => `  ${x}`),
    `  for (var k0 = 0u; k0 < K * one; k0 += TILE_K) {`,
    `    // stage the A and B tiles (zero outside the matrices)`,
    ...loadA,
    ...loadB,
    `    workgroupBarrier();`,
    `    for (var kk = 0u; kk < TILE_K${v.unrollTileK === false ? ' * one' : ''}; kk++) {`,
    ...Array.from({ length: RM }, (_, i) => `      let a${i} = tile_a[kk * TILE_M + tm + ${i * WM}u];`),
    ...Array.from({ length: RN }, (_, j) => `      let b${j} = tile_b[kk * TILE_NB + tn + ${j * WN}u];`),
    ...(gated ? Array.from({ length: RN }, (_, j) => `      let bu${j} = tile_b[kk * TILE_NB + TILE_N + tn + ${j * WN}u];`) : []),
  );
  for (let i = 0; i < RM; i++) {
    body.push(`      ${Array.from({ length: RN }, (_, j) => `acc_${i}_${j} += a${i} * b${j};`).join(' ')}`);
    if (gated) body.push(`      ${Array.from({ length: RN }, (_, j) => `up_${i}_${j} += a${i} * bu${j};`).join(' ')}`);
  }
  body.push(`    }`, `    workgroupBarrier();`, `  }`);
  for (let i = 0; i < RM; i++)
    for (let j = 0; j < RN; j++) body.push(`  store_out(out_base, m0 + tm + ${i * WM}u, n0 + tn + ${j * WN}u, M, acc_${i}_${j}${gated ? `, up_${i}_${j}` : ''});`);
  body.push(`}`);
  const name = `gemm-tiled-${TM}x${TN}x${TK}-t${RM}x${RN}${v.unrollTileK === false ? '-rolled' : ''}`;
  return {
    family: 'matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: false,
      header: header(c, name, [
        `workgroup-memory tiles of ${TM}x${TK} (A) and ${TK}x${TN}${gated ? 'x2' : ''} (B), ${aVec4 || bVec4 ? 'vec4 global loads where aligned, ' : ''}${RM}x${RN} outputs per thread`,
      ]),
      consts: [
        `const N_B: u32 = ${c.N}u;`,
        ...(c.K % 4 === 0 ? [`const K_VEC4: u32 = ${c.K / 4}u;`] : []),
        ...(c.N % 4 === 0 ? [`const N_B_VEC4: u32 = ${c.N / 4}u;`] : []),
        `const TILE_M: u32 = ${TM}u;`,
        `const TILE_N: u32 = ${TN}u;`,
        `const TILE_NB: u32 = ${TNB}u; // B tile width${gated ? ' (gate half, then up half)' : ''}`,
        `const TILE_K: u32 = ${TK}u;`,
        `const THREADS_M: u32 = ${WM}u;`,
        `const THREADS_N: u32 = ${WN}u;`,
        `const WORKGROUP_SIZE: u32 = ${threads}u;`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N`,
        ...(gated ? [`const H: u32 = ${c.nOut}u; // offset of the up half in B's columns`] : []),
      ],
      decls,
      workgroupVars: [`var<workgroup> tile_a: array<f32, ${TM * TK}>; // [k][m]`, `var<workgroup> tile_b: array<f32, ${TK * TNB}>; // [k][n]`],
      fns: storeFn(c),
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, TM),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, false),
  };
}
