/**
 * The dev-server side of the build plugin: a Connect-style middleware (Vite's `configureServer`) that serves compiled
 * model assets straight from the build cache at `<base>@tensorwright/<key>/<file>`, so `vite dev` emits nothing.
 * @module
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { CACHE_FILES } from './build-cache.js';

/** The URL path segment (after the server's base) under which the dev server serves compiled assets. */
export const DEV_URL_PREFIX = '@tensorwright/';

const SERVED: Readonly<Record<string, string>> = {
  [CACHE_FILES.manifest]: 'application/json',
  [CACHE_FILES.weights]: 'application/octet-stream',
  [CACHE_FILES.tokenizer['llama2c-bin']]: 'application/octet-stream',
  [CACHE_FILES.tokenizer['hf-json']]: 'application/json',
};

/**
 * A middleware answering `GET <base>@tensorwright/<key>/<file>` from `cacheDir/<key>/<file>` (only the asset files a
 * cache entry holds; keys are hex, so nothing outside the cache can be named) and passing every other request on.
 */
export function serveCachedAssets(cacheDir: string, base = '/'): (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void {
  const prefix = `${base}${DEV_URL_PREFIX}`;
  return (req, res, next) => {
    const url = (req.url ?? '').split('?')[0];
    if (!url.startsWith(prefix) || (req.method !== 'GET' && req.method !== 'HEAD')) return next();
    const m = /^([0-9a-f]{16,64})\/([a-z.]+)$/.exec(url.slice(prefix.length));
    if (!m || !(m[2] in SERVED)) {
      res.statusCode = 404;
      res.end('not a compiled model asset');
      return;
    }
    const file = join(cacheDir, m[1], m[2]);
    stat(file).then(
      (st) => {
        res.statusCode = 200;
        res.setHeader('Content-Type', SERVED[m[2]]);
        res.setHeader('Content-Length', String(st.size));
        res.setHeader('Cache-Control', 'no-cache');
        if (req.method === 'HEAD') return void res.end();
        createReadStream(file).on('error', next).pipe(res);
      },
      () => {
        res.statusCode = 404;
        res.end('compiled model asset not in the build cache (rebuild the importing module)');
      },
    );
  };
}
