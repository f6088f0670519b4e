// W8A8 files: `quantize --method smoothquant|w8a8|<calibrator> -o DIR` writes a Hugging Face folder in the
// compressed-tensors layout (int-quantized: I8 weights, per-channel weight_scale, per-tensor input_scale), and
// `eval --model DIR` reads it back into the same W8A8 model: the eval figures equal what quantize measured. Also the
// layout of config.json and of the tensors, and the typed errors for malformed quantization_config fields.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';
import { SafetensorsFile } from '../src/frontends/safetensors/reader.js';
import { loadHfModelSync } from '../src/frontends/hf/model.js';
import { UnsupportedModelError } from '../src/frontends/hf/errors.js';
import { ModelFormatError } from '../src/errors.js';
import { isOp, attrsOf } from '../src/ir/attrs.js';
import { loadModel } from '../src/frontends/load.js';
import { decodeWeight } from '../src/ir/weights.js';

noteMissingShared('W8A8 compressed-tensors files of stories260K');

const LONG = 300_000;
const model = sharedPath('models/stories260K/stories260K.bin');
const tokenizer = sharedPath('models/stories260K/tok512.bin');
const calib = sharedPath('data/stories260K-calib.txt');
const evalText = sharedPath('data/stories260K-eval-public.txt');
const tmp = mkdtempSync(join(tmpdir(), 'tw-w8a8-file-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function quantizeTo(dir: string, flags: string[]): Promise<{ eval: Record<string, number> }> {
  const r = await runCli(['quantize', '--model', model, '--tokenizer', tokenizer, '--bits', '8', '--calib', calib, '--calib-tokens', '255', '--eval', evalText, '--eval-tokens', '120', '-o', dir, '--json', ...flags]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim());
}

async function evalFolder(dir: string): Promise<Record<string, number>> {
  const r = await runCli(['eval', '--model', dir, '--tokenizer', tokenizer, '--reference', model, '--text', evalText, '--max-tokens', '120', '--backend', 'cpu', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim());
}

/** A copy of `dir` with its config.json's quantization_config changed by `edit`. */
function withConfig(dir: string, name: string, edit: (qc: Record<string, any>) => void): string {
  const out = join(tmp, name);
  cpSync(dir, out, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  edit(cfg.quantization_config);
  writeFileSync(join(out, 'config.json'), JSON.stringify(cfg));
  return out;
}

describe.skipIf(!hasShared)('W8A8 compressed-tensors folders', () => {
  const sq = join(tmp, 'sq');
  it('smoothquant, static scales: the folder evaluates as quantize measured, in the compressed-tensors layout', async () => {
    const q = await quantizeTo(sq, ['--method', 'smoothquant']);
    const e = await evalFolder(sq);
    for (const k of ['tokens', 'ppl', 'ppl_f32', 'kl_mean', 'kl_p99', 'top1_agreement']) expect(e[k], k).toBe(q.eval[k]);
    const cfg = JSON.parse(readFileSync(join(sq, 'config.json'), 'utf8'));
    expect(cfg.quantization_config).toMatchObject({
      quant_method: 'compressed-tensors',
      format: 'int-quantized',
      ignore: ['lm_head'],
      config_groups: {
        group_0: {
          targets: ['Linear'],
          weights: { num_bits: 8, type: 'int', symmetric: true, strategy: 'channel', dynamic: false },
          input_activations: { num_bits: 8, type: 'int', symmetric: true, strategy: 'tensor', dynamic: false },
        },
      },
    });
    const f = SafetensorsFile.fromBytes(new Uint8Array(readFileSync(join(sq, 'model.safetensors'))));
    expect(f.info('model.layers.0.self_attn.q_proj.weight')).toMatchObject({ dtype: 'I8', shape: [64, 64] });
    expect(f.info('model.layers.0.self_attn.q_proj.weight_scale')).toMatchObject({ dtype: 'F32', shape: [64, 1] });
    expect(f.info('model.layers.0.mlp.down_proj.input_scale')).toMatchObject({ dtype: 'F32', shape: [1] });
    // SmoothQuant's 1/s is folded into the norm gains: they differ from the checkpoint's (by positive factors)
    expect(f.info('model.layers.0.input_layernorm.weight')).toMatchObject({ dtype: 'F32', shape: [64] });
    const gain = f.float32('model.layers.0.input_layernorm.weight');
    const f32Graph = (await loadModel(model)).build({ lastTokenLogitsOnly: false });
    const normNode = f32Graph.nodes().find((n) => isOp(n, 'weight') && attrsOf(n, 'weight').name === 'layers.0.attention_norm')!;
    const g0 = decodeWeight(f32Graph.weights.get(attrsOf(normNode, 'weight').id));
    expect([...gain].some((x, i) => Math.abs(x - g0[i]) > 1e-3 * Math.abs(g0[i]))).toBe(true);
    for (let i = 0; i < gain.length; i++) expect(Math.sign(gain[i])).toBe(Math.sign(g0[i]));
    // the loaded graph: every decoder matmul W8A8 over an int8 weight, the classifier f32
    const m = loadHfModelSync(sq);
    const g = m.build({ lastTokenLogitsOnly: false });
    const mm = g.nodes().filter((n) => isOp(n, 'matmul') && isOp(n.inputs[1], 'weight'));
    const w8 = mm.filter((n) => attrsOf(n, 'matmul').actQuant);
    expect(w8).toHaveLength(35);
    for (const n of w8) expect(g.weights.get(attrsOf(n.inputs[1], 'weight').id).encoding).toMatchObject({ kind: 'quantized', bits: 8, signed: true });
    expect(mm.length - w8.length).toBe(1);
  }, LONG);

  it('per-token scales and a calibrator method round-trip too', async () => {
    const pt = join(tmp, 'pt');
    const q = await quantizeTo(pt, ['--method', 'w8a8', '--activations', 'per-token']);
    expect(JSON.parse(readFileSync(join(pt, 'config.json'), 'utf8')).quantization_config.config_groups.group_0.input_activations).toMatchObject({ strategy: 'token', dynamic: true });
    expect(await evalFolder(pt)).toEqual(expect.objectContaining({ kl_mean: q.eval.kl_mean, ppl: q.eval.ppl, top1_agreement: q.eval.top1_agreement }));
    const pc = join(tmp, 'pc');
    const p = await quantizeTo(pc, ['--method', 'percentile']);
    expect(await evalFolder(pc)).toEqual(expect.objectContaining({ kl_mean: p.eval.kl_mean, ppl: p.eval.ppl, top1_agreement: p.eval.top1_agreement }));
  }, LONG);

  it('names the field of a malformed or unsupported quantization_config', async () => {
    const expectField = (dir: string, cls: typeof ModelFormatError | typeof UnsupportedModelError, field: string): void => {
      let err: unknown;
      try {
        loadHfModelSync(dir);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(cls);
      expect(err instanceof ModelFormatError ? err.field : (err as UnsupportedModelError).feature).toBe(field);
    };
    expectField(withConfig(sq, 'bits-string', (qc) => (qc.config_groups.group_0.weights.num_bits = '8')), ModelFormatError, 'quantization_config.config_groups.group_0.weights.num_bits');
    expectField(withConfig(sq, 'bits-4', (qc) => (qc.config_groups.group_0.weights.num_bits = 4)), UnsupportedModelError, 'quantization_config.config_groups.group_0.weights.num_bits');
    expectField(withConfig(sq, 'format', (qc) => (qc.format = 'pack-quantized')), UnsupportedModelError, 'quantization_config.format');
    expectField(withConfig(sq, 'method', (qc) => (qc.quant_method = 7)), ModelFormatError, 'quantization_config.quant_method');
    expectField(withConfig(sq, 'groups', (qc) => (qc.config_groups = [])), ModelFormatError, 'quantization_config.config_groups');
    expectField(withConfig(sq, 'sym', (qc) => delete qc.config_groups.group_0.input_activations.symmetric), ModelFormatError, 'quantization_config.config_groups.group_0.input_activations.symmetric');
    expectField(withConfig(sq, 'strategy', (qc) => (qc.config_groups.group_0.input_activations.strategy = 'group')), UnsupportedModelError, 'quantization_config.config_groups.group_0.input_activations.strategy');
    // the config asks for static scales, the file's tensors carry none: a missing tensor, named
    const dyn = join(tmp, 'pt');
    expectField(withConfig(dyn, 'no-input-scale', (qc) => Object.assign(qc.config_groups.group_0.input_activations, { strategy: 'tensor', dynamic: false })), ModelFormatError, "tensor 'model.layers.0.self_attn.q_proj.input_scale'");
  }, LONG);
});
