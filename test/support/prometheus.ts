// A strict reader of the Prometheus text exposition format (0.0.4), enough to check what /metrics serves: HELP and
// TYPE lines, samples with optional labels and float values (NaN, +Inf), every sample inside a declared family.
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface PromFamily {
  type: string;
  help: string;
  samples: PromSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

export function parsePrometheus(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const lines = text.split('\n').slice(0, -1);
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}: ${line}`;
    if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
      const [, kind, name, ...rest] = line.split(' ');
      if (!NAME.test(name)) throw new Error(`bad metric name, ${where}`);
      const f = families.get(name) ?? { type: 'untyped', help: '', samples: [] };
      if (kind === 'HELP') f.help = rest.join(' ');
      else {
        if (!['counter', 'gauge', 'summary', 'histogram', 'untyped'].includes(rest[0]) || rest.length !== 1) throw new Error(`bad TYPE, ${where}`);
        if (f.samples.length) throw new Error(`TYPE after samples, ${where}`);
        f.type = rest[0];
      }
      families.set(name, f);
      continue;
    }
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ([^ ]+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`bad sample, ${where}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
      let at = 0;
      let lm: RegExpExecArray | null;
      while ((lm = re.exec(m[3]))) {
        labels[lm[1]] = lm[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
        at = re.lastIndex;
      }
      if (at !== m[3].length) throw new Error(`bad labels, ${where}`);
    }
    const v = m[4];
    const value = v === 'NaN' ? NaN : v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
    if (!(v === 'NaN' || /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v) || Number.isFinite(value) === false)) throw new Error(`bad value, ${where}`);
    const family = [m[1], m[1].replace(/_(sum|count|bucket)$/, '')].find((n) => families.has(n));
    if (!family) throw new Error(`sample outside a declared family, ${where}`);
    families.get(family)!.samples.push({ name: m[1], labels, value });
  }
  return families;
}
