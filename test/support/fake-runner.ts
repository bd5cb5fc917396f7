import type { PoolOutcome, ReadyState, RunEvent, RunResult, RunSpec, Runner } from '../../src/runner/types.js';

export interface FakeBehaviour {
  stdout?: (string | Buffer)[];
  stderr?: (string | Buffer)[];
  exitCode?: number;
  /** Keep the "container" running until aborted. */
  hang?: boolean;
  error?: { code: string; message: string };
  /** What the run reports of the warm pool (RunResult.pool). */
  pool?: PoolOutcome;
}

/**
 * A runner for HTTP tests: no Docker, scripted output. Records every spec it was asked to run and tracks
 * live "containers", so tests can check that a deny never reaches the runner and an abort ends the run.
 */
export class FakeRunner implements Runner {
  readonly runs: RunSpec[] = [];
  live = 0;
  readyState: ReadyState = { ok: true, runtimes: ['runc', 'runsc'], images: {} };
  breakerOpen = false;

  constructor(public behaviour: (spec: RunSpec) => FakeBehaviour = (s) => ({ stdout: [`ran: ${s.command}\n`] })) {}

  async *run(spec: RunSpec, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void> {
    this.runs.push(spec);
    const b = this.behaviour(spec);
    const t0 = Date.now();
    if (b.error) return { exitCode: null, durationMs: 0, timedOut: false, oomKilled: false, truncated: false, error: b.error, pool: b.pool };
    this.live++;
    try {
      yield { type: 'started', containerId: `fake_${this.runs.length}`, image: spec.sandbox.image, imageId: 'sha256:fake', ...(b.pool ? { pool: b.pool } : {}) };
      for (const c of b.stdout ?? []) yield { type: 'output', stream: 'stdout', data: Buffer.from(c) };
      for (const c of b.stderr ?? []) yield { type: 'output', stream: 'stderr', data: Buffer.from(c) };
      if (b.hang) {
        await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
        return { exitCode: 137, durationMs: Date.now() - t0, timedOut: false, oomKilled: false, truncated: false, error: { code: 'client_disconnected', message: 'aborted' } };
      }
      return { exitCode: b.exitCode ?? 0, durationMs: Date.now() - t0, timedOut: false, oomKilled: false, truncated: false, pool: b.pool };
    } finally {
      this.live--;
    }
  }

  async ready(images: string[]): Promise<ReadyState> {
    return { ...this.readyState, images: Object.fromEntries(images.map((i) => [i, this.readyState.ok])) };
  }
  async reap(): Promise<number> {
    return 0;
  }
  async close(): Promise<void> {}
  poolBreakerOpen(): boolean {
    return this.breakerOpen;
  }
}
