import { describe, expect, it } from 'vitest';
import { containerSpec, gvisorHostPids, runtimeIsGvisor, type DockerRuntimeInfo } from '../../src/runner/container-spec.js';
import type { RunSpec } from '../../src/runner/types.js';
import { sandboxSettings } from '../support/sandbox.js';

const run = (runtime: string, pidsLimit: number): RunSpec => ({
  execId: 'exec_1',
  team: 'data',
  command: 'true',
  cwd: '/tmp',
  env: {},
  mounts: [],
  sandbox: sandboxSettings({ runtime, pidsLimit }),
  timeoutMs: 1000,
});

describe('the pids limit in the create body', () => {
  // [runtime, gvisor flag given (undefined: by name), pidsLimit, host cgroup limit, RLIMIT_NPROC]
  const cases: [string, boolean | undefined, number, number, number | undefined][] = [
    ['runc', undefined, 256, 256, undefined],
    ['runc', false, 8, 8, undefined],
    ['runsc', undefined, 256, 2624, 256],
    ['runsc', undefined, 8, 144, 8],
    ['runsc', true, 4096, 41_024, 4096],
    // A runtime dockerd registered under another name whose binary is runsc: the runner says so.
    ['gvisor', true, 300, 3064, 300],
    ['gvisor', undefined, 300, 300, undefined],
    ['runsc-kvm', false, 64, 64, undefined],
  ];
  it.each(cases)('%s (gvisor %s), pidsLimit %d: cgroup %d, nproc %s', (runtime, gvisor, pidsLimit, cgroup, nproc) => {
    const body = containerSpec(run(runtime, pidsLimit), 'inst', 0, 'none', 'sha256:x', gvisor);
    expect(body.HostConfig!.PidsLimit).toBe(cgroup);
    const ulimit = body.HostConfig!.Ulimits!.find((u) => u.Name === 'nproc');
    expect(ulimit).toEqual(nproc === undefined ? undefined : { Name: 'nproc', Soft: nproc, Hard: nproc });
    // The other limits are there whatever the runtime.
    expect(body.HostConfig!.Ulimits!.map((u) => u.Name).slice(0, 2)).toEqual(['nofile', 'fsize']);
  });

  it('gives gVisor room for its own threads: more than 8 a task and 54 at rest, for every limit', () => {
    for (const p of [8, 64, 128, 256, 1024, 4096]) expect(gvisorHostPids(p)).toBeGreaterThanOrEqual(54 + 8 * p);
  });
});

describe('which runtimes are gVisor', () => {
  const cases: [string, DockerRuntimeInfo | undefined, boolean][] = [
    ['runsc', undefined, true],
    ['runsc', { path: '/usr/bin/runsc', runtimeArgs: ['--network=none'] } as DockerRuntimeInfo, true],
    ['gvisor', { path: '/usr/local/bin/runsc' }, true],
    ['gvisor-kvm', { path: 'runsc' }, true],
    ['runc', { path: 'runc' }, false],
    ['runc', undefined, false],
    ['crun', { path: '/usr/bin/crun' }, false],
    ['kata', { path: '/usr/bin/kata-runtime' }, false],
    ['sneaky', { path: '/opt/runsc-wrapper' }, false],
    ['gv', { runtimeType: 'io.containerd.runsc.v1' }, true],
    ['gv', { runtimeType: 'io.containerd.runc.v2', options: { BinaryName: '/usr/bin/runsc' } }, true],
    ['rc', { runtimeType: 'io.containerd.runc.v2', options: null }, false],
    ['rc', { runtimeType: 'io.containerd.runscx.v1' }, false],
    ['rc', {}, false],
  ];
  it.each(cases)('%s %j: %s', (name, info, gvisor) => {
    expect(runtimeIsGvisor(name, info)).toBe(gvisor);
  });
});

describe('the host cgroup limit under gVisor', () => {
  it('never passes what the kernel accepts as pids.max (4,194,304)', () => {
    expect(gvisorHostPids(1 << 22)).toBe(1 << 22);
    expect(gvisorHostPids(419_424)).toBe(4_194_304);
    expect(gvisorHostPids(419_423)).toBe(4_194_294);
  });
});
