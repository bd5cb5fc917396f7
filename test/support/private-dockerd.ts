import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';

/**
 * A second Docker engine of our own, for fault tests that stop, restart or withhold Docker: the system engine
 * (/var/run/docker.sock) is shared with every other test and must never be disturbed. It has its own socket,
 * data root, exec root (and so its own containerd), pidfile and config, and registers runsc with
 * --network=none as .ci/setup-docker.sh does for the system engine.
 *
 * It runs in a network namespace of its own (`unshare --net`): dockerd's network set-up is host-wide
 * otherwise, and with --bridge=none it deletes the interface named docker0 — the system engine's bridge.
 * Its API is a unix socket, a file, so the service reaches it from the host's namespace all the same;
 * sandboxes run with network none anyway. No bridge, no iptables rules, no NAT.
 *
 * The data root is kept between runs (the sandbox image is copied in once, about 5 s, and again only when the
 * system engine's image id changes); everything else (containers, volumes) is removed at start and at
 * dispose. A dockerd left running by a crashed earlier run (found through the pidfile) is stopped first.
 */
export interface PrivateDockerd {
  /** For DOCKER_HOST. */
  readonly host: string;
  readonly socket: string;
  /** A client of the private engine. */
  readonly docker: Docker;
  readonly running: boolean;
  /** Starts dockerd and waits until it answers. */
  start(): Promise<void>;
  /** SIGTERM, as an init system stops Docker (running containers get SIGTERM, then SIGKILL after 10 s), and waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash: containers keep running under their shims until dockerd is back. */
  kill(): Promise<void>;
  /** stop() then start(). */
  restart(): Promise<void>;
  /** Copies images from the system engine unless the same image id is already there. */
  loadImages(images: string[]): Promise<void>;
  /** Every container (and volume) on the private engine. */
  containers(): Promise<Docker.ContainerInfo[]>;
  volumes(): Promise<string[]>;
  /** Removes every container and volume, stops dockerd. Safe to call whatever state things are in. */
  dispose(): Promise<void>;
  /** dockerd's own log (for failure messages). */
  log(): string;
}

const BASE = process.env.EXECGATE_PRIVATE_DOCKERD_DIR ?? '/var/tmp/execgate-private-dockerd';
const DAEMON_JSON = { runtimes: { runsc: { path: '/usr/bin/runsc', runtimeArgs: ['--network=none'] } } };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Running, and not a zombie (a zombie answers kill(pid, 0) too, and dockerd would take it for a live daemon). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  for (let t = 0; t < ms; t += 100) {
    if (!alive(pid)) return true;
    await sleep(100);
  }
  return !alive(pid);
}

/**
 * A dockerd (or containerd) an earlier run or a SIGKILL left behind: its pidfile names it, its command line
 * proves it ours. It is stopped, and the pidfile removed, so that the next dockerd neither refuses to start
 * nor waits on a containerd that is going away.
 */
async function stopLeftover(pidfile: string, mark: string, program: string): Promise<void> {
  if (!existsSync(pidfile)) return;
  const pid = Number(readFileSync(pidfile, 'utf8').trim());
  if (Number.isInteger(pid) && pid > 1 && alive(pid)) {
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      // gone meanwhile
    }
    if (!cmdline.includes(program) || !cmdline.includes(mark)) return;
    process.kill(pid, 'SIGTERM');
    if (!(await waitGone(pid, 30_000))) process.kill(pid, 'SIGKILL');
    await waitGone(pid, 5_000);
  }
  rmSync(pidfile, { force: true });
}

export async function privateDockerd(name = 'default'): Promise<PrivateDockerd> {
  const dir = join(BASE, name);
  const dataRoot = join(dir, 'data');
  const execRoot = join(dir, 'exec');
  const socket = join(dir, 'docker.sock');
  const pidfile = join(dir, 'dockerd.pid');
  const config = join(dir, 'daemon.json');
  const logPath = join(dir, 'dockerd.log');
  mkdirSync(dataRoot, { recursive: true });
  mkdirSync(execRoot, { recursive: true });
  writeFileSync(config, JSON.stringify(DAEMON_JSON));
  await stopLeftover(pidfile, dataRoot, 'dockerd');

  const docker = new Docker({ socketPath: socket });
  let proc: ChildProcess | undefined;
  let exited: Promise<void> | undefined;

  const api = {
    host: `unix://${socket}`,
    socket,
    docker,
    get running() {
      return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
    },
    log: () => (existsSync(logPath) ? readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n') : ''),

    async start(): Promise<void> {
      if (api.running) return;
      // After a SIGKILLed dockerd its containerd lingers a moment; a dockerd started meanwhile takes it for a
      // live one and waits for a socket that never comes. Let it go first (it is ours: its config is here).
      await stopLeftover(join(execRoot, 'containerd', 'containerd.pid'), execRoot, 'containerd');
      const fd = openSync(logPath, 'a');
      try {
        proc = spawn(
          'unshare',
          [
            '--net',
            '--',
            'dockerd',
            `--host=unix://${socket}`,
            `--data-root=${dataRoot}`,
            `--exec-root=${execRoot}`,
            `--pidfile=${pidfile}`,
            `--config-file=${config}`,
            '--bridge=none',
            '--iptables=false',
            '--ip6tables=false',
            '--ip-masq=false',
          ],
          { stdio: ['ignore', fd, fd], detached: true },
        );
      } finally {
        closeSync(fd);
      }
      const p = proc;
      exited = new Promise((r) => p.once('exit', () => r()));
      p.once('error', () => undefined);
      for (let i = 0; i < 300; i++) {
        if (p.exitCode !== null || p.signalCode !== null) break;
        if (await docker.ping().then(() => true, () => false)) return;
        await sleep(100);
      }
      throw new Error(`the private dockerd did not come up:\n${api.log()}`);
    },

    async stop(): Promise<void> {
      if (!proc || !api.running) return;
      proc.kill('SIGTERM');
      const done = await Promise.race([exited!.then(() => true), sleep(60_000).then(() => false)]);
      if (!done) {
        proc.kill('SIGKILL');
        await exited;
      }
    },

    async kill(): Promise<void> {
      if (!proc || !api.running) return;
      proc.kill('SIGKILL');
      await exited;
    },

    async restart(): Promise<void> {
      await api.stop();
      await api.start();
    },

    async loadImages(images: string[]): Promise<void> {
      const system = new Docker();
      for (const image of images) {
        const want = (await system.getImage(image).inspect()).Id;
        const have = await docker
          .getImage(image)
          .inspect()
          .then(
            (i) => i.Id,
            () => undefined,
          );
        if (have === want) continue;
        const tar = await system.getImage(image).get();
        const res = (await docker.loadImage(tar)) as NodeJS.ReadableStream;
        await new Promise<void>((resolve, reject) => {
          res.on('error', reject);
          res.on('end', resolve);
          res.resume();
        });
        const got = (await docker.getImage(image).inspect()).Id;
        if (got !== want) throw new Error(`loading ${image} into the private dockerd gave ${got}, expected ${want}`);
      }
    },

    async containers(): Promise<Docker.ContainerInfo[]> {
      return docker.listContainers({ all: true });
    },

    async volumes(): Promise<string[]> {
      return ((await docker.listVolumes()).Volumes ?? []).map((v) => v.Name);
    },

    async dispose(): Promise<void> {
      try {
        if (!api.running) await api.start();
        for (const c of await api.containers()) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
        for (const v of await api.volumes()) await docker.getVolume(v).remove({ force: true }).catch(() => undefined);
      } finally {
        // The data root (with the image) is kept for the next run.
        await api.stop();
      }
    },
  };
  return api;
}
