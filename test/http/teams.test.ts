import { afterEach, describe, expect, it } from 'vitest';
import type { PoolOutcome } from '../../src/runner/types.js';
import { TOKENS, auth, ndjson, testApp, type TestApp } from '../support/app.js';

let t: TestApp;
afterEach(async () => {
  await t.close();
});

const exec = (body: Record<string, unknown>, token: string = TOKENS.agent, accept?: string) =>
  t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(token), ...(accept ? { accept } : {}) }, payload: body });

describe('team isolation', () => {
  it("a team's token never sees another team's executions and gets 404 for their ids", async () => {
    t = await testApp({ exec: { mode: 'allowed' } });
    const mine = ndjson((await exec({ command: 'echo data' })).body)[0]!.execId as string;
    const theirs = ndjson((await exec({ command: 'echo web' }, TOKENS.otherAgent)).body)[0]!.execId as string;
    const list = (token: string, q = '') => t.app.inject({ url: `/v1/executions${q}`, headers: auth(token) }).then((r) => r.json().executions.map((e: { id: string }) => e.id));
    expect(await list(TOKENS.agent)).toEqual([mine]);
    expect(await list(TOKENS.otherAgent)).toEqual([theirs]);
    expect(await list(TOKENS.agent, '?team=web')).toEqual([]);
    expect((await list(TOKENS.admin)).sort()).toEqual([mine, theirs].sort());
    expect(await list(TOKENS.admin, '?team=web')).toEqual([theirs]);
    const other = await t.app.inject({ url: `/v1/executions/${theirs}`, headers: auth(TOKENS.agent) });
    expect(other.statusCode).toBe(404);
    expect(other.json().error.code).toBe('execution_not_found');
    expect((await t.app.inject({ url: `/v1/executions/${mine}`, headers: auth(TOKENS.agent) })).json()).toMatchObject({ id: mine, team: 'data', command: 'echo data', status: 'finished' });
    // Each team's runs carry the team to the runner (container label, quota, network).
    expect(t.runner.runs.map((r) => r.team)).toEqual(['data', 'web']);
  });

  it('filters history by decision and since', async () => {
    t = await testApp({ exec: { mode: 'allowed' } });
    await exec({ command: 'echo ok' });
    await exec({ command: 'sudo id' });
    const denied = await t.app.inject({ url: '/v1/executions?decision=deny', headers: auth(TOKENS.agent) });
    expect(denied.json().executions).toEqual([expect.objectContaining({ command: 'sudo id', status: 'denied', code: 'blocked_pattern' })]);
    const future = await t.app.inject({ url: `/v1/executions?since=${encodeURIComponent(new Date(Date.UTC(2030, 0, 1)).toISOString())}`, headers: auth(TOKENS.agent) });
    expect(future.json().executions).toEqual([]);
    const bad = await t.app.inject({ url: '/v1/executions?limit=0', headers: auth(TOKENS.agent) });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.fields[0].path).toBe('limit');
  });

  it('per-team policy: a team override applies to that team only', async () => {
    t = await testApp({
      raw: (dir) => ({
        store: { path: `${dir}-store` },
        gateway: { auth: { tokens: [{ token: TOKENS.agent, team: 'data', roles: ['exec'] }, { token: TOKENS.otherAgent, team: 'web', roles: ['exec'] }] } },
        agents: {
          defaults: { toolPolicies: { exec: { mode: 'allowed', allowedPaths: [dir] } }, sandbox: { memoryMb: 256 } },
          teams: { data: { security: { mode: 'locked' } }, web: { sandbox: { memoryMb: 1024, pidsLimit: 99 } } },
        },
      }),
    });
    const locked = await exec({ command: 'echo hi' });
    expect(locked.json().error.decision.code).toBe('locked');
    expect((await exec({ command: 'echo hi' }, TOKENS.otherAgent)).statusCode).toBe(200);
    expect(t.runner.runs[0]!.sandbox).toMatchObject({ memoryMb: 1024, pidsLimit: 99 });
  });
});

describe('quotas', () => {
  it('queues beyond maxConcurrent, answers 429 with Retry-After beyond maxQueued', async () => {
    t = await testApp({
      raw: (dir) => ({
        store: { path: `${dir}-store` },
        gateway: { auth: { tokens: [{ token: TOKENS.agent, team: 'data', roles: ['exec'] }, { token: TOKENS.otherAgent, team: 'web', roles: ['exec'] }] } },
        agents: { defaults: { toolPolicies: { exec: { mode: 'allowed', allowedPaths: [dir] } }, quota: { maxConcurrent: 1, maxQueued: 1 } }, teams: { data: {}, web: {} } },
      }),
    });
    t.runner.behaviour = (s) => (s.command === 'hang' ? { hang: true } : { stdout: ['ok\n'] });
    const url = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const post = (command: string, token: string = TOKENS.agent, signal?: AbortSignal) =>
      fetch(`${url}/v1/exec`, { method: 'POST', headers: { ...auth(token), 'content-type': 'application/json' }, body: JSON.stringify({ command }), signal });
    const running = new AbortController();
    const first = await post('hang', TOKENS.agent, running.signal);
    expect(first.status).toBe(200);
    const queued = post('echo queued');
    for (let i = 0; i < 100 && t.service.quota('data').depth === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(t.service.quota('data').depth).toBe(1);
    const refused = await post('echo refused');
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('too_many_requests');
    // Another team is not affected.
    expect((await post('echo other', TOKENS.otherAgent)).status).toBe(200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/execgate_queue_depth\{team="data"\} 1/);
    expect(metrics).toMatch(/execgate_quota_rejections_total\{team="data"\} 1/);
    // The running one ends (client gone); the queued one gets its slot and runs.
    running.abort();
    const q = await queued;
    expect(q.status).toBe(200);
    const events = ndjson(await q.text());
    expect(events.map((e) => e.type)).toEqual(['decision', 'started', 'stdout', 'exit']);
  });
});

describe('GET /metrics', () => {
  it('serves Prometheus text: executions by team and decision, durations, pending approvals, containers running', async () => {
    t = await testApp({ exec: { mode: 'allowed' } });
    await exec({ command: 'echo hi' });
    await exec({ command: 'sudo id' });
    const r = await t.app.inject({ url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toContain('text/plain');
    expect(r.body).toMatch(/execgate_executions_total\{team="data",decision="allow",status="finished"\} 1/);
    expect(r.body).toMatch(/execgate_executions_total\{team="data",decision="deny",status="denied"\} 1/);
    expect(r.body).toMatch(/execgate_execution_duration_seconds_count\{team="data"\} 1/);
    expect(r.body).toContain('# TYPE execgate_approvals_pending gauge');
    expect(r.body).toMatch(/execgate_containers_running\{team="data"\} 0/);
    expect(r.body).toContain('execgate_docker_errors_total');
  });

  it('counts warm-pool hits, misses and bypasses per team, failed runs too, and shows the circuit breaker', async () => {
    t = await testApp({ exec: { mode: 'allowed' } });
    const counts = async () =>
      Object.fromEntries([...(await t.app.inject({ url: '/metrics' })).body.matchAll(/^execgate_pool_runs_total\{team="(\w+)",result="(\w+)"\} (\d+)$/gm)].map((m) => [`${m[1]} ${m[2]}`, Number(m[3])]));
    // Every team has the default pool (size 2): their counters are there from the start.
    const zero = { 'default hit': 0, 'default miss': 0, 'default bypass': 0 };
    expect(await counts()).toEqual({ ...zero, 'data hit': 0, 'data miss': 0, 'data bypass': 0, 'web hit': 0, 'web miss': 0, 'web bypass': 0 });
    const pool: Record<string, PoolOutcome | undefined> = { 'echo a': 'hit', 'echo b': 'hit', 'echo c': 'miss', 'echo d': 'bypass', 'echo e': undefined };
    // 'echo f' fails in Docker before any container starts: the runner's result says it missed.
    t.runner.behaviour = (s) => (s.command === 'echo f' ? { pool: 'miss', error: { code: 'docker_unavailable', message: 'engine down' } } : { stdout: ['x\n'], pool: pool[s.command] });
    for (const command of ['echo a', 'echo b', 'echo c', 'echo d', 'echo e', 'echo f']) await exec({ command });
    await exec({ command: 'echo a' }, TOKENS.otherAgent);
    // A run the runner reports nothing for (a session command, a runner without a pool) is not counted.
    expect(await counts()).toEqual({ ...zero, 'data hit': 2, 'data miss': 2, 'data bypass': 1, 'web hit': 1, 'web miss': 0, 'web bypass': 0 });

    // A consumer that leaves once the container started is counted from the started event, once.
    t.runner.behaviour = () => ({ stdout: ['x\n'], pool: 'hit', hang: true });
    const out = t.service.prepare({ team: 'data', visibleTeam: 'data', name: 'agent' }, { command: 'tail -f log' });
    if (!out.ok) throw new Error('denied');
    const ac = new AbortController();
    await t.service.admit(out.prepared, ac.signal);
    const gen = t.service.run(out.prepared, ac.signal);
    for (let e = await gen.next(); !e.done && e.value.type !== 'started'; e = await gen.next());
    await gen.return();
    expect((await counts())['data hit']).toBe(3);

    const metrics = async () => (await t.app.inject({ url: '/metrics' })).body;
    expect(await metrics()).toMatch(/^execgate_pool_breaker_open 0$/m);
    t.runner.breakerOpen = true;
    expect(await metrics()).toMatch(/^execgate_pool_breaker_open 1$/m);
  });
});
