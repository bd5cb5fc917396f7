import type { Clock } from '../approvals/queue.js';
import type { QuotaSettings } from '../config/load.js';
import { ServiceError } from './errors.js';

interface Waiter {
  resolve: (release: () => void) => void;
  reject: (err: Error) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

const HOUR = 3_600_000;

/**
 * Per-team admission: at most `maxConcurrent` executions run at once, up to `maxQueued` wait for a slot (in
 * arrival order), and anything beyond is refused with 429 and a Retry-After. An optional ceiling on CPU
 * time reserved per rolling hour (cpus × run time: what the team was given, not what it used) refuses new
 * work until enough of the window has passed.
 */
export class TeamQuota {
  private running = 0;
  private readonly queue: Waiter[] = [];
  private readonly usage: { at: number; cpuSeconds: number }[] = [];

  constructor(
    private settings: () => QuotaSettings,
    private readonly clock: Clock,
  ) {}

  get depth(): number {
    return this.queue.length;
  }

  get active(): number {
    return this.running;
  }

  async acquire(signal: AbortSignal): Promise<() => void> {
    const s = this.settings();
    this.checkCpuBudget(s);
    if (this.running < s.maxConcurrent && this.queue.length === 0) return this.grant();
    if (this.queue.length >= s.maxQueued) {
      throw new ServiceError('too_many_requests', `the team has ${this.running} executions running and ${this.queue.length} waiting (quota.maxConcurrent ${s.maxConcurrent}, quota.maxQueued ${s.maxQueued})`, { retryAfterSeconds: 1 });
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(new ServiceError('invalid_request', 'the client went away while queued'));
        },
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
      this.queue.push(w);
    });
  }

  /** Records CPU time reserved by a finished run. */
  charge(cpus: number, durationMs: number): void {
    if (this.settings().cpuSecondsPerHour === null) return;
    this.usage.push({ at: this.clock.now(), cpuSeconds: (cpus * durationMs) / 1000 });
  }

  private checkCpuBudget(s: QuotaSettings): void {
    if (s.cpuSecondsPerHour === null) return;
    const now = this.clock.now();
    while (this.usage.length > 0 && this.usage[0]!.at <= now - HOUR) this.usage.shift();
    let used = this.usage.reduce((a, u) => a + u.cpuSeconds, 0);
    if (used < s.cpuSecondsPerHour) return;
    // Retry when enough of the window has expired to fall back under the ceiling.
    let retryAt = now;
    for (const u of this.usage) {
      used -= u.cpuSeconds;
      retryAt = u.at + HOUR;
      if (used < s.cpuSecondsPerHour) break;
    }
    throw new ServiceError('too_many_requests', `the team used its ${s.cpuSecondsPerHour} CPU-seconds for this hour (quota.cpuSecondsPerHour)`, {
      retryAfterSeconds: Math.max(1, Math.ceil((retryAt - now) / 1000)),
    });
  }

  private grant(): () => void {
    this.running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      this.next();
    };
  }

  private next(): void {
    while (this.queue.length > 0 && this.running < this.settings().maxConcurrent) {
      const w = this.queue.shift()!;
      w.signal.removeEventListener('abort', w.onAbort);
      w.resolve(this.grant());
    }
  }
}
