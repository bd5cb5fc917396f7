import Docker from 'dockerode';
import type { Logger } from 'pino';
import { LABEL_DEADLINE, LABEL_EXEC, LABEL_INSTANCE, LABEL_MANAGED, LABEL_TEAM, containerSpec, teamNetworkName } from './container-spec.js';
import { demuxDockerStream } from './demux.js';
import type { ReadyState, RunEvent, RunResult, RunSpec, Runner } from './types.js';

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
  if (e?.code === 'ENOENT' || e?.code === 'ECONNREFUSED' || e?.code === 'EACCES' || e?.code === 'ECONNRESET') {
    return { code: 'docker_unavailable', message: `the Docker engine is not reachable (${e.code}): ${msg}` };
  }
  if (e?.statusCode === 404 && /image/i.test(msg)) {
    return { code: 'image_missing', message: `sandbox image ${image} is not present; build it with \`npm run images\`` };
  }
  if (/runtime/i.test(msg) && /unknown|invalid|not found/i.test(msg)) {
    return { code: 'runtime_unavailable', message: msg };
  }
  return { code: 'runner_failed', message: msg };
}

export class DockerRunner implements Runner {
  readonly docker: Docker;
  private readonly instance: string;
  private readonly log: Logger;
  private readonly now: () => number;
  /** Exec ids whose container may exist: the reaper never touches these. */
  private readonly activeExecs = new Set<string>();
  private readonly removals = new Set<Promise<void>>();
  private readonly networks = new Map<string, Promise<string>>();
  private readonly imageIds = new Map<string, Promise<string>>();

  constructor(opts: DockerRunnerOptions) {
    this.docker = opts.docker ?? new Docker();
    this.instance = opts.instance;
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
  }

  async *run(spec: RunSpec, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void> {
    const t0 = this.now();
    const result: RunResult = { exitCode: null, durationMs: 0, timedOut: false, oomKilled: false, truncated: false };
    const finish = (): RunResult => ({ ...result, durationMs: this.now() - t0 });
    if (signal.aborted) return { ...finish(), error: { code: 'client_disconnected', message: 'the client went away before the run' } };

    this.activeExecs.add(spec.execId);
    let container: Docker.Container | undefined;
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

    try {
      const network = spec.sandbox.network === 'team' ? await this.teamNetwork(spec.team) : spec.sandbox.network;
      let imageId = await this.imageId(spec.sandbox.image);
      try {
        container = await this.docker.createContainer(containerSpec(spec, this.instance, this.now(), network, imageId));
      } catch (err) {
        // The tag was rebuilt or removed since it was resolved: resolve it again, once.
        if ((err as DockerError).statusCode !== 404) throw err;
        this.imageIds.delete(spec.sandbox.image);
        imageId = await this.imageId(spec.sandbox.image);
        container = await this.docker.createContainer(containerSpec(spec, this.instance, this.now(), network, imageId));
      }
      const withStdin = spec.stdin !== undefined;
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true, stdin: withStdin, hijack: withStdin })) as NodeJS.ReadWriteStream;
      await container.start();
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) kill('client disconnected');
      timer = setTimeout(() => {
        result.timedOut = true;
        kill('time-out');
      }, spec.timeoutMs);
      const waited = container.wait().then(
        (w: { StatusCode: number }) => w,
        (err: unknown) => ({ StatusCode: null as number | null, err }),
      );
      if (spec.stdin !== undefined) stream.end(spec.stdin);

      yield { type: 'started', containerId: container.id, image: spec.sandbox.image, imageId };

      let total = 0;
      const max = spec.sandbox.maxOutputBytes;
      for await (const frame of demuxDockerStream(stream as AsyncIterable<Buffer>)) {
        if (result.truncated) continue; // drain what is in flight until the kill lands
        const room = max - total;
        if (frame.data.length > room) {
          if (room > 0) yield { type: 'output', stream: frame.stream, data: frame.data.subarray(0, room) };
          total = max;
          result.truncated = true;
          kill('output cap');
          continue;
        }
        total += frame.data.length;
        yield { type: 'output', stream: frame.stream, data: frame.data };
      }

      const w = await waited;
      if ('err' in w) throw w.err;
      result.exitCode = w.StatusCode;
      // Only a SIGKILL we did not send can be the kernel's OOM killer: inspect just then.
      if (w.StatusCode === 137 && !result.timedOut && !result.truncated && !signal.aborted) {
        const info = await container.inspect();
        result.oomKilled = info.State.OOMKilled === true;
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
      signal.removeEventListener('abort', onAbort);
      if (container) this.removeInBackground(container, spec.execId, killing);
      else this.activeExecs.delete(spec.execId);
    }
  }

  /** Removal never delays the answer, but is always done: close() waits for it and the reaper backs it up. */
  private removeInBackground(container: Docker.Container, execId: string, killing: Promise<void> | undefined): void {
    const p = (async () => {
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
      this.removals.delete(p);
    });
    this.removals.add(p);
  }

  /** The image id (sha256 digest) a tag names, cached; the reaper's tick forgets the cache. */
  imageId(image: string): Promise<string> {
    let p = this.imageIds.get(image);
    if (!p) {
      p = this.docker
        .getImage(image)
        .inspect()
        .then((i) => i.Id);
      p.catch(() => this.imageIds.delete(image));
      this.imageIds.set(image, p);
    }
    return p;
  }

  /**
   * A bridge network per team, created on first use: Docker isolates bridge networks from each other, so one
   * team's sandboxes cannot reach another's.
   */
  teamNetwork(team: string): Promise<string> {
    let p = this.networks.get(team);
    if (!p) {
      const name = teamNetworkName(team);
      p = (async () => {
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
      })();
      p.catch(() => this.networks.delete(team));
      this.networks.set(team, p);
    }
    return p;
  }

  async ready(images: string[]): Promise<ReadyState> {
    try {
      const info = (await this.docker.info()) as { Runtimes?: Record<string, unknown> };
      const runtimes = Object.keys(info.Runtimes ?? {}).sort();
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

  async reap(): Promise<number> {
    this.imageIds.clear();
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
    return removed;
  }

  /** Waits for every background removal. */
  async close(): Promise<void> {
    while (this.removals.size > 0) await Promise.allSettled([...this.removals]);
  }
}
