#!/usr/bin/env node
// The browser test (`npm run test:browser`, issue #11 item 5): builds examples/browser-chat with Vite and the
// tensorwright plugin (stories260K compiled at build time for the swiftshader and portable targets, into a fresh
// build cache), serves the build on a local port, drives headless Chromium (WebGPU through SwiftShader) through
// playwright-core, and checks that greedy generation in the page reproduces llama2.c's run.c ids (../shared/golden)
// for two prompts on the engine the page picks (SwiftShader's), for one prompt on the portable engine, and for one
// through the Vite dev server (assets served from the build cache). First it
// bundles the runtime entry alone for the browser with esbuild and checks its gzip size (≤ 60 KB, tokenizers not
// included).
//
// Environment: CHROMIUM (default /usr/bin/chromium); REQUIRE_WEBGPU=1 turns a page without WebGPU into a failure
// (otherwise the page checks are skipped with one loud line); STEP_TIMEOUT_MS (default 120000) bounds each step.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const example = join(repo, 'examples/browser-chat');
const shared = resolve(repo, '../shared');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const requireWebGPU = process.env.REQUIRE_WEBGPU === '1';
const stepTimeout = Number(process.env.STEP_TIMEOUT_MS ?? 120_000);
const RUNTIME_GZIP_LIMIT = 60 * 1024;
/** Golden sequences checked, and how many positions (prompt included) each runs: a few new tokens apiece. */
const GOLDEN = [
  { file: 'stories260K-1.json', newTokens: 12 },
  { file: 'stories260K-3.json', newTokens: 12 },
];

/** New tokens checked on the portable engine (its kernels are about a hundred times slower on SwiftShader). */
const PORTABLE_NEW_TOKENS = 3;

/** New tokens checked through the dev server. */
const DEV_NEW_TOKENS = 4;

const log = (line) => process.stdout.write(`[test:browser] ${line}\n`);
let failures = 0;
function check(ok, what) {
  log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

/** `promise`, or a rejection naming `what` after `ms`. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The runtime entry bundled alone for browsers: its gzip size, with and without the tokenizers. */
async function checkRuntimeSize() {
  const { build } = await import('esbuild');
  // the tokenizers (src/tokenizers/, and the Hugging Face library they load) left out: an app that needs one pays for it
  const leaveOutTokenizers = {
    name: 'leave-out-tokenizers',
    setup(b) {
      b.onResolve({ filter: /(^@huggingface\/tokenizers$|\/tokenizers\/)/ }, (args) => ({ path: args.path, external: true }));
    },
  };
  const bundle = async (plugins) => {
    const r = await build({ entryPoints: [join(repo, 'src/runtime/index.ts')], bundle: true, minify: true, format: 'esm', platform: 'browser', write: false, logLevel: 'silent', plugins });
    return r.outputFiles[0].contents;
  };
  const withoutTokenizers = gzipSync(await bundle([leaveOutTokenizers])).byteLength;
  const all = gzipSync(await bundle([])).byteLength;
  log(`runtime entry (src/runtime/index.ts, esbuild --platform=browser --minify): ${(withoutTokenizers / 1024).toFixed(1)} KB gzip without the tokenizers, ${(all / 1024).toFixed(1)} KB with them`);
  check(withoutTokenizers <= RUNTIME_GZIP_LIMIT, `runtime gzip size ${withoutTokenizers} B <= ${RUNTIME_GZIP_LIMIT} B`);
}

async function buildExample(cacheDir) {
  const { build } = await import('vite');
  process.env.TENSORWRIGHT_CACHE_DIR = cacheDir;
  await withTimeout(build({ configFile: join(example, 'vite.config.ts'), logLevel: 'warn' }), 5 * stepTimeout, 'vite build of examples/browser-chat');
  return join(example, 'dist');
}

/** A new page of `browser` at `url`, its console errors, page errors and failed requests printed. */
async function openPage(browser, url) {
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') log(`browser console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => log(`browser page error: ${e.message}`));
  page.on('requestfailed', (r) => log(`browser request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  await withTimeout(page.goto(url), stepTimeout, `opening ${url}`);
  return page;
}

/** Waits for the page to load its engine; returns which engine it runs, or undefined (after a failed check). */
async function waitReady(page, what) {
  await withTimeout(page.waitForFunction(() => document.body.dataset.state === 'ready' || document.body.dataset.state === 'error', undefined, { timeout: stepTimeout, polling: 200 }), stepTimeout + 1000, `loading the engine in the page (${what})`);
  const state = await page.evaluate(() => ({ state: document.body.dataset.state, error: document.body.dataset.error, variant: document.body.dataset.variant, status: document.getElementById('status')?.textContent }));
  if (state.state !== 'ready') {
    check(false, `the page loads the engine (${what}): ${state.error}`);
    return undefined;
  }
  log(`page (${what}): ${state.status}`);
  return state.variant;
}

/** Greedy generation in the page for golden sequence `file`, `newTokens` long, checked against run.c's ids. */
async function checkGolden(page, file, newTokens, what) {
  const golden = JSON.parse(readFileSync(join(shared, 'golden/stories260K', file), 'utf8'));
  const steps = golden.prompt_ids.length + newTokens - 1;
  const expected = golden.generated_ids.slice(0, newTokens);
  const got = await withTimeout(page.evaluate(([p, s]) => window.__tensorwrightTest(p, s), [golden.prompt, steps]), stepTimeout, `generating from ${JSON.stringify(golden.prompt)} (${what})`);
  check(JSON.stringify(got.promptIds) === JSON.stringify(golden.prompt_ids), `${what}: prompt ${JSON.stringify(golden.prompt)} encodes to run.c's ids ${JSON.stringify(golden.prompt_ids)} (page: ${JSON.stringify(got.promptIds)})`);
  check(JSON.stringify(got.generated) === JSON.stringify(expected), `${what}: greedy ids for ${JSON.stringify(golden.prompt)} equal run.c's ${JSON.stringify(expected)} (page: ${JSON.stringify(got.generated)})`);
}

async function runPages(dist) {
  const { preview } = await import('vite');
  const { chromium } = await import('playwright-core');
  const server = await preview({ configFile: join(example, 'vite.config.ts'), logLevel: 'warn', preview: { host: '127.0.0.1', port: 0, strictPort: false, open: false } });
  const url = server.resolvedUrls.local[0];
  log(`serving ${dist} at ${url}`);
  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan'] });
  try {
    const page = await openPage(browser, url);
    const gpu = await page.evaluate(async () => {
      if (!navigator.gpu) return { ok: false, why: 'navigator.gpu is missing' };
      const a = await navigator.gpu.requestAdapter();
      return a ? { ok: true, adapter: `${a.info.vendor} ${a.info.architecture}`.trim() } : { ok: false, why: 'navigator.gpu.requestAdapter() returned null' };
    });
    if (!gpu.ok) {
      const line = `the page has no WebGPU (${gpu.why}; Chromium ${browser.version()} at ${chromiumPath})`;
      if (requireWebGPU) return check(false, line);
      log(`SKIPPED the page checks: ${line}; set REQUIRE_WEBGPU=1 to make this a failure`);
      return;
    }
    log(`Chromium ${browser.version()}, WebGPU adapter: ${gpu.adapter}`);
    const variant = await waitReady(page, 'first engine that fits');
    if (variant === undefined) return;
    // the build compiled swiftshader and portable engines: SwiftShader's adapter must get its own
    check(variant === 'swiftshader', `the page picked the swiftshader engine for SwiftShader (picked: ${variant})`);
    for (const { file, newTokens } of GOLDEN) await checkGolden(page, file, newTokens, variant);
    const shown = await page.evaluate(() => ({ text: document.getElementById('output')?.textContent ?? '', stats: document.getElementById('stats')?.textContent ?? '' }));
    log(`page output: ${JSON.stringify(shown.text)}; ${shown.stats}`);
    check(/tok\/s/.test(shown.stats), 'the page shows tokens/s');
    await page.close();

    // the portable engine (the plugin's default target) on the same adapter: a few tokens, as its kernels are slow there
    const portable = await openPage(browser, `${url}?target=portable`);
    if ((await waitReady(portable, 'target=portable')) === 'portable') await checkGolden(portable, GOLDEN[0].file, PORTABLE_NEW_TOKENS, 'portable');
    else check(false, 'the page loads the portable engine when asked to');
  } finally {
    await browser.close();
    await new Promise((r) => server.httpServer.close(r));
  }
}

/** The dev server (`vite` serve: modules transformed on request, compiled assets served from the build cache). */
async function runDevServer() {
  const { createServer } = await import('vite');
  const { chromium } = await import('playwright-core');
  const server = await createServer({ configFile: join(example, 'vite.config.ts'), logLevel: 'error', server: { host: '127.0.0.1', port: 0, strictPort: false } });
  await server.listen();
  const url = server.resolvedUrls.local[0];
  log(`dev server at ${url}`);
  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan'] });
  try {
    const page = await openPage(browser, url);
    const variant = await waitReady(page, 'dev server');
    if (variant !== undefined) await checkGolden(page, GOLDEN[1].file, DEV_NEW_TOKENS, `dev server, ${variant}`);
  } finally {
    await browser.close();
    await server.close();
  }
}

async function main() {
  if (!existsSync(join(shared, 'golden/stories260K')) || !existsSync(join(shared, 'models/stories260K/stories260K.bin'))) {
    log(`SKIPPED: ${shared} has no stories260K model or golden files (CI always has them)`);
    return;
  }
  if (!existsSync(chromiumPath)) throw new Error(`no Chromium at ${chromiumPath}: run scripts/setup-webgpu-linux.sh (Debian: apt-get install chromium) or set CHROMIUM`);
  await checkRuntimeSize().catch((e) => check(false, `bundling the runtime entry for browsers: ${e.message}`));
  const cacheDir = mkdtempSync(join(tmpdir(), 'tensorwright-browser-test-'));
  try {
    const dist = await buildExample(cacheDir);
    await runPages(dist);
    if (failures === 0 || !requireWebGPU) await runDevServer();
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
  if (failures > 0) throw new Error(`${failures} check(s) failed`);
  log('all checks passed');
}

main().catch((e) => {
  process.stderr.write(`[test:browser] error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
