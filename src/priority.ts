/**
 * The service's CPU priority (`gateway.nice`). execgate shares the machine with the sandboxes it starts and
 * with Docker's work for each container (dockerd, containerd, and a shim and runc per container). On a host
 * where these run in the root cgroup, the kernel's autogroup scheduling makes every session one scheduling
 * group of equal weight, and every shim is a session of its own: with ten containers starting, a service that
 * needs a CPU for a millisecond waits behind a dozen groups. Health checks, policy decisions and approvals
 * then answer late (measured on 2 cores under `npm run load`: /healthz p99 56–121 ms at nice 0, 19–28 ms at
 * -10).
 *
 * What setting it does:
 * - every thread of the service gets `nice` (threads made later inherit it from the thread that makes them).
 *   This ranks the service against processes in its own scheduling group only;
 * - when the service leads its session and sits in the root cgroup, its autogroup gets `nice` too. That is
 *   what ranks it against the shims and dockerd. Under systemd with the cpu controller, or in a container,
 *   the cgroup decides instead: give the service `CPUWeight=` or `cpu_shares` there (README, CPU priority).
 *
 * Sandboxes never inherit it: their processes are forked by containerd's shim, not by this process. Raising
 * priority needs CAP_SYS_NICE (or an RLIMIT_NICE that allows it); without it nothing changes and the caller
 * logs how to get the effect another way.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';

export interface PriorityOutcome {
  /** The nice value asked for. */
  nice: number;
  /** Threads set to it, of those the process had. */
  threads: { set: number; of: number };
  /**
   * The session's autogroup: `set`; `not-session-leader` (it would change our parent's terminal session too,
   * so it is left alone); `cgroup` (the process is in a cpu cgroup other than the root, where autogroups do
   * not apply); `absent` (the kernel has no autogroup scheduling); `failed`.
   */
  autogroup: 'set' | 'not-session-leader' | 'cgroup' | 'absent' | 'failed';
  /** The first refusal (EACCES/EPERM without CAP_SYS_NICE), if any. */
  error?: string;
}

/** The fields of /proc/PID/stat after the parenthesised command name (which may hold spaces and parentheses):
 *  [0] state, [1] ppid, [2] pgrp, [3] session, …, [16] nice. */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** The session id of a process, from /proc/PID/stat. */
export const sessionOf = (stat: string): number => Number(statFields(stat)[3]);

/** The nice value of a process or thread, from /proc/PID/stat or /proc/PID/task/TID/stat. */
export const niceOf = (stat: string): number => Number(statFields(stat)[16]);

/** Whether the kernel schedules by autogroup (built with it, and switched on). */
export function autogroupEnabled(): boolean {
  try {
    return readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1' && existsSync('/proc/self/autogroup');
  } catch {
    return false;
  }
}

/**
 * Whether /proc/PID/cgroup puts the process at the root of the cpu hierarchy (cgroup v1: the line naming the
 * `cpu` controller; v2: the unified `0::` line, when no v1 line names cpu). Autogroups apply only there.
 */
export function inRootCpuCgroup(cgroup: string): boolean {
  const lines = cgroup.split('\n').filter(Boolean);
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('cpu'));
  const line = v1 ?? lines.find((l) => l.startsWith('0::'));
  if (!line) return true;
  return line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1) === '/';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function applyNice(nice: number, proc = '/proc/self', pid = process.pid): Promise<PriorityOutcome> {
  const out: PriorityOutcome = { nice, threads: { set: 0, of: 0 }, autogroup: 'absent' };
  let tids: number[];
  try {
    tids = readdirSync(`${proc}/task`).map(Number).filter(Number.isInteger);
  } catch {
    tids = [0]; // no /proc: the calling thread only
  }
  for (const tid of tids) {
    try {
      // setpriority(PRIO_PROCESS, tid) on Linux sets that one thread.
      setPriority(tid, nice);
      out.threads.set++;
      out.threads.of++;
    } catch (err) {
      // A thread that ended meanwhile is not a refusal.
      if ((err as NodeJS.ErrnoException).code === 'ESRCH' || /ESRCH/.test((err as Error).message)) continue;
      out.threads.of++;
      out.error ??= (err as Error).message;
    }
  }
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
  };
  if (!autogroupEnabled() || !existsSync(`${proc}/autogroup`)) out.autogroup = 'absent';
  else if (!inRootCpuCgroup(read(`${proc}/cgroup`) ?? '')) out.autogroup = 'cgroup';
  else if (sessionOf(read(`${proc}/stat`) ?? '') !== pid) out.autogroup = 'not-session-leader';
  else out.autogroup = await writeAutogroup(`${proc}/autogroup`, nice, out);
  return out;
}

async function writeAutogroup(path: string, nice: number, out: PriorityOutcome): Promise<PriorityOutcome['autogroup']> {
  // Without CAP_SYS_ADMIN the kernel takes one autogroup change per 100 ms machine-wide (EAGAIN otherwise).
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      writeFileSync(path, String(nice));
      return 'set';
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') {
        out.error ??= (err as Error).message;
        return 'failed';
      }
      await sleep(110);
    }
  }
  out.error ??= 'the kernel kept answering EAGAIN';
  return 'failed';
}

/** What to tell the operator when priority could not be raised. */
export const NICE_HINT =
  'give the process CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE), or CPU weight from outside (systemd: CPUWeight=; a container: --cpu-shares / compose cpu_shares); gateway.nice: 0 silences this';
