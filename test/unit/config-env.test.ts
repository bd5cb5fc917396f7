import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, resolveConfig, type AppConfig } from '../../src/config/load.js';

const dir = mkdtempSync(join('/var/tmp', 'execgate-config-env-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (defaultsEnv: unknown, teams: Record<string, unknown> = {}) => ({
  gateway: { auth: { token: 'admin-secret' } },
  store: { path: `${dir}-store` },
  agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } }, sandbox: { env: defaultsEnv } }, teams },
});

function load(raw: unknown, env: NodeJS.ProcessEnv = {}, offline = false): AppConfig {
  return resolveConfig(raw, { baseDir: dir, env, offline }, 'test');
}

function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    load(raw, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('sandbox.env', () => {
  it('a plain string is a variable that is not secret; { value } and { fromEnv } are read; fromEnv is secret unless it says otherwise', () => {
    const c = load(
      config({ PLAIN: 'x', LITERAL: { value: 'literal-secret', secret: true }, FROM: { fromEnv: 'HOST_TOKEN' }, FROM_PLAIN: { fromEnv: 'HOST_LEVEL', secret: false }, VALUE_PLAIN: { value: 'v' } }),
      { HOST_TOKEN: 'host-token-value-1', HOST_LEVEL: 'debug' },
    );
    expect(c.teams.default!.env).toEqual({
      PLAIN: { value: 'x', secret: false },
      LITERAL: { value: 'literal-secret', secret: true },
      FROM: { value: 'host-token-value-1', secret: true },
      FROM_PLAIN: { value: 'debug', secret: false },
      VALUE_PLAIN: { value: 'v', secret: false },
    });
  });

  it('is not part of the sandbox settings handed to the runner', () => {
    const c = load(config({ A: { value: 'secret-value-1', secret: true } }));
    expect(c.teams.default!.sandbox).not.toHaveProperty('env');
    expect(JSON.stringify(c.teams.default!.sandbox)).not.toContain('secret-value-1');
  });

  it('teams merge variable by variable: a team entry replaces the default one whole, null removes it', () => {
    const c = load(
      config({ SHARED: 'from-defaults', TOKEN: { fromEnv: 'DEFAULT_TOKEN' }, GONE: 'x' }, { data: { sandbox: { env: { TOKEN: { value: 'team-token-1234', secret: true }, GONE: null, OWN: 'y' } } }, web: {} }),
      { DEFAULT_TOKEN: 'default-token-123' },
    );
    expect(c.teams.data!.env).toEqual({ SHARED: { value: 'from-defaults', secret: false }, TOKEN: { value: 'team-token-1234', secret: true }, OWN: { value: 'y', secret: false } });
    expect(c.teams.web!.env).toEqual({ SHARED: { value: 'from-defaults', secret: false }, TOKEN: { value: 'default-token-123', secret: true }, GONE: { value: 'x', secret: false } });
    expect(c.teams.default!.env).toEqual(c.teams.web!.env);
  });

  it.each([
    [{ A: { value: 'x', fromEnv: 'B' } }, 'agents.defaults.sandbox.env.A: give exactly one of "value" and "fromEnv"'],
    [{ A: {} }, 'agents.defaults.sandbox.env.A: give exactly one of "value" and "fromEnv"'],
    [{ A: { fromEnv: 'not-a-name' } }, 'agents.defaults.sandbox.env.A.fromEnv: must be an environment variable name'],
    [{ A: 3 }, 'agents.defaults.sandbox.env.A: expected a string, { value | fromEnv, secret? }, or null'],
    [{ A: { value: 'x', secrets: true } }, 'agents.defaults.sandbox.env.A: Unrecognized key: "secrets"'],
    [{ 'BAD-NAME': 'x' }, 'agents.defaults.sandbox.env.BAD-NAME: not a valid variable name'],
  ])('a malformed entry names its key: %j', (env, message) => {
    expect(problems(config(env))).toContain(message);
  });

  it('names that change what runs are refused, as in a request', () => {
    expect(problems(config({ LD_PRELOAD: '/x.so' }))).toEqual(['agents.defaults.sandbox.env.LD_PRELOAD: changes which program runs or what it loads; not allowed']);
    expect(problems(config({}, { data: { sandbox: { env: { PATH: '/evil' } } } }))).toEqual(['agents.teams.data.sandbox.env.PATH: changes which program runs or what it loads; not allowed']);
  });

  it('a secret shorter than 8 characters is refused, and the problem never shows the value', () => {
    const p = problems(config({ SHORT: { value: 'abc1234', secret: true }, FROM: { fromEnv: 'SHORT_HOST' } }), { SHORT_HOST: 'xy9' });
    expect(p).toEqual([
      'agents.defaults.sandbox.env.SHORT: a secret value must be at least 8 characters (a shorter one cannot be redacted from output safely)',
      'agents.defaults.sandbox.env.FROM: a secret value must be at least 8 characters (a shorter one cannot be redacted from output safely)',
    ]);
    expect(p.join('\n')).not.toMatch(/abc1234|xy9/);
    // Not secret: any length.
    expect(problems(config({ SHORT: { value: 'abc', secret: false }, FROM: { fromEnv: 'SHORT_HOST', secret: false } }), { SHORT_HOST: 'xy9' })).toEqual([]);
  });

  it('a secret variable name over 64 characters is refused (it is in every marker)', () => {
    const name = `S${'X'.repeat(64)}`;
    expect(problems(config({ [name]: { value: 'long-enough-secret', secret: true } }))).toEqual([
      `agents.defaults.sandbox.env.${name}: a secret variable's name is at most 64 characters (it is shown in every redaction marker)`,
    ]);
  });

  it('a fromEnv variable missing from the service environment stops serve, named once even when every team inherits it', () => {
    expect(problems(config({ TOKEN: { fromEnv: 'NOT_SET_ANYWHERE' } }, { data: {}, web: {} }))).toEqual(['agents.defaults.sandbox.env.TOKEN: environment variable NOT_SET_ANYWHERE is not set']);
  });

  it('offline (config check --offline) a missing fromEnv is a warning and the variable is left out', () => {
    const c = load(config({ TOKEN: { fromEnv: 'NOT_SET_ANYWHERE' }, PLAIN: 'p' }, { data: {} }), {}, true);
    expect(c.warnings).toEqual(['agents.defaults.sandbox.env.TOKEN: environment variable NOT_SET_ANYWHERE is not set here; the variable is left out']);
    expect(c.teams.data!.env).toEqual({ PLAIN: { value: 'p', secret: false } });
  });

  it('a value holding NUL is refused', () => {
    expect(problems(config({ A: 'a\u0000b' }))).toEqual(['agents.defaults.sandbox.env.A: the value must not contain NUL']);
  });

  it('without sandbox.env a team has none', () => {
    const c = load({ gateway: { auth: { token: 'admin-secret' } }, store: { path: `${dir}-store` }, agents: { defaults: { toolPolicies: { exec: { allowedPaths: [dir] } } } } });
    expect(c.teams.default!.env).toEqual({});
  });
});
