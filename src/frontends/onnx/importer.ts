/**
 * The ONNX importer: a `ModelProto` to an IR {@link Graph}.
 *
 * 1. Decode the protobuf (protobufjs, with the schema subset of `schema.ts`); a truncated or garbled file is a
 *    {@link ModelFormatError}.
 * 2. Order the nodes that the outputs need (dead nodes are ignored), checking that every input they read is produced
 *    once, by a node, an initializer or a graph input, and that there is no cycle.
 * 3. Declare the graph inputs: `dim_param`s become symbolic dims (names made identifiers), dynamic dims without a
 *    name fresh symbols.
 * 4. Convert node by node with the converters of `ops/`, folding eagerly (see `context.ts`). A node that cannot be
 *    converted is recorded and its outputs poisoned (nodes reading them are skipped), so the one
 *    {@link UnsupportedOpError} thrown at the end lists every unsupported node.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { InputError, ModelFormatError, ShapeError, UnsupportedOpError } from '../../errors.js';
import { sym, type Dim } from '../../ir/dim.js';
import type { DType } from '../../ir/dtype.js';
import { Graph, topoOrder, type GraphOutput } from '../../ir/graph.js';
import { makeNode, type Node } from '../../ir/node.js';
import { weightNode } from '../../ir/builder.js';
import { WeightStore, type WeightEntry } from '../../ir/weights.js';
import type { Tensor } from '../../runtime/cpu/tensor.js';
import { NodeUnsupported, OpContext, type ImportServices, type OnnxValue } from './context.js';
import { CONVERTERS, DOMAIN_CONVERTERS } from './ops/index.js';
import { decodeModelProto, type GraphMsg, type ModelMsg, type NodeMsg, type TensorMsg, type ValueInfoMsg } from './schema.js';
import { int64ToNumber, irDType, OnnxType, onnxTypeName, type TensorSource } from './tensor.js';

/** A graph input or output as the model declares it. */
export interface OnnxValueInfo {
  /** Name in the model (and in the graph). */
  readonly name: string;
  /** ONNX element type name (`FLOAT`, `INT64`, …). */
  readonly onnxType: string;
  /** The IR dtype it is held in. */
  readonly dtype: DType;
  /** IR shape (inputs: as declared, symbolic dims for `dim_param`s; outputs: as inferred). */
  readonly shape: readonly Dim[];
}

/** What {@link importOnnx} returns. */
export interface OnnxModel {
  /** The graph. */
  readonly graph: Graph;
  /** Default-domain opset the model imports. */
  readonly opset: number;
  /** The model's IR version. */
  readonly irVersion: number;
  /** `producer_name` (and version, when given). */
  readonly producer: string;
  /** Graph inputs, in order (initializers and {@link ImportOnnxOptions.shapeInputs} excluded). */
  readonly inputs: readonly OnnxValueInfo[];
  /** The inputs that were given as shape inputs (now constants). */
  readonly shapeInputs: readonly string[];
  /** Graph outputs, in order. */
  readonly outputs: readonly OnnxValueInfo[];
}

/** Options of {@link importOnnx}. */
export interface ImportOnnxOptions {
  /** The file the bytes came from (for messages). */
  file?: string;
  /** The model's directory, where external data is read from (and confined to). */
  dir?: string;
  /**
   * Values for graph inputs that shape operands are computed from (a `Reshape`'s target shape, `Slice` bounds, reduce
   * axes fed as inputs): like TensorRT's shape tensors, they must be known when the graph is built. They become
   * constants and are no longer inputs of the graph. {@link ShapeInputsRequiredError} names the inputs a model needs.
   */
  shapeInputs?: Readonly<Record<string, Tensor>>;
}

/**
 * The model computes shapes from graph inputs: they must be given as {@link ImportOnnxOptions.shapeInputs}. Also an
 * {@link UnsupportedOpError} listing every node that could not be imported.
 */
export class ShapeInputsRequiredError extends UnsupportedOpError {
  /** The graph inputs shape operands are computed from. */
  readonly inputs: readonly string[];
  constructor(ops: readonly string[], inputs: readonly string[], message: string) {
    super(ops, message);
    this.inputs = inputs;
  }
}

/**
 * The lowest and highest default-domain opsets the importer accepts: 10 (the first with the input forms of `Slice`
 * and the quantization ops) to 25 (ONNX 1.22's newest; later versions may change an op's meaning).
 */
export const ONNX_OPSET_RANGE: readonly [number, number] = [10, 25];

/**
 * Whether `bytes` look like a serialized ONNX `ModelProto`: the first field is `ir_version` (field 1, varint) with a
 * plausible value, or one of the model's other top-level fields.
 * @internal
 */
export function looksLikeOnnx(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  // field 1 (ir_version) varint, a plausible version, then another ModelProto field: producer_name (2),
  // producer_version (3), domain (4), model_version (5), doc_string (6), graph (7), opset_import (8)
  if (bytes[0] === 0x08 && bytes[1] >= 1 && bytes[1] <= 20) return [0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42].includes(bytes[2]);
  // writers that put another field first
  return (bytes[0] === 0x12 || bytes[0] === 0x3a || bytes[0] === 0x42) && bytes.length > 16 && hasModelFields(bytes);
}

function hasModelFields(bytes: Uint8Array): boolean {
  try {
    const m = decodeModelProto(bytes);
    return !!m.graph && m.opsetImport.length > 0;
  } catch {
    return false;
  }
}

/** The names of a model's graph inputs that are not initializers, in order (what test data sets' `input_N.pb` feed). */
export function onnxInputNames(bytes: Uint8Array, file?: string): string[] {
  const g = decode(bytes, file).graph;
  if (!g) throw new ModelFormatError('ModelProto.graph', 0, 'the model has no graph', file);
  const inits = new Set(g.initializer.map((t) => t.name));
  return g.input.filter((vi) => !inits.has(vi.name)).map((vi) => vi.name);
}

/** Reads and imports an ONNX model file (external data is resolved relative to its directory). */
export async function readOnnx(path: string, opts: Pick<ImportOnnxOptions, 'shapeInputs'> = {}): Promise<OnnxModel> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch {
    throw new InputError(`model file ${path} does not exist or cannot be read`);
  }
  return importOnnx(bytes, { ...opts, file: path, dir: dirname(path) });
}

/** A name usable as a symbolic dim: non-identifier characters become `_`. */
function identifier(name: string): string {
  const s = name.replace(/[^A-Za-z0-9_]/g, '_');
  return /^[A-Za-z_]/.test(s) ? s : `_${s}`;
}

/** Decodes the protobuf, turning protobufjs's errors into a {@link ModelFormatError} with the byte offset. */
function decode(bytes: Uint8Array, file: string | undefined): ModelMsg {
  try {
    return decodeModelProto(bytes);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const m = /index out of range: (\d+)/.exec(msg);
    const offset = m ? Number(m[1]) : 0;
    throw new ModelFormatError('ModelProto', offset, `not a valid ONNX protobuf (${msg})`, file);
  }
}

/**
 * Imports a serialized ONNX model. Throws {@link ModelFormatError} for a malformed file (bad protobuf, tensors whose
 * bytes disagree with their dims, missing inputs, cycles, external data escaping `dir`), {@link UnsupportedOpError}
 * listing every unsupported node (op, name and reason), never a crash.
 */
export function importOnnx(bytes: Uint8Array, opts: ImportOnnxOptions = {}): OnnxModel {
  const file = opts.file;
  const model = decode(bytes, file);
  const g = model.graph;
  if (!g) throw new ModelFormatError('ModelProto.graph', 0, 'the model has no graph', file);
  const opsetEntry = model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  const opset = opsetEntry ? int64ToNumber(opsetEntry.version) ?? 0 : 0;
  if (!opsetEntry) throw new ModelFormatError('ModelProto.opset_import', 0, 'the model imports no default-domain opset', file);
  if (opset < ONNX_OPSET_RANGE[0] || opset > ONNX_OPSET_RANGE[1])
    throw new UnsupportedOpError([`opset ${opset}`], `default-domain opset ${opset} is outside the supported range ${ONNX_OPSET_RANGE[0]}..${ONNX_OPSET_RANGE[1]}`);
  if (g.sparseInitializer.length) throw new UnsupportedOpError(['sparse_initializer'], 'sparse initializers are not supported');
  const source: TensorSource = { file, dir: opts.dir, fileBytes: bytes, what: '' };
  const imported = new GraphImport(g, opset, source, file, opts.shapeInputs ?? {});
  const graph = imported.run();
  const producer = [model.producerName, model.producerVersion].filter(Boolean).join(' ');
  return {
    graph,
    opset,
    irVersion: int64ToNumber(model.irVersion) ?? 0,
    producer,
    inputs: imported.inputInfo,
    shapeInputs: imported.specialized,
    outputs: graph.outputs.map((o, i) => ({
      name: o.name,
      onnxType: onnxTypeName(imported.outputTypes[i]),
      dtype: o.node.dtype,
      shape: o.node.shape,
    })),
  };
}

/** The state of one graph import. */
class GraphImport {
  private readonly g: GraphMsg;
  private readonly opset: number;
  private readonly source: TensorSource;
  private readonly file: string | undefined;
  private readonly values = new Map<string, OnnxValue>();
  private readonly initializers = new Map<string, TensorMsg>();
  private readonly weights = new WeightStore();
  private readonly inputNodes: Node[] = [];
  private readonly poisoned = new Set<string>();
  private readonly problems: { op: string; text: string; shapeInputs?: readonly string[] }[] = [];
  private readonly shapeInputs: Readonly<Record<string, Tensor>>;
  /** Inputs given as shape inputs. */
  readonly specialized: string[] = [];
  private readonly symbols = new Map<string, string>();
  private readonly usedSymbols = new Set<string>();
  /** The node producing each value (the last one, when several do). */
  private readonly producer = new Map<string, number>();
  /** Declared inputs. */
  readonly inputInfo: OnnxValueInfo[] = [];
  /** ONNX element types of the outputs. */
  readonly outputTypes: number[] = [];

  constructor(g: GraphMsg, opset: number, source: TensorSource, file: string | undefined, shapeInputs: Readonly<Record<string, Tensor>>) {
    this.shapeInputs = shapeInputs;
    this.g = g;
    this.opset = opset;
    this.source = source;
    this.file = file;
  }

  private malformed(field: string, message: string): ModelFormatError {
    return new ModelFormatError(field, 0, message, this.file);
  }

  private services(): ImportServices {
    return {
      opset: this.opset,
      source: this.source,
      addWeight: (entry: WeightEntry) => {
        this.weights.add(entry);
        return weightNode(entry);
      },
      weight: (id: string) => this.weights.get(id),
    };
  }

  run(): Graph {
    for (const t of this.g.initializer) {
      if (!t.name) throw this.malformed('initializer', 'an initializer has no name');
      if (this.initializers.has(t.name)) throw this.malformed(`initializer '${t.name}'`, 'is declared twice');
      this.initializers.set(t.name, t);
    }
    for (const vi of this.g.input) if (!this.initializers.has(vi.name)) this.declareInput(vi);
    const order = this.liveNodes();
    const services = this.services();
    for (const [node, index] of order) this.convert(node, index, services);
    const outputs: GraphOutput[] = [];
    for (const vi of this.g.output) {
      if (this.poisoned.has(vi.name)) continue;
      const v = this.lookup(vi.name, `graph output '${vi.name}'`);
      if (!v.node) throw this.malformed(`output '${vi.name}'`, 'holds int64 values outside the int32 range');
      outputs.push({ name: vi.name, node: v.node });
      this.outputTypes.push(v.type);
    }
    if (this.problems.length) {
      const ops = [...new Set(this.problems.map((p) => p.op))];
      const message = `unsupported ONNX model: ${this.problems.length} node${this.problems.length === 1 ? '' : 's'} cannot be imported:\n${this.problems.map((p) => `  - ${p.text}`).join('\n')}`;
      const shapeInputs = [...new Set(this.problems.flatMap((p) => p.shapeInputs ?? []))];
      throw shapeInputs.length ? new ShapeInputsRequiredError(ops, shapeInputs, message) : new UnsupportedOpError(ops, message);
    }
    // only the weights the graph uses (an integer initializer that DequantizeLinear re-encoded is not among them)
    const used = topoOrder(outputs.map((o) => o.node)).filter((n) => n.op === 'weight').map((n) => String(n.attrs.id));
    return new Graph(this.inputNodes, outputs, this.weights.only(used), { format: 'onnx', graphName: this.g.name });
  }

  /** A symbol for a `dim_param` (same name, same symbol) or for an unnamed dynamic dim (fresh). */
  private symbolFor(param: string | undefined, fallback: string): Dim {
    if (param !== undefined) {
      let s = this.symbols.get(param);
      if (!s) {
        s = this.fresh(identifier(param));
        this.symbols.set(param, s);
      }
      return sym(s);
    }
    return sym(this.fresh(identifier(fallback)));
  }

  private fresh(base: string): string {
    let s = base;
    for (let i = 2; this.usedSymbols.has(s); i++) s = `${base}_${i}`;
    this.usedSymbols.add(s);
    return s;
  }

  private declareInput(vi: ValueInfoMsg): void {
    const tt = vi.type?.tensorType;
    if (!tt) {
      this.problems.push({ op: 'input', text: `input '${vi.name}' is not a tensor (${vi.type?.value ?? 'no type'})` });
      this.poisoned.add(vi.name);
      return;
    }
    // INT64 data from outside is held exactly (i64); constants that fit int32 (shapes) stay i32
    const dtype = tt.elemType === OnnxType.INT64 ? 'i64' : irDType(tt.elemType);
    if (!dtype) {
      this.problems.push({ op: `dtype ${onnxTypeName(tt.elemType)}`, text: `input '${vi.name}' has element type ${onnxTypeName(tt.elemType)}, which tensorwright does not support` });
      this.poisoned.add(vi.name);
      return;
    }
    if (!tt.shape) {
      this.problems.push({ op: 'input', text: `input '${vi.name}' has no shape (unknown rank is unsupported)` });
      this.poisoned.add(vi.name);
      return;
    }
    const shape = tt.shape.dim.map((d, i): Dim => {
      // `value` names the member of the oneof that is set (protobufjs fills absent fields with defaults)
      if (d.value === 'dimValue') {
        const n = int64ToNumber(d.dimValue!);
        if (n === undefined || n < 0) throw this.malformed(`input '${vi.name}'`, `dim ${i} is not a size`);
        return n;
      }
      return this.symbolFor(d.value === 'dimParam' && d.dimParam ? d.dimParam : undefined, `${vi.name}_dim${i}`);
    });
    const given = Object.prototype.hasOwnProperty.call(this.shapeInputs, vi.name) ? this.shapeInputs[vi.name] : undefined;
    if (given) {
      // a shape input: a constant of the value given, which must fit the declaration
      const fits = (given.dtype === dtype || (dtype === 'i64' && given.dtype === 'i32')) && given.shape.length === shape.length && shape.every((d, i) => typeof d !== 'number' || d === given.shape[i]);
      if (!fits) throw new InputError(`shape input '${vi.name}' must be ${onnxTypeName(tt.elemType)}[${shape.join(', ')}], got ${given.dtype}[${given.shape.join(', ')}]`);
      const ctx = new OpContext({ input: [], output: [], name: vi.name, opType: 'input', domain: '', attribute: [] }, `input '${vi.name}'`, [], this.services());
      this.values.set(vi.name, { node: ctx.fromHost(given, vi.name), type: tt.elemType });
      this.specialized.push(vi.name);
      return;
    }
    const node = makeNode('input', [], { name: vi.name, dtype, shape });
    this.inputNodes.push(node);
    this.values.set(vi.name, { node, type: tt.elemType });
    this.inputInfo.push({ name: vi.name, onnxType: onnxTypeName(tt.elemType), dtype, shape });
  }

  /** A value by name: computed, declared, or an initializer (decoded on first use). */
  private lookup(name: string, what: string): OnnxValue {
    const v = this.values.get(name);
    if (v) return v;
    const t = this.initializers.get(name);
    if (!t) throw this.malformed(what, `reads '${name}', which no node, initializer or graph input produces`);
    const ctx = new OpContext({ input: [], output: [], name, opType: 'initializer', domain: '', attribute: [] }, `initializer '${name}'`, [], this.services());
    const value = ctx.tensorValue(t, `initializer '${name}'`, name);
    this.values.set(name, value);
    return value;
  }

  /**
   * The nodes the outputs depend on, in a topological order (the file's order need not be one); checks producers and
   * cycles. A value produced by more than one node (tools that shrink a model append new `Constant`s reusing names) is
   * the last producer's, as onnxruntime resolves it.
   */
  private liveNodes(): [NodeMsg, number][] {
    const nodes = this.g.node;
    const producer = this.producer;
    nodes.forEach((n, i) => {
      for (const o of n.output) {
        if (!o) continue;
        if (this.initializers.has(o) || this.values.has(o)) throw this.malformed(`node ${labelOf(n, i)}`, `output '${o}' is also an initializer or graph input`);
        producer.set(o, i);
      }
    });
    const known = (name: string): boolean => this.values.has(name) || this.initializers.has(name) || this.poisoned.has(name);
    const deps = (i: number): number[] => {
      const out: number[] = [];
      for (const inp of nodes[i].input) {
        if (!inp) continue;
        const p = producer.get(inp);
        if (p !== undefined) out.push(p);
        else if (!known(inp)) throw this.malformed(`node ${labelOf(nodes[i], i)}`, `reads '${inp}', which no node, initializer or graph input produces`);
      }
      return out;
    };
    // mark what the outputs need (iteratively)
    const live = new Set<number>();
    const stack: number[] = [];
    for (const vi of this.g.output) {
      const p = producer.get(vi.name);
      if (p !== undefined) stack.push(p);
      else if (!known(vi.name)) throw this.malformed(`output '${vi.name}'`, 'is produced by no node, initializer or graph input');
    }
    const depsOf = new Map<number, number[]>();
    while (stack.length) {
      const i = stack.pop()!;
      if (live.has(i)) continue;
      live.add(i);
      const d = deps(i);
      depsOf.set(i, d);
      stack.push(...d);
    }
    // Kahn's algorithm over the live nodes, in file order among the ready ones
    const pending = new Map<number, number>();
    const users = new Map<number, number[]>();
    for (const i of live) {
      const unique = new Set(depsOf.get(i));
      pending.set(i, unique.size);
      for (const p of unique) {
        let l = users.get(p);
        if (!l) users.set(p, (l = []));
        l.push(i);
      }
    }
    const ready = [...live].filter((i) => pending.get(i) === 0).sort((a, b) => b - a);
    const order: [NodeMsg, number][] = [];
    while (ready.length) {
      const i = ready.pop()!;
      order.push([nodes[i], i]);
      for (const u of users.get(i) ?? []) {
        const left = pending.get(u)! - 1;
        pending.set(u, left);
        if (left === 0) ready.push(u);
      }
    }
    if (order.length !== live.size) {
      const stuck = [...live].filter((i) => pending.get(i)! > 0).slice(0, 5);
      throw this.malformed('graph', `has a cycle through nodes ${stuck.map((i) => labelOf(nodes[i], i)).join(', ')}`);
    }
    return order;
  }

  private convert(node: NodeMsg, index: number, services: ImportServices): void {
    const label = labelOf(node, index);
    const poison = (): void => {
      for (const o of node.output) if (o && this.producer.get(o) === index) this.poisoned.add(o);
    };
    if (node.input.some((i) => i && this.poisoned.has(i))) return poison();
    const record = (text: string, shapeInputs?: readonly string[]): void => {
      this.problems.push({ op: node.opType, text: `${label}: ${text}`, shapeInputs });
      poison();
    };
    const defaultDomain = node.domain === '' || node.domain === 'ai.onnx';
    const table = defaultDomain ? CONVERTERS : Object.prototype.hasOwnProperty.call(DOMAIN_CONVERTERS, node.domain) ? DOMAIN_CONVERTERS[node.domain] : undefined;
    if (!table) return record(`domain '${node.domain}' is not supported`);
    const converter = Object.prototype.hasOwnProperty.call(table, node.opType) ? table[node.opType] : undefined;
    if (!converter) return record(defaultDomain ? 'no converter for this op' : `no converter for this op in domain '${node.domain}'`);
    try {
      const inputs = node.input.map((name) => (name ? this.lookup(name, `node ${label}`) : undefined));
      const ctx = new OpContext(node, label, inputs, services);
      const outs = converter(ctx);
      node.output.forEach((name, i) => {
        if (!name) return;
        const v = outs[i];
        if (this.producer.get(name) !== index) return; // a name another node produces again
        if (!v) throw new NodeUnsupported(`output ${i} ('${name}') is not supported`);
        this.values.set(name, v);
      });
    } catch (e) {
      if (e instanceof NodeUnsupported) return record(e.message, e.shapeInputs);
      if (e instanceof ShapeError) return record(e.message);
      if (e instanceof UnsupportedOpError) return record(e.message);
      throw e;
    }
  }
}

/** How messages name a node: `Reshape 'name'` (or `Reshape #index` when it has no name). */
function labelOf(n: NodeMsg, index: number): string {
  return n.name ? `${n.opType} '${n.name}'` : `${n.opType} #${index}`;
}
