/**
 * `--backend auto` for a model: the backend that decodes this model faster on this machine. The first time a model
 * shape (family, config, weight formats) meets an adapter, both backends decode a few tokens and the faster one is
 * recorded in `backend-choice.json` in the user cache directory (as the timing cache is: `$TENSORWRIGHT_CACHE_DIR`,
 * else `$XDG_CACHE_HOME/tensorwright`, else `~/.cache/tensorwright`); later runs read it. On lavapipe a model as
 * small as stories260K can be faster on the CPU reference than through the software rasterizer's dispatches, and a
 * 110M model is several times faster on WebGPU.
 * @module
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { compile, compressionOf } from '../compile.js';
import type { LoadedModel } from '../frontends/load.js';
import { cpuProfile } from '../ir/device-profile.js';
import type { KvCacheDType } from '../ir/target.js';
import { runPasses } from '../passes/pipeline.js';
import { CpuCausalLM } from '../runtime/cpu/lm.js';
import { describeDevice, requestGPUDevice, type DeviceInfo } from '../runtime/device.js';
import { log } from './output.js';
import { timingCachePath } from './timing-cache-file.js';

/** What the model will be run with (it decides both backends' speed). */
export interface BackendChoiceModel {
  readonly model: LoadedModel;
  readonly quant?: string;
  readonly sparsity?: string;
  readonly kvDtype?: KvCacheDType;
}

/** One measured choice, as recorded. */
export interface BackendChoice {
  readonly backend: 'cpu' | 'webgpu';
  /** Decode tokens per second measured on each backend. */
  readonly cpu_tok_s: number;
  readonly webgpu_tok_s: number;
  /** The adapter and model it was measured for (for people reading the file). */
  readonly device: string;
  readonly model: string;
  readonly measured_at: string;
}

const FILE_VERSION = 1;

/** The choice file: beside the timing cache. */
export function backendChoicePath(): string {
  return join(dirname(timingCachePath()), 'backend-choice.json');
}

/** The key of a model on an adapter: a hash of the adapter's identity and the model's shape and weight formats. */
export function backendChoiceKey(info: DeviceInfo, m: BackendChoiceModel): string {
  const a = info.adapter;
  const identity = { adapter: [a.vendor, a.architecture, a.device, a.description], family: m.model.family, config: m.model.config, quant: m.quant ?? 'none', sparsity: m.sparsity ?? 'none', kv: m.kvDtype ?? 'f32' };
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 32);
}

/** Reads the choices; a missing, unreadable or malformed file is an empty one (it is only a cache). */
async function readChoices(path: string, quiet = false): Promise<Record<string, BackendChoice>> {
  if (!existsSync(path)) return {};
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as { version?: unknown; choices?: unknown };
    if (v?.version !== FILE_VERSION || typeof v.choices !== 'object' || v.choices === null) throw new Error(`not a version ${FILE_VERSION} backend-choice file`);
    const out: Record<string, BackendChoice> = {};
    for (const [k, c] of Object.entries(v.choices as Record<string, Partial<BackendChoice>>))
      if (c && (c.backend === 'cpu' || c.backend === 'webgpu') && Number.isFinite(c.cpu_tok_s) && Number.isFinite(c.webgpu_tok_s)) out[k] = c as BackendChoice;
    return out;
  } catch (e) {
    if (!quiet) log(`backend: ignoring ${path} (${(e as Error).message}); measuring again`);
    return {};
  }
}

async function writeChoices(path: string, choices: Record<string, BackendChoice>): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify({ version: FILE_VERSION, choices }, null, 1)}\n`);
  await rename(tmp, path);
}

/** Decode steps timed on each backend: at least {@link MIN_STEPS}, then until {@link BUDGET_MS} have passed or {@link MAX_STEPS}. */
const MIN_STEPS = 3;
const MAX_STEPS = 16;
const BUDGET_MS = 600;

/** Times greedy single-token decode steps after one warm-up step; tokens per second. */
async function timeDecode(step: (token: number) => Promise<number>, first: number): Promise<number> {
  let token = await step(first);
  const t0 = performance.now();
  let n = 0;
  while (n < MIN_STEPS || (n < MAX_STEPS && performance.now() - t0 < BUDGET_MS)) {
    token = await step(token);
    n++;
  }
  return (n * 1000) / (performance.now() - t0);
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Measures both backends' decode speed on this model. */
export async function measureBackends(m: BackendChoiceModel): Promise<{ cpu: number; webgpu: number; device: string }> {
  const compression = compressionOf({ quant: m.quant, sparsity: m.sparsity });
  const graph = runPasses(m.model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile, options: { ...compression, kvCache: m.kvDtype } }).graph;
  const lm = new CpuCausalLM(graph, m.model.maxPositions);
  const cpu = await timeDecode(async (t) => argmax(lm.step([t])), m.model.bosId);
  const handle = await requestGPUDevice();
  try {
    const engine = await compile(m.model, { device: handle.info, prefillChunk: 8, quant: m.quant, sparsity: m.sparsity, kv: { dtype: m.kvDtype } });
    const session = await engine.createSession({ device: handle });
    try {
      const greedy = { temperature: 0, topp: 1, coin: 0 };
      const webgpu = await timeDecode((t) => session.step([t], greedy), m.model.bosId);
      return { cpu, webgpu, device: describeDevice(handle.info) };
    } finally {
      await session.destroy();
    }
  } finally {
    await handle.destroy();
  }
}

/**
 * The faster backend for `m` on the adapter `info`: recorded, or measured now and recorded. A failure to measure
 * WebGPU (a device error) picks the CPU, and is not recorded.
 */
export async function chooseBackendFor(info: DeviceInfo, m: BackendChoiceModel): Promise<BackendChoice> {
  const path = backendChoicePath();
  const key = backendChoiceKey(info, m);
  const known = (await readChoices(path))[key];
  if (known) {
    log(`backend: ${known.backend} (recorded for this model and adapter in ${path}: cpu ${known.cpu_tok_s} tok/s, webgpu ${known.webgpu_tok_s} tok/s)`);
    return known;
  }
  log(`backend: measuring decode on the CPU reference and on ${describeDevice(info)} (once for this model and adapter)`);
  let measured: { cpu: number; webgpu: number; device: string };
  try {
    measured = await measureBackends(m);
  } catch (e) {
    log(`backend: cpu (WebGPU failed while measuring: ${(e as Error).message})`);
    return { backend: 'cpu', cpu_tok_s: NaN, webgpu_tok_s: NaN, device: describeDevice(info), model: m.model.family, measured_at: new Date().toISOString() };
  }
  const round = (x: number): number => Math.round(x * 10) / 10;
  const choice: BackendChoice = {
    backend: measured.webgpu >= measured.cpu ? 'webgpu' : 'cpu',
    cpu_tok_s: round(measured.cpu),
    webgpu_tok_s: round(measured.webgpu),
    device: measured.device,
    model: `${m.model.family} ${JSON.stringify(m.model.config)}${m.quant ? ` --quant ${m.quant}` : ''}${m.sparsity ? ` --sparsity ${m.sparsity}` : ''}`,
    measured_at: new Date().toISOString(),
  };
  // read again: another process may have written meanwhile
  await writeChoices(path, { ...(await readChoices(path, true)), [key]: choice });
  log(`backend: ${choice.backend} (measured: cpu ${choice.cpu_tok_s} tok/s, webgpu ${choice.webgpu_tok_s} tok/s; recorded in ${path})`);
  return choice;
}
