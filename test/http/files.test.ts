import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';

type TarEntry = Partial<tar.Header> & { name: string };
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RunSpec } from '../../src/runner/types.js';
import { TOKENS, auth, ndjson, testApp, type TestApp } from '../support/app.js';

// Files on the way in, over HTTP, with a fake runner: every refusal happens before a container exists.
let t: TestApp;
let seen: Map<string, Buffer>[];
beforeEach(async () => {
  seen = [];
  t = await testApp({
    raw: (dir) => ({
      gateway: { auth: { tokens: [{ token: TOKENS.agent, team: 'data', roles: ['exec'], name: 'agent-data' }, { token: TOKENS.human, team: 'data', roles: ['approve'], name: 'alice' }] } },
      agents: {
        defaults: { toolPolicies: { exec: { mode: 'allowed', allowedPaths: [dir], noMatch: 'allow', rules: [{ name: 'ask-sh', pattern: '^sh ', action: 'ask' }] } }, sandbox: { user: '1000:1000' }, files: { maxInputBytes: 4096, maxEntries: 20 } },
        teams: { data: {} },
      },
      store: { path: `${dir}-store` },
    }),
  });
  // The fake "container" reads the staged archive it was given, as Docker's archive API would.
  t.runner.behaviour = (spec: RunSpec) => {
    if (spec.scratch?.input) seen.push(untarSync(readFileSync(spec.scratch.input)));
    return { stdout: [`cwd=${spec.cwd}\n`] };
  };
});
afterEach(async () => {
  await t.close();
});

function untarSync(buf: Buffer): Map<string, Buffer> {
  // Enough of a ustar reader for the test: 512-byte headers, octal sizes, no extensions.
  const out = new Map<string, Buffer>();
  for (let off = 0; off + 512 <= buf.length; ) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const name = h.subarray(0, 100).toString().replace(/\0.*$/s, '');
    const prefix = h.subarray(345, 500).toString().replace(/\0.*$/s, '');
    const size = parseInt(h.subarray(124, 136).toString().replace(/\0.*$/s, '').trim() || '0', 8);
    const type = String.fromCharCode(h[156]!);
    const full = prefix ? `${prefix}/${name}` : name;
    if (type === '0' || type === '\0') out.set(full, buf.subarray(off + 512, off + 512 + size));
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

async function makeTar(entries: TarEntry[], content: Record<string, string | Buffer> = {}): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) if (e.type === undefined || e.type === 'file') pack.entry(e as tar.Header, content[e.name] ?? 'x');
  else pack.entry(e as tar.Header);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const stagedFiles = () => {
  try {
    return readdirSync(join(t.config.store.path, 'inputs'));
  } catch {
    return [];
  }
};

const tarExec = (body: Buffer, request: unknown = { command: 'ls' }) =>
  t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': 'application/x-tar', 'x-execgate-request': JSON.stringify(request) }, payload: body });

function multipart(parts: { name: string; filename?: string; type?: string; data: string | Buffer }[]): { body: Buffer; type: string } {
  const boundary = '----execgate-test-boundary';
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition = `form-data; name="${p.name}"${p.filename ? `; filename="${p.filename}"` : ''}`;
    chunks.push(Buffer.from(`--${boundary}\r\ncontent-disposition: ${disposition}\r\n${p.type ? `content-type: ${p.type}\r\n` : ''}\r\n`), Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

describe('hostile archives are refused with 400, naming the entry, before any container', () => {
  it.each<[string, TarEntry[], string, string]>([
    ['an absolute path', [{ name: '/etc/cron.d/x' }], 'absolute_path', '/etc/cron.d/x'],
    ['a .. path', [{ name: '../outside' }], 'parent_traversal', '../outside'],
    ['a nested .. path', [{ name: 'a/../../outside' }], 'parent_traversal', 'a/../../outside'],
    ['a symlink to /etc', [{ name: 'etc', type: 'symlink', linkname: '/etc' }], 'symlink_escape', 'etc'],
    ['a symlink out through ..', [{ name: 'a/up', type: 'symlink', linkname: '../../..' }], 'symlink_escape', 'a/up'],
    ['a hard link to a host file', [{ name: 'pw', type: 'link', linkname: '/etc/passwd' }], 'hardlink_escape', 'pw'],
    ['a hard link to nothing earlier', [{ name: 'pw', type: 'link', linkname: 'later' }, { name: 'later' }], 'hardlink_escape', 'pw'],
    ['a character device', [{ name: 'null', type: 'character-device', devmajor: 1, devminor: 3 }], 'special_file', 'null'],
    ['a block device', [{ name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 }], 'special_file', 'sda'],
    ['a FIFO', [{ name: 'pipe', type: 'fifo' }], 'special_file', 'pipe'],
    ['more bytes than files.maxInputBytes', [{ name: 'big', size: 5000 }], 'too_large', 'big'],
    ['more entries than files.maxEntries', Array.from({ length: 25 }, (_, i) => ({ name: `f${i}` })), 'too_many_entries', ''],
  ])('%s', async (_name, entries, reason, entry) => {
    const content = Object.fromEntries(entries.filter((e) => e.size).map((e) => [e.name, Buffer.alloc(e.size!)]));
    const r = await tarExec(await makeTar(entries, content));
    expect(r.statusCode, r.body).toBe(400);
    const err = r.json().error as { code: string; reason: string; entry?: string; message: string; fields: { path: string }[] };
    expect(err).toMatchObject({ code: 'invalid_files', reason });
    if (entry) {
      expect(err.entry).toBe(entry);
      expect(err.message).toContain(`"${entry}"`);
    }
    expect(err.fields[0]!.path).toBe('body');
    expect(t.runner.runs).toHaveLength(0);
    expect(stagedFiles()).toEqual([]);
  });

  it('a truncated archive is refused', async () => {
    const whole = await makeTar([{ name: 'a.txt' }, { name: 'b.txt' }]);
    const r = await tarExec(whole.subarray(0, 700));
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'invalid_files', reason: 'bad_archive' });
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['an absolute key', { '/etc/passwd': 'x' }, 'files'],
    ['a .. key', { '../x': 'x' }, 'files'],
    ['bad base64', { 'a.bin': { data: '***', encoding: 'base64' } }, 'files'],
    ['a file that is also a directory', { a: 'x', 'a/b': 'y' }, 'files'],
  ])('a JSON files map with %s is refused', async (_name, files, field) => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.agent), payload: { command: 'ls', files } });
    expect(r.statusCode, r.body).toBe(400);
    expect(r.json().error.code).toBe('invalid_files');
    expect(r.json().error.fields[0].path).toBe(field);
    expect(t.runner.runs).toHaveLength(0);
  });

  it.each([['../up'], ['/abs/**'], ['']])('collect pattern %j is refused', async (pattern) => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.agent), payload: { command: 'ls', collect: [pattern] } });
    expect(r.statusCode).toBe(400);
    expect(r.json().error.fields[0].path).toBe('collect');
  });
});

describe('files accepted in each form', () => {
  it('a JSON map: text and base64, run in /scratch by default', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.agent), payload: { command: 'ls', files: { 'a.txt': 'hi\n', 'd/b.bin': { data: Buffer.from([0, 255]).toString('base64'), encoding: 'base64' } } } });
    expect(r.statusCode).toBe(200);
    expect(ndjson(r.body).find((e) => e.type === 'stdout')).toMatchObject({ data: 'cwd=/scratch\n' });
    expect(seen[0]!.get('a.txt')!.toString()).toBe('hi\n');
    expect([...seen[0]!.get('d/b.bin')!]).toEqual([0, 255]);
    // The staged archive is gone once the run ended.
    expect(stagedFiles()).toEqual([]);
  });

  it('multipart: a request field and a tar part; a relative cwd stays under /scratch', async () => {
    const mp = multipart([
      { name: 'request', data: JSON.stringify({ command: 'ls', cwd: 'src' }) },
      { name: 'files', filename: 'in.tar', type: 'application/x-tar', data: await makeTar([{ name: 'src/x.txt' }], { 'src/x.txt': 'from multipart' }) },
    ]);
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': mp.type }, payload: mp.body });
    expect(r.statusCode, r.body).toBe(200);
    expect(ndjson(r.body).find((e) => e.type === 'stdout')).toMatchObject({ data: 'cwd=/scratch/src\n' });
    expect(seen[0]!.get('src/x.txt')!.toString()).toBe('from multipart');
  });

  const EMPTY_TAR = Buffer.alloc(1024); // two zero blocks: a valid, empty archive
  it.each<[string, { name: string; filename?: string; data: string | Buffer }[], string]>([
    ['without the request field', [{ name: 'files', filename: 'a.tar', data: EMPTY_TAR }], 'request'],
    ['with an empty files part', [{ name: 'request', data: '{"command":"ls"}' }, { name: 'files', filename: 'a.tar', data: '' }], 'files'],
    ['with an unknown field', [{ name: 'request', data: '{"command":"ls"}' }, { name: 'other', data: 'x' }], 'other'],
    ['with a request that is not JSON', [{ name: 'request', data: '{nope' }], 'request'],
  ])('multipart %s is a 400 naming the field', async (_name, parts, field) => {
    const mp = multipart(parts);
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': mp.type }, payload: mp.body });
    expect(r.statusCode, r.body).toBe(400);
    expect(r.json().error.fields[0].path).toBe(field);
  });

  it('a tar body without the X-Execgate-Request header is a 400 naming it', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': 'application/x-tar' }, payload: await makeTar([{ name: 'a' }]) });
    expect(r.statusCode).toBe(400);
    expect(r.json().error.fields[0].path).toBe('x-execgate-request');
  });
});

describe('approvals cover the files', () => {
  it('the approver sees names, sizes and a hash; different files are a different plan; rejecting removes the staged files', async () => {
    const ask = (content: string) => t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.agent), payload: { command: 'sh run.sh', files: { 'run.sh': content }, collect: ['out/**'] } });
    const responses = [ask('echo one'), ask('echo two!')];
    for (let i = 0; i < 200 && t.service.approvals.pendingCount() < 2; i++) await new Promise((r) => setTimeout(r, 5));
    const approvals = (await t.app.inject({ url: '/v1/approvals?status=pending', headers: auth(TOKENS.human) })).json().approvals as { id: string; planHash: string; cwd: string; collect: string[]; files: { names: string[]; bytes: number; sha256: string } }[];
    expect(approvals).toHaveLength(2);
    for (const a of approvals) expect(a).toMatchObject({ cwd: '/scratch', collect: ['out/**'], files: { names: ['run.sh'], sha256: expect.stringMatching(/^[0-9a-f]{64}$/) } });
    expect(approvals.map((a) => a.files.bytes).sort()).toEqual([8, 9]);
    expect(approvals[0]!.planHash).not.toBe(approvals[1]!.planHash);
    expect(stagedFiles()).toHaveLength(2);
    for (const a of approvals) await t.app.inject({ method: 'POST', url: `/v1/approvals/${a.id}/reject`, headers: auth(TOKENS.human), payload: {} });
    for (const r of await Promise.all(responses)) expect(ndjson(r.body).at(-1)).toMatchObject({ type: 'rejected' });
    expect(stagedFiles()).toEqual([]);
    expect(t.runner.runs).toHaveLength(0);
  });

  it('a plan with files is never remembered (422): the files may be the code that runs', async () => {
    const response = t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.agent), payload: { command: 'sh run.sh', files: { 'run.sh': 'echo hi' } } });
    for (let i = 0; i < 200 && t.service.approvals.pendingCount() === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const [a] = t.service.approvals.list(null, 'pending');
    const r = await t.app.inject({ method: 'POST', url: `/v1/approvals/${a!.id}/approve`, headers: auth(TOKENS.human), payload: { remember: { scope: 'exact' } } });
    expect(r.statusCode).toBe(422);
    expect(r.json().error.code).toBe('remember_refused');
    await t.app.inject({ method: 'POST', url: `/v1/approvals/${a!.id}/reject`, headers: auth(TOKENS.human), payload: {} });
    await response;
  });
});
