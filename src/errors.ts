/**
 * Typed errors. Every failure a user can cause (a malformed file, an ill-typed graph, an unsupported op, a device
 * problem) is thrown as a subclass of {@link TensorwrightError}, with a stable `code` and a message that names the
 * tensor, op, field or byte offset involved.
 * @module
 */

/** Base class of every error tensorwright throws on purpose. */
export class TensorwrightError extends Error {
  /** A stable, machine-readable error code (e.g. `SHAPE_MISMATCH`). */
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An op was built with operands whose shapes or dtypes it cannot accept; names the op and the offending shapes. */
export class ShapeError extends TensorwrightError {
  /** The op whose type rule failed. */
  readonly op: string;
  constructor(op: string, message: string) {
    super('SHAPE_MISMATCH', `${op}: ${message}`);
    this.op = op;
  }
}

/** A graph failed verification (a dangling input, a type that disagrees with its op's rule, a cycle, …). */
export class VerifyError extends TensorwrightError {
  constructor(message: string) {
    super('VERIFY_FAILED', message);
  }
}

/** An op name that no part of tensorwright knows (in a graph, a model file, or a rewrite rule). */
export class UnsupportedOpError extends TensorwrightError {
  /** The unknown or unsupported op names. */
  readonly ops: readonly string[];
  constructor(ops: readonly string[], message?: string) {
    super('UNSUPPORTED_OP', message ?? `unsupported op${ops.length > 1 ? 's' : ''}: ${ops.join(', ')}`);
    this.ops = ops;
  }
}

/** A model or tokenizer file is malformed; names the file, the field and the byte offset where it went wrong. */
export class ModelFormatError extends TensorwrightError {
  /** The file being read, when known. */
  readonly file: string | undefined;
  /** The header field or tensor being read. */
  readonly field: string;
  /** The byte offset where the problem was found. */
  readonly offset: number;
  constructor(field: string, offset: number, message: string, file?: string) {
    super('BAD_MODEL_FILE', `${file ? `${file}: ` : ''}${field} at byte offset ${offset}: ${message}`);
    this.file = file;
    this.field = field;
    this.offset = offset;
  }
}

/** A runtime input did not match what the graph expects (missing input, wrong shape, unbound symbolic dim, …). */
export class InputError extends TensorwrightError {
  constructor(message: string) {
    super('BAD_INPUT', message);
  }
}

/** A WebGPU adapter or device could not be obtained, was lost, or ran out of memory. */
export class DeviceError extends TensorwrightError {
  constructor(code: 'NO_ADAPTER' | 'DEVICE_LOST' | 'OUT_OF_MEMORY' | 'DEVICE_ERROR' | 'LIMIT_EXCEEDED', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The KV cache has no room for more tokens. */
export class CacheFullError extends TensorwrightError {
  constructor(
    message: string,
    /** The id of the sequence that did not fit (a `SequenceHandle.id`), when one sequence is to blame. */
    readonly sequence?: number,
  ) {
    super('KV_CACHE_FULL', message);
  }
}

/** A serving queue is full: the request was refused, not queued (an HTTP server answers 429). */
export class OverloadedError extends TensorwrightError {
  constructor(message: string) {
    super('OVERLOADED', message);
  }
}

/** A command-line usage error (unknown flag, missing argument, bad value). */
export class UsageError extends TensorwrightError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** A compiler invariant failed (e.g. a pass read a node as the wrong op): a bug in tensorwright, not in the input. */
export class InternalError extends TensorwrightError {
  constructor(message: string) {
    super('INTERNAL', message);
  }
}
