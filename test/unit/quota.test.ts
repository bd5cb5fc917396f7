import { describe, expect, it } from 'vitest';
import type { QuotaSettings } from '../../src/config/load.js';
import { ServiceError } from '../../src/service/errors.js';
import { TeamQuota } from '../../src/service/quota.js';
import { ManualClock } from '../support/clock.js';

const quota = (s: Partial<QuotaSettings> = {}, clock = new ManualClock()) => new TeamQuota(() => ({ maxConcurrent: 2, maxQueued: 1, cpuSecondsPerHour: null, ...s }), clock);
const signal = () => new AbortController().signal;

describe('TeamQuota', () => {
  it('admits up to maxConcurrent, queues up to maxQueued in order, then refuses with 429', async () => {
    const q = quota();
    const r1 = await q.acquire(signal());
    await q.acquire(signal());
    expect(q.active).toBe(2);
    let third = false;
    const p3 = q.acquire(signal()).then((r) => ((third = true), r));
    expect(q.depth).toBe(1);
    const err = await q.acquire(signal()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceError);
    expect(err).toMatchObject({ code: 'too_many_requests', status: 429, details: { retryAfterSeconds: 1 } });
    expect(third).toBe(false);
    r1();
    const r3 = await p3;
    expect(third).toBe(true);
    expect(q.active).toBe(2);
    r1(); // releasing twice does nothing
    expect(q.active).toBe(2);
    r3();
    expect(q.active).toBe(1);
  });

  it('a queued request whose client leaves gives up its place', async () => {
    const q = quota({ maxConcurrent: 1, maxQueued: 5 });
    const r1 = await q.acquire(signal());
    const ac = new AbortController();
    const waiting = q.acquire(ac.signal);
    expect(q.depth).toBe(1);
    ac.abort();
    await expect(waiting).rejects.toBeInstanceOf(ServiceError);
    expect(q.depth).toBe(0);
    r1();
    expect(q.active).toBe(0);
  });

  it('refuses new work over the CPU-seconds ceiling until the hour window frees enough', async () => {
    const clock = new ManualClock();
    const q = quota({ cpuSecondsPerHour: 10 }, clock);
    (await q.acquire(signal()))();
    q.charge(2, 3000); // 6 cpu-s
    clock.advance(600_000);
    q.charge(1, 5000); // 5 cpu-s: 11 in the window
    const err = (await q.acquire(signal()).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe('too_many_requests');
    // The first charge leaves the window 50 minutes from now.
    expect(err.details.retryAfterSeconds).toBe(3000);
    clock.advance(3000_000);
    await expect(q.acquire(signal())).resolves.toBeTypeOf('function');
  });

  it('with no ceiling, usage is not even recorded', async () => {
    const q = quota();
    q.charge(100, 3_600_000);
    await expect(q.acquire(signal())).resolves.toBeTypeOf('function');
  });
});
