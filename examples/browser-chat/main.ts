/**
 * The browser-chat example: stories260K compiled at build time by the tensorwright Vite plugin, loaded with its
 * weights' progress in bytes, and run on WebGPU with the output streamed token by token, greedy or sampled, with
 * tokens/s. `?target=<name>` in the page URL picks one of the compiled engines. It also exposes `window.__tensorwrightTest(prompt, steps)` (greedy ids) for the browser test.
 * @module
 */
import model from '@models/stories260K/stories260K.bin?tensorwright';
import type { Engine, EngineSession, RuntimeTokenizer } from '../../src/runtime/index.js';

/** What the test hook returns: the prompt's ids (BOS first) and the generated ids. */
interface TestResult {
  promptIds: number[];
  generated: number[];
}

declare global {
  interface Window {
    /** Greedy generation for the browser test: `steps` positions, prompt included. */
    __tensorwrightTest?: (prompt: string, steps: number) => Promise<TestResult>;
  }
}

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const progress = $<HTMLProgressElement>('progress');
const status = $<HTMLDivElement>('status');
const output = $<HTMLDivElement>('output');
const stats = $<HTMLParagraphElement>('stats');
const errorBox = $<HTMLParagraphElement>('error');
const button = $<HTMLButtonElement>('generate');

function kib(n: number): string {
  return `${(n / 1024).toFixed(0)} KiB`;
}

function fail(e: unknown): void {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  errorBox.textContent = text;
  document.body.dataset.state = 'error';
  document.body.dataset.error = text;
  console.error(text);
}

const info = model.info;
$('info').textContent = `${info.format} ${info.family}, ${info.parameters ?? '?'} parameters, ${kib(info.weightBytes)} of weights; compiled at build time for ${model.variants.map((v) => `${v.info.target} (${v.info.kernels} kernels, ${v.info.dispatchesPerToken} dispatches per token)`).join(', ')}.`;

/** Loads the engine (reporting the weights' bytes as they stream to the GPU), a session on it, and the tokenizer. */
async function start(): Promise<{ session: EngineSession; tokenizer: RuntimeTokenizer }> {
  if (!('gpu' in navigator) || !navigator.gpu) throw new Error('this browser has no WebGPU (navigator.gpu is missing)');
  status.textContent = 'loading the engine…';
  // `?target=portable` in the page's URL loads that engine instead of the first the adapter can run
  const target = new URLSearchParams(location.search).get('target') ?? undefined;
  const engine: Engine = await model.load({
    ...(target ? { target } : {}),
    onProgress: (p) => {
      if (p.loadedBytes !== undefined && p.totalBytes) {
        progress.max = p.totalBytes;
        progress.value = p.loadedBytes;
        status.textContent = `${p.stage}: ${kib(p.loadedBytes)} / ${kib(p.totalBytes)}`;
      } else {
        status.textContent = `${p.stage} (${p.ms.toFixed(0)} ms)`;
      }
    },
  });
  const [session, tokenizer] = await Promise.all([engine.createSession(), model.loadTokenizer()]);
  const running = model.variants.find((v) => v.info.device === engine.manifest.device.description)?.info.target ?? engine.manifest.device.description;
  document.body.dataset.variant = running;
  status.textContent = `ready: the ${running} engine, loaded in ${session.loadTimings.totalMs.toFixed(0)} ms (${session.loadTimings.pipelines} pipelines)`;
  return { session, tokenizer };
}

const ready = start();

/** How to pick each token: greedy (temperature 0) or sampled with a temperature and a nucleus threshold. */
interface Sampling {
  temperature: number;
  topp: number;
  seed: number;
}

/** One generation: streams decoded pieces into the page as each token arrives. */
async function generate(prompt: string, steps: number, sampling: Sampling): Promise<TestResult> {
  const { session, tokenizer } = await ready;
  const promptIds = tokenizer.encode(prompt);
  output.textContent = tokenizer.decode(promptIds);
  let prev = promptIds[promptIds.length - 1];
  const r = await session.generate(promptIds, {
    steps,
    ...sampling,
    onToken: (id) => {
      output.textContent += tokenizer.decodePiece(prev, id);
      prev = id;
    },
  });
  const tokS = r.generated.length > 1 && r.decodeSeconds > 0 ? (r.generated.length - 1) / r.decodeSeconds : 0;
  stats.textContent = `${r.generated.length} tokens; prompt ${(r.prefillSeconds * 1000).toFixed(0)} ms; ${tokS.toFixed(1)} tok/s${r.stopped ? '; stopped at BOS' : ''}`;
  output.dataset.ids = JSON.stringify(r.generated);
  return { promptIds, generated: r.generated };
}

let busy: Promise<unknown> = Promise.resolve();
/** Runs generations one after another (a session holds one sequence). */
function queued<T>(f: () => Promise<T>): Promise<T> {
  const run = busy.then(f, f);
  busy = run.catch(() => undefined);
  return run;
}

button.addEventListener('click', () => {
  const sampled = (document.querySelector('input[name="mode"]:checked') as HTMLInputElement).value === 'sampled';
  const num = (id: string): number => Number($<HTMLInputElement>(id).value);
  const sampling = { temperature: sampled ? num('temperature') : 0, topp: num('topp'), seed: num('seed') };
  button.disabled = true;
  queued(() => generate($<HTMLInputElement>('prompt').value, num('steps'), sampling))
    .catch(fail)
    .finally(() => (button.disabled = false));
});

window.__tensorwrightTest = (prompt, steps) => queued(() => generate(prompt, steps, { temperature: 0, topp: 0.9, seed: 0 }));

ready.then(
  () => {
    button.disabled = false;
    document.body.dataset.state = 'ready';
  },
  fail,
);
