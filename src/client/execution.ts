import { concat, fromBase64, lines, utf8 } from './bytes.js';
import { ExecgateAbortError, ExecgateError, errorFromResponse, notApprovedError } from './errors.js';
import type { ArtifactEvent, Decision, ExecEvent, ExecResult, ExitEvent, WireExecEvent } from './types.js';

export interface ExecOptions {
  /** Aborting it ends the request: the server then ends the container (or withdraws the pending approval). */
  signal?: AbortSignal | undefined;
  /**
   * Keep the output for `result.stdout` / `result.stderr` (default true). Pass false for runs with large
   * output that you read from the events: nothing is then held beyond what the iterator has not taken yet.
   */
  collectOutput?: boolean | undefined;
}

/** Sends the request; the Execution reads the answer. */
export type StartRequest = (signal: AbortSignal) => Promise<Response>;

/**
 * While the caller iterates and has not asked for `result`, the client stops reading from the server once this
 * much output is waiting in the queue, so a slow consumer slows the command (the server's backpressure) rather
 * than filling memory.
 */
const QUEUE_HIGH_WATER_BYTES = 1 << 20;
const QUEUE_HIGH_WATER_EVENTS = 4096;

const noop = (): void => undefined;

function abortError(signal: AbortSignal, execId: string | undefined): ExecgateAbortError {
  return new ExecgateAbortError(signal.reason, execId ? { execId } : undefined);
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  const inner = cause instanceof Error ? ((cause as { code?: string }).code ?? cause.message) : undefined;
  return inner ? `${err.message} (${inner})` : err.message;
}

/** The request failed before any HTTP answer: abort, or the service could not be reached. */
export function transportError(err: unknown, signal: AbortSignal | undefined, url: string): ExecgateError {
  if (signal?.aborted) return new ExecgateAbortError(signal.reason);
  return new ExecgateError('unreachable', `could not reach execgate at ${url}: ${describe(err)}`, { cause: err });
}

function makeResult(fields: Omit<ExecResult, 'stdout' | 'stderr'>): ExecResult {
  let stdout: string | undefined;
  let stderr: string | undefined;
  return {
    ...fields,
    get stdout() {
      return (stdout ??= new TextDecoder().decode(fields.stdoutBytes));
    },
    get stderr() {
      return (stderr ??= new TextDecoder().decode(fields.stderrBytes));
    },
  };
}

/**
 * One running exec: an async iterable of its events, in order, and the `result` when it completes.
 *
 * - `result` resolves once the command exited (any exit code, time-outs and kills included) and rejects with
 *   an ExecgateError when it did not run to the end: `policy_denied` (403, before any event),
 *   `approval_rejected` / `approval_expired` / `approval_withdrawn` (a `rejected` event), the code of an
 *   `error` event, `connection_lost`, `unreachable`, or an AbortError (`code: "aborted"`).
 * - Iterating yields every event the server sent, then throws the same error `result` rejects with when the
 *   run did not complete. It can be iterated once; leaving the loop early stops the iteration, not the run
 *   (call `cancel()` or abort the signal for that).
 * - The response is read whether or not anyone iterates, so `result` never waits on the iterator. Events are
 *   queued for a later iteration; once you iterate (without having asked for `result`) the client reads
 *   only as fast as you take events.
 */
export class Execution implements AsyncIterable<ExecEvent> {
  readonly #ac = new AbortController();
  readonly #result: Promise<ExecResult>;
  readonly #accepted: Promise<string>;
  #acceptedResolve: (id: string) => void = noop;
  #acceptedReject: (err: unknown) => void = noop;
  #execId: string | undefined;
  #queue: ExecEvent[] = [];
  #queuedBytes = 0;
  #iteration: 'none' | 'active' | 'closed' = 'none';
  #resultWanted = false;
  #finished = false;
  #failure: { error: unknown } | undefined;
  #wakeIterator: () => void = noop;
  #wakePump: () => void = noop;

  /** @internal Made by `ExecgateClient.exec` and `Session.exec`. */
  constructor(start: StartRequest, opts: ExecOptions = {}) {
    this.#accepted = new Promise<string>((resolve, reject) => {
      this.#acceptedResolve = resolve;
      this.#acceptedReject = reject;
    });
    this.#accepted.catch(noop);
    const user = opts.signal;
    const onUserAbort = () => this.#ac.abort(user?.reason);
    if (user?.aborted) this.#ac.abort(user.reason);
    else user?.addEventListener('abort', onUserAbort, { once: true });
    this.#ac.signal.addEventListener('abort', () => this.#wakePump(), { once: true });

    this.#result = this.#pump(start, opts.collectOutput !== false).then(
      (r) => {
        this.#finish(undefined);
        return r;
      },
      (err: unknown) => {
        this.#finish({ error: err });
        throw err;
      },
    );
    // Callers that only iterate get the error there; the promise must not count as unhandled.
    this.#result.catch(noop);
    void this.#result.finally(() => user?.removeEventListener('abort', onUserAbort)).catch(noop);
  }

  /** The execution id, once the server accepted the request (undefined before, and after a 403 deny). */
  get execId(): string | undefined {
    return this.#execId;
  }

  /** Resolves with the execution id as soon as the server accepts the request; rejects as `result` does if it never does. */
  get accepted(): Promise<string> {
    return this.#accepted;
  }

  /** The outcome, once the command has exited. Resolves whether or not the events are iterated. */
  get result(): Promise<ExecResult> {
    // Someone waits for the end: never hold the stream back for the iterator from now on.
    this.#resultWanted = true;
    this.#wakePump();
    return this.#result;
  }

  /** Ends the request (and so the run); `result` and the iterator reject with an AbortError. */
  cancel(reason?: unknown): void {
    this.#ac.abort(reason);
  }

  [Symbol.asyncIterator](): AsyncIterator<ExecEvent> {
    if (this.#iteration !== 'none') throw new Error('an Execution can be iterated only once');
    this.#iteration = 'active';
    return this.#iterate();
  }

  async *#iterate(): AsyncGenerator<ExecEvent, void, undefined> {
    try {
      for (;;) {
        const event = this.#queue.shift();
        if (event) {
          if (event.type === 'stdout' || event.type === 'stderr') this.#queuedBytes -= event.bytes.length;
          this.#wakePump();
          yield event;
          continue;
        }
        if (this.#finished) {
          if (this.#failure) throw this.#failure.error;
          return;
        }
        await new Promise<void>((resolve) => (this.#wakeIterator = resolve));
      }
    } finally {
      this.#iteration = 'closed';
      this.#queue = [];
      this.#queuedBytes = 0;
      this.#wakePump();
    }
  }

  #finish(failure: { error: unknown } | undefined): void {
    this.#finished = true;
    this.#failure = failure;
    if (failure) this.#acceptedReject(failure.error);
    this.#wakeIterator();
  }

  async #push(event: ExecEvent): Promise<void> {
    if (this.#iteration === 'closed') return;
    this.#queue.push(event);
    if (event.type === 'stdout' || event.type === 'stderr') this.#queuedBytes += event.bytes.length;
    this.#wakeIterator();
    while (
      this.#iteration === 'active' &&
      !this.#resultWanted &&
      !this.#ac.signal.aborted &&
      (this.#queuedBytes > QUEUE_HIGH_WATER_BYTES || this.#queue.length > QUEUE_HIGH_WATER_EVENTS)
    ) {
      await new Promise<void>((resolve) => (this.#wakePump = resolve));
    }
  }

  #accept(execId: string): void {
    if (this.#execId !== undefined) return;
    this.#execId = execId;
    this.#acceptedResolve(execId);
  }

  async #pump(start: StartRequest, collect: boolean): Promise<ExecResult> {
    const signal = this.#ac.signal;
    const res = await start(signal);
    if (!res.ok) {
      const err = await errorFromResponse(res);
      if (signal.aborted) throw abortError(signal, undefined);
      throw err;
    }
    if (!res.body) throw new ExecgateError('bad_response', 'the exec answer has no body', { status: res.status });
    const header = res.headers.get('x-execgate-exec-id');
    if (header) this.#accept(header);

    const out = { stdout: [] as Uint8Array[], stderr: [] as Uint8Array[] };
    const sizes = { stdout: 0, stderr: 0 };
    let decision: { decision: 'allow' | 'ask'; explanation: Decision } | undefined;
    let approvalId: string | undefined;
    let approvedBy: string | undefined;
    let artifact: ExecResult['artifact'];
    let last: WireExecEvent | undefined;
    try {
      for await (const line of lines(res.body, signal)) {
        if (line.trim() === '') continue;
        let wire: WireExecEvent;
        try {
          wire = JSON.parse(line) as WireExecEvent;
        } catch {
          throw new ExecgateError('bad_response', `not an NDJSON event: ${line.slice(0, 200)}`, { details: { execId: this.#execId } });
        }
        let event: ExecEvent;
        switch (wire.type) {
          case 'decision':
            this.#accept(wire.execId);
            decision = { decision: wire.decision, explanation: wire.explanation };
            event = wire;
            break;
          case 'approval_pending':
            approvalId = wire.approvalId;
            event = wire;
            break;
          case 'approval_resolved':
            approvedBy = wire.by;
            event = wire;
            break;
          case 'stdout':
          case 'stderr': {
            const bytes = wire.encoding === 'base64' ? fromBase64(wire.data) : utf8(wire.data);
            if (collect) {
              out[wire.type].push(bytes);
              sizes[wire.type] += bytes.length;
            }
            event = { ...wire, bytes };
            break;
          }
          case 'artifact': {
            const { type: _type, ...rest } = wire as ArtifactEvent;
            artifact = rest;
            event = wire;
            break;
          }
          case 'started':
          case 'rejected':
          case 'exit':
          case 'error':
            event = wire;
            break;
          default:
            // An event type this client does not know (a newer server): skipped, not fatal.
            continue;
        }
        last = wire;
        await this.#push(event);
      }
    } catch (err) {
      if (signal.aborted) throw abortError(signal, this.#execId);
      if (err instanceof ExecgateError) throw err;
      throw new ExecgateError('connection_lost', `the exec stream broke off: ${describe(err)}`, { cause: err, details: { execId: this.#execId } });
    }
    const ids = { execId: this.#execId, ...(approvalId ? { approvalId } : {}) };
    if (last?.type === 'rejected') throw notApprovedError(last.reason, last.by, ids);
    if (last?.type === 'error') throw new ExecgateError(last.code, last.message, { details: ids });
    if (last?.type !== 'exit') {
      if (signal.aborted) throw abortError(signal, this.#execId);
      throw new ExecgateError('connection_lost', 'the exec stream ended before the command did', { details: ids });
    }
    if (!decision || this.#execId === undefined) throw new ExecgateError('bad_response', 'the exec stream had no decision event', { details: ids });
    const exit: ExitEvent = last;
    return makeResult({
      execId: this.#execId,
      decision: decision.decision,
      explanation: decision.explanation,
      approvalId,
      approvedBy,
      exitCode: exit.exitCode,
      stdoutBytes: concat(out.stdout, sizes.stdout),
      stderrBytes: concat(out.stderr, sizes.stderr),
      durationMs: exit.durationMs,
      timedOut: exit.timedOut,
      oomKilled: exit.oomKilled,
      truncated: exit.truncated,
      writeQuotaExceeded: exit.writeQuotaExceeded === true,
      ...(artifact ? { artifact } : {}),
    });
  }
}
