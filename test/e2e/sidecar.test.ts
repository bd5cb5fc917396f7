import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

// The registry is out of reach here, so testcontainers' reaper (Ryuk, an image it would pull) is off; this
// file removes what it starts itself, and checks that nothing of execgate's outlives the service.
process.env.TESTCONTAINERS_RYUK_DISABLED = 'true';
const { GenericContainer, Wait } = await import('testcontainers');
type StartedTestContainer = Awaited<ReturnType<InstanceType<typeof GenericContainer>['start']>>;

/**
 * The shipped image, as deploy/compose.yaml runs it: built from ./Dockerfile with testcontainers, started
 * with the Docker socket, the project directory at the same path as on the host, the compose file's
 * hardening (read-only root, caps dropped, no-new-privileges, the socket's group added), and driven over
 * HTTP through a real approval. The only test of the image itself.
 */

const root = join(import.meta.dirname, '../..');
const compose = parseYaml(readFileSync(join(root, 'deploy/compose.yaml'), 'utf8')) as { services: Record<string, Record<string, unknown>> };
const service = compose.services.execgate!;
const IMAGE = 'execgate/execgate:e2e';
const AGENT = 'e2e-agent-token-0123456789';
const APPROVER = 'e2e-approver-token-0123456789';
const INSTANCE = `e2e${process.pid}`;

/** GenericContainer with the settings compose has and testcontainers does not: read_only, group_add, cpu_shares. */
class ComposeLikeContainer extends GenericContainer {
  constructor(
    image: string,
    private readonly extra: { readOnly: boolean; groupAdd: string[]; cpuShares: number | undefined },
  ) {
    super(image);
  }
  protected override async beforeContainerCreated(): Promise<void> {
    this.hostConfig.ReadonlyRootfs = this.extra.readOnly;
    this.hostConfig.GroupAdd = this.extra.groupAdd;
    if (this.extra.cpuShares !== undefined) this.hostConfig.CpuShares = this.extra.cpuShares;
  }
}

const docker = new Docker();
let project: string;
let work: string;
let container: StartedTestContainer | undefined;
let url: string;

const call = async (method: string, path: string, token: string, body?: unknown, accept = 'application/x-ndjson') => {
  const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, accept, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : null });
  return { status: res.status, text: await res.text() };
};
const lines = (text: string) => text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/execgate-e2e-');
  // The project: same absolute path on the host, in the service container and in every sandbox.
  project = join(work, 'project');
  execFileSync('mkdir', ['-p', project]);
  chownSync(project, 1000, 1000);
  writeFileSync(join(project, 'README'), 'the project\n');
  chownSync(join(project, 'README'), 1000, 1000);

  // deploy/execgate.yaml with this test's project path (and a rule that asks, to exercise an approval).
  const config = parseYaml(readFileSync(join(root, 'deploy/execgate.yaml'), 'utf8')) as { agents: { defaults: { toolPolicies: { exec: { allowedPaths: string[]; rules: unknown[] } }; sandbox: Record<string, unknown> } } };
  config.agents.defaults.toolPolicies.exec.allowedPaths = [project];
  config.agents.defaults.toolPolicies.exec.rules.push({ name: 'releases ask', pattern: '^echo release\\b', action: 'ask' });
  config.agents.defaults.sandbox.pool = { size: 0, maxIdleMs: 1000 };
  writeFileSync(join(work, 'config.yaml'), stringifyYaml(config));

  // The build context: sources, dist and production node_modules prepared on the host (no registry here).
  const ctx = join(work, 'ctx');
  execFileSync('bash', [join(root, 'scripts/service-context.sh'), ctx], { stdio: ['ignore', 'ignore', 'inherit'] });
  await GenericContainer.fromDockerfile(ctx).withBuildArgs({ BASE: 'execgate/node:20-bookworm' }).build(IMAGE, { deleteOnExit: false });

  const socketGid = String(statSync('/var/run/docker.sock').gid);
  const volumes = service.volumes as string[];
  expect(volumes).toContain('/var/run/docker.sock:/var/run/docker.sock');
  container = await new ComposeLikeContainer(IMAGE, { readOnly: service.read_only === true, groupAdd: [socketGid], cpuShares: service.cpu_shares as number | undefined })
    .withCommand(service.command as string[])
    .withEnvironment({ EXECGATE_AGENT_TOKEN: AGENT, EXECGATE_APPROVER_TOKEN: APPROVER, EXECGATE_INSTANCE: INSTANCE })
    .withHostname(service.hostname as string)
    .withBindMounts([
      { source: '/var/run/docker.sock', target: '/var/run/docker.sock', mode: 'rw' },
      { source: join(work, 'config.yaml'), target: '/etc/execgate/config.yaml', mode: 'ro' },
      { source: project, target: project, mode: 'rw' },
    ])
    .withTmpFs(Object.fromEntries((service.tmpfs as string[]).map((p) => [p, 'rw,size=64m'])))
    .withDroppedCapabilities(...(service.cap_drop as string[]))
    .withSecurityOpt(...(service.security_opt as string[]))
    .withExposedPorts(8787)
    .withWaitStrategy(Wait.forHttp('/readyz', 8787).forStatusCode(200))
    .withStartupTimeout(60_000)
    .start();
  url = `http://${container.getHost()}:${container.getMappedPort(8787)}`;
}, 300_000);

afterAll(async () => {
  try {
    if (container) {
      const id = container.getId();
      // docker stop: SIGTERM, the service drains and removes its sandboxes.
      await container.stop({ timeout: 20_000, remove: false });
      const info = await docker.getContainer(id).inspect();
      expect(info.State.ExitCode, 'the service exits 0 after draining').toBe(0);
      await docker.getContainer(id).remove({ v: true });
      const left = await docker.listContainers({ all: true, filters: { label: [`io.execgate.instance=${INSTANCE}`] } });
      expect(left.map((c) => c.Id), 'sandboxes outlived the service').toEqual([]);
    }
  } finally {
    await docker.getImage(IMAGE).remove().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}, 120_000);

describe('the service image as a sidecar (deploy/compose.yaml)', () => {
  it('compose keeps the socket away from the agent and mounts the project at the same path in both', () => {
    const agent = compose.services.agent!;
    expect(JSON.stringify(agent)).not.toContain('docker.sock');
    const same = (v: unknown) => typeof v === 'object' && v !== null && (v as { source?: string }).source === (v as { target?: string }).target;
    expect((agent.volumes as unknown[]).some(same)).toBe(true);
    expect((service.volumes as unknown[]).some(same)).toBe(true);
    expect(service.read_only).toBe(true);
    expect(service.cap_drop).toEqual(['ALL']);
    expect(service.hostname, 'a stable instance id across container re-creation').toBe('execgate');
    expect(service.cpu_shares, 'the service outweighs a sandbox (1024) for CPU').toBeGreaterThan(1024);
  });

  it('runs as a non-root user, is ready, and serves its API description', async () => {
    const info = await docker.getContainer(container!.getId()).inspect();
    expect(info.Config.User).toBe('10001:10001');
    expect(info.HostConfig.ReadonlyRootfs).toBe(true);
    expect(info.HostConfig.CpuShares).toBe(service.cpu_shares);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', runtimes: expect.arrayContaining(['runc']) });
    const doc = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toContain('/v1/exec');
  });

  it('runs an allowed command in a sandbox that writes into the shared project as the project\'s owner', async () => {
    const r = await call('POST', '/v1/exec', AGENT, { command: 'cat README && echo made-here > from-sandbox.txt && id -u' });
    expect(r.status).toBe(200);
    const events = lines(r.text);
    const out = events.filter((e) => e.type === 'stdout').map((e) => e.data).join('');
    expect(out).toContain('the project\n');
    expect(out).toContain('1000\n');
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
    // The sandbox got the project and nothing else of the service's: no Docker socket.
    const sandbox = JSON.parse((await call('GET', `/v1/executions/${events[0]!.execId as string}`, APPROVER)).text) as { mounts: { path: string }[]; containerId: string };
    expect(sandbox.mounts.map((m) => m.path)).toEqual([project]);
    expect(readFileSync(join(project, 'from-sandbox.txt'), 'utf8')).toBe('made-here\n');
    expect(statSync(join(project, 'from-sandbox.txt')).uid).toBe(1000);
  });

  it('denies before any container exists, naming the rule', async () => {
    const r = await call('POST', '/v1/exec', AGENT, { command: 'sudo ls' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.text)).toMatchObject({ error: { code: 'policy_denied', decision: { code: 'blocked_pattern' } } });
  });

  it('waits for a human: the approver approves over HTTP and the command then runs', async () => {
    const pending = call('POST', '/v1/exec', AGENT, { command: 'echo release 1.2.3' });
    let approvalId: string | undefined;
    for (let i = 0; i < 100 && !approvalId; i++) {
      const list = JSON.parse((await call('GET', '/v1/approvals?status=pending', APPROVER)).text) as { approvals: { id: string; command: string }[] };
      approvalId = list.approvals.find((a) => a.command === 'echo release 1.2.3')?.id;
      if (!approvalId) await new Promise((r) => setTimeout(r, 100));
    }
    expect(approvalId).toBeDefined();
    // The agent's token cannot approve its own request.
    expect((await call('POST', `/v1/approvals/${approvalId}/approve`, AGENT, {})).status).toBe(403);
    const ok = await call('POST', `/v1/approvals/${approvalId}/approve`, APPROVER, { note: 'ship it' });
    expect(ok.status).toBe(200);
    const events = lines((await pending).text);
    expect(events.map((e) => e.type)).toEqual(['decision', 'approval_pending', 'approval_resolved', 'started', 'stdout', 'exit']);
    expect(events[2]).toMatchObject({ approved: true, by: 'approver', note: 'ship it' });
    expect(events[4]).toMatchObject({ data: 'release 1.2.3\n' });
    const history = JSON.parse((await call('GET', `/v1/executions/${events[0]!.execId as string}`, APPROVER)).text) as Record<string, unknown>;
    expect(history).toMatchObject({ status: 'finished', approvedBy: 'approver', exitCode: 0 });
    expect(existsSync(join(project, 'from-sandbox.txt'))).toBe(true);
  });
});
