import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TOKENS, auth, ndjson, testApp, type TestApp } from '../support/app.js';

let t: TestApp;
afterEach(async () => {
  await t.close();
});

async function setup(exec: Record<string, unknown> = { mode: 'approval-required' }) {
  t = await testApp({ exec });
}

const exec = (body: Record<string, unknown>, token: string = TOKENS.agent, accept?: string) =>
  t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(token), ...(accept ? { accept } : {}) }, payload: body });

/** Starts an exec that will ask, and waits until its approval is pending. */
async function pendingExec(body: Record<string, unknown>, accept?: string) {
  const response = exec(body, TOKENS.agent, accept);
  for (let i = 0; i < 200 && t.service.approvals.pendingCount() === 0; i++) await new Promise((r) => setTimeout(r, 5));
  const [approval] = t.service.approvals.list(null, 'pending');
  if (!approval) throw new Error('no approval became pending');
  return { response, approval };
}

const approve = (id: string, body: Record<string, unknown> = {}, token: string = TOKENS.human) =>
  t.app.inject({ method: 'POST', url: `/v1/approvals/${id}/approve`, headers: auth(token), payload: body });
const reject = (id: string, body: Record<string, unknown> = {}, token: string = TOKENS.human) =>
  t.app.inject({ method: 'POST', url: `/v1/approvals/${id}/reject`, headers: auth(token), payload: body });

describe('approval flow', () => {
  it('ask → approval_pending → approved → the run, in one stream', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'echo hi' });
    const list = await t.app.inject({ url: '/v1/approvals?status=pending', headers: auth(TOKENS.human) });
    expect(list.json().approvals).toHaveLength(1);
    expect(list.json().approvals[0]).toMatchObject({ id: approval.id, team: 'data', command: 'echo hi', cwd: t.dir, status: 'pending', planHash: expect.stringMatching(/^[0-9a-f]{64}$/), requestedBy: 'agent-data' });
    expect(t.runner.runs).toHaveLength(0);

    const ok = await approve(approval.id, { note: 'fine' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ status: 'approved', resolvedBy: 'alice', note: 'fine' });

    const events = ndjson((await response).body);
    expect(events.map((e) => e.type)).toEqual(['decision', 'approval_pending', 'approval_resolved', 'started', 'stdout', 'exit']);
    expect(events[0]).toMatchObject({ decision: 'ask', explanation: { code: 'approval_required' } });
    expect(events[1]).toMatchObject({ approvalId: approval.id, planHash: approval.planHash });
    expect(events[2]).toEqual({ type: 'approval_resolved', approved: true, by: 'alice', note: 'fine' });
    expect(t.runner.runs).toHaveLength(1);

    const hist = await t.app.inject({ url: `/v1/executions/${events[0]!.execId}`, headers: auth(TOKENS.agent) });
    expect(hist.json()).toMatchObject({ status: 'finished', approvedBy: 'alice', approvalId: approval.id, exitCode: 0 });
  });

  it('a shutdown while an approval waits ends the stream with error shutting_down (retry elsewhere), not a rejection', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'echo later' });
    const json = exec({ command: 'echo later too' }, TOKENS.agent, 'application/json');
    for (let i = 0; i < 200 && t.service.approvals.pendingCount() < 2; i++) await new Promise((r) => setTimeout(r, 5));
    t.service.approvals.expireAll('shutting_down');
    const events = ndjson((await response).body);
    expect(events.at(-1)).toEqual({ type: 'error', code: 'shutting_down', message: expect.stringMatching(/retry on another instance/) });
    expect(events.some((e) => e.type === 'rejected')).toBe(false);
    const once = await json;
    expect(once.statusCode).toBe(503);
    expect(once.json().error.code).toBe('shutting_down');
    const hist = await t.app.inject({ url: `/v1/executions/${approval.execId}`, headers: auth(TOKENS.agent) });
    expect(hist.json()).toMatchObject({ status: 'expired', rejectedReason: 'shutting_down' });
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a rejection ends the stream with `rejected`, reason and who; nothing runs', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'make deploy' });
    expect((await reject(approval.id, { reason: 'not today' })).statusCode).toBe(200);
    const events = ndjson((await response).body);
    expect(events.at(-1)).toEqual({ type: 'rejected', reason: 'not today', by: 'alice' });
    expect(t.runner.runs).toHaveLength(0);
  });

  it('the JSON form waits too, and answers 403 approval_rejected', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'make deploy' }, 'application/json');
    await reject(approval.id);
    const r = await response;
    expect(r.statusCode).toBe(403);
    expect(r.json().error).toMatchObject({ code: 'approval_rejected', reason: 'rejected', by: 'alice', approvalId: approval.id });
  });

  it('expiry is a rejection with reason `expired` (403 approval_expired in JSON)', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'ls' }, 'application/json');
    t.clock.advance(t.config.approvals.timeoutMs + 1);
    const r = await response;
    expect(r.statusCode).toBe(403);
    expect(r.json().error).toMatchObject({ code: 'approval_expired', reason: 'expired', by: 'system' });
    expect(t.service.approvals.get(approval.id, null)?.status).toBe('expired');
    expect((await approve(approval.id)).statusCode).toBe(409);
  });

  it('a client that disconnects withdraws its pending approval', async () => {
    await setup();
    const url = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const ac = new AbortController();
    const res = await fetch(`${url}/v1/exec`, { method: 'POST', headers: { ...auth(TOKENS.agent), 'content-type': 'application/json' }, body: JSON.stringify({ command: 'ls' }), signal: ac.signal });
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('approval_pending')) text += new TextDecoder().decode((await reader.read()).value);
    const id = t.service.approvals.list(null)[0]!.id;
    ac.abort();
    for (let i = 0; i < 200 && t.service.approvals.get(id, null)?.status === 'pending'; i++) await new Promise((r) => setTimeout(r, 10));
    expect(t.service.approvals.get(id, null)?.status).toBe('withdrawn');
    expect((t.app.server.address() as AddressInfo).port).toBeGreaterThan(0);

    expect(t.runner.runs).toHaveLength(0);
  });

  it('resolving twice is 409; an unknown id is 404', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'ls' });
    expect((await approve(approval.id)).statusCode).toBe(200);
    const again = await reject(approval.id);
    expect(again.statusCode).toBe(409);
    expect(again.json().error.code).toBe('approval_already_resolved');
    await response;
    const unknown = await approve('apr_nope');
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error.code).toBe('approval_not_found');
  });

  it("another team's approver gets 404 and never sees it listed", async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'ls' });
    const r = await approve(approval.id, {}, TOKENS.otherHuman);
    expect(r.statusCode).toBe(404);
    const list = await t.app.inject({ url: '/v1/approvals', headers: auth(TOKENS.otherHuman) });
    expect(list.json().approvals).toEqual([]);
    const admin = await t.app.inject({ url: '/v1/approvals', headers: auth(TOKENS.admin) });
    expect(admin.json().approvals).toHaveLength(1);
    await reject(approval.id);
    await response;
  });

  it('an exec-only token gets 403 on approve, reject and list', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'ls' });
    expect((await approve(approval.id, {}, TOKENS.agent)).statusCode).toBe(403);
    expect((await reject(approval.id, {}, TOKENS.agent)).statusCode).toBe(403);
    expect((await t.app.inject({ url: '/v1/approvals', headers: auth(TOKENS.agent) })).statusCode).toBe(403);
    await reject(approval.id);
    await response;
  });

  it('bad approve bodies are 400 naming the field', async () => {
    await setup();
    const { response, approval } = await pendingExec({ command: 'ls' });
    const r = await approve(approval.id, { remember: { scope: 'everything' } });
    expect(r.statusCode).toBe(400);
    expect(r.json().error.fields[0].path).toBe('remember.scope');
    await reject(approval.id);
    await response;
  });
});

describe('remember', () => {
  it('exact: the same command in the same directory no longer asks; another one still does', async () => {
    await setup({ mode: 'allowed', noMatch: 'deny', onDeny: 'ask' });
    const first = await pendingExec({ command: 'make build' });
    expect((await approve(first.approval.id, { remember: { scope: 'exact' } })).statusCode).toBe(200);
    await first.response;

    const again = await exec({ command: 'make build' });
    expect(ndjson(again.body)[0]).toMatchObject({ decision: 'allow' });
    const check = await t.app.inject({ method: 'POST', url: '/v1/policy/check', headers: auth(TOKENS.agent), payload: { command: 'make clean', interactive: false } });
    expect(check.json().decision).toBe('deny');

    const rules = await t.app.inject({ url: '/v1/rules/remembered', headers: auth(TOKENS.human) });
    expect(rules.json().rules).toEqual([expect.objectContaining({ scope: 'exact', command: 'make build', team: 'data', createdBy: 'alice' })]);
    // Another team does not get it.
    const web = await t.app.inject({ method: 'POST', url: '/v1/policy/check', headers: auth(TOKENS.otherAgent), payload: { command: 'make build', interactive: false } });
    expect(web.json().decision).toBe('deny');
  });

  it('prefix with an expiry: allows the subcommand until it expires, and can be removed', async () => {
    await setup({ mode: 'allowed', noMatch: 'deny', onDeny: 'ask' });
    const first = await pendingExec({ command: 'npm test -- --watch=false' });
    await approve(first.approval.id, { remember: { scope: 'prefix', ttlMs: 60_000 } });
    await first.response;
    const check = (command: string) => t.app.inject({ method: 'POST', url: '/v1/policy/check', headers: auth(TOKENS.agent), payload: { command, interactive: false } });
    expect((await check('npm test')).json().decision).toBe('allow');
    expect((await check('npm publish')).json().decision).toBe('deny');
    t.clock.advance(60_001);
    expect((await check('npm test')).json().decision).toBe('deny');

    const again = await pendingExec({ command: 'npm test' });
    await approve(again.approval.id, { remember: { scope: 'prefix' } });
    await again.response;
    const [rule] = (await t.app.inject({ url: '/v1/rules/remembered', headers: auth(TOKENS.human) })).json().rules.filter((r: { expiresAt?: string }) => !r.expiresAt);
    const del = await t.app.inject({ method: 'DELETE', url: `/v1/rules/remembered/${rule.id}`, headers: auth(TOKENS.human) });
    expect(del.statusCode).toBe(204);
    expect((await check('npm test')).json().decision).toBe('deny');
  });

  it.each(['bash -c "make"', 'python3 -c "print(1)"', 'sh build.sh', 'find . -name x', 'git -C sub status', 'cat build.sh | sh'])('refuses an over-broad prefix for %s, and leaves the approval pending', async (command) => {
    await setup({ mode: 'approval-required' });
    const { response, approval } = await pendingExec({ command });
    const r = await approve(approval.id, { remember: { scope: 'prefix' } });
    expect(r.statusCode).toBe(422);
    expect(r.json().error).toMatchObject({ code: 'remember_refused', message: expect.stringContaining('exact') });
    expect(t.service.approvals.get(approval.id, null)?.status).toBe('pending');
    await reject(approval.id);
    await response;
  });
});

describe('safe mode and interactive', () => {
  it('safe mode is on by default; off turns ask into allow; only approve/admin tokens switch it', async () => {
    await setup();
    const get = await t.app.inject({ url: '/v1/safe-mode', headers: auth(TOKENS.human) });
    expect(get.json()).toEqual({ team: 'data', enabled: true });
    expect((await t.app.inject({ method: 'PUT', url: '/v1/safe-mode', headers: auth(TOKENS.agent), payload: { enabled: false } })).statusCode).toBe(403);
    const put = await t.app.inject({ method: 'PUT', url: '/v1/safe-mode', headers: auth(TOKENS.human), payload: { enabled: false } });
    expect(put.json()).toEqual({ team: 'data', enabled: false });
    const events = ndjson((await exec({ command: 'echo hi' })).body);
    expect(events[0]).toMatchObject({ decision: 'allow' });
    expect(events.map((e) => e.type)).not.toContain('approval_pending');
    // Other teams keep theirs.
    const web = await t.app.inject({ method: 'POST', url: '/v1/policy/check', headers: auth(TOKENS.otherAgent), payload: { command: 'echo hi' } });
    expect(web.json().decision).toBe('ask');
    // Hard denies stay denied.
    expect((await exec({ command: 'sudo id' })).statusCode).toBe(403);
  });

  it('interactive: false turns ask into a 403 approval_unavailable', async () => {
    await setup();
    const r = await exec({ command: 'echo hi', interactive: false });
    expect(r.statusCode).toBe(403);
    expect(r.json().error.decision).toMatchObject({ decision: 'deny', code: 'approval_unavailable' });
    expect(t.service.approvals.list(null)).toEqual([]);
  });
});

describe('GET /v1/events', () => {
  it('streams approval events to the same team only', async () => {
    await setup();
    const url = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const follow = async (token: string) => {
      const ac = new AbortController();
      const res = await fetch(`${url}/v1/events`, { headers: auth(token), signal: ac.signal });
      const reader = res.body!.getReader();
      const seen: Record<string, unknown>[] = [];
      const pump = (async () => {
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
          if (done) return;
          buf += new TextDecoder().decode(value);
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const line = buf.slice(0, i).split('\n').find((l) => l.startsWith('data: '));
            buf = buf.slice(i + 2);
            if (line) seen.push(JSON.parse(line.slice(6)));
          }
        }
      })();
      return { seen, stop: async () => (ac.abort(), pump) };
    };
    const mine = await follow(TOKENS.human);
    const theirs = await follow(TOKENS.otherHuman);
    const { response, approval } = await pendingExec({ command: 'ls' });
    await approve(approval.id);
    await response;
    for (let i = 0; i < 100 && !mine.seen.some((e) => e.type === 'execution_finished'); i++) await new Promise((r) => setTimeout(r, 10));
    await mine.stop();
    await theirs.stop();
    expect(mine.seen.map((e) => e.type)).toEqual(['approval_created', 'approval_resolved', 'execution_started', 'execution_finished']);
    expect(mine.seen[0]).toMatchObject({ team: 'data', approval: { id: approval.id, command: 'ls' } });
    expect(theirs.seen).toEqual([]);
  });
});
