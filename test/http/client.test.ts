import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ExecgateClient,
  ExecgateError,
  type ApiErrorCode,
  type Approval,
  type Decision,
  type ExecutionRecord,
  type SessionInfo,
  type ExecEvent,
  type WireExecEvent,
} from '../../src/client/index.js';
import type { ExecWireEvent as ServerExecEvent } from '../../src/service/exec-service.js';
import type { Decision as ServerDecision } from '../../src/policy/types.js';
import type { ErrorCode as ServerErrorCode } from '../../src/service/errors.js';
import type { z } from 'zod';
import type { ApprovalSchema, ExecutionSchema, SessionSchema } from '../../src/http/wire.js';
import { TOKENS, testApp, type TestApp } from '../support/app.js';
import { listeningApp, type ScriptedRunner } from '../support/scripted-runner.js';

// Compile-time checks (npm run typecheck): the client's standalone wire types accept everything the server
// sends, and its list of API error codes is exactly the server's.
type WithBytes<E> = E extends { type: 'stdout' | 'stderr' } ? E & { bytes: Uint8Array } : E;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _wireAcceptsServer: WireExecEvent = {} as ServerExecEvent;
const _eventAcceptsServer: ExecEvent = {} as WithBytes<ServerExecEvent>;
const _decisionAcceptsServer: Decision = {} as ServerDecision;
const _sameErrorCodes: Same<ApiErrorCode, ServerErrorCode> = true;
// …and its history, approval and session types are what the documented answers (src/http/wire.ts) hold.
const _sameApproval: Same<Approval, z.output<typeof ApprovalSchema>> = true;
const _sameExecution: Same<ExecutionRecord, z.output<typeof ExecutionSchema>> = true;
const _sameSession: Same<SessionInfo, z.output<typeof SessionSchema>> = true;

let t: TestApp;
let runner: ScriptedRunner;
let url: string;

afterEach(async () => {
  await t?.close();
});

async function start(opts: Parameters<typeof listeningApp>[0] = {}) {
  ({ t, runner, url } = await listeningApp(opts));
}

const agent = () => new ExecgateClient({ url, token: TOKENS.agent });
const human = () => new ExecgateClient({ url, token: TOKENS.human });

async function rejection(p: Promise<unknown>): Promise<ExecgateError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof ExecgateError)) throw new Error(`expected an ExecgateError, got ${String(err)}`);
  return err;
}

async function untar(bytes: Uint8Array): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const extract = tar.extract();
  Readable.from([Buffer.from(bytes)]).pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    if (entry.header.type === 'file') out[entry.header.name] = Buffer.concat(chunks).toString();
  }
  return out;
}

async function makeTar(files: Record<string, string>): Promise<Uint8Array> {
  const pack = tar.pack();
  for (const [name, data] of Object.entries(files)) pack.entry({ name, mode: 0o644 }, data);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return new Uint8Array(Buffer.concat(chunks));
}

describe('exec', () => {
  it('streams the events in order, each output event as it happens', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    await start({ script: () => ({ stdout: ['one\n'], hold: held, stderr: ['warn\n'], exitCode: 3 }) });
    const run = agent().exec({ command: 'make build' });
    const seen: ExecEvent[] = [];
    for await (const e of run) {
      seen.push(e);
      // The run is held until the test has seen its first output: the client yields it before the run ends.
      if (e.type === 'stdout') release();
    }
    expect(seen.map((e) => e.type)).toEqual(['decision', 'started', 'stdout', 'stderr', 'exit']);
    expect(seen[0]).toMatchObject({ type: 'decision', decision: 'allow', execId: run.execId, explanation: { code: 'allowed' } });
    const out = seen[2]!;
    expect(out.type === 'stdout' && new TextDecoder().decode(out.bytes)).toBe('one\n');
    expect(seen[4]).toMatchObject({ type: 'exit', exitCode: 3, timedOut: false });

    const r = await run.result;
    expect(r).toMatchObject({ execId: run.execId, decision: 'allow', exitCode: 3, stdout: 'one\n', stderr: 'warn\n', timedOut: false, oomKilled: false, truncated: false });
    expect(r.explanation.segments[0]?.canonical).toBe('make build');
    expect(await run.accepted).toBe(run.execId);
    expect(run.execId).toMatch(/^ex_/);
  });

  it('resolves the result without anyone iterating', async () => {
    await start({ script: () => ({ stdout: ['a', 'b', 'c\n'], stderr: ['e\n'] }) });
    const r = await agent().exec({ command: 'ls' }).result;
    expect(r.stdout).toBe('abc\n');
    expect(r.stderr).toBe('e\n');
    expect(r.exitCode).toBe(0);
  });

  it('the events stay available to an iteration that starts after the result', async () => {
    await start();
    const run = agent().exec({ command: 'echo late' });
    await run.result;
    const types: string[] = [];
    for await (const e of run) types.push(e.type);
    expect(types).toEqual(['decision', 'started', 'stdout', 'exit']);
  });

  it('collectOutput: false keeps the output out of the result, not out of the events', async () => {
    await start();
    const run = agent().exec({ command: 'echo hi' }, { collectOutput: false });
    let text = '';
    for await (const e of run) if (e.type === 'stdout') text += new TextDecoder().decode(e.bytes);
    expect(text).toBe('ran: echo hi\n');
    expect(await run.result).toMatchObject({ stdout: '', exitCode: 0 });
  });

  it('decodes base64 output to the exact bytes', async () => {
    const binary = Buffer.from([0xff, 0x00, 0xfe, 0x80]);
    await start({ script: () => ({ stdout: [binary], stderr: ['plain\n'] }) });
    const run = agent().exec({ command: 'cat blob' });
    const outputs: ExecEvent[] = [];
    for await (const e of run) if (e.type === 'stdout' || e.type === 'stderr') outputs.push(e);
    expect(outputs[0]).toMatchObject({ type: 'stdout', encoding: 'base64' });
    const r = await run.result;
    expect(Buffer.from(r.stdoutBytes)).toEqual(binary);
    expect(r.stderr).toBe('plain\n');
  });

  it('sends cwd, env, timeoutMs and byte stdin as the server expects them', async () => {
    await start();
    const stdin = new Uint8Array([0, 1, 2, 255]);
    await agent().exec({ command: 'cat', cwd: '.', env: { A: '1' }, timeoutMs: 5000, stdin }).result;
    const spec = t.runner.runs[0]!;
    expect(spec).toMatchObject({ cwd: t.dir, env: { A: '1' }, timeoutMs: 5000 });
    expect(spec.stdin).toEqual(Buffer.from(stdin));
  });

  it('a timed-out run resolves with timedOut, a killed one with exitCode null', async () => {
    await start({ script: (c) => (c.command === 'sleep 99' ? { timedOut: true, exitCode: 137 } : { exitCode: null, oomKilled: true }) });
    expect(await agent().exec({ command: 'sleep 99' }).result).toMatchObject({ timedOut: true, exitCode: 137 });
    expect(await agent().exec({ command: 'eat-memory' }).result).toMatchObject({ exitCode: null, oomKilled: true });
  });

  it('a policy deny rejects with policy_denied, 403 and the explanation; nothing runs', async () => {
    await start();
    const run = agent().exec({ command: 'rm -rf build' });
    const err = await rejection(run.result);
    expect(err).toMatchObject({ name: 'ExecgateError', code: 'policy_denied', status: 403 });
    expect(err.execId).toMatch(/^ex_/);
    expect(err.decision).toMatchObject({ decision: 'deny', code: 'blocked_pattern', segments: [expect.objectContaining({ pattern: 'rm -rf' })] });
    expect((await rejection(run.accepted)).code).toBe('policy_denied');
    // Iterating throws the same error.
    await expect(
      (async () => {
        for await (const _ of run) void _;
      })(),
    ).rejects.toBe(err);
    expect(t.runner.runs).toHaveLength(0);
  });

  it('an error event rejects with its code', async () => {
    await start({ script: () => ({ error: { code: 'image_missing', message: 'no such image' } }) });
    const err = await rejection(agent().exec({ command: 'ls' }).result);
    expect(err).toMatchObject({ code: 'image_missing', message: 'no such image', status: undefined });
    expect(err.execId).toMatch(/^ex_/);
  });

  it('invalid input is 400 invalid_request with the fields', async () => {
    await start();
    const err = await rejection(agent().exec({ command: 'ls', env: { LD_PRELOAD: 'x' } }).result);
    expect(err).toMatchObject({ code: 'invalid_request', status: 400 });
    expect(err.fields?.[0]?.path).toBe('env.LD_PRELOAD');
  });

  it('the team option acts for another team (admin)', async () => {
    await start();
    await new ExecgateClient({ url, token: TOKENS.admin, team: 'web' }).exec({ command: 'ls' }).result;
    expect(t.runner.runs[0]?.team).toBe('web');
  });
});

describe('abort', () => {
  it('aborting mid-stream rejects with an AbortError and ends the run on the server', async () => {
    await start({ script: () => ({ stdout: ['partial\n'], hang: true }) });
    const ac = new AbortController();
    const run = agent().exec({ command: 'tail -f log' }, { signal: ac.signal });
    const seen: string[] = [];
    const iterated = (async () => {
      for await (const e of run) {
        seen.push(e.type);
        if (e.type === 'stdout') ac.abort();
      }
    })();
    await expect(iterated).rejects.toMatchObject({ name: 'AbortError', code: 'aborted' });
    await expect(run.result).rejects.toMatchObject({ name: 'AbortError', code: 'aborted', execId: run.execId });
    expect(seen).toEqual(['decision', 'started', 'stdout']);
    await runner.sawAbort(run.execId);
    expect(runner.aborted).toEqual([run.execId]);
  });

  it('cancel() does the same; an already-aborted signal sends nothing', async () => {
    await start({ script: () => ({ stdout: ['x\n'], hang: true }) });
    const run = agent().exec({ command: 'serve' });
    for await (const e of run) if (e.type === 'stdout') break;
    // Leaving the loop does not end the run; cancel() does.
    expect(runner.aborted).toEqual([]);
    run.cancel();
    await expect(run.result).rejects.toMatchObject({ name: 'AbortError' });
    await runner.sawAbort(run.execId);

    const before = t.runner.runs.length;
    const err = await rejection(agent().exec({ command: 'ls' }, { signal: AbortSignal.abort() }).result);
    expect(err.name).toBe('AbortError');
    await expect(agent().check('ls', { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError', code: 'aborted' });
    expect(t.runner.runs.length).toBe(before);
  });
});

describe('approvals', () => {
  it('waits for approval, approved by another token through the client', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const run = agent().exec({ command: 'make deploy' });
    const types: string[] = [];
    for await (const e of run) {
      types.push(e.type);
      if (e.type === 'approval_pending') {
        const pending = await human().approvals.list({ status: 'pending' });
        expect(pending.map((a) => a.id)).toEqual([e.approvalId]);
        expect(pending[0]).toMatchObject({ command: 'make deploy', requestedBy: 'agent-data', status: 'pending', execId: run.execId });
        expect(await human().approvals.get(e.approvalId)).toMatchObject({ id: e.approvalId, planHash: e.planHash });
        const approved = await human().approvals.approve(e.approvalId, { note: 'go' });
        expect(approved).toMatchObject({ status: 'approved', resolvedBy: 'alice', note: 'go' });
      }
    }
    expect(types).toEqual(['decision', 'approval_pending', 'approval_resolved', 'started', 'stdout', 'exit']);
    const r = await run.result;
    expect(r).toMatchObject({ decision: 'ask', approvedBy: 'alice', approvalId: expect.stringMatching(/^apr_/), exitCode: 0, stdout: 'ran: make deploy\n' });
    expect(await human().executions.get(r.execId)).toMatchObject({ status: 'finished', approvedBy: 'alice', exitCode: 0 });
  });

  it('a rejection rejects with approval_rejected, its reason and who; the iterator yields the event first', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const run = agent().exec({ command: 'make deploy' });
    const types: string[] = [];
    const iterated = (async () => {
      for await (const e of run) {
        types.push(e.type);
        if (e.type === 'approval_pending') await human().approvals.reject(e.approvalId, { reason: 'not today' });
      }
    })();
    const err = await rejection(iterated);
    expect(err).toMatchObject({ code: 'approval_rejected', notApproved: true, details: { reason: 'not today', by: 'alice' } });
    expect(err.details.approvalId).toMatch(/^apr_/);
    expect(await rejection(run.result)).toBe(err);
    expect(types).toEqual(['decision', 'approval_pending', 'rejected']);
    expect(t.runner.runs).toHaveLength(0);
  });

  it('expiry rejects with approval_expired', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const run = agent().exec({ command: 'ls' });
    const iterated = (async () => {
      for await (const e of run) if (e.type === 'approval_pending') t.clock.advance(t.config.approvals.timeoutMs + 1);
    })();
    expect(await rejection(iterated)).toMatchObject({ code: 'approval_expired', details: { reason: 'expired', by: 'system' } });
    expect((await rejection(run.result)).code).toBe('approval_expired');
  });

  it('resolving twice is 409 approval_already_resolved; unknown is 404', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const run = agent().exec({ command: 'ls' });
    for await (const e of run) {
      if (e.type !== 'approval_pending') continue;
      await human().approvals.approve(e.approvalId);
      expect(await rejection(human().approvals.reject(e.approvalId))).toMatchObject({ code: 'approval_already_resolved', status: 409 });
    }
    expect(await rejection(human().approvals.get('apr_nope'))).toMatchObject({ code: 'approval_not_found', status: 404 });
  });

  it('check() explains without running', async () => {
    await start({ exec: { mode: 'approval-required' } });
    expect(await agent().check('ls -la')).toMatchObject({ decision: 'ask', code: 'approval_required', hard: false, segments: [expect.objectContaining({ source: 'ls -la', canonical: 'ls -a -l' })] });
    expect(await agent().check('ls', { interactive: false })).toMatchObject({ decision: 'deny', code: 'approval_unavailable' });
    expect(t.runner.runs).toHaveLength(0);
  });
});

describe('errors', () => {
  it('a bad token is unauthorized (401), a missing role forbidden (403)', async () => {
    await start();
    const bad = new ExecgateClient({ url, token: 'not-a-token' });
    expect(await rejection(bad.exec({ command: 'ls' }).result)).toMatchObject({ name: 'ExecgateError', code: 'unauthorized', status: 401 });
    expect(await rejection(bad.check('ls'))).toMatchObject({ code: 'unauthorized', status: 401 });
    expect(await rejection(human().exec({ command: 'ls' }).result)).toMatchObject({ code: 'forbidden', status: 403 });
  });

  it('a service that is not there is unreachable', async () => {
    t = await testApp();
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    await new Promise<void>((r) => server.close(() => r()));
    const client = new ExecgateClient({ url: `http://127.0.0.1:${port}` });
    const err = await rejection(client.exec({ command: 'ls' }).result);
    expect(err).toMatchObject({ code: 'unreachable', status: undefined });
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect((await rejection(client.approvals.list())).code).toBe('unreachable');
  });
});

describe('NDJSON parsing', () => {
  const events = [
    { type: 'decision', execId: 'ex_1', decision: 'allow', explanation: { decision: 'allow', code: 'allowed', hard: false, reason: 'ok', segments: [], policyHash: 'h', cwd: '/w' } },
    { type: 'stdout', data: 'héllo ✓\n' },
    { type: 'stdout', data: Buffer.from([0xc3]).toString('base64'), encoding: 'base64' },
    { type: 'exit', exitCode: 0, durationMs: 1, timedOut: false, oomKilled: false, truncated: false },
  ];

  it('reads lines split anywhere across chunks, multi-byte characters too', async () => {
    const bytes = Buffer.from(events.map((e) => JSON.stringify(e)).join('\n')); // no newline after the last
    // One byte per chunk: every line and every character is split.
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const b of bytes) c.enqueue(new Uint8Array([b]));
        c.close();
      },
    });
    const fakeFetch: typeof fetch = async () => new Response(body, { status: 200, headers: { 'content-type': 'application/x-ndjson', 'x-execgate-exec-id': 'ex_1' } });
    const r = await new ExecgateClient({ url: 'http://execgate.invalid', fetch: fakeFetch }).exec({ command: 'x' }).result;
    expect(Buffer.from(r.stdoutBytes)).toEqual(Buffer.concat([Buffer.from('héllo ✓\n'), Buffer.from([0xc3])]));
    expect(r.execId).toBe('ex_1');
  });

  it('reads only as fast as a lagging iterator takes events, until someone awaits the result', async () => {
    const chunk = { type: 'stdout', data: 'x'.repeat(600_000) };
    const lines = [events[0], chunk, chunk, chunk, chunk, chunk, events[3]].map((e) => new TextEncoder().encode(`${JSON.stringify(e)}\n`));
    let pulls = 0;
    let onPull = () => undefined as void;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        const line = lines[pulls++];
        if (line) c.enqueue(line);
        else c.close();
        onPull();
      },
    });
    const pulled = (n: number) => new Promise<void>((resolve) => (onPull = () => pulls >= n && resolve()));
    const run = new ExecgateClient({ url: 'http://x.invalid', fetch: async () => new Response(body) }).exec({ command: 'x' });
    const it = run[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ type: 'decision' });
    await pulled(3);
    // Two 600 kB events wait for the iterator: over the client's queue limit, so it stops reading.
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(pulls).toBeLessThan(lines.length);
    // Asking for the result lifts the limit (waiting on it must never depend on the iterator).
    const r = await run.result;
    expect(r.stdoutBytes.length).toBe(5 * 600_000);
    const rest: string[] = [];
    for (let n = await it.next(); !n.done; n = await it.next()) rest.push(n.value.type);
    expect(rest).toEqual(['stdout', 'stdout', 'stdout', 'stdout', 'stdout', 'exit']);
  });

  it('a stream that ends before the exit is connection_lost; a broken line bad_response', async () => {
    const respond = (text: string): typeof fetch => async () => new Response(text, { status: 200 });
    const cut = `${JSON.stringify(events[0])}\n${JSON.stringify(events[1])}\n`;
    const lost = await rejection(new ExecgateClient({ url: 'http://x.invalid', fetch: respond(cut) }).exec({ command: 'x' }).result);
    expect(lost).toMatchObject({ code: 'connection_lost', execId: 'ex_1' });
    const broken = await rejection(new ExecgateClient({ url: 'http://x.invalid', fetch: respond(`${cut}{"type":\n`) }).exec({ command: 'x' }).result);
    expect(broken.code).toBe('bad_response');
    const proxy = await rejection(new ExecgateClient({ url: 'http://x.invalid', fetch: async () => new Response('<html>Bad Gateway</html>', { status: 502 }) }).check('x'));
    expect(proxy).toMatchObject({ code: 'bad_response', status: 502 });
  });
});

describe('files, artifacts and history', () => {
  it('files as a map and as a tar reach the run; collected artifacts download (sha256-checked)', async () => {
    await start({
      script: (c) => ({ stdout: [`${c.inputTar ? Object.keys(untarSyncNames(readFileSync(c.inputTar))).join(',') : ''}\n`], scratch: { 'dist/out.txt': 'built' } }),
    });
    const fromMap = await agent().exec({ command: 'sh build.sh', files: { 'build.sh': 'echo', 'logo.bin': new Uint8Array([1, 2, 3]) }, collect: ['dist/**'] }).result;
    expect(fromMap.stdout).toBe('build.sh,logo.bin\n');
    expect(fromMap.artifact).toMatchObject({ files: 1, names: ['dist/out.txt'], url: `/v1/executions/${fromMap.execId}/artifacts` });
    const tarBytes = await agent().executions.artifacts(fromMap.execId);
    expect(await untar(tarBytes)).toEqual({ 'dist/out.txt': 'built' });
    const stream = await agent().executions.artifacts(fromMap.execId, { stream: true });
    expect(await untar(new Uint8Array(await new Response(stream).arrayBuffer()))).toEqual({ 'dist/out.txt': 'built' });

    const fromTar = await agent().exec({ command: 'ls', files: await makeTar({ 'a.txt': 'A', 'b.txt': 'B' }) }).result;
    expect(fromTar.stdout).toBe('a.txt,b.txt\n');

    const list = await agent().executions.list({ limit: 10 });
    expect(list.map((e) => e.id).sort()).toEqual([fromMap.execId, fromTar.execId].sort());
    expect(await agent().executions.get(fromMap.execId)).toMatchObject({ status: 'finished', artifacts: { files: 1 } });
    expect(await rejection(agent().executions.artifacts(fromTar.execId))).toMatchObject({ code: 'artifact_not_found', status: 404 });
  });
});

describe('sessions', () => {
  it('create, files in, commands that share /scratch, files out, list, end', async () => {
    await start({
      script: (c) => {
        const write = /^write (\S+) (.*)$/.exec(c.command);
        if (write && c.files) {
          c.files.set(write[1]!, Buffer.from(write[2]!));
          return {};
        }
        const cat = /^cat (\S+)$/.exec(c.command);
        if (cat && c.files) return { stdout: [c.files.get(cat[1]!) ?? Buffer.from('missing\n')] };
        return { stdout: ['?\n'] };
      },
    });
    const client = agent();
    const session = await client.createSession({ idleTimeoutMs: 60_000 });
    expect(session.id).toMatch(/^ses_/);
    expect(session.info).toMatchObject({ id: session.id, team: 'data', status: 'open', idleTimeoutMs: 60_000 });

    expect(await session.putFiles({ 'in.txt': 'hello\n', 'bin/raw': new Uint8Array([0xff, 0x01]) })).toMatchObject({ sessionId: session.id, entries: 3 });
    expect(await session.putFiles(await makeTar({ 'more.txt': 'more\n' }))).toMatchObject({ entries: 1 });
    expect((await session.exec({ command: 'cat in.txt' }).result).stdout).toBe('hello\n');
    expect((await session.exec({ command: 'cat more.txt' }).result).stdout).toBe('more\n');
    await session.exec({ command: 'write out/report.txt done' }).result;

    expect(await untar(await session.getFiles({ include: 'out/**' }))).toEqual({ 'out/report.txt': 'done' });
    const all = await untar(await session.getFiles());
    expect(Object.keys(all).sort()).toEqual(['bin/raw', 'in.txt', 'more.txt', 'out/report.txt']);

    expect((await client.sessions.list()).map((s) => s.id)).toEqual([session.id]);
    expect(await client.session(session.id).describe()).toMatchObject({ id: session.id, status: 'open', busy: false });

    await session.end();
    await session.end(); // already ended: fine
    expect(await client.sessions.list()).toEqual([]);
    expect(await rejection(session.exec({ command: 'cat in.txt' }).result)).toMatchObject({ code: 'session_not_found', status: 404 });
  });
});

/** Names of the regular files in a tar (enough of ustar for staged input archives). */
function untarSyncNames(buf: Buffer): Record<string, true> {
  const out: Record<string, true> = {};
  for (let off = 0; off + 512 <= buf.length; ) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const name = h.subarray(0, 100).toString().replace(/\0.*$/s, '');
    const size = parseInt(h.subarray(124, 136).toString().replace(/\0.*$/s, '').trim() || '0', 8);
    if (String.fromCharCode(h[156]!) === '0') out[name] = true;
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}
