/**
 * Workgroup-level building blocks shared by kernel families: {@link workgroupReduction} (a deterministic
 * workgroup-wide f32 sum/max, used by norms, softmax and sampling) and {@link RowKernel}, the scaffolding of kernels
 * that run one workgroup per row of a `[rows, cols]` view (norms, softmax).
 * @module
 */
import { InputError } from '../errors.js';
import { KernelParams, splitGrid, type DimLike, type KernelBinding, type KernelSource } from './kernel.js';
import { enableDirectives, kernelFeatures, type KernelFeature } from './wgsl.js';

/** Options of {@link workgroupReduction}. */
export interface WorkgroupReductionOptions {
  /** Workgroup size (a power of two). */
  readonly workgroupSize: number;
  /** Use `subgroupAdd`/`subgroupMax` (needs the `subgroups` feature). */
  readonly subgroups: boolean;
  /**
   * Constant trip count for the tree loop (default true; GPU compilers unroll it). `false` hides it from the compiler,
   * so each inlined reduction stays one loop: LLVM-based software rasterizers (lavapipe) compile kernels with many
   * reductions several times faster.
   */
  readonly staticLoops?: boolean;
  /** Name of the kernel's own `@builtin(num_workgroups)` parameter, if it has one (a builtin may appear only once). */
  readonly numWorkgroups?: string;
  /**
   * The device's fixed subgroup size, when it has one. A workgroup of exactly that size is one subgroup, so with
   * `subgroups` its reductions are one `subgroupAdd`/`subgroupMax` each: no workgroup memory and no barrier (on
   * software rasterizers a barrier switches between the workgroup's subgroups, which costs more than a small row's
   * arithmetic).
   */
  readonly fixedSubgroupSize?: number;
}

/** WGSL pieces of a workgroup reduction: declarations, functions, entry-point builtins, prologue, call syntax. */
export interface WorkgroupReduction {
  /** Whether the kernel needs `enable subgroups;`. */
  readonly subgroups: boolean;
  /** Module-scope declarations and the `reduce_sum`/`reduce_max` functions. */
  readonly module: string;
  /** Extra entry-point parameters (leading comma included, or empty); the kernel must not declare them itself. */
  readonly entryParams: string;
  /** Statements to run at the start of `main`, in uniform control flow. */
  readonly prologue: string;
  /** The call reducing `value` (an f32 expression); returns a workgroup-uniform f32. Must run in uniform control flow. */
  call(op: 'sum' | 'max', value: string): string;
}

/**
 * A deterministic workgroup-wide f32 sum or max whose result is uniform (safe to branch on). Without subgroups: a
 * shared-memory tree. With subgroups: `subgroupAdd`/`subgroupMax`, then one partial per subgroup combined in a fixed
 * order; because WGSL does not promise that subgroups are consecutive ranges of `local_invocation_index`, the
 * prologue checks that they are (every subgroup full and aligned) and the kernel falls back to the tree otherwise.
 * Callers pass `lid` (the local invocation index) in scope.
 */
export function workgroupReduction(o: WorkgroupReductionOptions): WorkgroupReduction {
  const WG = o.workgroupSize;
  const hidden = o.staticLoops === false;
  const extra = hidden ? ', red_half: u32' : '';
  if (!Number.isInteger(WG) || WG < 1 || (WG & (WG - 1)) !== 0) throw new InputError(`workgroup reductions need a power-of-two workgroup size, got ${WG}`);
  if (o.subgroups && o.fixedSubgroupSize === WG) return singleSubgroupReduction(WG);
  const fn = (op: 'sum' | 'max'): string => {
    const comb = (a: string, b: string): string => (op === 'sum' ? `${a} + ${b}` : `max(${a}, ${b})`);
    const sg = o.subgroups
      ? [
          '  if (sg_linear) {',
          `    let part = ${op === 'sum' ? 'subgroupAdd' : 'subgroupMax'}(v);`,
          '    if (sg_lane == 0u) { red_buf[lid / sg_size] = part; }',
          '    workgroupBarrier();',
          '    if (lid == 0u) {',
          '      var acc = red_buf[0];',
          `      for (var k = 1u; k < REDUCE_SIZE / sg_size; k++) { acc = ${comb('acc', 'red_buf[k]')}; }`,
          '      red_result = acc;',
          '    }',
          '    return workgroupUniformLoad(&red_result);',
          '  }',
        ]
      : [];
    return [
      `fn reduce_${op}(v: f32, lid: u32${o.subgroups ? ', sg_linear: bool' : ''}${extra}) -> f32 {`,
      ...sg,
      '  red_buf[lid] = v;',
      '  workgroupBarrier();',
      `  for (var stride = ${hidden ? 'red_half' : 'REDUCE_SIZE / 2u'}; stride > 0u; stride >>= 1u) {`,
      `    if (lid < stride) { red_buf[lid] = ${comb('red_buf[lid]', 'red_buf[lid + stride]')}; }`,
      '    workgroupBarrier();',
      '  }',
      '  if (lid == 0u) { red_result = red_buf[0]; }',
      '  return workgroupUniformLoad(&red_result);',
      '}',
    ].join('\n');
  };
  const module = [
    `const REDUCE_SIZE: u32 = ${WG}u; // lanes taking part in reductions (the workgroup)`,
    `var<workgroup> red_buf: array<f32, ${WG}>; // reduction scratch`,
    'var<workgroup> red_result: f32; // reduction result, read back uniformly',
    ...(o.subgroups
      ? [
          'var<workgroup> red_nonlinear: atomic<u32>; // set when some subgroup is not an aligned range of lanes',
          'var<workgroup> red_flag: u32;',
          'var<private> sg_lane: u32;',
          'var<private> sg_size: u32;',
        ]
      : []),
    fn('sum'),
    fn('max'),
  ].join('\n');
  const prologue = [
    ...(hidden ? [`  let red_half = min(REDUCE_SIZE / 2u, ${o.numWorkgroups ?? 'red_nwg'}.x | REDUCE_SIZE); // == REDUCE_SIZE / 2, not foldable`] : []),
    ...(o.subgroups
      ? [
          '  sg_lane = sg_lane_in;',
          '  sg_size = sg_size_in;',
          '  // subgroup reductions assume aligned ranges of lanes per subgroup; otherwise use the shared-memory tree',
          '  let sg_first = subgroupMin(lid);',
          '  let sg_last = subgroupMax(lid);',
          '  if (sg_first % sg_size_in != 0u || sg_last - sg_first != sg_size_in - 1u) { atomicOr(&red_nonlinear, 1u); }',
          '  workgroupBarrier();',
          '  if (lid == 0u) { red_flag = atomicLoad(&red_nonlinear); }',
          '  let sg_linear = workgroupUniformLoad(&red_flag) == 0u;',
        ]
      : []),
  ].join('\n');
  return {
    subgroups: o.subgroups,
    module,
    entryParams:
      (o.subgroups ? ', @builtin(subgroup_invocation_id) sg_lane_in: u32, @builtin(subgroup_size) sg_size_in: u32' : '') +
      (hidden && !o.numWorkgroups ? ', @builtin(num_workgroups) red_nwg: vec3<u32>' : ''),
    prologue,
    call: (op, value) => `reduce_${op}(${value}, lid${o.subgroups ? ', sg_linear' : ''}${hidden ? ', red_half' : ''})`,
  };
}

/** The reduction of a workgroup that is one subgroup (see {@link WorkgroupReductionOptions.fixedSubgroupSize}). */
function singleSubgroupReduction(WG: number): WorkgroupReduction {
  return {
    subgroups: true,
    module: [
      `const REDUCE_SIZE: u32 = ${WG}u; // lanes taking part in reductions: the workgroup, which is one subgroup`,
      'fn reduce_sum(v: f32) -> f32 { return subgroupAdd(v); }',
      'fn reduce_max(v: f32) -> f32 { return subgroupMax(v); }',
    ].join('\n'),
    entryParams: '',
    prologue: '',
    call: (op, value) => `reduce_${op}(${value})`,
  };
}

/** Options shared by kernels that run one workgroup per row of a `[rows, cols]` view. */
export interface RowKernelOptions {
  /** Number of rows (product of the leading dims); default `'rows'`. */
  readonly rows?: DimLike;
  /**
   * Lanes per workgroup, a power of two (default: 64 when `cols` is static and <= 256, else 256; or the device's fixed
   * subgroup size when {@link RowKernelOptions.fixedSubgroupSize} is given).
   */
  readonly workgroupSize?: number;
  /**
   * The device's fixed subgroup size (with `subgroups`): the default workgroup is then one subgroup, and the row's
   * reductions need no barrier (see {@link WorkgroupReductionOptions.fixedSubgroupSize}).
   */
  readonly fixedSubgroupSize?: number;
  /** Reduce with subgroup operations (device `subgroups` feature). */
  readonly subgroups?: boolean;
  /** Constant reduction trip counts (default true); `false` compiles faster on lavapipe (see {@link WorkgroupReductionOptions}). */
  readonly staticLoops?: boolean;
  /** The graph nodes implemented (printed form), for {@link KernelSource.nodes} (never in the WGSL). */
  readonly nodes?: readonly string[];
}

/**
 * Scaffolding of a kernel that runs one workgroup per row: the workgroup size, its {@link workgroupReduction}, the
 * params uniform (the row count comes first when dynamic), the entry point that finds `row`, and the finished
 * {@link KernelSource} on a {@link splitGrid} over the rows. The kernel declares `const WORKGROUP_SIZE`.
 */
export class RowKernel {
  /** Lanes per workgroup. */
  readonly workgroupSize: number;
  /** The workgroup reduction (entry point builtins named `nwg` and `lid`). */
  readonly red: WorkgroupReduction;
  /** The params uniform. */
  readonly params = new KernelParams();
  /** The row count. */
  readonly rows: DimLike;
  /** WGSL `u32` expression of the row count. */
  readonly rowsRef: string;
  /** The graph nodes implemented. */
  readonly nodes: readonly string[];
  /** The features the kernel needs (set by {@link RowKernel.header}). */
  private features: KernelFeature[] = [];

  /** Scaffolding for rows of `cols` values (a number, or a canonical dim expression when dynamic). */
  constructor(o: RowKernelOptions, cols: number | string) {
    const oneSubgroup = o.subgroups && o.fixedSubgroupSize !== undefined ? o.fixedSubgroupSize : undefined;
    this.workgroupSize = o.workgroupSize ?? oneSubgroup ?? (typeof cols === 'number' && cols <= 256 ? 64 : 256);
    this.red = workgroupReduction({ workgroupSize: this.workgroupSize, subgroups: o.subgroups ?? false, staticLoops: o.staticLoops, numWorkgroups: 'nwg', fixedSubgroupSize: o.fixedSubgroupSize });
    this.rows = o.rows ?? 'rows';
    this.rowsRef = this.params.ref(this.rows);
    this.nodes = o.nodes ?? [];
  }

  /**
   * The `enable` directives (`f16` when the kernel stores or reads f16, `subgroups` for subgroup reductions), then the
   * title comment (`family (rows=…, cols=…, details)`). Records the features for {@link RowKernel.source}.
   */
  header(family: string, cols: number | string, details: string, f16 = false): string[] {
    const sg = this.red.subgroups;
    this.features = kernelFeatures({ f16, subgroups: sg });
    return [
      ...enableDirectives(this.features),
      `// tensorwright kernel: ${family} (rows=${this.rows}, cols=${cols}, ${details}${sg ? ', subgroup reductions' : ''})`,
    ];
  }

  /** The entry point's opening lines: `main` with the reduction's builtins and prologue, `row`, and the bound check. */
  entry(): string[] {
    return [
      '@compute @workgroup_size(WORKGROUP_SIZE)',
      `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32${this.red.entryParams}) {`,
      ...(this.red.prologue ? [this.red.prologue] : []),
      '  let row = wid.y * nwg.x + wid.x;',
      `  if (row >= ${this.rowsRef}) { return; }`,
    ];
  }

  /** The kernel source of `wgsl` (variant `row-wg<size>[-subgroup]`, one workgroup per row). */
  source(family: string, wgsl: string, bindings: KernelBinding[]): KernelSource {
    return {
      family,
      variant: `row-wg${this.workgroupSize}${this.red.subgroups ? '-subgroup' : ''}`,
      wgsl,
      bindings,
      params: [...this.params.list],
      grid: splitGrid(this.params.grid(this.rows)),
      nodes: [...this.nodes],
      features: [...this.features],
    };
  }
}
