import { chownSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, embeddedDefaultConfig, loadConfigFile, mergeSettings, resolveConfig } from '../../src/config/load.js';
import { BUILTIN_AGENT_DEFAULTS } from '../../src/config/schema.js';

const dir = mkdtempSync(join('/var/tmp', 'execgate-config-'));
const owned = mkdtempSync(join('/var/tmp', 'execgate-owned-'));
chownSync(owned, 1234, 1234);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(owned, { recursive: true, force: true });
});

const base = (over: Record<string, unknown> = {}) => ({
  gateway: { auth: { token: 'admin-secret' } },
  store: { path: `${dir}-store` },
  agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } } } },
  ...over,
});

function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    resolveConfig(raw, { baseDir: dir, env }, 'test');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('valid configs', () => {
  it('fills SPEC §1 defaults', () => {
    const c = resolveConfig(base(), { baseDir: dir }, 'test');
    expect(c.gateway).toMatchObject({ host: '127.0.0.1', port: 8787 });
    const team = c.teams.default!;
    expect(team.policy).toMatchObject({ securityMode: 'sandboxed', toolMode: 'approval-required', blockedPatterns: ['rm -rf', 'sudo', 'chmod 777'], noMatch: 'allow', onDeny: 'ask' });
    expect(team.policy.allowedPaths).toEqual([{ path: dir, readOnly: false }]);
    expect(team.sandbox).toMatchObject({ image: 'execgate/sandbox:latest', runtime: 'runc', network: 'none', memoryMb: 512, cpus: 1, pidsLimit: 256, timeoutMs: 60000, maxOutputBytes: 1048576, pool: { size: 2, maxIdleMs: 600000 } });
    expect(c.approvals.timeoutMs).toBe(300_000);
  });

  it('accepts the SPEC §1 example shape', () => {
    const c = resolveConfig(
      {
        gateway: {
          host: '127.0.0.1',
          port: 8787,
          auth: {
            enabled: true,
            token: 'admin-secret',
            tokens: [
              { token: 't-agent-0001', team: 'data', roles: ['exec'] },
              { token: 't-human-0001', team: 'data', roles: ['approve'] },
              { token: 't-admin-0001', roles: ['admin'] },
            ],
          },
        },
        agents: {
          defaults: {
            security: { mode: 'sandboxed' },
            toolPolicies: {
              exec: {
                mode: 'approval-required',
                blockedPatterns: ['rm -rf', 'sudo', 'chmod 777'],
                allowedPaths: [dir, { path: owned, readOnly: true }],
                rules: [{ name: 'git read-only', pattern: '^git (status|diff|log)\\b', action: 'allow', enabled: true }],
                noMatch: 'allow',
                onDeny: 'ask',
              },
            },
            sandbox: { image: 'execgate/sandbox:latest', runtime: 'runc', network: 'none', memoryMb: 512, cpus: 1, pidsLimit: 256, timeoutMs: 60000, maxOutputBytes: 1048576, user: 'auto', pool: { size: 2, maxIdleMs: 600000 } },
          },
          teams: { data: { sandbox: { memoryMb: 1024 }, toolPolicies: { exec: { mode: 'allowed' } } } },
        },
        approvals: { timeoutMs: 300000 },
        store: { path: './execgate-data' },
      },
      { baseDir: '/var/tmp' },
      'test',
    );
    expect(Object.keys(c.teams).sort()).toEqual(['data', 'default']);
    expect(c.teams.data!.sandbox.memoryMb).toBe(1024);
    expect(c.teams.data!.policy.toolMode).toBe('allowed');
    // Keys the team does not name come from agents.defaults.
    expect(c.teams.data!.policy.rules[0]).toMatchObject({ name: 'git read-only', action: 'allow' });
    expect(c.teams.data!.policy.rules[0]!.pattern.test('git status')).toBe(true);
    expect(c.teams.default!.sandbox.memoryMb).toBe(512);
    expect(c.gateway.auth.tokens).toHaveLength(4);
    expect(c.store.path).toBe('/var/tmp/execgate-data');
    expect(c.teams.data!.quota).toEqual({ maxConcurrent: 4, maxQueued: 32, cpuSecondsPerHour: null });
  });

  it('loads YAML and JSON files', () => {
    const y = join(dir, 'c.yaml');
    writeFileSync(y, `store:\n  path: ${dir}-store\ngateway:\n  port: 9999\n  auth:\n    token: admin-secret\nagents:\n  defaults:\n    toolPolicies:\n      exec:\n        allowedPaths: ["${dir}"]\n`);
    expect(loadConfigFile(y).gateway.port).toBe(9999);
    const j = join(dir, 'c.json');
    writeFileSync(j, JSON.stringify(base({ gateway: { port: 7777, auth: { token: 'admin-secret' } } })));
    expect(loadConfigFile(j).gateway.port).toBe(7777);
  });

  it('resolves allowed paths to their real path', () => {
    const link = join(dir, 'link');
    symlinkSync(owned, link);
    const c = resolveConfig(base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [link] } } } } }), { baseDir: dir }, 'test');
    expect(c.teams.default!.policy.allowedPaths[0]!.path).toBe(owned);
  });

  it('user auto: the owner of the first allowed path, or 1000:1000 when root owns it', () => {
    const mine = resolveConfig(base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [owned] } } } } }), { baseDir: dir }, 'test');
    expect(mine.teams.default!.sandbox.user).toBe('1234:1234');
    expect(resolveConfig(base(), { baseDir: dir }, 'test').teams.default!.sandbox.user).toBe('1000:1000');
  });

  it('tokens may be sha256 hashes or env references', () => {
    const hash = createHash('sha256').update('hashed-token-1').digest('hex');
    const c = resolveConfig(base({ gateway: { auth: { tokens: [{ token: `sha256:${hash}`, roles: ['exec'] }, { token: 'env:MY_TOKEN', roles: ['approve'] }] } } }), { baseDir: dir, env: { MY_TOKEN: 'from-the-env-1' } }, 'test');
    expect(c.gateway.auth.tokens.map((t) => t.digest.toString('hex'))).toEqual([hash, createHash('sha256').update('from-the-env-1').digest('hex')]);
  });

  it('embedded default: loopback, approval-required, cwd allowed, a random token, the store outside cwd', () => {
    const a = embeddedDefaultConfig({ cwd: dir, env: { XDG_STATE_HOME: '/var/lib/state' } });
    expect(a.store.path).toMatch(/^\/var\/lib\/state\/execgate\/[0-9a-f]{12}$/);
    const b = embeddedDefaultConfig({ cwd: dir });
    expect(a.gateway.host).toBe('127.0.0.1');
    expect(a.gateway.auth.enabled).toBe(true);
    expect(a.gateway.nice).toBe(-10);
    expect(a.generatedToken).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(a.generatedToken).not.toBe(b.generatedToken);
    expect(a.teams.default!.policy).toMatchObject({ securityMode: 'sandboxed', toolMode: 'approval-required', allowedPaths: [{ path: dir, readOnly: false }] });
    expect(a.source).toBe('(embedded default)');
  });

  it('merge: objects key by key, arrays and scalars replaced', () => {
    expect(mergeSettings({ a: { b: 1, c: [1, 2] }, d: 1 }, { a: { c: [3] } })).toEqual({ a: { b: 1, c: [3] }, d: 1 });
    expect(mergeSettings(BUILTIN_AGENT_DEFAULTS, undefined)).toBe(BUILTIN_AGENT_DEFAULTS);
  });
});

describe('invalid configs name the key and the problem', () => {
  it.each<[string, Record<string, unknown>, RegExp]>([
    ['port not a number', base({ gateway: { port: 'x', auth: { token: 'admin-secret' } } }), /^gateway\.port: /],
    ['unknown top-level key', base({ nope: 1 }), /nope/],
    ['unknown gateway key', base({ gateway: { hots: 'x', auth: { token: 'admin-secret' } } }), /gateway: .*hots/],
    ['security mode', base({ agents: { defaults: { security: { mode: 'yolo' }, toolPolicies: { exec: { allowedPaths: [dir] } } } } }), /^agents\.defaults\.security\.mode: /],
    ['exec mode', base({ agents: { defaults: { toolPolicies: { exec: { mode: 'maybe', allowedPaths: [dir] } } } } }), /toolPolicies\.exec\.mode/],
    ['bad regex names the rule', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir], rules: [{ name: 'broken', pattern: '(', action: 'allow' }] } } } } }), /rules\.0\.pattern: rule "broken": invalid regular expression/],
    ['rule action', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir], rules: [{ name: 'r', pattern: 'x', action: 'permit' }] } } } } }), /rules\.0\.action/],
    ['missing allowed path', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: ['/does/not/exist'] } } } } }), /allowedPaths\.0: "\/does\/not\/exist" does not exist/],
    ['root as allowed path', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: ['/'] } } } } }), /allowedPaths\.0: the host root/],
    ['file as allowed path', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: ['/etc/hostname'] } } } } }), /is not a directory/],
    ['no allowed paths', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [] } } } } }), /allowedPaths/],
    ['team error is prefixed by the team', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } } }, teams: { data: { sandbox: { memoryMb: -1 } } } } }), /^agents\.teams\.data\.sandbox\.memoryMb: /],
    ['bad team name', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } } }, teams: { 'Bad Team': {} } } }), /team names/],
    ['root user', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } }, sandbox: { user: '0:0' } } } }), /never runs as root/],
    ['user format', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } }, sandbox: { user: 'root' } } } }), /sandbox\.user: must be/],
    ['auth without token', base({ gateway: { auth: { enabled: true } } }), /no token is configured/],
    ['short token', base({ gateway: { auth: { token: 'short' } } }), /gateway\.auth\.token: a token must be at least 8/],
    ['bad sha256', base({ gateway: { auth: { token: 'sha256:abc' } } }), /64 hex digits/],
    ['env token unset', base({ gateway: { auth: { token: 'env:NOPE_NOT_SET' } } }), /NOPE_NOT_SET is not set/],
    ['token for an undefined team', base({ gateway: { auth: { tokens: [{ token: 'abcdefgh1', team: 'ghost', roles: ['exec'] }] } } }), /team "ghost" is not defined/],
    ['unknown role', base({ gateway: { auth: { tokens: [{ token: 'abcdefgh1', roles: ['root'] }] } } }), /tokens\.0\.roles\.0/],
    ['duplicate token', base({ gateway: { auth: { token: 'admin-secret', tokens: [{ token: 'admin-secret', roles: ['exec'] }] } } }), /the same token is configured twice/],
    ['store inside an allowed path', base({ store: { path: './execgate-data' } }), /store\.path: .* overlaps the allowed path/],
    ['host network', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } }, sandbox: { network: 'host' } } } }), /sandbox\.network: the host's network, Docker's shared bridge/],
    ['the shared bridge', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } }, sandbox: { network: 'bridge' } } } }), /shared bridge/],
    ['a path inside another read-write path', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } } }, teams: { a: {}, b: { toolPolicies: { exec: { allowedPaths: [owned] } } }, c: { toolPolicies: { exec: { allowedPaths: ['/var/tmp'] } } } } } }), /lies inside the read-write allowed path "\/var\/tmp" of team "c"/],
    ['uid 00 is root', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } }, sandbox: { user: '00:1000' } } } }), /never runs as root/],
    ['two teams on one named network', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } } }, teams: { a: { sandbox: { network: 'shared' } }, b: { sandbox: { network: 'shared' } } } } }), /network "shared" is already used by team "a"/],
    ['nice below -20', base({ gateway: { nice: -21, auth: { token: 'admin-secret' } } }), /^gateway\.nice: .*>=-20/],
    ['nice above 19', base({ gateway: { nice: 20, auth: { token: 'admin-secret' } } }), /^gateway\.nice: .*<=19/],
    ['nice not whole', base({ gateway: { nice: -2.5, auth: { token: 'admin-secret' } } }), /^gateway\.nice: /],
    ['quota', base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } }, quota: { maxConcurrent: 0 } } } }), /agents\.defaults\.quota\.maxConcurrent/],
    ['auth off on a public address', base({ gateway: { host: '0.0.0.0', auth: { enabled: false } } }), /gateway\.host: "0\.0\.0\.0" is not a loopback address/],
  ])('%s', (_name, raw, expected) => {
    const p = problems(raw);
    expect(p.some((x) => expected.test(x)), p.join('\n')).toBe(true);
  });

  it('auth off on loopback is fine', () => {
    expect(problems(base({ gateway: { host: '127.0.0.1', auth: { enabled: false } } }))).toEqual([]);
  });

  it('an unreadable or unparsable file names the file', () => {
    expect(() => loadConfigFile(join(dir, 'missing.yaml'))).toThrow(/missing\.yaml: cannot read: ENOENT/);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{ nope');
    expect(() => loadConfigFile(bad)).toThrow(/bad\.json: not valid JSON/);
  });

  it('rule examples are checked by the callback and reported per team', () => {
    const raw = base({ agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir], rules: [{ name: 'git', pattern: '^git status$', action: 'allow', match: ['git log'] }] } } } } });
    expect(() => resolveConfig(raw, { baseDir: dir, checkRuleExamples: (rules) => rules.flatMap((r) => (r.match ?? []).filter((m) => !r.pattern.test(m)).map((m) => `rule "${r.name}" does not match its example "${m}"`)) }, 'test')).toThrow(/agents\.teams\.default: rule "git" does not match its example "git log"/);
  });
});
