/**
 * Policy engine throughput over the hostile and benign corpora (figures, not assertions).
 * `benchPolicy()` is imported by bench/run.ts and by test/unit/policy/bench.test.ts.
 */
import { createPolicyEngine } from '../src/policy/index.js';
import { BENIGN, CWD, DEFAULT_ALLOW_POLICY, HOSTILE } from '../test/unit/policy/corpus.js';

export interface PolicyBenchResult {
  decisionsPerSec: number;
  usPerDecision: number;
  corpus: number;
}

export async function benchPolicy(options: { minMs?: number } = {}): Promise<PolicyBenchResult> {
  const engine = await createPolicyEngine();
  const corpus = [...BENIGN, ...HOSTILE];
  const minMs = options.minMs ?? 1000;
  // Warm up the JIT and the pattern cache.
  for (let i = 0; i < 3; i++) for (const command of corpus) engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
  let decisions = 0;
  const t0 = process.hrtime.bigint();
  let elapsedNs = 0n;
  while (elapsedNs < BigInt(minMs) * 1_000_000n) {
    for (const command of corpus) engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
    decisions += corpus.length;
    elapsedNs = process.hrtime.bigint() - t0;
  }
  const seconds = Number(elapsedNs) / 1e9;
  return {
    decisionsPerSec: Math.round(decisions / seconds),
    usPerDecision: Math.round((seconds * 1e6 * 100) / decisions) / 100,
    corpus: corpus.length,
  };
}
