import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MAX_INTERVAL_MS, MAX_PROBE_FAILURES, MIN_INTERVAL_MS, WriteWatch, judge, nextDelay, reserveFor, statfsProbe, writeQuotaBytes, type FsSample, type WriteBreach } from '../../src/runner/write-quota.js';

const MB = 1024 * 1024;
const GB = 1024 * MB;
const sample = (usedMb: number, freeMb = 100_000, sizeMb = 200_000): FsSample => ({ usedBytes: usedMb * MB, freeBytes: freeMb * MB, sizeBytes: sizeMb * MB });

describe('judge: one sample against the baseline', () => {
  const base = sample(1000);
  it('growth up to the quota passes; one byte more is a quota breach', () => {
    expect(judge('/p', base, sample(1100), 100 * MB, GB)).toBeUndefined();
    const b = judge('/p', base, { ...sample(1100), usedBytes: 1100 * MB + 1 }, 100 * MB, GB);
    expect(b).toMatchObject({ reason: 'quota', path: '/p', grownBytes: 100 * MB + 1, quotaBytes: 100 * MB });
    expect(b!.message).toMatch(/grew by 100\.0 MB during the run, over the write quota of 100\.0 MB/);
  });
  it('free space under the reserve stops a run that is growing the disk, even within its quota', () => {
    expect(judge('/p', base, sample(1001, 500), 100 * MB, GB)).toMatchObject({ reason: 'reserve', freeBytes: 500 * MB, reserveBytes: GB });
  });
  it('free space under the reserve does not stop a run that has not grown the disk', () => {
    expect(judge('/p', base, sample(1000, 500), 100 * MB, GB)).toBeUndefined();
    expect(judge('/p', base, sample(900, 500), 100 * MB, GB)).toBeUndefined();
  });
  it('space freed during the run counts against what was written (the measure is net growth)', () => {
    expect(judge('/p', base, sample(1050), 100 * MB, GB)).toBeUndefined();
  });
});

describe('reserve and pace', () => {
  it('the reserve is 5% of the filesystem, at most 1 GiB', () => {
    expect(reserveFor(10 * GB)).toBe(Math.floor(0.5 * GB));
    expect(reserveFor(1000 * GB)).toBe(GB);
  });
  it('samples sooner the nearer the limit, and the faster the room left is used, within the bounds', () => {
    expect(nextDelay(4 * GB, 0)).toBe(MAX_INTERVAL_MS); // far from it: seconds of room even at ASSUMED_RATE
    expect(nextDelay(400 * MB, 0)).toBe(100); // 200 ms of room at ASSUMED_RATE (2 MB/ms), half of it
    expect(nextDelay(400 * MB, 8 * MB)).toBe(25); // a faster writer than assumed: 50 ms of room
    expect(nextDelay(400 * MB, 100)).toBe(100); // a slower one: still paced as if it could reach ASSUMED_RATE
    expect(nextDelay(10 * MB, 0)).toBe(MIN_INTERVAL_MS);
    expect(nextDelay(0, MB)).toBe(MIN_INTERVAL_MS);
  });
  it('the quota is writeQuotaMb in bytes, 1024 MB when unset', () => {
    expect(writeQuotaBytes(5)).toBe(5 * MB);
    expect(writeQuotaBytes(undefined)).toBe(GB);
  });
});

describe('WriteWatch', () => {
  /** A fake disk per device; paths map to devices. */
  let disks: Map<string, FsSample>;
  let deviceOfPath: Record<string, string>;
  let probes: { path: string; at: number }[];
  let failing: Set<string>;
  let failOnce = 0;
  const probe = async (path: string): Promise<FsSample> => {
    probes.push({ path, at: Date.now() });
    if (failing.has(path)) throw new Error('EIO');
    if (failOnce > 0) {
      failOnce--;
      throw new Error('EIO');
    }
    return { ...disks.get(deviceOfPath[path]!)! };
  };
  const grow = (dev: string, mb: number) => {
    const d = disks.get(dev)!;
    disks.set(dev, { ...d, usedBytes: d.usedBytes + mb * MB, freeBytes: d.freeBytes - mb * MB });
  };
  const start = (paths: string[], quotaMb: number, breaches: WriteBreach[]) =>
    WriteWatch.start(paths, { quotaBytes: quotaMb * MB, onBreach: (b) => breaches.push(b), probe, deviceOf: async (p) => deviceOfPath[p]! });

  beforeEach(() => {
    vi.useFakeTimers();
    disks = new Map([
      ['d1', sample(1000)],
      ['d2', sample(5000)],
    ]);
    deviceOfPath = { '/a': 'd1', '/a2': 'd1', '/b': 'd2' };
    probes = [];
    failing = new Set();
    failOnce = 0;
  });
  afterEach(() => vi.useRealTimers());

  it('no read-write path: no watch', async () => {
    expect(await start([], 10, [])).toBeUndefined();
  });

  it('samples each filesystem once however many mounts share it, and reports a breach once', async () => {
    const breaches: WriteBreach[] = [];
    const w = (await start(['/a', '/a2', '/b'], 100, breaches))!;
    expect(probes.map((p) => p.path)).toEqual(['/a', '/b']);
    grow('d2', 60);
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS);
    expect(breaches).toEqual([]);
    grow('d2', 60);
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS);
    expect(breaches).toHaveLength(1);
    expect(breaches[0]).toMatchObject({ reason: 'quota', path: '/b', grownBytes: 120 * MB });
    expect(w.breach).toBe(breaches[0]);
    // Stopped sampling: more growth is not reported again.
    const n = probes.length;
    grow('d2', 500);
    await vi.advanceTimersByTimeAsync(5 * MAX_INTERVAL_MS);
    expect(probes.length).toBe(n);
    expect(breaches).toHaveLength(1);
    w.stop();
  });

  it('growth on another filesystem than the mounts is not counted', async () => {
    const breaches: WriteBreach[] = [];
    const w = (await start(['/a'], 100, breaches))!;
    grow('d2', 5000);
    await vi.advanceTimersByTimeAsync(4 * MAX_INTERVAL_MS);
    expect(breaches).toEqual([]);
    w.stop();
  });

  it('samples faster while the disk fills fast near the limit', async () => {
    const w = (await start(['/a'], 100, []))!;
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS);
    const before = probes.length;
    grow('d1', 90); // 90 MB in 250 ms: the 10 MB left last about 28 ms at that rate
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS);
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS);
    const gaps = probes.slice(before).map((p, i, a) => (i === 0 ? 0 : p.at - a[i - 1]!.at)).slice(1);
    expect(Math.min(...gaps)).toBeLessThan(MAX_INTERVAL_MS);
    w.stop();
  });

  it('rebase takes a new baseline and re-arms after a breach', async () => {
    const breaches: WriteBreach[] = [];
    const w = (await start(['/a'], 100, breaches))!;
    grow('d1', 150);
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS);
    expect(breaches).toHaveLength(1);
    await w.rebase();
    expect(w.breach).toBeUndefined();
    grow('d1', 50);
    await vi.advanceTimersByTimeAsync(2 * MAX_INTERVAL_MS);
    expect(breaches).toHaveLength(1);
    grow('d1', 60);
    await vi.advanceTimersByTimeAsync(2 * MAX_INTERVAL_MS);
    expect(breaches).toHaveLength(2);
    expect(breaches[1]).toMatchObject({ grownBytes: 110 * MB });
    w.stop();
  });

  it(`a disk that cannot be measured ${MAX_PROBE_FAILURES} times running stops the run (unmeasurable)`, async () => {
    const breaches: WriteBreach[] = [];
    const w = (await start(['/a'], 100, breaches))!;
    failing.add('/a');
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS + 2 * MIN_INTERVAL_MS);
    expect(breaches).toEqual([expect.objectContaining({ reason: 'unmeasurable', path: '/a' })]);
    w.stop();
  });

  it('a single failed sample is retried, not a breach', async () => {
    const breaches: WriteBreach[] = [];
    const w = (await start(['/a'], 100, breaches))!;
    failOnce = MAX_PROBE_FAILURES - 1;
    await vi.advanceTimersByTimeAsync(4 * MAX_INTERVAL_MS);
    expect(failOnce).toBe(0);
    expect(breaches).toEqual([]);
    grow('d1', 200);
    await vi.advanceTimersByTimeAsync(MAX_INTERVAL_MS);
    expect(breaches).toEqual([expect.objectContaining({ reason: 'quota' })]);
    w.stop();
  });

  it('stop() ends sampling', async () => {
    const breaches: WriteBreach[] = [];
    const w = (await start(['/a'], 100, breaches))!;
    w.stop();
    const n = probes.length;
    grow('d1', 500);
    await vi.advanceTimersByTimeAsync(4 * MAX_INTERVAL_MS);
    expect(probes.length).toBe(n);
    expect(breaches).toEqual([]);
  });

  it('a baseline that cannot be taken rejects: the run must not start unbounded', async () => {
    failing.add('/a');
    await expect(start(['/a'], 100, [])).rejects.toThrow('EIO');
  });

  it('statfsProbe measures a real filesystem: used and free within its size', async () => {
    const s = await statfsProbe('/');
    expect(s.sizeBytes).toBeGreaterThan(0);
    expect(s.usedBytes).toBeGreaterThan(0);
    expect(s.usedBytes + s.freeBytes).toBeLessThanOrEqual(s.sizeBytes);
  });
});
