/**
 * The run-time parameters of the GPU sampling kernel (src/codegen/sampling.ts): their names, and their values for a
 * set of sampling settings and one coin. The settings travel in the kernel's params uniform every step, so one
 * compiled sampler (and one saved engine) takes any temperature, top-p and top-k.
 * @module
 */

/** Names of the sampling kernel's params (each a `u32` field of its params uniform). */
export const SAMPLER_PARAM_NAMES = {
  /** The coin in [0, 1), as its f32 bit pattern. */
  coin: 'coin_bits',
  /** The softmax temperature (> 0), as its f32 bit pattern. */
  temperature: 'temperature_bits',
  /** Keep the k most likely tokens; 0 = off (also sent for k >= V). */
  topk: 'topk',
  /** The nucleus threshold as its f32 bit pattern when top-p is on, else 0. */
  topp: 'topp_bits',
  /** Bits of the smallest f32 >= run.c's candidate cutoff `(1 - topp) / (V - 1)` (0 when top-p is off). */
  toppCutoff: 'topp_cutoff_bits',
} as const;

/** What one GPU sampling launch needs from the host: the settings and the coin. */
export interface SamplerStepSettings {
  /** Softmax temperature (> 0; temperature 0 runs the argmax kernel instead). */
  readonly temperature: number;
  /** Nucleus threshold; on when strictly inside (0, 1), as the host sampler decides. */
  readonly topp: number;
  /** Keep the k most likely tokens (0 or absent = off). */
  readonly topk?: number;
  /** The uniform draw in [0, 1) that picks the token. */
  readonly coin: number;
}

/** The f32 bit pattern of `x` (rounded to nearest f32) as a u32. */
export function f32Bits(x: number): number {
  return new Uint32Array(Float32Array.of(x).buffer)[0];
}

/** Bits of the smallest f32 >= x, for x >= 0. */
export function f32BitsAtLeast(x: number): number {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  f[0] = x;
  if (f[0] < x) u[0] += 1;
  return u[0];
}

/**
 * The values of {@link SAMPLER_PARAM_NAMES} for `s` over a vocabulary of `vocab` tokens, as dim bindings for the
 * sampling kernel's params. Whether top-p and top-k are on is decided here, on the doubles, exactly as the host
 * sampler decides it; a top-p that is on but rounds to f32 0 is sent as the smallest positive f32, so that the
 * kernel still sees it as on.
 */
export function samplerParamValues(s: SamplerStepSettings, vocab: number): Record<string, number> {
  const topk = s.topk ?? 0;
  const toppOn = s.topp > 0 && s.topp < 1;
  return {
    [SAMPLER_PARAM_NAMES.coin]: f32Bits(s.coin),
    [SAMPLER_PARAM_NAMES.temperature]: f32Bits(s.temperature),
    [SAMPLER_PARAM_NAMES.topk]: topk > 0 && topk < vocab ? topk : 0,
    [SAMPLER_PARAM_NAMES.topp]: toppOn ? Math.max(1, f32Bits(s.topp)) : 0,
    [SAMPLER_PARAM_NAMES.toppCutoff]: toppOn && vocab > 1 ? f32BitsAtLeast((1 - s.topp) / (vocab - 1)) : 0,
  };
}
