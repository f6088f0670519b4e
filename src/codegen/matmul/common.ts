/**
 * What the matmul variant generators share: the sizes context, the params uniform, epilogue and store functions,
 * bindings, grids, the kernel header and assembly, and the operand fragments of `gemm-subgroup` and `gemv`.
 * @module
 */
import { InputError, ShapeError } from '../../errors.js';
import { SymDim, dimMul, parseDim, type Dim } from '../../ir/dim.js';
import { paramsStruct, type GridExpr, type KernelBinding } from '../kernel.js';
import { enableDirectives, kernelFeatures, WGSL_HELPERS, wgslComment, wgslHelperSources, type KernelFeature } from '../wgsl.js';
import type { MatmulActivation, MatmulDType, MatmulSpec } from './spec.js';

/** A size known at compile time (`value`) or read from the params uniform (`ref` names it in WGSL). */
export interface Size {
  readonly value?: number;
  /** WGSL expression of the size (a const name, a literal or `params.pN`). */
  readonly ref: string;
  /** Canonical dim-expression text (for grids and params), or the number. */
  readonly dim: number | string;
  /** Whether the value is a multiple of 4 for every binding of its symbols. */
  readonly mult4: boolean;
}

/** Everything the variant generators share. */
export interface Ctx {
  readonly spec: MatmulSpec;
  readonly N: number; // columns of op(B)
  readonly nOut: number; // output columns
  readonly K: number;
  readonly G: 1 | 2; // accumulators per output (2 when gated)
  readonly transA: boolean;
  readonly transB: boolean;
  readonly dt: { a: MatmulDType; b: MatmulDType; out: MatmulDType };
  readonly M: Size;
  readonly batch: Size;
  readonly strideA: Size;
  readonly strideB: Size;
  readonly strideOut: Size;
  readonly params: string[];
  readonly helpers: Set<string>;
  readonly maxGrid: number;
}

export function dtypesOf(spec: MatmulSpec): { a: MatmulDType; b: MatmulDType; out: MatmulDType } {
  const d = spec.dtype ?? 'f32';
  return { a: spec.dtypes?.a ?? d, b: spec.dtypes?.b ?? d, out: spec.dtypes?.out ?? d };
}

export function isMult4(d: Dim): boolean {
  if (typeof d === 'number') return d % 4 === 0;
  for (const c of (d as SymDim).terms.values()) if (c % 4 !== 0) return false;
  return true;
}

export function checkPositiveInt(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new ShapeError('matmul', `${what} must be a positive integer, got ${v}`);
}

export function makeCtx(spec: MatmulSpec): Ctx {
  checkPositiveInt('N', spec.N);
  checkPositiveInt('K', spec.K);
  if (spec.gated && spec.N % 2 !== 0) throw new ShapeError('matmul', `a gated matmul needs an even N, got ${spec.N}`);
  const params: string[] = [];
  const size = (name: string, x: number | string | Dim): Size => {
    const d: Dim = typeof x === 'string' ? parseDim(x) : x;
    if (typeof d === 'number') {
      if (!Number.isInteger(d) || d < 0) throw new ShapeError('matmul', `${name} must be a non-negative integer, got ${d}`);
      return { value: d, ref: name, dim: d, mult4: d % 4 === 0 };
    }
    const text = d.text;
    let i = params.indexOf(text);
    if (i < 0) i = params.push(text) - 1;
    return { ref: `params.p${i}`, dim: text, mult4: isMult4(d) };
  };
  const G = spec.gated ? 2 : 1;
  const nOut = spec.N / G;
  const M = size('M', spec.M);
  if (M.value === 0) throw new ShapeError('matmul', 'M must be at least 1');
  const batch = size('BATCH', spec.batch ?? 1);
  const mDim = typeof M.dim === 'number' ? M.dim : parseDim(M.dim);
  // with a single batch the strides are never used: keep them out of the params
  const s = batch.value === 1 ? { a: 0, b: 0, out: 0 } : spec.batchStrides ?? {};
  const strideA = size('A_BATCH_STRIDE', s.a ?? dimMul(mDim, spec.K));
  const strideB = size('B_BATCH_STRIDE', s.b ?? spec.K * spec.N);
  const strideOut = size('OUT_BATCH_STRIDE', s.out ?? dimMul(mDim, nOut));
  return {
    spec,
    N: spec.N,
    nOut,
    K: spec.K,
    G,
    transA: !!spec.transA,
    transB: !!spec.transB,
    dt: dtypesOf(spec),
    M,
    batch,
    strideA,
    strideB,
    strideOut,
    params,
    helpers: new Set(),
    maxGrid: spec.maxWorkgroupsPerDimension ?? 65535,
  };
}

/** `f32(x)` for f16 storage; `x` for f32. */
export function toF32(dt: MatmulDType, e: string, vec4 = false): string {
  return dt === 'f16' ? (vec4 ? `vec4<f32>(${e})` : `f32(${e})`) : e;
}

/** A size as WGSL text inside `main` (static sizes are module constants, dynamic ones locals read from params). */
export function sizeConsts(c: Ctx): string[] {
  const lines: string[] = [];
  for (const s of [c.M, c.batch, c.strideA, c.strideB, c.strideOut]) if (s.value !== undefined) lines.push(`const ${s.ref}: u32 = ${s.value}u;`);
  return lines;
}

/** `let` declarations at the top of `main` for the dynamic sizes, so the body always reads `M`, `BATCH`, …. */
export function sizeLets(c: Ctx): string[] {
  const names: [string, Size][] = [['M', c.M], ['BATCH', c.batch], ['A_BATCH_STRIDE', c.strideA], ['B_BATCH_STRIDE', c.strideB], ['OUT_BATCH_STRIDE', c.strideOut]];
  return names.filter(([, s]) => s.value === undefined).map(([n, s]) => `  let ${n}: u32 = ${s.ref}; // ${wgslComment(String(s.dim))}`);
}

export function activationExpr(act: MatmulActivation, x: string, helpers: Set<string>): string {
  switch (act) {
    case 'silu': helpers.add('sigmoid'); return `${x} * tw_sigmoid(${x})`;
    case 'sigmoid': helpers.add('sigmoid'); return `tw_sigmoid(${x})`;
    case 'gelu': helpers.add('gelu_erf'); return `tw_gelu_erf(${x})`;
    case 'gelu_tanh': helpers.add('gelu_tanh'); return `tw_gelu_tanh(${x})`;
    case 'relu': return `max(${x}, 0.0)`;
    case 'identity': return x;
  }
}

/** The `store_out` function: gate, epilogue and guarded store of one output element. */
export function storeFn(c: Ctx): string[] {
  const gated = c.G === 2;
  const ep = c.spec.epilogue;
  const lines = [
    `// Stores output element (row, col) of the batch at out_base, after the ${gated ? 'gate and ' : ''}epilogue; skips rows >= rows and cols >= N_OUT.`,
    `fn store_out(out_base: u32, row: u32, col: u32, rows: u32, acc: f32${gated ? ', up: f32' : ''}) {`,
    `  if (row >= rows || col >= N_OUT) { return; }`,
    `  let i = out_base + row * N_OUT + col;`,
  ];
  let v = 'acc';
  if (gated) {
    lines.push(`  let gated = (${activationExpr(c.spec.gated!.activation, 'acc', c.helpers)}) * up;`);
    v = 'gated';
  }
  if (ep) {
    for (const h of ep.helpers ?? []) {
      if (!(h in WGSL_HELPERS)) throw new InputError(`matmul epilogue: unknown WGSL helper '${h}'`);
      c.helpers.add(h);
    }
    const load = (k: number): string => {
      const o = ep.operands[k];
      if (!o) throw new InputError(`matmul epilogue reads operand ${k}, but there are ${ep.operands.length}`);
      const idx = o.broadcast === 'row' ? 'col' : o.broadcast === 'col' ? 'row' : o.broadcast === 'scalar' ? '0u' : 'i';
      return toF32(o.dtype, `ep_${k}[${idx}]`);
    };
    lines.push(`  let y: f32 = ${ep.expr(v, load)};`);
    v = 'y';
  }
  lines.push(`  out[i] = ${c.dt.out === 'f16' ? `f16(${v})` : v};`, `}`);
  return lines;
}

/** Binding declarations (A, B, epilogue operands, out, params) and the binding list. */
export function bindingsOf(c: Ctx, aVec4: boolean, bVec4: boolean): { decls: string[]; list: KernelBinding[] } {
  const arr = (dt: MatmulDType, vec4: boolean): string => (vec4 ? `array<vec4<${dt}>>` : `array<${dt}>`);
  const decls: string[] = [];
  const list: KernelBinding[] = [];
  const add = (name: string, wgslName: string, type: string, access: 'read' | 'read_write', comment: string): void => {
    decls.push(`@group(0) @binding(${list.length}) var<storage, ${access}> ${wgslName}: ${type}; // ${comment}`);
    list.push({ name, access });
  };
  add('a', 'a', arr(c.dt.a, aVec4), 'read', c.transA ? 'A stored [batch, K, M]' : 'A stored [batch, M, K]');
  add('b', 'b', arr(c.dt.b, bVec4), 'read', c.transB ? 'B stored [batch, N, K]' : 'B stored [batch, K, N]');
  (c.spec.epilogue?.operands ?? []).forEach((o, k) =>
    add(o.name, `ep_${k}`, arr(o.dtype, false), 'read', `epilogue operand ${k} (${o.broadcast})`),
  );
  add('out', 'out', arr(c.dt.out, false), 'read_write', `output [batch, M, ${c.nOut}]`);
  const ps = paramsStruct(c.params, list.length);
  if (ps) decls.push(ps.trimEnd());
  return { decls, list };
}

/** Grid `[x, y, 1]` for `nTiles * mTiles * batch` workgroups, linearized over x and y when x would exceed the limit. */
export function gridOf(c: Ctx, nTiles: number, tileM: number): [GridExpr, GridExpr, GridExpr] {
  const mTiles: GridExpr = c.M.value !== undefined ? Math.ceil(c.M.value / tileM) : tileM === 1 ? c.M.dim : { ceilDiv: [c.M.dim, tileM] };
  const factors: GridExpr[] = [nTiles, mTiles, c.batch.value ?? c.batch.dim];
  if (factors.every((f) => typeof f === 'number')) {
    const total = (factors as number[]).reduce((a, b) => a * b, 1);
    const x = Math.min(total, c.maxGrid);
    return [x, Math.ceil(total / x), 1];
  }
  const dynamic = factors.filter((f) => f !== 1);
  const total: GridExpr = dynamic.length === 1 ? dynamic[0] : { mul: dynamic };
  return [{ min: [total, c.maxGrid] }, { ceilDiv: [total, c.maxGrid] }, 1];
}

/** The linear workgroup index, decomposed into (column tile, row tile, batch); returns early past the last batch. */
export function tileIndexLines(tileM: number): string[] {
  return [
    `  let m_tiles = (M + ${tileM}u - 1u) / ${tileM}u;`,
    `  // linear workgroup index over a 2-D grid: column tile fastest, then row tile, then batch`,
    `  let wid = wg.x + wg.y * nwg.x;`,
    `  // always 1 (grids are 2-D); multiplying loop bounds by this opaque 1 keeps shader compilers from fully unrolling`,
    `  // the K loops, which makes lavapipe's (LLVM's) compile times explode without speeding them up`,
    `  let one = nwg.z;`,
    `  let tile_n = wid % N_TILES;`,
    `  let tile_m = (wid / N_TILES) % m_tiles;`,
    `  let batch = wid / (N_TILES * m_tiles);`,
    `  if (batch >= BATCH) { return; } // uniform: the whole workgroup leaves`,
    `  let a_base = batch * A_BATCH_STRIDE;`,
    `  let b_base = batch * B_BATCH_STRIDE;`,
    `  let out_base = batch * OUT_BATCH_STRIDE;`,
  ];
}

export function header(c: Ctx, variantName: string, description: string[]): string[] {
  const shapeA = c.transA ? `[${c.batch.dim}, ${c.K}, ${c.M.dim}]` : `[${c.batch.dim}, ${c.M.dim}, ${c.K}]`;
  const shapeB = c.transB ? `[${c.batch.dim}, ${c.N}, ${c.K}]` : `[${c.batch.dim}, ${c.K}, ${c.N}]`;
  const lines = [
    `// tensorwright kernel: matmul (${variantName})`,
    `//   out[b, m, n] = ${c.G === 2 ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * B[b, k, n]`,
    `//   A ${c.dt.a} ${wgslComment(shapeA)}${c.transA ? ' (transposed)' : ''}, B ${c.dt.b} ${wgslComment(shapeB)}${c.transB ? ' (transposed)' : ''}, out ${c.dt.out}; f32 accumulation`,
    ...description.map((d) => `//   ${d}`),
  ];
  return lines;
}

/** The features a matmul kernel needs: f16 when any operand is stored as f16; subgroups for subgroup reductions. */
export function matmulFeatures(c: Ctx, subgroups: boolean): KernelFeature[] {
  return kernelFeatures({ f16: [c.dt.a, c.dt.b, c.dt.out, ...(c.spec.epilogue?.operands ?? []).map((o) => o.dtype)].includes('f16'), subgroups });
}

export function assemble(c: Ctx, parts: { subgroups: boolean; header: string[]; consts: string[]; decls: string[]; fns: string[]; workgroupVars?: string[]; main: string[] }): string {
  const helpers = wgslHelperSources(c.helpers);
  const enables = enableDirectives(matmulFeatures(c, parts.subgroups));
  return [
    ...enables,
    ...(enables.length ? [''] : []),
    ...parts.header,
    '',
    ...sizeConsts(c),
    `const N_OUT: u32 = ${c.nOut}u; // output columns`,
    `const K: u32 = ${c.K}u;`,
    ...parts.consts,
    '',
    ...parts.decls,
    '',
    ...(parts.workgroupVars?.length ? [...parts.workgroupVars, ''] : []),
    ...(helpers.length ? [...helpers, ''] : []),
    ...parts.fns,
    '',
    ...parts.main,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// operand fragments shared by gemm-subgroup and gemv

/**
 * How a kernel reads 4 consecutive k of A and B. A: `a_chunk(base, row, kc, rows)` → `vec4` of A[row, 4kc..4kc+3].
 * B either per column (`b_chunk(base, col, kc)` → B[4kc..4kc+3, col], the "dot" form) or, for B stored `[K, N]`
 * with N a multiple of 4, per row of 4 columns (`b_quad(base, k, q)` → B[k, 4q..4q+3], the "axpy" form).
 */
export interface Fragments {
  readonly aVec4: boolean;
  readonly bVec4: boolean;
  /** True: B is read as rows of 4 columns (axpy form); false: as columns of 4 k (dot form). */
  readonly bQuads: boolean;
  /** Full 4-wide k chunks and the k left over. */
  readonly kChunks: number;
  readonly kTail: number;
  readonly fns: string[];
}

export function fragments(c: Ctx, wantQuads: boolean): Fragments {
  const aVec4 = !c.transA && c.K % 4 === 0 && c.strideA.mult4;
  const bQuads = wantQuads && !c.transB && c.N % 4 === 0 && c.nOut % 4 === 0 && c.strideB.mult4;
  const bVec4 = bQuads || (c.transB && c.K % 4 === 0 && c.strideB.mult4);
  const kChunks = Math.floor(c.K / 4);
  const kTail = c.K % 4;
  const aElem = (k: string): string => toF32(c.dt.a, c.transA ? `a[base + (${k}) * rows + row]` : `a[base + row * K + ${k}]`);
  const bElem = (k: string): string => toF32(c.dt.b, c.transB ? `b[base + col * K + ${k}]` : `b[base + (${k}) * N_B + col]`);
  const vec = (elem: (k: string) => string, from: string, n: number): string =>
    `vec4<f32>(${[0, 1, 2, 3].map((i) => (i < n ? elem(`${from} + ${i}u`) : '0.0')).join(', ')})`;
  const fns: string[] = [];
  fns.push(`// A[row, 4*kc .. 4*kc+3] of the batch at base (rows = M, the row count)`);
  fns.push(`fn a_chunk(base: u32, row: u32, kc: u32, rows: u32) -> vec4<f32> {`);
  if (aVec4) fns.push(`  return ${toF32(c.dt.a, `a[base / 4u + row * K_VEC4 + kc]`, true)};`);
  else fns.push(`  let k = kc * 4u;`, `  return ${vec(aElem, 'k', 4)};`);
  fns.push(`}`);
  if (kTail) {
    fns.push(`// A[row, K - ${kTail} .. K-1], zero-padded to 4`);
    fns.push(`fn a_tail(base: u32, row: u32, rows: u32) -> vec4<f32> {`, `  return ${vec(aElem, `${kChunks * 4}u`, kTail)};`, `}`);
  }
  if (bQuads) {
    fns.push(`// B[k, 4*q .. 4*q+3] of the batch at base`);
    fns.push(`fn b_quad(base: u32, k: u32, q: u32) -> vec4<f32> {`, `  return ${toF32(c.dt.b, `b[base / 4u + k * N_B_VEC4 + q]`, true)};`, `}`);
  } else {
    fns.push(`// B[4*kc .. 4*kc+3, col] of the batch at base`);
    fns.push(`fn b_chunk(base: u32, col: u32, kc: u32) -> vec4<f32> {`);
    if (bVec4) fns.push(`  return ${toF32(c.dt.b, `b[base / 4u + col * K_VEC4 + kc]`, true)};`);
    else fns.push(`  let k = kc * 4u;`, `  return ${vec(bElem, 'k', 4)};`);
    fns.push(`}`);
    if (kTail) {
      fns.push(`// B[K - ${kTail} .. K-1, col], zero-padded to 4`);
      fns.push(`fn b_tail(base: u32, col: u32) -> vec4<f32> {`, `  return ${vec(bElem, `${kChunks * 4}u`, kTail)};`, `}`);
    }
  }
  return { aVec4, bVec4, bQuads, kChunks, kTail, fns };
}

export function fragmentConsts(c: Ctx): string[] {
  return [
    `const N_B: u32 = ${c.N}u; // columns of B${c.G === 2 ? ' (gate and up halves)' : ''}`,
    ...(c.K % 4 === 0 ? [`const K_VEC4: u32 = ${c.K / 4}u;`] : []),
    ...(c.N % 4 === 0 ? [`const N_B_VEC4: u32 = ${c.N / 4}u;`] : []),
    `const K_CHUNKS: u32 = ${Math.floor(c.K / 4)}u; // full chunks of 4 k`,
  ];
}

/**
 * One output row's statements of {@link chunkMac}, inside `if (j < guard)` when a guard is given: the rows of a tile
 * past the matrix then cost a compare instead of their multiply-adds (a uniform branch: the guard depends on M and
 * the tile only), and the rows computed do exactly the same operations in the same order, whatever M is.
 */
function guardedRow(row: readonly string[], j: number, indent: string, guard?: string): string[] {
  if (!guard) return row.map((x) => `${indent}${x}`);
  return [`${indent}if (${j}u < ${guard}) {`, ...row.map((x) => `${indent}  ${x}`), `${indent}}`];
}

/**
 * Unrolled multiply-accumulate of one k chunk: `rowVals[j]` is the vec4 expression of row j's A chunk, the B
 * fragment is loaded here. Accumulators: `acc_j_c` (`up_j_c` for the gate's second half), scalars in the dot form,
 * vec4 over 4 columns (`acc_j_q`) in the axpy form.
 */
export function chunkMac(c: Ctx, f: Fragments, rowVals: readonly string[], cols: number, tail: boolean, indent: string, rowGuard?: string): string[] {
  const L: string[] = [];
  const groups = c.G === 2 ? ['acc', 'up'] : ['acc'];
  if (f.bQuads) {
    const quads = cols / 4;
    const kn = tail ? f.kTail : 4;
    for (let g = 0; g < c.G; g++)
      for (let q = 0; q < quads; q++)
        for (let i = 0; i < kn; i++)
          L.push(`${indent}let b${groups[g] === 'up' ? 'u' : ''}_${i}_${q} = b_quad(b_base, ${tail ? `${f.kChunks * 4 + i}u` : `k + ${i}u`}, quad_${q}${g ? ' + H_VEC4' : ''});`);
    rowVals.forEach((x, j) => {
      const row: string[] = [`let x${j} = ${x};`];
      for (let g = 0; g < c.G; g++)
        for (let q = 0; q < quads; q++) {
          const terms = Array.from({ length: kn }, (_, i) => `x${j}.${'xyzw'[i]} * b${g ? 'u' : ''}_${i}_${q}`);
          row.push(`${groups[g]}_${j}_${q} += ${terms.join(' + ')};`);
        }
      L.push(...guardedRow(row, j, indent, rowGuard));
    });
  } else {
    for (let g = 0; g < c.G; g++)
      for (let cc = 0; cc < cols; cc++)
        L.push(`${indent}let b${g ? 'u' : ''}${cc} = ${tail ? `b_tail(b_base, col_${cc}${g ? ' + H' : ''})` : `b_chunk(b_base, col_${cc}${g ? ' + H' : ''}, kc)`};`);
    rowVals.forEach((x, j) => {
      const row: string[] = [`let x${j} = ${x};`];
      for (let g = 0; g < c.G; g++) for (let cc = 0; cc < cols; cc++) row.push(`${groups[g]}_${j}_${cc} += dot(x${j}, b${g ? 'u' : ''}${cc});`);
      L.push(...guardedRow(row, j, indent, rowGuard));
    });
  }
  return L;
}

/** Declarations of the accumulators (`rows` x `cols`, per gate half). */
export function accDecls(c: Ctx, f: Fragments, rows: number, cols: number, indent: string): string[] {
  const L: string[] = [];
  const groups = c.G === 2 ? ['acc', 'up'] : ['acc'];
  for (const g of groups)
    for (let j = 0; j < rows; j++) {
      const names = f.bQuads ? Array.from({ length: cols / 4 }, (_, q) => `${g}_${j}_${q}`) : Array.from({ length: cols }, (_, cc) => `${g}_${j}_${cc}`);
      L.push(`${indent}${names.map((n) => `var ${n} = ${f.bQuads ? 'vec4<f32>(0.0)' : '0.0'};`).join(' ')}`);
    }
  return L;
}

/** The scalar accumulator of output (row j, column cc), for gate half g. */
export function accOf(c: Ctx, f: Fragments, g: number, j: number, cc: number): string {
  const name = c.G === 2 && g === 1 ? 'up' : 'acc';
  return f.bQuads ? `${name}_${j}_${Math.floor(cc / 4)}.${'xyzw'[cc % 4]}` : `${name}_${j}_${cc}`;
}

/** Lines declaring the clamped column indices (`col_c`, or `quad_q` in the axpy form) of a lane's `cols` columns from `col0`. */
export function columnLines(f: Fragments, cols: number, indent: string): string[] {
  const L: string[] = [];
  if (f.bQuads) {
    for (let q = 0; q < cols / 4; q++) L.push(`${indent}let quad_${q} = min(col0 / 4u + ${q}u, N_OUT / 4u - 1u);`);
  } else {
    for (let cc = 0; cc < cols; cc++) L.push(`${indent}let col_${cc} = min(col0 + ${cc}u, N_OUT - 1u);`);
  }
  return L;
}


// ---------------------------------------------------------------------------------------------------------------
// lane-group GEMV fragments shared by dequant-gemv and the sparse GEMVs

/** How the lanes of a lane group combine their partial sums: not at all (one lane), `subgroupAdd`, or workgroup memory. */
export type LaneReduction = 'none' | 'subgroup' | 'workgroup';

/**
 * Lines of `main` that reduce each accumulator in `accNames` across the `LANES_PER_COLUMN` lanes of a lane group into
 * `s0, s1, …` (valid in the group's lane 0), and the workgroup variables that needs. Must be reached in uniform
 * control flow (`subgroupAdd`, `workgroupBarrier`).
 */
export function laneReductionLines(accNames: readonly string[], reduction: LaneReduction, workgroupSize: number): { lines: string[]; workgroupVars: string[] } {
  const lines: string[] = [];
  const workgroupVars: string[] = [];
  if (reduction === 'none') accNames.forEach((a, i) => lines.push(`  let s${i} = ${a};`));
  else if (reduction === 'subgroup') accNames.forEach((a, i) => lines.push(`  let s${i} = subgroupAdd(${a});`));
  else {
    workgroupVars.push(`var<workgroup> partial: array<f32, ${workgroupSize * accNames.length}>; // [accumulator][invocation]`);
    accNames.forEach((a, i) => lines.push(`  partial[${i}u * WORKGROUP_SIZE + li] = ${a};`));
    lines.push(`  workgroupBarrier();`, `  ${accNames.map((_, i) => `var s${i} = 0.0;`).join(' ')}`, `  if (lane == 0u) {`);
    lines.push(`    for (var l = 0u; l < LANES_PER_COLUMN; l++) {`);
    accNames.forEach((_, i) => lines.push(`      s${i} += partial[${i}u * WORKGROUP_SIZE + li + l];`));
    lines.push(`    }`, `  }`);
  }
  return { lines, workgroupVars };
}

/**
 * The opening of a lane-group GEMV's `main`: sizes, tile indices, the invocation's lane group and lane, and the
 * clamped output columns (`col_0 …`) and A rows (`a_row_0 …`) of its `cols` × `rows` block (from `col0`, `row0`).
 * Needs the constants `LANES_PER_COLUMN`, `GROUPS`, `COLS`, `ROWS`, `N_TILES` and `WORKGROUP_SIZE`.
 */
export function laneGroupPreamble(c: Ctx, cols: number, rows: number): string[] {
  return [
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(rows),
    `  let group = li / LANES_PER_COLUMN;`,
    `  let lane = li % LANES_PER_COLUMN;`,
    `  let row0 = tile_m * ROWS;`,
    `  let col0 = (tile_n * GROUPS + group) * COLS;`,
    ...Array.from({ length: cols }, (_, cc) => `  let col_${cc} = min(col0 + ${cc}u, N_OUT - 1u);`),
    ...Array.from({ length: rows }, (_, r) => `  let a_row_${r} = min(row0 + ${r}u, M - 1u);`),
  ];
}

/** The accumulator names of a lane-group GEMV (`acc_r_c`, then `up_r_c` when gated), in the order they are reduced. */
export function laneGroupAccumulators(c: Ctx, cols: number, rows: number): string[] {
  const names: string[] = [];
  for (const h of c.G === 2 ? ['acc', 'up'] : ['acc']) for (let r = 0; r < rows; r++) for (let cc = 0; cc < cols; cc++) names.push(`${h}_${r}_${cc}`);
  return names;
}

/** The close of a lane-group GEMV's `main`: lane 0 of each group stores its reduced sums `s0 …` through `store_out`. */
export function laneGroupStoreLines(c: Ctx, cols: number, rows: number, lanes: number): string[] {
  const lines = [lanes > 1 ? `  if (lane == 0u) {` : `  {`];
  const perHalf = rows * cols;
  for (let r = 0; r < rows; r++)
    for (let cc = 0; cc < cols; cc++) {
      const i = r * cols + cc;
      lines.push(`    store_out(out_base, row0 + ${r}u, col0 + ${cc}u, M, s${i}${c.G === 2 ? `, s${i + perHalf}` : ''});`);
    }
  lines.push(`  }`, `}`);
  return lines;
}

/** One storage binding of an encoded weight's payload part: binding name (the part's role), WGSL name, type, comment. */
export interface WeightPartBinding {
  readonly name: string;
  readonly wgslName: string;
  readonly type: string;
  readonly comment: string;
}

/**
 * Binding declarations and list of a kernel reading an encoded B: a (vec4s when `aVec4`), B's payload `parts`, the
 * epilogue operands, out, then the params uniform when a size is a dim expression.
 */
export function encodedWeightBindings(c: Ctx, aVec4: boolean, parts: readonly WeightPartBinding[]): { decls: string[]; list: KernelBinding[] } {
  const decls: string[] = [];
  const list: KernelBinding[] = [];
  const add = (name: string, wgslName: string, type: string, access: 'read' | 'read_write', comment: string): void => {
    decls.push(`@group(0) @binding(${list.length}) var<storage, ${access}> ${wgslName}: ${type}; // ${comment}`);
    list.push({ name, access });
  };
  add('a', 'a', aVec4 ? `array<vec4<${c.dt.a}>>` : `array<${c.dt.a}>`, 'read', c.transA ? 'A stored [batch, K, M]' : 'A stored [batch, M, K]');
  for (const p of parts) add(p.name, p.wgslName, p.type, 'read', p.comment);
  (c.spec.epilogue?.operands ?? []).forEach((o, k) => add(o.name, `ep_${k}`, `array<${o.dtype}>`, 'read', `epilogue operand ${k} (${o.broadcast})`));
  add('out', 'out', `array<${c.dt.out}>`, 'read_write', `output [batch, M, ${c.nOut}]`);
  const ps = paramsStruct(c.params, list.length);
  if (ps) decls.push(ps.trimEnd());
  return { decls, list };
}

// ---------------------------------------------------------------------------------------------------------------
// subgroup-sweep GEMV skeleton shared by dequant-gemv-sweep and sparse-nm-gemv-sweep

/** The accumulators of a sweep kernel's column: `acc`, and `up` (the gate's second half, rows `+ N_OUT`) when gated. */
export function sweepHalves(c: Ctx): { acc: string; rowOffset: string }[] {
  return c.G === 2 ? [{ acc: 'acc', rowOffset: '' }, { acc: 'up', rowOffset: ' + N_OUT' }] : [{ acc: 'acc', rowOffset: '' }];
}

/**
 * The opening of a sweep kernel's `main` (one subgroup per workgroup, `LANES` lanes): sizes, tile indices, the lane's
 * slice of the A row — units `lane, lane + LANES, …` of `QUADS` vec4s each, into the private array `x` (times `scale`
 * when given), zero past the row's end — with `x_sum[j]`, each unit's sum of unscaled values, when `sums`; then the
 * sweep over `COLS` columns, opening the loop over the lane's units with `u` the unit. Needs the constants `LANES`,
 * `COLS`, `N_TILES`, `UNITS`, `UNITS_PER_LANE` and `QUADS`, and `a_quad`.
 */
export function sweepOpening(c: Ctx, o: { unitsPerLane: number; quads: number; scale?: string; sums: boolean }): string[] {
  return [
    `@compute @workgroup_size(LANES)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {`,
    ...sizeLets(c),
    ...tileIndexLines(1),
    `  let row = min(tile_m, M - 1u);`,
    `  // the lane's slice of A's row: units lane, lane + LANES, …; zero past the row's end, so those units add nothing`,
    `  var x: array<vec4<f32>, ${o.unitsPerLane * o.quads}>;`,
    ...(o.sums ? [`  var x_sum: array<f32, ${o.unitsPerLane}>;`] : []),
    `  for (var j = 0u; j < UNITS_PER_LANE; j++) {`,
    `    let u = j * LANES + lane;`,
    `    let live = u < UNITS;`,
    `    let uc = min(u, UNITS - 1u);`,
    `    var t = vec4<f32>(0.0);`,
    `    for (var q = 0u; q < QUADS; q++) {`,
    `      let v = select(vec4<f32>(0.0), a_quad(a_base, row, uc * QUADS + q, M), live);`,
    `      x[j * QUADS + q] = v${o.scale ? ` * ${o.scale}` : ''};`,
    `      t += v;`,
    `    }`,
    ...(o.sums ? [`    x_sum[j] = dot(t, vec4<f32>(1.0));`] : []),
    `  }`,
    `  let col0 = tile_n * COLS;`,
    `  // the opaque 1 keeps compilers from unrolling the sweep`,
    `  for (var cc = 0u; cc < COLS * one; cc++) {`,
    `    let col = min(col0 + cc, N_OUT - 1u);`,
    `    ${sweepHalves(c).map((h) => `var ${h.acc} = 0.0;`).join(' ')}`,
    `    for (var j = 0u; j < UNITS_PER_LANE; j++) {`,
    `      let u = min(j * LANES + lane, UNITS - 1u);`,
  ];
}

/** The close of a sweep kernel's `main`: per column one `subgroupAdd` per accumulator, lane 0 stores through `store_out`. */
export function sweepClosing(c: Ctx): string[] {
  const halves = sweepHalves(c);
  return [
    `    }`,
    `    ${halves.map((h, i) => `let s${i} = subgroupAdd(${h.acc});`).join(' ')}`,
    `    if (lane == 0u) {`,
    `      store_out(out_base, tile_m, col0 + cc, M, s0${halves.length === 2 ? ', s1' : ''});`,
    `    }`,
    `  }`,
    `}`,
  ];
}
