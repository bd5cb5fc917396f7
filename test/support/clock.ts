import type { Clock } from '../../src/approvals/queue.js';

/** A clock that moves only when told to: expiry tests run in no time. */
export class ManualClock implements Clock {
  private t = Date.UTC(2026, 0, 1);
  private timers: { at: number; fn: () => void; cancelled: boolean }[] = [];

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): { cancel(): void } {
    const timer = { at: this.t + ms, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => (timer.cancelled = true) };
  }

  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((x) => !x.cancelled && x.at <= this.t).sort((a, b) => a.at - b.at);
    this.timers = this.timers.filter((x) => !due.includes(x) && !x.cancelled);
    for (const x of due) x.fn();
  }
}
