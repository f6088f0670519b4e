/**
 * The package root, `import … from 'tensorwright'`: the public API of the compiler. (`tensorwright/runtime`,
 * src/runtime/index.ts, is the runtime-only entry point: saved engines, the CPU backend and devices, no compiler.)
 *
 * **The rule: what is exported here.** What a program using tensorwright calls to build a model (the IR builder, the
 * models), import one ({@link frontends!loadModel | loadModel}, the format readers, the tokenizers), optimize it
 * ({@link passes!runPasses | runPasses}, the passes, and the pass and rewrite API a new pass is written with), compile
 * it ({@link compile!compile | compile}, {@link compile!createTarget | createTarget}, the WebGPU pipeline), run it
 * ({@link runtime!Engine | Engine} and its sessions, the CPU reference backend, generation, devices) and train it
 * ({@link autodiff!gradientGraph | gradientGraph}, {@link autodiff!Trainer | Trainer}); every type those
 * calls take or return; and the errors they throw.
 *
 * **What is not.** The steps inside those calls: kernel generators, kernel families and their schedule rules, a
 * pass's own rewrite rules, tables and analyses, the memory planner's scheduling, numeric and bit-packing helpers,
 * file-format parsing steps and protobuf codecs, one-shot kernel runs and other device plumbing. They stay exported
 * from their own files, for the other layers and for tests (which import from the file that defines a thing, never
 * from here), and their doc comments carry `@internal`, which keeps them out of the API reference (and marks the
 * ones `tensorwright/runtime` still exports as not part of its API).
 *
 * **Keeping it so.** A new public export is added here; a new internal one gets `@internal`. The API reference
 * (`npm run docs`) has one page per module (compile, runtime, ir, passes, autodiff, frontends, models, errors) listing the
 * exports of that module's index without `@internal`, so that set and this file's exports must be the same. A file is
 * re-exported whole (`export *`) only when it has no internals and its layer's index re-exports it whole too;
 * otherwise its names are listed (a whole-file export here of a file the layer lists by name would move its page
 * entries from the module's page to this one).
 * @module tensorwright
 */

// errors
export * from './errors.js';

// ir: the typed graph IR
export * from './ir/dtype.js';
export * from './ir/dim.js';
export { type DenseEncoding, type QuantizedEncoding, type CodebookEncoding, type NMSparseEncoding, type BlockSparseEncoding, type WeightEncoding, type WeightArray, type WeightData, type WeightEntry, WeightStore, decodeWeight, nmKeptShape } from './ir/weights.js';
export { type AttrValue, type Attrs, type TensorType, Node, makeNode, withInputs } from './ir/node.js';
export * from './ir/attrs.js';
export * from './ir/ops.js';
export * from './ir/graph.js';
export { type DimLike, type AttentionResult, GraphBuilder } from './ir/builder.js';
export { printNode, printGraph } from './ir/printer.js';
export * from './ir/verifier.js';
export * from './ir/stats.js';
export * from './ir/device-profile.js';
export * from './ir/target.js';
export { type RopeStyle } from './ir/rope.js';
export * from './ir/quant-scheme.js';
export * from './ir/sparsity-scheme.js';
export type { CodebookLevels } from './ir/codebook.js';

// autodiff: gradient graphs and training on the CPU reference backend
export * from './autodiff/index.js';

// models: written with the builder
export * from './models/index.js';

// frontends: the importers
export * from './frontends/load.js';
export * from './frontends/context.js';
export { type Llama2cConfig, type Llama2cWeights, type Llama2cCheckpoint, parseLlama2cCheckpoint, readLlama2cCheckpoint } from './frontends/llama2c/checkpoint.js';
export * from './frontends/llama2c/model.js';
export { importOnnx, readOnnx, onnxInputNames, ShapeInputsRequiredError, ONNX_OPSET_RANGE, type OnnxModel, type OnnxValueInfo, type ImportOnnxOptions } from './frontends/onnx/importer.js';
export { SUPPORTED_ONNX_OPS } from './frontends/onnx/ops/index.js';
export { UnsupportedModelError } from './frontends/hf/errors.js';
export { HF_LLAMA_MODEL_TYPES, type HfConfigJson, type HfLlamaModelType, type HfModelType, type HfRopeParameters } from './frontends/hf/config.js';
export { isHfModelFolder, loadHfModel, loadHfModelSync, type HfModelBase, type HfLlamaModel, type HfGpt2Model, type HfModel, type HfLoadOptions } from './frontends/hf/model.js';
export { SafetensorsCheckpoint, SAFETENSORS_INDEX_FILE, SAFETENSORS_SINGLE_FILE, type SafetensorsIndex } from './frontends/safetensors/checkpoint.js';
export { SafetensorsFile, safetensorsToFloat32, safetensorsValues, type SafetensorsArray, type SafetensorsDType, type SafetensorsHeader, type SafetensorsTensorInfo } from './frontends/safetensors/reader.js';
export { fileSource, memorySource, type ByteSource } from './frontends/safetensors/source.js';
export { GgufFile, type GgufHeader, type GgufMetadataEntry, type GgufTensorInfo, type GgufValue } from './frontends/gguf/reader.js';
export { GgmlType, GgufValueType, type GgmlTypeInfo, type GgufValueTypeId } from './frontends/gguf/types.js';
export { GGUF_SUPPORTED_TYPES, ggufTensorToWeight } from './frontends/gguf/quant.js';
export { GGUF_LLAMA_ARCHITECTURES, loadGgufModel, loadGgufModelFromBytes, type GgufLlamaModel } from './frontends/gguf/model.js';

// tokenizers (text ↔ token ids for the imported models)
export type { TextTokenizer } from './tokenizers/text-tokenizer.js';
export { Llama2cTokenizer, type Llama2cEncodeOptions } from './tokenizers/llama2c.js';
export { HfTokenizer, HfTokenStream, type HfDecodeOptions, type HfEncodeOptions, type HfSpecialTokens } from './tokenizers/hf.js';
export { hfSpecialTokenIds, hfTokenizerFromFolder } from './frontends/hf/tokenizer.js';
export { GGUF_TOKENIZER_MODELS, GgufTokenType, GgufTokenizer, type GgufEncodeOptions } from './frontends/gguf/tokenizer.js';

// passes: the pass manager, the rewrite engine, and the passes
export * from './passes/pass.js';
export * from './passes/rewrite.js';
export * from './passes/pattern.js';
export * from './passes/pipeline.js';
export { foldConstantsPass } from './passes/fold-constants.js';
export { simplifyPass } from './passes/simplify.js';
export { csePass } from './passes/cse.js';
export * from './passes/dce.js';
export { recognizeNormsPass } from './passes/recognize-norms.js';
export { recognizeActivationsPass } from './passes/recognize-activations.js';
export { recognizeRopePass } from './passes/recognize-rope.js';
export { recognizeAttentionPass } from './passes/recognize-attention.js';
export { mergeProjectionsPass } from './passes/merge-projections.js';
export { sparsifyWeightsPass } from './passes/sparsify-weights.js';
export { quantizeWeightsPass } from './passes/quantize-weights.js';
export { mixedPrecisionPass, type Precision, type PrecisionOptions } from './passes/mixed-precision.js';
export { layoutPass } from './passes/layout.js';
export { repackQuantizedWeightsPass } from './passes/repack-quantized-weights.js';
export { splitLargeWeightsPass } from './passes/split-large-weights.js';
export { fuseEpiloguesPass } from './passes/fuse-epilogues.js';
export { fuseElementwisePass } from './passes/fuse-elementwise.js';
export { planMemory, verifyMemoryPlan, describeMemoryPlan, memoryPlanPass, type PlanMemoryOptions, type PlannedBuffer, type MemoryPlan } from './passes/memory-plan.js';
export { legalizeWebGPUPass } from './passes/legalize-webgpu.js';
export * from './passes/lower-paged-kv.js';
export * from './passes/materialize-outputs.js';

// compile: targets, the WebGPU pipeline, compile()
export * from './codegen/target.js';
export type { LowerVariants, Launch, LaunchOperand, KvOperand, KvPoolOperand, BlockTableOperand, WeightPartOperand } from './codegen/family.js';
export type { AttentionVariant, DecodeAttentionVariant, FlashAttentionVariant } from './codegen/attention.js';
export * from './webgpu-pipeline.js';
export { compile, compileModel, compileGraph, runGraphOnWebGPU, type CompileOptions, type CompiledEngine } from './compile.js';
export { type TuningRequest } from './codegen/schedule/tuning.js';
export * from './tune/index.js';

// runtime: what `tensorwright/runtime` exports, less its internals
export { Tensor, type TensorData } from './runtime/cpu/tensor.js';
export { runGraph, type NodeObserver, type RunOptions } from './runtime/cpu/interpreter.js';
export * from './runtime/cpu/lm.js';
export * from './runtime/generate.js';
export { Sampler, sampleToken, validateSampling, argmax, samplingProbabilities, sampleFromProbabilities, type SamplingOptions } from './runtime/sampling.js';
export * from './runtime/speculative/index.js';
export * from './runtime/device.js';
export * from './runtime/webgpu/gpu-wait.js';
export { type KernelBinding, type GridExpr, type GridCeilDiv, type GridMul, type GridMin, type GridMax, type KernelSource } from './runtime/kernel-source.js';
export * from './runtime/engine.js';
export * from './runtime/engine-manifest.js';
export * from './runtime/engine-manifest-schema.js';
export * from './runtime/sampler-params.js';
export { type EngineFiles, type EngineLoadOptions, type EngineSource, type FetchLike } from './runtime/engine-load.js';
export * from './runtime/engine-container.js';
export * from './runtime/engine-cache.js';
export * from './runtime/weight-source.js';
export { DEFAULT_UPLOAD_CHUNK_BYTES, uploadWeights, type WeightUploadOptions, type WeightUploadTarget } from './runtime/weight-upload.js';
export * from './runtime/tokenizer-loader.js';

// export: the optimized graph as standard ONNX
export * from './export/onnx/index.js';
