import { PassThrough, type Duplex } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { DockerDemuxer } from './demux.js';
import { commandScript } from './warm.js';
import type { RunEvent, RunResult } from './types.js';
import type { WriteWatch } from './write-quota.js';

/**
 * What a session container runs: a shell that prints its pid and then waits on an attached stdin the service
 * never writes to, so it lives until the session is closed (stdin closed) or the container is removed.
 * Commands do not go through it: each one is its own `docker exec`, with its own stdin, stdout and stderr and
 * its exit code from Docker. Nothing a command does to the keeper's stdin can reach another command.
 */
export const SESSION_KEEPER = `echo "$$"; while :; do IFS= read -r _ || exit 0; done`;

/** Largest stdin a session command takes (it is held in memory while the command waits for approval). */
export const SESSION_STDIN_MAX = 4 * 1024 * 1024;

/** After a kill, how long the command may take to go before the whole session is ended instead. */
const KILL_GRACE_MS = 5_000;
/** After the command's process exits, how long to keep reading output its background children may hold. */
const OUTPUT_GRACE_MS = 200;
/** How often to ask Docker whether the command's process is still running. */
const POLL_MS = 100;
/** Kills of leftovers over the write quota with no command between them, before the session is ended. */
const MAX_SWEEPS = 3;

export interface SessionCommand {
  command: string;
  cwd: string;
  env: Record<string, string>;
  stdin?: Buffer | undefined;
  timeoutMs: number;
  maxOutputBytes: number;
}


/**
 * Kills every process in the container except PID 1 (docker-init), the keeper and itself: a session runs one
 * command at a time, so that is the command and everything it started, however it detached (setsid, double
 * fork, a cleared environment). Processes of earlier commands left running in the background go too. Pure
 * sh and /proc; it exits 0 once nothing else is left, 1 if it could not get there.
 *
 * It stops them all (SIGSTOP) before it kills any. Killed one at a time, in the order /proc lists them (by
 * name, so pid 100 before pid 99), a parent could see its child die and run on for a moment: `yes | split;
 * echo done` printed `done` after the write quota stopped it. A stopped process runs nothing and forks
 * nothing, so the passes over /proc repeat until one finds nothing new, and then every process is killed.
 * That is a round; rounds repeat until one finds nothing alive, because a kill can set something going again:
 * a process group orphaned by the kills gets SIGCONT from the kernel, and a member that ignores SIGHUP may
 * fork before its own SIGKILL. Zombies (and the dead) are skipped: docker-init reaps them. Passes and rounds
 * are bounded, and the pids limit bounds each pass.
 */
export function killScript(keeperPid: number): string {
  return [
    `s=$$; r=0`,
    `while [ $r -lt 50 ]; do r=$((r+1)); seen=' '; n=0`,
    `while [ $n -lt 64 ]; do n=$((n+1)); fresh=`,
    `for d in /proc/[0-9]*; do p=\${d#/proc/}; case "$p" in 1|${keeperPid}|$s) continue;; esac`,
    `case "$seen" in *" $p "*) continue;; esac`,
    // The state letter: /proc/<pid>/stat after the last ") " (the command name may hold anything).
    `st=; read -r st 2>/dev/null < "$d/stat"; st=\${st##*) }; case "$st" in Z*|X*|'') continue;; esac`,
    `kill -STOP "$p" 2>/dev/null && seen="$seen$p " && fresh=1; done`,
    `[ -z "$fresh" ] && break; done`,
    `[ "$seen" = ' ' ] && exit 0`,
    `for p in $seen; do kill -KILL "$p" 2>/dev/null; done`,
    `sleep 0.02 2>/dev/null; done; exit 1`,
  ].join('\n');
}

export interface SessionHandle {
  readonly containerId: string;
  readonly imageId: string;
  /** False once the container has gone (ended, killed, or its keeper exited). */
  readonly alive: boolean;
  run(cmd: SessionCommand, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void>;
  /** Extracts a (checked) tar into /scratch as the sandbox user. */
  putArchive(tar: NodeJS.ReadableStream | Buffer, timeoutMs: number): Promise<void>;
  /** A tar of /scratch made by the sandbox user, entries prefixed `scratch/` like Docker's archive API. */
  getArchive(timeoutMs: number): Promise<NodeJS.ReadableStream>;
  close(): Promise<void>;
}

interface ExecInfo {
  Running: boolean;
  ExitCode: number | null;
}

/**
 * A long-lived sandbox: same container settings as a one-shot run (plus /scratch), one command at a time.
 * Created by DockerRunner.openSession, which owns labels, removal and the reaper's view of it.
 *
 * Files go in and out with `tar` run by `docker exec` as the sandbox user, not with Docker's archive API:
 * dockerd runs that as root and follows links the sandbox may have planted in /scratch (into a read-only
 * mount, say), while the sandbox user's tar can only reach what the sandbox could reach anyway. Session
 * file transfer therefore needs `tar` in the image.
 */
export class DockerSession implements SessionHandle {
  private busy = false;
  private ended = false;
  private writeWatch: WriteWatch | undefined;
  /** While a command runs: what a write-quota breach does to it. */
  private onWriteQuota: (() => void) | undefined;
  /** A kill of what earlier commands left running, started between commands; the next command waits for it. */
  private sweeping: Promise<unknown> | undefined;
  /** Such kills since the last command started. */
  private sweepsSinceCommand = 0;

  constructor(
    private readonly container: Docker.Container,
    readonly image: string,
    readonly imageId: string,
    private readonly keeper: NodeJS.ReadWriteStream,
    private readonly keeperPid: number,
    private readonly user: string,
    private readonly log: Logger,
    private readonly onClose: () => Promise<void>,
  ) {
    keeper.on('error', (err) => this.log.debug({ err }, 'session keeper stream error'));
    keeper.resume(); // it prints nothing more; flowing, so 'end' is seen
    keeper.on('close', () => (this.ended = true));
    keeper.on('end', () => (this.ended = true));
  }

  get containerId(): string {
    return this.container.id;
  }

  get alive(): boolean {
    return !this.ended;
  }

  /**
   * Starts the write-quota watchdog (write-quota.ts) for the session's life. Its baseline is taken again as
   * each command starts, so each command has the quota to itself. A breach during a command ends the command
   * as a time-out does (writeQuotaExceeded); one between commands (something an earlier command left running
   * in the background) kills those leftovers.
   */
  async watchWrites(start: (stop: () => void) => Promise<WriteWatch | undefined>): Promise<void> {
    this.writeWatch = await start(() => {
      if (this.onWriteQuota) this.onWriteQuota();
      else if (!this.ended && !this.sweeping) {
        // A kill that worked leaves nothing to write: breach after breach with no command between means it
        // did not.
        if (++this.sweepsSinceCommand > MAX_SWEEPS) {
          this.log.warn('what earlier commands left running goes on past the write quota; ending the session');
          this.close().catch(() => undefined);
          return;
        }
        this.log.warn('write quota reached between commands: killing what earlier commands left running');
        this.sweeping = this.clear('leftovers over the write quota')
          .then(() => (this.ended ? undefined : this.writeWatch?.rebase()))
          .catch(() => undefined)
          .finally(() => (this.sweeping = undefined));
      }
    });
  }

  /** Starts a process in the session as the sandbox user; its stream carries Docker's multiplexed stdout/stderr. */
  private async spawn(argv: string[], withStdin: boolean): Promise<{ exec: Docker.Exec; stream: Duplex }> {
    const exec = await this.container.exec({ Cmd: argv, User: this.user, WorkingDir: '/', AttachStdin: withStdin, AttachStdout: true, AttachStderr: true, Tty: false });
    const stream = await exec.start({ hijack: true, stdin: withStdin });
    stream.on('error', (err) => this.log.debug({ err }, 'session exec stream error'));
    return { exec, stream };
  }

  /** Runs killScript; rejects unless it ended, with 0, in time (it may have been stopped itself). */
  private async killAll(): Promise<void> {
    const { exec, stream } = await this.spawn(['/bin/sh', '-c', killScript(this.keeperPid)], false);
    stream.resume();
    let info = (await exec.inspect()) as ExecInfo;
    for (let i = 0; i < 50 && info.Running; i++) {
      await sleep(POLL_MS);
      info = (await exec.inspect()) as ExecInfo;
    }
    stream.destroy();
    if (info.Running || info.ExitCode !== 0) throw new Error(info.Running ? 'the kill did not finish' : `the kill exited with ${info.ExitCode}`);
  }

  /**
   * Kills everything but the keeper (killAll). If that fails, nothing in the session can be trusted to have
   * stopped, so the session is ended (its container removed).
   */
  private clear(why: string): Promise<void> {
    this.log.debug({ why }, 'killing every process of the session');
    return this.killAll().catch(async (err: unknown) => {
      this.log.warn({ err, why }, 'could not clear the session; ending it');
      await this.close();
    });
  }

  async *run(cmd: SessionCommand, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void> {
    const t0 = Date.now();
    const result: RunResult = { exitCode: null, durationMs: 0, timedOut: false, oomKilled: false, truncated: false };
    const finish = (): RunResult => ({ ...result, durationMs: Date.now() - t0 });
    if (this.busy) return { ...finish(), error: { code: 'session_busy', message: 'the session is running another command' } };
    if (this.ended) return { ...finish(), error: { code: 'session_ended', message: 'the session has ended' } };
    this.busy = true;
    let killing: Promise<void> | undefined;
    let killedAt = 0;
    const kill = (why: string): void => {
      if (killing) return;
      killedAt = Date.now();
      // After a kill of leftovers under way: two kill scripts at once could stop each other.
      killing = Promise.resolve(this.sweeping).then(() => this.clear(why));
    };
    const onAbort = (): void => kill('client disconnected');
    const timer = setTimeout(() => {
      result.timedOut = true;
      kill('time-out');
    }, cmd.timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    let exec: Docker.Exec | undefined;
    let stream: Duplex | undefined;
    try {
      // A kill of leftovers under way would take the new command with them (and two kill scripts would stop
      // each other): wait for it, and for one the rebase itself may start, until none is under way as the
      // command takes over the watchdog's breaches (synchronously, below). The watchdog ends the session
      // after MAX_SWEEPS of them, which bounds this loop.
      do {
        await this.sweeping;
        await this.writeWatch?.rebase();
      } while (this.sweeping);
      if (this.ended) return { ...finish(), error: { code: 'session_ended', message: 'the session has ended' } };
      // Timed out, or the client left, while it waited: the command never starts.
      if (killing) {
        await killing;
        return { ...finish(), ...(result.timedOut ? {} : { error: { code: 'client_disconnected', message: 'the client went away before the command started' } }) };
      }
      this.sweepsSinceCommand = 0;
      this.onWriteQuota = () => {
        result.writeQuotaExceeded = true;
        kill('write quota');
      };
      ({ exec, stream } = await this.spawn(['/bin/sh', '-c', commandScript(cmd)], cmd.stdin !== undefined));
      if (cmd.stdin !== undefined) stream.end(cmd.stdin);
      yield { type: 'started', containerId: this.container.id, image: this.image, imageId: this.imageId };

      // Output until the stream ends, or until the process has exited and its background children (which may
      // hold stdout open for ever) have had a moment to finish writing.
      const queue: Buffer[] = [];
      let wake: (() => void) | undefined;
      let streamDone = false;
      const notify = () => {
        wake?.();
        wake = undefined;
      };
      stream.on('data', (c: Buffer) => {
        queue.push(c);
        if (queue.length > 16) stream!.pause();
        notify();
      });
      stream.on('end', () => ((streamDone = true), notify()));
      stream.on('close', () => ((streamDone = true), notify()));
      let exitedAt = 0;
      const poller = setInterval(() => {
        exec!.inspect().then(
          (i: ExecInfo) => {
            if (!i.Running && exitedAt === 0) {
              exitedAt = Date.now();
              notify();
            }
          },
          () => undefined,
        );
        notify();
      }, POLL_MS);
      const demux = new DockerDemuxer();
      let total = 0;
      try {
        for (;;) {
          const chunk = queue.shift();
          if (chunk) {
            if (queue.length < 4) stream.resume();
            for (const frame of demux.push(chunk)) {
              if (result.truncated) continue;
              const room = cmd.maxOutputBytes - total;
              if (frame.data.length > room) {
                if (room > 0) yield { type: 'output', stream: frame.stream, data: frame.data.subarray(0, room) };
                total = cmd.maxOutputBytes;
                result.truncated = true;
                kill('output cap');
              } else {
                total += frame.data.length;
                yield { type: 'output', stream: frame.stream, data: frame.data };
              }
            }
            continue;
          }
          if (streamDone) break;
          if (exitedAt > 0 && Date.now() - exitedAt > OUTPUT_GRACE_MS) break;
          if (killedAt > 0 && Date.now() - killedAt > KILL_GRACE_MS) {
            // The kill did not end it (or could not run): the session cannot be trusted to be idle; end it.
            this.log.warn('a session command outlived its kill; ending the session');
            await this.close();
            return { ...finish(), error: { code: 'session_ended', message: 'the command could not be stopped, so the session was ended' } };
          }
          if (this.ended) return { ...finish(), error: { code: 'session_ended', message: 'the session container stopped during the command' } };
          await new Promise<void>((r) => (wake = r));
        }
      } finally {
        clearInterval(poller);
      }
      await killing;
      if (this.ended) return { ...finish(), error: { code: 'session_ended', message: 'the session ended during the command' } };
      const info = (await exec.inspect()) as ExecInfo;
      result.exitCode = info.Running ? null : info.ExitCode;
      if (result.exitCode === null && !result.timedOut && !result.truncated && !result.writeQuotaExceeded) {
        return { ...finish(), error: { code: 'runner_failed', message: 'the command ended without an exit code' } };
      }
      return finish();
    } catch (err) {
      if (this.ended) return { ...finish(), error: { code: 'session_ended', message: 'the session has ended' } };
      return { ...finish(), error: { code: 'runner_failed', message: (err as Error).message } };
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      // A consumer that stopped early leaves the command running: it must not outlive its request.
      if (exec && ((await exec.inspect().catch(() => ({ Running: false }))) as ExecInfo).Running) {
        kill('abandoned');
        await killing;
      }
      stream?.destroy();
      this.onWriteQuota = undefined;
      this.busy = false;
    }
  }

  /** Runs `argv` with `input` on stdin (if any) and collects stderr; rejects on a non-zero exit or the deadline. */
  private async tarExec(argv: string[], input: NodeJS.ReadableStream | Buffer | undefined, timeoutMs: number, sink?: NodeJS.WritableStream): Promise<void> {
    const { exec, stream } = await this.spawn(argv, input !== undefined);
    const demux = new DockerDemuxer();
    const stderr: Buffer[] = [];
    let stderrBytes = 0;
    const ended = new Promise<void>((resolve) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
    });
    stream.on('data', (c: Buffer) => {
      for (const f of demux.push(c)) {
        if (f.stream === 'stdout') {
          // Backpressure: the reader of the archive sets the pace of tar.
          if (sink && !sink.write(f.data)) {
            stream.pause();
            sink.once('drain', () => stream.resume());
          }
        } else if (stderrBytes < 4096) {
          stderr.push(f.data);
          stderrBytes += f.data.length;
        }
      }
    });
    if (Buffer.isBuffer(input)) stream.end(input);
    else if (input) input.pipe(stream);
    const timer = setTimeout(() => stream.destroy(new Error('timed out')), timeoutMs);
    try {
      await ended;
    } finally {
      clearTimeout(timer);
    }
    let info = (await exec.inspect()) as ExecInfo;
    for (let i = 0; i < 20 && info.Running; i++) {
      await sleep(50);
      info = (await exec.inspect()) as ExecInfo;
    }
    if (info.Running || info.ExitCode !== 0) {
      const why = Buffer.concat(stderr).toString('utf8').trim() || (info.Running ? 'did not finish in time' : `exit code ${info.ExitCode}`);
      throw Object.assign(new Error(`${argv[0]} in the session failed: ${why}`), { code: 'session_files_failed' });
    }
  }

  async putArchive(tar: NodeJS.ReadableStream | Buffer, timeoutMs: number): Promise<void> {
    await this.tarExec(['tar', '-x', '-f', '-', '-C', '/scratch'], tar, timeoutMs);
  }

  async getArchive(timeoutMs: number): Promise<NodeJS.ReadableStream> {
    const out = new PassThrough();
    this.tarExec(['tar', '-c', '-f', '-', '-C', '/', 'scratch'], undefined, timeoutMs, out).then(
      () => out.end(),
      (err: unknown) => out.destroy(err as Error),
    );
    return out;
  }

  async close(): Promise<void> {
    this.ended = true;
    this.writeWatch?.stop();
    this.keeper.end();
    await this.onClose();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
