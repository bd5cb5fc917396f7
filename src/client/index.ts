/**
 * The typed client of execgate's HTTP API (v1). Dependency-free: it needs only `fetch` (Node ≥ 20, Deno,
 * Bun, browsers).
 *
 * ```ts
 * import { ExecgateClient } from 'execgate/client';
 * const client = new ExecgateClient({ url: 'http://127.0.0.1:8787', token: process.env.EXECGATE_TOKEN });
 * const run = client.exec({ command: 'npm test' });
 * for await (const e of run) if (e.type === 'stdout') process.stdout.write(e.bytes);
 * const { exitCode } = await run.result;
 * ```
 */
import { ExecgateError } from './errors.js';
import { Execution, type ExecOptions } from './execution.js';
import { Transport, encodeFileMap, type CallOptions, type DownloadOptions } from './transport.js';
import type {
  Approval,
  ApprovalStatus,
  ApproveOptions,
  CheckOptions,
  Decision,
  ExecRequest,
  ExecutionRecord,
  ExecutionsQuery,
  FileMap,
  PutFilesResult,
  SessionInfo,
  SessionOptions,
} from './types.js';

export * from './types.js';
export { ExecgateError, ExecgateAbortError } from './errors.js';
export type { ApiErrorCode, ClientErrorCode, ExecgateErrorCode, NotApprovedCode, RunErrorCode } from './errors.js';
export { Execution } from './execution.js';
export type { ExecOptions } from './execution.js';
export type { CallOptions, DownloadOptions } from './transport.js';

export interface ExecgateClientOptions {
  /** Base URL of the service, e.g. `http://127.0.0.1:8787`. */
  url: string;
  /** Bearer token (omit when the service runs with auth disabled). */
  token?: string | undefined;
  /** Act for this team (admin tokens only): sent as `X-Execgate-Team`. */
  team?: string | undefined;
  /** A fetch to use instead of the global one (proxies, tests). */
  fetch?: typeof fetch | undefined;
  /** Extra headers sent with every request. */
  headers?: Record<string, string> | undefined;
}

const seg = encodeURIComponent;

/** Approvals of the token's team (admins: all teams). Needs the `approve` role. */
export interface ApprovalsApi {
  /** Approvals, optionally only those with one status (`pending` is what waits for a human). */
  list(opts?: CallOptions & { status?: ApprovalStatus | undefined }): Promise<Approval[]>;
  get(id: string, opts?: CallOptions): Promise<Approval>;
  /** Approves (409 `approval_already_resolved` when it no longer waits); `remember` adds an allow rule. */
  approve(id: string, opts?: CallOptions & ApproveOptions): Promise<Approval>;
  reject(id: string, opts?: CallOptions & { reason?: string | undefined }): Promise<Approval>;
}

/** History of executions (any role; a token sees its own team's, admins all). */
export interface ExecutionsApi {
  get(id: string, opts?: CallOptions): Promise<ExecutionRecord>;
  list(query?: ExecutionsQuery, opts?: CallOptions): Promise<ExecutionRecord[]>;
  /** The files a run collected (`collect`), as a tar: its bytes (sha256-checked), or with `stream: true` the body stream. */
  artifacts(execId: string, opts?: CallOptions & { stream?: false | undefined }): Promise<Uint8Array>;
  artifacts(execId: string, opts: CallOptions & { stream: true }): Promise<ReadableStream<Uint8Array>>;
}

/** Open sessions of the token's team. */
export interface SessionsApi {
  list(opts?: CallOptions): Promise<SessionInfo[]>;
  get(id: string, opts?: CallOptions): Promise<SessionInfo>;
}

/** The per-team safe-mode switch (role `approve`). */
export interface SafeModeApi {
  get(opts?: CallOptions): Promise<{ team: string; enabled: boolean }>;
  /** `team`: another team's switch (admin tokens only). */
  set(enabled: boolean, opts?: CallOptions & { team?: string | undefined }): Promise<{ team: string; enabled: boolean }>;
}

/** A client of one execgate service, acting with one token. */
export class ExecgateClient {
  readonly #t: Transport;
  readonly approvals: ApprovalsApi;
  readonly executions: ExecutionsApi;
  readonly sessions: SessionsApi;
  readonly safeMode: SafeModeApi;

  constructor(opts: ExecgateClientOptions) {
    const t = (this.#t = new Transport(opts));
    this.approvals = {
      list: ({ status, signal } = {}) => t.json<{ approvals: Approval[] }>('GET', '/v1/approvals', { query: { status }, signal }).then((r) => r.approvals),
      get: (id, { signal } = {}) => t.json<Approval>('GET', `/v1/approvals/${seg(id)}`, { signal }),
      approve: (id, { signal, note, remember } = {}) => t.json<Approval>('POST', `/v1/approvals/${seg(id)}/approve`, { json: { note, remember }, signal }),
      reject: (id, { signal, reason } = {}) => t.json<Approval>('POST', `/v1/approvals/${seg(id)}/reject`, { json: { reason }, signal }),
    };
    const artifacts = (execId: string, opts: DownloadOptions = {}) => t.download(`/v1/executions/${seg(execId)}/artifacts`, opts);
    this.executions = {
      get: (id, { signal } = {}) => t.json<ExecutionRecord>('GET', `/v1/executions/${seg(id)}`, { signal }),
      list: (query = {}, { signal } = {}) =>
        t
          .json<{ executions: ExecutionRecord[] }>('GET', '/v1/executions', {
            query: { team: query.team, decision: query.decision, limit: query.limit, since: query.since instanceof Date ? query.since.toISOString() : query.since },
            signal,
          })
          .then((r) => r.executions),
      artifacts: artifacts as ExecutionsApi['artifacts'],
    };
    this.sessions = {
      list: ({ signal } = {}) => t.json<{ sessions: SessionInfo[] }>('GET', '/v1/sessions', { signal }).then((r) => r.sessions),
      get: (id, { signal } = {}) => t.json<SessionInfo>('GET', `/v1/sessions/${seg(id)}`, { signal }),
    };
    this.safeMode = {
      get: ({ signal } = {}) => t.json('GET', '/v1/safe-mode', { signal }),
      set: (enabled, { signal, team } = {}) => t.json('PUT', '/v1/safe-mode', { json: { enabled, team }, signal }),
    };
  }

  /** The service's base URL, as normalised. */
  get url(): string {
    return this.#t.url;
  }

  /**
   * Runs a command: `POST /v1/exec`, streamed. Returns at once; iterate the Execution for events and await
   * `result` for the outcome. A policy deny rejects with `policy_denied` (status 403, `decision` explains).
   */
  exec(request: ExecRequest, opts: ExecOptions = {}): Execution {
    return this.#t.exec('/v1/exec', request, opts);
  }

  /** Asks the policy what it would decide, without running anything. */
  check(command: string, opts: CheckOptions & CallOptions = {}): Promise<Decision> {
    const { signal, ...rest } = opts;
    return this.#t.json<Decision>('POST', '/v1/policy/check', { json: { command, ...rest }, signal });
  }

  /** Starts a session: one sandbox kept across commands (role `exec`). End it with `session.end()`. */
  async createSession(options: SessionOptions = {}, opts: CallOptions = {}): Promise<Session> {
    const info = await this.#t.json<SessionInfo>('POST', '/v1/sessions', { json: options, signal: opts.signal });
    return new Session(this.#t, info.id, info);
  }

  /** A handle on an existing session, by id (nothing is sent until it is used). */
  session(id: string): Session {
    return new Session(this.#t, id, undefined);
  }
}

/** A sandbox that lives across commands. Made by `ExecgateClient.createSession` or `ExecgateClient.session(id)`. */
export class Session {
  readonly #t: Transport;
  readonly id: string;
  /** What the server said when the session was created (undefined for `client.session(id)`). */
  readonly info: SessionInfo | undefined;

  /** @internal */
  constructor(transport: Transport, id: string, info: SessionInfo | undefined) {
    this.#t = transport;
    this.id = id;
    this.info = info;
  }

  /** Runs a command in this session's sandbox (cwd /scratch by default); same events and result as `client.exec`. */
  exec(request: ExecRequest, opts: ExecOptions = {}): Execution {
    return this.#t.exec(`/v1/sessions/${seg(this.id)}/exec`, request, opts);
  }

  /** Writes files into /scratch: a map (path → text or bytes) or the bytes of a tar archive. */
  putFiles(files: FileMap | Uint8Array, opts: CallOptions = {}): Promise<PutFilesResult> {
    const path = `/v1/sessions/${seg(this.id)}/files`;
    if (files instanceof Uint8Array) {
      return this.#t.json<PutFilesResult>('PUT', path, { body: this.#t.tarBody(files), headers: { 'content-type': 'application/x-tar' }, signal: opts.signal });
    }
    return this.#t.json<PutFilesResult>('PUT', path, { json: { files: encodeFileMap(files) }, signal: opts.signal });
  }

  /** /scratch (or the files matching `include`, globs relative to it) as a tar: bytes, or with `stream: true` the stream. */
  getFiles(opts?: CallOptions & { include?: string | string[] | undefined; stream?: false | undefined }): Promise<Uint8Array>;
  getFiles(opts: CallOptions & { include?: string | string[] | undefined; stream: true }): Promise<ReadableStream<Uint8Array>>;
  getFiles(opts: DownloadOptions & { include?: string | string[] | undefined } = {}): Promise<Uint8Array | ReadableStream<Uint8Array>> {
    return this.#t.download(`/v1/sessions/${seg(this.id)}/files`, { ...opts, query: { include: opts.include } });
  }

  /** The session as the server sees it now. */
  describe(opts: CallOptions = {}): Promise<SessionInfo> {
    return this.#t.json<SessionInfo>('GET', `/v1/sessions/${seg(this.id)}`, { signal: opts.signal });
  }

  /** Ends the session and removes its container. Ending one that has already ended is not an error. */
  async end(opts: CallOptions = {}): Promise<void> {
    try {
      await this.#t.send('DELETE', `/v1/sessions/${seg(this.id)}`, { signal: opts.signal });
    } catch (err) {
      if (err instanceof ExecgateError && err.code === 'session_not_found') return;
      throw err;
    }
  }
}
