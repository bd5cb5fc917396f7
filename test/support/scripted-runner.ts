import { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { RunEvent, RunResult, RunSpec, Runner } from '../../src/runner/types.js';
import type { SessionCommand, SessionHandle } from '../../src/runner/session.js';
import type { FakeRunner } from './fake-runner.js';
import { testApp, type TestApp } from './app.js';

/** What one scripted run does. */
export interface Script {
  stdout?: (string | Buffer)[];
  stderr?: (string | Buffer)[];
  /** null: killed without an exit status. */
  exitCode?: number | null;
  timedOut?: boolean;
  oomKilled?: boolean;
  /** Awaited after stdout and before stderr and the exit: the test decides when the run ends. */
  hold?: Promise<void>;
  /** Keep the "container" running until the run is aborted. */
  hang?: boolean;
  error?: { code: string; message: string };
  /** Files left in /scratch for `collect` (path → content), handed to the service's collector as Docker's tar. */
  scratch?: Record<string, string | Buffer>;
}

/** What a script sees of the run it scripts. */
export interface ScriptContext {
  command: string;
  cwd: string;
  env: Record<string, string>;
  stdin?: Buffer | undefined;
  /** The staged tar of the request's input files, when it had some. */
  inputTar?: string | undefined;
  /** Set for a command run in a session: its /scratch, as path → content. */
  files?: Map<string, Buffer> | undefined;
}

/**
 * Puts a scripted runner behind the app of `testApp()`: output, exit codes (null too), time-outs and held
 * runs from `script`, a record of every run that saw its abort signal, and sessions whose /scratch is a map
 * in memory (FakeRunner has none). It replaces the FakeRunner instance's own `run`, so `runner.runs` and
 * `runner.live` keep counting.
 */
export class ScriptedRunner {
  /** Exec ids (or session command strings) of runs whose abort signal fired while they ran. */
  readonly aborted: string[] = [];
  readonly sessions = new Map<string, FakeSession>();
  #abortWaiters: (() => void)[] = [];

  constructor(
    readonly runner: FakeRunner,
    public script: (ctx: ScriptContext) => Script,
  ) {
    runner.run = (spec, signal) => {
      runner.runs.push(spec);
      return this.#run(spec.execId, { command: spec.command, cwd: spec.cwd, env: spec.env, stdin: spec.stdin, inputTar: spec.scratch?.input }, spec.sandbox.image, signal, spec);
    };
    (runner as Runner).openSession = async (spec) => {
      const s = new FakeSession(`fake_session_${this.sessions.size + 1}`, (cmd, files, signal) =>
        this.#run(`session:${spec.sessionId}`, { command: cmd.command, cwd: cmd.cwd, env: cmd.env, stdin: cmd.stdin, files }, spec.sandbox.image, signal),
      );
      this.sessions.set(spec.sessionId, s);
      return s;
    };
  }

  /** Resolves once the run of `id` (any run, without it) has seen its abort signal. */
  async sawAbort(id?: string): Promise<void> {
    while (!(id === undefined ? this.aborted.length > 0 : this.aborted.includes(id))) await new Promise<void>((resolve) => this.#abortWaiters.push(resolve));
  }

  async *#run(id: string, ctx: ScriptContext, image: string, signal: AbortSignal, spec?: RunSpec): AsyncGenerator<RunEvent, RunResult, void> {
    const s = this.script(ctx);
    const onAbort = () => {
      this.aborted.push(id);
      for (const w of this.#abortWaiters.splice(0)) w();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const result = (exitCode: number | null, extra: Partial<RunResult> = {}): RunResult => ({
      exitCode,
      durationMs: 5,
      timedOut: false,
      oomKilled: false,
      truncated: false,
      ...extra,
    });
    if (s.error) return result(null, { error: s.error });
    this.runner.live++;
    try {
      yield { type: 'started', containerId: `fake_${this.runner.runs.length}`, image, imageId: 'sha256:fake' };
      for (const c of s.stdout ?? []) yield { type: 'output', stream: 'stdout', data: Buffer.from(c) };
      if (s.hold) await s.hold;
      for (const c of s.stderr ?? []) yield { type: 'output', stream: 'stderr', data: Buffer.from(c) };
      if (s.hang) {
        await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
        return result(137, { error: { code: 'client_disconnected', message: 'aborted' } });
      }
      const collected = s.scratch && spec?.scratch?.collect ? await spec.scratch.collect(scratchTar(new Map(Object.entries(s.scratch).map(([k, v]) => [k, Buffer.from(v)])))) : undefined;
      return result(s.exitCode === undefined ? 0 : s.exitCode, { timedOut: s.timedOut ?? false, oomKilled: s.oomKilled ?? false, ...(collected ? { collected } : {}) });
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.runner.live--;
    }
  }
}

/** /scratch as Docker's archive API gives it: every entry prefixed `scratch/`. */
function scratchTar(files: Map<string, Buffer>): NodeJS.ReadableStream {
  const pack = tar.pack();
  pack.entry({ name: 'scratch', type: 'directory', mode: 0o755 });
  const dirs = new Set<string>();
  for (const name of files.keys()) for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) dirs.add(name.slice(0, i));
  for (const d of [...dirs].sort()) pack.entry({ name: `scratch/${d}`, type: 'directory', mode: 0o755 });
  for (const [name, data] of files) pack.entry({ name: `scratch/${name}`, type: 'file', mode: 0o644, size: data.length }, data);
  pack.finalize();
  // A streamx Readable: the service only iterates it, as it does Docker's stream.
  return pack as unknown as NodeJS.ReadableStream;
}

/** A session "container": /scratch is a map; files go in and out as tar, as the Docker session's do. */
export class FakeSession implements SessionHandle {
  readonly imageId = 'sha256:fake';
  readonly files = new Map<string, Buffer>();
  alive = true;

  constructor(
    readonly containerId: string,
    private readonly runCommand: (cmd: SessionCommand, files: Map<string, Buffer>, signal: AbortSignal) => AsyncGenerator<RunEvent, RunResult, void>,
  ) {}

  run(cmd: SessionCommand, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void> {
    return this.runCommand(cmd, this.files, signal);
  }

  async putArchive(input: NodeJS.ReadableStream | Buffer): Promise<void> {
    const extract = tar.extract();
    const source = Buffer.isBuffer(input) ? Readable.from([input]) : (input as Readable);
    source.pipe(extract);
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      if (entry.header.type === 'file') this.files.set(entry.header.name.replace(/^\.\//, ''), Buffer.concat(chunks));
    }
  }

  async getArchive(): Promise<NodeJS.ReadableStream> {
    return scratchTar(this.files);
  }

  async close(): Promise<void> {
    this.alive = false;
  }
}

/** The real app with a ScriptedRunner behind it, listening on a loopback port (client and CLI tests). */
export async function listeningApp(opts: { exec?: Record<string, unknown>; script?: (ctx: ScriptContext) => Script } = {}): Promise<{ t: TestApp; runner: ScriptedRunner; url: string }> {
  const t = await testApp(opts.exec ? { exec: opts.exec } : {});
  const runner = new ScriptedRunner(t.runner, opts.script ?? ((c) => ({ stdout: [`ran: ${c.command}\n`] })));
  const url = await t.app.listen({ host: '127.0.0.1', port: 0 });
  return { t, runner, url };
}
