/**
 * Where the values a static W8A8 clip cuts off lie: for one matmul input of a model (by its weight's name), over the
 * first windows of a calibration text, the clip a calibrator picks (`src/compress/calibrators.ts`, histogram of `|x|`
 * over those windows) and the values above it counted by input channel and by position. A report, not a test:
 * it says whether a calibrator's clipping falls on a few outlier channels (which `quantize --outliers T` can take out
 * of the int8 path) or is spread over the channels.
 *
 *   npx tsx scripts/w8a8-clipped-values.ts MODEL TOKENIZER WEIGHT CALIB_TEXT [--windows 6] [--calibrator entropy]
 * @module
 */
import { readFile } from 'node:fs/promises';
import { openModel } from '../src/cli/model-input.js';
import { ActivationHistogram, calibrate, type Calibrator } from '../src/compress/calibrators.js';
import { tokenWindows, weightMatmuls, windowInputs } from '../src/compress/capture.js';
import { attrsOf } from '../src/ir/attrs.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const [modelPath, tokPath, weightName, calibPath] = args;
if (!calibPath) throw new Error('usage: w8a8-clipped-values.ts MODEL TOKENIZER WEIGHT CALIB_TEXT [--windows N] [--calibrator C]');
const { model, tokenizer } = await openModel(modelPath, tokPath);
const ids = tokenizer!.encode(await readFile(calibPath, 'utf8'));
const windows = tokenWindows(ids, model.bosId, model.maxPositions).slice(0, Number(opt('windows', '6')));
const graph = model.build({ lastTokenLogitsOnly: false });
const input = weightMatmuls(graph).find((m) => attrsOf(m.weight, 'weight').name === weightName)?.input;
if (!input) throw new Error(`no matmul reads a weight named ${weightName}`);
const k = input.shape[input.shape.length - 1] as number;
const rows: { values: Float32Array; position: number }[] = [];
for (const w of windows)
  runGraph(graph, windowInputs(graph, w), {
    observe: (node, v) => {
      if (node !== input) return;
      for (let r = 0; r < v.numbers.length / k; r++) rows.push({ values: Float32Array.from(v.numbers.slice(r * k, (r + 1) * k)), position: r });
    },
  });
const h = new ActivationHistogram();
h.range = Math.max(...rows.map((r) => Math.max(...r.values.map(Math.abs)))) * (1 + 1e-6);
for (const r of rows) h.add(r.values);
const calibrator = opt('calibrator', 'entropy') as Calibrator;
const clip = calibrate(h, calibrator, { bits: 8 });
const byChannel = new Float64Array(k);
const byPosition = new Map<number, number>();
let over = 0;
for (const r of rows)
  r.values.forEach((x, j) => {
    if (Math.abs(x) <= clip) return;
    over++;
    byChannel[j]++;
    byPosition.set(r.position, (byPosition.get(r.position) ?? 0) + 1);
  });
const top = <T>(entries: [T, number][]): string => entries.sort((a, b) => b[1] - a[1]).slice(0, 12).map(([key, n]) => `${key}:${n}`).join(' ');
console.log(`${weightName} input: ${rows.length} rows × ${k} channels, max |x| ${h.absMax.toFixed(4)}, ${calibrator} clip ${clip.toFixed(4)} (${((100 * clip) / h.absMax).toFixed(1)}% of the range)`);
console.log(`values above the clip: ${over} (${((100 * over) / (rows.length * k)).toFixed(2)}% of all), in ${byChannel.filter((c) => c > 0).length} of ${k} channels`);
console.log(`by channel (most first): ${top([...byChannel].map((c, j): [number, number] => [j, c]))}`);
console.log(`by position (most first): ${top([...byPosition])}`);
