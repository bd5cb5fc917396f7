import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SANDBOX_IMAGE, TEST_RUNTIME, projectDir } from '../support/sandbox.js';
import { baseNice, mayLowerNiceTo, threadNices } from '../support/priority.js';
import { buildDist, startService, stopService, type ServiceProcess } from '../support/service-process.js';

/**
 * The real service process (`node dist/main.js serve`): configuration reload on SIGHUP, and state that
 * survives a restart. Faults (SIGKILL, SIGTERM, Docker away) are in faults.test.ts.
 */
const TOKEN = 'process-test-token-1';
const project = projectDir();
const work = mkdtempSync(join('/var/tmp', 'execgate-proc-'));
const configPath = join(work, 'config.yaml');
const store = join(work, 'store');

function writeConfig(rules: string, extra = '', gateway = ''): void {
  writeFileSync(
    configPath,
    `gateway: { port: 0, auth: { token: ${TOKEN} }${gateway} }
store: { path: ${store} }
agents:
  defaults:
    sandbox: { image: "${SANDBOX_IMAGE}", runtime: ${TEST_RUNTIME} }
    toolPolicies:
      exec:
        mode: allowed
        allowedPaths: ["${project.path}"]
        noMatch: deny
        onDeny: ask
        rules: ${rules}
${extra}`,
  );
}

type Service = ServiceProcess;
const start = () => startService(configPath, { EXECGATE_INSTANCE: 'process-test' });
const stop = stopService;

const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
const check = (s: Service, command: string) =>
  fetch(`${s.url}/v1/policy/check`, { method: 'POST', headers, body: JSON.stringify({ command, interactive: false }) }).then((r) => r.json() as Promise<{ decision: string; code: string }>);

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const v = await fn();
    if (ok(v)) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(buildDist, 120_000);

afterAll(() => {
  project.remove();
  rmSync(work, { recursive: true, force: true });
});

describe('the service process', () => {
  it('reloads its config on SIGHUP, and refuses a bad one keeping the old', async () => {
    writeConfig('[]');
    const s = await start();
    try {
      expect((await check(s, 'git status')).decision).toBe('deny');
      writeConfig(`[{ name: git read-only, pattern: '^git (status|diff)\\b', action: allow }]`);
      s.proc.kill('SIGHUP');
      await until(() => check(s, 'git status'), (d) => d.decision === 'allow', 'the reloaded rule');
      writeConfig(`[{ name: broken, pattern: '(', action: allow }]`);
      s.proc.kill('SIGHUP');
      await until(async () => s.logs.join(''), (l) => l.includes('configuration reload refused'), 'the refusal log line');
      expect(s.logs.join('')).toContain('rule \\"broken\\": invalid regular expression');
      expect((await check(s, 'git status')).decision).toBe('allow');
    } finally {
      await stop(s);
    }
  });

  it('sets its own CPU priority (gateway.nice) on every thread, at start and on reload, back to the start value too', async () => {
    // Values above this process's own, which any user may set; going back down to it on reload needs the
    // privilege the kernel grants this process (or not).
    const base = baseNice();
    const a = Math.min(19, Math.max(base, 0) + 4);
    const b = Math.min(19, a + 3);
    writeConfig('[]', '', `, nice: ${a}`);
    const s = await start();
    try {
      const atStart = threadNices(s.proc.pid!);
      expect(atStart.length).toBeGreaterThan(1); // the main thread, V8's workers, libuv's pool
      expect(new Set(atStart)).toEqual(new Set([a]));
      expect(s.logs.join('')).toMatch(new RegExp(`"nice":${a},"threads":\\{"set":\\d+,"of":\\d+\\}.*service CPU priority set`));
      writeConfig('[]', '', `, nice: ${b}`);
      s.proc.kill('SIGHUP');
      await until(async () => s.logs.join(''), (l) => l.split('configuration reloaded').length === 2, 'the reload');
      expect(new Set(threadNices(s.proc.pid!))).toEqual(new Set([b]));
      writeConfig('[]', '', `, nice: ${base}`);
      s.proc.kill('SIGHUP');
      await until(async () => s.logs.join(''), (l) => l.split('configuration reloaded').length === 3, 'the second reload');
      expect(new Set(threadNices(s.proc.pid!))).toEqual(new Set([mayLowerNiceTo(base) ? base : b]));
    } finally {
      await stop(s);
    }
  });

  it('the default gateway.nice is -10 where the kernel lets the process raise its priority; a refusal is logged, not fatal', async () => {
    writeConfig('[]');
    const s = await start();
    try {
      const nices = new Set(threadNices(s.proc.pid!));
      if (mayLowerNiceTo(-10)) {
        expect(nices).toEqual(new Set([-10]));
        expect(s.logs.join('')).toContain('service CPU priority set (gateway.nice)');
      } else {
        expect(nices).toEqual(new Set([baseNice()]));
        expect(s.logs.join('')).toContain("could not set the service's CPU priority (gateway.nice)");
      }
      expect((await check(s, 'git status')).decision).toBe('deny');
    } finally {
      await stop(s);
    }
  });

  it('history and remembered rules survive a restart; the audit chain verifies', async () => {
    writeConfig('[]');
    let s = await start();
    const run = fetch(`${s.url}/v1/exec`, { method: 'POST', headers: { ...headers, accept: 'application/json' }, body: JSON.stringify({ command: 'echo persisted' }) });
    const { approvals } = await until(
      () => fetch(`${s.url}/v1/approvals?status=pending`, { headers }).then((r) => r.json() as Promise<{ approvals: { id: string }[] }>),
      (a) => a.approvals.length === 1,
      'a pending approval',
    );
    const ok = await fetch(`${s.url}/v1/approvals/${approvals[0]!.id}/approve`, { method: 'POST', headers, body: JSON.stringify({ remember: { scope: 'exact' } }) });
    expect(ok.status).toBe(200);
    const answer = (await (await run).json()) as { stdout: string; execId: string };
    expect(answer.stdout).toBe('persisted\n');
    await stop(s);

    s = await start();
    try {
      const hist = (await (await fetch(`${s.url}/v1/executions/${answer.execId}`, { headers })).json()) as Record<string, unknown>;
      expect(hist).toMatchObject({ status: 'finished', exitCode: 0, approvedBy: 'admin', command: 'echo persisted' });
      expect((await check(s, 'echo persisted')).decision).toBe('allow');
      expect((await check(s, 'echo other')).decision).toBe('deny');
    } finally {
      await stop(s);
    }
    const verify = execFileSync(process.execPath, ['dist/main.js', 'audit', 'verify', '--store', store]).toString();
    expect(verify).toMatch(/^audit chain intact: \d+ records/);
  });
  // A SIGKILLed process's orphans and approvals: test/integration/faults.test.ts.
});
