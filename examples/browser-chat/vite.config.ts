/**
 * Vite config of the browser-chat example: the tensorwright plugin compiles `@models/…?tensorwright` imports at build
 * time. `@models` is `TENSORWRIGHT_MODELS` when set, else `../shared/models` beside the repository (where CI keeps
 * stories260K). `TENSORWRIGHT_TARGET` lists the targets to compile for (default `swiftshader,portable`: the page runs
 * the SwiftShader engine on headless Chromium's software WebGPU and the portable one on any other device; add
 * `discrete` in front for GPUs with 32-wide subgroups), `TENSORWRIGHT_CACHE_DIR` the build cache. In an app that installs tensorwright, import the plugin from `tensorwright/plugin`.
 * @module
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import { vite as tensorwright, MODEL_TARGETS, type ModelTargetName } from '../../src/plugin/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const target = (process.env.TENSORWRIGHT_TARGET ?? 'swiftshader,portable').split(',') as ModelTargetName[];
for (const t of target) if (!MODEL_TARGETS.includes(t)) throw new Error(`TENSORWRIGHT_TARGET must list targets of ${MODEL_TARGETS.join(', ')}, got '${t}'`);

export default defineConfig({
  root: here,
  resolve: { alias: { '@models': process.env.TENSORWRIGHT_MODELS ?? resolve(repo, '../shared/models') } },
  plugins: [tensorwright({ target, ...(process.env.TENSORWRIGHT_CACHE_DIR ? { cacheDir: process.env.TENSORWRIGHT_CACHE_DIR } : {}) })],
  build: { outDir: resolve(here, 'dist'), emptyOutDir: true, target: 'es2022' },
});
