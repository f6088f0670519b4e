/**
 * The error for model files that are well formed but use a feature tensorwright does not implement.
 * @module
 */
import { TensorwrightError } from '../../errors.js';

/**
 * A model is well formed but needs something tensorwright does not implement (an architecture, a RoPE scaling type, a
 * tensor type, an activation, …). `feature` names the config key or tensor that asks for it.
 */
export class UnsupportedModelError extends TensorwrightError {
  /** The config key, metadata key or tensor that asks for the unsupported feature (e.g. `rope_scaling.rope_type`). */
  readonly feature: string;
  /** The file it was found in, when known. */
  readonly file: string | undefined;
  constructor(feature: string, message: string, file?: string) {
    super('UNSUPPORTED_MODEL', `${file ? `${file}: ` : ''}${feature}: ${message}`);
    this.feature = feature;
    this.file = file;
  }
}
