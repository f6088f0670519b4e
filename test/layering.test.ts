/**
 * The layer rules of src/ (issue #9 item 5), checked over the real import graph: ir at the bottom, runtime beside the
 * compiler but never importing it, passes and codegen independent of each other, frontends above ir only.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { layerViolations } from './support/layers.js';
import { repoRoot } from './support/shared.js';

function srcFiles(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) files.set(relative(repoRoot, p).split('\\').join('/'), readFileSync(p, 'utf8'));
    }
  };
  walk(join(repoRoot, 'src'));
  return files;
}

describe('layering of src/', () => {
  const violations = layerViolations(srcFiles());

  it('has no import that breaks a layer rule', () => {
    expect(violations.map((v) => v.message)).toEqual([]);
  });

  it('reads the whole src tree', () => {
    const files = srcFiles();
    expect(files.has('src/ir/node.ts')).toBe(true);
    expect(files.size).toBeGreaterThan(50);
  });
});

describe('layer checker', () => {
  const ok = new Map<string, string>([
    ['src/errors.ts', 'export class E extends Error {}'],
    ['src/util/random.ts', 'export const r = 1;'],
    ['src/passes/dce.ts', 'export const dce = 1;'],
    ['src/codegen/z.ts', 'export const z = 1;'],
    ['src/ir/node.ts', "import { E } from '../errors.js';\nimport { r } from '../util/random.js';\nexport const n = 1;"],
  ]);

  it('reports a wrong import in each import form, naming file, target and rule', () => {
    const files = new Map(ok);
    files.set('src/ir/x.ts', "import { dce } from '../passes/dce.js';\nexport const x = dce;");
    files.set('src/runtime/y.ts', "export type { Z } from '../codegen/z.js';");
    files.set('src/runtime/w.ts', "export async function f() { return import('../codegen/z.js'); }");
    files.set('src/frontends/t.ts', "import type { D } from '../passes/dce.js';\nlet d: typeof import('../codegen/z.js');");
    files.set('src/passes/s.ts', "import '../codegen/z.js';");
    files.set('src/util/u.ts', "import { n } from '../ir/node.js';");
    files.set('src/export/onnx/x.ts', "import { z } from '../../codegen/z.js';\nimport { dce } from '../../passes/dce.js';");
    const messages = layerViolations(files).map((v) => v.message);
    expect(messages).toEqual([
      'src/export/onnx/x.ts imports src/codegen/z.ts (rule: export imports only ir, passes and the ONNX schema)',
      'src/frontends/t.ts imports src/codegen/z.ts (rule: frontends do not import passes or codegen)',
      'src/frontends/t.ts imports src/passes/dce.ts (rule: frontends do not import passes or codegen)',
      'src/ir/x.ts imports src/passes/dce.ts (rule: ir imports only ir)',
      'src/passes/s.ts imports src/codegen/z.ts (rule: passes do not import codegen)',
      'src/runtime/w.ts imports src/codegen/z.ts (rule: runtime does not import the compiler)',
      'src/runtime/y.ts imports src/codegen/z.ts (rule: runtime does not import the compiler)',
      'src/util/u.ts imports src/ir/node.ts (rule: errors.ts and util import only each other)',
    ]);
  });

  it('allows ir → ir, errors.ts and util, and ignores package imports and commented-out imports', () => {
    const files = new Map(ok);
    files.set('src/ir/y.ts', "import { n } from './node.js';\nimport ts from 'typescript';\n// import { dce } from '../passes/dce.js';\nconst s = \"import '../codegen/z.js'\";");
    expect(layerViolations(files)).toEqual([]);
  });

  it('reports a relative import that resolves to no file, so a typo cannot hide an edge', () => {
    const files = new Map(ok);
    files.set('src/runtime/y.ts', "import { z } from '../codgen/z.js';");
    expect(layerViolations(files).map((v) => v.message)).toEqual(['src/runtime/y.ts imports ../codgen/z.js (unresolved import: no such file)']);
  });
});
