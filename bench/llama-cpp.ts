/**
 * llama.cpp as the CPU peer of the LLM benchmark, through `node-llama-cpp` (a dev dependency for benchmarks only; its
 * prebuilt binaries come as optional npm packages, `@node-llama-cpp/linux-x64` and the like). It runs a GGUF file on
 * the CPU build (`gpu: false`: its Vulkan build ignores lavapipe, and a CPU peer is what we compare with there) with a
 * fixed number of threads, greedy, the way `tensorwright bench` runs our engine: one untimed warm-up run, then
 * `repeat` runs of a prompt prefill followed by decode steps, each on a fresh sequence; figures are medians.
 *
 * Decode goes through node-llama-cpp's generator (`LlamaContextSequence.evaluate`), one token per iteration, so each
 * step pays a little JS overhead on top of llama.cpp's own time; for a 110M model that is small, for stories260K it
 * dominates (leave such models out).
 * @module
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Llama, Token } from 'node-llama-cpp';

/** A loaded llama.cpp (CPU build), or why there is none. */
export type LlamaCppHandle = { readonly ok: true; readonly llama: Llama; readonly describe: string } | { readonly ok: false; readonly reason: string };

/**
 * Loads node-llama-cpp's prebuilt CPU binary with at most `threads` threads. Never builds from source or downloads
 * anything (`build: 'never'`, `skipDownload`): where no prebuilt binary loads, it says why instead.
 */
export async function loadLlamaCpp(threads: number): Promise<LlamaCppHandle> {
  try {
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
    const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, usePrebuiltBinaries: true, maxThreads: threads, logLevel: LlamaLogLevel.error, progressLogs: false });
    const release = llama.llamaCppRelease;
    let version = '?';
    try {
      version = (JSON.parse(readFileSync(resolve(process.cwd(), 'node_modules/node-llama-cpp/package.json'), 'utf8')) as { version: string }).version;
    } catch {
      // a node-llama-cpp found elsewhere: its version stays unknown
    }
    return { ok: true, llama, describe: `llama.cpp ${release.repo} ${release.release} via node-llama-cpp ${version}, ${llama.buildType} CPU build, ${threads} threads` };
  } catch (e) {
    const first = e instanceof Error ? e.message.split('\n')[0] : String(e);
    const named = e instanceof Error && e.name !== 'Error' && !first.includes(e.name) ? `${e.name}${first ? `: ${first}` : ''}` : first;
    return { ok: false, reason: `${named || 'unknown error'}; node-llama-cpp loads prebuilt binaries from its optional packages @node-llama-cpp/${process.platform}-${process.arch}[-gpu], which npm ci installs where they fit` };
  }
}

/** Options of {@link benchLlamaCpp}. */
export interface LlamaCppBenchOptions {
  /** The prompt's token ids (BOS first). */
  readonly prompt: readonly number[];
  /** Tokens to generate per run, the first one (sampled after the prefill) included. */
  readonly genTokens: number;
  /** Timed runs. */
  readonly repeat: number;
  /** Threads for prefill and decode. */
  readonly threads: number;
  /** Progress lines. */
  readonly log?: (line: string) => void;
}

/** What {@link benchLlamaCpp} measured: medians over the timed runs. */
export interface LlamaCppBenchResult {
  /** Prompt tokens over the time to the first new token. */
  readonly prefillTokensPerS: number;
  /** Decode steps (tokens after the first) over their time. */
  readonly decodeTokensPerS: number;
  /** Median time per output token over the decode steps, in milliseconds. */
  readonly tpotMsP50: number;
  /** Milliseconds to load the model and create the context. */
  readonly loadMs: number;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Runs the GGUF file at `model` on llama.cpp (see the module doc). */
export async function benchLlamaCpp(llama: Llama, model: string, o: LlamaCppBenchOptions): Promise<LlamaCppBenchResult> {
  const t0 = performance.now();
  const m = await llama.loadModel({ modelPath: model, gpuLayers: 0 });
  const contextSize = Math.max(64, 2 ** Math.ceil(Math.log2(o.prompt.length + o.genTokens + 1)));
  const context = await m.createContext({ contextSize, batchSize: Math.max(o.prompt.length, 1), threads: { ideal: o.threads, min: o.threads }, sequences: 1 });
  const loadMs = performance.now() - t0;
  try {
    const sequence = context.getSequence();
    const runs: { prefill: number; decode: number; p50: number }[] = [];
    for (let r = -1; r < o.repeat; r++) {
      await sequence.clearHistory();
      const a = performance.now();
      let ttft = 0;
      const steps: number[] = [];
      let last = a;
      let n = 0;
      // yieldEogToken: keep generating past an end-of-generation token, as our bench does
      for await (const _t of sequence.evaluate(o.prompt as Token[], { temperature: 0, yieldEogToken: true })) {
        const now = performance.now();
        if (n === 0) ttft = now - a;
        else steps.push(now - last);
        last = now;
        if (++n >= o.genTokens) break;
      }
      if (r < 0) continue;
      const decodeMs = steps.reduce((x, y) => x + y, 0);
      runs.push({ prefill: (1000 * o.prompt.length) / ttft, decode: steps.length ? (1000 * steps.length) / decodeMs : NaN, p50: steps.length ? median(steps) : NaN });
      o.log?.(`llama.cpp: run ${r + 1}/${o.repeat}: prefill ${runs[r].prefill.toFixed(1)} tok/s, decode ${runs[r].decode.toFixed(2)} tok/s`);
    }
    return { prefillTokensPerS: median(runs.map((x) => x.prefill)), decodeTokensPerS: median(runs.map((x) => x.decode)), tpotMsP50: median(runs.map((x) => x.p50)), loadMs };
  } finally {
    await context.dispose();
    await m.dispose();
  }
}
