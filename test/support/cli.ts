// Runs the CLI in-process, capturing stdout and stderr (apart, and together in the order they were written).
import { main } from '../../src/cli/main.js';

export async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string; output: string }> {
  let stdout = '';
  let stderr = '';
  let output = '';
  const text = (c: string | Uint8Array): string => (typeof c === 'string' ? c : Buffer.from(c).toString());
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((c: string | Uint8Array) => ((stdout += text(c)), (output += text(c)), true)) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) => ((stderr += text(c)), (output += text(c)), true)) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, stdout, stderr, output };
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}
