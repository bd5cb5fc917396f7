import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LABEL_EXEC, LABEL_INSTANCE, LABEL_MANAGED, LABEL_TEAM } from '../../src/runner/container-spec.js';
import { readNdjson } from '../support/ndjson.js';
import { privateDockerd, type PrivateDockerd } from '../support/private-dockerd.js';
import { SANDBOX_IMAGE, TEST_RUNTIME, projectDir } from '../support/sandbox.js';
import { buildDist, serveUntilExit, startService, stopService, waitForLog, type ServiceProcess } from '../support/service-process.js';

/**
 * Faults, on the real service process and a real Docker engine: Docker restarted mid-run, the service killed
 * mid-run, SIGTERM with work under way, Docker missing at start, and runtimes dockerd does not offer.
 *
 * Stopping and withholding Docker must not disturb anything else using the system engine, so these tests run
 * against a private dockerd of their own (test/support/private-dockerd.ts): the service gets DOCKER_HOST
 * pointing at its socket. "Docker restarted" is that dockerd stopped with SIGTERM (as an init system stops
 * it) and started again; "Docker missing" is the service started before it.
 */
const TOKEN = 'faults-test-token-1';
const INSTANCE = 'faults-test';
const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
const project = projectDir('execgate-faults-');
const work = mkdtempSync(join('/var/tmp', 'execgate-faults-'));
let pd: PrivateDockerd;
let services: ServiceProcess[] = [];
/** The host's network interfaces before: the private engine must leave them as they were (docker0 above all). */
const interfaces = () => Object.keys(networkInterfaces()).sort();
let hostInterfaces: string[] = [];

type Ev = Record<string, unknown>;

interface Options {
  pool?: number;
  drainTimeoutMs?: number;
  runtime?: string;
  /** A second team, "data", asking for this runtime. */
  dataRuntime?: string;
}

/** A fresh config file and store; the same instance id every time, as a restarted deployment keeps it. */
function writeConfig(name: string, o: Options = {}): { path: string; store: string } {
  const path = join(work, `${name}.yaml`);
  const store = join(work, `${name}-store`);
  writeFileSync(
    path,
    `gateway: { port: 0, auth: { token: ${TOKEN} }, drainTimeoutMs: ${o.drainTimeoutMs ?? 10_000} }
store: { path: ${store} }
approvals: { timeoutMs: 600000 }
agents:
  defaults:
    sandbox: { image: "${SANDBOX_IMAGE}", runtime: ${o.runtime ?? TEST_RUNTIME}, timeoutMs: 300000, pool: { size: ${o.pool ?? 0} } }
    toolPolicies:
      exec:
        mode: allowed
        allowedPaths: ["${project.path}"]
        noMatch: allow
        onDeny: ask
        # "echo pending" needs a human: the way to get an approval that waits.
        rules: [{ name: needs a human, pattern: '^echo pending', action: deny }]
${o.dataRuntime ? `  teams:\n    data: { sandbox: { runtime: ${o.dataRuntime} } }\n` : ''}`,
  );
  return { path, store };
}

async function start(configPath: string): Promise<ServiceProcess> {
  const s = await startService(configPath, { DOCKER_HOST: pd.host, EXECGATE_INSTANCE: INSTANCE });
  services.push(s);
  return s;
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, what: string, tries = 600): Promise<T> {
  let last: T | undefined;
  for (let i = 0; i < tries; i++) {
    last = await fn();
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)?.slice(0, 500)})`);
}

interface Answer {
  status: number;
  body: { error: { code: string; message: string }; runtimes?: string[]; approvals?: unknown[]; [k: string]: unknown };
}
const answer = async (r: Response): Promise<Answer> => ({ status: r.status, body: (await r.json()) as Answer['body'] });
const get = (s: ServiceProcess, path: string) => fetch(`${s.url}${path}`, { headers }).then(answer);
const post = (s: ServiceProcess, path: string, body: unknown) => fetch(`${s.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) }).then(answer);
const readyz = (s: ServiceProcess) => get(s, '/readyz');

/** An exec streamed as NDJSON, read in the background: its events so far, and its end. */
function execStream(s: ServiceProcess, body: Record<string, unknown>) {
  const events: Ev[] = [];
  const done = fetch(`${s.url}/v1/exec`, { method: 'POST', headers, body: JSON.stringify(body) }).then((res) => {
    if (res.status !== 200) throw new Error(`exec answered ${res.status}`);
    return readNdjson(res, { onEvent: (e) => events.push(e), keep: false }).then(() => events);
  });
  // A stream cut by a killed service rejects: the tests that do that look at `events` instead.
  done.catch(() => undefined);
  const event = (type: string) => until(async () => events.find((e) => e.type === type), (e) => e !== undefined, `a "${type}" event (have: ${events.map((e) => e.type).join(', ')})`) as Promise<Ev>;
  return { events, done, event };
}

const managed = () => pd.docker.listContainers({ all: true, filters: { label: [`${LABEL_MANAGED}=true`] } });
const byExec = (execId: string) => pd.docker.listContainers({ all: true, filters: { label: [`${LABEL_EXEC}=${execId}`] } });
/** Warm containers waiting for a command, as the service counts them (/metrics). */
const poolIdle = async (s: ServiceProcess) => Number(/^execgate_pool_idle\{team="default"\} (\d+)/m.exec(await (await fetch(`${s.url}/metrics`)).text())?.[1] ?? 0);

beforeAll(async () => {
  hostInterfaces = interfaces();
  buildDist();
  pd = await privateDockerd('faults');
  await pd.start();
  await pd.loadImages([SANDBOX_IMAGE]);
}, 300_000);

afterEach(async (ctx) => {
  // A failure shows what the service said.
  if (ctx.task.result?.state === 'fail') {
    for (const s of services) {
      const lines = s.logs.join('').split('\n').filter((l) => !/"msg":"(incoming request|request completed)"/.test(l));
      console.error(`--- service log (${s.url}), without request lines:\n${lines.join('\n').slice(-8000)}`);
    }
  }
  for (const s of services) await stopService(s, 'SIGKILL');
  services = [];
  if (!pd.running) await pd.start();
  for (const c of await pd.containers()) await pd.docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
  for (const v of await pd.volumes()) await pd.docker.getVolume(v).remove({ force: true }).catch(() => undefined);
}, 120_000);

afterAll(async () => {
  try {
    if (pd) await pd.dispose();
  } finally {
    project.remove();
    rmSync(work, { recursive: true, force: true });
  }
  // Starting, stopping and restarting a second engine left the host's network alone.
  expect(interfaces()).toEqual(hostInterfaces);
}, 120_000);

describe('faults', () => {
  it('Docker restarted mid-run: the run ends with error docker_unavailable, nothing leaks, and the service recovers by itself (ready again, next exec runs, warm pool refilled)', async () => {
    const { path } = writeConfig('restart', { pool: 1 });
    const s = await start(path);
    await until(() => poolIdle(s), (n) => n === 1, 'the warm pool to fill');

    // Two runs under way when Docker goes: one in the warm container, one fresh with a /scratch volume.
    const warm = execStream(s, { command: 'echo one; sleep 300' });
    const withFiles = execStream(s, { command: 'cat in.txt; sleep 300', files: { 'in.txt': 'two\n' } });
    await warm.event('stdout');
    await withFiles.event('stdout');
    const execIds = [warm, withFiles].map((x) => x.events[0]!.execId as string);

    await pd.stop();
    for (const run of [warm, withFiles]) {
      const events = await run.done;
      const last = events.at(-1)!;
      expect(last, JSON.stringify(events)).toMatchObject({ type: 'error', code: 'docker_unavailable' });
      expect(last.message).toMatch(/Docker engine/);
      expect(events.some((e) => e.type === 'exit')).toBe(false);
    }
    // While Docker is away: not ready (with the reason), alive, and a new exec is a clear 503.
    const down = await readyz(s);
    expect(down.status).toBe(503);
    expect(down.body.error).toMatchObject({ code: 'not_ready' });
    expect(down.body.error.message).toMatch(/not reachable/);
    expect((await get(s, '/healthz')).status).toBe(200);
    const refused = await fetch(`${s.url}/v1/exec`, { method: 'POST', headers: { ...headers, accept: 'application/json' }, body: JSON.stringify({ command: 'echo hi' }) });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('docker_unavailable');
    for (const id of execIds) expect((await get(s, `/v1/executions/${id}`)).body).toMatchObject({ status: 'failed', error: 'docker_unavailable' });

    await pd.start();
    // Recovered by itself: ready, the containers the restart left behind reaped (and their volumes), the pool refilled.
    await until(() => readyz(s), (r) => r.status === 200, '/readyz to answer 200 again');
    for (const id of execIds) await until(() => byExec(id), (l) => l.length === 0, `the container of ${id} to be reaped`);
    await until(() => poolIdle(s), (n) => n === 1, 'the warm pool to refill');
    await until(async () => (await managed()).filter((c) => c.State !== 'running'), (l) => l.length === 0, 'no stopped sandbox left');
    // The files run's /scratch volume too: a removal that raced dockerd's shutdown leaves it behind
    // ("database not open"), and the reaper removes it once the engine is back.
    await until(() => pd.volumes(), (l) => l.length === 0, 'no volume left');
    const next = await fetch(`${s.url}/v1/exec`, { method: 'POST', headers: { ...headers, accept: 'application/json' }, body: JSON.stringify({ command: 'echo back' }) });
    expect(next.status).toBe(200);
    expect(await next.json()).toMatchObject({ exitCode: 0, stdout: 'back\n' });
  });

  it('Docker killed outright (SIGKILL) mid-run: its wait() never answers, yet the run ends with error docker_unavailable, and once Docker is back the container is reaped', async () => {
    const { path } = writeConfig('crash');
    const s = await start(path);
    const run = execStream(s, { command: 'echo up; sleep 300' });
    await run.event('stdout');
    const execId = run.events[0]!.execId as string;
    await pd.kill();
    const events = await run.done;
    expect(events.at(-1), JSON.stringify(events)).toMatchObject({ type: 'error', code: 'docker_unavailable' });
    expect(events.some((e) => e.type === 'exit')).toBe(false);
    await pd.start();
    await until(() => readyz(s), (r) => r.status === 200, '/readyz to answer 200 again');
    await until(() => byExec(execId), (l) => l.length === 0, 'the container to be reaped');
    expect(await pd.volumes()).toEqual([]);
  });

  it('the service SIGKILLed mid-run and restarted: every orphan (one-shot, warm pool, session) is reaped, runs are failed, pending approvals answer as expired', async () => {
    const { path } = writeConfig('sigkill', { pool: 1 });
    let s = await start(path);
    await until(() => poolIdle(s), (n) => n === 1, 'the warm pool to fill');
    const running = execStream(s, { command: 'echo started; sleep 300' });
    await running.event('stdout');
    const oneShot = execStream(s, { command: 'cat in.txt; sleep 300', files: { 'in.txt': 'x\n' } });
    await oneShot.event('stdout');
    const session = await post(s, '/v1/sessions', {});
    expect(session.status).toBe(201);
    const waiting = execStream(s, { command: 'echo pending' });
    const pending = await waiting.event('approval_pending');
    await until(() => poolIdle(s), (n) => n === 1, 'the warm pool to refill after its container was taken');
    const before = await managed();
    // The warm pool's idle one, the run in the pool's container, the one-shot and the session.
    expect(before.length).toBe(4);
    expect(before.some((c) => c.Labels[LABEL_EXEC] === session.body.id)).toBe(true);

    await stopService(s, 'SIGKILL');
    // The orphans outlive the process, as they would after a crash or an OOM kill.
    expect((await managed()).map((c) => c.Id).sort()).toEqual(before.map((c) => c.Id).sort());
    // The waiting client's connection died with the process: it got no answer, and must not be left pending.
    await waiting.done.then(
      () => undefined,
      () => undefined,
    );
    expect(waiting.events.at(-1)).toMatchObject({ type: 'approval_pending' });

    s = await start(path);
    await until(managed, (l) => !l.some((c) => before.some((b) => b.Id === c.Id)), 'every orphan to be reaped');
    expect(await pd.volumes()).toEqual([]);
    // A new process, a new warm pool.
    await until(() => poolIdle(s), (n) => n === 1, 'a new warm pool');
    for (const run of [running, oneShot]) {
      expect((await get(s, `/v1/executions/${run.events[0]!.execId as string}`)).body).toMatchObject({ status: 'failed', error: 'service_restarted' });
    }
    const approval = await get(s, `/v1/approvals/${pending.approvalId as string}`);
    expect(approval.status).toBe(200);
    expect(approval.body).toMatchObject({ status: 'expired', execId: waiting.events[0]!.execId, command: 'echo pending' });
    expect((await get(s, '/v1/approvals?status=pending')).body.approvals).toEqual([]);
    expect((await get(s, `/v1/executions/${waiting.events[0]!.execId as string}`)).body).toMatchObject({ status: 'expired' });
    const late = await post(s, `/v1/approvals/${pending.approvalId as string}/approve`, {});
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('approval_already_resolved');
    // The session is gone with its container.
    expect((await get(s, `/v1/sessions/${session.body.id as string}`)).status).toBe(404);
  });

  it('SIGTERM drains: new work gets 503 while health answers, a running exec finishes, one still running at the deadline ends with error shutting_down, containers are removed, exit 0', async () => {
    const { path } = writeConfig('drain', { pool: 1, drainTimeoutMs: 5_000 });
    const s = await start(path);
    await until(() => poolIdle(s), (n) => n === 1, 'the warm pool to fill');
    const go = join(project.path, 'go');
    // Finishes when the test says so (the file appears): after SIGTERM, well before the deadline.
    const finishing = execStream(s, { command: 'echo waiting; while [ ! -e go ]; do sleep 0.1; done; echo finished' });
    // Never finishes by itself.
    const endless = execStream(s, { command: 'echo forever; sleep 300' });
    const waiting = execStream(s, { command: 'echo pending' });
    await finishing.event('stdout');
    await endless.event('stdout');
    await waiting.event('approval_pending');
    // A dashboard's event subscription never ends by itself: it must not hold the exit up.
    const subscriber = fetch(`${s.url}/v1/events`, { headers })
      .then(async (r) => {
        const reader = r.body!.getReader();
        while (!(await reader.read()).done);
      })
      .catch(() => undefined);

    const exited = new Promise<number | null>((r) => s.proc.once('exit', (code) => r(code)));
    s.proc.kill('SIGTERM');
    await waitForLog(s, 'shutting down: draining');

    // New work is refused with 503; health, history and policy checks still answer; /readyz says why not.
    const exec = await post(s, '/v1/exec', { command: 'echo new' });
    expect(exec.status).toBe(503);
    expect(exec.body.error.code).toBe('shutting_down');
    const session = await post(s, '/v1/sessions', {});
    expect(session.status).toBe(503);
    expect(session.body.error.code).toBe('shutting_down');
    expect((await get(s, '/healthz')).status).toBe(200);
    const ready = await readyz(s);
    expect(ready.status).toBe(503);
    expect(ready.body.error.message).toMatch(/shutting down/);
    expect((await post(s, '/v1/policy/check', { command: 'echo x' })).status).toBe(200);
    expect((await get(s, '/v1/executions')).status).toBe(200);
    // The approval that waited is answered at once: nobody will approve it now.
    expect((await waiting.done).at(-1)).toMatchObject({ type: 'error', code: 'shutting_down' });

    writeFileSync(go, '');
    const done = await finishing.done;
    expect(done.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
    expect(done.filter((e) => e.type === 'stdout').map((e) => e.data).join('')).toBe('waiting\nfinished\n');

    const stopped = await endless.done;
    expect(stopped.at(-1)).toMatchObject({ type: 'error', code: 'shutting_down' });
    expect(stopped.at(-1)!.message).toMatch(/drain deadline/);

    expect(await exited).toBe(0);
    await subscriber;
    expect(await managed()).toEqual([]);
    expect(await pd.volumes()).toEqual([]);
  });

  it('Docker missing at start: the service starts, /readyz is 503 with the reason, and when Docker appears it becomes ready by itself, reaping leftovers and filling the warm pool', async () => {
    // A leftover of an earlier run of this instance, then Docker goes away.
    const leftover = await pd.docker.createContainer({
      Image: SANDBOX_IMAGE,
      Cmd: ['sleep', '300'],
      Labels: { [LABEL_MANAGED]: 'true', [LABEL_INSTANCE]: INSTANCE, [LABEL_EXEC]: 'ex_leftover', [LABEL_TEAM]: 'default' },
      HostConfig: { Init: true, NetworkMode: 'none' },
    });
    await leftover.start();
    await pd.stop();

    const { path } = writeConfig('missing', { pool: 1 });
    const s = await start(path);
    expect((await get(s, '/healthz')).status).toBe(200);
    const down = await readyz(s);
    expect(down.status).toBe(503);
    expect(down.body.error.code).toBe('not_ready');
    expect(down.body.error.message).toMatch(/Docker engine is not reachable/);
    expect(s.logs.join('')).toMatch(/not ready: the Docker engine is not reachable/);

    await pd.start();
    await until(() => readyz(s), (r) => r.status === 200, '/readyz to answer 200');
    await until(() => byExec('ex_leftover'), (l) => l.length === 0, 'the leftover to be reaped');
    await until(() => poolIdle(s), (n) => n === 1, 'the warm pool to fill');
    const run = await fetch(`${s.url}/v1/exec`, { method: 'POST', headers: { ...headers, accept: 'application/json' }, body: JSON.stringify({ command: 'echo ready' }) });
    expect(await run.json()).toMatchObject({ exitCode: 0, stdout: 'ready\n' });
  });
});

describe('runtimes dockerd does not offer', () => {
  it('a team asking for one is a start-up error: exit 2, naming the team, the runtime and what dockerd offers', async () => {
    const { path } = writeConfig('nosuch', { dataRuntime: 'nosuch' });
    const r = await serveUntilExit(path, { DOCKER_HOST: pd.host, EXECGATE_INSTANCE: INSTANCE });
    expect(r.code).toBe(2);
    expect(r.output).toMatch(/team "data" asks for runtime "nosuch", which dockerd does not offer \(it offers: [^)]*\brunc\b[^)]*\)/);
    expect(r.output).toContain('agents.teams.data.sandbox.runtime');
  });

  it('with Docker unreachable at start the service starts anyway, and /readyz names the team and runtime once Docker answers', async () => {
    await pd.stop();
    const { path } = writeConfig('nosuch-late', { dataRuntime: 'nosuch' });
    const s = await start(path);
    const down = await readyz(s);
    expect(down.status).toBe(503);
    expect(down.body.error.message).toMatch(/not reachable/);
    await pd.start();
    const r = await until(() => readyz(s), (x) => /nosuch/.test(String(x.body.error?.message)), '/readyz to name the missing runtime');
    expect(r.status).toBe(503);
    expect(r.body.error.message).toContain('team "data" wants runtime "nosuch", which dockerd does not offer');
    expect(r.body.runtimes).toContain('runc');
    await waitForLog(s, 'the configuration asks for runtimes dockerd does not offer');
  });

  it('a SIGHUP reload asking for one is refused and the running config kept, also while Docker is away', async () => {
    const { path } = writeConfig('reload');
    const s = await start(path);
    await until(() => readyz(s), (r) => r.status === 200, '/readyz to answer 200');
    writeConfig('reload', { dataRuntime: 'nosuch' });
    s.proc.kill('SIGHUP');
    await waitForLog(s, 'configuration reload refused');
    expect(s.logs.join('')).toContain('team \\"data\\" asks for runtime \\"nosuch\\"');
    expect((await readyz(s)).status).toBe(200);
    // The refused config's team does not exist: the old config is the one in force.
    expect((await fetch(`${s.url}/v1/policy/check`, { method: 'POST', headers: { ...headers, 'x-execgate-team': 'data' }, body: JSON.stringify({ command: 'echo x' }) })).status).toBe(404);

    // Docker away: the runtimes it offered when it last answered still decide.
    await pd.stop();
    const refusals = s.logs.join('').split('configuration reload refused').length;
    s.proc.kill('SIGHUP');
    await until(async () => s.logs.join('').split('configuration reload refused').length, (n) => n > refusals, 'a second refusal');
  });
});
