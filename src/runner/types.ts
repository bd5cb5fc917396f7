import type { SandboxSettings } from '../config/load.js';
import type { AllowedPath } from '../policy/types.js';

export interface RunSpec {
  execId: string;
  team: string;
  command: string;
  /** Absolute path inside an allowed path (mounted at the same path). */
  cwd: string;
  env: Record<string, string>;
  stdin?: Buffer | undefined;
  mounts: readonly AllowedPath[];
  sandbox: SandboxSettings;
  /** Effective limit for this run (already capped by the team's sandbox.timeoutMs). */
  timeoutMs: number;
}

export type RunEvent =
  | { type: 'started'; containerId: string; image: string; imageId: string }
  | { type: 'output'; stream: 'stdout' | 'stderr'; data: Buffer };

export interface RunResult {
  exitCode: number | null;
  durationMs: number;
  timedOut: boolean;
  oomKilled: boolean;
  truncated: boolean;
  /** Set when the run could not complete for a reason other than the command itself. */
  error?: { code: string; message: string } | undefined;
}

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
  /** Warm containers waiting, per team (runners without a pool: none). */
  poolIdle?(): Record<string, number>;
}
