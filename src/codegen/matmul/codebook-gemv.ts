/**
 * The `codebook-gemv` kernel: a matmul whose B is a codebook (look-up table) weight stored `[N, K]` (`transB`),
 * decoded in registers as it is read — never into a dense buffer. Indices are read as `u32` words (little-endian,
 * as the weight store packs them) and looked up in the table (a private copy, workgroup memory or the storage buffer:
 * `src/codegen/codebook.ts`); with scales, each group's scale multiplies its partial dot product. Accumulation is f32.
 *
 * The structure is `dequant-gemv`'s (and the dense `gemv`'s): groups of `lanesPerColumn` lanes split K for a block of
 * `colsPerGroup` output columns and `rowsPerBlock` rows, then reduce with `subgroupAdd` or in workgroup memory; the
 * gate and the epilogue are the dense family's (`store_out`). It is correct for any M (row blocks cover M, a dim
 * expression at run time), so it also serves prefill (`codebook-gemm.ts` serves it better on software rasterizers).
 * @module
 */
import { InputError } from '../../errors.js';
import { paramsStruct, type KernelBinding, type KernelSource } from '../kernel.js';
import { addCodebookBindings, bookFns, codebookConsts, codebookFormatTag, codebookValueText, CODEBOOK_INDEX_BITS, indexExpr, tableBaseExpr, tableLoadLines, tablePlacement, tableVars, type CodebookWeightFormat } from '../codebook.js';
import { wgslComment } from '../wgsl.js';
import { assemble, checkPositiveInt, gridOf, makeCtx, matmulFeatures, sizeLets, storeFn, tileIndexLines, toF32, type Ctx } from './common.js';
import { aQuadFn, type DequantGemvVariant } from './dequant-gemv.js';
import type { MatmulSpec } from './spec.js';

/** Tuning of the `codebook-gemv` kernel: `dequant-gemv`'s fields. */
export interface CodebookGemvVariant extends Omit<DequantGemvVariant, 'kind'> {
  /** Variant kind. */
  readonly kind: 'codebook-gemv';
}

/** A matmul with a codebook B stored `[N, K]`: the dense spec (`transB`, B's batch broadcast) and B's format. */
export interface CodebookMatmulSpec extends Omit<MatmulSpec, 'variant'> {
  /** B's storage. */
  readonly weight: CodebookWeightFormat;
}

/**
 * Whether B can be read a whole `u32` word at a time: rows start on word boundaries (K is a multiple of the indices
 * per word) and no word straddles two scale groups. Otherwise `codebook-gemv` reads one element per step.
 */
export function codebookByWord(K: number, w: CodebookWeightFormat): boolean {
  const perWord = 32 / w.indexBits;
  return K % perWord === 0 && (w.scaleGroupSize === undefined || w.scaleGroupSize % perWord === 0);
}

/**
 * Why the codebook matmul kernels cannot read B of shape `[N, K]` in format `w`, or `undefined` when they can:
 * index widths dividing 32, tables covering whole rows, scale groups dividing K or covering the whole weight.
 */
export function codebookMatmulProblem(N: number, K: number, w: CodebookWeightFormat): string | undefined {
  if (!CODEBOOK_INDEX_BITS.includes(w.indexBits)) return `${w.indexBits}-bit indices are not supported`;
  if (w.tableGroupSize % K !== 0) return `a table must cover whole rows of ${K} (it covers ${w.tableGroupSize} elements)`;
  if (w.scaleGroupSize !== undefined && !(K % w.scaleGroupSize === 0 || w.scaleGroupSize === N * K)) return `scale group size ${w.scaleGroupSize} must divide K (${K}) or cover all ${N * K} elements`;
  return undefined;
}

/**
 * Generates the `codebook-gemv` kernel for `spec`. Bindings: `a`, `indices` (u32 words), `codebook` (f32), then
 * `scales` (f32) when the format has them, the epilogue operands, `out`, and the params uniform when a size is a dim
 * expression.
 * @throws {@link InputError} for a form it does not compute (B not `[N, K]`, a batched B, a format
 * {@link codebookMatmulProblem} rejects) or inconsistent tuning.
 */
export function generateCodebookGemvKernel(spec: CodebookMatmulSpec, v: CodebookGemvVariant): KernelSource {
  const w = spec.weight;
  if (!spec.transB) throw new InputError('codebook-gemv: the codebook B must be stored [N, K] (transB)');
  // B's storage dtype is irrelevant here (it is read packed): keep it out of the kernel's features
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('codebook-gemv: a codebook B is one [N, K] matrix shared by every batch');
  const problem = codebookMatmulProblem(c.N, c.K, w);
  if (problem) throw new InputError(`codebook-gemv: ${problem}`);
  const WG = v.workgroupSize ?? 64;
  const L = v.lanesPerColumn ?? 8;
  const C = v.colsPerGroup ?? 4;
  const R = v.rowsPerBlock ?? 1;
  const SG = v.subgroupSize ?? 8;
  for (const [n, x] of [['workgroupSize', WG], ['lanesPerColumn', L], ['colsPerGroup', C], ['rowsPerBlock', R]] as const) checkPositiveInt(n, x);
  if ((L & (L - 1)) !== 0 || WG % L !== 0) throw new InputError(`codebook-gemv: lanesPerColumn (${L}) must be a power of two dividing the workgroup size (${WG})`);
  const reduction = L === 1 ? 'none' : v.reduction ?? 'workgroup';
  if (reduction === 'subgroup' && L !== SG) throw new InputError(`codebook-gemv: subgroup reduction needs lanesPerColumn (${L}) = subgroupSize (${SG})`);
  const EPW = 32 / w.indexBits; // indices per u32 word
  const byWord = codebookByWord(c.K, w);
  const step = byWord ? EPW : 1;
  const QUADS = EPW / 4; // vec4s of indices per word
  const groups = WG / L;
  const tileN = groups * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const gated = c.G === 2;
  const scaled = w.scaleGroupSize !== undefined;
  const aVec4 = byWord && !c.transA && c.strideA.mult4;
  const { decls, list } = codebookBindings(c, w, aVec4);
  const halves = gated ? ['acc', 'up'] : ['acc'];
  // per column (and gate half): its name and the B row it reads
  const cols: { name: string; acc: (r: number) => string; rowExpr: string }[] = [];
  halves.forEach((h, g) => {
    for (let cc = 0; cc < C; cc++) cols.push({ name: `${g ? 'u' : 'b'}${cc}`, acc: (r) => `${h}_${r}_${cc}`, rowExpr: `col_${cc}${g ? ' + N_OUT' : ''}` });
  });
  const body: string[] = [
    `@compute @workgroup_size(WORKGROUP_SIZE)`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {`,
    ...tableLoadLines(w, 'li', 'WORKGROUP_SIZE'),
    ...sizeLets(c),
    ...tileIndexLines(R),
    `  let group = li / LANES_PER_COLUMN;`,
    `  let lane = li % LANES_PER_COLUMN;`,
    `  let row0 = tile_m * ROWS;`,
    `  let col0 = (tile_n * GROUPS + group) * COLS;`,
    ...Array.from({ length: C }, (_, cc) => `  let col_${cc} = min(col0 + ${cc}u, N_OUT - 1u);`),
    ...Array.from({ length: R }, (_, r) => `  let a_row_${r} = min(row0 + ${r}u, M - 1u);`),
    ...(w.tables > 1 ? cols.map(({ name, rowExpr }) => `  let t_${name} = ${tableBaseExpr(w, `(${rowExpr}) * K`)}; // its table (tables cover whole rows)`) : []),
  ];
  for (const h of halves) for (let r = 0; r < R; r++) body.push(`  ${Array.from({ length: C }, (_, cc) => `var ${h}_${r}_${cc} = 0.0;`).join(' ')}`);
  body.push(
    `  // lane takes ${byWord ? `words (${EPW} indices each)` : 'elements'} lane, lane + LANES_PER_COLUMN, … of each B row`,
    `  // a uniform trip count (subgroupAdd below needs uniform control flow); the opaque 1 keeps compilers from unrolling`,
    `  for (var i = 0u; i < ITERS * one; i++) {`,
    `    let s = i * LANES_PER_COLUMN + lane;`,
    `    if (s < STEPS) { // (no break: it would make the control flow after the loop non-uniform)`,
    `    let k0 = s * ${step}u;`,
  );
  const base = (name: string): string => (w.tables > 1 ? `t_${name}` : '0u');
  for (const { name, rowExpr } of cols) {
    body.push(`    let e_${name} = (${rowExpr}) * K + k0; // flat index of the first element in [N, K]`);
    if (scaled) body.push(`    let s_${name} = scales[e_${name} / SCALE_GROUP];`);
  }
  if (byWord) {
    // per word: A as QUADS vec4s per row, the table entries as QUADS vec4s per column, dot products, one scale per word
    for (let r = 0; r < R; r++) for (let t = 0; t < QUADS; t++) body.push(`    let x${r}_${t} = a_quad(a_base, a_row_${r}, s * ${QUADS}u + ${t}u, M);`);
    for (const { name, acc } of cols) {
      body.push(`    let w_${name} = indices[e_${name} / ${EPW}u];`);
      for (let t = 0; t < QUADS; t++) body.push(`    let v_${name}_${t} = book_quad(w_${name}, ${t}u, ${base(name)});`);
      for (let r = 0; r < R; r++) {
        const dots = Array.from({ length: QUADS }, (_, t) => `dot(x${r}_${t}, v_${name}_${t})`).join(' + ');
        body.push(`    ${acc(r)} += ${scaled ? `s_${name} * (${dots})` : dots};`);
      }
    }
  } else {
    for (let r = 0; r < R; r++) body.push(`    let x${r} = a_at(a_base, a_row_${r}, k0, M);`);
    for (const { name, acc } of cols) {
      body.push(`    let v_${name} = book(${base(name)}, ${indexExpr(w, `e_${name}`)})${scaled ? ` * s_${name}` : ''};`);
      for (let r = 0; r < R; r++) body.push(`    ${acc(r)} += x${r} * v_${name};`);
    }
  }
  body.push(`    }`, `  }`);
  // reduction across the lanes of a group
  const accNames: string[] = [];
  for (const h of halves) for (let r = 0; r < R; r++) for (let cc = 0; cc < C; cc++) accNames.push(`${h}_${r}_${cc}`);
  const workgroupVars: string[] = [...tableVars(w)];
  if (reduction === 'none') accNames.forEach((a, i) => body.push(`  let s${i} = ${a};`));
  else if (reduction === 'subgroup') accNames.forEach((a, i) => body.push(`  let s${i} = subgroupAdd(${a});`));
  else {
    workgroupVars.push(`var<workgroup> partial: array<f32, ${WG * accNames.length}>; // [accumulator][invocation]`);
    accNames.forEach((a, i) => body.push(`  partial[${i}u * WORKGROUP_SIZE + li] = ${a};`));
    body.push(`  workgroupBarrier();`, `  ${accNames.map((_, i) => `var s${i} = 0.0;`).join(' ')}`, `  if (lane == 0u) {`);
    body.push(`    for (var l = 0u; l < LANES_PER_COLUMN; l++) {`);
    accNames.forEach((_, i) => body.push(`      s${i} += partial[${i}u * WORKGROUP_SIZE + li + l];`));
    body.push(`    }`, `  }`);
  }
  body.push(L > 1 ? `  if (lane == 0u) {` : `  {`);
  const perHalf = R * C;
  for (let r = 0; r < R; r++)
    for (let cc = 0; cc < C; cc++) {
      const i = r * C + cc;
      body.push(`    store_out(out_base, row0 + ${r}u, col0 + ${cc}u, M, s${i}${gated ? `, s${i + perHalf}` : ''});`);
    }
  body.push(`  }`, `}`);
  const aElem = (k: string): string => toF32(c.dt.a, c.transA ? `a[base + (${k}) * rows + row]` : `a[base + row * K + ${k}]`);
  const fns = [
    ...(byWord ? aQuadFn(c, aVec4) : [`// A[row, k] of the batch at base (rows = M)`, `fn a_at(base: u32, row: u32, k: u32, rows: u32) -> f32 {`, `  return ${aElem('k')};`, `}`]),
    ...bookFns(w, byWord),
    '',
    ...storeFn(c),
  ];
  const name = `codebook-gemv-${codebookFormatTag(w)}-l${L}-c${C}-r${R}-wg${WG}${reduction === 'none' ? '' : `-${reduction}`}`;
  return {
    family: 'codebook-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: reduction === 'subgroup',
      header: [
        `// tensorwright kernel: codebook matmul (${name})`,
        `//   out[b, m, n] = ${gated ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * W[n, k]`,
        `//   W ${wgslComment(`[${c.N}, ${c.K}]`)}: ${codebookValueText(w)}, table(s) read from ${tablePlacement(w)} memory`,
        `//   groups of ${L} lane(s) split K (${byWord ? 'whole words' : 'single elements'}) for ${C} column(s) x ${R} row(s); f32 accumulation`,
      ],
      consts: [
        `const WORKGROUP_SIZE: u32 = ${WG}u;`,
        `const LANES_PER_COLUMN: u32 = ${L}u;`,
        `const GROUPS: u32 = ${groups}u; // lane groups per workgroup`,
        `const COLS: u32 = ${C}u;`,
        `const ROWS: u32 = ${R}u;`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        ...codebookConsts(w),
        `const STEPS: u32 = ${c.K / step}u; // ${byWord ? 'words' : 'elements'} per B row`,
        `const ITERS: u32 = ${Math.ceil(c.K / step / L)}u; // steps per lane`,
      ],
      decls,
      fns,
      workgroupVars,
      main: body,
    }),
    bindings: list,
    params: [...c.params],
    grid: gridOf(c, nTiles, R),
    nodes: [...(c.spec.nodes ?? [])],
    features: matmulFeatures(c, reduction === 'subgroup'),
  };
}

/** Binding declarations and list: a (vec4s when `aVec4`), the weight's parts, epilogue operands, out, params. */
export function codebookBindings(c: Ctx, w: CodebookWeightFormat, aVec4: boolean): { decls: string[]; list: KernelBinding[] } {
  const decls: string[] = [];
  const list: KernelBinding[] = [];
  const add = (name: string, wgslName: string, type: string, access: 'read' | 'read_write', comment: string): void => {
    decls.push(`@group(0) @binding(${list.length}) var<storage, ${access}> ${wgslName}: ${type}; // ${comment}`);
    list.push({ name, access });
  };
  add('a', 'a', aVec4 ? `array<vec4<${c.dt.a}>>` : `array<${c.dt.a}>`, 'read', c.transA ? 'A stored [batch, K, M]' : 'A stored [batch, M, K]');
  addCodebookBindings(w, decls, list);
  (c.spec.epilogue?.operands ?? []).forEach((o, k) => add(o.name, `ep_${k}`, `array<${o.dtype}>`, 'read', `epilogue operand ${k} (${o.broadcast})`));
  add('out', 'out', `array<${c.dt.out}>`, 'read_write', `output [batch, M, ${c.nOut}]`);
  const ps = paramsStruct(c.params, list.length);
  if (ps) decls.push(ps.trimEnd());
  return { decls, list };
}
