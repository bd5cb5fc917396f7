import { randomUUID } from 'node:crypto';
import { chmodSync, readFileSync, readlinkSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { resolveConfig, type AppConfig } from '../../src/config/load.js';
import { LABEL_INSTANCE, LABEL_MANAGED, gvisorHostPids } from '../../src/runner/container-spec.js';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import { ExecService } from '../../src/service/exec-service.js';
import { engine } from '../support/app.js';
import { listenOnEngine } from '../support/engine-app.js';
import { readNdjson } from '../support/ndjson.js';
import { IS_GVISOR, SANDBOX_IMAGE, TEST_RUNTIME, projectDir, silentLogger } from '../support/sandbox.js';

/**
 * Container settings audit (issue 8): the containers the service really creates — a one-shot run, a one-shot
 * run with files (/scratch), a pooled (warm) container and a session — inspected while they run, from Docker's
 * side (`inspect`), from the host (/proc of the container's process) and from inside (/proc/1/status,
 * /proc/self/status), against the CIS Docker Benchmark (v1.6) items that apply to containers a service starts.
 * Each test names its item. Runs under both runtimes (vitest.config.ts); where gVisor reports something else
 * the test says what, and asserts what holds there.
 */
const TOKEN = 'cis-audit-token-0001';
const docker = new Docker();
const instance = `cis-${randomUUID().slice(0, 8)}`;
const project = projectDir('execgate-cis-');
const readOnly = projectDir('execgate-cis-ro-');
const PROBE = join(project.path, 'cis-probe.sh');
let app: FastifyInstance;
let url: string;
let runner: DockerRunner;
let service: ExecService;
let config: AppConfig;

// Prints what the process sees from inside, then holds the container until the test creates release-$1.
const probeScript = `dir=$(dirname "$0")
echo @@pid1; cat /proc/1/status
echo @@self; cat /proc/self/status
echo @@nnp; python3 -c 'import ctypes; print(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))'
echo @@mountinfo; cat /proc/self/mountinfo
echo @@pid1cmd; tr '\\0' ' ' < /proc/1/cmdline; echo
echo @@procs; for p in /proc/[0-9]*; do echo "\${p#/proc/}"; done
echo @@sockets; for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock /var/run/containerd/containerd.sock; do if [ -e "$s" ]; then echo "$s"; fi; done
echo @@rootfs; touch /var/tmp/cis-rootfs-probe 2>&1 || true
echo @@netdev; sed -n '3,$p' /proc/net/dev | cut -d: -f1 | tr -d ' '
echo @@id; id -u; id -g; id -G
echo @@nproc; ulimit -Sp; ulimit -Hp
echo @@ready
while [ ! -e "$dir/release-$1" ]; do sleep 0.1; done
`;

beforeAll(async () => {
  writeFileSync(PROBE, probeScript);
  chmodSync(PROBE, 0o644);
  const eng = await engine();
  config = resolveConfig(
    {
      store: { path: `${project.path}-store` },
      gateway: { auth: { token: TOKEN } },
      agents: {
        defaults: {
          toolPolicies: { exec: { mode: 'allowed', allowedPaths: [project.path, { path: readOnly.path, readOnly: true }] } },
          // Values unlike any default, so the audit sees these settings and not Docker's. (Not a low pids
          // limit: under gVisor it also counts the sandbox kernel's own host threads, about 60 at rest.)
          sandbox: { image: SANDBOX_IMAGE, runtime: TEST_RUNTIME, network: 'none', memoryMb: 200, cpus: 0.5, pidsLimit: 300, tmpfsMb: 16, timeoutMs: 60_000, pool: { size: 0 } },
          files: { scratchMb: 16 },
          sessions: { maxSessions: 1 },
        },
        teams: { cold: {}, warm: { sandbox: { pool: { size: 1 } } } },
      },
    },
    { baseDir: project.path },
    'integration',
  );
  runner = new DockerRunner({ instance, logger: silentLogger, docker });
  ({ service, app, url } = await listenOnEngine(config, runner, eng));
  // As main.ts does at start-up.
  await runner.configurePool(Object.values(config.teams).map((t) => ({ team: t.name, sandbox: t.sandbox, mounts: t.policy.allowedPaths })));
});

afterAll(async () => {
  await app?.close();
  await service?.sessions.closeAll();
  await runner?.close();
  project.remove();
  readOnly.remove();
});

const headers = (team: string) => ({ authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'x-execgate-team': team });

interface Snapshot {
  info: Docker.ContainerInspectInfo;
  /** /proc/<State.Pid>/status on the host: the container's init under runc, gVisor's sandbox kernel under runsc. */
  hostStatus: string;
  /** Namespace ids of that process, and of this test process (the host side). */
  ns: Record<string, { container: string; host: string }>;
  execs: { privileged: boolean; user: string }[];
  /** The limits the host kernel enforces on the container's cgroup (v1 or v2), read from /sys/fs/cgroup. */
  cgroup: { memoryBytes: number; cpuQuotaUs: number; cpuPeriodUs: number; pidsMax: number };
  /** The probe's sections, by name. */
  inside: Record<string, string>;
  scratchVolume?: { Options: Record<string, string> | null; Labels: Record<string, string> | null } | undefined;
}

const NAMESPACES = ['net', 'pid', 'ipc', 'uts', 'mnt', 'user'] as const;

async function capture(containerId: string): Promise<Omit<Snapshot, 'inside'>> {
  const info = await docker.getContainer(containerId).inspect();
  const pid = info.State.Pid;
  expect(pid).toBeGreaterThan(0);
  const hostStatus = readFileSync(`/proc/${pid}/status`, 'utf8');
  const ns = Object.fromEntries(NAMESPACES.map((n) => [n, { container: readlinkSync(`/proc/${pid}/ns/${n}`), host: readlinkSync(`/proc/self/ns/${n}`) }]));
  const execs = [];
  for (const id of info.ExecIDs ?? []) {
    const e = (await docker.getExec(id).inspect()) as unknown as { ProcessConfig: { privileged: boolean; user: string } };
    execs.push({ privileged: e.ProcessConfig.privileged, user: e.ProcessConfig.user });
  }
  const cgroup = cgroupLimits(pid);
  const scratch = info.Mounts.find((m) => m.Type === 'volume');
  const scratchVolume = scratch?.Name ? ((await docker.getVolume(scratch.Name).inspect()) as unknown as Snapshot['scratchVolume']) : undefined;
  return { info, hostStatus, ns, execs, cgroup, scratchVolume };
}

/** The limits of the cgroup a host process is in, as the kernel enforces them (cgroup v1 or v2). */
function cgroupLimits(pid: number): Snapshot['cgroup'] {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n').map((l) => l.split(':'));
  const v1 = (controller: string) => lines.find(([, ctl]) => ctl!.split(',').includes(controller))?.[2];
  const read = (path: string) => readFileSync(path, 'utf8').trim();
  const memV1 = v1('memory');
  if (memV1 !== undefined) {
    const dir = (ctl: string) => join('/sys/fs/cgroup', ctl, v1(ctl)!);
    return {
      memoryBytes: Number(read(join(dir('memory'), 'memory.limit_in_bytes'))),
      cpuQuotaUs: Number(read(join(dir('cpu'), 'cpu.cfs_quota_us'))),
      cpuPeriodUs: Number(read(join(dir('cpu'), 'cpu.cfs_period_us'))),
      pidsMax: Number(read(join(dir('pids'), 'pids.max'))),
    };
  }
  const dir = join('/sys/fs/cgroup', lines.find(([h]) => h === '0')![2]!);
  const [quota, period] = read(join(dir, 'cpu.max')).split(' ');
  return { memoryBytes: Number(read(join(dir, 'memory.max'))), cpuQuotaUs: Number(quota), cpuPeriodUs: Number(period), pidsMax: Number(read(join(dir, 'pids.max'))) };
}

function sections(out: string): Record<string, string> {
  const res: Record<string, string> = {};
  let name = '';
  for (const line of out.split('\n')) {
    const m = /^@@(\w+)$/.exec(line);
    if (m) {
      name = m[1]!;
      res[name] = '';
    } else if (name) res[name] += `${line}\n`;
  }
  return res;
}

/**
 * Starts the probe through `path` (an exec or a session exec), captures the container while the probe holds
 * it, then releases it and checks that the command finished normally.
 */
async function hold(path: string, team: string, body: Record<string, unknown>, containerIdOf?: string): Promise<Snapshot & { containerId: string }> {
  const token = randomUUID();
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: headers(team), body: JSON.stringify({ command: `sh ${PROBE} ${token}`, ...body }) });
  // (Never read a clone of the body first: it ends only when the command does.)
  if (res.status !== 200) throw new Error(`${path} answered ${res.status}: ${await res.text()}`);
  let containerId = containerIdOf ?? '';
  let out = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (onReady = r));
  const reading = readNdjson(res, {
    onEvent: (e) => {
      if (e.type === 'started' && !containerIdOf) containerId = e.containerId as string;
      if (e.type === 'stdout') out += e.data as string;
      if (out.includes('@@ready\n')) onReady();
    },
  });
  await Promise.race([ready, reading.then((events) => Promise.reject(new Error(`the probe ended before it was ready: ${JSON.stringify(events)}`)))]);
  const snap = await capture(containerId);
  writeFileSync(join(project.path, `release-${token}`), '');
  const events = await reading;
  expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
  return { ...snap, containerId, inside: sections(out) };
}

const statusField = (status: string, name: string): string | undefined => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim();

interface MountLine {
  mountPoint: string;
  options: string[];
  optional: string[];
}
const mountinfo = (text: string): MountLine[] =>
  text
    .trim()
    .split('\n')
    .map((line) => {
      const [pre] = line.split(' - ');
      const f = pre!.trim().split(/\s+/);
      return { mountPoint: f[4]!, options: f[5]!.split(','), optional: f.slice(6) };
    });

type Kind = 'one-shot' | 'one-shot with files' | 'warm (pooled)' | 'session';
const snapshots = new Map<Kind, Snapshot>();
const KINDS: Kind[] = ['one-shot', 'one-shot with files', 'warm (pooled)', 'session'];
const hasScratch = (k: Kind) => k === 'one-shot with files' || k === 'session';

describe.each(KINDS)('CIS Docker Benchmark: a %s sandbox', (kind) => {
  let s: Snapshot;
  const team = kind === 'warm (pooled)' ? 'warm' : 'cold';
  const sandbox = () => config.teams[team]!.sandbox;
  const allowed = () => config.teams[team]!.policy.allowedPaths;

  beforeAll(async () => {
    if (kind === 'one-shot') s = await hold('/v1/exec', team, {});
    else if (kind === 'one-shot with files') s = await hold('/v1/exec', team, { files: { 'in.txt': 'x' } });
    else if (kind === 'warm (pooled)') {
      for (let i = 0; i < 200 && runner.pool.idleCount() < 1; i++) await new Promise((r) => setTimeout(r, 50));
      const idle = (await docker.listContainers({ filters: { label: [`${LABEL_INSTANCE}=${instance}`, 'io.execgate.team=warm'], status: ['running'] } })).map((c) => c.Id);
      expect(idle).toHaveLength(1);
      const h = await hold('/v1/exec', team, {});
      // It really was the pre-started container.
      expect(h.containerId).toBe(idle[0]);
      s = h;
    } else {
      const open = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: headers(team), body: '{}' });
      expect(open.status, await open.clone().text()).toBe(201);
      const session = (await open.json()) as { id: string; containerId: string };
      try {
        s = await hold(`/v1/sessions/${session.id}/exec`, team, {}, session.containerId);
      } finally {
        await fetch(`${url}/v1/sessions/${session.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}`, 'x-execgate-team': team } });
      }
    }
    snapshots.set(kind, s);
  });

  it(`runs under this project's runtime (${inject('runtime')})`, () => {
    expect(s.info.HostConfig.Runtime).toBe(inject('runtime'));
  });

  it('5.4: is not privileged', () => {
    expect(s.info.HostConfig.Privileged).toBe(false);
  });

  it('5.3: drops ALL capabilities and adds none (no SYS_ADMIN, NET_ADMIN, NET_RAW, SYS_PTRACE, ...); inside every capability set is empty', () => {
    expect(s.info.HostConfig.CapDrop).toEqual(['ALL']);
    expect(s.info.HostConfig.CapAdd ?? []).toEqual([]);
    for (const which of ['pid1', 'self'] as const) {
      for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd']) expect(statusField(s.inside[which]!, set), `${which} ${set}`).toBe('0000000000000000');
      // gVisor's /proc has no CapAmb line.
      const amb = statusField(s.inside[which]!, 'CapAmb');
      if (!IS_GVISOR || amb !== undefined) expect(amb, `${which} CapAmb`).toBe('0000000000000000');
    }
  });

  it('5.25: no-new-privileges is set, and the processes inside have it (prctl; NoNewPrivs: 1 under runc)', () => {
    expect(s.info.HostConfig.SecurityOpt).toContain('no-new-privileges:true');
    expect(s.inside.nnp!.trim()).toBe('1');
    for (const which of ['pid1', 'self'] as const) {
      const nnp = statusField(s.inside[which]!, 'NoNewPrivs');
      // gVisor's /proc/<pid>/status has no NoNewPrivs line; prctl above answers there.
      if (!IS_GVISOR || nnp !== undefined) expect(nnp, which).toBe('1');
    }
    // The process Docker started on the host (runc: the container's init; runsc: gVisor's sandbox kernel).
    expect(statusField(s.hostStatus, 'NoNewPrivs')).toBe('1');
  });

  it('5.21: seccomp is not unconfined and no confinement is switched off (runc: Seccomp 2 inside; runsc: the sandbox kernel is filtered)', () => {
    for (const opt of s.info.HostConfig.SecurityOpt ?? []) expect(opt).not.toMatch(/unconfined|disable/);
    // Under runc Docker's default profile filters the sandbox's own processes. gVisor does not apply it to
    // them (it implements their system calls itself and reports Seccomp: 0 inside); what reaches the host
    // kernel comes from its sandbox kernel, which runs under its own seccomp filter.
    expect(statusField(s.hostStatus, 'Seccomp')).toBe('2');
    if (!IS_GVISOR) {
      expect(statusField(s.inside.pid1!, 'Seccomp')).toBe('2');
      expect(statusField(s.inside.self!, 'Seccomp')).toBe('2');
    }
  });

  it('5.12: the root filesystem is read-only (inspect, mountinfo, and a write to a world-writable directory fails)', () => {
    expect(s.info.HostConfig.ReadonlyRootfs).toBe(true);
    const root = mountinfo(s.inside.mountinfo!).find((m) => m.mountPoint === '/');
    expect(root?.options).toContain('ro');
    expect(s.inside.rootfs).toMatch(/Read-only file system/);
    // The only writable places besides read-write allowed paths: a size-limited /tmp that cannot hold setuid
    // binaries or devices (and /scratch when there are files).
    expect(Object.keys(s.info.HostConfig.Tmpfs ?? {})).toEqual(['/tmp']);
    expect(s.info.HostConfig.Tmpfs!['/tmp']).toMatch(/(^|,)nosuid(,|$)/);
    expect(s.info.HostConfig.Tmpfs!['/tmp']).toMatch(/(^|,)nodev(,|$)/);
    expect(s.info.HostConfig.Tmpfs!['/tmp']).toMatch(new RegExp(`(^|,)size=${sandbox().tmpfsMb}m(,|$)`));
  });

  it("5.10: memory is limited to the team setting (and the host kernel enforces it), with no swap beyond it and the OOM killer on", () => {
    expect(s.info.HostConfig.Memory).toBe(sandbox().memoryMb * 1024 * 1024);
    expect(s.info.HostConfig.Memory).toBeGreaterThan(0);
    expect(s.cgroup.memoryBytes).toBe(sandbox().memoryMb * 1024 * 1024);
    expect(s.info.HostConfig.MemorySwap).toBe(s.info.HostConfig.Memory);
    expect(s.info.HostConfig.OomKillDisable ?? false).toBe(false);
  });

  it('5.11: CPU is limited to the team setting (and the host kernel enforces it)', () => {
    expect(s.info.HostConfig.NanoCpus).toBe(sandbox().cpus * 1e9);
    expect(s.info.HostConfig.NanoCpus).toBeGreaterThan(0);
    expect(s.cgroup.cpuQuotaUs / s.cgroup.cpuPeriodUs).toBe(sandbox().cpus);
  });

  it('5.28: the number of processes is limited to the team setting (and the host kernel enforces it)', () => {
    if (IS_GVISOR) {
      // The host cgroup also holds the sandbox kernel's own threads (about 8 per task), and reaching it ends
      // the sandbox: it gets room for them, and the sandbox's kernel counts the tasks (RLIMIT_NPROC).
      expect(s.info.HostConfig.PidsLimit).toBe(gvisorHostPids(sandbox().pidsLimit));
      expect(s.cgroup.pidsMax).toBe(gvisorHostPids(sandbox().pidsLimit));
      expect(s.info.HostConfig.Ulimits).toContainEqual({ Name: 'nproc', Soft: sandbox().pidsLimit, Hard: sandbox().pidsLimit });
      // RLIMIT_NPROC, soft and hard, as dash's `ulimit -p` reads it (gVisor has no /proc/self/limits).
      expect(s.inside.nproc).toBe(`${sandbox().pidsLimit}\n${sandbox().pidsLimit}\n`);
    } else {
      expect(s.info.HostConfig.PidsLimit).toBe(sandbox().pidsLimit);
      expect(s.cgroup.pidsMax).toBe(sandbox().pidsLimit);
      // RLIMIT_NPROC would count the uid's processes on the whole host: the cgroup is the limit.
      expect((s.info.HostConfig.Ulimits ?? []).map((u) => u.Name)).not.toContain('nproc');
    }
    expect(s.info.HostConfig.PidsLimit).toBeGreaterThan(0);
  });

  it('5.24: the container stays in its own cgroup under Docker (no CgroupParent), where those limits apply', () => {
    expect(s.info.HostConfig.CgroupParent ?? '').toBe('');
    expect(s.info.HostConfig.Cgroup ?? '').toBe('');
  });

  it("5.9, 5.29: network none: not the host's network and not Docker's default bridge; inside only loopback", () => {
    expect(sandbox().network).toBe('none');
    expect(s.info.HostConfig.NetworkMode).toBe('none');
    expect((s.info.Config as { NetworkDisabled?: boolean }).NetworkDisabled).toBe(true);
    const nets = s.info.NetworkSettings.Networks ?? {};
    expect(Object.keys(nets).filter((n) => n !== 'none')).toEqual([]);
    for (const n of Object.values(nets)) expect(n.IPAddress ?? '').toBe('');
    expect(s.inside.netdev!.trim().split('\n')).toEqual(['lo']);
    // Host side: runc's init and gVisor's sandbox kernel each have a network namespace of their own.
    expect(s.ns.net!.container).not.toBe(s.ns.net!.host);
  });

  it('5.7, 5.8, 5.13: no port is published', () => {
    expect(s.info.HostConfig.PortBindings ?? {}).toEqual({});
    expect(s.info.HostConfig.PublishAllPorts ?? false).toBe(false);
    expect(s.info.NetworkSettings.Ports ?? {}).toEqual({});
  });

  it("5.15: not the host's PID namespace: PID 1 is the container's own init and only its processes are visible", () => {
    expect(s.info.HostConfig.PidMode ?? '').toBe('');
    // The command's shell, or for the sandboxes that wait for their command (warm, files) the POSIX sh running
    // the bootstrap.
    const shell = kind === 'warm (pooled)' || kind === 'one-shot with files' ? '/bin/sh' : '/bin/bash';
    expect(s.inside.pid1cmd!.trim()).toMatch(new RegExp(`^/sbin/docker-init -- ${shell} -c `));
    const inside = s.inside.procs!.trim().split('\n');
    const onHost = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
    expect(inside.length).toBeLessThan(20);
    expect(onHost.length).toBeGreaterThan(inside.length);
    // runc: the container's init is in a PID namespace of its own. runsc: gVisor's sandbox kernel is an
    // ordinary host process, and the sandbox's processes live in the PID namespace gVisor itself implements
    // (checked from inside above).
    if (!IS_GVISOR) expect(s.ns.pid!.container).not.toBe(s.ns.pid!.host);
  });

  it("5.16: not the host's IPC namespace", () => {
    expect(s.info.HostConfig.IpcMode).toBe('private');
    expect(s.ns.ipc!.container).not.toBe(s.ns.ipc!.host);
  });

  it("5.20: not the host's UTS namespace", () => {
    expect(s.info.HostConfig.UTSMode ?? '').toBe('');
    expect(s.ns.uts!.container).not.toBe(s.ns.uts!.host);
  });

  it("5.30: not the host's user namespace mode", () => {
    // Without userns-remap in dockerd, runc's sandbox shares the host's user namespace: the sandbox user is an
    // unprivileged uid with no capabilities (4.1, 5.3). gVisor's sandbox kernel runs in a user namespace of its own.
    expect(s.info.HostConfig.UsernsMode ?? '').toBe('');
    if (IS_GVISOR) expect(s.ns.user!.container).not.toBe(s.ns.user!.host);
  });

  it('4.1: runs as the non-root sandbox user, inside too (uid, gid and groups)', () => {
    const [uid, gid] = sandbox().user.split(':');
    expect(s.info.Config.User).toBe(sandbox().user);
    expect(Number(uid)).toBeGreaterThan(0);
    expect(Number(gid)).toBeGreaterThan(0);
    for (const which of ['pid1', 'self'] as const) {
      expect(statusField(s.inside[which]!, 'Uid')!.split(/\s+/), which).toEqual([uid, uid, uid, uid]);
      expect(statusField(s.inside[which]!, 'Gid')!.split(/\s+/), which).toEqual([gid, gid, gid, gid]);
    }
    const [idU, idG, groups] = s.inside.id!.trim().split('\n');
    expect([idU, idG]).toEqual([uid, gid]);
    expect(groups!.split(' ')).not.toContain('0');
  });

  it('5.22, 5.23: docker exec is never privileged nor root (sessions run each command as an exec; one-shot and warm sandboxes use none)', () => {
    if (kind === 'session') {
      expect(s.execs.length).toBeGreaterThan(0);
      for (const e of s.execs) expect(e).toEqual({ privileged: false, user: sandbox().user });
    } else expect(s.execs).toEqual([]);
  });

  it('5.31: the Docker socket is not mounted and not reachable inside', () => {
    for (const m of s.info.Mounts) {
      expect(m.Source).not.toMatch(/docker\.sock|containerd\.sock/);
      expect(m.Destination).not.toMatch(/docker\.sock|containerd\.sock/);
    }
    for (const b of s.info.HostConfig.Binds ?? []) expect(b).not.toMatch(/\.sock/);
    expect(s.inside.sockets!.trim()).toBe('');
  });

  it('5.5: nothing is mounted but the allowed paths (same path, their mode) and a /scratch volume of its own; no host system directory', () => {
    expect(s.info.HostConfig.Binds ?? []).toEqual([]);
    expect(s.info.HostConfig.VolumesFrom ?? []).toEqual([]);
    const binds = s.info.Mounts.filter((m) => m.Type === 'bind');
    expect(binds.map((m) => ({ source: m.Source, target: m.Destination, rw: m.RW })).sort((a, b) => a.source.localeCompare(b.source))).toEqual(
      allowed()
        .map((a) => ({ source: a.path, target: a.path, rw: !a.readOnly }))
        .sort((a, b) => a.source.localeCompare(b.source)),
    );
    const volumes = s.info.Mounts.filter((m) => m.Type === 'volume');
    expect(volumes.map((m) => m.Destination)).toEqual(hasScratch(kind) ? ['/scratch'] : []);
    if (hasScratch(kind)) {
      expect(volumes[0]!.Driver).toBe('local');
      expect(s.scratchVolume?.Labels?.[LABEL_MANAGED]).toBe('true');
      expect(s.scratchVolume?.Options).toMatchObject({ type: 'tmpfs', device: 'tmpfs' });
      expect(s.scratchVolume?.Options?.o).toMatch(/(^|,)nosuid(,|$)/);
      expect(s.scratchVolume?.Options?.o).toMatch(/(^|,)nodev(,|$)/);
    }
    expect(s.info.Mounts.filter((m) => !['bind', 'volume'].includes(m.Type as string))).toEqual([]);
    const sensitive = ['/', '/boot', '/dev', '/etc', '/home', '/lib', '/lib64', '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/usr', '/var', '/var/lib', '/var/lib/docker', '/var/run'];
    for (const m of binds) {
      expect(sensitive).not.toContain(m.Source.replace(/\/+$/, '') || '/');
      expect(sensitive).not.toContain(m.Destination.replace(/\/+$/, '') || '/');
    }
    // Inside, each allowed path is mounted read-only or read-write as configured.
    const lines = mountinfo(s.inside.mountinfo!);
    for (const a of allowed()) {
      const line = lines.find((l) => l.mountPoint === a.path);
      expect(line, a.path).toBeDefined();
      expect(line!.options).toContain(a.readOnly ? 'ro' : 'rw');
    }
  });

  it('5.19: mount propagation is private: binds are rprivate and nothing inside is a shared mount', () => {
    for (const m of s.info.Mounts.filter((x) => x.Type === 'bind')) expect(m.Propagation).toBe('rprivate');
    const lines = mountinfo(s.inside.mountinfo!);
    for (const l of lines) expect(l.optional.filter((o) => o.startsWith('shared:')), l.mountPoint).toEqual([]);
    for (const a of allowed()) expect(lines.find((l) => l.mountPoint === a.path)!.optional, a.path).toEqual([]);
  });

  it('5.17: no host device is added', () => {
    expect(s.info.HostConfig.Devices ?? []).toEqual([]);
    expect(s.info.HostConfig.DeviceRequests ?? []).toEqual([]);
    expect(s.info.HostConfig.DeviceCgroupRules ?? []).toEqual([]);
  });

  it('5.14: no restart policy: a sandbox that stops stays stopped until the service removes it', () => {
    expect(['', 'no']).toContain(s.info.HostConfig.RestartPolicy?.Name ?? '');
    expect(s.info.HostConfig.RestartPolicy?.MaximumRetryCount ?? 0).toBe(0);
  });
});

describe('after the audit', () => {
  it('every sandbox the audit started is gone once the service closes', async () => {
    expect([...snapshots.keys()].sort()).toEqual([...KINDS].sort());
    await app.close();
    await service.sessions.closeAll();
    await runner.close();
    expect(await docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${instance}`] } })).toEqual([]);
  });
});
