// Every fast-check property in the suite runs from one seed (FUZZ_SEED, default 20261205) unless it sets its own, so a
// failure reproduces: fast-check prints the seed and the shrunk path, and `FUZZ_SEED=<seed>` reruns it.
import fc from 'fast-check';

fc.configureGlobal({ seed: Number(process.env.FUZZ_SEED ?? 20261205) });
