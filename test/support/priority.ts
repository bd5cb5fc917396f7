import { readdirSync, readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { niceOf } from '../../src/priority.js';

export { autogroupEnabled } from '../../src/priority.js';

/** The nice value of each thread of a process (/proc/PID/task/TID/stat, field 19). */
export function threadNices(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      return [niceOf(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'))];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
}

/** This process's nice: the value a child starts with. */
export const baseNice = (): number => getPriority();

/**
 * Whether a process like this one may lower its nice to `nice`: CAP_SYS_NICE in its effective set, or an
 * RLIMIT_NICE whose ceiling (20 - limit) reaches it. Read from the kernel, so the tests expect what the
 * machine allows rather than assuming root can (root in a default container cannot).
 */
export function mayLowerNiceTo(nice: number): boolean {
  const status = readFileSync('/proc/self/status', 'utf8');
  const capEff = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(status)![1]}`);
  if ((capEff >> 23n) & 1n) return true; // CAP_SYS_NICE
  const m = /^Max nice priority\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const limit = m?.[1] === 'unlimited' ? 40 : Number(m?.[1] ?? 0);
  return nice >= 20 - limit;
}
