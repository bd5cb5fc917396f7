/**
 * Frees streamed output buffers before they pile up.
 *
 * Every socket read of a streaming command is a Buffer whose bytes live outside V8's heap. One that waits in a
 * socket's queue through two young-generation GCs (the service's semi-spaces are small, src/node-flags.ts) is
 * promoted, and from then on only a full GC frees its bytes. V8 starts one for memory outside the heap only
 * after that has grown by 64 MiB since the last, so a fast stream held up to 67 MiB of dead buffers: a fresh
 * service streaming 200 MB peaked at 161–168 MiB RSS (bench, 2 cores). Watching `arrayBuffers` and asking for
 * a full GC once it has grown by 16 MiB kept the peak at 119 MiB with 5 full GCs for 15 streams of 200 MB, and
 * no change in streaming throughput. (Part of that peak was a V8 compile, since gone with `--liftoff-only`;
 * measured again without it, 10 streams in a row peak at 115–127 MiB with the pacer and 128–150 without.)
 * The GC runs on the main thread (V8 posts it as a task; a full GC of this service's ~35 MB heap takes a few
 * milliseconds).
 *
 * The threshold is growth over what was live after the last requested GC, so buffers a run really holds (a
 * JSON answer collecting its output, many slow clients' queues) do not make it collect over and over.
 *
 * Needs `--expose-gc` (in NODE_FLAGS); without it the pacer does nothing.
 */
export interface GcPacerOptions {
  /** A full GC is asked for when live ArrayBuffer bytes have grown by this since the last one settled. */
  thresholdBytes?: number;
  /** How often `arrayBuffers` is read. */
  intervalMs?: number;
  /** At least this long between two requests, so a stream that really holds its buffers does not GC in a loop. */
  cooldownMs?: number;
  /** For tests: the probe and the collector. */
  arrayBuffers?: () => number;
  gc?: ((options: { type: 'major'; execution: 'async' }) => void) | undefined;
  now?: () => number;
}

const GC_PACER_DEFAULTS = { thresholdBytes: 16 * 1024 * 1024, intervalMs: 50, cooldownMs: 250 } as const;

export class GcPacer {
  private readonly threshold: number;
  private readonly cooldown: number;
  private readonly probe: () => number;
  private readonly gc: GcPacerOptions['gc'];
  private readonly now: () => number;
  private last = -Infinity;
  /** Live bytes after the last requested GC (read at the first look after its cooldown). */
  private base = 0;
  private settling = false;
  /** Full GCs asked for so far. */
  requested = 0;

  constructor(options: GcPacerOptions = {}) {
    this.threshold = options.thresholdBytes ?? GC_PACER_DEFAULTS.thresholdBytes;
    this.cooldown = options.cooldownMs ?? GC_PACER_DEFAULTS.cooldownMs;
    this.probe = options.arrayBuffers ?? (() => process.memoryUsage().arrayBuffers);
    this.gc = 'gc' in options ? options.gc : (globalThis as { gc?: GcPacerOptions['gc'] }).gc;
    this.now = options.now ?? Date.now;
  }

  /** Whether a collector is there to ask. */
  get active(): boolean {
    return typeof this.gc === 'function';
  }

  /** One look: asks for a full GC when grown past base + threshold, out of the cooldown. Returns whether it did. */
  tick(): boolean {
    if (!this.gc) return false;
    const t = this.now();
    if (t - this.last < this.cooldown) return false;
    const live = this.probe();
    if (this.settling) {
      this.settling = false;
      this.base = live;
      return false;
    }
    if (live <= this.base + this.threshold) return false;
    this.last = t;
    this.settling = true;
    this.requested++;
    this.gc({ type: 'major', execution: 'async' });
    return true;
  }
}

/** Starts the pacer on a timer that does not keep the process alive; returns its stop. */
export function startGcPacer(options: GcPacerOptions = {}): { pacer: GcPacer; stop: () => void } {
  const pacer = new GcPacer(options);
  if (!pacer.active) return { pacer, stop: () => undefined };
  const timer = setInterval(() => pacer.tick(), options.intervalMs ?? GC_PACER_DEFAULTS.intervalMs);
  timer.unref();
  return { pacer, stop: () => clearInterval(timer) };
}
