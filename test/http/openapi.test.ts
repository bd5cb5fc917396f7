import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { ROUTES, openApiDocument, routeDoc } from '../../src/http/openapi.js';
import { ErrorBodySchema, ExecEventSchema } from '../../src/http/wire.js';
import { TOKENS, auth, ndjson, testApp, type TestApp } from '../support/app.js';
import { ScriptedRunner } from '../support/scripted-runner.js';

let t: TestApp;
afterEach(async () => {
  await t?.close();
});

/** The documented schema of one route's answer; fails the test when the route or status is undocumented. */
function documented(method: string, path: string, status: number, media = 'application/json'): z.ZodType {
  const doc = routeDoc(method, path);
  if (!doc) throw new Error(`${method} ${path} is not documented`);
  const response = doc.responses[status];
  if (status >= 400 && !response) return ErrorBodySchema;
  const schema = response?.content?.[media];
  if (!schema) throw new Error(`${method} ${path} ${status} ${media} is not documented`);
  return schema;
}

/** Checks an answer against the document: the status is one the route lists, the body matches its schema. */
function conforms(method: string, path: string, res: { statusCode: number; body: string; headers: Record<string, unknown> }): void {
  const doc = routeDoc(method, path)!;
  const listed = new Set([...Object.keys(doc.responses).map(Number), ...(doc.errors ?? [])]);
  if (doc.auth) listed.add(401).add(403);
  if (doc.body || doc.query || doc.params) listed.add(400);
  if (doc.params) listed.add(404);
  expect(listed, `${method} ${path} answered ${res.statusCode}, which the document does not list`).toContain(res.statusCode);
  if (res.statusCode === 204) return;
  const schema = documented(method, path, res.statusCode);
  const parsed = schema.safeParse(JSON.parse(res.body));
  expect(parsed.success, `${method} ${path} ${res.statusCode}: ${parsed.success ? '' : JSON.stringify(parsed.error.issues.slice(0, 3))}\n${res.body.slice(0, 400)}`).toBe(true);
}

describe('the OpenAPI document', () => {
  it('is served at /openapi.json, equals the committed openapi.json, and /docs renders it', async () => {
    t = await testApp();
    const served = await t.app.inject({ url: '/openapi.json' });
    expect(served.statusCode).toBe(200);
    const doc = served.json();
    const version = (JSON.parse(readFileSync(join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string }).version;
    expect(doc).toEqual(openApiDocument({ version }));
    const committed = JSON.parse(readFileSync(join(import.meta.dirname, '../../openapi.json'), 'utf8')) as unknown;
    expect(committed, 'openapi.json is stale: run `npm run openapi`').toEqual(doc);
    const page = await t.app.inject({ url: '/docs' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.body).toContain('/openapi.json');
  });

  it('is OpenAPI 3.1 with every $ref resolvable and every operation named once', () => {
    const doc = openApiDocument({ version: '0.0.0' }) as { openapi: string; paths: Record<string, Record<string, { operationId: string; responses: object }>>; components: { schemas: Record<string, unknown> } };
    expect(doc.openapi).toBe('3.1.0');
    const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
    expect(refs.length).toBeGreaterThan(10);
    for (const ref of refs) {
      const name = /#\/components\/schemas\/([^"]+)/.exec(ref)?.[1];
      expect(name, ref).toBeDefined();
      expect(doc.components.schemas, ref).toHaveProperty(name!);
    }
    const ids = Object.values(doc.paths).flatMap((ops) => Object.values(ops).map((o) => o.operationId));
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(ROUTES.length);
    for (const ops of Object.values(doc.paths)) for (const op of Object.values(ops)) expect(Object.keys(op.responses).length).toBeGreaterThan(0);
    // Strict request schemas say so in the document: a client generator rejects unknown fields too.
    const exec = doc.paths['/v1/exec']!.post as unknown as { requestBody: { content: Record<string, { schema: { $ref: string } }> } };
    expect(exec.requestBody.content['application/json']!.schema.$ref).toBe('#/components/schemas/ExecRequest');
    expect(doc.components.schemas.ExecRequest).toMatchObject({ type: 'object', additionalProperties: false, required: ['command'] });
  });

  it('describes exactly the routes the app serves, with the roles they check', async () => {
    t = await testApp();
    for (const r of ROUTES) expect(t.app.hasRoute({ method: r.method, url: r.path }), `${r.method} ${r.path} is documented but not served`).toBe(true);
    // The other direction is enforced when the app builds: an undocumented route, or one whose role differs, refuses to register.
    expect(() => t.app.get('/v1/undocumented', { config: { role: 'exec' } }, async () => ({}))).toThrow(/not described in src\/http\/openapi.ts/);
    expect(() => t.app.delete('/v1/safe-mode', { config: { role: 'exec' } }, async () => ({}))).toThrow(/not described/);
    expect(() => t.app.get('/v1/safe-mode', { config: { role: 'exec' } }, async () => ({}))).toThrow(/needs role "exec" but openapi.ts says "approve"/);
  });

  it('every documented JSON body rejects an unknown field with 400 naming it', async () => {
    t = await testApp();
    new ScriptedRunner(t.runner, () => ({ stdout: ['x'] }));
    // Routes with an id get a real one: a session for the session routes, a pending approval for the others.
    const session = (await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: auth(TOKENS.agent), payload: {} })).json().id as string;
    const ids: Record<string, string> = { '/v1/sessions/:id/exec': session, '/v1/sessions/:id/files': session };
    for (const r of ROUTES.filter((r) => r.body?.['application/json'] && r.path.startsWith('/v1'))) {
      const url = r.path.replace(':id', ids[r.path] ?? 'x1');
      const token = r.auth === 'approve' ? TOKENS.human : TOKENS.agent;
      const res = await t.app.inject({ method: r.method, url, headers: auth(token), payload: { surprise: 1 } });
      expect(res.statusCode, `${r.method} ${r.path}: ${res.body}`).toBe(400);
      conforms(r.method, r.path, res);
      expect(JSON.stringify(res.json().error.fields), `${r.method} ${r.path}`).toMatch(/surprise/);
    }
  });
});

describe('real answers match the documented schemas', () => {
  it('service routes, check, exec (NDJSON, SSE and JSON), history, approvals, remembered rules, safe mode, errors', async () => {
    t = await testApp({ exec: { mode: 'approval-required' } });
    const get = (url: string, token: string = TOKENS.admin) => t.app.inject({ url, headers: auth(token) });
    const call = (method: 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown, token: string = TOKENS.admin, headers: Record<string, string> = {}) =>
      t.app.inject({ method, url, headers: { ...auth(token), ...headers }, ...(payload === undefined ? {} : { payload: payload as object }) });

    conforms('GET', '/healthz', await t.app.inject({ url: '/healthz' }));
    conforms('GET', '/readyz', await t.app.inject({ url: '/readyz' }));
    t.runner.readyState = { ok: false, reason: 'Docker does not answer' };
    const notReady = await t.app.inject({ url: '/readyz' });
    expect(notReady.statusCode).toBe(503);
    conforms('GET', '/readyz', notReady);

    conforms('POST', '/v1/policy/check', await call('POST', '/v1/policy/check', { command: 'ls -la | wc -l' }, TOKENS.agent));
    conforms('POST', '/v1/policy/check', await call('POST', '/v1/policy/check', { command: 'sudo rm -rf /' }, TOKENS.agent));
    conforms('POST', '/v1/policy/check', await call('POST', '/v1/policy/check', { command: 42 }, TOKENS.agent));
    conforms('POST', '/v1/policy/check', await call('POST', '/v1/policy/check', { command: 'ls' }, 'wrong-token-00000'));
    conforms('POST', '/v1/policy/check', await call('POST', '/v1/policy/check', { command: 'ls' }, TOKENS.human));

    // A denied exec: 403 with the decision.
    const denied = await call('POST', '/v1/exec', { command: 'sudo ls' }, TOKENS.agent);
    expect(denied.statusCode).toBe(403);
    conforms('POST', '/v1/exec', denied);

    // An ask, approved with `remember`: every NDJSON line is a documented event.
    const pending = call('POST', '/v1/exec', { command: 'printf hi', env: { A: '1' } }, TOKENS.agent);
    for (let i = 0; i < 200 && t.service.approvals.pendingCount() === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const list = await get('/v1/approvals?status=pending', TOKENS.human);
    conforms('GET', '/v1/approvals', list);
    const approvalId = list.json().approvals[0].id as string;
    conforms('GET', '/v1/approvals/:id', await get(`/v1/approvals/${approvalId}`, TOKENS.human));
    conforms('POST', '/v1/approvals/:id/approve', await call('POST', `/v1/approvals/${approvalId}/approve`, { note: 'ok', remember: { scope: 'exact', ttlMs: 60_000 } }, TOKENS.human));
    conforms('POST', '/v1/approvals/:id/approve', await call('POST', `/v1/approvals/${approvalId}/approve`, {}, TOKENS.human));
    const streamed = await pending;
    expect(streamed.statusCode).toBe(200);
    const events = ndjson(streamed.body);
    expect(events.map((e) => e.type)).toEqual(['decision', 'approval_pending', 'approval_resolved', 'started', 'stdout', 'exit']);
    for (const e of events) expect(ExecEventSchema.safeParse(e).success, JSON.stringify(e)).toBe(true);
    const execId = events[0]!.execId as string;

    // The remembered command now runs without asking: JSON and SSE forms.
    const once = await call('POST', '/v1/exec', { command: 'printf hi', env: { A: '1' } }, TOKENS.agent, { accept: 'application/json' });
    expect(once.statusCode).toBe(200);
    expect(documented('POST', '/v1/exec', 200).safeParse(once.json()).success, once.body).toBe(true);
    const sse = await call('POST', '/v1/exec', { command: 'printf hi', env: { A: '1' } }, TOKENS.agent, { accept: 'text/event-stream' });
    const data = sse.body.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as unknown);
    expect(data.length).toBeGreaterThan(2);
    for (const e of data) expect(documented('POST', '/v1/exec', 200, 'text/event-stream').safeParse(e).success, JSON.stringify(e)).toBe(true);

    // A rejection, then history.
    const rejected = call('POST', '/v1/exec', { command: 'make deploy' }, TOKENS.agent, { accept: 'application/json' });
    for (let i = 0; i < 200 && t.service.approvals.pendingCount() === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const [second] = t.service.approvals.list(null, 'pending');
    conforms('POST', '/v1/approvals/:id/reject', await call('POST', `/v1/approvals/${second!.id}/reject`, { reason: 'no' }, TOKENS.human));
    conforms('POST', '/v1/exec', await rejected);
    conforms('GET', '/v1/approvals/:id', await get('/v1/approvals/nope', TOKENS.human));

    conforms('GET', '/v1/executions', await get('/v1/executions?limit=10'));
    conforms('GET', '/v1/executions', await get('/v1/executions?since=yesterday'));
    conforms('GET', '/v1/executions/:id', await get(`/v1/executions/${execId}`));
    conforms('GET', '/v1/executions/:id', await get(`/v1/executions/${denied.json().error.execId}`));
    conforms('GET', '/v1/executions/:id', await get('/v1/executions/nope'));
    conforms('GET', '/v1/executions/:id/artifacts', await get(`/v1/executions/${execId}/artifacts`));

    const rules = await get('/v1/rules/remembered', TOKENS.human);
    conforms('GET', '/v1/rules/remembered', rules);
    expect(rules.json().rules).toHaveLength(1);
    conforms('DELETE', '/v1/rules/remembered/:id', await call('DELETE', `/v1/rules/remembered/${rules.json().rules[0].id}`, undefined, TOKENS.human));
    conforms('DELETE', '/v1/rules/remembered/:id', await call('DELETE', '/v1/rules/remembered/nope', undefined, TOKENS.human));

    conforms('GET', '/v1/safe-mode', await get('/v1/safe-mode', TOKENS.human));
    conforms('PUT', '/v1/safe-mode', await call('PUT', '/v1/safe-mode', { enabled: false }, TOKENS.human));
    conforms('PUT', '/v1/safe-mode', await call('PUT', '/v1/safe-mode', { enabled: 'yes' }, TOKENS.human));

    // Unknown ids are 404s in the documented error shape.
    conforms('GET', '/v1/sessions', await get('/v1/sessions'));
    conforms('GET', '/v1/sessions/:id', await get('/v1/sessions/nope'));
    conforms('DELETE', '/v1/sessions/:id', await call('DELETE', '/v1/sessions/nope'));
    conforms('POST', '/v1/sessions/:id/exec', await call('POST', '/v1/sessions/nope/exec', { command: 'ls' }, TOKENS.agent));
    conforms('PUT', '/v1/sessions/:id/files', await call('PUT', '/v1/sessions/nope/files', { files: { a: 'b' } }, TOKENS.agent));
    conforms('GET', '/v1/sessions/:id/files', await get('/v1/sessions/nope/files', TOKENS.agent));
  });
});

describe('real answers match the documented schemas: sessions, files, artifacts, errors in the stream', () => {
  it('a session round trip, artifacts, base64 output and an error event', async () => {
    t = await testApp();
    new ScriptedRunner(t.runner, (c) =>
      c.command === 'boom'
        ? { error: { code: 'runner_failed', message: 'the engine said no' } }
        : c.command === 'bytes'
          ? { stdout: [Buffer.from([0xff, 0xfe, 0x00])] }
          : { stdout: [`ran: ${c.command}\n`], scratch: { 'out/a.txt': 'A' } },
    );
    const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown, headers: Record<string, string> = {}) =>
      t.app.inject({ method, url, headers: { ...auth(TOKENS.agent), ...headers }, ...(payload === undefined ? {} : { payload: payload as object }) });

    const created = await call('POST', '/v1/sessions', { idleTimeoutMs: 60_000 });
    expect(created.statusCode).toBe(201);
    conforms('POST', '/v1/sessions', created);
    const id = created.json().id as string;
    conforms('GET', '/v1/sessions', await call('GET', '/v1/sessions'));
    conforms('GET', '/v1/sessions/:id', await call('GET', `/v1/sessions/${id}`));
    const put = await call('PUT', `/v1/sessions/${id}/files`, { files: { 'in.txt': 'hello' } });
    expect(put.statusCode).toBe(200);
    conforms('PUT', '/v1/sessions/:id/files', put);
    const inSession = await call('POST', `/v1/sessions/${id}/exec`, { command: 'cat in.txt' });
    for (const e of ndjson(inSession.body)) expect(ExecEventSchema.safeParse(e).success, JSON.stringify(e)).toBe(true);
    const files = await call('GET', `/v1/sessions/${id}/files`);
    expect(files.statusCode).toBe(200);
    expect(files.headers['content-type']).toBe(Object.keys(routeDoc('GET', '/v1/sessions/:id/files')!.responses[200]!.content!)[0]);
    conforms('DELETE', '/v1/sessions/:id', await call('DELETE', `/v1/sessions/${id}`));

    // A run with files and collect: the artifact event, the JSON answer's artifact, the download.
    const streamed = await call('POST', '/v1/exec', { command: 'make', files: { 'Makefile': 'all:' }, collect: ['out/**'] });
    const events = ndjson(streamed.body);
    expect(events.map((e) => e.type)).toContain('artifact');
    for (const e of events) expect(ExecEventSchema.safeParse(e).success, JSON.stringify(e)).toBe(true);
    const once = await call('POST', '/v1/exec', { command: 'make', files: { 'Makefile': 'all:' }, collect: ['out/**'] }, { accept: 'application/json' });
    conforms('POST', '/v1/exec', once);
    expect(once.json().artifact).toMatchObject({ files: 1 });
    const tar = await call('GET', `/v1/executions/${events[0]!.execId as string}/artifacts`);
    expect(tar.statusCode).toBe(200);
    expect(tar.headers['content-type']).toBe('application/x-tar');

    // Bytes that are not UTF-8, and an error event, in both forms.
    for (const e of ndjson((await call('POST', '/v1/exec', { command: 'bytes' })).body)) expect(ExecEventSchema.safeParse(e).success, JSON.stringify(e)).toBe(true);
    conforms('POST', '/v1/exec', await call('POST', '/v1/exec', { command: 'bytes' }, { accept: 'application/json' }));
    const failed = ndjson((await call('POST', '/v1/exec', { command: 'boom' })).body);
    expect(failed.at(-1)).toMatchObject({ type: 'error', code: 'runner_failed' });
    for (const e of failed) expect(ExecEventSchema.safeParse(e).success, JSON.stringify(e)).toBe(true);
    const failedOnce = await call('POST', '/v1/exec', { command: 'boom' }, { accept: 'application/json' });
    expect(failedOnce.statusCode).toBe(502);
    conforms('POST', '/v1/exec', failedOnce);
  });
});
