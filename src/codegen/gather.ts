/**
 * Gather and layout-copy kernel family: embedding lookup (rows of a `[V, D]` table at integer ids), gather along any
 * axis, and the generic copies that graphs still holding layout ops need — `transpose`, `slice` (strided, negative
 * steps) and `concat` — for static or param-dynamic shapes of rank 1 to 8. Every kernel runs one invocation per output element over a flattened
 * index (grids above 65535 workgroups spill into y), so any element count works.
 *
 * Embedding ids follow the reference's convention for negative ids (`id + V`, as Python indexing); an id still outside
 * `[0, V)` cannot raise an error on the GPU, so it either reads row 0 / V-1 (`clamp`) or yields a zero row (`zero`,
 * the default). The CPU reference throws instead, so tests compare in-range ids only.
 *
 * Storage types: f32, f16, i32, u32 and bool (stored as u32) are copied bit for bit.
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import type { DType } from '../ir/dtype.js';
import { KernelParams, splitGrid, type DimLike, type GridExpr, type KernelBinding, type KernelSource } from './kernel.js';
import { enableDirectives, kernelFeatures, storageType } from './wgsl.js';

/** What {@link generateEmbeddingKernel} builds. */
export interface EmbeddingSpec {
  /** Rows V of the table. */
  readonly vocab: number;
  /** Row width D. */
  readonly dim: number;
  /** Number of ids (default `'seq'`). */
  readonly count?: DimLike;
  /** Storage type of the table and out. */
  readonly dtype: DType;
  /** Storage type of the ids (default i32). */
  readonly indexDType?: 'i32' | 'u32' | 'i64';
  /** What an id outside `[-V, V)` reads: a zero row (default) or the nearest valid row. */
  readonly outOfRange?: 'zero' | 'clamp';
  /** Lanes per workgroup (default 64). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** The graph nodes implemented (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * Common parts of a copy kernel: one invocation per output element `i` of a flattened index over `total` elements
 * (the quantized embedding lookup, `dequant-gather.ts`, is built on it too).
 */
export function flatKernel(o: {
  family: string;
  variant: string;
  title: string;
  /** Comment lines under the title line (each starting with `//`). */
  header?: string[];
  nodes?: readonly string[];
  dtypes: readonly DType[];
  decls: string[];
  bindings: KernelBinding[];
  params: KernelParams;
  consts: string[];
  functions?: string[];
  total: string;
  totalGrid: GridExpr;
  body: string[];
  workgroupSize: number;
}): KernelSource {
  const nodes = o.nodes ?? [];
  const features = kernelFeatures({ f16: o.dtypes.includes('f16') });
  const wgsl = [
    ...enableDirectives(features),
    ...(features.length ? [''] : []),
    `// tensorwright kernel: ${o.family} (${o.title})`,
    ...(o.header ?? []),
    '',
    `const WORKGROUP_SIZE: u32 = ${o.workgroupSize}u;`,
    ...o.consts,
    '',
    ...o.decls,
    o.params.decl(o.bindings.length),
    ...(o.functions ?? []),
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {',
    '  let i = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid; // output element',
    `  if (i >= ${o.total}) { return; }`,
    ...o.body,
    '}',
    '',
  ].join('\n');
  return {
    family: o.family,
    variant: o.variant,
    wgsl,
    bindings: o.bindings,
    params: [...o.params.list],
    grid: splitGrid(typeof o.totalGrid === 'number' ? Math.ceil(o.totalGrid / o.workgroupSize) : { ceilDiv: [o.totalGrid, o.workgroupSize] }),
    nodes: [...nodes],
    features,
  };
}

/**
 * Embedding lookup: `out[t, d] = table[ids[t], d]`. Bindings `table` `[V, D]`, `ids` `[count]`, `out` `[count, D]`;
 * params: count when dynamic.
 * @throws {@link ShapeError} for an empty table.
 */
export function generateEmbeddingKernel(spec: EmbeddingSpec): KernelSource {
  const { vocab: V, dim: D } = spec;
  if (!Number.isInteger(V) || V < 1 || !Number.isInteger(D) || D < 1) throw new ShapeError('gather', `table must be [V >= 1, D >= 1], got [${V}, ${D}]`);
  const WG = spec.workgroupSize ?? 64;
  const params = new KernelParams();
  const count = spec.count ?? 'seq';
  const countRef = params.ref(count);
  const countGrid = params.grid(count);
  const st = storageType(spec.dtype);
  const idt = spec.indexDType ?? 'i32';
  const oor = spec.outOfRange ?? 'zero';
  const body = ['  let t = i / DIM;', '  let d = i % DIM;', ...embeddingRowLines(idt, oor, `${st}(0)`), '  out[i] = table[row * DIM + d];'];
  return flatKernel({
    family: 'gather',
    variant: `embedding-${oor}-wg${WG}`,
    title: `embedding rows of a [${V}, ${D}] table at ${count} ${idt} ids; out-of-range ids ${oor === 'zero' ? 'give zero rows' : 'clamp'}`,
    nodes: spec.nodes,
    dtypes: [spec.dtype],
    decls: [
      `@group(0) @binding(0) var<storage, read> table: array<${st}>; // [VOCAB, DIM]`,
      `@group(0) @binding(1) var<storage, read> ids: array<${storageType(idt)}>; // [count]`,
      `@group(0) @binding(2) var<storage, read_write> out: array<${st}>; // [count, DIM]`,
    ],
    bindings: [
      { name: 'table', access: 'read' },
      { name: 'ids', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    params,
    consts: [`const VOCAB: u32 = ${V}u;`, `const DIM: u32 = ${D}u;`],
    total: `${countRef} * DIM`,
    totalGrid: typeof countGrid === 'number' ? countGrid * D : { mul: [countGrid, D] },
    body,
    workgroupSize: WG,
  });
}

/**
 * WGSL lines of an embedding lookup that set `row` (u32) to the table row of id `ids[t]` (needs `VOCAB`, `t`, `i`,
 * `out`): negative i32 ids count from the end, as the reference; an id still outside `[0, VOCAB)` reads the nearest
 * row (`clamp`) or stores `zero` to `out[i]` and returns (`zero`). Every embedding kernel reads its ids this way.
 */
export function embeddingRowLines(indexDType: 'i32' | 'u32' | 'i64', outOfRange: 'zero' | 'clamp', zero: string): string[] {
  const id =
    indexDType !== 'u32'
      ? [...signedIdLines(indexDType, 'ids[t]'), '  if (id < 0) { id += i32(VOCAB); } // negative ids count from the end, as the reference']
      : ['  let id = i32(min(ids[t], VOCAB));'];
  if (outOfRange === 'clamp') return [...id, '  let row = u32(clamp(id, 0, i32(VOCAB) - 1));'];
  return [...id, '  if (id < 0 || id >= i32(VOCAB)) {', `    out[i] = ${zero};`, '    return;', '  }', '  let row = u32(id);'];
}

/**
 * WGSL lines declaring `var id: i32` from a signed id read by `read`: an i32 as it is, an i64 (`vec2<u32>`) as its
 * low word when it fits i32, else the most negative i32 (out of range for every dim, negative ids included).
 */
function signedIdLines(indexDType: 'i32' | 'i64', read: string): string[] {
  if (indexDType === 'i32') return [`  var id = ${read};`];
  return [`  let wide = ${read};`, '  var id = bitcast<i32>(wide.x);', '  if (wide.y != select(0u, 0xffffffffu, id < 0)) { id = i32(-2147483647 - 1); } // beyond i32: out of range'];
}

/** What {@link generateGatherKernel} builds. */
export interface GatherSpec {
  /** Shape of the data (rank 1 to 8; dims static or dim expressions). */
  readonly shape: readonly DimLike[];
  /** The axis the ids index. */
  readonly axis: number;
  /** Number of ids (the element count of the id tensor, whatever its shape). */
  readonly count: DimLike;
  /** Storage type of the data and out. */
  readonly dtype: DType;
  /** Storage type of the ids (default i32). */
  readonly indexDType?: 'i32' | 'u32' | 'i64';
  /** Lanes per workgroup (default 64). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** The graph nodes implemented (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * Gather along any axis: `out[o, j, r] = x[o, ids[j], r]`, where `o` runs over the dims before `axis` and `r` over
 * those after it (the output is `[...shape[:axis], count, ...shape[axis+1:]]`, flattened). Negative ids count from
 * the end; ids still out of range give zeros (as {@link generateEmbeddingKernel}'s default). Bindings `x`, `ids`,
 * `out`; params: the dynamic dims and the count.
 * @throws {@link ShapeError} when `axis` is out of range.
 */
export function generateGatherKernel(spec: GatherSpec): KernelSource {
  const params = new KernelParams();
  const se = new ShapeExprs(params, 'gather');
  const dims = se.dims(spec.shape);
  const axis = spec.axis;
  if (!Number.isInteger(axis) || axis < 0 || axis >= dims.length) throw new ShapeError('gather', `axis ${axis} is out of range for rank ${dims.length}`);
  const count = KernelParams.canon(spec.count, 'count');
  const inner = se.product(dims.slice(axis + 1));
  const axisLen = se.ref(dims[axis]);
  const countRef = se.ref(count);
  const outDims = [...dims.slice(0, axis), count, ...dims.slice(axis + 1)];
  const st = storageType(spec.dtype);
  const idt = spec.indexDType ?? 'i32';
  const WG = spec.workgroupSize ?? 64;
  return flatKernel({
    family: 'gather',
    variant: `axis-wg${WG}`,
    title: `[${dims.join(', ')}] at ${count} ${idt} ids along axis ${axis}; out-of-range ids give zeros`,
    nodes: spec.nodes,
    dtypes: [spec.dtype],
    decls: [
      `@group(0) @binding(0) var<storage, read> x: array<${st}>;`,
      `@group(0) @binding(1) var<storage, read> ids: array<${storageType(idt)}>;`,
      `@group(0) @binding(2) var<storage, read_write> out: array<${st}>;`,
    ],
    bindings: [
      { name: 'x', access: 'read' },
      { name: 'ids', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    params,
    consts: [],
    total: se.product(outDims),
    totalGrid: se.totalGrid(outDims),
    body: [
      `  let inner = ${inner};`,
      `  let r = i % inner;`,
      `  let j = (i / inner) % ${countRef};`,
      `  let o = i / (inner * ${countRef});`,
      ...(idt !== 'u32' ? [...signedIdLines(idt, 'ids[j]'), `  if (id < 0) { id += i32(${axisLen}); } // negative ids count from the end`] : [`  let id = i32(min(ids[j], ${axisLen}));`]),
      `  if (id < 0 || id >= i32(${axisLen})) {`,
      `    out[i] = ${st}(0);`,
      `    return;`,
      `  }`,
      `  out[i] = x[(o * ${axisLen} + u32(id)) * inner + r];`,
    ],
    workgroupSize: WG,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// layout copies

/** Largest rank the copy kernels take (the number of coordinates an element's index is split into). */
const MAX_COPY_RANK = 8;

/** Shape bookkeeping shared by the copy kernels: WGSL expressions of dims, strides and coordinates. */
class ShapeExprs {
  constructor(
    readonly params: KernelParams,
    readonly what: string,
  ) {}
  /** Canonical dims, rank checked. */
  dims(shape: readonly DimLike[]): (number | string)[] {
    if (shape.length < 1 || shape.length > MAX_COPY_RANK) throw new ShapeError(this.what, `rank ${shape.length} is not in 1..${MAX_COPY_RANK}`);
    return shape.map((d, i) => KernelParams.canon(d, `dim ${i}`));
  }
  /** WGSL u32 expression of a product of dims (`1u` when empty). */
  product(dims: readonly (number | string)[]): string {
    const stat = dims.filter((d): d is number => typeof d === 'number').reduce((a, b) => a * b, 1);
    const dyn = dims.filter((d): d is string => typeof d === 'string').map((d) => this.params.ref(d));
    if (stat === 0) return '0u';
    return [...(stat !== 1 || dyn.length === 0 ? [`${stat}u`] : []), ...dyn].join(' * ');
  }
  /** Row-major strides of `dims` as WGSL expressions. */
  strides(dims: readonly (number | string)[]): string[] {
    return dims.map((_d, k) => this.product(dims.slice(k + 1)));
  }
  /** Grid expression of the element count. */
  totalGrid(dims: readonly (number | string)[]): GridExpr {
    if (dims.every((d) => typeof d === 'number')) return (dims as number[]).reduce((a, b) => a * b, 1);
    return { mul: dims.map((d) => this.params.grid(d)) };
  }
  /** WGSL u32 expression of one dim. */
  ref(d: number | string): string {
    return this.params.ref(d);
  }
  /** Statements computing `c0..c{r-1}` (coordinates of output element `i`) for dims given as WGSL expressions. */
  coords(dims: readonly string[]): string[] {
    const r = dims.length;
    const lines = ['  var rest = i;'];
    for (let k = r - 1; k >= 1; k--) lines.push(`  let c${k} = rest % (${dims[k]});`, `  rest = rest / (${dims[k]});`);
    lines.push('  let c0 = rest;');
    return lines;
  }
}

/** Options every layout-copy kernel takes. */
export interface CopySpec {
  /** Element type. */
  readonly dtype: DType;
  /** Lanes per workgroup (default 64). */
  readonly workgroupSize?: 64 | 128 | 256;
  /** The graph nodes implemented (printed form), for profiles and errors; never written into the WGSL. */
  readonly nodes?: readonly string[];
}

/**
 * A copy kernel with one input: bindings `x`, `out`; output element `i` (coordinates `c0..` over `outDims`) reads
 * `x[src]`. The family is the one `se` names in its errors; the variant is `copy-wg<size>`.
 */
function singleInputCopy(spec: CopySpec, se: ShapeExprs, title: string, outDims: readonly (number | string)[], src: string): KernelSource {
  const st = storageType(spec.dtype);
  const WG = spec.workgroupSize ?? 64;
  return flatKernel({
    family: se.what,
    variant: `copy-wg${WG}`,
    title,
    nodes: spec.nodes,
    dtypes: [spec.dtype],
    decls: [`@group(0) @binding(0) var<storage, read> x: array<${st}>;`, `@group(0) @binding(1) var<storage, read_write> out: array<${st}>;`],
    bindings: [
      { name: 'x', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    params: se.params,
    consts: [],
    total: se.product(outDims),
    totalGrid: se.totalGrid(outDims),
    body: [...se.coords(outDims.map((d) => se.ref(d))), `  out[i] = x[${src}];`],
    workgroupSize: WG,
  });
}

/** What {@link generateTransposeKernel} builds. */
export interface TransposeSpec extends CopySpec {
  /** Input shape (rank <= 8; dims static or dim expressions). */
  readonly shape: readonly DimLike[];
  /** Output axis k is input axis `perm[k]`. */
  readonly perm: readonly number[];
}

/**
 * Axis permutation: bindings `x`, `out`; params: the dynamic dims. Output shape `perm.map(p => shape[p])`.
 * @throws {@link ShapeError} when `perm` is not a permutation of the rank.
 */
export function generateTransposeKernel(spec: TransposeSpec): KernelSource {
  const params = new KernelParams();
  const se = new ShapeExprs(params, 'transpose');
  const inDims = se.dims(spec.shape);
  const r = inDims.length;
  const sorted = [...spec.perm].sort((a, b) => a - b);
  if (spec.perm.length !== r || sorted.some((p, i) => p !== i)) throw new ShapeError('transpose', `perm [${spec.perm}] is not a permutation of rank ${r}`);
  const outDims = spec.perm.map((p) => inDims[p]);
  const inStr = se.strides(inDims);
  const src = spec.perm.map((p, k) => `c${k} * (${inStr[p]})`).join(' + ');
  return singleInputCopy(spec, se, `[${inDims.join(', ')}] -> [${outDims.join(', ')}], perm [${spec.perm.join(', ')}]`, outDims, src);
}

/** What {@link generateSliceKernel} builds. */
export interface SliceSpec extends CopySpec {
  /** Input shape (rank <= 8). */
  readonly shape: readonly DimLike[];
  /** Start index on every axis (resolved: non-negative, in range; dim expressions allowed). */
  readonly starts: readonly DimLike[];
  /** Step on every axis (non-zero integers; default all 1). */
  readonly steps?: readonly number[];
  /** Output shape (the caller's resolved slice lengths; dim expressions allowed). */
  readonly outShape: readonly DimLike[];
}

/**
 * Strided slice: `out[c] = x[starts + c * steps]` per axis; bindings `x`, `out`; params: the dynamic dims and starts.
 * @throws {@link ShapeError} when the ranks disagree or a step is zero.
 */
export function generateSliceKernel(spec: SliceSpec): KernelSource {
  const params = new KernelParams();
  const se = new ShapeExprs(params, 'slice');
  const inDims = se.dims(spec.shape);
  const outDims = se.dims(spec.outShape);
  const r = inDims.length;
  const steps = spec.steps ?? inDims.map(() => 1);
  if (outDims.length !== r || spec.starts.length !== r || steps.length !== r) throw new ShapeError('slice', `shape, starts, steps and outShape need rank ${r}`);
  if (steps.some((s) => !Number.isInteger(s) || s === 0)) throw new ShapeError('slice', `steps must be non-zero integers, got [${steps}]`);
  const inStr = se.strides(inDims);
  const terms = spec.starts.map((s, k) => {
    const start = params.ref(s);
    const coord = steps[k] === 1 ? `${start} + c${k}` : `u32(i32(${start}) + i32(c${k}) * ${steps[k]})`;
    return `(${coord}) * (${inStr[k]})`;
  });
  const title = `[${inDims.join(', ')}] starts [${spec.starts.join(', ')}] steps [${steps.join(', ')}] -> [${outDims.join(', ')}]`;
  return singleInputCopy(spec, se, title, outDims, terms.join(' + '));
}

/** What {@link generateConcatKernel} builds. */
export interface ConcatSpec extends CopySpec {
  /** Shapes of the inputs (rank <= 8; equal except along `axis`). */
  readonly shapes: readonly (readonly DimLike[])[];
  /** Concatenation axis. */
  readonly axis: number;
}

/**
 * Concatenation along `axis` in one dispatch: bindings `in_0 .. in_{n-1}`, `out`; params: the dynamic dims. Each
 * output element finds its input by comparing its axis coordinate with the running offsets. The number of inputs is
 * bounded by the device's storage buffers per stage (8 by default: at most 7 inputs).
 * @throws {@link ShapeError} when shapes disagree off the axis; {@link InputError} for no inputs.
 */
export function generateConcatKernel(spec: ConcatSpec): KernelSource {
  if (spec.shapes.length === 0) throw new InputError('concat needs at least one input');
  const params = new KernelParams();
  const se = new ShapeExprs(params, 'concat');
  const shapes = spec.shapes.map((s) => se.dims(s));
  const r = shapes[0].length;
  const axis = spec.axis < 0 ? spec.axis + r : spec.axis;
  if (!Number.isInteger(axis) || axis < 0 || axis >= r) throw new ShapeError('concat', `axis ${spec.axis} is out of range for rank ${r}`);
  shapes.forEach((s) => {
    if (s.length !== r || s.some((d, k) => k !== axis && d !== shapes[0][k])) throw new ShapeError('concat', `shapes ${shapes.map((x) => `[${x}]`).join(', ')} differ outside axis ${axis}`);
  });
  const axisDims = shapes.map((s) => s[axis]);
  const n = shapes.length;
  // WGSL offset of input k along the axis, and the output's axis length (the sum of the inputs')
  const offset = (k: number): string => (k === 0 ? '0u' : axisDims.slice(0, k).map((d) => se.ref(d)).join(' + '));
  const staticAxis = axisDims.every((d) => typeof d === 'number') ? (axisDims as number[]).reduce((a, b) => a + b, 0) : undefined;
  const axisLen = staticAxis !== undefined ? `${staticAxis}u` : `(${offset(n)})`;
  const outExprs = shapes[0].map((d, k) => (k === axis ? axisLen : se.ref(d)));
  const st = storageType(spec.dtype);
  const WG = spec.workgroupSize ?? 64;
  const decls = shapes.map((s, k) => `@group(0) @binding(${k}) var<storage, read> in_${k}: array<${st}>; // [${s.join(', ')}]`);
  decls.push(`@group(0) @binding(${n}) var<storage, read_write> out: array<${st}>;`);
  const bindings: KernelBinding[] = shapes.map((_s, k) => ({ name: `in_${k}`, access: 'read' as const }));
  bindings.push({ name: 'out', access: 'read_write' });
  const body = se.coords(outExprs);
  shapes.forEach((sh, k) => {
    const str = se.strides(sh);
    const src = sh.map((_d, a) => (a === axis ? `(c${a} - (${offset(k)})) * (${str[a]})` : `c${a} * (${str[a]})`)).join(' + ');
    const guard = k === n - 1 ? '' : `if (c${axis} < ${offset(k + 1)}) `;
    body.push(`  ${guard}{ out[i] = in_${k}[${src}]; return; }`);
  });
  const others = shapes[0].filter((_d, k) => k !== axis);
  // grids cannot add dims: with a dynamic axis, cover n times the largest input (the bound check trims the rest)
  const totalGrid: GridExpr =
    staticAxis !== undefined ? se.totalGrid([...others, staticAxis]) : { mul: [n, { max: axisDims.map((d) => se.totalGrid([...others, d])) }] };
  return flatKernel({
    family: 'concat',
    variant: `copy-${n}-wg${WG}`,
    title: `${shapes.map((x) => `[${x.join(', ')}]`).join(' + ')} along axis ${axis}`,
    nodes: spec.nodes,
    dtypes: [spec.dtype],
    decls,
    bindings,
    params,
    consts: [],
    total: [se.product(others), axisLen].join(' * '),
    totalGrid,
    body,
    workgroupSize: WG,
  });
}
