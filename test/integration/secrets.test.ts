import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readNdjson } from '../support/ndjson.js';
import { SANDBOX_IMAGE, TEST_RUNTIME, projectDir } from '../support/sandbox.js';
import { buildDist, startService, stopService, type ServiceProcess } from '../support/service-process.js';

/**
 * Promise: tokens and secret env values never appear in the service's logs (at trace level), its store (the
 * SQLite database and its WAL), /v1/events, history or approvals — only a marker does — and a secret value a
 * command prints reaches the client as [redacted:NAME], wherever the output goes (NDJSON, JSON, a session,
 * MCP), even when the command writes it in pieces. The real service process, real Docker.
 */

const ADMIN_TOKEN = 'it-admin-token-7f3a9c21';
const AGENT_TOKEN = 'it-agent-token-5be0d4e8';
const HUMAN_TOKEN = 'it-human-token-from-env-0c6f';
const WRONG_TOKEN = 'it-wrong-token-presented-91ab';
const API_KEY = 'sk-live-from-host-env-4b1d9e';
const DB_URL = 'postgres://app:literal-config-secret-77@db/app';
const REQUEST_SECRET = 'request-secret-hunter2-aa31';
const SESSION_SECRET = 'session-secret-b7c0e9-55';
const MCP_SECRET = 'mcp-secret-value-13d8f2';
const MALFORMED = 'value-in-malformed-body-42e1';
const SECRETS = { API_KEY, DB_URL, REQUEST_SECRET, SESSION_SECRET, MCP_SECRET, MALFORMED };
const TOKENS = { ADMIN_TOKEN, AGENT_TOKEN, HUMAN_TOKEN, WRONG_TOKEN };

const project = projectDir();
const work = mkdtempSync(join('/var/tmp', 'execgate-secrets-'));
const store = join(work, 'store');
const configPath = join(work, 'config.json');
let service: ServiceProcess;
let eventsText = '';
let eventsAbort: AbortController;
let eventsDone: Promise<unknown>;
const seenByClients: string[] = [];

const headers = (token: string, accept?: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(accept ? { accept } : {}) });
const post = (path: string, body: unknown, token = AGENT_TOKEN, accept?: string) => fetch(`${service.url}${path}`, { method: 'POST', headers: headers(token, accept), body: JSON.stringify(body) });
const get = async (path: string, token = ADMIN_TOKEN) => {
  const text = await (await fetch(`${service.url}${path}`, { headers: headers(token) })).text();
  seenByClients.push(text);
  return JSON.parse(text) as Record<string, unknown>;
};
const textOf = (events: Record<string, unknown>[], stream: string) =>
  events.filter((e) => e.type === stream).map((e) => Buffer.from(e.data as string, e.encoding === 'base64' ? 'base64' : 'utf8').toString()).join('');

beforeAll(async () => {
  buildDist();
  writeFileSync(
    configPath,
    JSON.stringify({
      gateway: {
        port: 0,
        auth: {
          token: ADMIN_TOKEN,
          tokens: [
            { token: AGENT_TOKEN, team: 'data', roles: ['exec'], name: 'agent' },
            { token: 'env:EXECGATE_IT_HUMAN_TOKEN', team: 'data', roles: ['approve'], name: 'alice' },
          ],
        },
      },
      store: { path: store },
      agents: {
        defaults: {
          sandbox: {
            image: SANDBOX_IMAGE,
            runtime: TEST_RUNTIME,
            pool: { size: 1 },
            env: { API_KEY: { fromEnv: 'EXECGATE_IT_API_KEY' }, DB_URL: { value: DB_URL, secret: true }, MODE: 'ci' },
          },
          toolPolicies: {
            exec: { mode: 'allowed', allowedPaths: [project.path], noMatch: 'allow', onDeny: 'ask', rules: [{ name: 'needs a human', pattern: '^echo asking\\b', action: 'ask' }] },
          },
        },
        teams: { data: {} },
      },
    }),
  );
  service = await startService(configPath, { EXECGATE_INSTANCE: 'secrets-test', EXECGATE_LOG_LEVEL: 'trace', EXECGATE_IT_API_KEY: API_KEY, EXECGATE_IT_HUMAN_TOKEN: HUMAN_TOKEN });
  // /v1/events, as the dashboard follows it, for the whole run.
  eventsAbort = new AbortController();
  const res = await fetch(`${service.url}/v1/events`, { headers: headers(ADMIN_TOKEN), signal: eventsAbort.signal });
  eventsDone = (async () => {
    const dec = new TextDecoder();
    for await (const c of res.body as AsyncIterable<Uint8Array>) eventsText += dec.decode(c, { stream: true });
  })().catch(() => undefined);
}, 180_000);

afterAll(async () => {
  eventsAbort?.abort();
  if (service) await stopService(service);
  project.remove();
  rmSync(work, { recursive: true, force: true });
});

describe('secrets on the real service and a real sandbox', () => {
  it('the team\'s secrets reach the sandbox and come back as markers, on stdout and stderr', async () => {
    const res = await post('/v1/exec', { command: 'echo "$API_KEY $MODE"; echo "$DB_URL" >&2' });
    expect(res.status).toBe(200);
    const events = await readNdjson(res);
    seenByClients.push(JSON.stringify(events));
    expect(textOf(events, 'stdout')).toBe('[redacted:API_KEY] ci\n');
    expect(textOf(events, 'stderr')).toBe('[redacted:DB_URL]\n');
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
  });

  it('a secret written in pieces, with pauses between them, is still redacted (stream and JSON answer)', async () => {
    const command =
      'printf "A:"; printf %s "$API_KEY" | head -c 7; sleep 0.3; printf %s "$API_KEY" | tail -c +8; echo; ' +
      'printf %s "$DB_URL" | head -c 11 >&2; sleep 0.3; printf %s "$DB_URL" | tail -c +12 >&2; echo " B" >&2';
    const events = await readNdjson(await post('/v1/exec', { command }));
    seenByClients.push(JSON.stringify(events));
    expect(textOf(events, 'stdout')).toBe('A:[redacted:API_KEY]\n');
    expect(textOf(events, 'stderr')).toBe('[redacted:DB_URL] B\n');
    const once = await post('/v1/exec', { command }, AGENT_TOKEN, 'application/json');
    const body = (await once.json()) as { stdout: string; stderr: string };
    seenByClients.push(JSON.stringify(body));
    expect(body).toMatchObject({ stdout: 'A:[redacted:API_KEY]\n', stderr: '[redacted:DB_URL] B\n' });
  });

  it('a request secret: the approver sees only its marker, approves, and the output is redacted', async () => {
    const running = post('/v1/exec', { command: `echo asking "$DB_PASS" ${REQUEST_SECRET}`, env: { DB_PASS: REQUEST_SECRET }, secretEnv: ['DB_PASS'] });
    let approval: { id: string; env: Record<string, string>; command: string } | undefined;
    for (let i = 0; i < 200 && !approval; i++) {
      approval = ((await get('/v1/approvals?status=pending', HUMAN_TOKEN)).approvals as (typeof approval)[])[0];
      if (!approval) await new Promise((r) => setTimeout(r, 50));
    }
    expect(approval).toBeDefined();
    expect(approval!.env.DB_PASS).toMatch(/^\[secret hmac:[0-9a-f]{12}\]$/);
    expect(approval!.command).toBe('echo asking "$DB_PASS" [redacted:DB_PASS]');
    const ok = await post(`/v1/approvals/${approval!.id}/approve`, { note: 'looks fine' }, HUMAN_TOKEN);
    expect(ok.status).toBe(200);
    seenByClients.push(await ok.text());
    const events = await readNdjson(await running);
    seenByClients.push(JSON.stringify(events));
    expect(events.map((e) => e.type)).toEqual(['decision', 'approval_pending', 'approval_resolved', 'started', 'stdout', 'exit']);
    expect(textOf(events, 'stdout')).toBe('asking [redacted:DB_PASS] [redacted:DB_PASS]\n');
  });

  it('in a session, and through the MCP exec tool, output is redacted too', async () => {
    const created = await post('/v1/sessions', {});
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    const events = await readNdjson(await post(`/v1/sessions/${id}/exec`, { command: 'echo "$S" "$API_KEY"', env: { S: SESSION_SECRET }, secretEnv: ['S'] }));
    seenByClients.push(JSON.stringify(events));
    expect(textOf(events, 'stdout')).toBe('[redacted:S] [redacted:API_KEY]\n');
    expect((await fetch(`${service.url}/v1/sessions/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${AGENT_TOKEN}` } })).status).toBe(204);

    const client = new Client({ name: 'secrets-it', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${service.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${AGENT_TOKEN}` } } }));
    try {
      const progress: string[] = [];
      const r = (await client.callTool({ name: 'exec', arguments: { command: 'echo "$M"; echo "$DB_URL" >&2', env: { M: MCP_SECRET }, secretEnv: ['M'] } }, undefined, { onprogress: (p) => progress.push(p.message ?? '') })) as CallToolResult;
      seenByClients.push(JSON.stringify(r), progress.join('\n'));
      expect(r.structuredContent).toMatchObject({ exitCode: 0, stdout: '[redacted:M]\n', stderr: '[redacted:DB_URL]\n' });
    } finally {
      await client.close();
    }
  });

  it('refused requests do not echo or log what they carried: bad secretEnv, malformed JSON, wrong token, a token in the query string', async () => {
    const short = await post('/v1/exec', { command: 'true', env: { P: 'short' }, secretEnv: ['P'] });
    expect(short.status).toBe(400);
    expect(((await short.json()) as { error: { fields: { path: string }[] } }).error.fields[0]!.path).toBe('env.P');
    const malformed = await fetch(`${service.url}/v1/exec`, { method: 'POST', headers: headers(AGENT_TOKEN), body: `{"command":"true","env":{"X":"${MALFORMED}"} oops}` });
    expect(malformed.status).toBe(400);
    const wrong = await fetch(`${service.url}/v1/executions`, { headers: headers(WRONG_TOKEN) });
    expect(wrong.status).toBe(401);
    expect(await wrong.text()).not.toContain(WRONG_TOKEN);
    // A client that puts its token in the URL (never read from there) must not get it written to the log.
    const query = await fetch(`${service.url}/v1/executions?token=${ADMIN_TOKEN}&access_token=${AGENT_TOKEN}`);
    expect(query.status).toBe(401);
    const mcpBad = await fetch(`${service.url}/mcp`, { method: 'POST', headers: { ...headers(AGENT_TOKEN), accept: 'application/json, text/event-stream' }, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"exec","arguments":{"command":"true","env":{"X":"${MALFORMED}"}` });
    expect(mcpBad.status).toBeGreaterThanOrEqual(400);
    // Valid JSON that is not JSON-RPC reaches the MCP SDK's own parser (and its error callback, logged at debug).
    const mcpNotRpc = await fetch(`${service.url}/mcp`, { method: 'POST', headers: { ...headers(AGENT_TOKEN), accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '1.0', id: 3, x: MALFORMED }) });
    expect(mcpNotRpc.status).toBeGreaterThanOrEqual(400);
  });

  it('after all that: no token and no secret value anywhere in the logs, the store files, /v1/events, history or approvals', async () => {
    await get('/v1/executions?limit=1000');
    await get('/v1/approvals');
    for (let i = 0; i < 100 && (eventsText.match(/execution_finished/g) ?? []).length < 6; i++) await new Promise((r) => setTimeout(r, 50));
    expect(eventsText).toContain('approval_created');
    expect(eventsText).toContain('[secret hmac:');
    eventsAbort.abort();
    await eventsDone;
    await stopService(service);

    const files = walk(store);
    expect(files.map((f) => f.slice(store.length + 1))).toEqual(expect.arrayContaining(['execgate.db']));
    const places: Record<string, Buffer> = {
      'service logs': Buffer.from(service.logs.join('')),
      '/v1/events': Buffer.from(eventsText),
      'answers (history, approvals, streams)': Buffer.from(seenByClients.join('\n')),
      ...Object.fromEntries(files.map((f) => [f, readFileSync(f)])),
    };
    // The logs are really at trace level: the run was logged, request by request.
    expect(service.logs.join('')).toMatch(/"level":(10|20)/);
    expect(service.logs.join('')).toContain('exec finished');
    // The request that carried tokens in its query string was logged, without them.
    expect(service.logs.join('')).toContain('"url":"/v1/executions?[redacted]&[redacted]"');
    const found: string[] = [];
    for (const [where, bytes] of Object.entries(places)) {
      for (const [name, value] of Object.entries({ ...TOKENS, ...SECRETS })) {
        if (bytes.includes(value) || bytes.includes(Buffer.from(value, 'utf16le'))) found.push(`${name} in ${where}`);
      }
    }
    expect(found).toEqual([]);
  });
});

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}
