/**
 * The `block-sparse-gemv` kernel: a matmul whose B is a block-sparse weight stored `[N, K]` (`transB`) in block-CSR
 * form: block row `r` (output columns `r·blockRows …`) holds the blocks `rowPtr[r] .. rowPtr[r+1]-1`, block `p` sitting
 * at K offset `colIdx[p]·blockCols` with its `blockRows × blockCols` values row-major in `blocks`. The kernel iterates
 * only the stored blocks, so its work (and the bytes it reads) falls with the density; an empty block row costs
 * nothing but its epilogue.
 *
 * The structure is `dequant-gemv`'s: groups of `lanesPerColumn` lanes compute `colsPerGroup` output columns (which
 * lie in one block row) for `rowsPerBlock` rows, then reduce with `subgroupAdd` or in workgroup memory; the gate and
 * the epilogue are the dense family's (`store_out`). The lanes of a group split the block row's chunks (4 k of one
 * block row, or 1 when `blockCols` is not a multiple of 4) — consecutive lanes on consecutive chunks — and each chunk
 * of A serves every column of the group. The trip count is the most blocks any of the workgroup's block rows holds,
 * read from `rowPtr` at uniform indices, so the cross-lane reductions stay in uniform control flow.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { wgslComment } from '../wgsl.js';
import { assemble, checkPositiveInt, encodedWeightBindings, gridOf, laneGroupAccumulators, laneGroupPreamble, laneGroupStoreLines, laneReductionLines, makeCtx, matmulFeatures, storeFn, toF32 } from './common.js';
import type { MatmulSpec } from './spec.js';

/** How the block-sparse B is stored (from its weight entry's {@link BlockSparseEncoding}). */
export interface BlockSparseWeightFormat {
  /** Rows of B (output columns) per block; divides N. */
  readonly blockRows: number;
  /** Columns of B (k) per block; divides K. */
  readonly blockCols: number;
}

/** Tuning of the `block-sparse-gemv` kernel. */
export interface BlockSparseGemvVariant {
  /** Variant kind. */
  readonly kind: 'block-sparse-gemv';
  /** Invocations per workgroup. Default 64. */
  readonly workgroupSize?: number;
  /** Lanes splitting a block row's chunks (a power of two dividing the workgroup size). Default 8. */
  readonly lanesPerColumn?: number;
  /** Output columns per lane group: divides `blockRows` (and, gated, the output columns). Default 4. */
  readonly colsPerGroup?: number;
  /** Output rows per workgroup. Default 1. */
  readonly rowsPerBlock?: number;
  /** How the lanes of a group combine their partial sums (when lanesPerColumn > 1). Default `workgroup`. */
  readonly reduction?: 'subgroup' | 'workgroup';
  /** The device's subgroup size (for `reduction: 'subgroup'`, which needs lanesPerColumn equal to it). Default 8. */
  readonly subgroupSize?: number;
}

/** A matmul with a block-sparse B stored `[N, K]`: the dense spec (`transB`, B shared by every batch) and B's format. */
export interface BlockSparseMatmulSpec extends Omit<MatmulSpec, 'variant'> {
  /** B's storage. */
  readonly weight: BlockSparseWeightFormat;
}

/**
 * Generates the `block-sparse-gemv` kernel for `spec`. Bindings: `a`, `rowPtr`, `colIdx` (u32), `blocks` (f32, as
 * vec4s when `blockCols` is a multiple of 4), the epilogue operands, `out`, and the params uniform when a size is a
 * dim expression.
 * @throws {@link InputError} for a form it does not compute (B not `[N, K]`, a batched B, blocks not tiling B) or
 * inconsistent tuning (a lane group's columns not inside one block row).
 */
export function generateBlockSparseGemvKernel(spec: BlockSparseMatmulSpec, v: BlockSparseGemvVariant): KernelSource {
  const { blockRows: BR, blockCols: BC } = spec.weight;
  if (!spec.transB) throw new InputError('block-sparse-gemv: the sparse B must be stored [N, K] (transB)');
  // B's storage dtype is irrelevant here (its blocks are f32): keep it out of the kernel's features
  const c = makeCtx({ ...spec, dtypes: { ...spec.dtypes, a: spec.dtypes?.a ?? spec.dtype, out: spec.dtypes?.out ?? spec.dtype, b: 'f32' }, variant: 'gemv' });
  if (c.batch.value !== 1 && c.spec.batchStrides?.b !== 0) throw new InputError('block-sparse-gemv: a sparse B is one [N, K] matrix shared by every batch');
  if (!(Number.isInteger(BR) && Number.isInteger(BC) && BR >= 1 && BC >= 1 && c.N % BR === 0 && c.K % BC === 0))
    throw new InputError(`block-sparse-gemv: ${BR}x${BC} blocks do not tile B [${c.N}, ${c.K}]`);
  const WG = v.workgroupSize ?? 64;
  const L = v.lanesPerColumn ?? 8;
  const C = v.colsPerGroup ?? 4;
  const R = v.rowsPerBlock ?? 1;
  const SG = v.subgroupSize ?? 8;
  for (const [n, x] of [['workgroupSize', WG], ['lanesPerColumn', L], ['colsPerGroup', C], ['rowsPerBlock', R]] as const) checkPositiveInt(n, x);
  if ((L & (L - 1)) !== 0 || WG % L !== 0) throw new InputError(`block-sparse-gemv: lanesPerColumn (${L}) must be a power of two dividing the workgroup size (${WG})`);
  const gated = c.G === 2;
  if (BR % C !== 0 || (gated && c.nOut % C !== 0))
    throw new InputError(`block-sparse-gemv: colsPerGroup (${C}) must divide the block rows (${BR})${gated ? ` and the output columns (${c.nOut})` : ''}, so that a lane group's columns share a block row`);
  const reduction = L === 1 ? 'none' : v.reduction ?? 'workgroup';
  if (reduction === 'subgroup' && L !== SG) throw new InputError(`block-sparse-gemv: subgroup reduction needs lanesPerColumn (${L}) = subgroupSize (${SG})`);
  const groups = WG / L;
  const tileN = groups * C;
  const nTiles = Math.ceil(c.nOut / tileN);
  const chunk = BC % 4 === 0 ? 4 : 1; // k per chunk
  const aVec4 = chunk === 4 && !c.transA && c.strideA.mult4;
  const { decls, list } = encodedWeightBindings(c, aVec4, [
    { name: 'rowPtr', wgslName: 'row_ptr', type: 'array<u32>', comment: 'block row r holds blocks row_ptr[r] .. row_ptr[r+1]-1' },
    { name: 'colIdx', wgslName: 'col_idx', type: 'array<u32>', comment: "each block's column (in blocks along K)" },
    { name: 'blocks', wgslName: 'blocks', type: chunk === 4 ? 'array<vec4<f32>>' : 'array<f32>', comment: `the blocks, ${BR}x${BC} f32 each, row-major` },
  ]);
  const halves = gated ? ['acc', 'up'] : ['acc'];
  const body: string[] = laneGroupPreamble(c, C, R);
  for (const h of halves) for (let r = 0; r < R; r++) body.push(`  ${Array.from({ length: C }, (_, cc) => `var ${h}_${r}_${cc} = 0.0;`).join(' ')}`);
  body.push(`  // the group's columns${gated ? ' (and their up-half columns)' : ''} lie in one block row`);
  halves.forEach((h, g) => {
    const off = g ? ' + N_OUT' : '';
    body.push(
      `  let brow_${h} = (col_0${off}) / BLOCK_ROWS;`,
      `  let first_${h} = row_ptr[brow_${h}];`,
      `  let chunks_${h} = (row_ptr[brow_${h} + 1u] - first_${h}) * CHUNKS_PER_BLOCK;`,
    );
  });
  body.push(
    `  // the trip count: the most blocks a block row of this workgroup holds (uniform: rowPtr read at uniform indices)`,
    `  var most = 0u;`,
    `  for (var j = 0u; j < GROUPS; j++) {`,
    `    let c0 = min((tile_n * GROUPS + j) * COLS, N_OUT - 1u);`,
    ...halves.map((_, g) => `    most = max(most, row_ptr[(c0${g ? ' + N_OUT' : ''}) / BLOCK_ROWS + 1u] - row_ptr[(c0${g ? ' + N_OUT' : ''}) / BLOCK_ROWS]);`),
    `  }`,
    `  // lane takes chunks lane, lane + LANES_PER_COLUMN, … of its block row's blocks (CHUNKS_PER_BLOCK per block)`,
    `  for (var i = 0u; i < (most * CHUNKS_PER_BLOCK + LANES_PER_COLUMN - 1u) / LANES_PER_COLUMN; i++) {`,
    `    let t = i * LANES_PER_COLUMN + lane;`,
    `    let q = t % CHUNKS_PER_BLOCK; // the chunk's place along a row of its block`,
  );
  const read = chunk === 4 ? 'a_quad' : 'a_at';
  halves.forEach((h, g) => {
    body.push(
      `    if (t < chunks_${h}) { // (no break: it would make the control flow after the loop non-uniform)`,
      `      let p = first_${h} + t / CHUNKS_PER_BLOCK; // the block`,
      `      let kc = col_idx[p] * CHUNKS_PER_BLOCK + q; // the chunk's index along K`,
    );
    for (let r = 0; r < R; r++) body.push(`      let x${r} = ${read}(a_base, a_row_${r}, kc, M);`);
    for (let cc = 0; cc < C; cc++) {
      body.push(`      let w${cc} = blocks[(p * BLOCK_ROWS + col_${cc}${g ? ' + N_OUT' : ''} - brow_${h} * BLOCK_ROWS) * CHUNKS_PER_BLOCK + q];`);
      for (let r = 0; r < R; r++) body.push(`      ${h}_${r}_${cc} += ${chunk === 4 ? `dot(x${r}, w${cc})` : `x${r} * w${cc}`};`);
    }
    body.push(`    }`);
  });
  body.push(`  }`);
  const { lines: reduce, workgroupVars } = laneReductionLines(laneGroupAccumulators(c, C, R), reduction, WG);
  body.push(...reduce, ...laneGroupStoreLines(c, C, R, L));
  const aElem = (k: string): string => toF32(c.dt.a, c.transA ? `a[base + (${k}) * rows + row]` : `a[base + row * K + ${k}]`);
  const fns =
    chunk === 4
      ? [
          `// A[row, 4*kq .. 4*kq+3] of the batch at base (rows = M)`,
          `fn a_quad(base: u32, row: u32, kq: u32, rows: u32) -> vec4<f32> {`,
          aVec4 ? `  return ${toF32(c.dt.a, 'a[base / 4u + row * (K / 4u) + kq]', true)};` : `  let k = kq * 4u;\n  return vec4<f32>(${[0, 1, 2, 3].map((i) => aElem(`k + ${i}u`)).join(', ')});`,
          `}`,
        ]
      : [`// A[row, k] of the batch at base (rows = M)`, `fn a_at(base: u32, row: u32, k: u32, rows: u32) -> f32 {`, `  return ${aElem('k')};`, `}`];
  fns.push('', ...storeFn(c));
  const name = `block-sparse-gemv-b${BR}x${BC}-l${L}-c${C}-r${R}-wg${WG}${reduction === 'none' ? '' : `-${reduction}`}`;
  return {
    family: 'block-sparse-matmul',
    variant: name,
    wgsl: assemble(c, {
      subgroups: reduction === 'subgroup',
      header: [
        `// tensorwright kernel: block-sparse matmul (${name})`,
        `//   out[b, m, n] = ${gated ? `${c.spec.gated!.activation}(acc[b, m, n]) * acc[b, m, n + ${c.nOut}]` : 'acc[b, m, n]'}${c.spec.epilogue ? ', then the epilogue' : ''}; acc = sum_k A[b, m, k] * W[n, k]`,
        `//   W ${wgslComment(`[${c.N}, ${c.K}]`)}: block CSR of ${BR}x${BC} f32 blocks; only stored blocks are read`,
        `//   groups of ${L} lane(s) split a block row's ${chunk === 4 ? 'vec4 chunks' : 'elements'} for ${C} column(s) x ${R} row(s); f32 accumulation`,
      ],
      consts: [
        `const WORKGROUP_SIZE: u32 = ${WG}u;`,
        `const LANES_PER_COLUMN: u32 = ${L}u;`,
        `const GROUPS: u32 = ${groups}u; // lane groups per workgroup`,
        `const COLS: u32 = ${C}u;`,
        `const ROWS: u32 = ${R}u;`,
        `const N_TILES: u32 = ${nTiles}u; // workgroups along N (${tileN} columns each)`,
        `const BLOCK_ROWS: u32 = ${BR}u;`,
        `const CHUNKS_PER_BLOCK: u32 = ${BC / chunk}u; // ${chunk === 4 ? 'vec4s' : 'elements'} per block row (${BC} k)`,
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
