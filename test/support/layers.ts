// The layer rules of src/, as data, and a checker over the import graph (issue #9 item 5).
//
// Every relative module specifier counts: `import ... from`, `import type`, `export ... from`,
// side-effect `import '...'`, dynamic `import('...')`, and type-level `import('...')`.
// A `.js` specifier resolves to the `.ts` file beside it; a relative specifier that resolves to no
// file in the map is itself a violation, so a typo cannot hide an edge.
import ts from 'typescript';
import { posix } from 'node:path';

/** A layer rule: files under `from` may not import anything matched by `forbid` (unless it matches `allow`). */
export interface LayerRule {
  /** Short name used in violation messages. */
  name: string;
  /** Path prefix (directory with trailing `/`, or an exact file) of the importing files. */
  from: string;
  /** Path prefixes the importing files may not reach. */
  forbid?: readonly string[];
  /** When set, the importing files may reach only these path prefixes (everything else is forbidden). */
  only?: readonly string[];
}

/** Shared at the root: any layer may import these. */
export const SHARED_EVERYWHERE: readonly string[] = ['src/errors.ts', 'src/util/'];

/** The top of the stack: nothing in a lower layer may import these. */
const TOP = ['src/compress/', 'src/models/', 'src/cli/', 'src/compile.ts', 'src/webgpu-pipeline.ts', 'src/export/', 'src/plugin/', 'src/tune/'];

/** The rules, lowest layer first. */
export const LAYER_RULES: readonly LayerRule[] = [
  // what every layer may import must itself import nothing else, or the exemption would be a back door
  { name: 'errors.ts and util import only each other', from: 'src/errors.ts', only: [] },
  { name: 'errors.ts and util import only each other', from: 'src/util/', only: [] },
  { name: 'ir imports only ir', from: 'src/ir/', only: ['src/ir/'] },
  // tokenizers sit beside ir: the runtime and the frontends both use them, so they import neither
  { name: 'tokenizers import only tokenizers', from: 'src/tokenizers/', only: ['src/tokenizers/'] },
  {
    name: 'runtime does not import the compiler',
    from: 'src/runtime/',
    forbid: ['src/passes/', 'src/codegen/', 'src/frontends/', 'src/autodiff/', ...TOP],
  },
  // autodiff transforms graphs (the passes' level) and trains on the CPU reference backend
  { name: 'autodiff imports only ir, the CPU backend and autodiff', from: 'src/autodiff/', only: ['src/ir/', 'src/runtime/cpu/', 'src/autodiff/'] },
  { name: 'passes do not import codegen', from: 'src/passes/', forbid: ['src/codegen/', 'src/frontends/', ...TOP] },
  {
    name: 'codegen does not import passes or frontends',
    from: 'src/codegen/',
    forbid: ['src/passes/', 'src/frontends/', ...TOP],
  },
  {
    name: 'frontends do not import passes or codegen',
    from: 'src/frontends/',
    forbid: ['src/passes/', 'src/codegen/', 'src/cli/', 'src/compile.ts', 'src/webgpu-pipeline.ts', 'src/export/', 'src/compress/'],
  },
  // the exporters read IR graphs (after the target-independent passes) and write files: no runtime, no codegen,
  // and of the frontends only the ONNX protobuf schema, which the ONNX exporter shares with the importer
  {
    name: 'export imports only ir, passes and the ONNX schema',
    from: 'src/export/',
    only: ['src/ir/', 'src/passes/', 'src/export/', 'src/frontends/onnx/schema.ts'],
  },
  // weight compression (calibration, GPTQ, AWQ, pruning) sits at the passes' level, calibrates on the CPU reference
  // and takes gradients (SNIP, GraSP, Fisher, fine-tuning) from autodiff, which sits at the same level below it
  {
    name: 'compress imports only ir, passes, autodiff and the CPU reference',
    from: 'src/compress/',
    only: ['src/ir/', 'src/passes/', 'src/autodiff/', 'src/runtime/cpu/', 'src/compress/'],
  },
  // the build plugin's browser side ends up in apps' bundles: it may use the runtime, never the compiler
  { name: 'the plugin client imports only the runtime', from: 'src/plugin/client.ts', only: ['src/runtime/', 'src/plugin/import-query.ts', 'src/plugin/engine-requirements.ts'] },
  { name: 'the plugin client imports only the runtime', from: 'src/plugin/engine-requirements.ts', only: ['src/runtime/'] },
  { name: 'the plugin client imports only the runtime', from: 'src/plugin/import-query.ts', only: [] },
];

/** One import edge that breaks a rule (or cannot be resolved). */
export interface LayerViolation {
  /** Importing file, e.g. `src/ir/x.ts`. */
  from: string;
  /** Resolved imported file, or the raw specifier when it does not resolve. */
  to: string;
  /** The rule's name, or `unresolved import`. */
  rule: string;
  /** `src/a/b.ts imports src/x/y.ts (rule: ...)`. */
  message: string;
}

function matches(path: string, prefix: string): boolean {
  return prefix.endsWith('/') ? path.startsWith(prefix) : path === prefix;
}

/** Every module specifier in `source` (static, type-only, re-export, dynamic, and `import('...')` types). */
export function moduleSpecifiers(path: string, source: string): string[] {
  const sf = ts.createSourceFile(path, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      if (ts.isStringLiteral(node.moduleSpecifier)) out.push(node.moduleSpecifier.text);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const e = node.moduleReference.expression;
      if (ts.isStringLiteralLike(e)) out.push(e.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const a = node.arguments[0];
      if (a && ts.isStringLiteralLike(a)) out.push(a.text);
    } else if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      if (ts.isLiteralTypeNode(arg) && ts.isStringLiteral(arg.literal)) out.push(arg.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** Resolve a relative specifier from `fromPath` against the file map; `undefined` when no file matches. */
export function resolveSpecifier(fromPath: string, spec: string, files: ReadonlyMap<string, string>): string | undefined {
  const base = posix.normalize(posix.join(posix.dirname(fromPath), spec));
  const candidates = [base];
  if (base.endsWith('.js')) candidates.push(base.slice(0, -3) + '.ts');
  else if (!base.endsWith('.ts')) candidates.push(base + '.ts', base + '/index.ts');
  return candidates.find((c) => files.has(c));
}

/** The resolved relative import edges of every file in the map, plus the specifiers that did not resolve. */
export function importEdges(files: ReadonlyMap<string, string>): {
  edges: { from: string; to: string }[];
  unresolved: { from: string; spec: string }[];
} {
  const edges: { from: string; to: string }[] = [];
  const unresolved: { from: string; spec: string }[] = [];
  for (const [path, source] of files) {
    for (const spec of moduleSpecifiers(path, source)) {
      if (!spec.startsWith('./') && !spec.startsWith('../')) continue;
      const to = resolveSpecifier(path, spec, files);
      if (to === undefined) unresolved.push({ from: path, spec });
      else edges.push({ from: path, to });
    }
  }
  return { edges, unresolved };
}

/** The rule (if any) that the edge `from -> to` breaks. */
export function brokenRule(from: string, to: string, rules: readonly LayerRule[] = LAYER_RULES): LayerRule | undefined {
  if (SHARED_EVERYWHERE.some((p) => matches(to, p))) return undefined;
  return rules.find((r) => {
    if (!matches(from, r.from)) return false;
    if (r.only && !r.only.some((p) => matches(to, p))) return true;
    return r.forbid?.some((p) => matches(to, p)) ?? false;
  });
}

/** Every import in `files` (path → source text) that breaks a layer rule or does not resolve, sorted. */
export function layerViolations(files: ReadonlyMap<string, string>, rules: readonly LayerRule[] = LAYER_RULES): LayerViolation[] {
  const { edges, unresolved } = importEdges(files);
  const out: LayerViolation[] = [];
  for (const { from, spec } of unresolved) {
    out.push({ from, to: spec, rule: 'unresolved import', message: `${from} imports ${spec} (unresolved import: no such file)` });
  }
  const seen = new Set<string>();
  for (const { from, to } of edges) {
    const rule = brokenRule(from, to, rules);
    if (!rule || seen.has(`${from} -> ${to}`)) continue;
    seen.add(`${from} -> ${to}`);
    out.push({ from, to, rule: rule.name, message: `${from} imports ${to} (rule: ${rule.name})` });
  }
  return out.sort((a, b) => a.message.localeCompare(b.message));
}
