import { mkdirSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config/load.js';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import { engine } from '../support/app.js';
import { listenOnEngine } from '../support/engine-app.js';
import { SANDBOX_IMAGE, TEST_RUNTIME, projectDir, silentLogger } from '../support/sandbox.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = 'test-artifacts';
const AGENT = 'e2e-agent-token-1';
const HUMAN = 'e2e-human-token-1';
const project = projectDir();
let app: FastifyInstance;
let runner: DockerRunner;
let url: string;
let browser: Browser;

beforeAll(async () => {
  const eng = await engine();
  const config = resolveConfig(
    {
      store: { path: `${project.path}-store` },
      gateway: { auth: { tokens: [{ token: AGENT, team: 'data', roles: ['exec'], name: 'agent' }, { token: HUMAN, team: 'data', roles: ['approve'], name: 'alice' }] } },
      agents: {
        defaults: { toolPolicies: { exec: { mode: 'approval-required', allowedPaths: [project.path] } }, sandbox: { image: SANDBOX_IMAGE, runtime: TEST_RUNTIME } },
        teams: { data: {} },
      },
    },
    { baseDir: project.path },
    'e2e',
  );
  runner = new DockerRunner({ instance: `e2e-${randomUUID().slice(0, 8)}`, logger: silentLogger });
  ({ app, url } = await listenOnEngine(config, runner, eng));
  // The flags keep Chromium off the (closed) network and let it run as root in CI.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  app.server.closeAllConnections();
  await app?.close();
  await runner?.close();
  project.remove();
});

describe('dashboard in a real browser', () => {
  it('signs in, sees a pending approval appear live, approves it, and sees the execution finish', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${url}/`);
    await page.getByLabel('Token').fill(HUMAN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.locator('#pending').textContent()).toContain('Nothing is waiting.');
    expect(page.url()).not.toContain(HUMAN);

    // The agent asks to run a command with a no-break space in it and a right-to-left override in an env
    // value (invisible characters in the command name or operators are hard-denied before anyone is asked).
    const command = 'echo "hello from the\u00a0sandbox"; id -u';
    const exec = fetch(`${url}/v1/exec`, {
      method: 'POST',
      headers: { authorization: `Bearer ${AGENT}`, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ command, env: { NOTE: 'abc\u202edef' } }),
    });

    const card = page.locator('article.approval');
    await card.waitFor({ timeout: 15_000 }).catch(async (err) => {
      await page.screenshot({ path: `${ARTIFACTS}/dashboard-failure.png`, fullPage: true });
      throw err;
    });
    // The approver sees the invisible character as a visible escape, and why it asks.
    await expect.poll(() => card.locator('.cmd').textContent()).toBe('echo "hello from the\\u{00A0}sandbox"; id -u');
    expect(await card.textContent()).toContain('NOTE=abc\\u{202E}def');
    expect(await card.textContent()).toContain('team data');
    expect(await card.textContent()).toMatch(/expires in \d+m/);
    await page.screenshot({ path: `${ARTIFACTS}/dashboard-pending.png`, fullPage: true });

    await card.getByRole('button', { name: 'Approve' }).click();
    const res = await exec;
    expect(res.status).toBe(200);
    const body = (await res.json()) as { exitCode: number; stdout: string };
    expect(body.exitCode).toBe(0);
    expect(body.stdout).toBe('hello from the\u00a0sandbox\n1000\n');

    const row = page.locator('#executions tr[data-status="finished"]').first();
    await row.waitFor({ timeout: 15_000 });
    expect(await row.locator('.exit').textContent()).toBe('0');
    expect(await row.textContent()).toContain('alice');
    await expect.poll(() => page.locator('#pending').textContent()).toContain('Nothing is waiting.');
    await page.screenshot({ path: `${ARTIFACTS}/dashboard-finished.png`, fullPage: true });
  });

  it("lists the team's open sessions live and ends one with its button, removing the container", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${url}/#token=${HUMAN}`);
    await expect.poll(() => page.locator('#sessions').textContent()).toContain('No open sessions.');
    const res = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: { authorization: `Bearer ${AGENT}`, 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(201);
    const session = (await res.json()) as { id: string; containerId: string };
    // session_started reaches the page over /v1/events.
    const row = page.locator(`#sessions tr[data-id="${session.id}"]`);
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.textContent()).toContain('agent');
    await page.screenshot({ path: `${ARTIFACTS}/dashboard-sessions.png`, fullPage: true });
    await row.getByRole('button', { name: `End session ${session.id}` }).click();
    await expect.poll(() => page.locator('#sessions').textContent()).toContain('No open sessions.');
    await expect.poll(async () => (await runner.docker.listContainers({ all: true, filters: { id: [session.containerId] } })).length).toBe(0);
    await page.close();
  });

  it('signs in from a #token= link and removes the token from the URL', async () => {
    const page = await browser.newPage();
    await page.goto(`${url}/#token=${HUMAN}`);
    await page.locator('#app').waitFor();
    expect(page.url()).toBe(`${url}/`);
    expect(await page.evaluate(() => (globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }).sessionStorage.getItem('execgate.token'))).toBe(HUMAN);
  });

  it('a wrong token is refused with a message', async () => {
    const page = await browser.newPage();
    await page.goto(`${url}/`);
    await page.getByLabel('Token').fill('wrong-token-123');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.locator('#sign-in-error').textContent()).toContain('not accepted');
  });
});
