import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import Docker from 'dockerode';
import type { FastifyInstance } from 'fastify';
import tar from 'tar-stream';

type TarEntry = Partial<tar.Header> & { name: string };
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig, type AppConfig } from '../../src/config/load.js';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import { ExecService } from '../../src/service/exec-service.js';
import { engine } from '../support/app.js';
import { listenOnEngine } from '../support/engine-app.js';
import { readNdjson } from '../support/ndjson.js';
import { IS_GVISOR, SANDBOX_IMAGE, TEST_RUNTIME, projectDir, silentLogger, runInSession } from '../support/sandbox.js';

// Files into a sandbox and artifacts out of it, and sessions, on the real engine (issue 7).
const TOKENS = { data: 'files-it-data-token', web: 'files-it-web-token' };
const docker = new Docker();
const instance = `it-${randomUUID().slice(0, 8)}`;
const project = projectDir();
const readOnly = projectDir('execgate-ro-');
let app: FastifyInstance;
let url: string;
let runner: DockerRunner;
let config: AppConfig;
let service: ExecService;

beforeAll(async () => {
  const eng = await engine();
  config = resolveConfig(
    {
      store: { path: `${project.path}-store` },
      gateway: {
        auth: {
          tokens: [
            { token: TOKENS.data, team: 'data', roles: ['exec', 'approve'], name: 'data-agent' },
            { token: TOKENS.web, team: 'web', roles: ['exec', 'approve'], name: 'web-agent' },
          ],
        },
      },
      agents: {
        defaults: {
          toolPolicies: { exec: { mode: 'allowed', allowedPaths: [project.path, { path: readOnly.path, readOnly: true }], blockedPatterns: ['rm -rf', 'sudo'] } },
          sandbox: { image: SANDBOX_IMAGE, runtime: TEST_RUNTIME, memoryMb: 256, timeoutMs: 30_000, pool: { size: 0 } },
          files: { scratchMb: 64, maxEntries: 2000 },
          sessions: { maxSessions: 3 },
        },
        teams: { data: {}, web: {} },
      },
    },
    { baseDir: project.path },
    'integration',
  );
  runner = new DockerRunner({ instance, logger: silentLogger, docker });
  ({ service, app, url } = await listenOnEngine(config, runner, eng));
});

afterAll(async () => {
  await app.close();
  await service.sessions.closeAll();
  await runner.close();
  project.remove();
  readOnly.remove();
});

const headers = (team: keyof typeof TOKENS = 'data', extra: Record<string, string> = {}) => ({ authorization: `Bearer ${TOKENS[team]}`, 'content-type': 'application/json', ...extra });
const bare = (team: keyof typeof TOKENS = 'data') => ({ authorization: `Bearer ${TOKENS[team]}` });

async function exec(body: Record<string, unknown>, path = '/v1/exec', team: keyof typeof TOKENS = 'data') {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: headers(team), body: JSON.stringify(body) });
  expect(res.status, await res.clone().text()).toBe(200);
  return readNdjson(res);
}

/** Reads a tar into name → { type, data }. */
async function untar(bytes: Buffer): Promise<Map<string, { type: string; data: Buffer; linkname?: string | null }>> {
  const out = new Map<string, { type: string; data: Buffer; linkname?: string | null }>();
  const ex = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.set(h.name, { type: h.type ?? 'file', data: Buffer.concat(chunks), linkname: h.linkname });
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.end(bytes);
  await done;
  return out;
}

async function download(path: string, team: keyof typeof TOKENS = 'data'): Promise<{ status: number; body: Buffer; type: string | null }> {
  const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${TOKENS[team]}` } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), type: res.headers.get('content-type') };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const stdoutOf = (events: Record<string, unknown>[]) => events.filter((e) => e.type === 'stdout').map((e) => e.data as string).join('');

describe('files in, artifacts out (one-shot runs)', () => {
  it('round-trips UTF-8 text: the command sees it in /scratch (its default cwd) and it comes back as an artifact', async () => {
    const text = 'héllo, wörld — ✓\nline two\n';
    const events = await exec({ command: 'pwd && cat notes/hello.txt && cp notes/hello.txt out.txt', files: { 'notes/hello.txt': text }, collect: ['out.txt'] });
    expect(stdoutOf(events)).toBe(`/scratch\n${text}`);
    const artifact = events.find((e) => e.type === 'artifact')!;
    expect(artifact).toMatchObject({ files: 1, names: ['out.txt'] });
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
    const dl = await download(artifact.url as string);
    expect(dl.status).toBe(200);
    expect(dl.type).toBe('application/x-tar');
    expect(sha(dl.body)).toBe(artifact.sha256);
    expect((await untar(dl.body)).get('out.txt')!.data.toString('utf8')).toBe(text);
  });

  it('round-trips binary (every byte value) through base64 in and tar out, unchanged', async () => {
    const bin = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(100_000)]);
    const events = await exec({ command: 'sha256sum in.bin | cut -d" " -f1 && mkdir -p dist && cp in.bin dist/copy.bin', files: { 'in.bin': { data: bin.toString('base64'), encoding: 'base64' } }, collect: ['dist/**'] });
    expect(stdoutOf(events).trim()).toBe(sha(bin));
    const dl = await download((events.find((e) => e.type === 'artifact')!).url as string);
    expect(sha((await untar(dl.body)).get('dist/copy.bin')!.data)).toBe(sha(bin));
  });

  it('round-trips 500 small files in nested directories, as a tar body', async () => {
    const pack = tar.pack();
    const files = new Map<string, string>();
    for (let i = 0; i < 500; i++) {
      const name = `src/d${i % 10}/f${i}.txt`;
      files.set(name, `file ${i}\n`);
      pack.entry({ name, uid: 0, gid: 0 }, `file ${i}\n`);
    }
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    const res = await fetch(`${url}/v1/exec`, {
      method: 'POST',
      headers: { ...headers(), 'content-type': 'application/x-tar', 'x-execgate-request': JSON.stringify({ command: "find src -type f | wc -l && find src/d0/f0.txt -printf '%U\\n'", collect: ['src/**/*.txt'] }) },
      body: Buffer.concat(chunks),
    });
    expect(res.status).toBe(200);
    const events = await readNdjson(res);
    // Owned by the sandbox user, not by the uid in the uploaded headers (0).
    expect(stdoutOf(events)).toBe('500\n1000\n');
    const got = await untar((await download((events.find((e) => e.type === 'artifact')!).url as string)).body);
    expect(got.size).toBe(500);
    for (const [name, content] of files) expect(got.get(name)?.data.toString()).toBe(content);
  });

  // The policy refuses `ln -s /etc/passwd x` itself, so the links arrive the way they do in practice: inside
  // an archive the command unpacks (input files are checked, but a tar *file* among them is just bytes).
  const nestedTar = async (entries: TarEntry[]): Promise<string> => {
    const pack = tar.pack();
    for (const e of entries) pack.entry(e as tar.Header);
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('base64');
  };
  it.each<[string, () => Promise<Record<string, unknown>>, string, string]>([
    ['a symlink to /etc', async () => ({ command: 'tar -xf evil.tar', files: { 'evil.tar': { data: await nestedTar([{ name: 'leak', type: 'symlink', linkname: '/etc/passwd' }]), encoding: 'base64' } } }), 'symlink_escape', 'leak'],
    ['a symlink out through ..', async () => ({ command: 'tar -xf evil.tar', files: { 'evil.tar': { data: await nestedTar([{ name: 'd/up', type: 'symlink', linkname: '../../etc' }]), encoding: 'base64' } } }), 'symlink_escape', 'scratch/d/up'],
  ])('an artifact holding %s is refused, naming the entry, and nothing is stored', async (_name, body, code, entry) => {
    const events = await exec({ ...(await body()), collect: ['**'] });
    const artifact = events.find((e) => e.type === 'artifact')!;
    expect(artifact.error).toMatchObject({ code });
    expect((artifact.error as { message: string }).message).toMatch(/archive entry "/);
    expect((artifact.error as { entry: string }).entry).toContain(entry.replace('scratch/', ''));
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
    const dl = await download(`/v1/executions/${artifact.execId as string}/artifacts`);
    expect(dl.status).toBe(404);
  });

  // Under runc the FIFO is made in the host's tmpfs behind /scratch, and the artifact check refuses it. Under
  // gVisor a FIFO on a host-backed mount exists only inside the sandbox's own kernel: the host side of /scratch
  // never holds it, so the artifact is made without it.
  it('a FIFO never reaches the artifact store: refused naming the entry (runc), never on the host side at all (gVisor)', async () => {
    const events = await exec({ command: 'mkfifo pipe && test -p pipe && echo made', collect: ['**'] });
    expect(stdoutOf(events)).toBe('made\n');
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
    const artifact = events.find((e) => e.type === 'artifact')!;
    const dl = await download(`/v1/executions/${artifact.execId as string}/artifacts`);
    if (!IS_GVISOR) {
      expect(artifact.error).toMatchObject({ code: 'special_file', entry: expect.stringContaining('pipe') as unknown });
      expect((artifact.error as { message: string }).message).toMatch(/archive entry "/);
      expect(dl.status).toBe(404);
    } else {
      expect(artifact).toMatchObject({ files: 0, names: [] });
      expect(artifact.error).toBeUndefined();
      expect(dl.status).toBe(200);
      expect([...(await untar(dl.body)).keys()].filter((n) => n.includes('pipe'))).toEqual([]);
    }
  });

  it('another team cannot download the artifacts (404, as if there were none)', async () => {
    const events = await exec({ command: 'echo secret > s.txt', collect: ['s.txt'] });
    const artifact = events.find((e) => e.type === 'artifact')!;
    expect((await download(artifact.url as string, 'web')).status).toBe(404);
    expect((await download(artifact.url as string, 'data')).status).toBe(200);
  });

  it('a files run leaves no container and no volume behind', async () => {
    const volumes = async () => new Set(((await docker.listVolumes({ filters: { label: ['io.execgate.managed=true'] } })).Volumes ?? []).map((v) => v.Name));
    const before = await volumes();
    const events = await exec({ command: 'echo x > a', files: { 'in.txt': 'x' }, collect: ['a'] });
    const id = (events.find((e) => e.type === 'started')!).containerId as string;
    for (let i = 0; i < 50; i++) {
      if (!(await docker.listContainers({ all: true, filters: { id: [id] } })).length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await docker.listContainers({ all: true, filters: { id: [id] } })).toEqual([]);
    expect([...(await volumes())].filter((v) => !before.has(v))).toEqual([]);
  });
});

describe('sessions', () => {
  const open = async (team: keyof typeof TOKENS = 'data', body: Record<string, unknown> = {}) => {
    const res = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: headers(team), body: JSON.stringify(body) });
    expect(res.status, await res.clone().text()).toBe(201);
    return (await res.json()) as { id: string; containerId: string };
  };
  const sessionExec = async (id: string, body: Record<string, unknown>, team: keyof typeof TOKENS = 'data') => {
    const res = await fetch(`${url}/v1/sessions/${id}/exec`, { method: 'POST', headers: headers(team, { accept: 'application/json' }), body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const containerGone = async (id: string) => {
    for (let i = 0; i < 100; i++) {
      if (!(await docker.listContainers({ all: true, filters: { id: [id] } })).length) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  };

  it('keeps state across three commands: files, the working directory tree, and installed things', async () => {
    const s = await open();
    expect((await sessionExec(s.id, { command: 'mkdir -p build && echo step1 > build/log', files: { 'src/main.sh': 'echo built' } })).body).toMatchObject({ exitCode: 0 });
    expect((await sessionExec(s.id, { command: 'sh src/main.sh >> build/log && echo step2 >> build/log' })).body).toMatchObject({ exitCode: 0 });
    const third = await sessionExec(s.id, { command: 'cat build/log' });
    expect(third.body).toMatchObject({ exitCode: 0, stdout: 'step1\nbuilt\nstep2\n' });
    // Files come out of a session the same way, checked on the way.
    const dl = await download(`/v1/sessions/${s.id}/files?include=build/**`);
    expect(dl.status).toBe(200);
    expect((await untar(dl.body)).get('build/log')!.data.toString()).toBe('step1\nbuilt\nstep2\n');
    expect((await fetch(`${url}/v1/sessions/${s.id}`, { method: 'DELETE', headers: bare() })).status).toBe(204);
    expect(await containerGone(s.containerId)).toBe(true);
  });

  it('a time-out kills the command and everything it started, not the session', async () => {
    const s = await open();
    await sessionExec(s.id, { command: 'echo kept > state' });
    const timed = await sessionExec(s.id, { command: '(sleep 300 &) ; setsid sleep 301 & sleep 302', timeoutMs: 1500 });
    expect(timed.body).toMatchObject({ timedOut: true, exitCode: 137 });
    const after = await sessionExec(s.id, { command: 'cat state; ps -eo args | grep -c "^sleep 30[012]" || true' });
    expect(after.body).toMatchObject({ exitCode: 0, stdout: 'kept\n0\n' });
    await fetch(`${url}/v1/sessions/${s.id}`, { method: 'DELETE', headers: bare() });
  });

  it('a time-out also kills what cleared its environment, double-forked or left its process group', async () => {
    const s = await open();
    const timed = await sessionExec(s.id, { command: '(env -i sleep 303 &) ; (setsid sleep 304 &) ; nohup sleep 305 >/dev/null 2>&1 & sleep 306', timeoutMs: 1500 });
    expect(timed.body).toMatchObject({ timedOut: true });
    const after = await sessionExec(s.id, { command: 'ps -eo args | grep -c "^sleep 30[3-6]" || true' });
    expect(after.body).toMatchObject({ exitCode: 0, stdout: '0\n' });
    await fetch(`${url}/v1/sessions/${s.id}`, { method: 'DELETE', headers: bare() });
  });

  it("a command cannot inject lines into the next command: each runs in its own exec, and the keeper's stdin is inert", async () => {
    // At the runner, below the policy (which already refuses writing to /proc/1/fd/0 as spelled here): the
    // protocol itself must hold against whatever a command manages to run.
    const handle = await runner.openSession({ sessionId: `ses_${randomUUID()}`, team: 'data', mounts: config.teams.data!.policy.allowedPaths, sandbox: config.teams.data!.sandbox, scratchMb: 16, lifetimeMs: 60_000 });
    const run = (command: string) => runInSession(handle, command, '/scratch', 10_000);
    try {
      // Every stdin in the container gets a line that would create a file if any shell ran it, plus a fake
      // end-of-command marker. PID 1 and the keeper share the keeper's stdin pipe.
      const poke = await run(`for f in /proc/[0-9]*/fd/0; do timeout 1 sh -c 'printf "touch /scratch/pwned\\n0123:0\\n" > "$1"' _ "$f" 2>/dev/null; done; echo poked`);
      expect(poke.out).toBe('poked\n');
      const next = await run('echo next; find /scratch -mindepth 1; exit 3');
      expect(next).toMatchObject({ out: 'next\n', result: { exitCode: 3 } });
      expect(handle.alive).toBe(true);
    } finally {
      await handle.close();
    }
  });

  it('files put into a session go through tar as the sandbox user: a planted link into a read-only path does not write there', async () => {
    const s = await open();
    expect((await sessionExec(s.id, { command: `ln -s ${readOnly.path} r` })).body).toMatchObject({ exitCode: 0 });
    // tar (as the sandbox user) replaces the link with the directory the archive names; whatever it did, the
    // read-only host directory is untouched, which Docker's archive API (root, following the link) did not promise.
    const put = await fetch(`${url}/v1/sessions/${s.id}/files`, { method: 'PUT', headers: headers(), body: JSON.stringify({ files: { 'r/evil': 'x' } }) });
    expect([200, 400]).toContain(put.status);
    expect(readdirSync(readOnly.path)).toEqual([]);
    expect((await sessionExec(s.id, { command: `rm r/evil; rmdir r; ln -s ${readOnly.path} r` })).body).toMatchObject({ exitCode: 0 });
    // And a link planted to get a host file out is refused by name on the way out.
    const dl = await download(`/v1/sessions/${s.id}/files`);
    expect(dl.status).toBe(400);
    expect(JSON.parse(dl.body.toString()).error).toMatchObject({ code: 'invalid_files', reason: 'symlink_escape', entry: 'scratch/r' });
    await fetch(`${url}/v1/sessions/${s.id}`, { method: 'DELETE', headers: bare() });
  });

  it('another team gets 404 for every session route, and cannot list it', async () => {
    const s = await open('data');
    for (const [method, path, body] of [
      ['GET', `/v1/sessions/${s.id}`, undefined],
      ['POST', `/v1/sessions/${s.id}/exec`, { command: 'echo hi' }],
      ['PUT', `/v1/sessions/${s.id}/files`, { files: { a: 'b' } }],
      ['GET', `/v1/sessions/${s.id}/files`, undefined],
      ['DELETE', `/v1/sessions/${s.id}`, undefined],
    ] as const) {
      const res = await fetch(`${url}${path}`, { method, headers: body ? headers('web') : bare('web'), body: body ? JSON.stringify(body) : undefined });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('session_not_found');
    }
    const list = (await (await fetch(`${url}/v1/sessions`, { headers: bare('web') })).json()) as { sessions: unknown[] };
    expect(list.sessions).toEqual([]);
    expect((await sessionExec(s.id, { command: 'echo still mine' })).body).toMatchObject({ stdout: 'still mine\n' });
    await fetch(`${url}/v1/sessions/${s.id}`, { method: 'DELETE', headers: bare() });
  });

  it('an idle session is ended and its container removed', async () => {
    const s = await open('data', { idleTimeoutMs: 1000 });
    expect((await sessionExec(s.id, { command: 'true' })).body).toMatchObject({ exitCode: 0 });
    expect(await containerGone(s.containerId)).toBe(true);
    expect((await fetch(`${url}/v1/sessions/${s.id}`, { headers: bare() })).status).toBe(404);
  });

  it('a session is ended at its maximum lifetime even while in use', async () => {
    const s = await open('data', { maxLifetimeMs: 2000 });
    const busy = await sessionExec(s.id, { command: 'sleep 10', timeoutMs: 20_000 });
    expect(busy.status).toBe(410);
    expect(busy.body.error).toMatchObject({ code: 'session_ended' });
    expect(await containerGone(s.containerId)).toBe(true);
  });

  it('asking for more than the team allows is a 400 naming the field', async () => {
    const res = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: headers(), body: JSON.stringify({ memoryMb: 100_000, image: 'alpine:latest' }) });
    expect(res.status).toBe(400);
    const err = ((await res.json()) as { error: { fields: { path: string }[] } }).error;
    expect(err.fields.map((f) => f.path).sort()).toEqual(['image', 'memoryMb']);
  });
});
