import type { ContainerCreateOptions } from 'dockerode';
import { SCRATCH_DIR, type RunSpec } from './types.js';
import { writeQuotaBytes } from './write-quota.js';

export const LABEL_MANAGED = 'io.execgate.managed';

/**
 * The shell every approved command runs in. The policy decides on a bash parse, so the command must run in
 * bash: under another sh (Debian's dash) the same text can mean other commands (`echo $'\' ; rm -rf x ; #'`
 * is one echo to bash and an `rm` to dash). An image without it fails to run the command; nothing falls back.
 */
export const COMMAND_SHELL = '/bin/bash';
export const LABEL_INSTANCE = 'io.execgate.instance';
export const LABEL_TEAM = 'io.execgate.team';
export const LABEL_EXEC = 'io.execgate.exec';
/** Epoch ms after which any execgate instance may remove the container. */
export const LABEL_DEADLINE = 'io.execgate.deadline';

/** The Docker network a team with `sandbox.network: "team"` gets to itself. */
export const teamNetworkName = (team: string): string => `execgate-team-${team}`;

/** Grace after a run's time-out before the reaper treats its container as a leftover. */
export const DEADLINE_GRACE_MS = 60_000;

/**
 * Under gVisor the container's host pids cgroup holds the sandbox kernel's own threads too: about 54 at rest
 * and about 8 more per task inside (measured with runsc 20221219: 29 tasks took 285, 80 took 687, 181 took
 * 1,497). Reaching the limit does not fail a fork, it ends the whole sandbox (the Go runtime cannot start a
 * thread): with the limit at 256, the 24th background `sleep` did. So under gVisor `pidsLimit` is what the
 * sandbox's own kernel counts, as RLIMIT_NPROC (its tasks all run as the sandbox user; a fork past it fails
 * with EAGAIN, as under runc), and the host cgroup gets room for that many tasks' threads. The cgroup still
 * bounds the host: a fork bomb held by RLIMIT_NPROC grows gVisor's threads until it ends the sandbox there.
 * Each sandbox may so take ten times more of the host's pids (2,624 at the default 256): count them against
 * the host's pid_max (often 32,768 where it was never raised) when many sandboxes run at once.
 */
export const gvisorHostPids = (pidsLimit: number): number => Math.min(64 + 10 * pidsLimit, PID_MAX_LIMIT);

/** The largest pid_max Linux allows, and so the largest pids.max it accepts (4,194,304). */
const PID_MAX_LIMIT = 1 << 22;

/** A runtime as `docker info` describes it (Runtimes[name]). */
export interface DockerRuntimeInfo {
  path?: string;
  runtimeType?: string;
  options?: { BinaryName?: string } | null;
}

/**
 * Whether a runtime is gVisor: named `runsc`, or its binary is (`path`; for a runtime registered as a
 * containerd shim, `options.BinaryName` or a `runtimeType` of io.containerd.runsc.v1).
 */
export function runtimeIsGvisor(name: string, info: DockerRuntimeInfo | undefined): boolean {
  const binary = (info?.path ?? info?.options?.BinaryName ?? '').split('/').at(-1);
  return name === 'runsc' || binary === 'runsc' || /(^|\.)runsc(\.|$)/.test(info?.runtimeType ?? '');
}

/**
 * The Docker create body of one sandbox (SPEC §4). Every setting is fixed here, at creation, so the
 * container never needs a second API call to be hardened. `gvisor`: the runtime is gVisor (runsc), whatever
 * dockerd calls it.
 */
export function containerSpec(
  spec: RunSpec,
  instance: string,
  now: number,
  network: string = spec.sandbox.network,
  imageId: string = spec.sandbox.image,
  gvisor: boolean = runtimeIsGvisor(spec.sandbox.runtime, undefined),
): ContainerCreateOptions {
  const s = spec.sandbox;
  const memory = s.memoryMb * 1024 * 1024;
  return {
    // Created from the image id the tag resolved to, so the digest in the history is exactly what ran.
    Image: imageId,
    Cmd: [spec.shell ?? COMMAND_SHELL, '-c', spec.command],
    // The image's own entrypoint could run anything first; the sandbox runs exactly the approved command.
    Entrypoint: [],
    User: s.user,
    WorkingDir: spec.cwd,
    Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    Tty: false,
    OpenStdin: spec.stdin !== undefined,
    StdinOnce: spec.stdin !== undefined,
    AttachStdin: spec.stdin !== undefined,
    AttachStdout: true,
    AttachStderr: true,
    NetworkDisabled: network === 'none',
    Labels: {
      [LABEL_MANAGED]: 'true',
      [LABEL_INSTANCE]: instance,
      [LABEL_TEAM]: spec.team,
      [LABEL_EXEC]: spec.execId,
      [LABEL_DEADLINE]: String(now + spec.timeoutMs + DEADLINE_GRACE_MS),
    },
    HostConfig: {
      NetworkMode: network,
      Runtime: s.runtime,
      ReadonlyRootfs: true,
      // /tmp is the only writable place besides read-write allowed paths; noexec is not set because build
      // tools legitimately run what they write there.
      Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${s.tmpfsMb}m,mode=1777` },
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges:true'],
      Init: true,
      Privileged: false,
      Memory: memory,
      MemorySwap: memory, // no swap: the limit is the limit
      NanoCpus: Math.round(s.cpus * 1e9),
      PidsLimit: gvisor ? gvisorHostPids(s.pidsLimit) : s.pidsLimit,
      // fsize: no file grows past the write quota (write-quota.ts watches the sum). Soft = hard, so the sandbox,
      // without CAP_SYS_RESOURCE, cannot raise it.
      Ulimits: [
        { Name: 'nofile', Soft: 4096, Hard: 4096 },
        { Name: 'fsize', Soft: writeQuotaBytes(s.writeQuotaMb), Hard: writeQuotaBytes(s.writeQuotaMb) },
        // Only under gVisor: under runc RLIMIT_NPROC counts the uid's processes on the whole host.
        ...(gvisor ? [{ Name: 'nproc', Soft: s.pidsLimit, Hard: s.pidsLimit }] : []),
      ],
      IpcMode: 'private',
      PidMode: '',
      UsernsMode: '',
      // Sandboxes die before the service when the host runs short of memory.
      OomScoreAdj: 500,
      // Output travels through the attach stream only: nothing is written to the host's log files.
      LogConfig: { Type: 'none', Config: {} },
      Mounts: [
        ...spec.mounts.map((m) => ({
          Type: 'bind' as const,
          Source: m.path,
          Target: m.path,
          ReadOnly: m.readOnly,
          BindOptions: { Propagation: 'rprivate' as const },
        })),
        ...(spec.scratch ? [scratchMount(spec.scratch.sizeMb, s.user)] : []),
      ],
      AutoRemove: false,
      RestartPolicy: { Name: '', MaximumRetryCount: 0 },
    },
  };
}

/**
 * /scratch: where input files go and artifacts come from. The root filesystem is read-only, and Docker's
 * archive API cannot write into a HostConfig.Tmpfs mount (runc mounts that inside the container's mount
 * namespace, where dockerd's archive code does not look). A volume is mounted by dockerd itself, so the
 * archive API sees it. This one is anonymous (removed with the container, `v: true`) and memory-backed by the
 * local driver's tmpfs option, so it is size-limited like /tmp and nothing of it touches the host's disk.
 * A tmpfs volume lives only while the container runs, which is why files are put in and taken out while the
 * sandbox's shell is waiting (see warm.ts), never before start or after exit. Owned by the sandbox user.
 */
export function scratchMount(sizeMb: number, user: string): NonNullable<NonNullable<ContainerCreateOptions['HostConfig']>['Mounts']>[number] {
  const [uid, gid = uid] = user.split(':');
  return {
    Type: 'volume',
    Source: '', // anonymous
    Target: SCRATCH_DIR,
    ReadOnly: false,
    VolumeOptions: {
      NoCopy: true,
      Labels: { [LABEL_MANAGED]: 'true' },
      DriverConfig: { Name: 'local', Options: { type: 'tmpfs', device: 'tmpfs', o: `size=${sizeMb}m,uid=${uid},gid=${gid},mode=0700,nosuid,nodev` } },
    },
  };
}
