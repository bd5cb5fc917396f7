import { stat, statfs } from 'node:fs/promises';

/**
 * The write quota of one execution (sandbox.writeQuotaMb): how much it may add to the disk that holds its
 * read-write allowed paths. Those are bind mounts of host directories, so without a bound a command could fill
 * the host's disk. Two layers:
 *
 * - The kernel: RLIMIT_FSIZE (container-spec.ts) stops any single file at the quota, exactly, whatever the
 *   speed of the writer (the write fails with EFBIG after SIGXFSZ).
 * - This watchdog, for the sum: while the run lives it samples the filesystems holding its read-write mounts
 *   (statfs) and stops the sandbox once a filesystem's used space has grown by more than the quota since the run
 *   started, or its free space has dropped below a reserve while growing. It samples more often the nearer the
 *   limit (every 10 ms within 40 MB of it at 2 GB/s), but what is written between the last sample and the
 *   moment the kill lands is written: the bound is the quota plus an overshoot (about the writer's speed times
 *   the kill's latency), not the quota.
 *
 * What it measures is the whole filesystem: writes by anything else on the same disk during the run (the
 * host, other sandboxes) count too. That errs towards stopping a run early, never towards letting one through.
 *
 * Overshoot measured on a 2-core machine, 1024 MB quota: one writer of one file, 0 (RLIMIT_FSIZE, exact, under
 * runc and runsc); one writer of many 1 MB files, about 140 MB (runc, ~1.5 GB/s) and 5 MB (runsc, ~100 MB/s);
 * many 4 KB files, none (stopped at the limit: metadata counts); four `dd bs=1M` at once, 270 to 1000 MB, which
 * is their speed times the latency of Docker's kill under that load (150 to 370 ms). The watchdog sees the
 * breach within about 15 MB; the rest is written while the kill travels.
 *
 * Space reserved without being written goes faster than any watchdog: a loop of `fallocate -l 60M` (each file
 * under RLIMIT_FSIZE) took 840 MB (runc) and 540 MB (runsc) against a 64 MB quota before the kill landed, and
 * allocators in parallel multiply that. The reserve still stops such a run, but only after the allocation. A
 * hard bound on what an untrusted writer can take is a filesystem sized for it (an allowed path on a volume
 * with a project quota, or on a loop-mounted image).
 */

export const DEFAULT_WRITE_QUOTA_MB = 1024;
/** Slowest and fastest sampling. The pace between is set by how fast the disk fills and how much room is left. */
export const MAX_INTERVAL_MS = 250;
export const MIN_INTERVAL_MS = 10;
/** Consecutive failed samples after which the run is stopped: what cannot be measured cannot be bounded. */
export const MAX_PROBE_FAILURES = 3;

export interface FsSample {
  /** Bytes in use (blocks - bfree), counting the root-reserved blocks as free. */
  usedBytes: number;
  /** Bytes an unprivileged writer can still use (bavail). */
  freeBytes: number;
  sizeBytes: number;
}

export type Probe = (path: string) => Promise<FsSample>;

export const statfsProbe: Probe = async (path) => {
  const s = await statfs(path);
  return { usedBytes: (s.blocks - s.bfree) * s.bsize, freeBytes: s.bavail * s.bsize, sizeBytes: s.blocks * s.bsize };
};

/**
 * Free space the sandboxes leave on a filesystem: 5% of it, at most 1 GiB. Below it a run that is still
 * growing the filesystem is stopped even within its quota, so that several runs at once cannot fill the disk.
 */
export function reserveFor(sizeBytes: number): number {
  return Math.min(1 << 30, Math.floor(sizeBytes * 0.05));
}

export interface WriteBreach {
  reason: 'quota' | 'reserve' | 'unmeasurable';
  /** A mount path on the filesystem concerned. */
  path: string;
  /** Growth of the filesystem's used space since the run started. */
  grownBytes: number;
  quotaBytes: number;
  freeBytes: number;
  reserveBytes: number;
  message: string;
}

const mb = (n: number): string => `${(n / 1048576).toFixed(1)} MB`;

/** The verdict on one sample against the run's baseline. */
export function judge(path: string, base: FsSample, now: FsSample, quotaBytes: number, reserveBytes: number): WriteBreach | undefined {
  const grownBytes = now.usedBytes - base.usedBytes;
  const common = { path, grownBytes, quotaBytes, freeBytes: now.freeBytes, reserveBytes };
  if (grownBytes > quotaBytes) {
    return { reason: 'quota', ...common, message: `the disk holding ${path} grew by ${mb(grownBytes)} during the run, over the write quota of ${mb(quotaBytes)}` };
  }
  if (now.freeBytes < reserveBytes && grownBytes > 0) {
    return { reason: 'reserve', ...common, message: `the disk holding ${path} is down to ${mb(now.freeBytes)} free, under the ${mb(reserveBytes)} kept in reserve, and the run was still writing to it` };
  }
  return undefined;
}

/**
 * The fastest a writer is assumed to fill a disk between two samples (bytes per ms): 2 GB/s, about what a
 * sandbox writing into the page cache reaches. Pacing by it, a run far from its limit is sampled rarely and one
 * near it often, even before any growth has been seen.
 */
export const ASSUMED_RATE = 2 * 1024 * 1024;

/**
 * How long to wait before the next sample: half the time the room left (to the quota or to the reserve) lasts
 * at the rate just seen, or at ASSUMED_RATE if that is faster, between MIN_INTERVAL_MS and MAX_INTERVAL_MS.
 */
export function nextDelay(roomBytes: number, bytesPerMs: number, minMs = MIN_INTERVAL_MS, maxMs = MAX_INTERVAL_MS): number {
  if (roomBytes <= 0) return minMs;
  return Math.max(minMs, Math.min(maxMs, Math.floor(roomBytes / Math.max(bytesPerMs, ASSUMED_RATE) / 2)));
}

interface Watched {
  path: string;
  base: FsSample;
  last: FsSample;
  lastAt: number;
  reserveBytes: number;
}

export interface WriteWatchOptions {
  quotaBytes: number;
  onBreach: (b: WriteBreach) => void;
  probe?: Probe;
  /** Which filesystem a path is on (st_dev by default): paths on the same one are sampled once. */
  deviceOf?: (path: string) => Promise<string>;
  now?: () => number;
  minIntervalMs?: number;
  maxIntervalMs?: number;
}

/**
 * Watches the filesystems of a run's read-write mounts (one sample per filesystem, however many mounts share
 * it). `onBreach` is called once per baseline; `rebase()` takes a new baseline and re-arms it (a session does
 * this at each command). Timers are unref'd: a watch never keeps the process alive.
 */
export class WriteWatch {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failures = 0;
  private tripped: WriteBreach | undefined;
  /** The largest growth seen on any watched filesystem since the last baseline. */
  peakGrownBytes = 0;

  private constructor(
    private readonly watched: Watched[],
    private readonly opts: WriteWatchOptions,
  ) {}

  /**
   * Takes the baseline and starts sampling. Paths on the same filesystem are sampled once. Returns undefined
   * for no paths. Rejects when a path cannot be measured (the run must not start unbounded).
   */
  static async start(paths: readonly string[], opts: WriteWatchOptions): Promise<WriteWatch | undefined> {
    if (paths.length === 0) return undefined;
    const probe = opts.probe ?? statfsProbe;
    const now = opts.now ?? Date.now;
    const deviceOf = opts.deviceOf ?? (async (p: string) => String((await stat(p)).dev));
    const byDevice = new Map<string, string>();
    for (const p of paths) {
      const key = await deviceOf(p);
      if (!byDevice.has(key)) byDevice.set(key, p);
    }
    const watched: Watched[] = [];
    for (const path of byDevice.values()) {
      const base = await probe(path);
      watched.push({ path, base, last: base, lastAt: now(), reserveBytes: reserveFor(base.sizeBytes) });
    }
    const w = new WriteWatch(watched, opts);
    w.schedule(Math.min(...watched.map((x) => nextDelay(Math.min(opts.quotaBytes, x.base.freeBytes - x.reserveBytes), 0, opts.minIntervalMs, opts.maxIntervalMs))));
    return w;
  }

  get breach(): WriteBreach | undefined {
    return this.tripped;
  }

  /** A new baseline for every filesystem; re-arms the watch after a breach. */
  async rebase(): Promise<void> {
    const probe = this.opts.probe ?? statfsProbe;
    const now = this.opts.now ?? Date.now;
    for (const w of this.watched) {
      w.base = await probe(w.path);
      w.last = w.base;
      w.lastAt = now();
    }
    this.tripped = undefined;
    this.peakGrownBytes = 0;
    this.failures = 0;
    this.schedule(Math.min(...this.watched.map((x) => nextDelay(Math.min(this.opts.quotaBytes, x.base.freeBytes - x.reserveBytes), 0, this.opts.minIntervalMs, this.opts.maxIntervalMs))));
  }

  /** One round of samples; returns the breach it found, if any. Exposed for tests and for a final check. */
  async sample(): Promise<WriteBreach | undefined> {
    const probe = this.opts.probe ?? statfsProbe;
    const now = this.opts.now ?? Date.now;
    let delay = this.opts.maxIntervalMs ?? MAX_INTERVAL_MS;
    for (const w of this.watched) {
      let s: FsSample;
      try {
        s = await probe(w.path);
      } catch (err) {
        if (++this.failures >= MAX_PROBE_FAILURES) {
          return this.trip({
            reason: 'unmeasurable', path: w.path, grownBytes: this.peakGrownBytes, quotaBytes: this.opts.quotaBytes, freeBytes: w.last.freeBytes, reserveBytes: w.reserveBytes,
            message: `the disk holding ${w.path} could not be measured (${(err as Error).message}), so the write quota could not be enforced`,
          });
        }
        delay = this.opts.minIntervalMs ?? MIN_INTERVAL_MS;
        continue;
      }
      this.failures = 0;
      const t = now();
      const grown = s.usedBytes - w.base.usedBytes;
      this.peakGrownBytes = Math.max(this.peakGrownBytes, grown);
      const b = judge(w.path, w.base, s, this.opts.quotaBytes, w.reserveBytes);
      if (b) return this.trip(b);
      const rate = (s.usedBytes - w.last.usedBytes) / Math.max(1, t - w.lastAt);
      const room = Math.min(this.opts.quotaBytes - grown, s.freeBytes - w.reserveBytes);
      delay = Math.min(delay, nextDelay(room, rate, this.opts.minIntervalMs, this.opts.maxIntervalMs));
      w.last = s;
      w.lastAt = t;
    }
    this.schedule(delay);
    return undefined;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Reports the breach once and stops sampling until the next rebase(). */
  private trip(b: WriteBreach): WriteBreach {
    clearTimeout(this.timer);
    if (!this.tripped) {
      this.tripped = b;
      this.opts.onBreach(b);
    }
    return b;
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.tripped) void this.sample();
    }, ms);
    this.timer.unref();
  }
}

/** The write quota of a sandbox in bytes (also its RLIMIT_FSIZE). */
export function writeQuotaBytes(writeQuotaMb: number | undefined): number {
  return (writeQuotaMb ?? DEFAULT_WRITE_QUOTA_MB) * 1024 * 1024;
}
