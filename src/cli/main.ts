/**
 * The `tensorwright` command line: `generate`, `compile`, `inspect`, `eval`, `quantize`, `prune`, `bench`, `serve`, `serve-bench`,
 * `onnx-test`, `demo`. Exit codes
 * are the same for every command: 0 on success, {@link EXIT_USAGE} for usage errors (an unknown command or option, a
 * missing or bad option value, a {@link UsageError}), {@link EXIT_FAILURE} for everything else (missing files,
 * malformed models, device errors).
 * @module
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '../errors.js';
import { generateCommand } from './generate.js';
import { inspectCommand } from './inspect.js';
import { demoCommand } from './demo.js';
import { compileCommand } from './compile.js';
import { onnxTestCommand } from './onnx-test.js';
import { errorLine } from './output.js';
import { evalCommand } from './eval.js';
import { benchCommand } from './bench.js';
import { exportOnnxCommand } from './export-onnx.js';
import { quantizeCommand } from './quantize.js';
import { pruneCommand } from './prune.js';
import { serveCommand } from './serve.js';
import { serveBenchCommand } from './serve-bench.js';
import { parseQuantScheme, QUANT_GRAMMAR, QUANT_SCHEMES } from '../ir/quant-scheme.js';
import { parseSparsityScheme, SPARSITY_SCHEMES } from '../ir/sparsity-scheme.js';
import { DEFAULT_MAX_CONTEXT, MAX_CONTEXT_LIMIT } from '../frontends/context.js';

/** Exit code of a usage error (commander's and POSIX utilities' convention). */
export const EXIT_USAGE = 2;
/** Exit code of every other failure: a missing or malformed file, a model the compiler rejects, a device error. */
export const EXIT_FAILURE = 1;

/** The package's version, read from its package.json (two folders above this file in `src/cli` and `dist/cli`). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function num(name: string, opts: { int?: boolean; min?: number; max?: number } = {}) {
  return (v: string): number => {
    const x = Number(v);
    if (v.trim() === '' || !Number.isFinite(x) || (opts.int && !Number.isInteger(x)) || (opts.min !== undefined && x < opts.min) || (opts.max !== undefined && x > opts.max))
      throw new InvalidArgumentError(`${name} must be ${opts.int ? 'an integer' : 'a number'}${opts.min !== undefined ? ` >= ${opts.min}` : ''}${opts.max !== undefined ? ` and <= ${opts.max}` : ''}, got '${v}'`);
    return x;
  };
}

/**
 * `--kv-dtype <type>`: the KV cache's element type (`compile`'s `kv.dtype`). On the CPU reference backend `int8`/`int4`
 * run the same quantize/dequantize semantics (the `quantize-kv-cache` pass) with f32 storage.
 */
/** `--kv-calib <file>`: center the cached keys on per-layer offsets calibrated on a text (`src/compress/key-offsets.ts`). */
function kvCalibOption(): Option {
  return new Option('--kv-calib <file>', 'center the cached keys on per-layer, per-KV-head means measured on this text (more precise int8/int4 KV caches; attention is unchanged)');
}

/** `--whole-step <mode>`: the one-workgroup whole-step decode kernel for small llamas (`compile`'s `wholeStep`). */
function wholeStepOption(): Option {
  return new Option('--whole-step <mode>', 'decode small llamas with one whole-step kernel (one workgroup, no per-op dispatches): auto lets the cost model decide').choices(['auto', 'on', 'off']).default('auto');
}

function kvDtypeOption(): Option {
  return new Option('--kv-dtype <type>', 'element type of the KV cache: f16 halves it (needs shader-f16); int8 and int4 store integers with a scale per token and head').choices(['f32', 'f16', 'int8', 'int4']).default('f32');
}

/** `--kv-block-size <n>`'s parser: a power of two from 1 to 256 (what the Target accepts), else a usage error. */
function kvBlockSize(v: string): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isInteger(x) || x < 1 || x > 256 || (x & (x - 1)) !== 0) throw new InvalidArgumentError(`--kv-block-size must be a power of two from 1 to 256, got '${v}'`);
  return x;
}

/** `--max-context <n>`: the context a model is compiled for, capping what its file declares (bounded allocation). */
function maxContextOption(): Option {
  return new Option('--max-context <n>', `most positions to compile for; a file's declared context is capped to it (default ${DEFAULT_MAX_CONTEXT})`).argParser(num('--max-context', { int: true, min: 1, max: MAX_CONTEXT_LIMIT }));
}

/** `--quant <scheme>`, checked when parsed (an unknown scheme is a usage error listing the known ones). */
function quantOption(): Option {
  return new Option('--quant <scheme>', `weight quantization: ${QUANT_SCHEMES.join(', ')} (${QUANT_GRAMMAR}; integers default to groups of 32 with zero points, nf4/ternary/binary/log2 to scale groups of 64)`)
    .argParser((v: string) => {
      try {
        parseQuantScheme(v);
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
      return v;
    })
    .default('none');
}

/** `--sparsity <pattern>`, checked when parsed. */
function sparsityOption(): Option {
  return new Option('--sparsity <pattern>', `weight sparsity, magnitude pruning: ${SPARSITY_SCHEMES.join(', ')} (block32-0.1 keeps 10% of 32x32 blocks)`)
    .argParser((v: string) => {
      try {
        parseSparsityScheme(v);
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
      return v;
    })
    .default('none');
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];
}

function printIrAfter(list: string[]): readonly string[] | 'all' | undefined {
  if (list.includes('all')) return 'all';
  return list.length ? list : undefined;
}

/** Builds the command-line program (exported for tests); commands that decide their own exit code set `state.exitCode`. */
export function buildProgram(state: { exitCode: number } = { exitCode: 0 }): Command {
  const program = new Command('tensorwright')
    .description('Compile and run transformer models on WebGPU (with a CPU reference backend).')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError(false)
    .exitOverride()
    // errors are printed by main() as one typed line; help asked for by a bare `tensorwright` still goes to stderr
    .configureOutput({ outputError: () => {} })
    .addHelpText('after', `\nExit codes: 0 success, ${EXIT_FAILURE} error (a missing or malformed file, a model or device error), ${EXIT_USAGE} usage error.`);

  program
    .command('generate')
    .description('generate text with a model (llama2.c-compatible step counting and sampling)')
    .option('--model <file>', 'model file (llama2.c .bin checkpoint)')
    .option('--engine <dir>', 'a saved engine (from `tensorwright compile`) to run instead of a model file')
    .option('--tokenizer <file>', "tokenizer file (default: the model's own, from a GGUF file or a Hugging Face folder; else tok<vocab>.bin or tokenizer.bin beside the model, or in the engine)")
    .option('--prompt <text>', 'prompt text', '')
    .option('--steps <n>', 'positions to run, prompt included (as run.c)', num('--steps', { int: true, min: 1 }), 256)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', num('--temperature', { min: 0 }), 1.0)
    .option('--topp <p>', 'nucleus sampling threshold in [0,1]', num('--topp', { min: 0, max: 1 }), 0.9)
    .option('--topk <k>', 'keep only the k most likely tokens before top-p (0 = off)', num('--topk', { int: true, min: 0 }), 0)
    .option('--seed <s>', 'random seed (default: time, as run.c)', num('--seed', { int: true, min: 0 }))
    .addOption(new Option('--backend <name>', 'backend (default: webgpu when an adapter exists, else cpu)').choices(['cpu', 'webgpu', 'auto']).default('auto'))
    .option('--profile', 'print per-kernel GPU times of the last step (webgpu, needs timestamp-query)', false)
    .option('--passes <preset>', 'pass pipeline: O0..O3 or a comma-separated list of pass names', 'O3')
    .option('--print-ir-after <pass>', "print the IR (to stderr) after this pass, or 'all' (repeatable)", collect, [])
    .addOption(new Option('--precision <policy>', 'precision policy: auto (f16 where the device has it and it is faster), f32, f16').choices(['auto', 'f32', 'f16']).default('auto'))
    .option('--kv-block-size <n>', 'tokens per KV-cache block (a power of two, 1..256)', kvBlockSize, 16)
    .option('--kv-window <sinks,recent>', 'keep the K/V of the first SINKS and last RECENT tokens only (StreamingLLM sliding window with attention sinks, rounded to KV blocks), so --steps may exceed the context; runs through the serving scheduler')
    .option('--kv-h2o <budget,recent>', 'keep at most BUDGET tokens of K/V under H2O heavy-hitter eviction (the last RECENT tokens and the blocks that received the most attention, rounded to KV blocks), so --steps may exceed the context; through the serving scheduler, on the CPU backend unless --backend webgpu')
    .addOption(kvDtypeOption())
    .addOption(kvCalibOption())
    .addOption(quantOption())
    .addOption(maxContextOption())
    .addOption(sparsityOption())
    .addOption(new Option('--speculative <kind>', 'speculative decoding: drafts from n-gram lookup in the context (ngram) or a draft model (draft); exact: the output distribution is the model\'s').choices(['ngram', 'draft']))
    .option('--draft-model <file>', 'with --speculative draft: the draft model, sharing the tokenizer (default: --model itself, quantized by --draft-quant)')
    .option('--draft-quant <scheme>', 'with --speculative draft: weight quantization of the draft model (default int4-g32 when it is --model itself)')
    .option('--draft-len <k>', 'with --speculative: draft length to start from; it adapts up to max(8, k) (default 4)', num('--draft-len', { int: true, min: 1, max: 64 }))
    .option('--json', 'print one JSON object on stdout', false)
    .action(async (o) => {
      await generateCommand({ ...o, seed: o.seed ?? Date.now() % 2 ** 31, printIrAfter: printIrAfter(o.printIrAfter) });
    });

  program
    .command('inspect')
    .description("print a model's config, parameters, what the optimizer does to it (kernels, memory) and its IR; or, for a saved engine folder, its plans and kernels with how each variant was chosen (tuned or heuristic)")
    .requiredOption('--model <file>', 'model file, or a saved engine folder')
    .option('--passes <preset>', 'pass pipeline: O0..O3 or a comma-separated list of pass names', 'O3')
    .option('--seq <n>', 'prefill length for kernel and memory figures', num('--seq', { int: true, min: 1 }), 512)
    .addOption(new Option('--target <name>', 'cpu: the optimizer for the CPU reference backend; webgpu: the whole WebGPU pipeline to the dispatch list, no device needed').choices(['cpu', 'webgpu']).default('cpu'))
    .addOption(new Option('--device-profile <name>', 'with --target webgpu: the device to compile for (default: the local adapter, else lavapipe)').choices(['lavapipe', 'discrete']))
    .addOption(new Option('--precision <policy>', 'precision policy: auto (f16 where the device has it and it is faster), f32, f16').choices(['auto', 'f32', 'f16']).default('auto'))
    .option('--kv-block-size <n>', 'tokens per KV-cache block (a power of two, 1..256)', kvBlockSize, 16)
    .addOption(kvDtypeOption())
    .addOption(quantOption())
    .addOption(maxContextOption())
    .addOption(sparsityOption())
    .option('--print-ir-after <pass>', "print the IR (to stderr) after this pass, or 'all' (repeatable)", collect, [])
    .option('--json', 'print one JSON object on stdout', false)
    .action(async (o) => {
      await inspectCommand({ ...o, printIrAfter: printIrAfter(o.printIrAfter) });
    });

  program
    .command('compile')
    .description('compile a model into a saved WebGPU engine (runs without the compiler: generate --engine <dir>)')
    .requiredOption('--model <file>', 'model file')
    .requiredOption('-o, --output <dir>', 'engine directory to write')
    .option('--tokenizer <file>', 'tokenizer to store with the engine (default: found beside the model)')
    .option('--passes <preset>', 'pass pipeline: O0..O3 or a comma-separated list of pass names', 'O3')
    .addOption(new Option('--precision <policy>', 'precision policy: auto (f16 where the device has it and it is faster), f32, f16').choices(['auto', 'f32', 'f16']).default('auto'))
    .option('--kv-block-size <n>', 'tokens per KV-cache block (a power of two, 1..256)', kvBlockSize, 16)
    .addOption(kvDtypeOption())
    .addOption(wholeStepOption())
    .addOption(kvCalibOption())
    .addOption(quantOption())
    .addOption(maxContextOption())
    .addOption(sparsityOption())
    .option('--prefill-chunk <n>', 'most tokens one step runs (prompts are chunked to it; default min(context, 128))', num('--prefill-chunk', { int: true, min: 1 }))
    .option('--tune', 'time the candidate variants of the tunable kernels (matmuls, split-KV or single-pass decode attention) on this device and keep the fastest; results go to the timing cache', false)
    .option('--timing-cache <file>', 'timing cache file, used when present (default: timing-cache.json in $TENSORWRIGHT_CACHE_DIR, $XDG_CACHE_HOME/tensorwright or ~/.cache/tensorwright)')
    .option('--json', 'print one JSON summary on stdout', false)
    .action(async (o) => {
      await compileCommand(o);
    });

  program
    .command('eval')
    .description('score a text with the model as given (--quant, backend) against the f32 model on the CPU reference: perplexity, KL, top-1 agreement')
    .requiredOption('--model <file>', 'model file')
    .option('--tokenizer <file>', 'tokenizer file (default: the model\'s own, or one beside it)')
    .requiredOption('--text <file>', 'text file to score')
    .option('--reference <file>', 'the f32 model to compare against (default: the model itself, uncompressed), e.g. the original of a file `quantize` wrote')
    .addOption(quantOption())
    .addOption(maxContextOption())
    .addOption(sparsityOption())
    .addOption(new Option('--backend <name>', 'backend of the model under test (the f32 reference runs on the CPU)').choices(['cpu', 'webgpu', 'auto']).default('auto'))
    .option('--max-tokens <n>', 'score at most this many tokens', num('--max-tokens', { int: true, min: 1 }))
    .addOption(new Option('--precision <policy>', 'precision policy of the WebGPU engine').choices(['auto', 'f32', 'f16']).default('auto'))
    .addOption(new Option('--w8a8 <scales>', 'W8A8 (int8 weights per channel, int8 activations): calibrate on --calib and score that model').choices(['static', 'per-token']))
    .option('--smoothquant <alpha>', 'with --w8a8: SmoothQuant first, with this migration strength (0.5 is usual)', num('--smoothquant', { min: 0, max: 1 }))
    .option('--calib <file>', 'with --w8a8: calibration text (never the evaluation text)')
    .option('--calib-tokens <n>', 'with --w8a8: calibrate on at most this many tokens', num('--calib-tokens', { int: true, min: 1 }))
    .addOption(kvDtypeOption())
    .addOption(kvCalibOption())
    .option('--kv-window <sinks,recent>', 'stream the whole text through a sliding KV window keeping the first SINKS and the last RECENT tokens (StreamingLLM; CPU, f32 KV); 0,RECENT is a plain sliding window')
    .option('--kv-h2o <budget,recent>', 'stream the whole text through a KV cache of BUDGET tokens under H2O heavy-hitter eviction: the last RECENT tokens and the blocks that received the most attention are kept (f32 KV; CPU unless --backend webgpu)')
    .option('--kv-block-size <n>', 'with --kv-window or --kv-h2o: tokens per KV block, to which the counts round up (default 16)', num('--kv-block-size', { int: true, min: 1 }))
    .option('--json', 'print only the JSON object (no summary line on stderr)', false)
    .action(async (o) => {
      await evalCommand(o);
    });

  program
    .command('quantize')
    .description('compress a Llama model\'s weights with calibration (RTN, GPTQ, AWQ) and write GGUF (Q8_0, Q4_1, Q4_0; 3- and 2-bit grids in 4-bit blocks); or calibrate W8A8 (smoothquant, w8a8) and report it')
    .requiredOption('--model <file>', 'model file')
    .option('--tokenizer <file>', "tokenizer file (default: the model's own, or one beside it)")
    .addOption(new Option('--method <name>', 'rtn: round to nearest; gptq: Hessian-based error feedback; awq: activation-aware scales; qat: quantization-aware training onto the RTN grid (STE, KL to f32); smoothquant, w8a8: int8 weights and activations (with or without SmoothQuant; -o writes a compressed-tensors folder); minmax, percentile, mse, entropy: w8a8 (--bits 8) with static activation scales by that calibrator').choices(['rtn', 'gptq', 'awq', 'qat', 'smoothquant', 'w8a8', 'minmax', 'percentile', 'mse', 'entropy']).makeOptionMandatory())
    .addOption(new Option('--bits <n>', 'grid bits (8: Q8_0; 4: Q4_1; 3, 2: grids in Q4_1 blocks)').choices(['8', '4', '3', '2']).argParser(Number))
    .option('--group <n>', 'elements of a row sharing a scale (a multiple of 32)', num('--group', { int: true, min: 32 }), 32)
    .option('--sym', 'symmetric grids (Q4_0 blocks); 8 bits are always symmetric', false)
    .option('--act-order', 'GPTQ: round columns by decreasing Hessian diagonal (static groups)', false)
    .option('--budget-bits <avg>', 'mixed bits per layer (rtn, gptq): measure each layer\'s KL to f32 alone at every candidate grid on the calibration text, pick bits per layer under this parameter-weighted average (exact DP); replaces --bits', num('--budget-bits', { min: 1 }))
    .addOption(new Option('--budget-count <how>', 'with --budget-bits: count grid bits only, grid + f16 scales as packed b-bit integers, or the GGUF blocks written (3/2-bit grids in 4-bit blocks)').choices(['grid', 'packed', 'file']).default('packed'))
    .option('--candidate-bits <list>', 'with --budget-bits: candidate grid bits', '2,3,4,8')
    .option('--sensitivity-tokens <n>', 'with --budget-bits: calibration positions to measure the sensitivities on', num('--sensitivity-tokens', { int: true, min: 1 }), 1024)
    .requiredOption('--calib <file>', 'calibration text (never the evaluation text)')
    .option('--calib-tokens <n>', 'calibrate on at most this many tokens', num('--calib-tokens', { int: true, min: 1 }))
    .option('--steps <n>', 'qat: training steps, one calibration window of 128 positions each (default 100)', num('--steps', { int: true, min: 0 }))
    .option('--lr <x>', 'qat: Adam learning rate (default 1e-3)', num('--lr', { min: 0 }))
    .option('--alpha <a>', 'smoothquant: migration strength in [0, 1]', num('--alpha', { min: 0, max: 1 }), 0.5)
    .addOption(new Option('--activations <scales>', 'smoothquant, w8a8: activation scales, calibrated per tensor or per token at run time (default static)').choices(['static', 'per-token']))
    .addOption(new Option('--calibrator <name>', 'smoothquant, w8a8 with static scales: how each activation clip is calibrated (default minmax)').choices(['minmax', 'percentile', 'mse', 'entropy']))
    .option('--percentile <p>', 'the percentile calibrator: percentile of |x| (default 99.99)', num('--percentile', { min: 0, max: 100 }))
    .option('--outliers <T>', 'rtn, gptq: keep in f32 the input channels whose calibration activation RMS exceeds T × the median channel\'s (at most 2% of K per matrix; GGUF tensors <name>.outlier_idx and .outlier_weight); W8A8 methods: the channels whose calibration max|x| exceeds T × the median channel\'s, left out of the int8 path and of the activation calibration', num('--outliers', { min: 0 }))
    .option('-o, --output <file>', 'GGUF file to write (rtn, gptq, awq); for the W8A8 methods a Hugging Face folder (compressed-tensors int-quantized safetensors + config.json)')
    .option('--eval <file>', 'score this text against the f32 model afterwards (as `eval`)')
    .option('--eval-tokens <n>', 'score at most this many tokens', num('--eval-tokens', { int: true, min: 1 }))
    .addOption(maxContextOption())
    .option('--json', 'print one JSON object on stdout instead of the table', false)
    .action(async (o) => {
      await quantizeCommand(o);
    });

  program
    .command('prune')
    .description('prune a Llama model\'s matmul weights (magnitude, Wanda, SNIP, GraSP, Fisher; unstructured, N:M, block), or remove whole heads and FFN channels, optionally fine-tune with the masks fixed, and write GGUF F32 (zeros where pruned)')
    .requiredOption('--model <file>', 'model file')
    .option('--tokenizer <file>', "tokenizer file (default: the model's own, or one beside it)")
    .requiredOption('--method <name>', 'saliency: magnitude, wanda (|W|·‖x‖), snip (|W·g|), grasp (W·Hg), fisher (½·F·W²); or sparsegpt (Hessian-based reconstruction)')
    .option('--pattern <p>', 'unstructured, N:M along K (2:4), or block<B> (B×B blocks, e.g. block4); optional with --heads/--ffn-channels alone')
    .option('--sparsity <s>', 'share of weights pruned, in [0, 1) (implied by N:M)', num('--sparsity'))
    .option('--scope <s>', 'which weights compete: row, layer or global (default: row for wanda unstructured, else layer)')
    .option('--heads <k>', 'structured: remove K query heads per layer (whole GQA groups; --method magnitude or wanda)', num('--heads', { int: true, min: 0 }))
    .option('--ffn-channels <k>', 'structured: remove K FFN channels per layer (--method magnitude or wanda)', num('--ffn-channels', { int: true, min: 0 }))
    .option('--finetune <steps>', 'Adam steps on the calibration text after pruning, masks fixed', num('--finetune', { int: true, min: 0 }))
    .option('--lr <x>', 'fine-tuning learning rate (default 5e-4)', num('--lr'))
    .requiredOption('--calib <file>', 'calibration text (never the evaluation text)')
    .option('--calib-tokens <n>', 'calibrate on at most this many tokens', num('--calib-tokens', { int: true, min: 1 }))
    .option('--window <n>', 'positions per calibration window (default 128)', num('--window', { int: true, min: 2 }))
    .requiredOption('-o, --output <file>', 'GGUF file to write')
    .option('--eval <file>', 'score this text against the f32 model afterwards (as `eval`)')
    .option('--eval-tokens <n>', 'score at most this many tokens', num('--eval-tokens', { int: true, min: 1 }))
    .addOption(maxContextOption())
    .option('--json', 'print one JSON object on stdout instead of the table', false)
    .action(async (o) => {
      await pruneCommand(o);
    });

  program
    .command('bench')
    .description('end-to-end prefill and decode throughput (medians over repeats, after a warm-up), as one JSON object')
    .requiredOption('--model <file>', 'model file')
    .option('--tokenizer <file>', 'tokenizer: the prompt is then real text (default: seeded random ids)')
    .addOption(quantOption())
    .addOption(maxContextOption())
    .addOption(sparsityOption())
    .addOption(new Option('--backend <name>', 'backend (default: webgpu when an adapter exists, else cpu)').choices(['cpu', 'webgpu', 'auto']).default('auto'))
    .option('--prompt-tokens <n>', 'prompt length, BOS included', num('--prompt-tokens', { int: true, min: 1 }), 128)
    .option('--gen-tokens <n>', 'tokens to generate per run', num('--gen-tokens', { int: true, min: 1 }), 64)
    .option('--repeat <n>', 'timed runs', num('--repeat', { int: true, min: 1 }), 3)
    .addOption(new Option('--precision <policy>', 'precision policy of the WebGPU engine').choices(['auto', 'f32', 'f16']).default('auto'))
    .addOption(kvDtypeOption())
    .addOption(wholeStepOption())
    .addOption(kvCalibOption())
    .option('--json', 'print only the JSON object (no summary line on stderr)', false)
    .action(async (o) => {
      await benchCommand(o);
    });

  program
    .command('serve')
    .description('serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /metrics, /health) with continuous batching')
    .option('--model <file>', 'model file or Hugging Face folder')
    .option('--engine <dir>', 'a saved engine (from `tensorwright compile`), on WebGPU')
    .option('--models <dir>', 'a folder of models (files, Hugging Face folders, engine folders), each served under its name and loaded on first use')
    .option('--tokenizer <file>', "tokenizer file (default: the model's own, or one beside the model or in the engine)")
    .option('--port <n>', 'port to listen on (0: any free port)', num('--port', { int: true, min: 0, max: 65535 }), 8080)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .addOption(new Option('--backend <name>', 'backend for model files (default: webgpu when an adapter exists, else cpu)').choices(['cpu', 'webgpu', 'auto']).default('auto'))
    .option('--max-batch-tokens <n>', 'token budget of one scheduler step (prefill chunks and decode tokens together)', num('--max-batch-tokens', { int: true, min: 1 }), 512)
    .option('--kv-blocks <n>', 'blocks of the KV pool (default: 8 full contexts on the CPU backend, one per engine session on WebGPU)', num('--kv-blocks', { int: true, min: 1 }))
    .option('--kv-block-size <n>', 'tokens per KV block on the CPU backend (a power of two, 1..256)', kvBlockSize, 16)
    .addOption(kvDtypeOption())
    .addOption(kvCalibOption())
    .option('--max-waiting <n>', 'most requests queued; more get HTTP 429', num('--max-waiting', { int: true, min: 1 }), 256)
    .addOption(new Option('--preemption <policy>', 'when the KV pool is full: recompute the preempted sequence later, or swap its KV to host memory (CPU backend and WebGPU model files; else recompute)').choices(['recompute', 'swap']).default('recompute'))
    .option('--engine-sessions <n>', 'WebGPU: engine sessions (sequences running at once) per model', num('--engine-sessions', { int: true, min: 1 }), 4)
    .option('--max-loaded-models <n>', 'with --models: most models loaded at once (idle ones unloaded, least recently used first)', num('--max-loaded-models', { int: true, min: 1 }), 2)
    .option('--memory-budget <MiB>', 'with --models: most memory the loaded models hold together (GPU buffers; host memory on the CPU backend); idle ones are unloaded least recently used first', num('--memory-budget', { min: 1 }))
    .option('--served-model-name <name>', 'the model name clients use (default: the file name)')
    .option('--kv-window <sinks,recent>', 'every request keeps the K/V of its first SINKS and last RECENT tokens (StreamingLLM sliding window with attention sinks, rounded to KV blocks) and may run past the context; CPU backend or WebGPU model files')
    .option('--tune', 'WebGPU model files: time the candidate variants of the tunable kernels (matmuls) for the batched steps the server runs, and keep the fastest in the timing cache', false)
    .option('--timing-cache <file>', 'timing cache file, used when present (default: timing-cache.json in $TENSORWRIGHT_CACHE_DIR, $XDG_CACHE_HOME/tensorwright or ~/.cache/tensorwright)')
    .option('--kv-h2o <budget,recent>', 'every request keeps at most BUDGET tokens of K/V under H2O heavy-hitter eviction (the last RECENT tokens and the blocks that received the most attention, rounded to KV blocks) and may run past the context; CPU backend unless --backend webgpu (not with a saved engine)')
    .addOption(maxContextOption())
    .action(async (o) => {
      await serveCommand(o);
    });

  program
    .command('serve-bench')
    .description('load-test an OpenAI-compatible server: throughput and TTFT/TPOT/end-to-end percentiles per concurrency level')
    .requiredOption('--url <url>', 'base URL of the server, e.g. http://127.0.0.1:8080')
    .option('--concurrency <list>', 'comma-separated concurrency levels', (v: string) => v.split(',').map((x) => num('--concurrency', { int: true, min: 1 })(x.trim())), [1, 4, 16, 64])
    .option('--requests <n>', 'requests per concurrency level', num('--requests', { int: true, min: 1 }), 64)
    .option('--prompt-tokens <n>', 'prompt length in tokens, BOS included', num('--prompt-tokens', { int: true, min: 1 }), 128)
    .option('--gen-tokens <n>', 'tokens to generate per request', num('--gen-tokens', { int: true, min: 1 }), 64)
    .option('--model <name>', "model name (default: the server's first)")
    .option('--seed <s>', 'seed of the prompt token ids', num('--seed', { int: true, min: 0 }), 1)
    .option('--json', 'one JSON object per concurrency level on stdout', false)
    .action(async (o) => {
      await serveBenchCommand(o);
    });

  program
    .command('onnx-test')
    .description('run ONNX backend test folders (model.onnx + test_data_set_N/{input,output}_N.pb): import, optimize, run, compare')
    .argument('<dirs...>', 'test folders, or folders holding them')
    .addOption(new Option('--backend <name>', 'backend').choices(['cpu', 'webgpu']).default('cpu'))
    .option('--passes <preset>', 'pass pipeline: O0..O3 or a comma-separated list of pass names', 'O3')
    .option('--json', 'one JSON object per folder on stdout', false)
    .action(async (dirs: string[], o: { backend: 'cpu' | 'webgpu'; passes: string; json: boolean }) => {
      state.exitCode = await onnxTestCommand(dirs, o);
    });

  // export-onnx: the optimized graph as a standard ONNX model (onnxruntime, Triton)
  program
    .command('export-onnx')
    .description('write the model, after the target-independent optimizer, as a standard ONNX model (input_ids -> logits; --quant weights as com.microsoft MatMulNBits)')
    .requiredOption('--model <file>', 'model file')
    .requiredOption('-o, --output <file>', 'ONNX file to write (external data, when needed, goes to <file>.data)')
    .addOption(quantOption())
    .addOption(maxContextOption())
    .addOption(sparsityOption())
    .option('--passes <spec>', 'pass pipeline before export (default: the target-independent optimizer up to weight compression)')
    .addOption(new Option('--external-data <mode>', 'weights in <file>.data: auto (only past the 2 GB protobuf limit), always, never').choices(['auto', 'always', 'never']).default('auto'))
    .option('--dense-weights', 'write quantized weights as dense tensors (default-domain ops only) instead of MatMulNBits/GatherBlockQuantized', false)
    .option('--json', 'print one JSON summary on stdout', false)
    .action(async (o) => {
      await exportOnnxCommand(o);
    });

  program
    .command('demo')
    .description('build a Llama-architecture model in code (seeded random weights) and run it; or run a real checkpoint')
    .option('--model <file>', 'run this checkpoint instead of the random model')
    .option('--tokenizer <file>', 'its tokenizer')
    .option('--prompt <text>', 'prompt for a real checkpoint', 'Once upon a time')
    .option('--steps <n>', 'positions to run', num('--steps', { int: true, min: 1 }), 64)
    .action(async (o) => {
      await demoCommand(o);
    });
  return program;
}

/** Runs the CLI with `argv` (user arguments only); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const state = { exitCode: 0 };
  const program = buildProgram(state);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return state.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help, --version and `help` exit 0; a bare `tensorwright` prints the help to stderr (commander's exit code 1)
      if (e.code === 'commander.help' || e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return e.exitCode === 0 ? 0 : EXIT_USAGE;
      process.stderr.write(`${errorLine(new UsageError(e.message.replace(/^error: /, '')))}\n`);
      return EXIT_USAGE;
    }
    process.stderr.write(`${errorLine(e)}\n`);
    return e instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
  }
}
