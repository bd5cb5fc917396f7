import type { Logger } from 'pino';

/** A started container waiting in `read` for its one command. */
export interface WarmContainer {
  id: string;
  key: string;
  /** Its exec label, which the reaper spares while the container is in use or waiting. */
  label: string;
  imageId: string;
  createdAt: number;
  /** Attached, hijacked stdin/stdout/stderr stream. */
  stream: NodeJS.ReadWriteStream;
  waited: Promise<{ StatusCode: number | null; err?: unknown }>;
}

export interface PoolTarget {
  key: string;
  size: number;
  maxIdleMs: number;
}

export interface PoolDeps {
  create(key: string): Promise<WarmContainer>;
  destroy(w: WarmContainer): void;
  logger: Logger;
  now?: () => number;
  /** Consecutive failures that open the circuit breaker, and how long it stays open. */
  breakerThreshold?: number;
  breakerCooldownMs?: number;
  /** Containers created at once per key while refilling. */
  parallel?: number;
}

/**
 * Keeps `size` warm containers per key (everything fixed at creation: team, image id, runtime, mounts,
 * limits, user, network). Each is handed out once. Refills run in the background, a few at a time per key,
 * with exponential backoff; after repeated Docker failures a circuit breaker stops refilling for a while and
 * requests take the cold path. A key that is no longer wanted (config reload, rebuilt image) is drained.
 */
export class WarmPool {
  private readonly idle = new Map<string, WarmContainer[]>();
  private targets = new Map<string, PoolTarget>();
  private readonly creating = new Map<string, number>();
  /** Creations under way: close() waits for them, since each one finishing after close must still be removed. */
  private readonly inflight = new Set<Promise<void>>();
  private failures = 0;
  private openUntil = 0;
  private closed = false;
  private readonly now: () => number;
  hits = 0;
  misses = 0;

  constructor(private readonly deps: PoolDeps) {
    this.now = deps.now ?? Date.now;
  }

  get breakerOpen(): boolean {
    return this.now() < this.openUntil;
  }

  /** Sets the wanted pools; containers of keys no longer wanted are removed. */
  configure(targets: PoolTarget[]): void {
    this.targets = new Map(targets.filter((t) => t.size > 0).map((t) => [t.key, t]));
    for (const [key, list] of this.idle) {
      if (this.targets.has(key)) continue;
      this.idle.delete(key);
      for (const w of list) this.deps.destroy(w);
    }
    for (const key of this.targets.keys()) this.fill(key);
  }

  /** A warm container for this key, or undefined (the caller takes the cold path). */
  take(key: string): WarmContainer | undefined {
    const list = this.idle.get(key);
    const w = list?.shift();
    if (w) this.hits++;
    else this.misses++;
    if (this.targets.has(key)) this.fill(key);
    return w;
  }

  idleCount(key?: string): number {
    if (key !== undefined) return this.idle.get(key)?.length ?? 0;
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  /** Replaces containers idle longer than their pool's maxIdleMs. */
  sweep(): void {
    const now = this.now();
    for (const [key, list] of this.idle) {
      const t = this.targets.get(key);
      const keep = list.filter((w) => t && now - w.createdAt < t.maxIdleMs);
      for (const w of list) if (!keep.includes(w)) this.deps.destroy(w);
      this.idle.set(key, keep);
      if (keep.length < list.length) this.fill(key);
    }
  }

  /**
   * Starts creators until idle + being-created reaches the pool size, at most `parallel` at a time per key:
   * under sustained load the pool is only as fast as containers can be created, and dockerd creates several
   * at once faster than one after another.
   */
  private fill(key: string): void {
    const parallel = this.deps.parallel ?? 4;
    for (;;) {
      const t = this.targets.get(key);
      const creating = this.creating.get(key) ?? 0;
      const have = this.idle.get(key)?.length ?? 0;
      if (this.closed || !t || this.breakerOpen || have + creating >= t.size || creating >= parallel) return;
      this.creating.set(key, creating + 1);
      const p = this.createOne(key).finally(() => this.inflight.delete(p));
      this.inflight.add(p);
    }
  }

  private async createOne(key: string): Promise<void> {
    let retry = false;
    try {
      const w = await this.deps.create(key);
      if (this.closed || !this.targets.has(key)) {
        this.deps.destroy(w);
        return;
      }
      this.failures = 0;
      const list = this.idle.get(key) ?? [];
      list.push(w);
      this.idle.set(key, list);
      // One that dies while it waits (the engine restarted, someone removed it) is never handed out: it leaves
      // the pool, to be replaced by the next take() or reaper tick (or at once when the engine comes back).
      // Its stream ends even when dockerd is killed outright and wait() never answers.
      const died = () => this.evict(w);
      void w.waited.then(died);
      w.stream.once('end', died);
      w.stream.once('close', died);
    } catch (err) {
      this.failures++;
      if (this.failures >= (this.deps.breakerThreshold ?? 3)) {
        if (!this.breakerOpen) this.deps.logger.warn({ err, failures: this.failures }, 'warm pool: Docker keeps failing; circuit breaker open, requests take the cold path');
        this.openUntil = this.now() + (this.deps.breakerCooldownMs ?? 30_000);
        return;
      }
      const backoff = Math.min(30_000, 250 * 2 ** this.failures);
      this.deps.logger.warn({ err, backoffMs: backoff }, 'warm pool: could not start a container; retrying');
      await new Promise((r) => setTimeout(r, backoff).unref());
      retry = true;
    } finally {
      this.creating.set(key, (this.creating.get(key) ?? 1) - 1);
    }
    if (!this.closed && (retry || this.targets.has(key))) this.fill(key);
  }

  /** Stops refilling, removes every idle container, and waits for creations under way (they remove themselves). */
  async close(): Promise<void> {
    this.closed = true;
    for (const list of this.idle.values()) for (const w of list) this.deps.destroy(w);
    this.idle.clear();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private evict(w: WarmContainer): void {
    const list = this.idle.get(w.key);
    const i = list?.indexOf(w) ?? -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    this.deps.destroy(w);
  }

  /** The engine is back: refill now, without waiting for the breaker's cool-down. */
  resetBreaker(): void {
    this.openUntil = 0;
    this.failures = 0;
  }

  /** While the breaker is open nothing refills; this lets the next sweep try again once it has closed. */
  retryIfClosedBreaker(): void {
    if (!this.breakerOpen && this.failures > 0) {
      this.failures = 0;
      for (const key of this.targets.keys()) this.fill(key);
    }
  }
}
