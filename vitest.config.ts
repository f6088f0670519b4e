import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Dawn (the `webgpu` package) is a native addon that must run in child processes, not worker threads.
    pool: 'forks',
    testTimeout: 60_000,
    // `--backend auto` without measuring (WebGPU whenever there is an adapter): what a test runs must not depend on
    // which backend is faster on the machine (test/backend-choice.test.ts measures)
    env: { TENSORWRIGHT_AUTO_BACKEND: 'webgpu' },
    // one seed for every fast-check property (FUZZ_SEED), so failures reproduce
    setupFiles: ['test/support/seed-properties.ts'],
  },
});
