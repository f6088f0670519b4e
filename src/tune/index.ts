/**
 * Autotuning: `compile --tune` as an API ({@link tuneModel}) and the timing cache it reads and writes
 * ({@link TimingCache}).
 * @module
 */
export { tuneModel, type TuneOptions, type TuneResult, type TunedSignature } from './tune-model.js';
export { TimingCache, deviceTimingKey, TIMING_CACHE_FORMAT, TIMING_CACHE_VERSION, type CandidateTiming, type DeviceTimings, type TimingCacheFile, type TimingEntry } from './timing-cache.js';
