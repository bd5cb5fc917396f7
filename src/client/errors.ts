import type { Decision } from './types.js';

/** Codes of the server's `{"error": {"code": …}}` answers (the server's code → status table). */
export type ApiErrorCode =
  | 'invalid_request'
  | 'invalid_files'
  | 'unauthorized'
  | 'forbidden'
  | 'policy_denied'
  | 'approval_required'
  | 'approval_rejected'
  | 'approval_expired'
  | 'approval_withdrawn'
  | 'not_found'
  | 'approval_not_found'
  | 'execution_not_found'
  | 'rule_not_found'
  | 'team_not_found'
  | 'session_not_found'
  | 'artifact_not_found'
  | 'approval_already_resolved'
  | 'session_busy'
  | 'session_ended'
  | 'session_limit'
  | 'remember_refused'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'not_acceptable'
  | 'too_many_requests'
  | 'internal_error'
  | 'docker_unavailable'
  | 'not_ready'
  | 'shutting_down'
  | 'runner_failed';

/** Codes of `error` events that end a stream when running failed (besides the API codes above). */
export type RunErrorCode = 'image_missing' | 'runtime_unavailable' | 'mount_changed' | 'command_too_large' | 'session_files_failed' | 'client_disconnected';

/**
 * Codes the client makes up itself:
 * - `unreachable`: no HTTP answer at all (connection refused, DNS, TLS…); the request may not have arrived.
 * - `connection_lost`: the stream broke before its last event; the run may have been ended by the server.
 * - `bad_response`: an answer that is not execgate's (a proxy's HTML page, a broken NDJSON line).
 * - `aborted`: the caller's AbortSignal fired (the error's `name` is `AbortError`).
 */
export type ClientErrorCode = 'unreachable' | 'connection_lost' | 'bad_response' | 'aborted';

/** Every code an `ExecgateError` may carry. Unknown codes from newer servers come through as they are. */
export type ExecgateErrorCode = ApiErrorCode | RunErrorCode | ClientErrorCode | (string & {});

/** `approval_rejected`, `approval_expired` or `approval_withdrawn`. */
export type NotApprovedCode = 'approval_rejected' | 'approval_expired' | 'approval_withdrawn';

/**
 * Every failure the client reports. `code` is the server's snake_case code (or one of the client's own,
 * see ClientErrorCode); `status` is the HTTP status when the failure was an HTTP answer; `details` holds the
 * other fields of the server's error object (`fields` for invalid_request, `decision` for policy_denied,
 * `reason` and `by` for a rejection…).
 */
export class ExecgateError extends Error {
  readonly code: ExecgateErrorCode;
  readonly status: number | undefined;
  readonly details: Record<string, unknown>;

  constructor(code: ExecgateErrorCode, message: string, opts: { status?: number | undefined; details?: Record<string, unknown> | undefined; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ExecgateError';
    this.code = code;
    this.status = opts.status;
    this.details = opts.details ?? {};
  }

  /** The execution the error is about, when there is one (a denied or rejected exec still has an id). */
  get execId(): string | undefined {
    return typeof this.details.execId === 'string' ? this.details.execId : undefined;
  }

  /** For `policy_denied`: the policy's explanation (which segment, which rule). */
  get decision(): Decision | undefined {
    const d = this.details.decision;
    return d && typeof d === 'object' ? (d as Decision) : undefined;
  }

  /** For `invalid_request` and `invalid_files`: the failing fields. */
  get fields(): { path: string; message: string }[] | undefined {
    return Array.isArray(this.details.fields) ? (this.details.fields as { path: string; message: string }[]) : undefined;
  }

  /** True for `approval_rejected`, `approval_expired` and `approval_withdrawn`. */
  get notApproved(): boolean {
    return this.code === 'approval_rejected' || this.code === 'approval_expired' || this.code === 'approval_withdrawn';
  }
}

/** The caller aborted: `name` is `AbortError` (as for fetch), `code` is `aborted`, `cause` the signal's reason. */
export class ExecgateAbortError extends ExecgateError {
  constructor(cause?: unknown, details?: Record<string, unknown>) {
    super('aborted', 'the request was aborted', { cause, details });
    this.name = 'AbortError';
  }
}

/** The error of a `rejected` event: approval_expired, approval_withdrawn or approval_rejected (any other reason). */
export function notApprovedError(reason: string, by: string, details: Record<string, unknown>): ExecgateError {
  const code: NotApprovedCode = reason === 'expired' ? 'approval_expired' : reason === 'withdrawn' ? 'approval_withdrawn' : 'approval_rejected';
  return new ExecgateError(code, `not approved: ${reason} (by ${by})`, { details: { ...details, reason, by } });
}

/** Builds the error of a non-2xx answer from its `{"error": {code, message, …}}` body (or what came instead). */
export async function errorFromResponse(res: Response): Promise<ExecgateError> {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // The body broke off: the status alone has to do.
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const err = (body as { error?: unknown } | undefined)?.error;
  if (err && typeof err === 'object' && typeof (err as { code?: unknown }).code === 'string') {
    const { code, message, ...details } = err as { code: string; message?: unknown } & Record<string, unknown>;
    return new ExecgateError(code, typeof message === 'string' ? message : code, { status: res.status, details });
  }
  const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 200);
  return new ExecgateError('bad_response', `HTTP ${res.status} ${res.statusText} without an execgate error${snippet ? `: ${snippet}` : ''}`, { status: res.status });
}
