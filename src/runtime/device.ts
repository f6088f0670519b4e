/**
 * WebGPU device acquisition. In a browser (or any host with `navigator.gpu`) it uses `navigator.gpu`; in Node it loads
 * the `webgpu` package (Dawn for Node) on demand, so browser bundles never need it. Either way it asks for the
 * adapter's maximum limits and for the optional features the compiler can use, and reports what it got.
 *
 * On Linux without a GPU, Dawn needs a software Vulkan driver (Mesa >= 24 lavapipe); on Debian 12 run
 * `scripts/setup-webgpu-linux.sh` to install it.
 * @module
 */
// the declarations name WebGPU types (GPUDevice, …): a consumer's compiler gets them from @webgpu/types, a dependency
// (declaration files that import this one get them through it)
/// <reference types="@webgpu/types" preserve="true" />
import { DeviceError } from '../errors.js';
import { importNodeBuiltin } from '../util/node-builtin.js';

/** Where a device comes from: Dawn loaded from the `webgpu` npm package in Node, or the host's `navigator.gpu` (a browser, a worker, Deno). */
export type WebGPUBackend = 'node-dawn' | 'browser';

/** The adapter's identity, as reported by `GPUAdapter.info` (fields are empty strings when the host hides them). */
export interface AdapterSummary {
  /** GPU vendor, e.g. `mesa`, `nvidia`, `apple`. */
  vendor: string;
  /** GPU family or architecture, e.g. `software`, `ampere`. */
  architecture: string;
  /** Device name, e.g. `llvmpipe-llvm-15-0-6-256-bits-`. */
  device: string;
  /** Driver description, e.g. `llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)`. */
  description: string;
  /** True for a software or otherwise limited ("fallback") adapter, such as lavapipe. */
  isFallbackAdapter: boolean;
}

/** Adapter texts of the software WebGPU implementations we know: Mesa's lavapipe/llvmpipe, SwiftShader, WARP. */
const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|microsoft basic render|\bwarp\b/i;

/** Whether an adapter's identity names a software (CPU) implementation, or says its architecture is `software`. */
export function isSoftwareAdapter(info: { readonly vendor?: string; readonly architecture?: string; readonly device?: string; readonly description?: string } | undefined): boolean {
  if (!info) return false;
  return SOFTWARE_ADAPTER.test([info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ')) || info.architecture === 'software';
}

/** What a WebGPU adapter offers (from {@link probeWebGPU}) or what a device was granted (from {@link requestGPUDevice}). */
export interface DeviceInfo {
  /** Which implementation is in use. */
  backend: WebGPUBackend;
  /** The adapter's identity. */
  adapter: AdapterSummary;
  /** Enabled features of the device (for a probe: the adapter's features), sorted. */
  features: string[];
  /** Wanted optional features the adapter does not have (so the device lacks them), sorted. */
  missingFeatures: string[];
  /** Every numeric limit of the device (for a probe: the adapter's maxima), by WebGPU limit name. */
  limits: Record<string, number>;
  /**
   * WGSL language features the implementation supports (`navigator.gpu.wgslLanguageFeatures`, sorted), such as
   * `packed_4x8_integer_dot_product`; absent when unknown. Kernels that need one say so with a `requires` directive.
   */
  wgslLanguageFeatures?: string[];
  /** Subgroup sizes the adapter may use, when it reports them (with the `subgroups` feature). */
  subgroupSize?: {
    /** Smallest subgroup size. */
    min: number;
    /** Largest subgroup size. */
    max: number;
  };
}

/** Why WebGPU cannot be used here (the result of {@link probeWebGPU} when no adapter is found). */
export interface WebGPUUnavailable {
  /** Always false; tells this result apart from a {@link DeviceInfo} (`'available' in result`). */
  available: false;
  /** What is missing and what to install or enable. */
  reason: string;
}

/** Optional features requested when present, unless {@link RequestGPUDeviceOptions.wantFeatures} says otherwise. */
export const DEFAULT_WANTED_FEATURES: readonly GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query'];

/** Options of {@link requestGPUDevice}. */
export interface RequestGPUDeviceOptions {
  /** Passed to `requestAdapter` (e.g. `high-performance` on dual-GPU laptops). */
  powerPreference?: GPUPowerPreference;
  /** Features the device must have; a {@link DeviceError} (`DEVICE_ERROR`) if the adapter lacks any. */
  requiredFeatures?: GPUFeatureName[];
  /** Features to enable when the adapter has them (default {@link DEFAULT_WANTED_FEATURES}). */
  wantFeatures?: readonly GPUFeatureName[];
  /** Request every adapter limit at its maximum (default true); false keeps WebGPU's default limits. */
  maxLimits?: boolean;
  /** Node only: toggles and options for Dawn's `create()`, e.g. `['backend=vulkan']` or `['adapter=llvmpipe']`. */
  dawnFlags?: readonly string[];
  /** Label given to the device (shows in WebGPU error messages). */
  label?: string;
  /** Called once if the device is lost for a reason other than {@link GPUDeviceHandle.destroy}. */
  onLost?: (record: DeviceLostRecord) => void;
}

/** How and why a device was lost. */
export interface DeviceLostRecord {
  /** WebGPU's reason: `destroyed` after `destroy()`, otherwise `unknown` (driver reset, out of memory, …). */
  reason: string;
  /** The implementation's message. */
  message: string;
  /** True when the loss was caused by {@link GPUDeviceHandle.destroy} (or `device.destroy()` called directly). */
  expected: boolean;
}

/** A device obtained by {@link requestGPUDevice}, with what it was granted and how to release it. */
export interface GPUDeviceHandle {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** What the device was granted (features, limits) and on which adapter. */
  readonly info: DeviceInfo;
  /** Settles (never rejects) when the device is lost, including after {@link GPUDeviceHandle.destroy}. */
  readonly lost: Promise<DeviceLostRecord>;
  /** True once the device has been lost or destroyed; a lost device cannot be used again, request a new one. */
  isLost(): boolean;
  /** The loss record, once lost. */
  lostInfo(): DeviceLostRecord | undefined;
  /**
   * Destroys the device at once (its buffers are freed, pending work is abandoned and pending `mapAsync` calls reject).
   * Idempotent. The returned promise, which never rejects, settles once the device reports itself lost; awaiting it
   * is optional.
   */
  destroy(): Promise<void>;
}

/** The `webgpu` package's exports, as used here. */
interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

const SETUP_HINT =
  'On Linux without a GPU, install a Vulkan driver: Mesa >= 24 lavapipe (on Debian 12 run scripts/setup-webgpu-linux.sh ' +
  'from the tensorwright repository; on other distributions install mesa-vulkan-drivers >= 24 and the Vulkan loader libvulkan1), ' +
  'or your GPU vendor\'s Vulkan driver; macOS needs Metal and Windows D3D12 (both built in)';

let dawnModule: Promise<DawnModule> | undefined;
/**
 * Dawn GPU objects by their `create()` flags, kept for the life of the process and shared by every device. A collected
 * GPU object destroys its Dawn instance even while devices or callbacks still use it: if that happens while any async
 * operation is pending (a `mapAsync`, `onSubmittedWorkDone`, even one rejected by `device.destroy()` and already
 * awaited through `device.lost`), Dawn's event pump crashes the process (SIGSEGV, or `std::system_error` abort).
 * Holding them does not keep Node from exiting.
 */
const dawnInstances = new Map<string, GPU>();

function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

function navigatorGPU(): GPU | undefined {
  return (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu ?? undefined;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Imports `webgpu` once (a non-literal specifier, so bundlers leave it out) and installs its `GPU*` globals. */
async function loadDawn(): Promise<DawnModule> {
  dawnModule ??= (async () => {
    if (process.platform === 'linux' && !process.env.XDG_RUNTIME_DIR) {
      // Dawn's Vulkan backend (through the loader and WSI probing) warns when XDG_RUNTIME_DIR is unset.
      const os = await importNodeBuiltin<typeof import('node:os')>('os');
      process.env.XDG_RUNTIME_DIR = os.tmpdir();
    }
    const specifier = 'webgpu';
    const mod = (await import(specifier)) as DawnModule;
    // GPUBufferUsage, GPUMapMode, … are globals in browsers; code written for WebGPU expects them in Node too.
    const g = globalThis as Record<string, unknown>;
    for (const [name, value] of Object.entries(mod.globals)) if (!(name in g)) g[name] = value;
    return mod;
  })();
  try {
    return await dawnModule;
  } catch (e) {
    dawnModule = undefined;
    throw e;
  }
}

/** The process-wide Dawn GPU object for these flags (see {@link dawnInstances}). */
async function dawnGPU(flags: readonly string[]): Promise<GPU> {
  const mod = await loadDawn();
  const key = flags.join('\n');
  let gpu = dawnInstances.get(key);
  if (!gpu) {
    gpu = mod.create([...flags]);
    dawnInstances.set(key, gpu);
  }
  return gpu;
}

/** An adapter, or why there is none. */
type AdapterResult = { ok: true; adapter: GPUAdapter; backend: WebGPUBackend; languageFeatures: string[] } | { ok: false; reason: string };

/** The WGSL language features a `GPU` object reports (`navigator.gpu.wgslLanguageFeatures`), sorted; none when it has no such set. */
function languageFeaturesOf(gpu: GPU): string[] {
  const set = (gpu as GPU & { wgslLanguageFeatures?: Iterable<string> }).wgslLanguageFeatures;
  return set ? [...set].sort() : [];
}

async function findAdapter(powerPreference: GPUPowerPreference | undefined, dawnFlags: readonly string[]): Promise<AdapterResult> {
  const opts: GPURequestAdapterOptions = powerPreference ? { powerPreference } : {};
  const navGpu = navigatorGPU();
  if (navGpu) {
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await navGpu.requestAdapter(opts);
    } catch (e) {
      return { ok: false, reason: `navigator.gpu.requestAdapter() failed: ${errorText(e)}` };
    }
    if (!adapter)
      return {
        ok: false,
        reason:
          'navigator.gpu.requestAdapter() found no adapter: WebGPU is disabled or this GPU/driver is blocklisted ' +
          '(check chrome://gpu, enable WebGPU, or update the GPU driver)',
      };
    return { ok: true, adapter, backend: 'browser', languageFeatures: languageFeaturesOf(navGpu) };
  }
  if (!isNode())
    return {
      ok: false,
      reason: 'this environment has no navigator.gpu: WebGPU needs a recent Chrome, Edge, Safari or Firefox, in a secure (https or localhost) context',
    };
  let gpu: GPU;
  try {
    gpu = await dawnGPU(dawnFlags);
  } catch (e) {
    return { ok: false, reason: `the \`webgpu\` package (Dawn for Node) could not be loaded or started: ${errorText(e)}` };
  }
  let adapter: GPUAdapter | null = null;
  let failure = '';
  try {
    adapter = await gpu.requestAdapter(opts);
  } catch (e) {
    failure = `: ${errorText(e)}`;
  }
  if (!adapter) return { ok: false, reason: `Dawn (the \`webgpu\` package) found no WebGPU adapter${failure}. ${SETUP_HINT}` };
  return { ok: true, adapter, backend: 'node-dawn', languageFeatures: languageFeaturesOf(gpu) };
}

function limitsOf(limits: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  // The limits are accessors on the prototype, so for…in (not Object.keys) lists them.
  for (const name in limits) {
    const v: unknown = Reflect.get(limits, name);
    if (typeof v === 'number') out[name] = v;
  }
  return out;
}

async function adapterInfoOf(adapter: GPUAdapter): Promise<GPUAdapterInfo | undefined> {
  const legacy = adapter as GPUAdapter & { requestAdapterInfo?: () => Promise<GPUAdapterInfo> };
  if (adapter.info) return adapter.info;
  // Chrome < 127 only had the (since removed) async form.
  return legacy.requestAdapterInfo ? await legacy.requestAdapterInfo().catch(() => undefined) : undefined;
}

function buildInfo(
  backend: WebGPUBackend,
  adapter: GPUAdapter,
  ai: GPUAdapterInfo | undefined,
  features: Iterable<string>,
  limits: GPUSupportedLimits,
  wanted: readonly string[],
  languageFeatures: readonly string[],
): DeviceInfo {
  const feats = [...features].sort();
  const info: DeviceInfo = {
    backend,
    adapter: {
      vendor: ai?.vendor ?? '',
      architecture: ai?.architecture ?? '',
      device: ai?.device ?? '',
      description: ai?.description ?? '',
      isFallbackAdapter: Boolean(ai?.isFallbackAdapter ?? (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter),
    },
    features: feats,
    missingFeatures: [...new Set(wanted)].filter((f) => !adapter.features.has(f)).sort(),
    limits: limitsOf(limits),
    wgslLanguageFeatures: [...languageFeatures],
  };
  const min = ai?.subgroupMinSize;
  const max = ai?.subgroupMaxSize;
  if (typeof min === 'number' && typeof max === 'number' && min > 0) info.subgroupSize = { min, max };
  return info;
}

/**
 * Requests a WebGPU device with the adapter's maximum limits and those of `wantFeatures` (default
 * {@link DEFAULT_WANTED_FEATURES}) that the adapter has, plus `requiredFeatures`.
 *
 * Uses `navigator.gpu` when the host has one, otherwise (in Node) the `webgpu` package, imported on first use; in Node it
 * also sets `XDG_RUNTIME_DIR` to the temp dir when unset and defines the `GPUBufferUsage`/`GPUMapMode`/… globals when
 * missing. Call {@link GPUDeviceHandle.destroy} when done.
 *
 * @throws {@link errors!DeviceError | DeviceError} `NO_ADAPTER` when there is no adapter (the message says what to
 * install), `DEVICE_ERROR` when the adapter lacks a required feature or the device request fails.
 */
export async function requestGPUDevice(options: RequestGPUDeviceOptions = {}): Promise<GPUDeviceHandle> {
  const wanted = options.wantFeatures ?? DEFAULT_WANTED_FEATURES;
  const required = options.requiredFeatures ?? [];
  const found = await findAdapter(options.powerPreference, options.dawnFlags ?? []);
  if (!found.ok) throw new DeviceError('NO_ADAPTER', found.reason);
  const { adapter, backend } = found;
  try {
    const lacking = required.filter((f) => !adapter.features.has(f));
    if (lacking.length)
      throw new DeviceError('DEVICE_ERROR', `the WebGPU adapter lacks required feature${lacking.length > 1 ? 's' : ''}: ${lacking.join(', ')}`);
    const requiredFeatures = [...new Set([...required, ...wanted.filter((f) => adapter.features.has(f))])];
    const base: GPUDeviceDescriptor = { requiredFeatures, ...(options.label ? { label: options.label } : {}) };
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice(options.maxLimits === false ? base : { ...base, requiredLimits: limitsOf(adapter.limits) });
    } catch (e) {
      if (options.maxLimits === false) throw e;
      // Some implementations reject a limit they list; fall back to the defaults rather than fail.
      device = await adapter.requestDevice(base);
    }
    const ai = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo ?? (await adapterInfoOf(adapter));
    const info = buildInfo(backend, adapter, ai, device.features, device.limits, wanted, found.languageFeatures);
    return makeHandle(device, info, options.onLost);
  } catch (e) {
    if (e instanceof DeviceError) throw e;
    throw new DeviceError('DEVICE_ERROR', `requesting a WebGPU device failed: ${errorText(e)}`, { cause: e });
  }
}

function makeHandle(device: GPUDevice, info: DeviceInfo, onLost: RequestGPUDeviceOptions['onLost']): GPUDeviceHandle {
  let destroyCalled = false;
  let record: DeviceLostRecord | undefined;
  const lost: Promise<DeviceLostRecord> = device.lost.then(
    (li) => {
      const expected = destroyCalled || li.reason === 'destroyed';
      record = { reason: li.reason ?? 'unknown', message: li.message ?? '', expected };
      if (!expected && onLost) {
        try {
          onLost(record);
        } catch {
          // a throwing callback must not turn into an unhandled rejection here
        }
      }
      return record;
    },
    (e: unknown) => {
      record = { reason: 'unknown', message: errorText(e), expected: destroyCalled };
      return record;
    },
  );
  return {
    device,
    info,
    lost,
    isLost: () => record !== undefined,
    lostInfo: () => record,
    destroy: async () => {
      if (!destroyCalled) {
        destroyCalled = true;
        device.destroy();
      }
      await lost;
    },
  };
}

/**
 * Says whether WebGPU is usable here and on which adapter, without creating a device: the adapter's features and
 * maximum limits as a {@link DeviceInfo}, or `{ available: false, reason }` saying what is missing. Never throws.
 */
export async function probeWebGPU(options: { powerPreference?: GPUPowerPreference; wantFeatures?: readonly GPUFeatureName[]; dawnFlags?: readonly string[] } = {}): Promise<DeviceInfo | WebGPUUnavailable> {
  let found: AdapterResult;
  try {
    found = await findAdapter(options.powerPreference, options.dawnFlags ?? []);
  } catch (e) {
    return { available: false, reason: errorText(e) };
  }
  if (!found.ok) return { available: false, reason: found.reason };
  try {
    const ai = await adapterInfoOf(found.adapter);
    return buildInfo(found.backend, found.adapter, ai, found.adapter.features, found.adapter.limits, options.wantFeatures ?? DEFAULT_WANTED_FEATURES, found.languageFeatures);
  } catch (e) {
    return { available: false, reason: `reading the WebGPU adapter failed: ${errorText(e)}` };
  }
}

function bytes(n: number | undefined): string {
  if (n === undefined) return '?';
  if (n >= 2 ** 30 && n % 2 ** 30 === 0) return `${n / 2 ** 30} GiB`;
  if (n >= 2 ** 20) return `${Math.round((n / 2 ** 20) * 10) / 10} MiB`;
  if (n >= 2 ** 10) return `${Math.round((n / 2 ** 10) * 10) / 10} KiB`;
  return `${n} B`;
}

/**
 * A one-line summary of a device or adapter, e.g.
 * `node-dawn: mesa llvmpipe-llvm-15-0-6-256-bits- (software, fallback) [llvmpipe: Mesa 25.0.7 …]; f16, subgroups 8, timestamps; storage binding 128 MiB, workgroup memory 32 KiB, 1024 invocations/workgroup`.
 */
export function describeDevice(info: DeviceInfo): string {
  const a = info.adapter;
  const name = [a.vendor, a.device].filter(Boolean).join(' ') || 'unknown adapter';
  const kind = [a.architecture, a.isFallbackAdapter ? 'fallback' : ''].filter(Boolean).join(', ');
  const has = (f: string) => info.features.includes(f);
  const sg = info.subgroupSize ? (info.subgroupSize.min === info.subgroupSize.max ? `${info.subgroupSize.min}` : `${info.subgroupSize.min}-${info.subgroupSize.max}`) : '';
  const feats = [has('shader-f16') ? 'f16' : 'no f16', has('subgroups') ? `subgroups${sg ? ` ${sg}` : ''}` : 'no subgroups', has('timestamp-query') ? 'timestamps' : 'no timestamps'];
  const l = info.limits;
  return (
    `${info.backend}: ${name}${kind ? ` (${kind})` : ''}${a.description ? ` [${a.description}]` : ''}; ${feats.join(', ')}; ` +
    `storage binding ${bytes(l.maxStorageBufferBindingSize)}, workgroup memory ${bytes(l.maxComputeWorkgroupStorageSize)}, ` +
    `${l.maxComputeInvocationsPerWorkgroup ?? '?'} invocations/workgroup`
  );
}
