import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MULTIPLEXED_TYPE } from '../../src/http/streaming.js';
import { TOKENS, auth, ndjson, testApp, type TestApp } from '../support/app.js';
import { decodeMultiplexed } from '../support/multiplexed.js';

let t: TestApp;
beforeEach(async () => {
  t = await testApp();
});
afterEach(async () => {
  await t.close();
});

const exec = (body: unknown, headers: Record<string, string> = {}, token: string = TOKENS.agent) =>
  t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(token), ...headers }, payload: body as object });

describe('health', () => {
  it('/healthz answers without auth', async () => {
    const r = await t.app.inject({ url: '/healthz' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ status: 'ok' });
  });

  it('/readyz is 200 when the runner is ready and 503 with the reason when not', async () => {
    expect((await t.app.inject({ url: '/readyz' })).statusCode).toBe(200);
    t.runner.readyState = { ok: false, reason: 'sandbox image missing: execgate/sandbox:latest (build it with `npm run images`)' };
    const r = await t.app.inject({ url: '/readyz' });
    expect(r.statusCode).toBe(503);
    expect(r.json().error).toMatchObject({ code: 'not_ready', message: expect.stringContaining('npm run images') });
  });

  it('/readyz is 503 when a team wants a runtime dockerd does not offer', async () => {
    t.runner.readyState = { ok: true, runtimes: ['runc'] };
    t.config.teams.data!.sandbox.runtime = 'runsc';
    const r = await t.app.inject({ url: '/readyz' });
    expect(r.statusCode).toBe(503);
    expect(r.json().error.message).toContain('runsc');
  });
});

describe('auth', () => {
  it.each([
    ['no header', {}],
    ['wrong token', auth('not-a-real-token')],
    ['not bearer', { authorization: `Basic ${TOKENS.agent}` }],
  ])('401 with %s', async (_name, headers) => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/policy/check', headers, payload: { command: 'ls' } });
    expect(r.statusCode).toBe(401);
    expect(r.json().error.code).toBe('unauthorized');
  });

  it('403 when the token lacks the role', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.human), payload: { command: 'ls' } });
    expect(r.statusCode).toBe(403);
    expect(r.json().error).toMatchObject({ code: 'forbidden', message: expect.stringContaining('"exec"') });
  });

  it('the seed-style single token is admin', async () => {
    const r = await exec({ command: 'echo hi' }, {}, TOKENS.admin);
    expect(r.statusCode).toBe(200);
  });

  it('only admins may act for another team', async () => {
    const r = await exec({ command: 'echo hi' }, { 'x-execgate-team': 'web' });
    expect(r.statusCode).toBe(403);
    const ok = await exec({ command: 'echo hi' }, { 'x-execgate-team': 'web' }, TOKENS.admin);
    expect(ok.statusCode).toBe(200);
    expect(t.runner.runs.at(-1)?.team).toBe('web');
  });
});

describe('POST /v1/exec', () => {
  it('streams NDJSON by default: decision, started, stdout, exit', async () => {
    const r = await exec({ command: 'echo hi' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toContain('application/x-ndjson');
    const events = ndjson(r.body);
    expect(events.map((e) => e.type)).toEqual(['decision', 'started', 'stdout', 'exit']);
    expect(events[0]).toMatchObject({ decision: 'allow', execId: expect.stringMatching(/^ex_/), explanation: { code: 'allowed', segments: [expect.objectContaining({ canonical: 'echo hi' })] } });
    expect(events[2]).toEqual({ type: 'stdout', data: 'ran: echo hi\n' });
    expect(events[3]).toMatchObject({ type: 'exit', exitCode: 0, timedOut: false, oomKilled: false, truncated: false });
  });

  it('streams SSE on Accept: text/event-stream', async () => {
    const r = await exec({ command: 'echo hi' }, { accept: 'text/event-stream' });
    expect(r.headers['content-type']).toContain('text/event-stream');
    const events = r.body.split('\n\n').filter(Boolean).map((b) => JSON.parse(b.replace(/^data: /, '')));
    expect(events.map((e) => e.type)).toEqual(['decision', 'started', 'stdout', 'exit']);
  });

  it('streams the binary multiplexed form on its Accept: the same events, output as the raw bytes', async () => {
    const euro = Buffer.from('€');
    const chunks = { stdout: [Buffer.from([0xff, 0x00, 0x0a]), euro.subarray(0, 1), Buffer.concat([euro.subarray(1), Buffer.from('"x\\')])], stderr: ['warn\n'] };
    t.runner.behaviour = () => ({ ...chunks, exitCode: 3 });
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), accept: MULTIPLEXED_TYPE }, payload: { command: 'cat bin' } });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe(MULTIPLEXED_TYPE);
    const events = decodeMultiplexed(r.rawPayload);
    expect(events.map((e) => e.type)).toEqual(['decision', 'started', 'stdout', 'stdout', 'stdout', 'stderr', 'exit']);
    expect(events[0]).toMatchObject({ decision: 'allow', execId: r.headers['x-execgate-exec-id'] });
    const bytes = (type: string) => Buffer.concat(events.filter((e) => e.type === type).map((e) => e.bytes as Buffer));
    expect(bytes('stdout')).toEqual(Buffer.concat(chunks.stdout));
    expect(bytes('stderr').toString()).toBe('warn\n');
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 3 });
    // The NDJSON of the same run: the same events around the output, and the same bytes once decoded.
    const nd = ndjson((await exec({ command: 'cat bin' })).body);
    const notOutput = (types: string[]) => types.filter((x) => x !== 'stdout' && x !== 'stderr');
    expect(notOutput(nd.map((e) => String(e.type)))).toEqual(notOutput(events.map((e) => e.type)));
    const decoded = Buffer.concat(nd.filter((e) => e.type === 'stdout').map((e) => Buffer.from(String(e.data), e.encoding === 'base64' ? 'base64' : 'utf8')));
    expect(decoded).toEqual(bytes('stdout'));
  });

  it('answers once on Accept: application/json', async () => {
    t.runner.behaviour = () => ({ stdout: ['a', 'b\n'], stderr: ['warn\n'], exitCode: 2 });
    const r = await exec({ command: 'make' }, { accept: 'application/json' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ decision: 'allow', exitCode: 2, stdout: 'ab\n', stderr: 'warn\n', timedOut: false, truncated: false, oomKilled: false });
  });

  it('keeps stdout and stderr separate, and base64-encodes bytes that are not UTF-8', async () => {
    t.runner.behaviour = () => ({ stdout: [Buffer.from([0xff, 0xfe, 0x00, 0x41])], stderr: ['é'] });
    const events = ndjson((await exec({ command: 'cat bin' })).body);
    expect(events.find((e) => e.type === 'stdout')).toEqual({ type: 'stdout', data: Buffer.from([0xff, 0xfe, 0x00, 0x41]).toString('base64'), encoding: 'base64' });
    expect(events.find((e) => e.type === 'stderr')).toEqual({ type: 'stderr', data: 'é' });
  });

  it('the JSON answer base64-encodes output that is not UTF-8 and says so', async () => {
    t.runner.behaviour = () => ({ stdout: [Buffer.from([0xff, 0x00])], stderr: ['ok'] });
    const r = await exec({ command: 'cat bin' }, { accept: 'application/json' });
    expect(r.json()).toMatchObject({ stdout: '/wA=', stdoutEncoding: 'base64', stderr: 'ok' });
    expect(r.json().stderrEncoding).toBeUndefined();
  });

  it('joins a UTF-8 character split across chunks instead of mangling it', async () => {
    const euro = Buffer.from('€');
    t.runner.behaviour = () => ({ stdout: [euro.subarray(0, 1), Buffer.concat([euro.subarray(1), Buffer.from('x')])] });
    const out = ndjson((await exec({ command: 'x' })).body).filter((e) => e.type === 'stdout');
    expect(out.map((e) => e.data).join('')).toBe('€x');
    expect(out.every((e) => e.encoding === undefined)).toBe(true);
  });

  it('passes cwd, env, stdin and a capped timeout to the runner', async () => {
    mkdirSync(join(t.dir, 'sub'));
    await exec({ command: 'cat', cwd: 'sub', env: { FOO: 'bar' }, stdin: 'aGk=', stdinEncoding: 'base64', timeoutMs: 999_999_999 });
    const spec = t.runner.runs[0]!;
    expect(spec.cwd).toBe(join(t.dir, 'sub'));
    expect(spec.env).toEqual({ FOO: 'bar' });
    expect(spec.stdin?.toString()).toBe('hi');
    expect(spec.timeoutMs).toBe(t.config.teams.data!.sandbox.timeoutMs);
    expect(spec.mounts).toEqual([{ path: t.dir, readOnly: false }]);
  });

  it('defaults cwd to the first allowed path', async () => {
    await exec({ command: 'pwd' });
    expect(t.runner.runs[0]!.cwd).toBe(t.dir);
  });

  it('a symlinked cwd is judged by its real path', async () => {
    symlinkSync('/etc', join(t.dir, 'etc-link'));
    const r = await exec({ command: 'ls', cwd: 'etc-link' });
    expect(r.statusCode).toBe(403);
    expect(r.json().error).toMatchObject({ code: 'policy_denied', decision: { code: 'path_not_allowed', cwd: '/etc' } });
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a deny is 403 policy_denied with the explanation, before any container exists', async () => {
    const r = await exec({ command: 'echo ok; rm -rf x' });
    expect(r.statusCode).toBe(403);
    const err = r.json().error;
    expect(err.code).toBe('policy_denied');
    expect(err.execId).toMatch(/^ex_/);
    expect(err.decision).toMatchObject({ decision: 'deny', code: 'blocked_pattern', hard: true, policyHash: expect.any(String) });
    expect(err.decision.segments.find((s: { pattern?: string }) => s.pattern === 'rm -rf')).toBeTruthy();
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a runner failure ends the stream with an error event', async () => {
    t.runner.behaviour = () => ({ error: { code: 'image_missing', message: 'sandbox image x is not present; build it with `npm run images`' } });
    const events = ndjson((await exec({ command: 'ls' })).body);
    expect(events.at(-1)).toMatchObject({ type: 'error', code: 'image_missing' });
    const json = await exec({ command: 'ls' }, { accept: 'application/json' });
    expect(json.statusCode).toBe(503);
    expect(json.json().error.code).toBe('image_missing');
  });
});

describe('bad input is a 400 naming the field, never a 500', () => {
  it.each<[string, unknown, string]>([
    ['missing command', {}, 'command'],
    ['command not a string', { command: 42 }, 'command'],
    ['unknown field', { command: 'ls', rm: true }, ''],
    ['env not strings', { command: 'ls', env: { A: 1 } }, 'env.A'],
    ['timeout negative', { command: 'ls', timeoutMs: -1 }, 'timeoutMs'],
    ['interactive not boolean', { command: 'ls', interactive: 'no' }, 'interactive'],
    ['stdin not base64', { command: 'ls', stdin: '%%%', stdinEncoding: 'base64' }, 'stdin'],
    ['env name invalid', { command: 'ls', env: { 'A-B': 'x' } }, 'env.A-B'],
    ['env LD_PRELOAD', { command: 'ls', env: { LD_PRELOAD: '/x.so' } }, 'env.LD_PRELOAD'],
    ['env PATH', { command: 'ls', env: { PATH: '/x' } }, 'env.PATH'],
    ['cwd missing', { command: 'ls', cwd: 'does-not-exist' }, 'cwd'],
    ['array body', [1, 2], ''],
  ])('%s', async (_name, body, field) => {
    const r = await exec(body);
    expect(r.statusCode).toBe(400);
    const err = r.json().error;
    expect(err.code).toBe('invalid_request');
    expect(err.fields.length).toBeGreaterThan(0);
    if (field) expect(err.fields.map((f: { path: string }) => f.path)).toContain(field);
  });

  it('malformed JSON', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': 'application/json' }, payload: '{"command": ' });
    expect(r.statusCode).toBe(400);
    expect(r.json().error.code).toBe('invalid_request');
  });

  it('wrong content type', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': 'text/plain' }, payload: 'ls' });
    expect(r.statusCode).toBe(415);
    expect(r.json().error.code).toBe('unsupported_media_type');
  });

  it('unknown route', async () => {
    const r = await t.app.inject({ url: '/v1/nope', headers: auth(TOKENS.agent) });
    expect(r.statusCode).toBe(404);
    expect(r.json().error.code).toBe('not_found');
  });
});

describe('POST /v1/policy/check', () => {
  it('answers the explanation and runs nothing', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/policy/check', headers: auth(TOKENS.agent), payload: { command: 'git status && sudo id' } });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ decision: 'deny', code: 'blocked_pattern', hard: true, policyHash: expect.any(String) });
    expect(r.json().segments.map((s: { canonical: string }) => s.canonical)).toEqual(['git status', 'id']);
    expect(t.runner.runs).toHaveLength(0);
  });
});
