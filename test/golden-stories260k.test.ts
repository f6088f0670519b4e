// stories260K through the CLI on the CPU backend reproduces llama2.c run.c's own greedy output token for token.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('stories260K golden tests');

describe.skipIf(!hasShared)('stories260K golden (run.c, temperature 0)', () => {
  const dir = hasShared ? sharedPath('golden/stories260K') : '';
  const files = hasShared ? readdirSync(dir).filter((f) => f.endsWith('.json')) : [];
  it('has golden files', () => expect(files.length).toBeGreaterThanOrEqual(5));
  for (const f of files) {
    it(`generate --backend cpu --temperature 0 reproduces ${f}`, async () => {
      const gold = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
      const r = await runCli([
        'generate', '--model', sharedPath('models/stories260K/stories260K.bin'), '--tokenizer', sharedPath('models/stories260K/tok512.bin'),
        '--prompt', gold.prompt, '--steps', String(gold.steps), '--temperature', '0', '--backend', 'cpu', '--json',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.backend).toBe('cpu');
      expect(out.prompt_ids).toEqual(gold.prompt_ids);
      expect(out.generated_ids).toEqual(gold.generated_ids);
      expect(out.text).toBe(gold.text);
    });
  }
});

describe.skipIf(!hasShared)('stories260K logits after the prompt', async () => {
  const { loadModel } = await import('../src/frontends/load.js');
  const { CpuCausalLM } = await import('../src/runtime/cpu/lm.js');
  const dir = hasShared ? sharedPath('golden/stories260K') : '';
  const files = hasShared ? readdirSync(dir).filter((f) => f.endsWith('.json')) : [];
  for (const f of files) {
    it(`matches next_token_logits of ${f} within 1e-4`, async () => {
      const gold = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
      const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
      const lm = new CpuCausalLM(model.build(), model.maxPositions);
      const logits = lm.step(gold.prompt_ids);
      expect(logits.length).toBe(gold.next_token_logits.length);
      let maxDiff = 0;
      for (let i = 0; i < logits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(logits[i] - gold.next_token_logits[i]));
      expect(maxDiff).toBeLessThan(1e-4);
    });
  }
});

describe.skipIf(!hasShared)('run.c upstream expected output', () => {
  it('generate --temperature 0 --steps 200 with an empty prompt prints what run.c prints', async () => {
    const want = readFileSync(sharedPath('golden/stories260K/run_c_stdout_greedy_200.txt'), 'utf8');
    const r = await runCli(['generate', '--model', sharedPath('models/stories260K/stories260K.bin'), '--tokenizer', sharedPath('models/stories260K/tok512.bin'), '--steps', '200', '--temperature', '0', '--backend', 'cpu']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trimEnd()).toBe(want.trimEnd());
  });
});
