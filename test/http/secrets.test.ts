import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterEach, describe, expect, it } from 'vitest';
import type { MemoryStateStore } from '../../src/service/state.js';
import { TOKEN_ENTRIES, TOKENS, auth, ndjson, testApp, type TestApp } from '../support/app.js';
import { ScriptedRunner, type Script, type ScriptContext } from '../support/scripted-runner.js';

/**
 * Secrets on the scripted runner: the team's secret sandbox.env values and a request's secretEnv values never
 * show in approvals, history, events or audit (only a marker), and are replaced in the output wherever it goes.
 */

const CONFIG_SECRET = 'sk-config-secret-0001';
const REQUEST_SECRET = 'hunter2-request-secret';
const OTHER_SECRET = 'another-request-secret';
const ALL = [CONFIG_SECRET, REQUEST_SECRET, OTHER_SECRET];

let t: TestApp;
let base: string | undefined;
const cleanups: (() => Promise<unknown> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  base = undefined;
  await t.close();
});

async function setup(mode: 'allowed' | 'approval-required', script: (ctx: ScriptContext) => Script) {
  t = await testApp({
    raw: (dir) => ({
      gateway: {
        auth: {
          token: TOKENS.admin,
          tokens: TOKEN_ENTRIES.filter((e) => e.team === 'data'),
        },
      },
      agents: {
        defaults: {
          toolPolicies: { exec: { mode, allowedPaths: [dir], noMatch: 'allow', onDeny: 'ask' } },
          sandbox: { user: '1000:1000', env: { API_KEY: { value: CONFIG_SECRET, secret: true }, MODE: 'ci' } },
        },
        teams: { data: {} },
      },
      approvals: { timeoutMs: 60_000 },
      store: { path: `${dir}-store` },
    }),
  });
  new ScriptedRunner(t.runner, script);
}

async function listen(): Promise<string> {
  base ??= await t.app.listen({ host: '127.0.0.1', port: 0 });
  return base;
}

const exec = (body: Record<string, unknown>, accept?: string) =>
  t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), ...(accept ? { accept } : {}) }, payload: body });

/** Follows GET /v1/events (what the dashboard reads) and collects its raw text. */
async function followEvents(): Promise<{ text: () => string }> {
  const url = await listen();
  const ac = new AbortController();
  const res = await fetch(`${url}/v1/events`, { headers: auth(TOKENS.admin), signal: ac.signal });
  let text = '';
  const reading = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) text += dec.decode(chunk, { stream: true });
  })().catch(() => undefined);
  // The stream says it is connected before anything else: from then on, nothing published is missed.
  for (let i = 0; i < 200 && !text.includes(': connected'); i++) await new Promise((r) => setTimeout(r, 5));
  cleanups.push(async () => {
    ac.abort();
    await reading;
  });
  return { text: () => text };
}

async function waitPending(n = 1) {
  for (let i = 0; i < 400 && t.service.approvals.pendingCount() < n; i++) await new Promise((r) => setTimeout(r, 5));
  const list = t.service.approvals.list(null, 'pending');
  if (list.length < n) throw new Error('no approval became pending');
  return list;
}

/** Everything the service keeps or shows: history, approvals (API), audit. */
async function everythingKept(): Promise<string> {
  const parts = [
    (await t.app.inject({ url: '/v1/executions?limit=1000', headers: auth(TOKENS.admin) })).body,
    (await t.app.inject({ url: '/v1/approvals', headers: auth(TOKENS.admin) })).body,
    JSON.stringify((t.service as unknown as { deps: { state: MemoryStateStore } }).deps.state.audit),
  ];
  return parts.join('\n');
}

const stdoutOf = (events: Record<string, unknown>[], type = 'stdout') =>
  Buffer.concat(events.filter((e) => e.type === type).map((e) => Buffer.from(e.data as string, e.encoding === 'base64' ? 'base64' : 'utf8'))).toString('utf8');

describe('the team\'s secret sandbox.env', () => {
  it('reaches the sandbox, and is redacted from streamed stdout and stderr even when split across chunks', async () => {
    await setup('allowed', (c) => ({
      stdout: [`key=${c.env.API_KEY!.slice(0, 5)}`, `${c.env.API_KEY!.slice(5, 9)}`, `${c.env.API_KEY!.slice(9)}\nmode=${c.env.MODE}\n`],
      stderr: [`warn: ${c.env.API_KEY}`],
    }));
    const events = ndjson((await exec({ command: 'env' })).body);
    expect(t.runner.runs[0]!.env).toEqual({ API_KEY: CONFIG_SECRET, MODE: 'ci' });
    expect(stdoutOf(events)).toBe('key=[redacted:API_KEY]\nmode=ci\n');
    expect(stdoutOf(events, 'stderr')).toBe('warn: [redacted:API_KEY]');
    expect(JSON.stringify(events)).not.toContain(CONFIG_SECRET);
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
  });

  it('is redacted from the one JSON answer too, and from bytes that are not UTF-8 before they are base64-encoded', async () => {
    await setup('allowed', (c) => ({ stdout: [Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(c.env.API_KEY!.slice(0, 3))]), Buffer.from(`${c.env.API_KEY!.slice(3)}\n`)] }));
    const res = await exec({ command: 'cat data.bin' }, 'application/json');
    expect(res.statusCode).toBe(200);
    const body = res.json() as { stdout: string; stdoutEncoding?: string };
    expect(body.stdoutEncoding).toBe('base64');
    expect(Buffer.from(body.stdout, 'base64')).toEqual(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('[redacted:API_KEY]\n')]));
    const streamed = ndjson((await exec({ command: 'cat data.bin' })).body);
    expect(streamed.some((e) => e.encoding === 'base64')).toBe(true);
    const bytes = Buffer.concat(streamed.filter((e) => e.type === 'stdout').map((e) => Buffer.from(e.data as string, e.encoding === 'base64' ? 'base64' : 'utf8')));
    expect(bytes).toEqual(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('[redacted:API_KEY]\n')]));
  });

  it('a request may not set a variable the team configures (400 naming it, without the value)', async () => {
    await setup('allowed', () => ({}));
    for (const env of [{ API_KEY: 'mine-instead-123' }, { MODE: 'prod' }]) {
      const res = await exec({ command: 'env', env });
      expect(res.statusCode).toBe(400);
      const name = Object.keys(env)[0]!;
      expect(res.json().error).toMatchObject({ code: 'invalid_request', fields: [{ path: `env.${name}`, message: "set by the team's configuration (sandbox.env); a request may not change it" }] });
    }
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a command that names the configured secret literally is kept and shown redacted (history, decision, deny)', async () => {
    await setup('allowed', () => ({ stdout: ['ok\n'] }));
    const events = ndjson((await exec({ command: `echo ${CONFIG_SECRET}` })).body);
    expect(events[0]).toMatchObject({ type: 'decision' });
    expect(JSON.stringify(events)).not.toContain(CONFIG_SECRET);
    const denied = await exec({ command: `sudo echo ${CONFIG_SECRET}` });
    expect(denied.statusCode).toBe(403);
    expect(denied.body).not.toContain(CONFIG_SECRET);
    expect(denied.body).toContain('[redacted:API_KEY]');
    const kept = await everythingKept();
    expect(kept).toContain('echo [redacted:API_KEY]');
    expect(kept).not.toContain(CONFIG_SECRET);
  });
});

describe('a request\'s secretEnv', () => {
  it('approvals, /v1/events, history and audit show only the marker; the approver can tell two values apart; output is redacted', async () => {
    await setup('approval-required', (c) => ({ stdout: [`db=${c.env.DB_PASS!.slice(0, 10)}`, `${c.env.DB_PASS!.slice(10)}\n`], stderr: [`${c.env.API_KEY} ${c.env.DB_PASS}\n`] }));
    const events = await followEvents();
    const first = exec({ command: 'psql -c "select 1"', env: { DB_PASS: REQUEST_SECRET, PLAIN: 'visible' }, secretEnv: ['DB_PASS'] });
    const [a1] = await waitPending(1);
    const second = exec({ command: 'psql -c "select 1"', env: { DB_PASS: OTHER_SECRET, PLAIN: 'visible' }, secretEnv: ['DB_PASS'] });
    const [, a2] = await waitPending(2);

    const list = (await t.app.inject({ url: '/v1/approvals?status=pending', headers: auth(TOKENS.human) })).json() as { approvals: { id: string; env: Record<string, string>; planHash: string }[] };
    const [v1, v2] = [a1!, a2!].map((a) => list.approvals.find((x) => x.id === a.id)!);
    expect(v1!.env).toEqual({ DB_PASS: expect.stringMatching(/^\[secret hmac:[0-9a-f]{12}\]$/), PLAIN: 'visible' });
    // Another secret value: another marker and another plan hash, so one approval cannot stand for the other.
    expect(v2!.env.DB_PASS).not.toBe(v1!.env.DB_PASS);
    expect(v2!.planHash).not.toBe(v1!.planHash);
    const one = (await t.app.inject({ url: `/v1/approvals/${a1!.id}`, headers: auth(TOKENS.human) })).json() as { env: Record<string, string> };
    expect(one.env.DB_PASS).toBe(v1!.env.DB_PASS);

    expect((await t.app.inject({ method: 'POST', url: `/v1/approvals/${a1!.id}/approve`, headers: auth(TOKENS.human), payload: { note: 'ok' } })).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'POST', url: `/v1/approvals/${a2!.id}/reject`, headers: auth(TOKENS.human), payload: { reason: 'no' } })).statusCode).toBe(200);
    const run = ndjson((await first).body);
    expect(ndjson((await second).body).at(-1)).toMatchObject({ type: 'rejected' });
    expect(t.runner.runs[0]!.env).toEqual({ DB_PASS: REQUEST_SECRET, PLAIN: 'visible', API_KEY: CONFIG_SECRET, MODE: 'ci' });
    expect(stdoutOf(run)).toBe('db=[redacted:DB_PASS]\n');
    expect(stdoutOf(run, 'stderr')).toBe('[redacted:API_KEY] [redacted:DB_PASS]\n');

    for (let i = 0; i < 200 && !events.text().includes('execution_finished'); i++) await new Promise((r) => setTimeout(r, 5));
    const seen = [JSON.stringify(run), events.text(), await everythingKept()].join('\n');
    expect(events.text()).toContain('approval_created');
    expect(events.text()).toContain(v1!.env.DB_PASS);
    for (const s of ALL) expect(seen).not.toContain(s);
  });

  it('in a session, the command\'s output is redacted too', async () => {
    await setup('allowed', (c) => ({ stdout: [`${c.env.TOKEN}\n`, `${c.env.API_KEY}\n`] }));
    const s = await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: auth(TOKENS.agent), payload: {} });
    expect(s.statusCode).toBe(201);
    const res = await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.json().id}/exec`, headers: auth(TOKENS.agent), payload: { command: 'env', env: { TOKEN: REQUEST_SECRET }, secretEnv: ['TOKEN'] } });
    const events = ndjson(res.body);
    expect(stdoutOf(events)).toBe('[redacted:TOKEN]\n[redacted:API_KEY]\n');
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.json().id}`, headers: auth(TOKENS.agent) });
  });

  it('through the MCP exec tool: the result and its progress notifications are redacted', async () => {
    await setup('allowed', (c) => ({ stdout: [`${c.env.TOKEN!.slice(0, 4)}`, `${c.env.TOKEN!.slice(4)} ${c.env.API_KEY}\n`] }));
    const url = await listen();
    const client = new Client({ name: 'secrets-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: auth(TOKENS.agent) } }));
    cleanups.push(() => client.close());
    const progress: string[] = [];
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'env', env: { TOKEN: REQUEST_SECRET }, secretEnv: ['TOKEN'] } }, undefined, { onprogress: (p) => progress.push(p.message ?? '') })) as CallToolResult;
    expect(r.structuredContent).toMatchObject({ exitCode: 0, stdout: '[redacted:TOKEN] [redacted:API_KEY]\n' });
    const all = JSON.stringify(r) + progress.join('\n');
    for (const s of ALL) expect(all).not.toContain(s);
  });

  it('a command holding a secret value is never remembered as a rule', async () => {
    await setup('approval-required', () => ({}));
    const pending = exec({ command: `echo ${REQUEST_SECRET}`, env: { S: REQUEST_SECRET }, secretEnv: ['S'] });
    const [a] = await waitPending();
    const res = await t.app.inject({ method: 'POST', url: `/v1/approvals/${a!.id}/approve`, headers: auth(TOKENS.human), payload: { remember: { scope: 'exact' } } });
    expect(res.statusCode).toBe(422);
    expect(res.json().error.code).toBe('remember_refused');
    await t.app.inject({ method: 'POST', url: `/v1/approvals/${a!.id}/reject`, headers: auth(TOKENS.human), payload: {} });
    await pending;
    expect(await everythingKept()).not.toContain(REQUEST_SECRET);
  });

  it.each([
    [{ env: { A: 'long-enough-1' }, secretEnv: ['B'] }, 'secretEnv.0', '"B" is not a key of env'],
    [{ env: { A: 'long-enough-1' }, secretEnv: ['A', 'C'] }, 'secretEnv.1', '"C" is not a key of env'],
    [{ secretEnv: ['A'] }, 'secretEnv.0', '"A" is not a key of env'],
    [{ env: { A: 'short' }, secretEnv: ['A'] }, 'env.A', 'a secret value must be at least 8 characters (a shorter one cannot be redacted from output safely)'],
    [{ env: { [`N${'X'.repeat(64)}`]: 'long-enough-1' }, secretEnv: [`N${'X'.repeat(64)}`] }, 'secretEnv.0', "a secret variable's name is at most 64 characters"],
    [{ env: { A: 'long-enough-1' }, secretEnv: 'A' }, 'secretEnv', undefined],
  ])('bad secretEnv is a 400 naming the field, never the value: %j', async (body, path, message) => {
    await setup('allowed', () => ({}));
    const res = await exec({ command: 'env', ...body });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('invalid_request');
    expect(res.json().error.fields[0].path).toBe(path);
    if (message) expect(res.json().error.fields[0].message).toBe(message);
    expect(res.body).not.toContain('long-enough-1');
    expect(t.runner.runs).toHaveLength(0);
  });
});
