import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { serviceLaunch } from '../../src/node-flags.js';

/** The real service as a child process (`node dist/main.js serve`), for tests of the process as a whole. */
export interface ServiceProcess {
  proc: ChildProcess;
  url: string;
  logs: string[];
}

export function buildDist(): void {
  execFileSync('npm', ['run', 'build', '--silent'], { stdio: 'inherit' });
}

export async function startService(configPath: string, env: NodeJS.ProcessEnv = {}): Promise<ServiceProcess> {
  const launch = serviceLaunch(configPath, env);
  const proc = spawn(process.execPath, launch.args, { env: launch.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`service did not start:\n${logs.join('')}`)), 20_000);
    proc.stdout!.on('data', (d: Buffer) => {
      logs.push(d.toString());
      const m = /"address":"(http:\/\/[^"]+)"/.exec(d.toString());
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    proc.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    proc.on('exit', (code) => reject(new Error(`service exited with ${code}:\n${logs.join('')}`)));
  });
  return { proc, url, logs };
}

/** Sends `signal` and waits for the exit; answers the exit code (null when a signal ended it). */
export async function stopService(s: ServiceProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) return s.proc.exitCode;
  const exited = new Promise<number | null>((r) => s.proc.once('exit', (code) => r(code)));
  s.proc.kill(signal);
  return exited;
}

/** Runs `serve` expecting it to stop by itself (a start-up error): its exit code and everything it printed. */
export async function serveUntilExit(configPath: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; output: string }> {
  const launch = serviceLaunch(configPath, env);
  const proc = spawn(process.execPath, launch.args, { env: launch.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  proc.stdout.on('data', (d: Buffer) => out.push(d.toString()));
  proc.stderr.on('data', (d: Buffer) => out.push(d.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  clearTimeout(timer);
  return { code, output: out.join('') };
}

/** Waits until the service's output holds `pattern` (a log line), up to `ms`. */
export async function waitForLog(s: ServiceProcess, pattern: RegExp | string, ms = 30_000): Promise<void> {
  for (let t = 0; t < ms; t += 100) {
    const text = s.logs.join('');
    if (typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the service did not log ${String(pattern)}:\n${s.logs.join('').slice(-4000)}`);
}

/** Starts VmHWM (the peak memoryOf reports) again from the current RSS, so a test sees its own peak. */
export function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

/** Resident and peak resident memory of a process, in bytes (Linux /proc). */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}
