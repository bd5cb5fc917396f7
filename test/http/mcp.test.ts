import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult, Progress } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { MemoryStateStore } from '../../src/service/state.js';
import { TOKENS, auth, testApp, type TestApp } from '../support/app.js';
import { silentLogger } from '../support/sandbox.js';

/** The MCP endpoint, driven by the SDK's own client over real HTTP; the runner is the fake one. */
let t: TestApp;
let base: string;
const clients: Client[] = [];
const extraApps: FastifyInstance[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => undefined);
  for (const a of extraApps.splice(0)) {
    a.server.closeAllConnections();
    await a.close();
  }
  await t.close();
});

async function setup(opts: Parameters<typeof testApp>[0] = {}) {
  t = await testApp(opts);
  base = await t.app.listen({ host: '127.0.0.1', port: 0 });
}

async function connect(token: string, url = base): Promise<Client> {
  const client = new Client({ name: 'execgate-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: auth(token) } }));
  clients.push(client);
  // Listing the tools makes the client check every structuredContent against the tool's output schema.
  await client.listTools();
  return client;
}

const textOf = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');

async function until(what: string, ok: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

/** The error body of a non-MCP answer (the gateway's own, or the SDK's JSON-RPC one). */
const errorOf = async (r: Response) => ((await r.json()) as { error: { code: string | number } }).error;

const pendingApprovals = async (): Promise<{ id: string; command: string; requestedBy: string }[]> =>
  ((await (await fetch(`${base}/v1/approvals?status=pending`, { headers: auth(TOKENS.human) })).json()) as { approvals: { id: string; command: string; requestedBy: string }[] }).approvals;

describe('MCP endpoint: tools', () => {
  it('lists exec, check_command and list_allowed_paths with input and output schemas', async () => {
    await setup();
    const client = await connect(TOKENS.agent);
    expect(client.getServerVersion()?.name).toBe('execgate');
    expect(client.getInstructions()).toContain('check_command');
    const { tools } = await client.listTools();
    expect(tools.map((x) => x.name).sort()).toEqual(['check_command', 'exec', 'list_allowed_paths']);
    const byName = Object.fromEntries(tools.map((x) => [x.name, x]));
    expect(byName.exec!.inputSchema).toMatchObject({ type: 'object', required: ['command'] });
    expect(Object.keys(byName.exec!.inputSchema.properties ?? {}).sort()).toEqual(['command', 'cwd', 'env', 'secretEnv', 'stdin', 'timeoutMs']);
    expect(Object.keys(byName.check_command!.inputSchema.properties ?? {}).sort()).toEqual(['command', 'cwd']);
    expect(byName.list_allowed_paths!.inputSchema).toMatchObject({ type: 'object' });
    for (const tool of tools) {
      expect(tool.title).toBeTruthy();
      expect(tool.description!.length).toBeGreaterThan(40);
      expect(tool.outputSchema).toMatchObject({ type: 'object' });
    }
    expect(byName.exec!.annotations).toMatchObject({ readOnlyHint: false, destructiveHint: true });
    expect(byName.check_command!.annotations).toMatchObject({ readOnlyHint: true });
  });

  it('exec streams each chunk as a progress notification and returns the exit code and output', async () => {
    await setup();
    t.runner.behaviour = () => ({ stdout: ['hello\n', 'world\n'], stderr: ['careful\n'], exitCode: 3 });
    const client = await connect(TOKENS.agent);
    const progress: Progress[] = [];
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'make test' } }, undefined, { onprogress: (p) => progress.push(p) })) as CallToolResult;

    expect(r.isError).toBe(true); // a nonzero exit is reported as such, with its output
    expect(r.structuredContent).toMatchObject({ execId: expect.stringMatching(/^ex_/), exitCode: 3, timedOut: false, truncated: false, stdout: 'hello\nworld\n', stderr: 'careful\n', durationMs: expect.any(Number), decision: 'allow' });
    const text = textOf(r);
    expect(text).toContain('hello\nworld\n--- stderr ---\ncareful\n--- exit code 3');
    expect(progress.map((p) => p.message)).toEqual(['hello\n', 'world\n', '[stderr] careful\n']);
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.progress).toBeGreaterThan(progress[i - 1]!.progress);

    // The same pipeline as POST /v1/exec: the runner got the command, the history names the token's identity.
    expect(t.runner.runs.map((x) => x.command)).toEqual(['make test']);
    const execId = (r.structuredContent as { execId: string }).execId;
    const hist = await (await fetch(`${base}/v1/executions/${execId}`, { headers: auth(TOKENS.agent) })).json();
    expect(hist).toMatchObject({ team: 'data', requestedBy: 'agent-data', status: 'finished', exitCode: 3, command: 'make test' });
  });

  it('exit code 0 is a normal result; cwd, env, stdin and timeoutMs reach the runner', async () => {
    await setup();
    mkdirSync(join(t.dir, 'sub'));
    const client = await connect(TOKENS.agent);
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'cat', cwd: 'sub', env: { GREETING: 'hi' }, stdin: 'from stdin', timeoutMs: 5000 } })) as CallToolResult;
    expect(r.isError).toBe(false);
    expect(r.structuredContent).toMatchObject({ exitCode: 0, stdout: 'ran: cat\n', stderr: '' });
    const spec = t.runner.runs[0]!;
    expect(spec).toMatchObject({ cwd: join(t.dir, 'sub'), env: { GREETING: 'hi' }, timeoutMs: 5000 });
    expect(spec.stdin?.toString('utf8')).toBe('from stdin');
  });

  it('output that is not UTF-8 comes back as text with U+FFFD, and says so', async () => {
    await setup();
    t.runner.behaviour = () => ({ stdout: [Buffer.from([0x41, 0xff, 0xfe, 0x42, 0x0a])] });
    const client = await connect(TOKENS.agent);
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'head -c 5 /dev/urandom' } })) as CallToolResult;
    expect(r.structuredContent).toMatchObject({ stdout: 'A\uFFFD\uFFFDB\n', invalidUtf8: { stdout: true, stderr: false } });
    expect(textOf(r)).toContain('not UTF-8');
  });

  it('a denied command is an error result naming the segment and the blocked pattern; nothing runs', async () => {
    await setup();
    const client = await connect(TOKENS.agent);
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'echo ok; rm -rf x' } })) as CallToolResult;
    expect(r.isError).toBe(true);
    const text = textOf(r);
    expect(text).toMatch(/^error policy_denied: /);
    expect(text).toContain('blocked pattern "rm -rf"');
    expect(text).toContain('`rm -rf x`');
    expect(text).toContain('hard deny');
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a deny by a configured rule names the rule', async () => {
    await setup({ exec: { onDeny: 'block', rules: [{ name: 'no-curl', pattern: '^curl ', action: 'deny' }] } });
    const client = await connect(TOKENS.agent);
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'curl https://example.com' } })) as CallToolResult;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toContain('rule "no-curl"');
    expect(t.runner.runs).toHaveLength(0);
  });

  it('invalid input is an error result, never a run (dangerous env, missing cwd)', async () => {
    await setup();
    const client = await connect(TOKENS.agent);
    const env = (await client.callTool({ name: 'exec', arguments: { command: 'ls', env: { LD_PRELOAD: '/x.so' } } })) as CallToolResult;
    expect(env.isError).toBe(true);
    expect(textOf(env)).toContain('error invalid_request: env.LD_PRELOAD');
    const cwd = (await client.callTool({ name: 'exec', arguments: { command: 'ls', cwd: 'nope' } })) as CallToolResult;
    expect(textOf(cwd)).toContain('error invalid_request: cwd "nope" does not exist');
    const schema = (await client.callTool({ name: 'exec', arguments: { command: 42 } })) as CallToolResult;
    expect(schema.isError).toBe(true);
    expect(textOf(schema)).toContain('command');
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a runner failure is an error result with its code', async () => {
    await setup();
    t.runner.behaviour = () => ({ error: { code: 'image_missing', message: 'sandbox image x is not present' } });
    const client = await connect(TOKENS.agent);
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'ls' } })) as CallToolResult;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toContain('error image_missing: sandbox image x is not present');
  });

  it('check_command explains the decision and runs nothing', async () => {
    await setup();
    const client = await connect(TOKENS.agent);
    const deny = (await client.callTool({ name: 'check_command', arguments: { command: 'git status && sudo id' } })) as CallToolResult;
    expect(deny.isError).toBeFalsy();
    expect(deny.structuredContent).toMatchObject({ decision: 'deny', code: 'blocked_pattern', hard: true, cwd: t.dir, policyHash: expect.any(String) });
    expect((deny.structuredContent as { segments: { canonical: string }[] }).segments.map((s) => s.canonical)).toEqual(['git status', 'id']);
    expect(textOf(deny)).toMatch(/^deny \(blocked_pattern\): /);
    const allow = (await client.callTool({ name: 'check_command', arguments: { command: 'ls -la' } })) as CallToolResult;
    expect(allow.structuredContent).toMatchObject({ decision: 'allow', code: 'allowed' });
    expect(textOf(allow)).toContain('exec would run it');
    expect(t.runner.runs).toHaveLength(0);
  });

  it('list_allowed_paths shows each token its own team: paths, modes, default cwd', async () => {
    t = await testApp({
      raw: (dir) => {
        for (const d of ['data', 'web', 'shared']) mkdirSync(join(dir, d));
        return {
          store: { path: `${dir}-store` },
          gateway: { auth: { tokens: [{ token: TOKENS.agent, team: 'data', roles: ['exec'], name: 'agent-data' }, { token: TOKENS.otherAgent, team: 'web', roles: ['exec'], name: 'agent-web' }] } },
          agents: {
            defaults: { toolPolicies: { exec: { mode: 'allowed', allowedPaths: [join(dir, 'data')] } }, sandbox: { user: '1000:1000' } },
            teams: { data: {}, web: { toolPolicies: { exec: { allowedPaths: [join(dir, 'web'), { path: join(dir, 'shared'), readOnly: true }] } } } },
          },
        };
      },
    });
    base = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const data = (await (await connect(TOKENS.agent)).callTool({ name: 'list_allowed_paths', arguments: {} })) as CallToolResult;
    expect(data.structuredContent).toMatchObject({ team: 'data', defaultCwd: join(t.dir, 'data'), paths: [{ path: join(t.dir, 'data'), readOnly: false, mode: 'rw' }], limits: { network: 'none' } });
    const web = (await (await connect(TOKENS.otherAgent)).callTool({ name: 'list_allowed_paths', arguments: {} })) as CallToolResult;
    expect(web.structuredContent).toMatchObject({
      team: 'web',
      defaultCwd: join(t.dir, 'web'),
      paths: [
        { path: join(t.dir, 'web'), readOnly: false, mode: 'rw' },
        { path: join(t.dir, 'shared'), readOnly: true, mode: 'ro' },
      ],
    });
    expect(textOf(web)).toContain(`${join(t.dir, 'shared')} (read-only)`);
    expect(textOf(web)).not.toContain(join(t.dir, 'data'));
  });
});

describe('MCP endpoint: approvals', () => {
  it('an `ask` waits, says so in progress, and returns the run once a human approves over HTTP', async () => {
    await setup({ exec: { mode: 'approval-required' } });
    const client = await connect(TOKENS.agent);
    const progress: string[] = [];
    const call = client.callTool({ name: 'exec', arguments: { command: 'make deploy' } }, undefined, { onprogress: (p) => progress.push(p.message ?? '') });

    let pending: Awaited<ReturnType<typeof pendingApprovals>> = [];
    await until('the approval is pending', async () => (pending = await pendingApprovals()).length === 1);
    expect(pending[0]).toMatchObject({ command: 'make deploy', requestedBy: 'agent-data' });
    const id = pending[0]!.id;
    await until('the waiting progress arrives', () => progress.some((m) => m.includes(`waiting for approval (id ${id})`)));
    expect(t.runner.runs).toHaveLength(0);

    const ok = await fetch(`${base}/v1/approvals/${id}/approve`, { method: 'POST', headers: { ...auth(TOKENS.human), 'content-type': 'application/json' }, body: JSON.stringify({ note: 'go' }) });
    expect(ok.status).toBe(200);

    const r = (await call) as CallToolResult;
    expect(r.isError).toBe(false);
    expect(r.structuredContent).toMatchObject({ exitCode: 0, stdout: 'ran: make deploy\n', decision: 'ask', approvalId: id, approvedBy: 'alice' });
    expect(textOf(r)).toContain('approved by alice');
    expect(progress).toContain('approved by alice: go');
    expect(t.runner.runs).toHaveLength(1);
  });

  it('a rejected approval is an error result with the code and who; nothing runs', async () => {
    await setup({ exec: { mode: 'approval-required' } });
    const client = await connect(TOKENS.agent);
    const call = client.callTool({ name: 'exec', arguments: { command: 'make deploy' } });
    let pending: Awaited<ReturnType<typeof pendingApprovals>> = [];
    await until('the approval is pending', async () => (pending = await pendingApprovals()).length === 1);
    const no = await fetch(`${base}/v1/approvals/${pending[0]!.id}/reject`, { method: 'POST', headers: { ...auth(TOKENS.human), 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'not today' }) });
    expect(no.status).toBe(200);
    const r = (await call) as CallToolResult;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toContain('error approval_rejected: not approved (rejected by alice: not today)');
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a client that cancels its call withdraws the pending approval', async () => {
    await setup({ exec: { mode: 'approval-required' } });
    const client = await connect(TOKENS.agent);
    const ac = new AbortController();
    const call = client.callTool({ name: 'exec', arguments: { command: 'make deploy' } }, undefined, { signal: ac.signal });
    let pending: Awaited<ReturnType<typeof pendingApprovals>> = [];
    await until('the approval is pending', async () => (pending = await pendingApprovals()).length === 1);
    ac.abort('changed my mind');
    await expect(call).rejects.toThrow();
    await until('the approval is withdrawn', () => t.service.approvals.get(pending[0]!.id, null)?.status === 'withdrawn');
    expect(t.service.approvals.get(pending[0]!.id, null)?.status).toBe('withdrawn');
    expect(t.runner.runs).toHaveLength(0);
  });
});

describe('MCP endpoint: cancellation and shutdown', () => {
  it('cancelling a running call stops its container', async () => {
    await setup();
    t.runner.behaviour = () => ({ stdout: ['started\n'], hang: true });
    const client = await connect(TOKENS.agent);
    const ac = new AbortController();
    const call = client.callTool({ name: 'exec', arguments: { command: 'sleep 1000' } }, undefined, { signal: ac.signal });
    await until('the container runs', () => t.runner.live === 1);
    ac.abort('stop');
    await expect(call).rejects.toThrow();
    await until('the container is gone', () => t.runner.live === 0);
    expect(t.runner.live).toBe(0);
  });

  it('a client that goes away stops its container', async () => {
    await setup();
    t.runner.behaviour = () => ({ hang: true });
    const client = await connect(TOKENS.agent);
    const call = client.callTool({ name: 'exec', arguments: { command: 'sleep 1000' } });
    await until('the container runs', () => t.runner.live === 1);
    await client.close();
    await expect(call).rejects.toThrow();
    await until('the container is gone', () => t.runner.live === 0);
    expect(t.runner.live).toBe(0);
  });

  it('while draining, exec is an error result with code shutting_down; the other tools still answer', async () => {
    await setup();
    const draining = await buildApp({ config: () => t.config, service: t.service, runner: t.runner, state: new MemoryStateStore(), logger: silentLogger, isDraining: () => true });
    extraApps.push(draining);
    const url = await draining.listen({ host: '127.0.0.1', port: 0 });
    const client = await connect(TOKENS.agent, url);
    const r = (await client.callTool({ name: 'exec', arguments: { command: 'ls' } })) as CallToolResult;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^error shutting_down: /);
    const check = (await client.callTool({ name: 'check_command', arguments: { command: 'ls' } })) as CallToolResult;
    expect(check.structuredContent).toMatchObject({ decision: 'allow' });
    expect(t.runner.runs).toHaveLength(0);
  });
});

describe('MCP endpoint: HTTP', () => {
  const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '0' } } };
  const post = (headers: Record<string, string>) =>
    fetch(`${base}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers }, body: JSON.stringify(initialize) });

  it('no token is 401 and a token without the exec role is 403, as on /v1', async () => {
    await setup();
    const none = await post({});
    expect(none.status).toBe(401);
    expect((await errorOf(none)).code).toBe('unauthorized');
    const bad = await post(auth('not-a-token'));
    expect(bad.status).toBe(401);
    const approver = await post(auth(TOKENS.human));
    expect(approver.status).toBe(403);
    expect((await errorOf(approver)).code).toBe('forbidden');
    await expect(connect('not-a-token')).rejects.toThrow();
    const ok = await post(auth(TOKENS.agent));
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toContain('text/event-stream');
    expect(await ok.text()).toContain('"serverInfo":{"name":"execgate"');
  });

  it('GET and DELETE answer 405 with a JSON-RPC error (stateless: no stream, no session)', async () => {
    await setup();
    for (const method of ['GET', 'DELETE']) {
      const r = await fetch(`${base}/mcp`, { method, headers: { ...auth(TOKENS.agent), accept: 'text/event-stream' } });
      expect(r.status).toBe(405);
      expect(r.headers.get('allow')).toBe('POST');
      expect(await r.json()).toMatchObject({ jsonrpc: '2.0', error: { code: -32000 }, id: null });
    }
    const anonymous = await fetch(`${base}/mcp`, { method: 'GET' });
    expect(anonymous.status).toBe(401);
  });

  it('a POST without Accept: text/event-stream gets the SDK\'s 406', async () => {
    await setup();
    const r = await fetch(`${base}/mcp`, { method: 'POST', headers: { ...auth(TOKENS.agent), 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify(initialize) });
    expect(r.status).toBe(406);
    expect((await errorOf(r)).code).toBe(-32000);
  });
});
