import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { NODE_FLAGS } from '../../src/node-flags.js';

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
  const proc = spawn(process.execPath, [...NODE_FLAGS, 'dist/main.js', 'serve', '--config', configPath], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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

export async function stopService(s: ServiceProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (s.proc.exitCode !== null) return;
  const exited = new Promise((r) => s.proc.once('exit', r));
  s.proc.kill(signal);
  await exited;
}

/** Resident and peak resident memory of a process, in bytes (Linux /proc). */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}
