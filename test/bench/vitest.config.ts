import { defineConfig } from 'vitest/config';

// Benchmarks against skopeo: run with `npm run bench`; never part of `npm test`.
export default defineConfig({
  test: {
    include: ['test/bench/**/*.bench.test.ts'],
    testTimeout: 1_800_000,
    hookTimeout: 1_800_000,
    pool: 'forks',
    // One benchmark at a time: they would share the two cores and skew each other.
    fileParallelism: false,
  },
});
