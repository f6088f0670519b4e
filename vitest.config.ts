import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Dawn (the `webgpu` package) is a native addon that must run in child processes, not worker threads.
    pool: 'forks',
    testTimeout: 60_000,
    // one seed for every fast-check property (FUZZ_SEED), so failures reproduce
    setupFiles: ['test/support/seed-properties.ts'],
  },
});
