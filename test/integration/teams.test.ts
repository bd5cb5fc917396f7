import { randomUUID } from 'node:crypto';
import Docker from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { LABEL_TEAM, gvisorHostPids, teamNetworkName } from '../../src/runner/container-spec.js';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import type { RunEvent, RunResult, RunSpec } from '../../src/runner/types.js';
import { IS_GVISOR, TEST_RUNTIME, projectDir, sandboxSettings, silentLogger } from '../support/sandbox.js';

const docker = new Docker();
const runner = new DockerRunner({ instance: `teams-${randomUUID().slice(0, 8)}`, logger: silentLogger, docker });
const project = projectDir();
const suffix = randomUUID().slice(0, 6);
const teamA = `a${suffix}`;
const teamB = `b${suffix}`;

afterAll(async () => {
  await runner.close();
  for (const t of [teamA, teamB, 'web']) await docker.getNetwork(teamNetworkName(t)).remove().catch(() => undefined);
  project.remove();
});

const spec = (team: string, command: string, over: Partial<RunSpec['sandbox']> = {}): RunSpec => ({
  execId: randomUUID(),
  team,
  command,
  cwd: project.path,
  env: {},
  mounts: [{ path: project.path, readOnly: false }],
  sandbox: sandboxSettings(over),
  timeoutMs: 30_000,
});

async function drive(s: RunSpec, signal?: AbortSignal, onEvent?: (e: RunEvent) => Promise<void> | void): Promise<{ out: string; result: RunResult }> {
  const gen = runner.run(s, signal ?? new AbortController().signal);
  let out = '';
  for (;;) {
    const n = await gen.next();
    if (n.done) return { out, result: n.value };
    if (n.value.type === 'output') out += n.value.data.toString();
    await onEvent?.(n.value);
  }
}

describe('per-team sandboxes on a real engine', () => {
  it("applies the team's sandbox settings to the container it creates", async () => {
    let info: Docker.ContainerInspectInfo | undefined;
    const { result } = await drive(spec('web', 'sleep 0.3', { memoryMb: 300, pidsLimit: 77, cpus: 0.5, user: '1234:1234', tmpfsMb: 16 }), undefined, async (e) => {
      if (e.type === 'started') info = await docker.getContainer(e.containerId).inspect();
    });
    expect(result.exitCode).toBe(0);
    expect(info!.Config.Labels[LABEL_TEAM]).toBe('web');
    expect(info!.Config.User).toBe('1234:1234');
    expect(info!.HostConfig).toMatchObject({ Memory: 300 * 1024 * 1024, MemorySwap: 300 * 1024 * 1024, PidsLimit: IS_GVISOR ? gvisorHostPids(77) : 77, NanoCpus: 500_000_000, NetworkMode: 'none', ReadonlyRootfs: true, CapDrop: ['ALL'], Init: true, Privileged: false });
    expect(info!.HostConfig.Tmpfs).toEqual({ '/tmp': 'rw,nosuid,nodev,size=16m,mode=1777' });
  });

  // gVisor here is registered with `--network=none` (ENVIRONMENT.md: runsc refuses to start without it): its
  // sandboxes have loopback only, whatever Docker network they join. Under such a runtime a team network
  // reaches nothing, its own team included; the isolation between teams holds either way.
  it('two networked teams each get their own network and cannot reach each other (a runtime sealed with --network=none reaches nothing)', async () => {
    const runtimes = ((await docker.info()) as { Runtimes?: Record<string, { runtimeArgs?: string[] }> }).Runtimes ?? {};
    const sealed = (runtimes[TEST_RUNTIME]?.runtimeArgs ?? []).includes('--network=none');
    const server = new AbortController();
    let ip = '';
    let serverUp: () => void = () => undefined;
    const up = new Promise<void>((r) => (serverUp = r));
    const serving = drive(spec(teamA, 'echo ready; exec python3 -m http.server 8000 --bind 0.0.0.0 --directory /tmp', { network: 'team' }), server.signal, async (e) => {
      if (e.type === 'started') {
        const info = await docker.getContainer(e.containerId).inspect();
        ip = info.NetworkSettings.Networks[teamNetworkName(teamA)]!.IPAddress;
      }
      if (e.type === 'output' && e.data.toString().includes('ready')) serverUp();
    });
    await up;
    expect(ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const probe = `for i in 1 2 3 4 5 6 7 8 9 10; do curl -s -o /dev/null -m 2 -w '%{http_code}' http://${ip}:8000/ && exit 0; sleep 0.3; done; echo unreachable`;
    // Positive control: the same team reaches it (unless the runtime has no network at all).
    const same = await drive(spec(teamA, probe, { network: 'team' }));
    if (sealed) expect(same.out).toMatch(/^(000)*unreachable\n$/);
    else expect(same.out).toBe('200');
    // Another networked team does not.
    const other = await drive(spec(teamB, `curl -s -o /dev/null -m 3 -w '%{http_code}' http://${ip}:8000/ || echo unreachable`, { network: 'team' }));
    expect(other.out).toContain('unreachable');
    // Nor does a team without a network.
    const none = await drive(spec('web', `curl -s -o /dev/null -m 3 http://${ip}:8000/ || echo unreachable`));
    expect(none.out).toContain('unreachable');
    server.abort();
    await serving;
    const nets = await docker.listNetworks({ filters: { label: [`${LABEL_TEAM}=${teamA}`] } });
    expect(nets.map((n) => n.Name)).toEqual([teamNetworkName(teamA)]);
  });
});
