import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { configCommand, configJsonSchema, policyCommand, POLICY_EXIT } from '../../src/cli/config.js';
import { ConfigFileSchema } from '../../src/config/schema.js';

const root = join(import.meta.dirname, '../..');
const dir = mkdtempSync('/tmp/execgate-cfg-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ajv = new Ajv2020({ strict: false, allErrors: true });
const validate = ajv.compile(configJsonSchema());

/** The config example in the README, as users copy it. */
function readmeExample(): unknown {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /## Configuration[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
  if (!block) throw new Error('no yaml block under "## Configuration" in README.md');
  return parseYaml(block);
}

function capture(): { io: { stdout: Writable; stderr: Writable }; out: () => string; err: () => string } {
  let out = '';
  let err = '';
  const sink = (add: (s: string) => void) => new Writable({ write: (c: Buffer, _e, cb) => (add(c.toString()), cb()) });
  return { io: { stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)) }, out: () => out, err: () => err };
}

describe('config JSON Schema', () => {
  it('the committed config.schema.json is the one generated from the zod schema', () => {
    const committed = JSON.parse(readFileSync(join(root, 'config.schema.json'), 'utf8')) as unknown;
    expect(committed, 'config.schema.json is stale: run `npm run openapi`').toEqual(configJsonSchema());
  });

  const valid: [string, unknown][] = [
    ['an empty file', {}],
    ['the README example', readmeExample()],
    ['the compose example', parseYaml(readFileSync(join(root, 'deploy/execgate.yaml'), 'utf8'))],
    ['auth disabled on loopback', { gateway: { host: '127.0.0.1', auth: { enabled: false } } }],
    ['a team with a read-only path object', { agents: { teams: { data: { toolPolicies: { exec: { allowedPaths: [{ path: '/srv', readOnly: true }] } } } } } }],
    ['rules with examples', { agents: { defaults: { toolPolicies: { exec: { rules: [{ name: 'git', pattern: '^git ', action: 'allow', match: ['git status'] }] } } } } }],
  ];
  it.each(valid)('accepts %s, as zod does', (_name, doc) => {
    expect(ConfigFileSchema.safeParse(doc).success).toBe(true);
    expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
  });

  const invalid: [string, unknown, string][] = [
    ['a port that is a string', { gateway: { port: '80' } }, '/gateway/port'],
    ['a port out of range', { gateway: { port: 70000 } }, '/gateway/port'],
    ['an unknown top-level key', { gatway: {} }, ''],
    ['an unknown nested key', { agents: { defaults: { sandbox: { memory: 5 } } } }, '/agents/defaults/sandbox'],
    ['a bad security mode', { agents: { defaults: { security: { mode: 'yolo' } } } }, '/agents/defaults/security/mode'],
    ['a bad rule action', { agents: { defaults: { toolPolicies: { exec: { rules: [{ name: 'x', pattern: 'x', action: 'maybe' }] } } } } }, '/agents/defaults/toolPolicies/exec/rules/0/action'],
    ['a token without roles', { gateway: { auth: { tokens: [{ token: 'abcdefgh1234' }] } } }, '/gateway/auth/tokens/0'],
    ['a bad team name', { agents: { teams: { 'Bad Team': {} } } }, '/agents/teams'],
    ['memory below the floor', { agents: { defaults: { sandbox: { memoryMb: 1 } } } }, '/agents/defaults/sandbox/memoryMb'],
    ['the host network', { agents: { defaults: { sandbox: { network: 'host' } } } }, ''],
  ];
  it.each(invalid)('rejects %s, as zod does, at the same path', (_name, doc, path) => {
    expect(ConfigFileSchema.safeParse(doc).success).toBe(false);
    if (path === '' && validate(doc)) {
      // Not every zod refinement is expressible in JSON Schema (the host network is refused in code): editors
      // miss these, `execgate config check` does not.
      expect(_name).toBe('the host network');
      return;
    }
    expect(validate(doc)).toBe(false);
    expect(validate.errors!.map((e) => e.instancePath).some((p) => p.startsWith(path)), JSON.stringify(validate.errors)).toBe(true);
  });

  it('`execgate config schema` prints it', async () => {
    const c = capture();
    expect(await configCommand(['schema'], c.io)).toBe(0);
    expect(JSON.parse(c.out())).toEqual(configJsonSchema());
  });
});

describe('execgate config check', () => {
  it('says ok for a good file and names its teams', async () => {
    const file = join(dir, 'good.yaml');
    writeFileSync(file, `gateway: { auth: { token: abcdefgh12345 } }\nagents:\n  defaults: { toolPolicies: { exec: { allowedPaths: [${dir}] } } }\n  teams: { data: {} }\nstore: { path: ${dir}-store }\n`);
    const c = capture();
    expect(await configCommand(['check', file], c.io)).toBe(0);
    expect(c.out()).toMatch(/ok — 2 team\(s\): default .*data/);
  });

  it('prints every problem with its path, and exits 1', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'gateway: { port: "x", auth: { token: short } }\nagents: { defaults: { sandbox: { memoryMb: 1, bogus: 2 } } }\n');
    const c = capture();
    expect(await configCommand(['check', file], c.io)).toBe(1);
    expect(c.err()).toMatch(/3 problem\(s\)/);
    expect(c.err()).toContain('gateway.port:');
    expect(c.err()).toContain('agents.defaults.sandbox.memoryMb:');
    expect(c.err()).toMatch(/agents\.defaults\.sandbox: Unrecognized key: "bogus"/);
  });

  it('then what only code can check: paths that do not exist, short tokens, rule examples that do not match', async () => {
    const file = join(dir, 'semantic.yaml');
    const write = (path: string) =>
      writeFileSync(file, `gateway: { auth: { token: short } }\nagents: { defaults: { toolPolicies: { exec: { allowedPaths: [${path}], rules: [{ name: git, pattern: "^git ", action: allow, match: ["ls"] }] } } } }\nstore: { path: ${dir}-store }\n`);
    write(`${dir}/missing`);
    const c = capture();
    expect(await configCommand(['check', file], c.io)).toBe(1);
    expect(c.err()).toMatch(/agents\.defaults\.toolPolicies\.exec\.allowedPaths\.0: ".*missing" does not exist/);
    expect(c.err()).toMatch(/gateway\.auth\.token: a token must be at least 8 characters/);
    write(dir);
    const d = capture();
    expect(await configCommand(['check', file], d.io)).toBe(1);
    expect(d.err()).toMatch(/rule "git": example "ls" .*should match but does not/);
  });

  it('an unreadable file or bad arguments are errors, not crashes', async () => {
    const c = capture();
    expect(await configCommand(['check', join(dir, 'nope.yaml')], c.io)).toBe(1);
    expect(c.err()).toMatch(/cannot read: ENOENT/);
    expect(await configCommand(['frobnicate'], capture().io)).toBe(2);
    expect(await configCommand(['check'], capture().io)).toBe(2);
  });
});

describe('execgate policy test', () => {
  const file = join(dir, 'policy.yaml');
  writeFileSync(
    file,
    `gateway: { auth: { token: abcdefgh12345 } }\nstore: { path: ${dir}-store }\nagents:\n  defaults:\n    toolPolicies:\n      exec:\n        mode: allowed\n        allowedPaths: [${dir}]\n        blockedPatterns: ["rm -rf"]\n        rules:\n          - { name: git-read, pattern: "^git (status|log)", action: allow }\n          - { name: deploys, pattern: "^make deploy", action: ask }\n  teams: { data: { toolPolicies: { exec: { mode: blocked } } } }\n`,
  );
  const table: [string, string[], number, RegExp][] = [
    ['an allowed pipeline', ['git status | wc -l'], POLICY_EXIT.allow, /^ALLOW — .*\n.*\n {2}allow git status {2}\[rule "git-read"\]/],
    ['a rule that asks', ['make deploy'], POLICY_EXIT.ask, /^ASK — .*deploys/],
    ['a blocked pattern in segment 2', ['git status && rm -rf /'], POLICY_EXIT.deny, /^DENY \(hard\) — segment 2 .*"rm -rf"/],
    ['a path outside', ['cat /etc/passwd'], POLICY_EXIT.deny, /path_not_allowed/],
    ['non-interactive turns ask into deny', ['make deploy', '--non-interactive'], POLICY_EXIT.deny, /approval_unavailable/],
    ['another team', ['git status', '--team', 'data'], POLICY_EXIT.deny, /tool_blocked/],
  ];
  it.each(table)('%s', async (_name, args, code, out) => {
    const c = capture();
    expect(await policyCommand(['test', file, ...args], c.io)).toBe(code);
    expect(c.out()).toMatch(out);
  });

  it('--json prints the explanation; bad team, cwd or file are usage errors', async () => {
    const c = capture();
    expect(await policyCommand(['test', file, 'git log', '--json'], c.io)).toBe(0);
    expect(JSON.parse(c.out())).toMatchObject({ team: 'default', decision: 'allow', code: 'allowed', segments: [{ rule: 'git-read' }] });
    const e = capture();
    expect(await policyCommand(['test', file, 'ls', '--team', 'nope'], e.io)).toBe(POLICY_EXIT.usage);
    expect(e.err()).toMatch(/team "nope" is not in/);
    expect(await policyCommand(['test', file, 'ls', '--cwd', `${dir}/missing`], capture().io)).toBe(POLICY_EXIT.usage);
    expect(await policyCommand(['test', join(dir, 'nope.yaml'), 'ls'], capture().io)).toBe(POLICY_EXIT.usage);
    expect(await policyCommand(['test', file], capture().io)).toBe(POLICY_EXIT.usage);
    expect(await policyCommand(['test', file, 'ls', '--bogus'], capture().io)).toBe(POLICY_EXIT.usage);
  });
});

describe('checking a config away from where it runs (CI)', () => {
  const deploy = join(root, 'deploy/execgate.yaml');
  it('config check names what is missing here; --offline makes those warnings and checks the rest', async () => {
    const strict = capture();
    expect(await configCommand(['check', deploy], strict.io)).toBe(1);
    expect(strict.err()).toMatch(/allowedPaths\.0: "\/srv\/project" does not exist/);
    expect(strict.err()).toMatch(/environment variable EXECGATE_AGENT_TOKEN is not set/);
    const offline = capture();
    expect(await configCommand(['check', deploy, '--offline'], offline.io)).toBe(0);
    expect(offline.out()).toMatch(/ok — 2 team\(s\)/);
    expect(offline.out()).toMatch(/warning: .*"\/srv\/project" does not exist on this machine; taken as written/);
    expect(offline.out()).toMatch(/warning: .*EXECGATE_APPROVER_TOKEN is not set here; the token matches nothing/);
    // A real problem is still a problem offline.
    const file = join(dir, 'offline-bad.yaml');
    writeFileSync(file, readFileSync(deploy, 'utf8').replace('memoryMb', 'memoryMB').replace('network: none', 'network: host'));
    const bad = capture();
    expect(await configCommand(['check', file, '--offline'], bad.io)).toBe(1);
    expect(bad.err()).toMatch(/sandbox\.network/);
  });

  it.each([
    ['git status', [], POLICY_EXIT.allow, /rule "git read-only"/],
    ['git push origin main', ['--cwd', '/srv/project/sub'], POLICY_EXIT.ask, /cwd \/srv\/project\/sub, code rule_ask/],
    ['cat /etc/shadow', [], POLICY_EXIT.deny, /path_not_allowed/],
  ])('policy test on the shipped sidecar config: %s', async (command, extra, code, out) => {
    const c = capture();
    expect(await policyCommand(['test', deploy, command, '--team', 'project', ...extra], c.io)).toBe(code);
    expect(c.out()).toMatch(out);
    expect(c.err()).toMatch(/warning: .*does not exist on this machine/);
  });

  it('a cwd inside an allowed path that does exist here must exist, as the service requires', async () => {
    const c = capture();
    expect(await policyCommand(['test', join(dir, 'policy.yaml'), 'ls', '--cwd', `${dir}/nope`], c.io)).toBe(POLICY_EXIT.usage);
    expect(c.err()).toMatch(/does not exist/);
  });
});
