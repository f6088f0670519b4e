// Types of model imports (`import model from './model.bin?tensorwright'`). In an app that installs tensorwright,
// write `import('tensorwright/plugin').CompiledModel` instead of the relative path.
declare module '*?tensorwright' {
  const model: import('../../src/plugin/client.js').CompiledModel;
  export default model;
}
declare module '*&tensorwright' {
  const model: import('../../src/plugin/client.js').CompiledModel;
  export default model;
}
