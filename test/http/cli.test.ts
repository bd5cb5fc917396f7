import { createServer } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { ExecgateClient } from '../../src/client/index.js';
import {
  EXIT_BROKEN_PIPE,
  EXIT_DENIED,
  EXIT_ERROR,
  EXIT_INTERRUPTED,
  EXIT_KILLED,
  EXIT_NOT_APPROVED,
  EXIT_TIMED_OUT,
  EXIT_USAGE,
  execCommand,
} from '../../src/cli/exec.js';
import { TOKENS, type TestApp } from '../support/app.js';
import { listeningApp, type ScriptedRunner } from '../support/scripted-runner.js';

// `execgate exec` in-process, against the real app listening on a port with a scripted runner behind it.
let t: TestApp;
let runner: ScriptedRunner;
let url: string;

afterEach(async () => {
  await t?.close();
});

async function start(opts: Parameters<typeof listeningApp>[0] = {}) {
  ({ t, runner, url } = await listeningApp(opts));
}

/** A writable that keeps what it is given and lets a test react to it. */
class Capture extends Writable {
  readonly chunks: Buffer[] = [];
  isTTY?: boolean;
  onData: (text: string) => void = () => undefined;

  constructor(opts: { tty?: boolean; fail?: boolean } = {}) {
    super({
      write: (chunk: Buffer, _enc, cb) => {
        if (opts.fail) return cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
        this.chunks.push(Buffer.from(chunk));
        this.onData(this.text);
        cb();
      },
    });
    if (opts.tty) this.isTTY = true;
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get text(): string {
    return this.bytes.toString();
  }

  /** Resolves with the first match of `re` in everything written so far or later. */
  waitFor(re: RegExp): Promise<RegExpMatchArray> {
    return new Promise((resolve) => {
      const check = (text: string) => {
        const m = re.exec(text);
        if (m) {
          this.onData = () => undefined;
          resolve(m);
        }
      };
      this.onData = check;
      check(this.text);
    });
  }
}

function cli(argv: string[], opts: { env?: Record<string, string>; signal?: AbortSignal; stdout?: Capture; stderr?: Capture; stdin?: AsyncIterable<Uint8Array> } = {}) {
  const stdout = opts.stdout ?? new Capture();
  const stderr = opts.stderr ?? new Capture();
  const code = execCommand(argv, { stdout, stderr, env: opts.env ?? { EXECGATE_URL: url, EXECGATE_TOKEN: TOKENS.agent }, signal: opts.signal ?? new AbortController().signal, stdin: opts.stdin });
  return { code, stdout, stderr };
}

const human = () => new ExecgateClient({ url, token: TOKENS.human });

describe('execgate exec', () => {
  it('streams stdout and stderr bytes and exits 0', async () => {
    const binary = Buffer.from([0xff, 0x00, 0x41]);
    await start({ script: () => ({ stdout: ['hello\n', binary], stderr: ['careful\n'] }) });
    const r = cli(['--', 'make', 'build']);
    expect(await r.code).toBe(0);
    expect(r.stdout.bytes).toEqual(Buffer.concat([Buffer.from('hello\n'), binary]));
    expect(r.stderr.text).toBe('careful\n');
    expect(t.runner.runs[0]?.command).toBe('make build');
  });

  it('sends its own stdin with --stdin, and none without it', async () => {
    await start({ script: (c) => ({ stdout: [`got ${c.stdin === undefined ? 'nothing' : JSON.stringify(c.stdin.toString())}\n`] }) });
    const input = async function* () {
      yield Buffer.from('line 1\n');
      yield Buffer.from('line 2\n');
    };
    const sent = cli(['--stdin', '--', 'cat'], { stdin: input() });
    expect(await sent.code).toBe(0);
    expect(sent.stdout.text).toBe('got "line 1\\nline 2\\n"\n');
    const none = cli(['--', 'cat'], { stdin: input() });
    expect(await none.code).toBe(0);
    expect(none.stdout.text).toBe('got nothing\n');
    const big = async function* () {
      for (let i = 0; i < 5; i++) yield Buffer.alloc(1 << 20);
    };
    const tooBig = cli(['--stdin', '--', 'cat'], { stdin: big() });
    expect(await tooBig.code).toBe(125);
    expect(tooBig.stderr.text).toMatch(/--stdin: more than 4194304 bytes/);
    expect(t.runner.runs).toHaveLength(2);
  });

  it("exits with the command's own code", async () => {
    await start({ script: () => ({ stderr: ['no\n'], exitCode: 3 }) });
    expect(await cli(['--', 'false']).code).toBe(3);
  });

  it('uses one word after -- as the whole command; flags override the environment', async () => {
    await start();
    const r = cli(['--url', url, '--token', TOKENS.agent, '--cwd', '.', '--env', 'A=1', '--env', 'B=x=y', '--timeout', '5000', '--', 'ls | wc -l'], {
      env: { EXECGATE_URL: 'http://127.0.0.1:1', EXECGATE_TOKEN: 'wrong' },
    });
    expect(await r.code).toBe(0);
    expect(t.runner.runs[0]).toMatchObject({ command: 'ls | wc -l', cwd: t.dir, env: { A: '1', B: 'x=y' }, timeoutMs: 5000 });
  });

  it('denied by the policy: 77, with the segment and the pattern', async () => {
    await start();
    const r = cli(['--', 'rm', '-rf', 'build']);
    expect(await r.code).toBe(EXIT_DENIED);
    expect(r.stderr.text).toMatch(/^execgate: denied by policy \(blocked_pattern\): segment 1 `rm -f -r build`.*"rm -rf"\n$/);
    expect(r.stdout.text).toBe('');
    expect(t.runner.runs).toHaveLength(0);
  });

  it('waits for approval with one line, then runs once approved', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const r = cli(['--', 'make deploy']);
    const [, id] = await r.stderr.waitFor(/waiting for approval \(id (apr_[\w-]+)\)\n/);
    await human().approvals.approve(id!, { note: 'ship it' });
    expect(await r.code).toBe(0);
    expect(r.stderr.text).toBe(`execgate: waiting for approval (id ${id})\nexecgate: approved by alice: ship it\n`);
    expect(r.stdout.text).toBe('ran: make deploy\n');
  });

  it('on a terminal the wait is a spinner, cleared when resolved', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const r = cli(['--', 'make deploy'], { stderr: new Capture({ tty: true }) });
    const [, id] = await r.stderr.waitFor(/waiting for approval \(id (apr_[\w-]+)\)/);
    await human().approvals.approve(id!);
    expect(await r.code).toBe(0);
    expect(r.stderr.text).toMatch(new RegExp(`^\\r\\x1b\\[2K⠋ execgate: waiting for approval \\(id ${id}\\)`));
    expect(r.stderr.text).toMatch(/\r\x1b\[2Kexecgate: approved by alice\n$/);
  });

  it('rejected: 78 with who and why; nothing runs', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const r = cli(['--', 'make deploy']);
    const [, id] = await r.stderr.waitFor(/\(id (apr_[\w-]+)\)/);
    await human().approvals.reject(id!, { reason: 'not today' });
    expect(await r.code).toBe(EXIT_NOT_APPROVED);
    expect(r.stderr.text).toMatch(/execgate: not approved: rejected by alice: not today\n$/);
    expect(t.runner.runs).toHaveLength(0);
  });

  it('expired: 78', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const r = cli(['--', 'ls']);
    await r.stderr.waitFor(/waiting for approval/);
    t.clock.advance(t.config.approvals.timeoutMs + 1);
    expect(await r.code).toBe(EXIT_NOT_APPROVED);
    expect(r.stderr.text).toContain('the approval expired');
  });

  it('--no-wait: a command that needs approval is denied (77) instead of waiting', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const r = cli(['--no-wait', '--', 'ls']);
    expect(await r.code).toBe(EXIT_DENIED);
    expect(r.stderr.text).toContain('(approval_unavailable)');
    expect(t.service.approvals.list(null)).toHaveLength(0);
  });

  it('timed out: 124; killed without a status: 137', async () => {
    await start({ script: (c) => (c.command === 'sleep 99' ? { stdout: ['zz\n'], timedOut: true, exitCode: 137 } : { exitCode: null, oomKilled: true }) });
    const timed = cli(['--', 'sleep 99']);
    expect(await timed.code).toBe(EXIT_TIMED_OUT);
    expect(timed.stdout.text).toBe('zz\n');
    expect(timed.stderr.text).toMatch(/^execgate: timed out after \d+ ms; the command was ended\n$/);
    const killed = cli(['--', 'eat-memory']);
    expect(await killed.code).toBe(EXIT_KILLED);
    expect(killed.stderr.text).toContain('out of memory');
  });

  it('an execgate error (runner failed, bad token, unreachable) is 125 with one line', async () => {
    await start({ script: () => ({ error: { code: 'image_missing', message: 'sandbox image missing' } }) });
    const failed = cli(['--', 'ls']);
    expect(await failed.code).toBe(EXIT_ERROR);
    expect(failed.stderr.text).toBe('execgate: image_missing: sandbox image missing\n');

    const unauthorized = cli(['--', 'ls'], { env: { EXECGATE_URL: url, EXECGATE_TOKEN: 'nope' } });
    expect(await unauthorized.code).toBe(EXIT_ERROR);
    expect(unauthorized.stderr.text).toMatch(/^execgate: unauthorized: .*EXECGATE_TOKEN\)\n$/);

    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    await new Promise<void>((r) => server.close(() => r()));
    const unreachable = cli(['--url', `http://127.0.0.1:${port}`, '--', 'ls'], { env: {} });
    expect(await unreachable.code).toBe(EXIT_ERROR);
    expect(unreachable.stderr.text).toMatch(new RegExp(`^execgate: could not reach execgate at http://127.0.0.1:${port}.*\\n$`));
  });

  it('Ctrl-C (the abort signal) ends the run on the server and exits 130', async () => {
    await start({ script: () => ({ stdout: ['started\n'], hang: true }) });
    const ac = new AbortController();
    const r = cli(['--', 'tail -f log'], { signal: ac.signal });
    await r.stdout.waitFor(/started/);
    ac.abort();
    expect(await r.code).toBe(EXIT_INTERRUPTED);
    expect(r.stderr.text).toBe('execgate: interrupted; the command was ended\n');
    await runner.sawAbort(t.runner.runs[0]!.execId);
  });

  it('Ctrl-C while waiting for approval withdraws the request', async () => {
    await start({ exec: { mode: 'approval-required' } });
    const ac = new AbortController();
    // The server notices the closed connection on its own time; it then withdraws the approval.
    const resolved = new Promise<Record<string, unknown>>((resolve) => {
      const off = t.service.events.subscribe(null, (e) => {
        if (e.payload.type !== 'approval_resolved') return;
        off();
        resolve(e.payload.approval as Record<string, unknown>);
      });
    });
    const r = cli(['--', 'ls'], { signal: ac.signal });
    const [, id] = await r.stderr.waitFor(/\(id (apr_[\w-]+)\)/);
    ac.abort();
    expect(await r.code).toBe(EXIT_INTERRUPTED);
    expect(await resolved).toMatchObject({ id, status: 'withdrawn' });
    expect(t.runner.runs).toHaveLength(0);
  });

  it('stdout closed by its reader ends the run: 141', async () => {
    await start({ script: () => ({ stdout: ['line\n'], hang: true }) });
    const r = cli(['--', 'yes'], { stdout: new Capture({ fail: true }) });
    expect(await r.code).toBe(EXIT_BROKEN_PIPE);
    await runner.sawAbort(t.runner.runs[0]!.execId);
  });
});

describe('usage', () => {
  it.each([
    ['no command', []],
    ['an empty command', ['--', ' ']],
    ['an unknown option', ['--frobnicate', '--', 'ls']],
    ['an --env without =', ['--env', 'NOVALUE', '--', 'ls']],
    ['a bad --timeout', ['--timeout', '5s', '--', 'ls']],
    ['a bad --url', ['--url', 'not a url', '--', 'ls']],
  ])('%s: 125 with the usage, nothing sent', async (_name, argv) => {
    const r = cli(argv, { env: { EXECGATE_URL: 'http://127.0.0.1:1' } });
    expect(await r.code).toBe(EXIT_USAGE);
    expect(r.stderr.text).toMatch(/^execgate exec: .+\n\nUsage: execgate exec \[options\] -- COMMAND/);
    expect(r.stdout.text).toBe('');
  });

  it('--help prints the usage on stdout and exits 0', async () => {
    const r = cli(['--help'], { env: {} });
    expect(await r.code).toBe(0);
    expect(r.stdout.text).toContain('Usage: execgate exec [options] -- COMMAND...');
    expect(r.stdout.text).toContain('77   denied by the policy');
  });
});
