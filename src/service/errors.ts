/**
 * One error class for every failure the API reports, with a literal snake_case code. The code → HTTP status
 * table lives here, in one place; the HTTP error handler only reads it.
 */
export const ERROR_STATUS = {
  invalid_request: 400,
  invalid_files: 400,
  unauthorized: 401,
  forbidden: 403,
  policy_denied: 403,
  approval_required: 403,
  approval_rejected: 403,
  approval_expired: 403,
  approval_withdrawn: 403,
  not_found: 404,
  approval_not_found: 404,
  execution_not_found: 404,
  rule_not_found: 404,
  team_not_found: 404,
  session_not_found: 404,
  artifact_not_found: 404,
  approval_already_resolved: 409,
  session_busy: 409,
  session_ended: 410,
  session_limit: 429,
  remember_refused: 422,
  payload_too_large: 413,
  unsupported_media_type: 415,
  not_acceptable: 406,
  too_many_requests: 429,
  internal_error: 500,
  docker_unavailable: 503,
  not_ready: 503,
  shutting_down: 503,
  runner_failed: 502,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class ServiceError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ServiceError';
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

/** The error code of a `rejected` event's reason, the same for every interface (HTTP JSON, MCP, client). */
export function notApprovedCode(reason: string): 'approval_expired' | 'approval_withdrawn' | 'approval_rejected' {
  return reason === 'expired' ? 'approval_expired' : reason === 'withdrawn' ? 'approval_withdrawn' : 'approval_rejected';
}
