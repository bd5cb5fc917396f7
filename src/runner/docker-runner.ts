import Docker from 'dockerode';
import type { Logger } from 'pino';
import { LABEL_DEADLINE, LABEL_EXEC, LABEL_INSTANCE, LABEL_MANAGED, LABEL_TEAM, containerSpec, runtimeIsGvisor, teamNetworkName, type DockerRuntimeInfo } from './container-spec.js';
import { randomBytes } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createReadStream, realpathSync, statSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { SandboxSettings } from '../config/load.js';
import type { AllowedPath } from '../policy/types.js';
import { DockerDemuxer, demuxDockerStream } from './demux.js';
import { pacedReads } from './paced-reads.js';
import { WarmPool, type WarmContainer } from './pool.js';
import { BOOTSTRAP, BOOTSTRAP_SHELL, MarkerScanner, encodeLine, warmScript } from './warm.js';
import { ArchiveError } from '../files/archive.js';
import { DockerSession, SESSION_KEEPER, type SessionHandle } from './session.js';
import { SCRATCH_DIR, type ReadyState, type RunEvent, type RunResult, type RunSpec, type Runner, type SessionSpec } from './types.js';
import { WriteWatch, writeQuotaBytes } from './write-quota.js';

export interface DockerRunnerOptions {
  /** Names this service instance in container labels; stable across restarts so a restart reaps its orphans. */
  instance: string;
  logger: Logger;
  docker?: Docker;
  now?: () => number;
}

interface DockerError extends Error {
  statusCode?: number;
  json?: { message?: string };
  code?: string;
}

/** Maps a Docker API failure to an error code the API can show, with the fix when we know it. */
export function classifyDockerError(err: unknown, image: string): { code: string; message: string } {
  const e = err as DockerError;
  const msg = e?.json?.message ?? e?.message ?? String(err);
  if (e?.code === 'ENOENT' || e?.code === 'ECONNREFUSED' || e?.code === 'EACCES' || e?.code === 'ECONNRESET' || e?.code === 'EPIPE' || e?.code === 'engine_lost') {
    return { code: 'docker_unavailable', message: `the Docker engine is not reachable (${e.code}): ${msg}` };
  }
  if (/socket hang up/i.test(msg)) return { code: 'docker_unavailable', message: `the Docker engine went away: ${msg}` };
  if (e?.statusCode === 404 && /image/i.test(msg)) {
    return { code: 'image_missing', message: `sandbox image ${image} is not present; build it with \`npm run images\`` };
  }
  if (e?.code === 'mount_changed') return { code: 'mount_changed', message: msg };
  if (/runtime/i.test(msg) && /unknown|invalid|not found/i.test(msg)) {
    return { code: 'runtime_unavailable', message: msg };
  }
  return { code: 'runner_failed', message: msg };
}

export interface PoolTemplate {
  team: string;
  sandbox: SandboxSettings;
  mounts: readonly AllowedPath[];
}

/** A command and its env of this many bytes or more take the cold path, whatever the pool holds. */
const WARM_SCRIPT_MAX_BYTES = 32 * 1024;

/**
 * The promise `map` holds for `key`, or a new one from `load`, kept until it rejects (a failed lookup is
 * asked again next time). One lookup serves every caller that comes while it is under way.
 */
function cached<K, V>(map: Map<K, Promise<V>>, key: K, load: () => Promise<V>): Promise<V> {
  let p = map.get(key);
  if (!p) {
    const loading = load();
    loading.catch(() => {
      if (map.get(key) === loading) map.delete(key);
    });
    map.set(key, loading);
    p = loading;
  }
  return p;
}

/** Everything fixed when a container is created; two runs with the same key can use the same warm pool. */
export function poolKey(team: string, s: SandboxSettings, mounts: readonly AllowedPath[], network: string, imageId: string): string {
  return JSON.stringify([team, imageId, s.runtime, network, s.memoryMb, s.cpus, s.pidsLimit, s.tmpfsMb, s.writeQuotaMb ?? null, s.user, mounts.map((m) => [m.path, m.readOnly])]);
}

/** The keeper's first line on stdout: its pid. */
function firstLine(stream: NodeJS.ReadWriteStream, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const demux = new DockerDemuxer();
    let text = '';
    const done = (err?: Error, pid?: number) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      if (err) reject(err);
      else resolve(pid!);
    };
    const onData = (c: Buffer) => {
      for (const f of demux.push(c)) if (f.stream === 'stdout') text += f.data.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) {
        const pid = Number(text.slice(0, nl));
        if (Number.isInteger(pid) && pid > 1) done(undefined, pid);
        else done(new Error(`the session shell did not start (${JSON.stringify(text.slice(0, 80))})`));
      }
    };
    const onEnd = () => done(new Error('the session container stopped at start'));
    const timer = setTimeout(() => done(new Error('the session shell did not start in time')), timeoutMs);
    stream.on('data', onData);
    stream.on('end', onEnd);
  });
}

/**
 * The container's exit status once its output has ended. Docker's wait() answers within milliseconds of the
 * stream's end; when dockerd dies abruptly its answer never comes (the half-read response is dropped, the
 * promise never settles), so after a second without one the container is inspected instead: that fails at
 * once (docker_unavailable) when the engine is gone, or gives the exit code.
 */
async function exitStatus(container: Docker.Container, waited: Promise<{ StatusCode: number | null; err?: unknown }>): Promise<{ StatusCode: number | null; err?: unknown }> {
  let settled = false;
  const poll = (async (): Promise<{ StatusCode: number | null; err?: unknown }> => {
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000).unref());
      if (settled) return { StatusCode: null };
      const info = await container.inspect().catch((err: DockerError) => {
        throw err.statusCode ? err : Object.assign(err, { code: err.code ?? 'engine_lost' });
      });
      if (!info.State.Running) return { StatusCode: info.State.ExitCode };
    }
  })();
  try {
    return await Promise.race([waited, poll]);
  } finally {
    settled = true;
  }
}

/**
 * A client of the same engine that opens a new connection for every request. dockerd stopping closes its
 * listening socket first and then stops the containers, while connections already open (Node keeps them
 * alive between requests) still answer: only a new connection tells that the engine is going away.
 */
export function probeClient(docker: Docker): Docker {
  const m = docker.modem as unknown as { socketPath?: unknown; host?: string; port?: string | number; protocol?: string; ca?: unknown; cert?: unknown; key?: unknown; version?: string };
  if (m.protocol === 'ssh') return docker;
  const agent = m.protocol === 'https' ? new HttpsAgent({ keepAlive: false }) : new HttpAgent({ keepAlive: false });
  return new Docker({ socketPath: m.socketPath, host: m.host, port: m.port, protocol: m.protocol, ca: m.ca, cert: m.cert, key: m.key, version: m.version, timeout: 5000, agent } as Docker.DockerOptions);
}

function waitFor(container: Docker.Container): Promise<{ StatusCode: number | null; err?: unknown }> {
  return container.wait().then(
    (w: { StatusCode: number }) => w,
    (err: unknown) => ({ StatusCode: null, err }),
  );
}

/**
 * Mount sources were resolved when the config loaded; check again right before each create that every one is
 * still that real directory. The engine follows symlinks in a bind-mount source, so a path swapped for a
 * link since (by anything on the host) must never be mounted.
 */
export function checkMounts(mounts: readonly AllowedPath[]): void {
  for (const m of mounts) {
    let real: string;
    try {
      real = realpathSync(m.path);
    } catch {
      throw Object.assign(new Error(`allowed path ${m.path} no longer exists`), { code: 'mount_changed' });
    }
    if (real !== m.path || !statSync(real).isDirectory()) {
      throw Object.assign(new Error(`allowed path ${m.path} is no longer the directory that was configured (now ${real}); refusing to mount it`), { code: 'mount_changed' });
    }
  }
}

/** How long removal waits for a container whose command has ended to exit on its own before forcing it. */
const EXIT_GRACE_MS = 2000;

export class DockerRunner implements Runner {
  readonly docker: Docker;
  /** The same engine over a new connection each time: whether it is there (or stopping) right now. */
  private readonly probe: Docker;
  private readonly instance: string;
  private readonly log: Logger;
  private readonly now: () => number;
  /** Exec ids whose container may exist: the reaper never touches these. */
  private readonly activeExecs = new Set<string>();
  private readonly removals = new Set<Promise<void>>();
  private readonly networks = new Map<string, Promise<string>>();
  private readonly imageIds = new Map<string, Promise<string>>();
  private readonly gvisorRuntimes = new Map<string, Promise<boolean>>();
  readonly pool: WarmPool;
  /** Set by close(): removals stop waiting for containers to exit by themselves (graceWaiters wakes them). */
  private closing = false;
  private readonly graceWaiters = new Set<() => void>();
  private poolTemplates: PoolTemplate[] = [];
  private readonly poolSpecs = new Map<string, { template: PoolTemplate; network: string; imageId: string }>();

  constructor(opts: DockerRunnerOptions) {
    this.docker = opts.docker ?? new Docker();
    this.probe = probeClient(this.docker);
    this.instance = opts.instance;
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
    this.pool = new WarmPool({
      create: (key) => this.createWarm(key),
      destroy: (w) => this.removeInBackground(this.docker.getContainer(w.id), w.label, undefined),
      logger: this.log.child({ component: 'pool' }),
      now: this.now,
    });
  }

  /**
   * Sets which warm pools to keep: one per team with sandbox.pool.size > 0, keyed by everything fixed at
   * creation. Called at start-up, on config reload, and on each reaper tick (a rebuilt image changes the key,
   * which drains and replaces the old containers).
   */
  async configurePool(templates: PoolTemplate[]): Promise<void> {
    this.poolTemplates = templates;
    const targets = [];
    const specs = new Map<string, { template: PoolTemplate; network: string; imageId: string }>();
    for (const t of templates) {
      if (t.sandbox.pool.size <= 0) continue;
      try {
        const network = t.sandbox.network === 'team' ? await this.teamNetwork(t.team) : t.sandbox.network;
        const imageId = await this.imageId(t.sandbox.image);
        const key = poolKey(t.team, t.sandbox, t.mounts, network, imageId);
        specs.set(key, { template: t, network, imageId });
        targets.push({ key, size: t.sandbox.pool.size, maxIdleMs: t.sandbox.pool.maxIdleMs });
      } catch (err) {
        this.log.warn({ team: t.team, err }, 'warm pool: cannot prepare this team\'s pool now; requests take the cold path');
      }
    }
    // Keys still wanted keep their entry while creations of them are under way.
    for (const [key, v] of specs) this.poolSpecs.set(key, v);
    this.pool.configure(targets);
    for (const key of [...this.poolSpecs.keys()]) if (!specs.has(key)) this.poolSpecs.delete(key);
  }

  poolIdle(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [key, { template }] of this.poolSpecs) out[template.team] = (out[template.team] ?? 0) + this.pool.idleCount(key);
    return out;
  }

  poolBreakerOpen(): boolean {
    return this.pool.breakerOpen;
  }

  private async createWarm(key: string): Promise<WarmContainer> {
    const entry = this.poolSpecs.get(key);
    if (!entry) throw new Error('no pool template for this key');
    const { template: t, network, imageId } = entry;
    const label = `pool_${randomBytes(8).toString('hex')}`;
    this.activeExecs.add(label);
    const spec: RunSpec = {
      execId: label,
      team: t.team,
      command: BOOTSTRAP,
      shell: BOOTSTRAP_SHELL,
      cwd: t.mounts[0]!.path,
      env: {},
      stdin: Buffer.alloc(0),
      mounts: t.mounts,
      sandbox: t.sandbox,
      timeoutMs: t.sandbox.pool.maxIdleMs + t.sandbox.timeoutMs,
    };
    let container: Docker.Container | undefined;
    try {
      checkMounts(spec.mounts);
      container = await this.createSandbox(spec, network, imageId);
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true, stdin: true, hijack: true })) as NodeJS.ReadWriteStream;
      // A reset or a forced removal while it waits must not become an unhandled 'error' event.
      stream.on('error', (err) => this.log.debug({ err, label }, 'warm container stream error'));
      await container.start();
      return { id: container.id, key, label, imageId, createdAt: this.now(), stream, waited: waitFor(container) };
    } catch (err) {
      if (container) this.removeInBackground(container, label, undefined);
      else this.activeExecs.delete(label);
      throw err;
    }
  }

  async *run(spec: RunSpec, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void> {
    const t0 = this.now();
    const result: RunResult = { exitCode: null, durationMs: 0, timedOut: false, oomKilled: false, truncated: false };
    const finish = (): RunResult => ({ ...result, durationMs: this.now() - t0 });
    if (signal.aborted) return { ...finish(), error: { code: 'client_disconnected', message: 'the client went away before the run' } };

    this.activeExecs.add(spec.execId);
    let container: Docker.Container | undefined;
    let poolLabel: string | undefined;
    let paused = false;
    /** Set once the command has ended on its own and the container's shell is about to exit: removal waits for that. */
    let exiting: Promise<unknown> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let killing: Promise<void> | undefined;
    const kill = (why: string): void => {
      if (!container || killing) return;
      this.log.debug({ execId: spec.execId, why }, 'killing sandbox');
      const c = container;
      killing = c.kill({ signal: 'SIGKILL' }).then(
        () => undefined,
        () => undefined, // already exited: nothing to kill
      );
    };
    const onAbort = (): void => kill('client disconnected');
    let watch: WriteWatch | undefined;
    /** The attach socket: destroyed when the run ends, whether or not its output was read to the end. */
    let stream: NodeJS.ReadWriteStream | undefined;
    // Armed right before the command can first run, so that the baseline holds nothing it wrote.
    const armWriteQuota = async (): Promise<void> => {
      watch = await this.watchWrites(spec.mounts, spec.sandbox, spec.execId, () => {
        result.writeQuotaExceeded = true;
        kill('write quota');
      });
    };

    // The warm protocol sends the script as one octal-escaped line read byte by byte: big ones go cold.
    const small = Buffer.byteLength(spec.command) + Buffer.byteLength(JSON.stringify(spec.env)) < WARM_SCRIPT_MAX_BYTES;
    // A run with files gets a fresh container with a /scratch of its own: never a pooled one.
    const poolable = small && !spec.scratch;
    // A miss until a warm container is taken: a run that fails before (Docker down, image gone) missed too.
    if (spec.sandbox.pool.size > 0) result.pool = poolable ? 'miss' : 'bypass';
    try {
      const network = spec.sandbox.network === 'team' ? await this.teamNetwork(spec.team) : spec.sandbox.network;
      let imageId = await this.imageId(spec.sandbox.image);
      let waited: Promise<{ StatusCode: number | null; err?: unknown }>;
      let scanners: Record<'stdout' | 'stderr', MarkerScanner> | undefined;
      const warm = poolable ? this.pool.take(poolKey(spec.team, spec.sandbox, spec.mounts, network, imageId)) : undefined;
      if (warm && result.pool) result.pool = 'hit';
      const sendScript = (to: NodeJS.ReadWriteStream, nonce: string) => {
        to.write(encodeLine(warmScript(spec, nonce, spec.scratch?.collect !== undefined)));
        if (spec.stdin !== undefined) to.end(spec.stdin);
        else to.end();
      };
      if (warm) {
        // Warm path: the container is running and waiting for this one command.
        container = this.docker.getContainer(warm.id);
        poolLabel = warm.label;
        stream = warm.stream;
        waited = warm.waited;
        const nonce = randomBytes(16).toString('hex');
        scanners = { stdout: new MarkerScanner(nonce), stderr: new MarkerScanner(nonce) };
        await armWriteQuota();
        sendScript(stream, nonce);
      } else if (spec.scratch) {
        // Files path: start the bootstrap shell, put the files into /scratch while it waits (a tmpfs volume
        // exists only while the container runs), then send the command the warm way.
        if (!small) throw Object.assign(new Error('a command with files must be under 32 KiB with its env'), { code: 'command_too_large' });
        checkMounts(spec.mounts);
        // WorkingDir /: the cwd (under /scratch) may only exist once the files are in; the script cds there.
        const bootSpec: RunSpec = { ...spec, command: BOOTSTRAP, shell: BOOTSTRAP_SHELL, cwd: '/', stdin: Buffer.alloc(0) };
        container = await this.createSandbox(bootSpec, network, imageId);
        stream = (await container.attach({ stream: true, stdout: true, stderr: true, stdin: true, hijack: true })) as NodeJS.ReadWriteStream;
        stream.on('error', (err) => this.log.debug({ err, execId: spec.execId }, 'sandbox stream error'));
        await container.start();
        waited = waitFor(container);
        if (spec.scratch.input) await container.putArchive(createReadStream(spec.scratch.input) as unknown as Buffer, { path: SCRATCH_DIR, noOverwriteDirNonDir: 'true' });
        const nonce = randomBytes(16).toString('hex');
        scanners = { stdout: new MarkerScanner(nonce), stderr: new MarkerScanner(nonce) };
        await armWriteQuota();
        sendScript(stream, nonce);
      } else {
        checkMounts(spec.mounts);
        try {
          container = await this.createSandbox(spec, network, imageId);
        } catch (err) {
          // The tag was rebuilt or removed since it was resolved: resolve it again, once.
          if ((err as DockerError).statusCode !== 404) throw err;
          this.imageIds.delete(spec.sandbox.image);
          imageId = await this.imageId(spec.sandbox.image);
          container = await this.createSandbox(spec, network, imageId);
        }
        const withStdin = spec.stdin !== undefined;
        // Hijacked even without stdin: the output then comes as the raw socket's reads. Read as an HTTP body it
        // went through Node's HTTP parser, which copies every chunk (service CPU for a 200 MB stream: -15%). An
        // upgraded socket has no 'error' listener of Node's: until the read loop below, a reset is logged here.
        stream = (await container.attach({ stream: true, stdout: true, stderr: true, stdin: withStdin, hijack: true })) as NodeJS.ReadWriteStream;
        stream.on('error', (err) => this.log.debug({ err, execId: spec.execId }, 'sandbox stream error'));
        await armWriteQuota();
        await container.start();
        waited = waitFor(container);
        if (spec.stdin !== undefined) stream.end(spec.stdin);
      }
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) kill('client disconnected');
      timer = setTimeout(() => {
        result.timedOut = true;
        kill('time-out');
      }, spec.timeoutMs);

      yield { type: 'started', containerId: container.id, image: spec.sandbox.image, imageId, ...(result.pool ? { pool: result.pool } : {}) };

      let total = 0;
      const max = spec.sandbox.maxOutputBytes;
      const emit = function* (which: 'stdout' | 'stderr', data: Buffer): Generator<RunEvent> {
        if (result.truncated || data.length === 0) return;
        const room = max - total;
        if (data.length > room) {
          if (room > 0) yield { type: 'output', stream: which, data: data.subarray(0, room) };
          total = max;
          result.truncated = true;
          kill('output cap');
          return;
        }
        total += data.length;
        yield { type: 'output', stream: which, data };
      };
      for await (const frame of demuxDockerStream(pacedReads(stream as Duplex))) {
        yield* emit(frame.stream, scanners ? scanners[frame.stream].push(frame.data) : frame.data);
        // The marker on both streams: every byte of the command's output is here, and so is its exit code.
        if (scanners?.stdout.done && scanners.stderr.done) break;
      }
      if (scanners?.stdout.done && scanners.stderr.done) {
        result.exitCode = scanners.stdout.exitCode ?? null;
        // The bootstrap shell exits right after the markers (unless it holds for the artifacts, below).
        if (!spec.scratch?.collect) exiting = waited;
        if (result.exitCode === 137 && !result.timedOut && !result.truncated && !result.writeQuotaExceeded && !signal.aborted) {
          result.oomKilled = (await container.inspect()).State.OOMKilled === true;
        }
        if (spec.scratch?.collect && !result.timedOut && !result.writeQuotaExceeded && !signal.aborted) {
          // The shell has stopped itself after the markers: /scratch is still mounted. The time-out still runs.
          try {
            // Frozen while Docker reads /scratch, so nothing the command left running in the background can
            // swap a checked file for a link mid-copy. The container is removed afterwards, paused or not.
            await container.pause();
            paused = true;
            const tar = (await container.getArchive({ path: SCRATCH_DIR })) as NodeJS.ReadableStream;
            result.collected = await spec.scratch.collect(tar);
          } catch (err) {
            const e = err as Error & { code?: string; entry?: string };
            result.collectError = { code: err instanceof ArchiveError ? e.code! : result.timedOut ? 'timed_out' : 'collect_failed', message: e.message, entry: e.entry };
          }
        }
        return finish();
      }
      if (scanners) for (const which of ['stdout', 'stderr'] as const) yield* emit(which, scanners[which].flush());

      const w = await exitStatus(container, waited);
      if ('err' in w) throw w.err;
      result.exitCode = w.StatusCode;
      // A signal we did not send: the kernel's OOM killer (SIGKILL), or dockerd stopping its containers as it
      // shuts down (SIGTERM). Ask the engine just then, on a new connection: when it is gone or going, this
      // throws and the run ends with docker_unavailable rather than an exit code the command never chose.
      if ((w.StatusCode ?? 0) > 128 && !result.timedOut && !result.truncated && !result.writeQuotaExceeded && !signal.aborted) {
        await this.probe.ping();
        if (w.StatusCode === 137) result.oomKilled = (await container.inspect()).State.OOMKilled === true;
      }
      return finish();
    } catch (err) {
      const error = signal.aborted
        ? { code: 'client_disconnected', message: 'the client went away' }
        : classifyDockerError(err, spec.sandbox.image);
      if (error.code !== 'client_disconnected') this.log.warn({ execId: spec.execId, err }, 'sandbox run failed');
      return { ...finish(), error };
    } finally {
      clearTimeout(timer);
      // Ended already when the output was read to the end; when the run stopped before (a failed start, the
      // client gone, the markers seen), closing it here does not wait for the container's removal to.
      (stream as Duplex | undefined)?.destroy();
      // Kept running through the exit grace when there is one (removeInBackground stops it).
      if (!exiting) watch?.stop();
      signal.removeEventListener('abort', onAbort);
      if (container) this.removeInBackground(container, spec.execId, killing, poolLabel, paused, exiting && { exited: exiting, watch });
      else this.activeExecs.delete(spec.execId);
    }
  }

  /**
   * Starts a session sandbox: the one-shot container settings plus /scratch, running the session shell. Its
   * exec label is the session id, so the reaper spares it while it is open, and its deadline label is the
   * session's maximum lifetime, so any instance reaps it after that.
   */
  async openSession(spec: SessionSpec): Promise<SessionHandle> {
    const network = spec.sandbox.network === 'team' ? await this.teamNetwork(spec.team) : spec.sandbox.network;
    const imageId = await this.imageId(spec.sandbox.image);
    checkMounts(spec.mounts);
    const runSpec: RunSpec = {
      execId: spec.sessionId,
      team: spec.team,
      command: SESSION_KEEPER,
      cwd: SCRATCH_DIR,
      env: {},
      stdin: Buffer.alloc(0),
      mounts: spec.mounts,
      sandbox: spec.sandbox,
      timeoutMs: spec.lifetimeMs,
      scratch: { sizeMb: spec.scratchMb },
    };
    this.activeExecs.add(spec.sessionId);
    let container: Docker.Container | undefined;
    try {
      container = await this.createSandbox(runSpec, network, imageId);
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true, stdin: true, hijack: true })) as NodeJS.ReadWriteStream;
      await container.start();
      const keeperPid = await firstLine(stream, 10_000);
      const c = container;
      let closing: Promise<void> | undefined;
      const session = new DockerSession(c, spec.sandbox.image, imageId, stream, keeperPid, spec.sandbox.user, this.log.child({ sessionId: spec.sessionId }), () => {
        closing ??= new Promise<void>((resolve) => {
          this.removeInBackground(c, spec.sessionId, undefined);
          // removeInBackground drops the session id from activeExecs when done; wait for that.
          const check = () => (this.activeExecs.has(spec.sessionId) ? setTimeout(check, 20) : resolve());
          check();
        });
        return closing;
      });
      await session.watchWrites((stop) => this.watchWrites(spec.mounts, spec.sandbox, spec.sessionId, stop));
      return session;
    } catch (err) {
      if (container) this.removeInBackground(container, spec.sessionId, undefined);
      else this.activeExecs.delete(spec.sessionId);
      throw err;
    }
  }

  /**
   * The write-quota watchdog over a run's read-write mounts (write-quota.ts); none when every mount is
   * read-only. `stop` ends the run, as a time-out does.
   */
  private watchWrites(mounts: readonly AllowedPath[], s: SandboxSettings, id: string, stop: () => void): Promise<WriteWatch | undefined> {
    const quotaBytes = writeQuotaBytes(s.writeQuotaMb);
    return WriteWatch.start(
      mounts.filter((m) => !m.readOnly).map((m) => m.path),
      {
        quotaBytes,
        onBreach: (b) => {
          this.log.warn({ execId: id, reason: b.reason, path: b.path, grownBytes: b.grownBytes, quotaBytes, freeBytes: b.freeBytes, reserveBytes: b.reserveBytes }, `write quota: ${b.message}; stopping the sandbox`);
          stop();
        },
      },
    );
  }

  /** Removal never delays the answer, but is always done: close() waits for it and the reaper backs it up. */
  private removeInBackground(container: Docker.Container, execId: string, killing: Promise<void> | undefined, poolLabel?: string, paused = false, exiting?: { exited: Promise<unknown>; watch?: WriteWatch | undefined }): void {
    const p = (async () => {
      // A container about to exit by itself is let exit first (for at most EXIT_GRACE_MS, none once close() has
      // begun): removing a running one makes the engine kill it, one more runtime call (`runc kill`) per
      // container. Its write-quota watchdog runs until then: a breach still kills it (the run's kill()), which
      // ends the wait.
      if (exiting) {
        let wake = (): void => undefined;
        const givenUp = new Promise<void>((resolve) => (wake = resolve));
        const timer = setTimeout(wake, EXIT_GRACE_MS);
        if (this.closing) wake();
        else this.graceWaiters.add(wake);
        await Promise.race([exiting.exited, givenUp]);
        clearTimeout(timer);
        this.graceWaiters.delete(wake);
        exiting.watch?.stop();
      }
      // A paused container is thawed first: under gVisor (runsc) a forced removal of a paused container waits
      // Docker's 10 s kill time-out, since the SIGKILL sent to the frozen sandbox is lost. Its processes run
      // only until the removal right below kills them, as a one-shot container's background ones do.
      if (paused) await container.unpause().catch(() => undefined);
      await killing;
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          await container.remove({ force: true, v: true });
          break;
        } catch (err) {
          if ((err as DockerError).statusCode === 404) break;
          if (attempt === 2) this.log.error({ execId, err }, 'could not remove sandbox; the reaper will retry');
          else await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
        }
      }
    })().finally(() => {
      this.activeExecs.delete(execId);
      if (poolLabel) this.activeExecs.delete(poolLabel);
      this.removals.delete(p);
    });
    this.removals.add(p);
  }

  /** Creates a sandbox container from its spec (container-spec.ts), knowing whether its runtime is gVisor. */
  private async createSandbox(spec: RunSpec, network: string, imageId: string): Promise<Docker.Container> {
    const gvisor = await this.isGvisor(spec.sandbox.runtime);
    return this.docker.createContainer(containerSpec(spec, this.instance, this.now(), network, imageId, gvisor));
  }

  /** Whether dockerd's runtime of this name is gVisor (runtimeIsGvisor); cached, refreshed by ready(). */
  private isGvisor(runtime: string): Promise<boolean> {
    return cached(this.gvisorRuntimes, runtime, () =>
      (this.docker.info() as Promise<{ Runtimes?: Record<string, DockerRuntimeInfo> }>).then((info) => runtimeIsGvisor(runtime, info.Runtimes?.[runtime])),
    ).catch(() => runtimeIsGvisor(runtime, undefined)); // dockerd cannot say: by the name alone, and ask again next time
  }

  /** The image id (sha256 digest) a tag names, cached; the reaper's tick forgets the cache. */
  imageId(image: string): Promise<string> {
    return cached(this.imageIds, image, () =>
      this.docker
        .getImage(image)
        .inspect()
        .then((i) => i.Id),
    );
  }

  /**
   * A bridge network per team, created on first use: Docker isolates bridge networks from each other, so one
   * team's sandboxes cannot reach another's.
   */
  teamNetwork(team: string): Promise<string> {
    return cached(this.networks, team, async () => {
      const name = teamNetworkName(team);
      try {
        await this.docker.getNetwork(name).inspect();
      } catch (err) {
        if ((err as DockerError).statusCode !== 404) throw err;
        await this.docker
          .createNetwork({ Name: name, Driver: 'bridge', CheckDuplicate: true, Labels: { [LABEL_MANAGED]: 'true', [LABEL_TEAM]: team } })
          .catch((e: DockerError) => {
            if (e.statusCode !== 409) throw e; // created concurrently: fine
          });
        this.log.info({ team, network: name }, 'created team network');
      }
      return name;
    });
  }

  async ready(images: string[]): Promise<ReadyState> {
    try {
      const info = (await this.docker.info()) as { Runtimes?: Record<string, DockerRuntimeInfo> };
      const runtimes = Object.keys(info.Runtimes ?? {}).sort();
      // What isGvisor would otherwise ask dockerd for again.
      for (const [name, r] of Object.entries(info.Runtimes ?? {})) this.gvisorRuntimes.set(name, Promise.resolve(runtimeIsGvisor(name, r)));
      const present: Record<string, boolean> = {};
      for (const image of images) {
        present[image] = await this.docker
          .getImage(image)
          .inspect()
          .then(
            () => true,
            () => false,
          );
      }
      const missing = Object.entries(present).filter(([, ok]) => !ok).map(([i]) => i);
      if (missing.length > 0) {
        return { ok: false, reason: `sandbox image missing: ${missing.join(', ')} (build it with \`npm run images\`)`, runtimes, images: present };
      }
      return { ok: true, runtimes, images: present };
    } catch (err) {
      return { ok: false, reason: classifyDockerError(err, '').message };
    }
  }

  /**
   * Watches the engine: `down` when it stops answering, or when its event stream ends (so a restart quicker
   * than one check is seen too), `up` when it answers again — and once at the start if it answers then.
   */
  watchEngine(handlers: { up: () => Promise<void> | void; down: (reason: string) => void }, intervalMs = 1000): { stop(): void } {
    let stopped = false;
    let state: 'up' | 'down' | 'unknown' = 'unknown';
    let events: (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
    let lost = false;
    let wake: (() => void) | undefined;
    const subscribe = async () => {
      try {
        // Daemon events are rare (a config reload): the stream is quiet until it ends with the engine.
        const s = (await this.docker.getEvents({ filters: { type: ['daemon'] } })) as NodeJS.ReadableStream & { destroy?: () => void };
        events = s;
        const gone = () => {
          if (events !== s) return;
          events = undefined;
          lost = true;
          wake?.();
        };
        s.on('end', gone);
        s.on('close', gone);
        s.on('error', gone);
        s.resume();
      } catch {
        lost = true;
      }
    };
    void (async () => {
      while (!stopped) {
        const reason = await this.probe.ping().then(
          () => undefined,
          (err: unknown) => classifyDockerError(err, '').message,
        );
        if (stopped) break;
        if (lost && state === 'up') {
          state = 'down';
          handlers.down(reason ?? 'the Docker engine restarted');
        }
        lost = false;
        if (reason === undefined && state !== 'up') {
          state = 'up';
          await subscribe();
          try {
            await handlers.up();
          } catch (err) {
            this.log.warn({ err }, 'engine watch: recovery step failed');
          }
        } else if (reason !== undefined && state !== 'down') {
          state = 'down';
          handlers.down(reason);
        }
        if (stopped || lost) continue;
        await new Promise<void>((r) => {
          const t = setTimeout(r, intervalMs);
          t.unref();
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
        wake = undefined;
      }
    })();
    return {
      stop: () => {
        stopped = true;
        wake?.();
        const s = events;
        events = undefined;
        s?.destroy?.();
      },
    };
  }

  /**
   * After the engine came back (or first answered): forget what a restart may have changed, reap what the
   * outage left (containers killed mid-run whose removal failed), and refill the warm pool now rather than
   * after its circuit breaker's cool-down.
   */
  async recovered(): Promise<number> {
    this.imageIds.clear();
    this.gvisorRuntimes.clear();
    this.networks.clear();
    this.pool.resetBreaker();
    const removed = await this.reap();
    if (!this.poolTemplates.some((t) => t.sandbox.pool.size > 0)) return removed;
    await this.configurePool(this.poolTemplates);
    return removed;
  }

  async reap(): Promise<number> {
    this.imageIds.clear();
    this.pool.sweep();
    this.pool.retryIfClosedBreaker();
    if (this.poolTemplates.some((t) => t.sandbox.pool.size > 0)) await this.configurePool(this.poolTemplates).catch(() => undefined);
    const list = await this.docker.listContainers({ all: true, filters: { label: [`${LABEL_MANAGED}=true`] } });
    const now = this.now();
    let removed = 0;
    await Promise.all(
      list.map(async (c) => {
        const labels = c.Labels ?? {};
        const mine = labels[LABEL_INSTANCE] === this.instance && !this.activeExecs.has(labels[LABEL_EXEC] ?? '');
        const expired = Number(labels[LABEL_DEADLINE] ?? Infinity) < now && !this.activeExecs.has(labels[LABEL_EXEC] ?? '');
        if (!mine && !expired) return;
        try {
          await this.docker.getContainer(c.Id).remove({ force: true, v: true });
          removed++;
          this.log.info({ containerId: c.Id, execId: labels[LABEL_EXEC], team: labels['io.execgate.team'] }, 'reaped leftover sandbox');
        } catch (err) {
          if ((err as DockerError).statusCode !== 404) this.log.warn({ containerId: c.Id, err }, 'reaper could not remove container');
        }
      }),
    );
    // A /scratch volume outlives its container only when the removal was cut short (the engine stopping
    // mid-way): no container uses it any more, so it is a leftover whichever instance made it.
    const volumes = (await this.docker.listVolumes({ filters: { label: [`${LABEL_MANAGED}=true`], dangling: ['true'] } })).Volumes ?? [];
    for (const v of volumes) {
      await this.docker
        .getVolume(v.Name)
        .remove()
        .then(
          () => this.log.info({ volume: v.Name }, 'reaped leftover scratch volume'),
          (err: DockerError) => err.statusCode !== 404 && err.statusCode !== 409 && this.log.warn({ volume: v.Name, err }, 'reaper could not remove volume'),
        );
    }
    return removed;
  }

  /** Removes the warm pool and waits for every background removal. */
  async close(): Promise<void> {
    this.closing = true;
    for (const wake of this.graceWaiters) wake();
    await this.pool.close();
    while (this.removals.size > 0) await Promise.allSettled([...this.removals]);
  }
}
