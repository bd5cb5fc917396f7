import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import type { SandboxSettings } from '../../src/config/load.js';
import type { SessionHandle } from '../../src/runner/session.js';
import type { RunResult } from '../../src/runner/types.js';

export const SANDBOX_IMAGE = process.env.EXECGATE_TEST_IMAGE ?? 'execgate/sandbox:latest';
/**
 * The sandbox runtime every integration test asks for. vitest.config.ts runs test/integration twice, with
 * EXECGATE_TEST_RUNTIME=runc and =runsc (gVisor), and also provides the project's runtime as `runtime`
 * (inject('runtime')), so a test can check that the containers really got it.
 */
export const TEST_RUNTIME = process.env.EXECGATE_TEST_RUNTIME ?? 'runc';
export const IS_GVISOR = TEST_RUNTIME === 'runsc';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The sandbox runtime of this integration project (vitest.config.ts). */
    runtime: 'runc' | 'runsc';
  }
}

export const silentLogger = pino({ level: 'silent' });

export function sandboxSettings(over: Partial<SandboxSettings> = {}): SandboxSettings {
  return {
    image: SANDBOX_IMAGE,
    runtime: TEST_RUNTIME,
    network: 'none',
    memoryMb: 256,
    cpus: 1,
    pidsLimit: 128,
    tmpfsMb: 32,
    timeoutMs: 20_000,
    maxOutputBytes: 1 << 20,
    user: '1000:1000',
    pool: { size: 0, maxIdleMs: 600_000 },
    ...over,
  };
}

/**
 * A host directory for a test, owned by 1000:1000 like a user's project, under /var/tmp (not /tmp: inside
 * the sandbox /tmp is a tmpfs). Dispose with `await using` or call remove().
 */
export function projectDir(prefix = 'execgate-test-'): { path: string; remove(): void; [Symbol.dispose](): void } {
  const path = mkdtempSync(join('/var/tmp', prefix));
  chownSync(path, 1000, 1000);
  const remove = () => rmSync(path, { recursive: true, force: true });
  return { path, remove, [Symbol.dispose]: remove };
}

/** Runs one command in a session to its end: its output (both streams, in order) and its result. */
export async function runInSession(session: SessionHandle, command: string, cwd: string, timeoutMs: number): Promise<{ out: string; result: RunResult }> {
  const gen = session.run({ command, cwd, env: {}, timeoutMs, maxOutputBytes: 1 << 20 }, new AbortController().signal);
  let out = '';
  for (;;) {
    const n = await gen.next();
    if (n.done) return { out, result: n.value };
    if (n.value.type === 'output') out += n.value.data.toString();
  }
}
