import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chownSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { basename, join } from 'node:path';
import Docker from 'dockerode';
import type { FastifyInstance } from 'fastify';
import tar from 'tar-stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig, type AppConfig, type SandboxSettings } from '../../src/config/load.js';
import { LABEL_EXEC, LABEL_INSTANCE } from '../../src/runner/container-spec.js';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import type { RunEvent, RunResult, RunSpec } from '../../src/runner/types.js';
import { resolveCwd } from '../../src/service/exec-service.js';
import { engine } from '../support/app.js';
import { listenOnEngine } from '../support/engine-app.js';
import { readNdjson } from '../support/ndjson.js';
import { IS_GVISOR, SANDBOX_IMAGE, TEST_RUNTIME, projectDir, sandboxSettings, silentLogger, runInSession } from '../support/sandbox.js';

/*
 * The escape suite (issue 8): each test is one attempt to get out of the sandbox, or to make the service reach
 * outside on the sandbox's behalf, and states in its name the promise it proves. Every attempt must fail AND the
 * host must be unchanged: afterEach compares the host-side canaries with their state before the suite.
 *
 * Most attempts run through the DockerRunner directly: the policy would refuse many of these commands before any
 * container existed, and here the sandbox itself is what is under test. Where the policy is part of the promise
 * (cwd, path arguments, files, artifacts) the attempt goes through the service over HTTP.
 *
 * Runs under runc and under runsc (gVisor): the runtime comes from TEST_RUNTIME, never from this file.
 * Neighbouring promises proved elsewhere: read-only allowed paths and the read-only root (runner.test.ts),
 * hostile input archives (test/http/files.test.ts), an artifact symlink to /etc or out through `..` and files
 * put into a session through a planted link (files.test.ts).
 */

const docker = new Docker();
const tag = randomUUID().slice(0, 8);
const instance = `esc-${tag}`;
const runner = new DockerRunner({ instance, logger: silentLogger, docker });

const project = projectDir('execgate-esc-');
const readOnly = projectDir('execgate-esc-ro-');
/** A host directory beside the allowed ones, owned by the sandbox's uid: only the mount boundary hides it. */
const outside = projectDir('execgate-esc-outside-');
const CANARY = `HOST-CANARY-${tag}`;
const ETC_CANARY = `/etc/execgate-canary-${tag}`;
const ETC_SECRET = `ETC-CANARY-${tag}`;
/** A name the sandbox tries to create in host directories it must not write. */
const PLANT = `execgate-escape-${tag}`;
const forbiddenHostPaths = [`/${PLANT}`, `/etc/${PLANT}`, `/usr/${PLANT}`, `/var/tmp/${PLANT}`];
const hostKnobs = ['/proc/sys/kernel/core_pattern', '/proc/sys/vm/overcommit_memory'];

const SERVICE_TOKEN = `esc-token-${tag}`;
const QUOTA_TOKEN = `esc-quota-token-${tag}`;
const quotaTeamDir = projectDir('execgate-esc-qsvc-');
let app: FastifyInstance;
let url: string;
let config: AppConfig;

/** What the host looks like where the sandbox must leave no trace. */
function hostState(): Record<string, unknown> {
  const tree = (dir: string): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const st = lstatSync(p);
      out[name] = st.isSymbolicLink() ? `link:${readlinkSync(p)}` : st.isDirectory() ? `dir:${JSON.stringify(tree(p))}` : `file:${st.uid}:${readFileSync(p, 'utf8')}`;
    }
    return out;
  };
  return {
    outside: tree(outside.path),
    readOnly: tree(readOnly.path),
    etcCanary: readFileSync(ETC_CANARY, 'utf8'),
    forbidden: forbiddenHostPaths.filter((p) => existsSync(p)),
    knobs: hostKnobs.map((k) => readFileSync(k, 'utf8')),
  };
}
let hostBefore: Record<string, unknown>;

interface Run {
  stdout: string;
  stderr: string;
  containerId: string;
  result: RunResult;
}

function spec(command: string, over: Partial<RunSpec> & { settings?: Partial<SandboxSettings> } = {}): RunSpec {
  const { settings, ...rest } = over;
  return {
    execId: `esc_${randomUUID()}`,
    team: 'escape',
    command,
    cwd: project.path,
    env: {},
    mounts: [
      { path: project.path, readOnly: false },
      { path: readOnly.path, readOnly: true },
    ],
    sandbox: sandboxSettings(settings),
    timeoutMs: 30_000,
    ...rest,
  };
}

async function drive(s: RunSpec, on?: (e: RunEvent) => void | Promise<void>, r: DockerRunner = runner): Promise<Run> {
  const gen = r.run(s, new AbortController().signal);
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  let containerId = '';
  for (;;) {
    const n = await gen.next();
    if (n.done) return { stdout: Buffer.concat(out.stdout).toString(), stderr: Buffer.concat(out.stderr).toString(), containerId, result: n.value };
    await on?.(n.value);
    if (n.value.type === 'started') containerId = n.value.containerId;
    else if (n.value.type === 'output') out[n.value.stream].push(n.value.data);
  }
}

/**
 * One script of attempts, each on its own: a line `refused:LABEL` or `GOT-THROUGH:LABEL` after each, then the
 * attempt's own output (so a test can also check that no host content came back).
 */
function attempts(list: Record<string, string>): string {
  const lines = Object.entries(list).map(
    ([label, sh]) => `if ( ${sh} ) >/tmp/.attempt 2>&1; then echo "GOT-THROUGH:${label}"; else echo "refused:${label}"; fi; cat /tmp/.attempt; echo`,
  );
  return `${lines.join('\n')}\necho all-attempted`;
}

function expectRefused(r: Run, list: Record<string, string>): void {
  expect(r.result.error).toBeUndefined();
  expect(r.stdout).toContain('all-attempted');
  expect(r.stdout).not.toContain('GOT-THROUGH');
  for (const label of Object.keys(list)) expect(r.stdout).toContain(`refused:${label}`);
  for (const secret of [CANARY, ETC_SECRET]) {
    expect(r.stdout).not.toContain(secret);
    expect(r.stderr).not.toContain(secret);
  }
}

/** Removal is in the background: wait for it (close() waits for every removal), then nothing of the run is left. */
async function gone(r: DockerRunner, execId: string): Promise<void> {
  await r.close();
  expect(await docker.listContainers({ all: true, filters: { label: [`${LABEL_EXEC}=${execId}`] } })).toEqual([]);
}

const hostProcesses = (pattern: RegExp): string[] =>
  spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((l) => pattern.test(l));

/** Bytes in the files under a host directory (what a run wrote there). */
function bytesUnder(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    const st = lstatSync(join(dir, name));
    n += st.isDirectory() ? bytesUnder(join(dir, name)) : st.size;
  }
  return n;
}

const history = async (execId: string, token = SERVICE_TOKEN): Promise<Record<string, unknown>> =>
  (await (await fetch(`${url}/v1/executions/${execId}`, { headers: { authorization: `Bearer ${token}` } })).json()) as Record<string, unknown>;

const post = (body: Record<string, unknown>, token = SERVICE_TOKEN, accept?: string) =>
  fetch(`${url}/v1/exec`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(accept ? { accept } : {}) }, body: JSON.stringify(body) });

beforeAll(async () => {
  writeFileSync(join(outside.path, 'canary.txt'), `${CANARY}\n`);
  chownSync(join(outside.path, 'canary.txt'), 1000, 1000);
  writeFileSync(join(outside.path, 'linked.txt'), `HARDLINKED-${tag}\n`);
  chownSync(join(outside.path, 'linked.txt'), 1000, 1000);
  writeFileSync(ETC_CANARY, `${ETC_SECRET}\n`, { mode: 0o644 });
  writeFileSync(join(readOnly.path, 'data.txt'), 'read only\n');
  // Links the host itself left in an allowed path (a checkout, a user's shortcut), pointing out of it.
  symlinkSync('/etc', join(project.path, 'host-etc-link'));
  symlinkSync('/', join(project.path, 'host-root-link'));
  symlinkSync(outside.path, join(project.path, 'host-out-link'));
  mkdirSync(join(project.path, 'sub'));
  chownSync(join(project.path, 'sub'), 1000, 1000);

  const eng = await engine();
  config = resolveConfig(
    {
      store: { path: `${project.path}-store` },
      gateway: {
        auth: {
          tokens: [
            { token: SERVICE_TOKEN, team: 'default', roles: ['exec', 'approve'], name: 'escape-agent' },
            { token: QUOTA_TOKEN, team: 'quota', roles: ['exec', 'approve'], name: 'quota-agent' },
          ],
        },
      },
      agents: {
        defaults: {
          // The policy decides only where it is part of the promise; it asks no one.
          toolPolicies: { exec: { mode: 'allowed', allowedPaths: [project.path, { path: readOnly.path, readOnly: true }], blockedPatterns: [], rules: [], noMatch: 'allow', onDeny: 'block' } },
          sandbox: { image: SANDBOX_IMAGE, runtime: TEST_RUNTIME, memoryMb: 256, timeoutMs: 30_000, maxOutputBytes: 1 << 20, user: '1000:1000', pool: { size: 0 } },
          files: { scratchMb: 16 },
        },
        teams: { quota: { toolPolicies: { exec: { allowedPaths: [quotaTeamDir.path] } }, sandbox: { writeQuotaMb: 16 } } },
      },
    },
    { baseDir: project.path },
    'escape',
  );
  ({ app, url } = await listenOnEngine(config, runner, eng));
  hostBefore = hostState();
});

afterEach(() => {
  // Whatever the attempt, the host's side is as it was.
  expect(hostState()).toEqual(hostBefore);
});

afterAll(async () => {
  await app?.close();
  await runner.close();
  rmSync(ETC_CANARY, { force: true });
  for (const d of [project, readOnly, outside, quotaTeamDir]) d.remove();
  rmSync(`${project.path}-store`, { recursive: true, force: true });
});

describe('reading the host outside the allowed paths', () => {
  const etcName = basename(ETC_CANARY);
  const cases: [string, Record<string, string>][] = [
    [
      'by its absolute path',
      { outsideFile: `cat ${outside.path}/canary.txt`, etcFile: `cat ${ETC_CANARY}`, hostShadow: 'cat /etc/shadow', outsideDir: `cat ${outside.path}/linked.txt` },
    ],
    [
      'through .. from an allowed path',
      { sibling: `cat ${project.path}/../${basename(outside.path)}/canary.txt`, etc: `cat ${project.path}/../../../etc/${etcName}`, cdUp: `cd ${project.path}/../../.. && cat ./etc/${etcName}` },
    ],
    [
      'through /proc/*/root and /proc/1/root',
      {
        pid1: `cat /proc/1/root${ETC_CANARY}`,
        self: `cat /proc/self/root${outside.path}/canary.txt`,
        everyPid: `for d in /proc/[0-9]*/root; do cat "$d${ETC_CANARY}" 2>/dev/null && exit 0; done; exit 1`,
        pid1cwd: `cat /proc/1/cwd/../../../../etc/${etcName}`,
      },
    ],
  ];
  it.each(cases)('a host file outside the allowed paths cannot be read %s', async (_how, list) => {
    const r = await drive(spec(attempts(list)));
    expectRefused(r, list);
    // The host's /etc/shadow is not what the sandbox sees as /etc/shadow (the image's, unreadable to it).
    const hostShadow = readFileSync('/etc/shadow', 'utf8').split('\n')[0]!;
    expect(r.stdout).not.toContain(hostShadow);
  });

  it('a symlink the host planted in an allowed path, to /etc, / or a host directory, resolves inside the sandbox, never to the host', async () => {
    const list = {
      etcLink: `cat host-etc-link/${etcName}`,
      rootLinkEtc: `cat host-root-link/etc/${etcName}`,
      rootLinkOutside: `cat host-root-link${outside.path}/canary.txt`,
      outLink: 'cat host-out-link/canary.txt',
    };
    const r = await drive(spec(`${attempts(list)}\ntest "$(cat host-etc-link/hostname)" = "$(hostname)" && echo resolved-in-the-sandbox`));
    expectRefused(r, list);
    // The link to /etc reached the sandbox's own /etc (its hostname file is the container's).
    expect(r.stdout).toContain('resolved-in-the-sandbox');
  });

  it('a symlink planted from inside the sandbox, to /etc, / or a host directory, exposes nothing of the host, then or in a later run', async () => {
    const plant = `ln -s /etc in-etc && ln -s / in-root && ln -s ${outside.path} in-out && echo planted`;
    const list = { etc: `cat in-etc/${basename(ETC_CANARY)}`, root: `cat in-root${outside.path}/canary.txt`, out: 'cat in-out/canary.txt' };
    try {
      const first = await drive(spec(`${plant}\n${attempts(list)}`));
      expect(first.stdout).toContain('planted');
      expectRefused(first, list);
      // On the host the links now point at host paths: nothing in a later run follows them out either.
      expect(readlinkSync(join(project.path, 'in-out'))).toBe(outside.path);
      expectRefused(await drive(spec(attempts(list))), list);
    } finally {
      for (const l of ['in-etc', 'in-root', 'in-out']) rmSync(join(project.path, l), { force: true });
    }
  });

  it('no hard link to a file outside a mount can be made from inside: not to the image, /tmp, a host path, nor from the read-only allowed path into the read-write one', async () => {
    const list = {
      image: 'ln /etc/passwd hl-image',
      tmp: 'echo x > /tmp/x && ln /tmp/x hl-tmp',
      readOnlyIntoRw: `ln ${readOnly.path}/data.txt hl-ro`,
      hostPath: `ln ${outside.path}/canary.txt hl-host`,
    };
    const r = await drive(spec(attempts(list)));
    expectRefused(r, list);
    // Across mounts link(2) is EXDEV: a read-only file can never gain a writable name.
    expect(r.stdout).toMatch(/cross-device/i);
    expect(readdirSync(project.path).filter((n) => n.startsWith('hl-'))).toEqual([]);
  });

  it('a hard link the host made into an allowed path is that one file: through it the sandbox reaches nothing else', async () => {
    // The honest limit: a hard link is the file itself, so the host putting one in an allowed path is the
    // host sharing that file (like copying it in). The sandbox cannot make such links (previous test).
    const link = join(project.path, 'host-hardlink');
    linkSync(join(outside.path, 'linked.txt'), link);
    try {
      const list = { sibling: `cat ${outside.path}/canary.txt`, viaDir: `cat $(dirname ${link})/../${basename(outside.path)}/canary.txt` };
      const r = await drive(spec(`cat host-hardlink\n${attempts(list)}`));
      expect(r.stdout).toContain(`HARDLINKED-${tag}`);
      expectRefused(r, list);
    } finally {
      unlinkSync(link);
    }
  });
});

describe('writing outside the allowed paths', () => {
  it('writes outside the allowed paths fail: a host directory, through .., through a host-planted link, /, /etc, /usr, /var/tmp, the read-only allowed path', async () => {
    const list = {
      hostDir: `echo x > ${outside.path}/${PLANT}`,
      dotdot: `echo x > ${project.path}/../${basename(outside.path)}/${PLANT}`,
      hostLink: `echo x > host-out-link/${PLANT}`,
      procRoot: `echo x > /proc/1/root${outside.path}/${PLANT}`,
      root: `touch /${PLANT}`,
      etc: `touch /etc/${PLANT}`,
      etcDir: `mkdir /etc/${PLANT}`,
      usr: `touch /usr/${PLANT}`,
      varTmp: `touch /var/tmp/${PLANT}`,
      overwriteEtc: 'echo x >> /etc/passwd',
      readOnlyMount: `echo x >> ${readOnly.path}/data.txt`,
      readOnlyNew: `cp /bin/sh ${readOnly.path}/${PLANT}`,
    };
    const r = await drive(spec(attempts(list)));
    expectRefused(r, list);
    // The root filesystem refuses by being read-only, not only by permissions: /var/tmp is world-writable.
    expect(r.stdout).toMatch(/refused:varTmp\n[^\n]*Read-only file system/);
  });

  it('/proc/sys and /sys cannot be written: not the kernel\'s settings, not the sandbox\'s own cgroup limits', async () => {
    // Each attempt writes back the value it read, so that even a wrong success would change nothing.
    const list = {
      corePattern: 'v=$(cat /proc/sys/kernel/core_pattern) && echo "$v" > /proc/sys/kernel/core_pattern',
      overcommit: 'v=$(cat /proc/sys/vm/overcommit_memory) && echo "$v" > /proc/sys/vm/overcommit_memory',
      memoryLimit: 'f=/sys/fs/cgroup/memory/memory.limit_in_bytes; v=$(cat $f) && echo "$v" > $f',
      pidsLimit: 'f=/sys/fs/cgroup/pids/pids.max; v=$(cat $f) && echo "$v" > $f',
      ksm: 'f=/sys/kernel/mm/ksm/run; v=$(cat $f) && echo "$v" > $f',
      sysrq: 'echo h > /proc/sysrq-trigger',
    };
    expectRefused(await drive(spec(attempts(list))), list);
  });
});

describe('the service never follows a link planted in an allowed path', () => {
  const plant = (links: Record<string, string>) =>
    drive(spec(Object.entries(links).map(([name, target]) => `ln -s ${target} ${name}`).join(' && ') + ' && echo planted'));

  it('a cwd that is a link to /etc or to a host directory, planted by an earlier command, is resolved on the host and denied before any container', async () => {
    expect((await plant({ 'cwd-etc': '/etc', 'cwd-out': outside.path, 'cwd-sub': `${project.path}/sub` })).stdout).toBe('planted\n');
    try {
      for (const cwd of ['cwd-etc', `${project.path}/cwd-out`]) {
        const res = await post({ command: 'cat canary.txt', cwd });
        expect(res.status, cwd).toBe(403);
        const body = (await res.json()) as { error: { code: string; execId: string; decision: { code: string } } };
        expect(body.error).toMatchObject({ code: 'policy_denied', decision: { code: 'path_not_allowed' } });
        const record = await history(body.error.execId);
        expect(record.status).toBe('denied');
        expect(record.containerId).toBeUndefined();
      }
      // A link inside the allowed path is judged, and run, by its real path: never by the link's name.
      const res = await post({ command: 'pwd', cwd: 'cwd-sub' }, SERVICE_TOKEN, 'application/json');
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ exitCode: 0, stdout: `${project.path}/sub\n` });
    } finally {
      for (const l of ['cwd-etc', 'cwd-out', 'cwd-sub']) rmSync(join(project.path, l), { force: true });
    }
  });

  it('a path argument through a planted link passes the lexical policy but reaches only the sandbox\'s own files', async () => {
    const res = await post({ command: `cat host-etc-link/${basename(ETC_CANARY)} host-out-link/canary.txt host-root-link${outside.path}/canary.txt` }, SERVICE_TOKEN, 'application/json');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { exitCode: number; stdout: string; stderr: string };
    expect(body.exitCode).not.toBe(0);
    expect(body.stdout + body.stderr).not.toContain(CANARY);
    expect(body.stdout + body.stderr).not.toContain(ETC_SECRET);
    expect(body.stderr).toMatch(/No such file or directory|Invalid argument/);
  });

  it('an artifact that is a link to a host file (the canary, /etc/shadow) returns no host content and stores nothing', async () => {
    const pack = tar.pack();
    pack.entry({ name: 'leak', type: 'symlink', linkname: `${outside.path}/canary.txt` });
    pack.entry({ name: 'shadow', type: 'symlink', linkname: '/etc/shadow' });
    pack.entry({ name: 'relative', type: 'symlink', linkname: `../..${outside.path}/canary.txt` });
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    // The policy refuses `ln -s` to outside paths itself, so the links come the way they do in practice:
    // unpacked by the command from a tar among its input files.
    const res = await post({ command: 'tar -xf evil.tar && rm evil.tar', files: { 'evil.tar': { data: Buffer.concat(chunks).toString('base64'), encoding: 'base64' } }, collect: ['leak', 'shadow', 'relative'] });
    expect(res.status).toBe(200);
    const events = await readNdjson(res);
    const artifact = events.find((e) => e.type === 'artifact')!;
    expect(artifact.error).toMatchObject({ code: 'symlink_escape' });
    expect(JSON.stringify(events)).not.toContain(CANARY);
    const dl = await fetch(`${url}/v1/executions/${artifact.execId as string}/artifacts`, { headers: { authorization: `Bearer ${SERVICE_TOKEN}` } });
    expect(dl.status).toBe(404);
  });

  it('an allowed path configured as a symlink is mounted at its real path; the link\'s own path does not exist inside', async () => {
    const link = `${project.path}-via-link`;
    symlinkSync(project.path, link);
    try {
      const c = resolveConfig({ gateway: { auth: { token: SERVICE_TOKEN } }, agents: { defaults: { toolPolicies: { exec: { allowedPaths: [link] } }, sandbox: { user: '1000:1000' } } } }, { baseDir: '/' }, 'link');
      const team = c.teams.default!;
      // Resolved once, at load: the policy, the default cwd and the mount all use the real path.
      expect(team.policy.allowedPaths).toEqual([{ path: project.path, readOnly: false }]);
      expect(resolveCwd(team, undefined)).toBe(project.path);
      const r = await drive(spec(`pwd; test -e ${link} || echo no-link-inside`, { mounts: team.policy.allowedPaths, cwd: resolveCwd(team, undefined) }));
      expect(r.stdout).toBe(`${project.path}\nno-link-inside\n`);
    } finally {
      unlinkSync(link);
    }
  });

  it('an allowed path swapped for a symlink after the config loaded is never mounted (mount_changed, no container)', async () => {
    const dir = projectDir('execgate-esc-swap-');
    const moved = `${dir.path}.moved`;
    try {
      renameSync(dir.path, moved);
      symlinkSync('/etc', dir.path);
      const s = spec(`cat ${dir.path}/${basename(ETC_CANARY)}`, { mounts: [{ path: dir.path, readOnly: false }], cwd: dir.path });
      const r = await drive(s);
      expect(r.result.error).toMatchObject({ code: 'mount_changed' });
      expect(r.containerId).toBe('');
      expect(r.stdout).not.toContain(ETC_SECRET);
    } finally {
      rmSync(dir.path, { force: true });
      rmSync(moved, { recursive: true, force: true });
    }
  });
});

describe('reaching out', () => {
  let listener: Server;
  let port = 0;
  let connections = 0;
  const hostAddresses = (): string[] =>
    Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && a.family === 'IPv4')
      .map((a) => a!.address);
  beforeAll(async () => {
    listener = createServer((s) => {
      connections++;
      s.end('hello from the host\n');
    });
    await new Promise<void>((r) => listener.listen(0, '0.0.0.0', r));
    port = (listener.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((r) => listener.close(() => r())));

  /** A python3 script that tries each host:port and prints `CONNECTED h:p` or `fail h:p`. */
  const connectAll = (targets: [string, number][]) =>
    `python3 -c '
import socket
for h, p in ${JSON.stringify(targets)}:
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((h, p)); print("CONNECTED", h, p)
    except Exception as e:
        print("fail", h, p, e)
'`;

  it('there is no network: no interface but lo, and TCP to the host (its addresses, Docker\'s gateways, a listener it opened) or the internet fails', async () => {
    const gateways = (await docker.listNetworks()).flatMap((n) => (n.IPAM?.Config ?? []).map((c) => c.Gateway).filter((g): g is string => !!g && !g.includes(':')));
    const targets: [string, number][] = [...[...new Set([...hostAddresses(), ...gateways])].map((h): [string, number] => [h, port]), ['1.1.1.1', 443]];
    // The listener answers from the host itself: a refusal below is the sandbox's, not a dead listener.
    const greeting = await new Promise<string>((resolve, reject) => {
      const c = connect(port, hostAddresses().find((a) => a !== '127.0.0.1') ?? '127.0.0.1');
      let got = '';
      c.on('data', (d) => (got += d.toString()));
      c.on('end', () => resolve(got));
      c.on('error', reject);
    });
    expect(greeting).toBe('hello from the host\n');
    const before = connections;
    const r = await drive(spec(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ${connectAll(targets)}`));
    expect(r.result.error).toBeUndefined();
    const lines = r.stdout.trim().split('\n');
    expect(lines.filter((l) => !l.startsWith('fail') && !l.startsWith('CONNECTED'))).toEqual(['lo']);
    expect(lines.filter((l) => l.startsWith('fail'))).toHaveLength(targets.length);
    expect(r.stdout).not.toContain('CONNECTED');
    expect(connections).toBe(before);
  });

  it('the cloud metadata address (169.254.169.254, fd00:ec2::254) is unreachable', async () => {
    const r = await drive(spec(`${connectAll([['169.254.169.254', 80], ['fd00:ec2::254', 80]])}; curl -sS -m 3 http://169.254.169.254/latest/meta-data/ || echo curl-failed`));
    expect(r.stdout.match(/^fail /gm)).toHaveLength(2);
    expect(r.stdout).toContain('curl-failed');
    expect(r.stdout).not.toContain('CONNECTED');
  });

  it('the Docker engine cannot be reached: no socket in the sandbox, and its TCP ports on the host\'s addresses are unreachable', async () => {
    const targets: [string, number][] = hostAddresses().flatMap((h) => [[h, 2375], [h, 2376]] as [string, number][]);
    const list = {
      varRun: 'test -e /var/run/docker.sock',
      run: 'test -e /run/docker.sock',
      anySocket: 'test -n "$(find / \\( -path /proc -o -path /sys \\) -prune -o -type s -print 2>/dev/null | head -1)"',
      curl: 'curl -sS -m 3 --unix-socket /var/run/docker.sock http://docker/version',
    };
    const r = await drive(spec(`${attempts(list)}\n${connectAll(targets)}`));
    expectRefused(r, list);
    expect(r.stdout).not.toContain('CONNECTED');
    expect(r.stdout.match(/^fail /gm)).toHaveLength(targets.length);
  });

  it("another container on the host (a listener on a Docker bridge) can be neither reached nor seen", async () => {
    const network = await docker.createNetwork({ Name: `execgate-escape-${tag}`, Driver: 'bridge', Labels: { 'io.execgate.test': 'escape' } });
    const other = await docker.createContainer({
      Image: SANDBOX_IMAGE,
      Entrypoint: [],
      Cmd: ['python3', '-m', 'http.server', '8765'],
      Labels: { 'io.execgate.test': 'escape' },
      HostConfig: { NetworkMode: `execgate-escape-${tag}`, AutoRemove: false },
    });
    try {
      await other.start();
      const ip = Object.values((await other.inspect()).NetworkSettings.Networks)[0]!.IPAddress;
      // The host reaches it: it is there to be reached.
      let reachable = false;
      for (let i = 0; i < 50 && !reachable; i++) {
        reachable = await fetch(`http://${ip}:8765/`).then((res) => res.ok, () => false);
        if (!reachable) await new Promise((r) => setTimeout(r, 100));
      }
      expect(reachable).toBe(true);
      const r = await drive(spec(`${connectAll([[ip, 8765]])}; echo "seen=$(ps -eo args | grep -c '[h]ttp.server')"`));
      expect(r.stdout).toMatch(/^fail /m);
      expect(r.stdout).not.toContain('CONNECTED');
      expect(r.stdout).toContain('seen=0');
    } finally {
      await other.remove({ force: true });
      await network.remove();
    }
  });
});

describe('gaining privileges', () => {
  it('mount fails: tmpfs, bind and proc, directly or in new namespaces, and the host sees no mount', async () => {
    const target = join(project.path, 'mnt');
    mkdirSync(target);
    chownSync(target, 1000, 1000);
    try {
      const list = {
        tmpfs: `mount -t tmpfs none ${target}`,
        bind: `mount --bind /etc ${target}`,
        proc: `mount -t proc proc ${target}`,
        newMountNs: `unshare -m mount -t tmpfs none ${target}`,
        userAndMountNs: `unshare -Urm sh -c "mount -t tmpfs none ${target} && touch ${target}/inside"`,
      };
      expectRefused(await drive(spec(attempts(list))), list);
      expect(readdirSync(target)).toEqual([]);
      expect(statSync(target).dev).toBe(statSync(project.path).dev);
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });

  it('raw and packet sockets cannot be opened (no CAP_NET_RAW)', async () => {
    const list = {
      icmp: `python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"`,
      rawTcp: `python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)"`,
      packet: `python3 -c "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"`,
    };
    expectRefused(await drive(spec(attempts(list))), list);
  });

  it('chown to root fails, and the file stays the sandbox user\'s on the host', async () => {
    const list = { chown: 'chown 0:0 owned', chownUser: 'chown 0 owned', chgrp: 'chgrp 0 owned' };
    try {
      const r = await drive(spec(`touch owned\n${attempts(list)}`));
      expectRefused(r, list);
      expect(statSync(join(project.path, 'owned'))).toMatchObject({ uid: 1000, gid: 1000 });
    } finally {
      rmSync(join(project.path, 'owned'), { force: true });
    }
  });

  it('setuid-root binaries do not raise privileges (no-new-privileges): su, passwd, chsh and newgrp run as the sandbox user', async () => {
    // Each waits on a pipe for a password, long enough for its credentials to be read from /proc; the run ends
    // (and the container with it) before the pipe does. One per run: under gVisor two of these PAM programs
    // ending in the same sandbox have been seen to end it.
    for (const bin of ['su', 'passwd', 'chsh', 'newgrp']) {
      const r = await drive(spec(`(sleep 10 | ${bin} >/dev/null 2>&1 &) ; sleep 0.5; p=$(pgrep -x ${bin}) && grep '^Uid:' /proc/$p/status`));
      // real, effective, saved and filesystem uid: all the sandbox user's, none root.
      expect(r.stdout, bin).toMatch(/^Uid:\s+1000\s+1000\s+1000\s+1000\s*$/);
    }
    const r = await drive(spec('setpriv --reuid=0 --regid=0 --clear-groups id -u 2>&1 || echo setpriv-refused'));
    expect(r.stdout).toContain('setpriv-refused');
    expect(r.stdout).not.toMatch(/^0$/m);
  });
});

describe('resource abuse', () => {
  it('a fork bomb is held by the pids limit: the host stays responsive and the container is removed', async () => {
    let hostOk = false;
    const s = spec('bomb() { bomb | bomb & }; bomb; sleep 3; echo survived', { timeoutMs: 8000, settings: { pidsLimit: 64 } });
    const r = await drive(s, async (e) => {
      if (e.type !== 'started') return;
      await new Promise((res) => setTimeout(res, 1000));
      // While the bomb runs: the host can still start processes, and the engine answers.
      hostOk = spawnSync('true').status === 0 && (await docker.ping()).toString() === 'OK';
    });
    expect(hostOk).toBe(true);
    expect(r.result.error).toBeUndefined();
    expect(r.result.timedOut || r.result.exitCode !== null).toBe(true);
    await gone(runner, s.execId);
  });

  it('the pids limit counts the sandbox\'s tasks, under gVisor too: at 256, 200 at once run, and a fork past the limit fails while the sandbox goes on', async () => {
    // Under gVisor the host cgroup also holds its own threads; with the cgroup at the limit, the 24th
    // background process ended the whole sandbox.
    const command = [
      'for i in $(seq 1 200); do sleep 1000 & done',
      'n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo "tasks>=$((n >= 200))"',
      // Python forks until the kernel refuses (bash would retry for a minute).
      `python3 -c 'import errno, os, time\nwhile True:\n try: pid = os.fork()\n except OSError as e: print("refused", errno.errorcode[e.errno]); break\n if pid == 0: time.sleep(1000)'`,
      'echo survived',
    ].join('\n');
    const s = spec(command, { settings: { pidsLimit: 256, memoryMb: 512 } });
    const r = await drive(s);
    expect(r.result.error).toBeUndefined();
    expect(r.stdout).toBe('tasks>=1\nrefused EAGAIN\nsurvived\n');
    expect(r.result.exitCode).toBe(0);
    await gone(runner, s.execId);
  });

  it('a memory hog is OOM-killed and reported (oomKilled), and its container removed', async () => {
    const s = spec('python3 -c "b = bytearray(400 * 1024 * 1024); print(len(b))"', { settings: { memoryMb: 64 } });
    const r = await drive(s);
    expect(r.result).toMatchObject({ oomKilled: true, exitCode: 137, timedOut: false });
    expect(r.stdout).toBe('');
    await gone(runner, s.execId);
  });

  it('filling /tmp ends in ENOSPC at the tmpfs size: the sandbox goes on, and nothing of it lands on the host disk', async () => {
    const r = await drive(spec('dd if=/dev/zero of=/tmp/fill bs=1M 2>&1 | grep -v records; echo "filled=$(wc -c < /tmp/fill)"; echo alive', { settings: { tmpfsMb: 16 } }));
    expect(r.stdout).toMatch(/No space left on device/);
    expect(Number(/filled=(\d+)/.exec(r.stdout)![1])).toBeLessThanOrEqual(16 * 1024 * 1024);
    expect(r.stdout).toContain('alive\n');
    expect(r.result.exitCode).toBe(0);
  });

  it('1 GB of output is cut at maxOutputBytes: truncated, the container killed before the command finished, the service\'s memory bounded', async () => {
    const done = `done-${tag}`;
    const rss0 = process.memoryUsage().rss;
    const res = await post({ command: `yes 0123456789abcdef | head -c 1073741824; echo finished > ${done}` });
    expect(res.status).toBe(200);
    let bytes = 0;
    let execId = '';
    let exit: Record<string, unknown> | undefined;
    await readNdjson(res, {
      keep: false,
      onEvent: (e) => {
        if (e.type === 'stdout') bytes += Buffer.byteLength(e.data as string);
        if (e.type === 'decision') execId = e.execId as string;
        if (e.type === 'exit') exit = e;
      },
    });
    expect(exit).toMatchObject({ truncated: true, timedOut: false });
    expect(bytes).toBe(1 << 20);
    // What the service held meanwhile is bounded by the cap, not by what the command produced.
    expect(process.memoryUsage().rss - rss0).toBeLessThan(200 * 1024 * 1024);
    expect(existsSync(join(project.path, done))).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 100 && (await docker.listContainers({ all: true, filters: { label: [`${LABEL_EXEC}=${execId}`] } })).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await docker.listContainers({ all: true, filters: { label: [`${LABEL_EXEC}=${execId}`] } })).toEqual([]);
  });

  it('a command that ignores SIGTERM is still ended by the time-out: the container is killed and removed', async () => {
    const s = spec('trap "" TERM INT HUP QUIT; echo armed; python3 -c "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"', { timeoutMs: 1500 });
    const r = await drive(s);
    expect(r.stdout).toBe('armed\n');
    expect(r.result.timedOut).toBe(true);
    await gone(runner, s.execId);
  });

  const background = `sleep 7771 & nohup sleep 7772 >/dev/null 2>&1 & setsid sleep 7773 & (sleep 7774 &) ; echo detached`;
  it.each([
    ['a fresh container', false],
    ['a warm (pooled) container', true],
  ])('a process left running in the background (&, nohup, setsid, double fork) ends with the run in %s: no container and no process remain', async (_where, warm) => {
    const r0 = warm ? new DockerRunner({ instance: `esc-warm-${tag}`, logger: silentLogger, docker }) : runner;
    const settings = warm ? { pool: { size: 1, maxIdleMs: 600_000 } } : {};
    const s = spec(background, { settings });
    if (warm) {
      await r0.configurePool([{ team: s.team, sandbox: s.sandbox, mounts: s.mounts }]);
      for (let i = 0; i < 200 && r0.pool.idleCount() < 1; i++) await new Promise((r) => setTimeout(r, 50));
      expect(r0.pool.idleCount()).toBe(1);
    }
    const r = await drive(s, undefined, r0);
    expect(r.stdout).toBe('detached\n');
    expect(r.result).toMatchObject({ exitCode: 0, timedOut: false });
    if (warm) expect(r0.pool.hits).toBe(1);
    await gone(r0, s.execId);
    if (warm) expect(await docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=esc-warm-${tag}`] } })).toEqual([]);
    expect(hostProcesses(/^sleep 777[1-4]$/)).toEqual([]);
  });

  it('a session command is stopped whole before any of it is killed: no process of it sees another die and runs on', async () => {
    // Eight watchers, each waiting on a sleeper whose pid has one digit more than the watchers' (pids are burned
    // up to just below the next power of ten first); then output past maxOutputBytes has the command killed.
    // /proc lists by name, pid 100 before pid 99: a kill that went down that list one process at a time killed
    // the sleepers first, and watchers wrote to `leaked` (4 to 8 of 8, in each of 8 rounds tried by hand).
    const race = [
      'rm -f armed leaked',
      'b=10; while [ $b -le $(( $$ + 40 )) ]; do b=$((b*10)); done',
      `until [ "$(sh -c 'echo $$')" -ge $((b-30)) ]; do :; done`,
      `for j in 1 2 3 4 5 6 7 8; do sh -c 'while :; do sleep 1000 & [ $! -ge '$b' ] && break; done; echo >> armed; wait $!; echo >> leaked' & done`,
      'until [ "$(cat armed 2>/dev/null | wc -l)" -ge 8 ]; do sleep 0.05; done',
      'head -c 4000000 /dev/zero; wait',
    ].join('\n');
    const s = spec('', { settings: { pidsLimit: 256 } }); // about 100 processes at once
    const session = await runner.openSession({ sessionId: `ses_esc_kill_${tag}`, team: s.team, mounts: s.mounts, sandbox: s.sandbox, scratchMb: 16, lifetimeMs: 120_000 });
    try {
      // Two rounds: the watchers' pids below 100, then below 1000 (under gVisor, where burning 900 pids takes
      // half a minute, the first only).
      for (let round = 0; round < (IS_GVISOR ? 1 : 2); round++) {
        const killed = await runInSession(session, race, '/scratch', 30_000);
        expect(killed.result, killed.out.slice(0, 300)).toMatchObject({ truncated: true, timedOut: false });
        const after = await runInSession(session, 'wc -l < armed; cat leaked 2>/dev/null | wc -l; ps -eo args | grep -c "^sleep 1000" || true', '/scratch', 10_000);
        expect(after).toMatchObject({ out: '8\n0\n0\n', result: { exitCode: 0 } });
      }
      expect(session.alive).toBe(true);
    } finally {
      await session.close();
    }
  });
});

describe('the write quota of the read-write allowed paths', () => {
  const MB = 1024 * 1024;
  /** Writers of endless 1 MB or 4 KB files (`yes` never ends): only something outside them stops them. */
  const writer = (size: number) => `yes 0123456789abcdef | split -a 7 -b ${size}`;
  const manyFiles = `${writer(MB)}; echo stopped-by-itself`;
  const smallFiles = `${writer(4096)}; echo stopped-by-itself`;

  const quotaSpec = (dir: string, command: string, writeQuotaMb: number, over: Partial<SandboxSettings> = {}) =>
    spec(command, { mounts: [{ path: dir, readOnly: false }], cwd: dir, settings: { writeQuotaMb, ...over }, timeoutMs: 50_000 });

  it('no single file grows past the quota (RLIMIT_FSIZE): dd stops at exactly the quota, whatever its speed', async () => {
    using dir = projectDir('execgate-esc-quota-');
    const r = await drive(quotaSpec(dir.path, 'dd if=/dev/zero of=big bs=1M count=64 2>&1; echo "dd=$?"; echo alive', 16));
    expect(r.result.error).toBeUndefined();
    expect(statSync(join(dir.path, 'big')).size).toBe(16 * MB);
    // dd got SIGXFSZ (128 + 25) at the limit; unless the watchdog also saw the disk pass 16 MB, the shell went on.
    if (!r.result.writeQuotaExceeded) expect(r.stdout).toMatch(/dd=153\nalive\n$/);
  });

  it.each([
    ['1 MB files', manyFiles],
    ['4 KB files', smallFiles],
  ])('writing past the quota in many %s stops the sandbox: writeQuotaExceeded, the container removed, the overshoot bounded', async (what, command) => {
    using dir = projectDir('execgate-esc-quota-');
    const quotaMb = 32;
    const s = quotaSpec(dir.path, command, quotaMb);
    const r = await drive(s);
    expect(r.result).toMatchObject({ writeQuotaExceeded: true, timedOut: false, oomKilled: false });
    expect(r.result.error).toBeUndefined();
    expect(r.stdout).not.toContain('stopped-by-itself');
    const written = bytesUnder(dir.path);
    expect(written).toBeGreaterThan(quotaMb * MB * 0.5);
    console.info(`[escape] ${TEST_RUNTIME} cold, ${what}: quota ${quotaMb} MB, written ${(written / MB).toFixed(1)} MB, overshoot ${((written - quotaMb * MB) / MB).toFixed(1)} MB`);
    await gone(runner, s.execId);
  });

  it('a warm (pooled) container is stopped at the quota too', async () => {
    using dir = projectDir('execgate-esc-quota-');
    const warm = new DockerRunner({ instance: `esc-qwarm-${tag}`, logger: silentLogger, docker });
    const s = quotaSpec(dir.path, manyFiles, 32, { pool: { size: 1, maxIdleMs: 600_000 } });
    await warm.configurePool([{ team: s.team, sandbox: s.sandbox, mounts: s.mounts }]);
    for (let i = 0; i < 200 && warm.pool.idleCount() < 1; i++) await new Promise((r) => setTimeout(r, 50));
    const r = await drive(s, undefined, warm);
    expect(warm.pool.hits).toBe(1);
    expect(r.result).toMatchObject({ writeQuotaExceeded: true, timedOut: false });
    expect(r.stdout).not.toContain('stopped-by-itself');
    await gone(warm, s.execId);
  });

  it('in a session, a command over the quota is stopped and the session goes on; a background writer left by an earlier command is killed between commands', async () => {
    using dir = projectDir('execgate-esc-quota-');
    const s = quotaSpec(dir.path, '', 32);
    const session = await runner.openSession({ sessionId: `ses_esc_${tag}`, team: s.team, mounts: s.mounts, sandbox: s.sandbox, scratchMb: 16, lifetimeMs: 120_000 });
    const run = (command: string) => runInSession(session, command, dir.path, 50_000);
    try {
      const over = await run(manyFiles);
      expect(over.result).toMatchObject({ writeQuotaExceeded: true, timedOut: false });
      expect(over.out).not.toContain('stopped-by-itself');
      expect(await run('find . -name "x*" -delete && echo alive')).toMatchObject({ out: 'alive\n', result: { exitCode: 0 } });
      // A writer detached from a command that ends at once: only the watchdog between commands can stop it.
      const detached = await run(`nohup sh -c "${writer(MB)}" >/dev/null 2>&1 & echo detached`);
      expect(detached).toMatchObject({ out: 'detached\n', result: { exitCode: 0 } });
      let size = 0;
      for (let i = 0; i < 100; i++) {
        await new Promise((r) => setTimeout(r, 200));
        const now = bytesUnder(dir.path);
        if (now > 32 * MB && now === size) break;
        size = now;
      }
      expect(bytesUnder(dir.path)).toBeGreaterThan(32 * MB);
      const after = await run('pgrep -x split >/dev/null && echo writer-alive || echo writer-gone');
      expect(after.out).toBe('writer-gone\n');
      expect(session.alive).toBe(true);
    } finally {
      await session.close();
    }
  });

  it('a disk running low stops a run that is writing to it, even within its quota (the reserve)', async () => {
    using dir = projectDir('execgate-esc-small-');
    // A filesystem of its own, small enough to fill: a 64 MB tmpfs mounted over the directory on the host. The
    // reserve is 5% of it; the quota (1 GB) is far away.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,uid=1000,gid=1000,mode=0755', 'execgate-escape', dir.path]);
    try {
      const s = quotaSpec(dir.path, 'dd if=/dev/zero of=fill bs=1M 2>/dev/null; sleep 20; echo not-stopped', 1024);
      const r = await drive(s);
      expect(r.result).toMatchObject({ writeQuotaExceeded: true, timedOut: false });
      expect(r.stdout).not.toContain('not-stopped');
      await gone(runner, s.execId);
    } finally {
      execFileSync('umount', [dir.path]);
    }
  });

  it('the service says why the run ended: writeQuotaExceeded in the JSON answer and in the history', async () => {
    const res = await post({ command: manyFiles }, QUOTA_TOKEN, 'application/json');
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ writeQuotaExceeded: true, timedOut: false, truncated: false });
    expect(body.stdout).not.toContain('stopped-by-itself');
    expect(await history(body.execId as string, QUOTA_TOKEN)).toMatchObject({ status: 'finished', writeQuotaExceeded: true });
    for (const name of readdirSync(quotaTeamDir.path)) rmSync(join(quotaTeamDir.path, name), { force: true });
  });
});
