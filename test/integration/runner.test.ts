import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync, mkdirSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import { LABEL_DEADLINE, LABEL_EXEC, LABEL_INSTANCE, LABEL_MANAGED, LABEL_TEAM } from '../../src/runner/container-spec.js';
import type { RunEvent, RunResult, RunSpec } from '../../src/runner/types.js';
import { SANDBOX_IMAGE, TEST_RUNTIME, projectDir, sandboxSettings, silentLogger } from '../support/sandbox.js';

const docker = new Docker();
const instance = `test-${randomUUID().slice(0, 8)}`;
const runner = new DockerRunner({ instance, logger: silentLogger, docker });
const project = projectDir();
const readonlyDir = projectDir('execgate-ro-');

interface Collected {
  events: RunEvent[];
  stdout: string;
  stderr: string;
  order: string[];
  result: RunResult;
}

function spec(command: string, over: Partial<RunSpec> = {}): RunSpec {
  return {
    execId: randomUUID(),
    team: 'default',
    command,
    cwd: project.path,
    env: {},
    mounts: [
      { path: project.path, readOnly: false },
      { path: readonlyDir.path, readOnly: true },
    ],
    sandbox: sandboxSettings(),
    timeoutMs: 20_000,
    ...over,
  };
}

async function collect(s: RunSpec, signal = new AbortController().signal, onEvent?: (e: RunEvent) => void | Promise<void>): Promise<Collected> {
  const gen = runner.run(s, signal);
  const events: RunEvent[] = [];
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const order: string[] = [];
  let next = await gen.next();
  while (!next.done) {
    const e = next.value;
    events.push(e);
    await onEvent?.(e);
    if (e.type === 'output') {
      out[e.stream].push(e.data);
      order.push(`${e.stream}:${e.data.toString()}`);
    }
    next = await gen.next();
  }
  return { events, stdout: Buffer.concat(out.stdout).toString(), stderr: Buffer.concat(out.stderr).toString(), order, result: next.value };
}

async function containersOfInstance(): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${instance}`] } });
}

beforeAll(() => {
  writeFileSync(join(readonlyDir.path, 'data.txt'), 'read me\n');
});

afterAll(async () => {
  await runner.close();
  project.remove();
  readonlyDir.remove();
});

describe('DockerRunner on a real engine', () => {
  // vitest.config.ts runs this directory once per runtime; this proves the project's runtime reached the
  // containers (env → TEST_RUNTIME → sandbox settings → HostConfig.Runtime → the kernel the command sees).
  it("runs the sandbox under this test project's runtime", async () => {
    expect(TEST_RUNTIME).toBe(inject('runtime'));
    let runtime: string | undefined;
    const r = await collect(spec('dmesg 2>/dev/null | head -1; true'), undefined, async (e) => {
      if (e.type === 'started') runtime = (await docker.getContainer(e.containerId).inspect()).HostConfig.Runtime;
    });
    expect(runtime).toBe(inject('runtime'));
    // gVisor's own kernel introduces itself in its log; runc's sandbox may not read the host's (no caps).
    if (inject('runtime') === 'runsc') expect(r.stdout).toMatch(/gVisor/);
    else expect(r.stdout).toBe('');
  });

  it('runs a command, reports started then output then exit 0', async () => {
    const r = await collect(spec('echo hi'));
    expect(r.events[0]).toMatchObject({ type: 'started', image: SANDBOX_IMAGE });
    expect(r.stdout).toBe('hi\n');
    expect(r.result).toMatchObject({ exitCode: 0, timedOut: false, truncated: false, oomKilled: false });
    expect(r.result.error).toBeUndefined();
  });

  // The policy decides on a bash parse; under dash this text is an echo and then `echo DASH` (a second command).
  it('runs the command under bash, the shell the policy parsed it as', async () => {
    const r = await collect(spec(`echo $'\\' ; echo DASH ; #'; echo "$BASH_VERSION" | cut -c1`));
    expect(r.stdout).toBe("' ; echo DASH ; #\n5\n");
  });

  it('keeps stdout and stderr separate and each in order', async () => {
    const r = await collect(spec('for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; sleep 0.05; done'));
    expect(r.stdout).toBe('out1\nout2\nout3\nout4\nout5\n');
    expect(r.stderr).toBe('err1\nerr2\nerr3\nerr4\nerr5\n');
  });

  it('reports the exit code', async () => {
    expect((await collect(spec('exit 3'))).result.exitCode).toBe(3);
    expect((await collect(spec('false'))).result.exitCode).toBe(1);
  });

  it('passes stdin and closes it', async () => {
    const r = await collect(spec('tr a-z A-Z; echo "[eof]"', { stdin: Buffer.from('hello stdin\n') }));
    expect(r.stdout).toBe('HELLO STDIN\n[eof]\n');
  });

  it('gives EOF on stdin when none is sent', async () => {
    const r = await collect(spec('cat; echo done'));
    expect(r.stdout).toBe('done\n');
  });

  it('passes env and runs in cwd', async () => {
    mkdirSync(join(project.path, 'sub'), { recursive: true });
    chownSync(join(project.path, 'sub'), 1000, 1000);
    const r = await collect(spec('echo "$GREETING"; pwd', { env: { GREETING: 'hello env' }, cwd: join(project.path, 'sub') }));
    expect(r.stdout).toBe(`hello env\n${join(project.path, 'sub')}\n`);
  });

  it('writes to a read-write allowed path land on the host, owned by the sandbox user', async () => {
    const r = await collect(spec('echo written > out.txt && id -u'));
    expect(r.result.exitCode).toBe(0);
    expect(r.stdout).toBe('1000\n');
    expect(readFileSync(join(project.path, 'out.txt'), 'utf8')).toBe('written\n');
    expect(statSync(join(project.path, 'out.txt')).uid).toBe(1000);
  });

  it('a read-only allowed path can be read but not written', async () => {
    const r = await collect(spec(`cat ${readonlyDir.path}/data.txt; echo x > ${readonlyDir.path}/new.txt`));
    expect(r.stdout).toBe('read me\n');
    expect(r.stderr).toMatch(/Read-only file system/);
    expect(r.result.exitCode).not.toBe(0);
    expect(existsSync(join(readonlyDir.path, 'new.txt'))).toBe(false);
  });

  it('nothing of the host outside the allowed paths is visible', async () => {
    const secret = projectDir('execgate-secret-');
    try {
      writeFileSync(join(secret.path, 'secret.txt'), 'top secret');
      // find, not ls: GNU ls stats with statx(AT_NO_AUTOMOUNT), which gVisor's Debian release rejects (EINVAL).
      const r = await collect(spec(`cat ${secret.path}/secret.txt; find /var/tmp -mindepth 1 -maxdepth 1 -printf '%f\\n'; cat /etc/hostname; test -e /var/run/docker.sock && echo SOCKET`));
      expect(r.stdout).not.toContain('top secret');
      expect(r.stdout).not.toContain('SOCKET');
      // /var/tmp holds only the mount points of the allowed paths.
      const listed = r.stdout.split('\n').filter((l) => l.startsWith('execgate-'));
      expect(listed.sort()).toEqual([project.path.split('/').pop(), readonlyDir.path.split('/').pop()].sort());
    } finally {
      secret.remove();
    }
  });

  it('the root filesystem is read-only, /tmp is writable, the user is not root and has no capabilities', async () => {
    // /var/tmp is world-writable in the image: only the read-only root can refuse the write (a root-owned
    // directory would also refuse it by permissions, and gVisor checks those first).
    const r = await collect(spec('touch /var/tmp/rootfs-probe 2>&1; echo tmp > /tmp/t && cat /tmp/t; id -u; grep CapEff /proc/self/status'));
    expect(r.stdout).toMatch(/Read-only file system/);
    expect(r.stdout).toContain('tmp\n');
    expect(r.stdout).toContain('1000\n');
    expect(r.stdout).toMatch(/CapEff:\s+0000000000000000/);
  });

  // No network, the memory hog, the fork bomb (and a time-out of a command that ignores SIGTERM, 1 GB of
  // output, background processes) are promises of the escape suite: test/integration/escape.test.ts.
  it('a time-out kills the container and reports timedOut', async () => {
    const r = await collect(spec('echo before; sleep 30; echo after', { timeoutMs: 1000 }));
    expect(r.stdout).toBe('before\n');
    expect(r.result.timedOut).toBe(true);
    expect(r.result.durationMs).toBeLessThan(15_000);
  });

  it('output beyond maxOutputBytes stops the container and reports truncated', async () => {
    const r = await collect(spec('yes 0123456789abcdef', { sandbox: sandboxSettings({ maxOutputBytes: 100_000 }) }));
    expect(r.result.truncated).toBe(true);
    expect(r.stdout.length).toBe(100_000);
    expect(r.result.timedOut).toBe(false);
  });

  it('aborting (client disconnect) ends the container', async () => {
    const ac = new AbortController();
    let containerId = '';
    const r = await collect(spec('echo started; sleep 30'), ac.signal, (e) => {
      if (e.type === 'started') containerId = e.containerId;
      if (e.type === 'output') ac.abort();
    });
    expect(r.result.durationMs).toBeLessThan(15_000);
    await runner.close();
    await expect(docker.getContainer(containerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  it('labels every container and removes it after the run', async () => {
    const s = spec('sleep 0.5', { team: 'data' });
    let labels: Record<string, string> = {};
    await collect(s, undefined, async (e) => {
      if (e.type === 'started') labels = (await docker.getContainer(e.containerId).inspect()).Config.Labels;
    });
    expect(labels).toMatchObject({ [LABEL_MANAGED]: 'true', [LABEL_INSTANCE]: instance, [LABEL_EXEC]: s.execId, [LABEL_TEAM]: 'data' });
    expect(Number(labels[LABEL_DEADLINE])).toBeGreaterThan(Date.now());
    await runner.close();
    expect(await containersOfInstance()).toEqual([]);
  });

  it('the reaper removes a planted leftover of this instance and an expired one of another, and spares others', async () => {
    const mk = (labels: Record<string, string>) =>
      docker.createContainer({ Image: SANDBOX_IMAGE, Cmd: ['sleep', '60'], Labels: { [LABEL_MANAGED]: 'true', ...labels }, HostConfig: { NetworkMode: 'none', Runtime: TEST_RUNTIME } });
    const mine = await mk({ [LABEL_INSTANCE]: instance, [LABEL_EXEC]: 'planted', [LABEL_DEADLINE]: String(Date.now() + 3_600_000) });
    const expired = await mk({ [LABEL_INSTANCE]: 'other', [LABEL_EXEC]: 'old', [LABEL_DEADLINE]: String(Date.now() - 1000) });
    const others = await mk({ [LABEL_INSTANCE]: 'other', [LABEL_EXEC]: 'live', [LABEL_DEADLINE]: String(Date.now() + 3_600_000) });
    try {
      await mine.start();
      expect(await runner.reap()).toBe(2);
      await expect(mine.inspect()).rejects.toMatchObject({ statusCode: 404 });
      await expect(expired.inspect()).rejects.toMatchObject({ statusCode: 404 });
      await expect(others.inspect()).resolves.toBeTruthy();
    } finally {
      await others.remove({ force: true });
    }
  });
});
