/**
 * `quantization_config` of a Hugging Face `config.json` in the compressed-tensors layout, for INT8 W8A8
 * (`quant_method: "compressed-tensors"`, `format: "int-quantized"`): one config group whose `weights` are 8-bit int,
 * symmetric, per output channel (`strategy: "channel"`, static) and whose `input_activations` are 8-bit int,
 * symmetric, per tensor and static (`strategy: "tensor"`, `dynamic: false`, scale from `*.input_scale`) or per token and
 * dynamic (`strategy: "token"`, `dynamic: true`). Matmul weights are `*.weight` (I8), `*.weight_scale` (`[out, 1]`)
 * and `*.input_scale` (`[1]`); see `src/cli/w8a8-file.ts` for the writer. A malformed field raises
 * {@link ModelFormatError} naming it; a well-formed scheme tensorwright does not run raises
 * {@link UnsupportedModelError} naming it.
 * @module
 */
import { ModelFormatError } from '../../errors.js';
import type { HfConfigJson } from './config.js';
import { UnsupportedModelError } from './errors.js';

/** The W8A8 scheme a `quantization_config` declares. */
export interface HfW8A8Scheme {
  /** Activation scales: one static scale per tensor (`input_scale`) or a dynamic one per token. */
  readonly activations: 'static' | 'per-token';
  /** Module names left unquantized (`ignore`, e.g. `lm_head`). */
  readonly ignore: readonly string[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The W8A8 scheme of `json.quantization_config`, or `undefined` when the config has none.
 * @throws ModelFormatError for a malformed field (named as `quantization_config.…`); UnsupportedModelError for a
 *   quantization method, format or argument other than INT8 W8A8 as described in the module comment.
 */
export function hfW8A8Scheme(json: HfConfigJson, file?: string): HfW8A8Scheme | undefined {
  const qc = json.quantization_config;
  if (qc === undefined || qc === null) return undefined;
  const K = 'quantization_config';
  const bad = (field: string, msg: string): never => {
    throw new ModelFormatError(`${K}${field ? `.${field}` : ''}`, 0, msg, file);
  };
  const unsupported = (field: string, msg: string): never => {
    throw new UnsupportedModelError(`${K}.${field}`, msg, file);
  };
  if (!isObject(qc)) return bad('', `must be an object, got ${JSON.stringify(qc)}`);
  if (typeof qc.quant_method !== 'string') bad('quant_method', `must be a string, got ${JSON.stringify(qc.quant_method)}`);
  if (qc.quant_method !== 'compressed-tensors') unsupported('quant_method', `'${qc.quant_method}' is not read (only compressed-tensors INT8 W8A8)`);
  if (typeof qc.format !== 'string') bad('format', `must be a string, got ${JSON.stringify(qc.format)}`);
  if (qc.format !== 'int-quantized') unsupported('format', `'${qc.format}' is not read (only int-quantized)`);
  const ignore = qc.ignore ?? [];
  if (!Array.isArray(ignore) || !ignore.every((x) => typeof x === 'string')) bad('ignore', `must be a list of module names, got ${JSON.stringify(qc.ignore)}`);
  if (qc.kv_cache_scheme !== undefined && qc.kv_cache_scheme !== null) unsupported('kv_cache_scheme', 'a quantized KV cache scheme is not read');
  const groups = qc.config_groups;
  if (!isObject(groups)) return bad('config_groups', `must be an object of config groups, got ${JSON.stringify(groups)}`);
  const names = Object.keys(groups);
  if (names.length !== 1) bad('config_groups', `must hold exactly one group (one W8A8 scheme for every Linear), got ${names.length}`);
  const g = groups[names[0]];
  const at = `config_groups.${names[0]}`;
  if (!isObject(g)) return bad(at, `must be an object, got ${JSON.stringify(g)}`);
  if (g.targets !== undefined && !(Array.isArray(g.targets) && g.targets.length === 1 && g.targets[0] === 'Linear')) unsupported(`${at}.targets`, `only ["Linear"] is read, got ${JSON.stringify(g.targets)}`);
  if (g.output_activations !== undefined && g.output_activations !== null) unsupported(`${at}.output_activations`, 'output activation quantization is not read');
  const args = (key: 'weights' | 'input_activations'): { strategy: string; dynamic: boolean } => {
    const a = g[key];
    const f = `${at}.${key}`;
    if (!isObject(a)) return bad(f, `must be an object, got ${JSON.stringify(a)}`);
    if (typeof a.num_bits !== 'number') bad(`${f}.num_bits`, `must be a number, got ${JSON.stringify(a.num_bits)}`);
    if (a.num_bits !== 8) unsupported(`${f}.num_bits`, `only 8 bits are read, got ${a.num_bits}`);
    if (typeof a.type !== 'string') bad(`${f}.type`, `must be a string, got ${JSON.stringify(a.type)}`);
    if (a.type !== 'int') unsupported(`${f}.type`, `only int is read, got '${a.type}'`);
    if (typeof a.symmetric !== 'boolean') bad(`${f}.symmetric`, `must be true or false, got ${JSON.stringify(a.symmetric)}`);
    if (!a.symmetric) unsupported(`${f}.symmetric`, 'only symmetric quantization is read');
    if (typeof a.strategy !== 'string') bad(`${f}.strategy`, `must be a string, got ${JSON.stringify(a.strategy)}`);
    const dynamic = a.dynamic ?? false;
    if (typeof dynamic !== 'boolean') bad(`${f}.dynamic`, `must be true or false, got ${JSON.stringify(a.dynamic)}`);
    if (a.group_size !== undefined && a.group_size !== null) unsupported(`${f}.group_size`, 'groups are not read (per channel or tensor only)');
    return { strategy: a.strategy as string, dynamic: dynamic as boolean };
  };
  const w = args('weights');
  if (w.strategy !== 'channel' || w.dynamic) unsupported(`${at}.weights.strategy`, `only static per-channel weights are read, got strategy '${w.strategy}'${w.dynamic ? ', dynamic' : ''}`);
  const a = args('input_activations');
  let activations: 'static' | 'per-token';
  if (a.strategy === 'tensor' && !a.dynamic) activations = 'static';
  else if (a.strategy === 'token' && a.dynamic) activations = 'per-token';
  else return unsupported(`${at}.input_activations.strategy`, `only static per-tensor or dynamic per-token activations are read, got strategy '${a.strategy}', dynamic ${a.dynamic}`);
  return { activations, ignore: ignore as string[] };
}
