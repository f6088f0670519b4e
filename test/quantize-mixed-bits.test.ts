// `tensorwright quantize --budget-bits` on stories260K (the README's claim, on a fixed window): sensitivity-chosen mixed
// bits (Q4_0 and Q8_0 blocks per layer, at most 4.45 grid bits on average) have lower KL to f32 than uniform RTN int4 (Q4_1,
// 4 grid bits) with a file no larger; the sensitivities are measured on the calibration text, the chosen average is
// within the budget, and the written file scores under `eval --reference` exactly as quantize measured it.
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('quantize --budget-bits on stories260K');

const LONG = 600_000;
const dir = mkdtempSync(join(tmpdir(), 'tw-mixed-bits-'));
const model = sharedPath('models/stories260K/stories260K.bin');
const tokenizer = sharedPath('models/stories260K/tok512.bin');
const calib = sharedPath('data/stories260K-calib.txt');
const evalText = sharedPath('data/stories260K-eval-public.txt');
// the first 511 calibration tokens (Hessians and sensitivities) and the first 511 tokens of the eval text
const WINDOW = ['--calib-tokens', '511', '--sensitivity-tokens', '511', '--eval', evalText, '--eval-tokens', '511'];

interface Result {
  eval: { kl_mean: number; ppl: number };
  file_bytes: number;
  tensor_types: Record<string, number>;
  mixed_bits?: { average_bits: { grid: number; packed: number; file: number }; exact: boolean; layers: { name: string; params: number; kl: Record<string, number>; bits?: number }[] };
}

async function quantize(args: string[]): Promise<Result> {
  const r = await runCli(['quantize', '--model', model, '--calib', calib, '--method', 'rtn', '--json', ...WINDOW, ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim());
}

describe.skipIf(!hasShared)('quantize --budget-bits on stories260K', () => {
  it('mixed Q4_0/Q8_0 at 4.45 grid bits has lower KL than uniform int4 (Q4_1) in a file no larger', async () => {
    const [uniformOut, mixedOut] = [join(dir, 'int4.gguf'), join(dir, 'mixed.gguf')];
    const uniform = await quantize(['--bits', '4', '-o', uniformOut]);
    const mixed = await quantize(['--sym', '--budget-bits', '4.45', '--budget-count', 'grid', '--candidate-bits', '4,8', '-o', mixedOut]);
    const m = mixed.mixed_bits!;
    expect(m.exact).toBe(true);
    expect(m.average_bits.grid).toBeLessThanOrEqual(4.45);
    expect(m.average_bits.file).toBeLessThanOrEqual(5); // Q4_1 is 5 bits per weight as written
    expect(mixed.tensor_types.Q8_0).toBeGreaterThan(0);
    expect(mixed.tensor_types.Q4_0).toBeGreaterThan(0);
    expect(statSync(mixedOut).size).toBe(mixed.file_bytes);
    expect(mixed.file_bytes).toBeLessThanOrEqual(uniform.file_bytes);
    expect(mixed.eval.kl_mean).toBeLessThan(uniform.eval.kl_mean);
    // each sensitivity falls with more bits, and the layers kept at 8 bits are among the most sensitive at 4 bits
    const rows = m.layers.filter((l) => l.bits !== undefined);
    for (const l of rows) expect(l.kl['8'], l.name).toBeLessThan(l.kl['4']);
    const perBit = (l: (typeof rows)[number]): number => (l.kl['4'] - l.kl['8']) / l.params;
    const at8 = rows.filter((l) => l.bits === 8).map(perBit);
    const at4 = rows.filter((l) => l.bits === 4).map(perBit);
    expect(Math.max(...at8)).toBeGreaterThan(Math.max(...at4));
    // the file scores as quantize measured it
    const r = await runCli(['eval', '--model', mixedOut, '--tokenizer', tokenizer, '--reference', model, '--text', evalText, '--max-tokens', '511', '--backend', 'cpu', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim()).kl_mean).toBe(mixed.eval.kl_mean);
  }, LONG);

  it('rejects AWQ with a budget and a budget below the cheapest candidate', async () => {
    const awq = await runCli(['quantize', '--model', model, '--calib', calib, '--method', 'awq', '--budget-bits', '4.5', '-o', join(dir, 'x.gguf')]);
    expect(awq.code).not.toBe(0);
    expect(awq.stderr).toMatch(/--budget-bits works with --method rtn or gptq/);
    const low = await runCli(['quantize', '--model', model, '--calib', calib, '--method', 'rtn', '--calib-tokens', '64', '--sensitivity-tokens', '64', '--budget-bits', '3', '--candidate-bits', '4,8', '-o', join(dir, 'y.gguf')]);
    expect(low.code).not.toBe(0);
    expect(low.stderr).toMatch(/below the cheapest choice/);
  }, LONG);
});
