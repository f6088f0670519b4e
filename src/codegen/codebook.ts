/**
 * Reading codebook (look-up table) weights in WGSL, shared by every kernel that decodes them in registers (the
 * codebook matmuls, the codebook embedding lookup). A {@link CodebookEncoding}'s payload parts are bound as storage
 * arrays — `indices` as `u32` words (the store packs indices little-endian in bytes, so with 1, 2, 4 or 8 index bits
 * word `w` holds indices `w·32/bits …` from the low bits up), `codebook` f32 (the tables, one after the other), then
 * `scales` f32 when the format has them — and an element's value is `table[index] * scale`, in f32.
 *
 * Where a kernel keeps the table: one table of at most 16 entries is copied into a private array by each invocation
 * (registers), one larger table into workgroup memory (256 entries: 1 KiB); several tables (one per block of rows)
 * are read from the storage buffer where they are.
 * @module
 */
import type { CodebookEncoding } from '../ir/weights.js';
import type { KernelBinding } from './kernel.js';

/** How a codebook weight is stored (the {@link CodebookEncoding} fields a kernel's text depends on). */
export interface CodebookWeightFormat {
  /** Bits per index (dividing 32). */
  readonly indexBits: 1 | 2 | 4 | 8;
  /** Consecutive elements (row-major) sharing one table. */
  readonly tableGroupSize: number;
  /** Number of tables. */
  readonly tables: number;
  /** Consecutive elements sharing one scale, or absent: no scales. */
  readonly scaleGroupSize?: number;
}

/** Index widths the kernels read (those dividing a `u32` word). */
export const CODEBOOK_INDEX_BITS: readonly number[] = [1, 2, 4, 8];

/** The format a kernel reads for a weight of `numel` elements stored with `e`, or `undefined` for index widths not dividing 32. */
export function codebookFormatOf(e: CodebookEncoding, numel: number): CodebookWeightFormat | undefined {
  if (!CODEBOOK_INDEX_BITS.includes(e.indexBits)) return undefined;
  return {
    indexBits: e.indexBits as 1 | 2 | 4 | 8,
    tableGroupSize: e.groupSize,
    tables: numel / e.groupSize,
    ...(e.scaleGroupSize !== undefined ? { scaleGroupSize: e.scaleGroupSize } : {}),
  };
}

/** Entries per table. */
export function tableSize(w: CodebookWeightFormat): number {
  return 1 << w.indexBits;
}

/** Where a kernel keeps the table(s) (see the module comment). */
export function tablePlacement(w: CodebookWeightFormat): 'private' | 'workgroup' | 'storage' {
  return w.tables > 1 ? 'storage' : tableSize(w) <= 16 ? 'private' : 'workgroup';
}

/** The format in a kernel variant name: `cb4-t1-g64` (index bits, tables, scale group or `-ns` for none). */
export function codebookFormatTag(w: CodebookWeightFormat): string {
  return `cb${w.indexBits}-t${w.tables}${w.tables > 1 ? `x${w.tableGroupSize}` : ''}${w.scaleGroupSize !== undefined ? `-g${w.scaleGroupSize}` : '-ns'}`;
}

/** The payload parts a kernel binds for format `w`, in binding order (names as in the weight entry's `data`). */
export function codebookParts(w: CodebookWeightFormat): string[] {
  return ['indices', 'codebook', ...(w.scaleGroupSize !== undefined ? ['scales'] : [])];
}

/** Appends the read-only bindings of the weight's parts ({@link codebookParts}) to `decls` and `list`, numbered on from `list`. */
export function addCodebookBindings(w: CodebookWeightFormat, decls: string[], list: KernelBinding[]): void {
  const comments: Record<string, string> = {
    indices: `W's ${w.indexBits}-bit table indices, little-endian in u32 words`,
    codebook: w.tables > 1 ? `${w.tables} tables of ${tableSize(w)} entries, one per ${w.tableGroupSize} elements` : `the table (${tableSize(w)} entries)`,
    scales: 'one scale per group',
  };
  for (const part of codebookParts(w)) {
    decls.push(`@group(0) @binding(${list.length}) var<storage, read> ${part}: array<${part === 'indices' ? 'u32' : 'f32'}>; // ${comments[part]}`);
    list.push({ name: part, access: 'read' });
  }
}

/** The WGSL constants the helpers read: `BITS`, `TABLE_SIZE`, and `TABLE_GROUP` / `SCALE_GROUP` when used. */
export function codebookConsts(w: CodebookWeightFormat): string[] {
  return [
    `const BITS: u32 = ${w.indexBits}u; // bits per table index`,
    `const TABLE_SIZE: u32 = ${tableSize(w)}u;`,
    ...(w.tables > 1 ? [`const TABLE_GROUP: u32 = ${w.tableGroupSize}u; // elements per table`] : []),
    ...(w.scaleGroupSize !== undefined ? [`const SCALE_GROUP: u32 = ${w.scaleGroupSize}u; // elements per scale`] : []),
  ];
}

/** Module-scope declaration of the table copy (`lut`), when the kernel keeps one (one table; none when read from storage). */
export function tableVars(w: CodebookWeightFormat): string[] {
  const p = tablePlacement(w);
  if (p === 'storage') return [];
  return [`var<${p}> lut: array<f32, ${tableSize(w)}>; // the table, copied ${p === 'private' ? 'by each invocation (registers)' : 'once per workgroup'}`];
}

/**
 * Lines at the top of `main` copying the table into `lut` (`li` the local invocation index, `wgSize` the workgroup
 * size expression); workgroup copies end with a barrier, so they must run in uniform control flow.
 */
export function tableLoadLines(w: CodebookWeightFormat, li: string, wgSize: string): string[] {
  switch (tablePlacement(w)) {
    case 'storage':
      return [];
    case 'private':
      return [`  for (var t = 0u; t < TABLE_SIZE; t++) { lut[t] = codebook[t]; }`];
    case 'workgroup':
      return [`  for (var t = ${li}; t < TABLE_SIZE; t += ${wgSize}) { lut[t] = codebook[t]; }`, `  workgroupBarrier();`];
  }
}

/** The WGSL expression of the first entry's position of element `e`'s table (`0u` with one table). */
export function tableBaseExpr(w: CodebookWeightFormat, e: string): string {
  return w.tables > 1 ? `(${e}) / TABLE_GROUP * TABLE_SIZE` : '0u';
}

/**
 * WGSL `book(base, i) -> f32` (entry `i` of the table starting at `base`) and `book_quad(word, t, base) -> vec4<f32>`
 * (the entries of indices `4t .. 4t+3` of a packed word); `quads` adds the second.
 */
export function bookFns(w: CodebookWeightFormat, quads: boolean): string[] {
  const src = tablePlacement(w) === 'storage' ? 'codebook' : 'lut';
  const lines = [`// entry i of the table at base`, `fn book(base: u32, i: u32) -> f32 {`, `  return ${src}[base + i];`, `}`];
  if (quads)
    lines.push(
      `// the entries of indices 4t .. 4t+3 of a packed word`,
      `fn book_quad(word: u32, t: u32, base: u32) -> vec4<f32> {`,
      `  let q = (vec4<u32>(word) >> (vec4<u32>(0u, BITS, 2u * BITS, 3u * BITS) + vec4<u32>(t * 4u * BITS))) & vec4<u32>(TABLE_SIZE - 1u);`,
      `  return vec4<f32>(book(base, q.x), book(base, q.y), book(base, q.z), book(base, q.w));`,
      `}`,
    );
  return lines;
}

/** The WGSL expression of the index of element `e` (an u32 expression): `extractBits` of its word. */
export function indexExpr(w: CodebookWeightFormat, e: string): string {
  const perWord = 32 / w.indexBits;
  return `extractBits(indices[(${e}) / ${perWord}u], ((${e}) % ${perWord}u) * BITS, BITS)`;
}

/** The text of the value formula for headers: `W = table[index] * scale per group of 64 (4-bit indices in u32 words; one table of 16)`. */
export function codebookValueText(w: CodebookWeightFormat): string {
  const tables = w.tables > 1 ? `${w.tables} tables of ${tableSize(w)}, one per ${w.tableGroupSize} elements` : `one table of ${tableSize(w)}`;
  return `W = table[index]${w.scaleGroupSize !== undefined ? ` * scale per group of ${w.scaleGroupSize}` : ''} (${w.indexBits}-bit indices in u32 words; ${tables})`;
}
