/**
 * The `codebook-embedding` kernel: an embedding lookup over a codebook (look-up table) `[V, D]` table — 1, 2, 4 or
 * 8-bit indices, any table and scale grouping the weight store allows. Each invocation computes one output element:
 * it reads the packed `u32` word holding the element's index, looks the index up in its table (read from the storage
 * buffer: a lookup touches few entries, no copy pays off) and multiplies by its group's scale when there are scales
 * (the helpers of `codebook.ts`, shared with the codebook matmul), then stores it as f32 or f16. Rows need not start
 * on word boundaries, so any D works.
 *
 * Ids are read as the dense embedding kernel reads them ({@link embeddingRowLines}): negative ids count from the end,
 * and an id still out of range gives a zero row (default) or the nearest row.
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { addCodebookBindings, codebookConsts, codebookFormatTag, codebookValueText, CODEBOOK_INDEX_BITS, indexExpr, tableBaseExpr, type CodebookWeightFormat } from './codebook.js';
import { embeddingRowLines, flatKernel, type EmbeddingSpec } from './gather.js';
import { KernelParams, type KernelBinding, type KernelSource } from './kernel.js';
import { storageType } from './wgsl.js';

/** What {@link generateCodebookEmbeddingKernel} builds: the dense lookup's spec, with the table's storage. */
export interface CodebookEmbeddingSpec extends Omit<EmbeddingSpec, 'dtype'> {
  /** Storage type of out (the table is decoded in f32, then stored as this). */
  readonly dtype: 'f32' | 'f16';
  /** The table's storage. */
  readonly weight: CodebookWeightFormat;
}

/**
 * Generates the `codebook-embedding` kernel: `out[t, d] = W[ids[t], d]`, W decoded from its packed indices.
 * Bindings: `indices` (u32 words), `codebook` (f32), then `scales` (f32) when the format has them, `ids` `[count]`,
 * `out` `[count, D]`; params: count when dynamic.
 * @throws {@link ShapeError} for an empty table; {@link InputError} for an index width not dividing 32, or table or
 * scale groups the weight store does not allow.
 */
export function generateCodebookEmbeddingKernel(spec: CodebookEmbeddingSpec): KernelSource {
  const { vocab: V, dim: D, weight: w } = spec;
  if (!Number.isInteger(V) || V < 1 || !Number.isInteger(D) || D < 1) throw new ShapeError('gather', `table must be [V >= 1, D >= 1], got [${V}, ${D}]`);
  if (!CODEBOOK_INDEX_BITS.includes(w.indexBits)) throw new InputError(`codebook-embedding: ${w.indexBits}-bit indices are not supported`);
  if (!(Number.isInteger(w.tableGroupSize) && w.tableGroupSize >= 1 && (V * D) % w.tableGroupSize === 0 && w.tables * w.tableGroupSize === V * D))
    throw new InputError(`codebook-embedding: ${w.tables} table(s) of ${w.tableGroupSize} elements do not cover the ${V * D} elements`);
  const sg = w.scaleGroupSize;
  if (sg !== undefined && !(Number.isInteger(sg) && sg >= 1 && (D % sg === 0 || sg === V * D)))
    throw new InputError(`codebook-embedding: scale group size ${sg} must divide the row (${D}) or cover all ${V * D} elements`);
  const WG = spec.workgroupSize ?? 64;
  const params = new KernelParams();
  const count = spec.count ?? 'seq';
  const countRef = params.ref(count);
  const countGrid = params.grid(count);
  const st = storageType(spec.dtype);
  const idt = spec.indexDType ?? 'i32';
  const oor = spec.outOfRange ?? 'zero';
  const decls: string[] = [];
  const bindings: KernelBinding[] = [];
  addCodebookBindings(w, decls, bindings);
  decls.push(`@group(0) @binding(${bindings.length}) var<storage, read> ids: array<${storageType(idt)}>; // [count]`);
  bindings.push({ name: 'ids', access: 'read' });
  decls.push(`@group(0) @binding(${bindings.length}) var<storage, read_write> out: array<${st}>; // [count, DIM]`);
  bindings.push({ name: 'out', access: 'read_write' });
  const value = `codebook[${tableBaseExpr(w, 'e')} + ${indexExpr(w, 'e')}]${sg !== undefined ? ' * scales[e / SCALE_GROUP]' : ''}`;
  const body = [
    '  let t = i / DIM;',
    '  let d = i % DIM;',
    ...embeddingRowLines(idt, oor, `${st}(0)`),
    '  let e = row * DIM + d; // flat index of the element in [VOCAB, DIM]',
    `  let v = ${value};`,
    `  out[i] = ${st === 'f32' ? 'v' : `${st}(v)`};`,
  ];
  return flatKernel({
    family: 'codebook-gather',
    variant: `codebook-embedding-${codebookFormatTag(w)}-${oor}-wg${WG}`,
    title: `embedding rows of a codebook [${V}, ${D}] table at ${count} ${idt} ids; out-of-range ids ${oor === 'zero' ? 'give zero rows' : 'clamp'}`,
    header: [`//   ${codebookValueText(w)}, read from storage; out ${st}`],
    nodes: spec.nodes,
    dtypes: [spec.dtype],
    decls,
    bindings,
    params,
    consts: [`const VOCAB: u32 = ${V}u;`, `const DIM: u32 = ${D}u;`, ...codebookConsts(w)],
    functions: [],
    total: `${countRef} * DIM`,
    totalGrid: typeof countGrid === 'number' ? countGrid * D : { mul: [countGrid, D] },
    body,
    workgroupSize: WG,
  });
}
