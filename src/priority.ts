/**
 * The service's CPU priority (`gateway.nice`). execgate shares the machine with the sandboxes it starts and
 * with Docker's per-container work (dockerd, containerd, a shim and runc per container). Under the kernel's
 * autogroup scheduling every shim is a session of its own, so with ten containers starting the service gets
 * about a twelfth of the CPU however little it asks for, and /healthz, the policy gate and approvals wait
 * behind untrusted workloads (measured on 2 cores: /healthz p99 81–121 ms at nice 0, 31 ms at -10).
 *
 * At start the service sets every one of its threads to `nice` (threads made later inherit it) and, when it
 * leads its session (systemd services, `setsid`, a container's init), the session's autogroup too. Sandboxes
 * never inherit it: their processes are forked by containerd's shim, not by this process. Raising priority
 * needs CAP_SYS_NICE (root has it); without it nothing changes and the caller logs how to grant it.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';

export interface PriorityOutcome {
  /** The nice value asked for. */
  nice: number;
  /** Threads set to it, of those the process had. */
  threads: { set: number; of: number };
  /** The session's autogroup: set; not ours (we do not lead the session, so it would boost our parent's
   *  terminal too); absent (kernel without autogroup); or failed. */
  autogroup: 'set' | 'not-session-leader' | 'absent' | 'failed';
  /** The first refusal (EACCES/EPERM without CAP_SYS_NICE), if any. */
  error?: string;
}

/** The session id of a process, from /proc/PID/stat (the field after the parenthesised command name). */
export function sessionOf(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // state ppid pgrp session …
  return Number(fields[3]);
}

export function applyNice(nice: number, proc = '/proc/self', pid = process.pid): PriorityOutcome {
  const out: PriorityOutcome = { nice, threads: { set: 0, of: 0 }, autogroup: 'absent' };
  let tids: number[] = [];
  try {
    tids = readdirSync(`${proc}/task`).map(Number).filter(Number.isInteger);
  } catch {
    tids = [0]; // no /proc: the calling thread only
  }
  out.threads.of = tids.length;
  for (const tid of tids) {
    try {
      // setpriority(PRIO_PROCESS, tid) on Linux sets that one thread.
      setPriority(tid, nice);
      out.threads.set++;
    } catch (err) {
      out.error ??= (err as Error).message;
    }
  }
  let leader = false;
  try {
    leader = sessionOf(readFileSync(`${proc}/stat`, 'utf8')) === pid;
  } catch {
    /* no /proc: leave the autogroup alone */
  }
  let hasAutogroup = false;
  try {
    hasAutogroup = readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1' && readFileSync(`${proc}/autogroup`, 'utf8').length > 0;
  } catch {
    hasAutogroup = false;
  }
  if (!hasAutogroup) out.autogroup = 'absent';
  else if (!leader) out.autogroup = 'not-session-leader';
  else out.autogroup = writeAutogroup(`${proc}/autogroup`, nice, out);
  return out;
}

function writeAutogroup(path: string, nice: number, out: PriorityOutcome): PriorityOutcome['autogroup'] {
  // The kernel takes one autogroup change per 100 ms machine-wide (EAGAIN otherwise): try a few times.
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      writeFileSync(path, String(nice));
      return 'set';
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EAGAIN') {
        out.error ??= (err as Error).message;
        return 'failed';
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 110);
    }
  }
  out.error ??= 'the kernel kept answering EAGAIN';
  return 'failed';
}

/** What to tell the operator when priority could not be raised. */
export const NICE_HINT =
  'run as root or with CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE, or Nice= and CPUWeight= in the unit; docker: --cap-add SYS_NICE or --cpu-shares), or set gateway.nice to 0 to silence this';
