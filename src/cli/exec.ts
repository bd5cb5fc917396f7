import { parseArgs } from 'node:util';
import { ExecgateClient, ExecgateError, type ExitEvent } from '../client/index.js';

/**
 * Exit codes of `execgate exec`. The command's own exit code passes through; these mark what is not the
 * command's doing (a command that itself exits with one of them is indistinguishable, as with timeout(1)).
 */
export const EXIT_DENIED = 77;
/** Not approved: rejected, expired or withdrawn (or the policy changed while it waited). */
export const EXIT_NOT_APPROVED = 78;
/** The command ran past its time-out and was ended (as timeout(1)). */
export const EXIT_TIMED_OUT = 124;
/** execgate itself failed: unreachable, unauthorized, invalid request, a runner error — and usage errors. */
export const EXIT_ERROR = 125;
export const EXIT_USAGE = EXIT_ERROR;
/** Interrupted (Ctrl-C): the request was aborted, which ends the container. */
export const EXIT_INTERRUPTED = 130;
/** Killed without an exit status (out of memory, or ended by the sandbox). */
export const EXIT_KILLED = 137;
/** stdout was closed by its reader (`| head`): the run is ended, as SIGPIPE would. */
export const EXIT_BROKEN_PIPE = 141;

export const EXIT_CODES = {
  denied: EXIT_DENIED,
  notApproved: EXIT_NOT_APPROVED,
  timedOut: EXIT_TIMED_OUT,
  error: EXIT_ERROR,
  usage: EXIT_USAGE,
  interrupted: EXIT_INTERRUPTED,
  killed: EXIT_KILLED,
  brokenPipe: EXIT_BROKEN_PIPE,
} as const;

export const DEFAULT_URL = 'http://127.0.0.1:8787';

export const EXEC_USAGE = `Usage: execgate exec [options] -- COMMAND...

Runs COMMAND through a running execgate service: the policy decides, a human approves when asked, and the
command runs in a sandbox. Its output streams here and its exit code is execgate's.

Several words after -- are joined with spaces into one shell command (as ssh does); a single word is used as
it is, so quote pipelines and redirections:  execgate exec -- 'make test 2>&1 | tail -n 20'

Options:
  --url URL        the service (EXECGATE_URL, default ${DEFAULT_URL})
  --token TOKEN    bearer token (EXECGATE_TOKEN)
  --team TEAM      act for this team, admin tokens only (EXECGATE_TEAM)
  --cwd DIR        working directory (default: the team's first allowed path)
  --env K=V        set an environment variable; repeatable
  --timeout MS     time-out in milliseconds (capped by the team's)
  --no-wait        do not wait for a human: a command that needs approval is denied
  --stdin          send this program's standard input (read to its end, at most 4 MiB) to the command;
                   without it the command's stdin is empty
  -h, --help       this text

Exit status: the command's own, or
  77   denied by the policy
  78   not approved (rejected, expired or withdrawn)
  124  timed out (the command was ended)
  125  execgate error: unreachable, unauthorized, bad usage, the sandbox failed
  130  interrupted (Ctrl-C ends the command)
  137  killed without an exit status
  141  stdout closed by its reader
`;

export interface ExecIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  /**
   * Aborting it acts as Ctrl-C (exit 130). Without it, execCommand handles SIGINT on the process itself
   * (a second SIGINT exits at once).
   */
  signal?: AbortSignal | undefined;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch | undefined;
  /** Read to its end and sent as the command's stdin with `--stdin` (main.ts passes process.stdin). */
  stdin?: AsyncIterable<Uint8Array> | undefined;
}

/** The service takes at most this much stdin in one request. */
const MAX_STDIN = 4 * 1024 * 1024;

class UsageError extends Error {}

interface Parsed {
  url: string;
  token: string | undefined;
  team: string | undefined;
  cwd: string | undefined;
  env: Record<string, string> | undefined;
  timeoutMs: number | undefined;
  noWait: boolean;
  stdin: boolean;
  command: string;
}

function parse(argv: string[], env: NodeJS.ProcessEnv): Parsed | 'help' {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        url: { type: 'string' },
        token: { type: 'string' },
        team: { type: 'string' },
        cwd: { type: 'string' },
        env: { type: 'string', multiple: true },
        timeout: { type: 'string' },
        'no-wait': { type: 'boolean' },
        stdin: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  const url = values.url ?? (env.EXECGATE_URL || DEFAULT_URL);
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--url: "${url}" is not a URL`);
  }
  let vars: Record<string, string> | undefined;
  for (const kv of values.env ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env: "${kv}" is not NAME=VALUE`);
    (vars ??= {})[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  let timeoutMs: number | undefined;
  if (values.timeout !== undefined) {
    timeoutMs = Number(values.timeout);
    if (!/^\d+$/.test(values.timeout) || !Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) throw new UsageError(`--timeout: "${values.timeout}" is not a positive number of milliseconds`);
  }
  if (positionals.length === 0) throw new UsageError('no command given (put it after --)');
  const command = positionals.length === 1 ? positionals[0]! : positionals.join(' ');
  if (command.trim() === '') throw new UsageError('the command is empty');
  return {
    url,
    token: values.token ?? (env.EXECGATE_TOKEN || undefined),
    team: values.team ?? (env.EXECGATE_TEAM || undefined),
    cwd: values.cwd,
    env: vars,
    timeoutMs,
    noWait: values['no-wait'] === true,
    stdin: values.stdin === true,
    command,
  };
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** "waiting for approval": a spinner on a terminal, one line elsewhere; cleared when the approval resolves. */
class WaitingLine {
  #timer: ReturnType<typeof setInterval> | undefined;
  #shown = false;

  constructor(private readonly stderr: NodeJS.WritableStream) {}

  get tty(): boolean {
    return (this.stderr as { isTTY?: boolean }).isTTY === true;
  }

  show(text: string): void {
    this.#shown = true;
    if (!this.tty) {
      this.stderr.write(`execgate: ${text}\n`);
      return;
    }
    let i = 0;
    const draw = () => this.stderr.write(`\r\x1b[2K${SPINNER[i++ % SPINNER.length]} execgate: ${text}`);
    draw();
    this.#timer = setInterval(draw, 100);
    this.#timer.unref?.();
  }

  clear(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#shown && this.tty) this.stderr.write('\r\x1b[2K');
    this.#shown = false;
  }
}

/** Writes and waits for the stream to take more (backpressure reaches the server through the client). */
function write(stream: NodeJS.WritableStream, chunk: Uint8Array): Promise<void> | undefined {
  if (stream.write(chunk)) return undefined;
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}

function notApprovedText(err: ExecgateError): string {
  const reason = typeof err.details.reason === 'string' ? err.details.reason : undefined;
  const by = typeof err.details.by === 'string' ? err.details.by : undefined;
  if (err.code === 'approval_expired') return 'not approved: the approval expired before anyone answered';
  if (err.code === 'approval_withdrawn') return 'not approved: the approval was withdrawn';
  if (reason === 'policy_changed') return 'not approved: the policy changed while the approval waited, and no longer allows the command';
  return `not approved: rejected${by ? ` by ${by}` : ''}${reason && reason !== 'rejected' ? `: ${reason}` : ''}`;
}

function errorText(err: ExecgateError, url: string): string {
  switch (err.code) {
    case 'unreachable':
      return `${err.message} (is the service running? set --url or EXECGATE_URL)`;
    case 'unauthorized':
      return `unauthorized: ${err.message} (set --token or EXECGATE_TOKEN)`;
    case 'forbidden':
      return `forbidden: ${err.message}`;
    default:
      return `${err.code}: ${err.message}${err.status ? ` (HTTP ${err.status} from ${url})` : ''}`;
  }
}

/** `execgate exec`: runs one command through the service and exits as it did. */
export async function execCommand(argv: string[], io: ExecIO): Promise<number> {
  let opts: Parsed | 'help';
  try {
    opts = parse(argv, io.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`execgate exec: ${err.message}\n\n${EXEC_USAGE}`);
    return EXIT_USAGE;
  }
  if (opts === 'help') {
    io.stdout.write(EXEC_USAGE);
    return 0;
  }

  const ac = new AbortController();
  const cleanups: (() => void)[] = [];
  if (io.signal) {
    const onAbort = () => ac.abort(io.signal!.reason);
    if (io.signal.aborted) onAbort();
    else io.signal.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => io.signal!.removeEventListener('abort', onAbort));
  } else {
    const onSigint = () => {
      if (ac.signal.aborted) process.exit(EXIT_INTERRUPTED);
      ac.abort(new Error('SIGINT'));
    };
    process.on('SIGINT', onSigint);
    cleanups.push(() => process.off('SIGINT', onSigint));
  }
  // A reader that went away (`| head`) ends the run rather than crashing on EPIPE.
  let brokenPipe = false;
  const onStdoutError = () => {
    brokenPipe = true;
    ac.abort(new Error('stdout closed'));
  };
  io.stdout.on('error', onStdoutError);
  cleanups.push(() => io.stdout.off('error', onStdoutError));

  const waiting = new WaitingLine(io.stderr);
  const say = (text: string) => io.stderr.write(`execgate: ${text}\n`);
  try {
    const client = new ExecgateClient({ url: opts.url, token: opts.token, team: opts.team, fetch: io.fetch });
    let stdin: Buffer | undefined;
    if (opts.stdin) {
      const chunks: Uint8Array[] = [];
      let size = 0;
      for await (const c of io.stdin ?? []) {
        size += c.length;
        if (size > MAX_STDIN) throw new UsageError(`--stdin: more than ${MAX_STDIN} bytes of input; put large inputs in a file under an allowed path`);
        chunks.push(c);
      }
      stdin = Buffer.concat(chunks);
    }
    const run = client.exec(
      { command: opts.command, cwd: opts.cwd, env: opts.env, timeoutMs: opts.timeoutMs, ...(stdin ? { stdin } : {}), ...(opts.noWait ? { interactive: false } : {}) },
      { signal: ac.signal, collectOutput: false },
    );
    let exit: ExitEvent | undefined;
    for await (const e of run) {
      switch (e.type) {
        case 'approval_pending':
          waiting.show(`waiting for approval (id ${e.approvalId})`);
          break;
        case 'approval_resolved':
          waiting.clear();
          say(`approved by ${e.by}${e.note ? `: ${e.note}` : ''}`);
          break;
        case 'stdout':
          await write(io.stdout, e.bytes);
          break;
        case 'stderr':
          await write(io.stderr, e.bytes);
          break;
        case 'artifact':
          if ('error' in e) say(`collecting files failed: ${e.error.message}`);
          else say(`${e.files} file(s) collected: ${client.url}${e.url}`);
          break;
        case 'exit':
          exit = e;
          break;
        default:
          break;
      }
    }
    waiting.clear();
    if (!exit) {
      say('the stream ended without an exit status');
      return EXIT_ERROR;
    }
    if (exit.truncated) say('output over the team\'s limit: the command was ended and its output cut short');
    if (exit.writeQuotaExceeded) say('wrote more than the team\'s write quota into its allowed paths (or their disk ran low): the command was ended');
    if (exit.timedOut) {
      say(`timed out after ${exit.durationMs} ms; the command was ended`);
      return EXIT_TIMED_OUT;
    }
    if (exit.exitCode === null) {
      say(`killed${exit.oomKilled ? ' (out of memory)' : ''} without an exit status`);
      return EXIT_KILLED;
    }
    if (exit.oomKilled) say('killed: out of memory');
    return exit.exitCode;
  } catch (err) {
    waiting.clear();
    if (brokenPipe) return EXIT_BROKEN_PIPE;
    if (err instanceof UsageError) {
      say(err.message);
      return EXIT_ERROR;
    }
    if (!(err instanceof ExecgateError)) {
      say(`internal error: ${err instanceof Error ? err.message : String(err)}`);
      return EXIT_ERROR;
    }
    if (err.code === 'aborted') {
      say('interrupted; the command was ended');
      return EXIT_INTERRUPTED;
    }
    if (err.code === 'policy_denied') {
      const d = err.decision;
      say(`denied by policy${d ? ` (${d.code})` : ''}: ${d?.reason ?? err.message}`);
      return EXIT_DENIED;
    }
    if (err.notApproved) {
      say(notApprovedText(err));
      return EXIT_NOT_APPROVED;
    }
    say(errorText(err, opts.url));
    return EXIT_ERROR;
  } finally {
    for (const c of cleanups) c();
  }
}
