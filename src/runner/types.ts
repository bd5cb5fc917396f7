import type { SandboxSettings } from '../config/load.js';
import type { AllowedPath } from '../policy/types.js';
import type { SessionHandle } from './session.js';

export interface SessionSpec {
  sessionId: string;
  team: string;
  mounts: readonly AllowedPath[];
  sandbox: SandboxSettings;
  scratchMb: number;
  /** The reaper's deadline for the container: the session's maximum lifetime. */
  lifetimeMs: number;
}

export interface RunSpec {
  execId: string;
  team: string;
  command: string;
  /**
   * What runs `command` (with `-c`): COMMAND_SHELL unless set. The warm bootstrap, our own POSIX script, runs
   * under `/bin/sh`; the command it is sent still runs under COMMAND_SHELL.
   */
  shell?: string;
  /** Absolute path inside an allowed path (mounted at the same path). */
  cwd: string;
  env: Record<string, string>;
  stdin?: Buffer | undefined;
  mounts: readonly AllowedPath[];
  sandbox: SandboxSettings;
  /** Effective limit for this run (already capped by the team's sandbox.timeoutMs). */
  timeoutMs: number;
  /** Files in and out: the run gets a fresh /scratch of its own (see ScratchSpec). */
  scratch?: ScratchSpec | undefined;
}

/** Where input files go and artifacts come from, inside the sandbox. */
export const SCRATCH_DIR = '/scratch';

export interface ScratchSpec {
  sizeMb: number;
  /** Host path of a tar archive (already checked) extracted into /scratch before the command runs. */
  input?: string | undefined;
  /**
   * Called after the command exits with Docker's tar stream of /scratch (entries prefixed `scratch/`); the
   * sink checks, filters and stores it. Its answer is returned as RunResult.collected.
   */
  collect?: ((tar: NodeJS.ReadableStream) => Promise<unknown>) | undefined;
}

export type RunEvent =
  /** `pool`: as RunResult.pool, known once the container is chosen (so counted even if the run is cut short). */
  | { type: 'started'; containerId: string; image: string; imageId: string; pool?: PoolOutcome }
  | { type: 'output'; stream: 'stdout' | 'stderr'; data: Buffer };

export interface RunResult {
  exitCode: number | null;
  durationMs: number;
  timedOut: boolean;
  oomKilled: boolean;
  truncated: boolean;
  /**
   * The sandbox was stopped because the disk of its read-write allowed paths grew past sandbox.writeQuotaMb,
   * or ran low (write-quota.ts). Unset or false otherwise.
   */
  writeQuotaExceeded?: boolean | undefined;
  /** Set when the run could not complete for a reason other than the command itself. */
  error?: { code: string; message: string } | undefined;
  /** What ScratchSpec.collect answered, or why collecting failed (the command's own result stands). */
  collected?: unknown;
  collectError?: { code: string; message: string; entry?: string | undefined } | undefined;
  /**
   * For a team with a warm pool (sandbox.pool.size > 0), how the run got its container: `hit` a warm one,
   * `miss` none was waiting (or the pool could not be refilled, or Docker failed first) so it took the cold
   * path, `bypass` the run cannot use the pool (it has files, or its command and env reach 32 KiB). Unset for
   * a team without a pool, and for session commands.
   */
  pool?: PoolOutcome | undefined;
}

export type PoolOutcome = 'hit' | 'miss' | 'bypass';

export interface ReadyState {
  ok: boolean;
  reason?: string;
  runtimes?: string[];
  images?: Record<string, boolean>;
}

/**
 * Runs one command in one fresh sandbox. The returned iterator yields events as they come and returns the
 * result; it is pulled by the consumer, so a slow consumer slows the container's output, never the memory.
 * Aborting `signal` (client gone) kills the container. Whatever happens, the container is removed.
 */
export interface Runner {
  run(spec: RunSpec, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void>;
  ready(images: string[]): Promise<ReadyState>;
  /** Removes leftovers: containers of this instance not running a request, and any past their deadline. */
  reap(): Promise<number>;
  close(): Promise<void>;
  /** A long-lived sandbox for several commands (sessions). */
  openSession?(spec: SessionSpec): Promise<SessionHandle>;
  /** Warm containers waiting, per team (runners without a pool: none). */
  poolIdle?(): Record<string, number>;
  /** Whether Docker failures have opened the warm pool's circuit breaker (nothing refills; runs go cold). */
  poolBreakerOpen?(): boolean;
}
