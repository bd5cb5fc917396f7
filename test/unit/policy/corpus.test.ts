import { beforeAll, describe, expect, it } from 'vitest';
import { createPolicyEngine, type PolicyEngine } from '../../../src/policy/index.js';
import { BENIGN, CWD, DEFAULT_ALLOW_POLICY, HOSTILE } from './corpus.js';

let engine: PolicyEngine;
beforeAll(async () => {
  engine = await createPolicyEngine();
});

describe('corpus sizes', () => {
  it('has at least 100 hostile and 100 benign commands', () => {
    expect(HOSTILE.length).toBeGreaterThanOrEqual(100);
    expect(BENIGN.length).toBeGreaterThanOrEqual(100);
  });
});

describe('hostile spellings are never allowed under a default-allow policy', () => {
  it.each(HOSTILE.map((c) => [c]))('%j', (command) => {
    const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
    expect(d.decision, `${d.code}: ${d.reason}`).not.toBe('allow');
  });
});

describe('everyday developer commands are allowed', () => {
  it.each(BENIGN.map((c) => [c]))('%j', (command) => {
    const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
    expect({ decision: d.decision, code: d.code, reason: d.reason }).toMatchObject({ decision: 'allow' });
  });
});
