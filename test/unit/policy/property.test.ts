/** Quoting or escaping the characters of a denied command never turns it into `allow`. */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { createPolicyEngine, type PolicyEngine } from '../../../src/policy/index.js';
import { CWD, DEFAULT_ALLOW_POLICY } from './corpus.js';
import { spellingOf } from './spelling.js';

let engine: PolicyEngine;
beforeAll(async () => {
  engine = await createPolicyEngine();
});

const denied: string[][] = [
  ['rm', '-rf', 'x'], ['rm', '-fr', '/srv/proj'], ['rm', '--recursive', '--force', 'x'], ['/bin/rm', '-r', '-f', 'x'],
  ['sudo', 'ls'], ['sudo', '-u', 'bob', 'id'], ['chmod', '777', 'f'], ['chmod', '-R', '0777', 'd'], ['env', 'rm', '-rf', 'x'],
  ['cat', '/etc/passwd'], ['cat', '../../etc/shadow'], ['nice', 'timeout', '5', 'rm', '-rf', 'x'], ['bash', '-c', 'rm -rf x'],
  ['python3', '-c', 'print(1)'], ['find', '.', '-delete'], ['xargs', 'rm'], ['eval', 'ls'], ['git', '-c', 'core.pager=sh', 'log'],
];

describe('quoting never turns a denied command into allow', () => {
  it.each(denied.map((w) => [w.join(' '), w]))('%s', (_label, words) => {
    expect(engine.decide({ command: words.join(' '), cwd: CWD }, DEFAULT_ALLOW_POLICY).decision).not.toBe('allow');
    fc.assert(
      fc.property(spellingOf(words), (spelled) => {
        const d = engine.decide({ command: spelled, cwd: CWD }, DEFAULT_ALLOW_POLICY);
        expect(d.decision, `${JSON.stringify(spelled)} → ${d.code}: ${d.reason}`).not.toBe('allow');
      }),
      { numRuns: 200 },
    );
  });
});

describe('the canonical form does not depend on the spelling', () => {
  it('every spelling of rm -rf x has the canonical text rm -f -r x', () => {
    fc.assert(
      fc.property(spellingOf(['rm', '-rf', 'x']), (spelled) => {
        const s = engine.segments(spelled);
        expect(s.ok && s.segments[0]?.canonical).toBe('rm -f -r x');
      }),
      { numRuns: 300 },
    );
  });
});

describe('decide never throws and always answers', () => {
  const shellish = fc.string({
    unit: fc.constantFrom(...'ab rm-f/.;&|()<>{}[]$`\'"\\\n\t*?~!#=:,%@^0123456789'.split(''), 'sudo', '$(', '${', '<<', '$\'', 'cd ', '..'),
    maxLength: 80,
  });
  it('on shell-like noise', () => {
    fc.assert(
      fc.property(shellish, (command) => {
        const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
        expect(['allow', 'ask', 'deny']).toContain(d.decision);
        expect(d.code).not.toMatch(/internal/);
        expect(d.reason).not.toMatch(/internal error/);
        engine.segments(command);
      }),
      { numRuns: 2000 },
    );
  });
  it('on arbitrary unicode', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 60 }), (command) => {
        const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
        expect(d.reason).not.toMatch(/internal error/);
      }),
      { numRuns: 1000 },
    );
  });
  it('on pathological sizes, quickly', () => {
    const cases = [
      'a;'.repeat(8000), 'cd a;'.repeat(3000), '('.repeat(4000) + ')'.repeat(4000), 'echo ' + '"$x"'.repeat(3000),
      "sh -c 'sh -c \"sh -c ls\"'", 'x'.repeat(16 * 1024),
    ];
    for (const command of cases) {
      const t0 = Date.now();
      const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
      expect(d.reason).not.toMatch(/internal error/);
      expect(Date.now() - t0).toBeLessThan(2000);
    }
  });
});
