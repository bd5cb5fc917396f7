import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { demuxDockerStream, type Frame } from './demux.js';
import { MarkerScanner, encodeLine } from './warm.js';
import { SCRATCH_DIR, type RunEvent, type RunResult } from './types.js';

/**
 * The shell a session container runs: like the warm bootstrap, but in a loop, so one container takes many
 * commands. Its stdin stays attached for the session's life and carries nothing but command lines.
 */
export const SESSION_BOOTSTRAP = `while IFS= read -r line; do s=$(printf '%b' "$line"); eval "$s"; done; exit 0`;

/** Largest stdin a session command takes: it travels inside the command line, read byte by byte by sh. */
export const SESSION_STDIN_MAX = 64 * 1024;

export interface SessionCommand {
  command: string;
  cwd: string;
  env: Record<string, string>;
  stdin?: Buffer | undefined;
  timeoutMs: number;
  maxOutputBytes: number;
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const octal = (bytes: Buffer): string => {
  let out = '';
  for (const b of bytes) out += `\\0${b.toString(8).padStart(3, '0')}`;
  return out;
};

/**
 * One command of a session. It runs in the background of the session shell with a tag in its environment
 * (EXECGATE_RUN), which every process it starts inherits, so a time-out can find and kill all of them —
 * also those that left the process group or double-forked — and leave the session shell alone. Its stdin is
 * the request's stdin or /dev/null, never the session's command channel.
 */
export function sessionScript(cmd: SessionCommand, nonce: string, tag: string): string {
  const exports = Object.entries({ ...cmd.env, EXECGATE_RUN: tag }).map(([k, v]) => `export ${shellQuote(`${k}=${v}`)}`);
  const inner = [`cd -- ${shellQuote(cmd.cwd)}`, ...exports, `exec /bin/sh -c ${shellQuote(cmd.command)}`].join(' && ');
  const input = cmd.stdin !== undefined && cmd.stdin.length > 0 ? `printf '%b' '${octal(cmd.stdin)}' | ` : '';
  const stdin = input === '' ? ' </dev/null' : '';
  return `${input}(${inner})${stdin} & wait $!; __rc=$?; printf '%s:%d\\n' ${nonce} "$__rc"; printf '%s:%d\\n' ${nonce} "$__rc" >&2`;
}

/**
 * Kills every process carrying the tag, run with `docker exec` as the sandbox user: sh, /proc and grep (the
 * image needs grep for session time-outs; without it the session itself is ended instead).
 */
export function killScript(tag: string): string {
  return `n=0; for e in /proc/[0-9]*/environ; do p=\${e#/proc/}; p=\${p%/environ}; if grep -qa "EXECGATE_RUN=${tag}" "$e" 2>/dev/null; then kill -KILL "$p" 2>/dev/null && n=$((n+1)); fi; done; echo "$n"`;
}

export interface SessionHandle {
  readonly containerId: string;
  readonly imageId: string;
  /** False once the container has gone (ended, killed, or its shell exited). */
  readonly alive: boolean;
  run(cmd: SessionCommand, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void>;
  putArchive(tar: NodeJS.ReadableStream | Buffer): Promise<void>;
  /** Docker's tar of /scratch (or a path under it), entries prefixed with the last component. */
  getArchive(path?: string): Promise<NodeJS.ReadableStream>;
  close(): Promise<void>;
}

/**
 * A long-lived sandbox: same container settings as a one-shot run (plus /scratch), one command at a time.
 * Created by DockerRunner.openSession, which owns labels, removal and the reaper's view of it.
 */
export class DockerSession implements SessionHandle {
  private readonly frames: AsyncIterator<Frame>;
  private busy = false;
  private ended = false;

  constructor(
    private readonly container: Docker.Container,
    readonly image: string,
    readonly imageId: string,
    private readonly stream: NodeJS.ReadWriteStream,
    private readonly user: string,
    private readonly log: Logger,
    private readonly onClose: () => Promise<void>,
  ) {
    this.frames = demuxDockerStream(stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    stream.on('error', (err) => this.log.debug({ err }, 'session stream error'));
    stream.on('close', () => (this.ended = true));
    stream.on('end', () => (this.ended = true));
  }

  get containerId(): string {
    return this.container.id;
  }

  get alive(): boolean {
    return !this.ended;
  }

  private async killTagged(tag: string): Promise<void> {
    const exec = await this.container.exec({ Cmd: ['/bin/sh', '-c', killScript(tag)], User: this.user, AttachStdout: false, AttachStderr: false });
    await exec.start({ Detach: true });
    // Detached: wait for it to finish so the caller knows the processes are gone.
    for (let i = 0; i < 100; i++) {
      const info = (await exec.inspect()) as { Running: boolean };
      if (!info.Running) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async *run(cmd: SessionCommand, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void> {
    const t0 = Date.now();
    const result: RunResult = { exitCode: null, durationMs: 0, timedOut: false, oomKilled: false, truncated: false };
    const finish = (): RunResult => ({ ...result, durationMs: Date.now() - t0 });
    if (this.busy) return { ...finish(), error: { code: 'session_busy', message: 'the session is running another command' } };
    if (this.ended) return { ...finish(), error: { code: 'session_ended', message: 'the session has ended' } };
    this.busy = true;
    const nonce = randomBytes(16).toString('hex');
    const tag = randomBytes(12).toString('hex');
    const scanners = { stdout: new MarkerScanner(nonce), stderr: new MarkerScanner(nonce) };
    let killing: Promise<void> | undefined;
    const kill = (why: string): void => {
      if (killing) return;
      this.log.debug({ why }, 'killing session command');
      killing = this.killTagged(tag).catch((err: unknown) => this.log.warn({ err }, 'could not kill a session command'));
    };
    const onAbort = (): void => kill('client disconnected');
    const timer = setTimeout(() => {
      result.timedOut = true;
      kill('time-out');
    }, cmd.timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      this.stream.write(encodeLine(sessionScript(cmd, nonce, tag)));
      yield { type: 'started', containerId: this.container.id, image: this.image, imageId: this.imageId };
      let total = 0;
      for (;;) {
        const next = await this.frames.next();
        if (next.done) {
          this.ended = true;
          return { ...finish(), error: { code: 'session_ended', message: 'the session container stopped during the command' } };
        }
        const frame = next.value;
        const data = scanners[frame.stream].push(frame.data);
        if (data.length > 0 && !result.truncated) {
          const room = cmd.maxOutputBytes - total;
          if (data.length > room) {
            if (room > 0) yield { type: 'output', stream: frame.stream, data: data.subarray(0, room) };
            total = cmd.maxOutputBytes;
            result.truncated = true;
            kill('output cap');
          } else {
            total += data.length;
            yield { type: 'output', stream: frame.stream, data };
          }
        }
        if (scanners.stdout.done && scanners.stderr.done) break;
      }
      await killing;
      result.exitCode = scanners.stdout.exitCode ?? null;
      return finish();
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      // A consumer that stopped early leaves the command running: kill it, and drain to its markers so the
      // next command's output starts clean.
      if (!(scanners.stdout.done && scanners.stderr.done) && !this.ended) {
        kill('abandoned');
        await killing;
        await this.drainTo(scanners);
      }
      this.busy = false;
    }
  }

  private async drainTo(scanners: Record<'stdout' | 'stderr', MarkerScanner>): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!(scanners.stdout.done && scanners.stderr.done) && Date.now() < deadline) {
      const next = await this.frames.next();
      if (next.done) {
        this.ended = true;
        return;
      }
      scanners[next.value.stream].push(next.value.data);
    }
  }

  async putArchive(tar: NodeJS.ReadableStream | Buffer): Promise<void> {
    await this.container.putArchive(tar as Buffer, { path: SCRATCH_DIR, noOverwriteDirNonDir: 'true' });
  }

  /**
   * The session is frozen (docker pause) while Docker reads /scratch, so no process in it can swap a file for
   * a link mid-copy; it thaws when the stream ends, fails or is closed.
   */
  async getArchive(path = SCRATCH_DIR): Promise<NodeJS.ReadableStream> {
    await this.container.pause();
    let thawed = false;
    const thaw = () => {
      if (thawed) return;
      thawed = true;
      this.container.unpause().catch((err: unknown) => this.log.warn({ err }, 'could not unpause the session'));
    };
    try {
      const stream = (await this.container.getArchive({ path })) as NodeJS.ReadableStream;
      stream.once('end', thaw);
      stream.once('close', thaw);
      stream.once('error', thaw);
      return stream;
    } catch (err) {
      thaw();
      throw err;
    }
  }

  async close(): Promise<void> {
    this.ended = true;
    this.stream.end();
    await this.onClose();
  }
}
