import { beforeAll, describe, expect, it } from 'vitest';
import {
  createPolicyEngine, policyHash, type Decision, type DecisionCode, type DecisionKind, type ExecPolicy, type PolicyEngine, type PolicyRule,
} from '../../../src/policy/index.js';

let engine: PolicyEngine;
beforeAll(async () => {
  engine = await createPolicyEngine();
});

const base: ExecPolicy = {
  securityMode: 'sandboxed',
  toolMode: 'allowed',
  blockedPatterns: ['rm -rf', 'sudo', 'chmod 777'],
  allowedPaths: [{ path: '/srv/proj', readOnly: false }, { path: '/srv/docs', readOnly: true }],
  rules: [],
  noMatch: 'allow',
  onDeny: 'ask',
};
const rule = (name: string, pattern: RegExp, action: PolicyRule['action'], extra: Partial<PolicyRule> = {}): PolicyRule => ({
  name, pattern, action, enabled: true, ...extra,
});
const decide = (command: string, policy: Partial<ExecPolicy> = {}, req: Partial<Parameters<PolicyEngine['decide']>[0]> = {}): Decision =>
  engine.decide({ command, cwd: '/srv/proj', ...req }, { ...base, ...policy });

describe('pipeline rows (SPEC §2), in order', () => {
  const rows: { name: string; command: string; policy?: Partial<ExecPolicy>; req?: Record<string, unknown>; decision: DecisionKind; code: DecisionCode; hard: boolean }[] = [
    { name: 'locked beats everything', command: 'git status', policy: { securityMode: 'locked' }, decision: 'deny', code: 'locked', hard: true },
    { name: 'locked before invalid', command: '', policy: { securityMode: 'locked' }, decision: 'deny', code: 'locked', hard: true },
    { name: 'tool blocked', command: 'git status', policy: { toolMode: 'blocked' }, decision: 'deny', code: 'tool_blocked', hard: true },
    { name: 'tool blocked before invalid', command: 'a\u0000', policy: { toolMode: 'blocked' }, decision: 'deny', code: 'tool_blocked', hard: true },
    { name: 'empty', command: '', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'blank', command: '  \n\t', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'over 16 KiB', command: `echo ${'a'.repeat(16 * 1024)}`, decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'NUL', command: 'ls\u0000', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'CR', command: 'ls\r\n', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'ESC', command: 'echo \u001b[31m', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'bidi', command: 'ls \u202e', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'zero-width', command: 'l\u200bs', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'invalid before unsupported', command: 'echo $(ls)\u0000', decision: 'deny', code: 'invalid_command', hard: true },
    { name: 'syntax error is unsupported', command: 'echo "unterminated', decision: 'ask', code: 'unsupported_construct', hard: false },
    { name: 'unsupported, onDeny ask', command: 'echo $(ls)', decision: 'ask', code: 'unsupported_construct', hard: false },
    { name: 'unsupported, onDeny block', command: 'echo $(ls)', policy: { onDeny: 'block' }, decision: 'deny', code: 'unsupported_construct', hard: false },
    { name: 'blocked pattern is hard', command: 'rm -rf x', decision: 'deny', code: 'blocked_pattern', hard: true },
    { name: 'blocked pattern beats a rule allow', command: 'rm -rf x', policy: { rules: [rule('all', /.*/, 'allow')] }, decision: 'deny', code: 'blocked_pattern', hard: true },
    { name: 'blocked pattern stays in unrestricted mode', command: 'sudo ls', policy: { securityMode: 'unrestricted' }, decision: 'deny', code: 'blocked_pattern', hard: true },
    { name: 'path outside', command: 'cat /etc/passwd', decision: 'deny', code: 'path_not_allowed', hard: true },
    { name: 'path before rules', command: 'cat /etc/passwd', policy: { rules: [rule('cat', /^cat\b/, 'allow')] }, decision: 'deny', code: 'path_not_allowed', hard: true },
    { name: 'cwd outside', command: 'ls', req: { cwd: '/etc' }, decision: 'deny', code: 'path_not_allowed', hard: true },
    { name: 'relative cwd', command: 'ls', req: { cwd: 'srv/proj' }, decision: 'deny', code: 'path_not_allowed', hard: true },
    { name: 'write redirect into read-only path', command: 'echo x > /srv/docs/a', decision: 'deny', code: 'path_not_allowed', hard: true },
    { name: 'reading a read-only path', command: 'cat /srv/docs/a', decision: 'allow', code: 'allowed', hard: false },
    { name: 'rule deny, onDeny ask', command: 'git push', policy: { rules: [rule('no push', /^git push\b/, 'deny')] }, decision: 'ask', code: 'rule_denied', hard: false },
    { name: 'rule deny, onDeny block', command: 'git push', policy: { onDeny: 'block', rules: [rule('no push', /^git push\b/, 'deny')] }, decision: 'deny', code: 'rule_denied', hard: false },
    { name: 'rule ask', command: 'npm publish', policy: { rules: [rule('publish', /^npm publish/, 'ask')] }, decision: 'ask', code: 'rule_ask', hard: false },
    { name: 'first enabled rule wins', command: 'git push', policy: { rules: [rule('off', /^git/, 'deny', { enabled: false }), rule('git ok', /^git /, 'allow'), rule('no push', /^git push/, 'deny')] }, decision: 'allow', code: 'allowed', hard: false },
    { name: 'no match, noMatch deny', command: 'ls', policy: { noMatch: 'deny' }, decision: 'ask', code: 'no_match', hard: false },
    { name: 'no match, noMatch deny, block', command: 'ls', policy: { noMatch: 'deny', onDeny: 'block' }, decision: 'deny', code: 'no_match', hard: false },
    { name: 'opaque', command: "bash -c 'ls'", decision: 'ask', code: 'opaque_execution', hard: false },
    { name: 'opaque, block', command: "python3 -c 'print(1)'", policy: { onDeny: 'block' }, decision: 'deny', code: 'opaque_execution', hard: false },
    { name: 'opaque explicitly allowed by a rule', command: "python3 -c 'print(1)'", policy: { rules: [rule('py', /^python3 -c/, 'allow')] }, decision: 'allow', code: 'allowed', hard: false },
    { name: 'plain allow', command: 'git status', decision: 'allow', code: 'allowed', hard: false },
    { name: 'approval-required turns allow into ask', command: 'git status', policy: { toolMode: 'approval-required' }, decision: 'ask', code: 'approval_required', hard: false },
    { name: 'non-interactive ask', command: 'git status', policy: { toolMode: 'approval-required' }, req: { interactive: false }, decision: 'deny', code: 'approval_unavailable', hard: false },
    { name: 'safe mode off', command: 'git status', policy: { toolMode: 'approval-required' }, req: { safeMode: false }, decision: 'allow', code: 'allowed', hard: false },
    { name: 'unrestricted turns ask into allow', command: 'echo $(ls)', policy: { securityMode: 'unrestricted' }, decision: 'allow', code: 'allowed', hard: false },
    { name: 'unrestricted keeps a blocked soft deny', command: 'echo $(ls)', policy: { securityMode: 'unrestricted', onDeny: 'block' }, decision: 'deny', code: 'unsupported_construct', hard: false },
    { name: 'most severe segment wins', command: 'git status; echo $(ls); rm -rf x', decision: 'deny', code: 'blocked_pattern', hard: true },
    { name: 'ask beats allow across segments', command: 'git status && npm publish', policy: { rules: [rule('publish', /^npm publish/, 'ask')] }, decision: 'ask', code: 'rule_ask', hard: false },
  ];
  it.each(rows)('$name', ({ command, policy, req, decision, code, hard }) => {
    const d = decide(command, policy, req);
    expect({ decision: d.decision, code: d.code, hard: d.hard }, d.reason).toEqual({ decision, code, hard });
  });
});

describe('remembered rules', () => {
  const denyPush = { rules: [rule('no push', /^git push\b/, 'deny')], onDeny: 'block' as const };
  it('are consulted before config rules, as allow', () => {
    const d = decide('git push', denyPush, { rememberedRules: [rule('remembered push', /^git push$/, 'allow', { source: 'remembered' })] });
    expect(d.decision).toBe('allow');
    expect(d.segments[0]?.rule).toBe('remembered push');
  });
  it('never override a hard deny', () => {
    const d = decide('rm -rf x', {}, { rememberedRules: [rule('r', /.*/, 'allow', { source: 'remembered' })] });
    expect(d).toMatchObject({ decision: 'deny', code: 'blocked_pattern', hard: true });
    const p = decide('cat /etc/passwd', {}, { rememberedRules: [rule('r', /.*/, 'allow', { source: 'remembered' })] });
    expect(p).toMatchObject({ decision: 'deny', code: 'path_not_allowed', hard: true });
  });
  it('honour their cwd', () => {
    const rr = [rule('here only', /^git push$/, 'allow', { source: 'remembered', cwd: '/srv/proj/sub' })];
    expect(decide('git push', denyPush, { rememberedRules: rr }).decision).toBe('deny');
    expect(decide('git push', denyPush, { rememberedRules: rr, cwd: '/srv/proj/sub' }).decision).toBe('allow');
  });
  it('only ever allow (a remembered deny or ask is ignored)', () => {
    const d = decide('git status', {}, { rememberedRules: [rule('x', /git/, 'deny', { source: 'remembered' })] });
    expect(d.decision).toBe('allow');
  });
  it('explicitly allow an opaque segment when remembered exactly', () => {
    const d = decide("bash -c 'ls'", { onDeny: 'block' }, { rememberedRules: [{ ...rule('x', /^bash -c ls$/, 'allow'), scope: 'exact' }] });
    expect(d.decision).toBe('allow');
  });
  it.each(['find . -exec rm -rf {} +', 'find . -name x -execdir sudo id \\;', "find . -ok rm -r -f '{}' ;"])('check the command find runs: %s is a hard deny', (cmd) => {
    expect(decide(cmd)).toMatchObject({ decision: 'deny', code: 'blocked_pattern', hard: true });
  });
  it('find -exec of a harmless command stays opaque (approvable), not denied', () => {
    expect(decide('find . -name "*.ts" -exec wc -l {} +', { onDeny: 'block' })).toMatchObject({ decision: 'deny', code: 'opaque_execution', hard: false });
  });
  it('never let a remembered prefix vouch for an opaque segment', () => {
    const d = decide("bash -c 'ls'", { onDeny: 'block' }, { rememberedRules: [{ ...rule('x', /^bash(?: |$)/, 'allow'), scope: 'prefix' }] });
    expect(d).toMatchObject({ decision: 'deny', code: 'opaque_execution' });
  });
  it('skip approval-required when every segment is allowed by a remembered rule, and only then', () => {
    const remembered = [{ ...rule('x', /^make build$/, 'allow'), scope: 'exact' as const }];
    expect(decide('make build', { toolMode: 'approval-required' }, { rememberedRules: remembered }).decision).toBe('allow');
    expect(decide('make build && make test', { toolMode: 'approval-required' }, { rememberedRules: remembered }).decision).toBe('ask');
  });
});

describe('explanation', () => {
  it('lists every segment with canonical text, layers, pattern and reason', () => {
    const d = decide('echo ok; sudo env rm -rf x');
    expect(d.policyHash).toBe(policyHash(base));
    expect(d.cwd).toBe('/srv/proj');
    expect(d.segments).toHaveLength(2);
    expect(d.segments[1]).toMatchObject({
      canonical: 'rm -f -r x', layers: ['sudo env rm -f -r x', 'env rm -f -r x', 'rm -f -r x'], source: 'sudo env rm -rf x',
      verdict: 'deny', code: 'blocked_pattern', pattern: 'sudo',
    });
    expect(d.reason).toContain('segment 2');
    expect(d.reason).toContain('"sudo"');
  });
  it('names the rule in the reason', () => {
    const d = decide('git push', { rules: [rule('no push', /^git push\b/, 'deny')] });
    expect(d.reason).toMatch(/segment 1 `git push`.*"no push"/);
    expect(d.segments[0]?.rule).toBe('no push');
  });
  it('says a write into a read-only path is why', () => {
    expect(decide('echo x >> /srv/docs/a.md').reason).toContain('read-only');
  });
  it('defaults cwd to the first allowed path', () => {
    const d = engine.decide({ command: 'ls' }, base);
    expect(d).toMatchObject({ decision: 'allow', cwd: '/srv/proj' });
  });
  it('denies when no path is allowed at all', () => {
    const d = engine.decide({ command: 'ls' }, { ...base, allowedPaths: [] });
    expect(d).toMatchObject({ decision: 'deny', code: 'path_not_allowed', hard: true });
  });
});

// ---- The cross product, against a small reference written from the SPEC text. ----

type Kind = 'benign' | 'unsupported' | 'blocked' | 'ruleAsk' | 'ruleDeny' | 'opaque';
const commands: Record<Kind, string> = {
  benign: 'git status',
  unsupported: 'echo $(date)',
  blocked: 'rm -rf build',
  ruleAsk: 'npm publish',
  ruleDeny: 'git push --force',
  opaque: "node -e 'console.log(1)'",
};

interface Expect { decision: DecisionKind; code: DecisionCode; hard: boolean }

function reference(p: ExecPolicy, kind: Kind, safeMode: boolean | undefined, interactive: boolean | undefined): Expect {
  if (p.securityMode === 'locked') return { decision: 'deny', code: 'locked', hard: true };
  if (p.toolMode === 'blocked') return { decision: 'deny', code: 'tool_blocked', hard: true };
  // Per-segment outcome of the pipeline.
  let outcome: { kind: 'hard' | 'soft' | 'ask' | 'allow'; code: DecisionCode };
  if (kind === 'unsupported') outcome = { kind: 'soft', code: 'unsupported_construct' };
  else if (kind === 'blocked') outcome = { kind: 'hard', code: 'blocked_pattern' };
  else if (kind === 'ruleAsk') outcome = { kind: 'ask', code: 'rule_ask' };
  else if (kind === 'ruleDeny') outcome = { kind: 'soft', code: 'rule_denied' };
  else if (p.noMatch === 'deny') outcome = { kind: 'soft', code: 'no_match' };
  else if (kind === 'opaque') outcome = { kind: 'soft', code: 'opaque_execution' };
  else outcome = { kind: 'allow', code: 'allowed' };
  // The combination rules, in the SPEC's order.
  if (outcome.kind === 'hard') return { decision: 'deny', code: outcome.code, hard: true };
  let decision: DecisionKind;
  let code = outcome.code;
  if (outcome.kind === 'soft') {
    if (p.onDeny === 'block') return { decision: 'deny', code, hard: false };
    decision = 'ask';
  } else if (outcome.kind === 'ask') decision = 'ask';
  else if (p.toolMode === 'approval-required') { decision = 'ask'; code = 'approval_required'; }
  else decision = 'allow';
  if (decision === 'ask' && p.securityMode === 'unrestricted') return { decision: 'allow', code: 'allowed', hard: false };
  if (decision === 'ask' && safeMode === false) return { decision: 'allow', code: 'allowed', hard: false };
  if (decision === 'ask' && interactive === false) return { decision: 'deny', code: 'approval_unavailable', hard: false };
  return { decision, code: decision === 'allow' ? 'allowed' : code, hard: false };
}

const cases: { label: string; policy: ExecPolicy; kind: Kind; safeMode: boolean | undefined; interactive: boolean | undefined }[] = [];
for (const securityMode of ['unrestricted', 'sandboxed', 'locked'] as const)
  for (const toolMode of ['allowed', 'approval-required', 'blocked'] as const)
    for (const onDeny of ['ask', 'block'] as const)
      for (const noMatch of ['allow', 'deny'] as const)
        for (const safeMode of [true, false, undefined])
          for (const interactive of [true, false, undefined])
            for (const kind of Object.keys(commands) as Kind[]) {
              const policy: ExecPolicy = {
                ...base, securityMode, toolMode, onDeny, noMatch,
                rules: [rule('publish asks', /^npm publish\b/, 'ask'), rule('no force push', /^git push\b.*-f\b/, 'deny')],
              };
              cases.push({ label: `${securityMode}/${toolMode}/onDeny=${onDeny}/noMatch=${noMatch}/safe=${safeMode}/interactive=${interactive}/${kind}`, policy, kind, safeMode, interactive });
            }

describe('every combination of securityMode × toolMode × onDeny × noMatch × safeMode × interactive', () => {
  it('covers the whole cross product', () => {
    expect(cases.length).toBe(3 * 3 * 2 * 2 * 3 * 3 * 6);
  });
  it.each(cases)('$label', ({ policy, kind, safeMode, interactive }) => {
    const d = engine.decide({ command: commands[kind], cwd: '/srv/proj', safeMode, interactive }, policy);
    expect({ decision: d.decision, code: d.code, hard: d.hard }, d.reason).toEqual(reference(policy, kind, safeMode, interactive));
  });
});
