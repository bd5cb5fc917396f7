import { beforeAll, describe, expect, it } from 'vitest';
import { createPolicyEngine, policyHash, type ExecPolicy, type PolicyEngine } from '../../../src/policy/index.js';
import { DEFAULT_ALLOW_POLICY } from './corpus.js';

let engine: PolicyEngine;
beforeAll(async () => {
  engine = await createPolicyEngine();
});

const layersOf = (command: string): string[][] => {
  const s = engine.segments(command);
  if (!s.ok) throw new Error(s.reason);
  return s.segments.map((x) => x.layers);
};

describe('canonical form and layers', () => {
  it.each([
    ['rm -rf x', [['rm -f -r x']]],
    ["r''m -fr x", [['rm -f -r x']]],
    ['/usr/bin/../bin/rm --recursive --force x', [['rm -f -r x']]],
    ['rm x -R -f', [['rm x -f -r']]],
    ['git status --short', [['git status --short']]],
    ['git -C sub log --oneline -n 5', [['git -C sub log --oneline -n 5']]],
    ['FOO=1 BAR="a b" npm test', [['npm test']]],
    ['sudo -u bob env A=B nice -n 5 rm -rf x', [['sudo -u bob env A=B nice -n 5 rm -f -r x', 'env A=B nice -n 5 rm -f -r x', 'nice -n 5 rm -f -r x', 'rm -f -r x']]],
    ['timeout -s KILL 5 make', [['timeout -s KILL 5 make', 'make']]],
    ['stdbuf -oL grep x f', [['stdbuf -oL grep x f', 'grep x f']]],
    ['xargs -0 -n1 rm -f', [['xargs -0 -n1 rm -f', 'rm -f']]],
    ['busybox sh -c ls', [['busybox sh -c ls', 'sh -c ls'], ['ls']]],
    ['command -v node', [['command -v node']]],
    ['find . -name x', [['find . -name x']]],
    ['tar czf out.tgz src', [['tar -c -f -z out.tgz src']]],
    ['chmod 0755 run.sh', [['chmod 755 run.sh']]],
    ['chmod -rwx f', [['chmod -rwx f']]],
    ['echo a; ls | wc -l && true', [['echo a'], ['ls'], ['wc -l'], ['true']]],
    ['if a; then b; elif c; then d; else e; fi', [['a'], ['b'], ['c'], ['d'], ['e']]],
    ['for x in 1 2; do echo $x; done', [['echo $x']]],
    ['case y in y) a;; *) b;; esac', [['a'], ['b']]],
    ['! time nohup ls', [['time nohup ls', 'nohup ls', 'ls']]],
    ['( cd src && { make; } )', [['cd src'], ['make']]],
    ['[ -f x ] && [[ -d y ]]', [['[ -f x'], ['[[ -d y']]],
    ['export FOO=1', [['export FOO=1']]],
    ["echo $'\\x72m' $\"hi\" a\\ b", [['echo rm hi a b']]],
  ])('%j', (command, layers) => {
    expect(layersOf(command)).toEqual(layers);
  });

  it('returns bash argv before unwrapping', () => {
    const s = engine.segments("X=1 sudo -u bob r''m -rf 'a b'");
    expect(s.ok && s.segments[0]).toEqual({
      canonical: 'rm -f -r a b', layers: ['sudo -u bob rm -f -r a b', 'rm -f -r a b'], argv: ['sudo', '-u', 'bob', 'rm', '-rf', 'a b'],
    });
  });

  it('reports why a command has no canonical segments', () => {
    expect(engine.segments('echo $(id)')).toMatchObject({ ok: false, code: 'unsupported_construct' });
    expect(engine.segments('a\u0000')).toMatchObject({ ok: false, code: 'invalid_command' });
  });
});

describe('blocked patterns match every layer, canonicalised', () => {
  const withPatterns = (blockedPatterns: string[]): ExecPolicy => ({ ...DEFAULT_ALLOW_POLICY, blockedPatterns });
  it.each([
    ['git push --force', 'git push origin main -f', true],
    ['git push --force', 'git push origin main', false],
    ['git push --force', 'git -C x push --forc', true],
    ['rm -rf', 'rm -r x', false],
    ['rm -rf', 'rm -r -- -f', false],
    ['chmod 777', 'chmod 755 x', false],
    ['chmod 777', 'chmod -R 0777 x', true],
    ['sudo', 'echo sudo', false],
    ['sudo', 'nice sudo ls', true],
    ['docker run --privileged', 'docker run --rm --privileged img', true],
    ['npm publish', 'npm run publish', true], // positionals in order, not adjacent
    ['npm publish', 'npm run build', false],
    ['kill -9', 'kill -9 1', true],
  ])('pattern %j on %j → %s', (pattern, command, blocked) => {
    const d = engine.decide({ command, cwd: '/srv/proj' }, withPatterns([pattern]));
    expect(d.code === 'blocked_pattern', d.reason).toBe(blocked);
  });

  it('an expansion that could complete a pattern is unsupported, not allowed', () => {
    expect(engine.decide({ command: 'rm -r $X', cwd: '/srv/proj' }, DEFAULT_ALLOW_POLICY).code).toBe('unsupported_construct');
    expect(engine.decide({ command: 'rm -r *', cwd: '/srv/proj' }, DEFAULT_ALLOW_POLICY).code).toBe('unsupported_construct');
    expect(engine.decide({ command: 'rm -r build', cwd: '/srv/proj' }, DEFAULT_ALLOW_POLICY).decision).toBe('allow');
  });
});

describe('rules match the canonical text of any layer', () => {
  const policy = (pattern: RegExp): ExecPolicy => ({ ...DEFAULT_ALLOW_POLICY, blockedPatterns: [], noMatch: 'deny', onDeny: 'block', rules: [{ name: 'r', pattern, action: 'allow', enabled: true }] });
  it.each([
    [/^git (status|diff|log)\b/, 'git status', true],
    [/^git (status|diff|log)\b/, 'timeout 5 git log -n1', true],
    [/^git (status|diff|log)\b/, 'git push', false],
    [/^rm -f -r\b/, 'rm -rf x', true],
    [/^ls -a -l\b/, 'ls -la', true],
    [/^ls -a -l\b/, 'ls -al', true],
    [/^npm (test|ci)$/, 'NODE_ENV=test npm test', true],
  ])('%s on %j → %s', (pattern, command, allowed) => {
    const d = engine.decide({ command, cwd: '/srv/proj' }, policy(pattern));
    expect(d.decision === 'allow', d.reason).toBe(allowed);
  });
  it('a global regex matches every time', () => {
    const p = policy(/^git status/g);
    expect(engine.decide({ command: 'git status', cwd: '/srv/proj' }, p).decision).toBe('allow');
    expect(engine.decide({ command: 'git status', cwd: '/srv/proj' }, p).decision).toBe('allow');
  });
});

describe('checkRuleExamples', () => {
  it('returns [] when examples hold', () => {
    expect(engine.checkRuleExamples([{ name: 'git ro', pattern: /^git (status|diff|log)\b/, match: ['git status', "g'it' log -n1", 'timeout 5 git diff'], notMatch: ['git push', 'echo git status'] }])).toEqual([]);
  });
  it('names the rule and the example that fails', () => {
    const errors = engine.checkRuleExamples([
      { name: 'rm', pattern: /^rm -rf/, match: ['rm -rf x'] },
      { name: 'ls', pattern: /^ls/, notMatch: ['ls -la'] },
      { name: 'bad', pattern: /x/, match: ['echo $(x)'] },
    ]);
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatch(/rule "rm".*"rm -rf x".*canonical "rm -f -r x".*should match/);
    expect(errors[1]).toMatch(/rule "ls".*should not match/);
    expect(errors[2]).toMatch(/rule "bad".*cannot be reasoned about/);
  });
});

describe('policyHash', () => {
  it('is 16 hex chars, stable under key order, sensitive to regex source and flags', () => {
    const a = policyHash(DEFAULT_ALLOW_POLICY);
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    const reordered = Object.fromEntries(Object.entries(DEFAULT_ALLOW_POLICY).reverse()) as unknown as ExecPolicy;
    expect(policyHash(reordered)).toBe(a);
    const r = (pattern: RegExp): ExecPolicy => ({ ...DEFAULT_ALLOW_POLICY, rules: [{ name: 'x', pattern, action: 'allow', enabled: true }] });
    expect(policyHash(r(/a/))).not.toBe(policyHash(r(/b/)));
    expect(policyHash(r(/a/))).not.toBe(policyHash(r(/a/i)));
    expect(policyHash(r(/a/))).toBe(policyHash(r(/a/)));
  });
});
