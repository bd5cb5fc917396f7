import { randomUUID } from 'node:crypto';
import Docker from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import type { SandboxSettings } from '../../src/config/load.js';
import { LABEL_INSTANCE } from '../../src/runner/container-spec.js';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import type { RunEvent, RunResult, RunSpec } from '../../src/runner/types.js';
import { BOOTSTRAP, BOOTSTRAP_SHELL } from '../../src/runner/warm.js';
import { SANDBOX_IMAGE, projectDir, sandboxSettings, silentLogger } from '../support/sandbox.js';

const docker = new Docker();
const project = projectDir();
const runners: DockerRunner[] = [];

function newRunner(instance = `pool-${randomUUID().slice(0, 8)}`): DockerRunner {
  const r = new DockerRunner({ instance, logger: silentLogger, docker });
  runners.push(r);
  return r;
}

afterAll(async () => {
  for (const r of runners) await r.close();
  project.remove();
});

const pooled = (over: Partial<SandboxSettings> = {}) => sandboxSettings({ pool: { size: 2, maxIdleMs: 600_000 }, ...over });
const mounts = [{ path: project.path, readOnly: false }];

function spec(command: string, sandbox: SandboxSettings, over: Partial<RunSpec> = {}): RunSpec {
  return { execId: randomUUID(), team: 'pool', command, cwd: project.path, env: {}, mounts, sandbox, timeoutMs: 20_000, ...over };
}

type Started = Extract<RunEvent, { type: 'started' }>;

async function drive(runner: DockerRunner, s: RunSpec): Promise<{ stdout: string; stderr: string; containerId: string; started?: Started; result: RunResult }> {
  const gen = runner.run(s, new AbortController().signal);
  const out = { stdout: '', stderr: '' };
  let started: Started | undefined;
  for (;;) {
    const n = await gen.next();
    if (n.done) return { ...out, containerId: started?.containerId ?? '', ...(started ? { started } : {}), result: n.value };
    const e: RunEvent = n.value;
    if (e.type === 'started') started = e;
    else out[e.stream] += e.data.toString();
  }
}

async function warmed(runner: DockerRunner, n: number): Promise<void> {
  for (let i = 0; i < 200 && runner.pool.idleCount() < n; i++) await new Promise((r) => setTimeout(r, 50));
  expect(runner.pool.idleCount()).toBe(n);
}

const idleIds = async (instance: string) =>
  (await docker.listContainers({ filters: { label: [`${LABEL_INSTANCE}=${instance}`], status: ['running'] } })).map((c) => c.Id);

describe('warm pool on a real engine', () => {
  it('runs a command in a pre-started container: output, stdin, env, cwd, exit code, streams apart', async () => {
    const instance = `pool-${randomUUID().slice(0, 8)}`;
    const runner = newRunner(instance);
    const sandbox = pooled();
    await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
    await warmed(runner, 2);
    const before = await idleIds(instance);
    // The waiting shell is the image's POSIX sh; the command itself runs under bash (below).
    expect((await docker.getContainer(before[0]!).inspect()).Config.Cmd).toEqual([BOOTSTRAP_SHELL, '-c', BOOTSTRAP]);
    const r = await drive(runner, spec(`printf 'no newline'; echo " $GREETING" >&2; pwd >&2; tr a-z A-Z; exit 7`, sandbox, { env: { GREETING: "it's here" }, stdin: Buffer.from('quiet\n') }));
    expect(before).toContain(r.containerId);
    expect(r.stdout).toBe('no newlineQUIET\n');
    expect(r.stderr).toBe(` it's here\n${project.path}\n`);
    expect(r.result).toMatchObject({ exitCode: 7, timedOut: false, truncated: false, pool: 'hit' });
    expect(runner.pool.hits).toBe(1);
    // Under bash, the shell the policy parsed it as (dash would run `echo DASH` as a second command).
    const b = await drive(runner, spec(`echo $'\\' ; echo DASH ; #'`, sandbox));
    expect(b.stdout).toBe("' ; echo DASH ; #\n");
  });

  it('a multi-line script with quotes and backslashes arrives intact', async () => {
    const runner = newRunner();
    const sandbox = pooled({ pool: { size: 1, maxIdleMs: 600_000 } });
    await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
    await warmed(runner, 1);
    const r = await drive(runner, spec(`x='a "b" \\c'\nfor i in 1 2; do\n  printf '%s\\n' "$x $i"\ndone`, sandbox));
    expect(r.stdout).toBe('a "b" \\c 1\na "b" \\c 2\n');
    expect(runner.pool.hits).toBe(1);
  });

  it('a pooled container is never used twice, and files in /tmp never reach the next command', async () => {
    const instance = `pool-${randomUUID().slice(0, 8)}`;
    const runner = newRunner(instance);
    const sandbox = pooled();
    await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
    await warmed(runner, 2);
    const ids = new Set<string>();
    const first = await drive(runner, spec('echo secret > /tmp/left-behind; ls /tmp', sandbox));
    ids.add(first.containerId);
    for (let i = 0; i < 4; i++) {
      await warmed(runner, 2);
      const r = await drive(runner, spec('cat /tmp/left-behind 2>/dev/null || echo clean', sandbox));
      expect(r.stdout).toBe('clean\n');
      expect(ids.has(r.containerId)).toBe(false);
      ids.add(r.containerId);
    }
    expect(ids.size).toBe(5);
    expect(runner.pool.hits).toBe(5);
    // Used containers are removed.
    await new Promise((r) => setTimeout(r, 500));
    const running = await idleIds(instance);
    for (const id of ids) expect(running).not.toContain(id);
  });

  /** Container events of one instance, as they come: id, action, and the exit code of `die`. */
  async function containerEvents(instance: string) {
    const stream = (await docker.getEvents({ filters: { type: ['container'], label: [`${LABEL_INSTANCE}=${instance}`] } })) as NodeJS.ReadableStream & { destroy(): void };
    const seen: { id: string; Action: string; exitCode?: string }[] = [];
    let text = '';
    stream.on('data', (d: Buffer) => {
      text += d.toString();
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
        const e = JSON.parse(text.slice(0, nl)) as { id: string; Action: string; Actor: { Attributes: Record<string, string> } };
        text = text.slice(nl + 1);
        seen.push({ id: e.id, Action: e.Action, exitCode: e.Actor.Attributes.exitCode });
      }
    });
    const actions = async (id: string) => {
      for (let i = 0; i < 200 && !seen.some((e) => e.id === id && e.Action === 'destroy'); i++) await new Promise((r) => setTimeout(r, 50));
      return seen.filter((e) => e.id === id);
    };
    return { actions, stop: () => stream.destroy() };
  }

  it("a finished command's container exits on its own before it is removed: the engine never has to kill it", async () => {
    const instance = `pool-${randomUUID().slice(0, 8)}`;
    const runner = newRunner(instance);
    const sandbox = pooled({ pool: { size: 6, maxIdleMs: 600_000 } });
    await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
    await warmed(runner, 6);
    const events = await containerEvents(instance);
    try {
      // Removal right after the answer used to race the shell's exit and lose nearly every time: the engine
      // logged a `kill` and ran the runtime once more per container.
      const runs = await Promise.all([
        ...Array.from({ length: 6 }, (_, i) => drive(runner, spec(`echo warm${i}`, sandbox))),
        drive(runner, spec('echo cold', pooled({ pool: { size: 0, maxIdleMs: 1 }, memoryMb: 300 }))),
      ]);
      expect(runs.map((r) => r.stdout)).toEqual([...Array.from({ length: 6 }, (_, i) => `warm${i}\n`), 'cold\n']);
      expect(runner.pool.hits).toBe(6);
      for (const r of runs) {
        const seen = await events.actions(r.containerId);
        const actions = seen.map((e) => e.Action);
        // die with exit 0 (the bootstrap's last printf; docker-init ends when that shell does), then destroy;
        // never a kill.
        expect(actions).not.toContain('kill');
        expect(seen.find((e) => e.Action === 'die')?.exitCode).toBe('0');
        expect(actions.indexOf('die')).toBeGreaterThanOrEqual(0);
        expect(actions.indexOf('die')).toBeLessThan(actions.indexOf('destroy'));
      }
    } finally {
      events.stop();
    }
  });

  it('time-outs and output caps still kill a pooled container', async () => {
    const runner = newRunner();
    const sandbox = pooled({ maxOutputBytes: 50_000 });
    await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
    await warmed(runner, 2);
    const slow = await drive(runner, spec('echo before; sleep 30', sandbox, { timeoutMs: 1000 }));
    expect(slow.stdout).toBe('before\n');
    expect(slow.result.timedOut).toBe(true);
    await warmed(runner, 2);
    const loud = await drive(runner, spec('yes abcdefgh', sandbox));
    expect(loud.result.truncated).toBe(true);
    expect(loud.stdout.length).toBe(50_000);
    expect(runner.pool.hits).toBe(2);
  });

  it('a pool key change (new limits on reload) drains and replaces the old containers', async () => {
    const instance = `pool-${randomUUID().slice(0, 8)}`;
    const runner = newRunner(instance);
    await runner.configurePool([{ team: 'pool', sandbox: pooled({ memoryMb: 256 }), mounts }]);
    await warmed(runner, 2);
    const old = await idleIds(instance);
    await runner.configurePool([{ team: 'pool', sandbox: pooled({ memoryMb: 300 }), mounts }]);
    await warmed(runner, 2);
    for (let i = 0; i < 50 && (await idleIds(instance)).some((id) => old.includes(id)); i++) await new Promise((r) => setTimeout(r, 100));
    const now = await idleIds(instance);
    expect(now.filter((id) => old.includes(id))).toEqual([]);
    const info = await docker.getContainer(now[0]!).inspect();
    expect(info.HostConfig.Memory).toBe(300 * 1024 * 1024);
  });

  it('a rebuilt image (its tag moved) changes the key: the old containers are drained, the new ones run the new image', async () => {
    const instance = `pool-${randomUUID().slice(0, 8)}`;
    const runner = newRunner(instance);
    const tag = `pool-${randomUUID().slice(0, 8)}`;
    const image = `execgate/pool-rebuild:${tag}`;
    // "Rebuilt": a commit of an unstarted container of the sandbox image, with one more ENV, under the same tag.
    const built: string[] = [];
    const rebuild = async (generation: string) => {
      const c = await docker.createContainer({ Image: SANDBOX_IMAGE, Cmd: ['true'] });
      try {
        const id = ((await c.commit({ repo: 'execgate/pool-rebuild', tag, changes: [`ENV GENERATION=${generation}`] })) as { Id: string }).Id;
        built.push(id);
        return id;
      } finally {
        await c.remove({ force: true });
      }
    };
    try {
      const first = await rebuild('one');
      const sandbox = pooled({ image });
      await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
      await warmed(runner, 2);
      const old = await idleIds(instance);
      for (const id of old) expect((await docker.getContainer(id).inspect()).Image).toBe(first);
      const second = await rebuild('two');
      // The reaper's tick forgets the resolved image ids and sets the pools again.
      await runner.reap();
      for (let i = 0; i < 100 && (await idleIds(instance)).some((id) => old.includes(id)); i++) await new Promise((r) => setTimeout(r, 100));
      await warmed(runner, 2);
      const now = await idleIds(instance);
      expect(now.filter((id) => old.includes(id))).toEqual([]);
      for (const id of now) expect((await docker.getContainer(id).inspect()).Image).toBe(second);
      const r = await drive(runner, spec('echo "$GENERATION"', sandbox));
      expect(r.result.pool).toBe('hit');
      expect(now).toContain(r.containerId);
      expect(r.stdout).toBe('two\n');
    } finally {
      await runner.close();
      for (const id of built) await docker.getImage(id).remove({ force: true }).catch(() => undefined);
    }
  });

  it('when Docker fails to start pool containers the breaker opens and requests take the cold path', async () => {
    const runner = newRunner();
    (runner as unknown as { createWarm: () => Promise<never> }).createWarm = async () => {
      throw new Error('injected Docker failure');
    };
    const sandbox = pooled();
    await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
    for (let i = 0; i < 100 && !runner.pool.breakerOpen; i++) await new Promise((r) => setTimeout(r, 50));
    expect(runner.pool.breakerOpen).toBe(true);
    expect(runner.poolBreakerOpen()).toBe(true);
    const r = await drive(runner, spec('echo cold', sandbox));
    expect(r.stdout).toBe('cold\n');
    expect(r.result).toMatchObject({ exitCode: 0, pool: 'miss' });
    expect(runner.pool.hits).toBe(0);
  });

  it('a run says how it got its container: a big command bypasses the pool, a team without one says nothing, a failure before any container missed', async () => {
    const runner = newRunner();
    const sandbox = pooled({ pool: { size: 1, maxIdleMs: 600_000 } });
    await runner.configurePool([{ team: 'pool', sandbox, mounts }]);
    await warmed(runner, 1);
    expect(runner.poolBreakerOpen()).toBe(false);
    // 32 KiB of command and env or more goes cold: the warm protocol sends the script as one line. Bytes
    // count: 11 Ki euro signs are 33 KiB.
    for (const filler of ['x'.repeat(33 * 1024), '€'.repeat(11 * 1024)]) {
      const big = await drive(runner, spec(`: ${filler}; echo big`, sandbox));
      expect(big.stdout).toBe('big\n');
      expect(big.result).toMatchObject({ exitCode: 0, pool: 'bypass' });
      expect(big.started?.pool).toBe('bypass');
    }
    expect(runner.pool.idleCount()).toBe(1);
    const hit = await drive(runner, spec('echo warm', sandbox));
    expect(hit.result).toMatchObject({ exitCode: 0, pool: 'hit' });
    expect(hit.started?.pool).toBe('hit');
    const none = await drive(runner, spec('echo cold', sandboxSettings(), { team: 'nopool' }));
    expect(none.stdout).toBe('cold\n');
    expect(none.result.pool).toBeUndefined();
    expect(none.started).toBeDefined();
    expect(none.started?.pool).toBeUndefined();
    // A run that fails before any container (its image is gone) missed the pool.
    const gone = await drive(runner, spec('echo never', pooled({ image: `execgate/no-such-image:${randomUUID().slice(0, 8)}` })));
    expect(gone.result).toMatchObject({ error: { code: 'image_missing' }, pool: 'miss' });
    expect(gone.started).toBeUndefined();
  });

  it("pool containers are gone after shutdown, and after a crash the next instance's reaper removes them", async () => {
    const instance = `pool-${randomUUID().slice(0, 8)}`;
    const a = new DockerRunner({ instance, logger: silentLogger, docker });
    await a.configurePool([{ team: 'pool', sandbox: pooled(), mounts }]);
    await warmed(a, 2);
    await a.close();
    expect(await docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${instance}`] } })).toEqual([]);

    const crashed = new DockerRunner({ instance, logger: silentLogger, docker });
    await crashed.configurePool([{ team: 'pool', sandbox: pooled(), mounts }]);
    await warmed(crashed, 2);
    // "Crash": the process is gone without closing; a new one with the same instance id starts.
    const next = newRunner(instance);
    expect(await next.reap()).toBe(2);
    expect(await docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${instance}`] } })).toEqual([]);
    await crashed.pool.close(); // stop its refills (its containers are already gone)
  });
});
