/**
 * Wire types of the execgate HTTP API (v1), standalone so that the client's published declarations need
 * nothing from the server. test/http/client.test.ts checks at compile time that they accept what the server
 * sends (its ExecEvent, Decision and error codes).
 */

export type DecisionKind = 'allow' | 'ask' | 'deny';

export type DecisionCode =
  | 'allowed'
  | 'approval_required'
  | 'locked'
  | 'tool_blocked'
  | 'invalid_command'
  | 'unsupported_construct'
  | 'blocked_pattern'
  | 'path_not_allowed'
  | 'rule_denied'
  | 'rule_ask'
  | 'no_match'
  | 'opaque_execution'
  | 'approval_unavailable';

/** How the policy judged one simple command of the request. */
export interface SegmentExplanation {
  /** Canonical text of the innermost layer: argv joined by single spaces. */
  canonical: string;
  /** Every layer of the unwrapping, outermost first (`sudo env rm -rf x`, `env rm -rf x`, `rm -rf x`). */
  layers: string[];
  /** The segment as written. */
  source: string;
  verdict: DecisionKind;
  code: DecisionCode;
  /** The rule that decided this segment, when one did. */
  rule?: string | undefined;
  /** The blocked pattern that decided this segment, when one did. */
  pattern?: string | undefined;
  reason: string;
}

/** The policy's explanation of a decision (`POST /v1/policy/check`, the `decision` event, a 403 `policy_denied`). */
export interface Decision {
  decision: DecisionKind;
  code: DecisionCode;
  /** A hard deny can never be approved or remembered away. */
  hard: boolean;
  /** One human sentence: which segment, which rule. */
  reason: string;
  segments: SegmentExplanation[];
  /** Hash of the policy that decided. */
  policyHash: string;
  /** The resolved working directory the decision assumed. */
  cwd: string;
}

// ---------------------------------------------------------------------------------------------------------
// Events of POST /v1/exec and POST /v1/sessions/:id/exec, one JSON object per NDJSON line.

export interface DecisionEvent {
  type: 'decision';
  execId: string;
  decision: 'allow' | 'ask';
  explanation: Decision;
}
export interface ApprovalPendingEvent {
  type: 'approval_pending';
  approvalId: string;
  planHash: string;
  expiresAt: string;
}
export interface ApprovalResolvedEvent {
  type: 'approval_resolved';
  approved: true;
  by: string;
  note?: string | undefined;
}
/** The last event when a human rejected, the approval expired or was withdrawn, or the policy changed meanwhile. */
export interface RejectedEvent {
  type: 'rejected';
  /** `expired`, `withdrawn`, `policy_changed`, or the approver's reason (`rejected` when none was given). */
  reason: string;
  by: string;
}
export interface StartedEvent {
  type: 'started';
  containerId: string;
  image: string;
}
/** Output as the server sends it: UTF-8 text, or base64 (`encoding: "base64"`) for bytes that are not UTF-8. */
export interface WireOutputEvent {
  type: 'stdout' | 'stderr';
  data: string;
  encoding?: 'base64' | undefined;
}
/** Files collected with `collect`, ready to download from `url` (see `executions.artifacts`). */
export interface ArtifactReadyEvent {
  type: 'artifact';
  execId: string;
  url: string;
  bytes: number;
  files: number;
  names: string[];
  sha256: string;
  expiresAt: string;
}
/** Collecting failed (the command's own result still follows). */
export interface ArtifactFailedEvent {
  type: 'artifact';
  execId: string;
  error: { code: string; message: string; entry?: string | undefined };
}
export type ArtifactEvent = ArtifactReadyEvent | ArtifactFailedEvent;
/** The last event of a run that completed (whatever its exit code). */
export interface ExitEvent {
  type: 'exit';
  /** null when the process was killed without an exit status. */
  exitCode: number | null;
  durationMs: number;
  timedOut: boolean;
  oomKilled: boolean;
  truncated: boolean;
  /** The run was stopped for writing more than the team's write quota into its allowed paths (servers before it: absent). */
  writeQuotaExceeded?: boolean;
}
/** The last event when running failed (Docker unavailable, session ended, quota…). */
export interface ErrorEvent {
  type: 'error';
  code: string;
  message: string;
}

/** One event exactly as it travels on the wire. */
export type WireExecEvent =
  | DecisionEvent
  | ApprovalPendingEvent
  | ApprovalResolvedEvent
  | RejectedEvent
  | StartedEvent
  | WireOutputEvent
  | ArtifactEvent
  | ExitEvent
  | ErrorEvent;

/** An output event as the client yields it: the wire fields plus the decoded bytes. */
export interface OutputEvent extends WireOutputEvent {
  /** The output bytes, whatever `encoding` the server used. */
  bytes: Uint8Array;
}

/** What iterating an `Execution` yields: the wire events, with output events carrying their decoded bytes. */
export type ExecEvent = Exclude<WireExecEvent, WireOutputEvent> | OutputEvent;

// ---------------------------------------------------------------------------------------------------------
// Requests.

/** A file to put into /scratch: UTF-8 text, bytes, or data with an encoding and a mode. */
export type FileContent = string | Uint8Array | { data: string | Uint8Array; encoding?: 'utf8' | 'base64' | undefined; mode?: number | undefined };

/** Relative path under /scratch → content. */
export type FileMap = Record<string, FileContent>;

export interface ExecRequest {
  /** The shell command, run with `/bin/sh -c` once the policy allows it. */
  command: string;
  /** Working directory; default: the first allowed path (or /scratch with files, collect or a session). */
  cwd?: string | undefined;
  env?: Record<string, string> | undefined;
  /** Sent to the command's standard input, then closed: text as UTF-8, bytes as they are. */
  stdin?: string | Uint8Array | undefined;
  /** Capped by the team's sandbox.timeoutMs. */
  timeoutMs?: number | undefined;
  /** false: nobody can approve, so an `ask` is a deny (`approval_unavailable`). */
  interactive?: boolean | undefined;
  /** Files written into /scratch first: a map, or the bytes of a tar archive. */
  files?: FileMap | Uint8Array | undefined;
  /** Globs of /scratch files returned after the command (an `artifact` event; download with `executions.artifacts`). */
  collect?: string[] | undefined;
}

export interface CheckOptions {
  cwd?: string | undefined;
  interactive?: boolean | undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Results and resources.

/** The outcome of a run that completed (it ran and exited, timed out, or was killed). */
export interface ExecResult {
  execId: string;
  decision: 'allow' | 'ask';
  explanation: Decision;
  /** Set when a human was asked. */
  approvalId?: string | undefined;
  /** Who approved, when a human was asked. */
  approvedBy?: string | undefined;
  /** null when the process was killed without an exit status. */
  exitCode: number | null;
  /** Standard output decoded as UTF-8 (invalid bytes replaced); exact bytes in `stdoutBytes`. Empty with `collectOutput: false`. */
  readonly stdout: string;
  /** Standard error decoded as UTF-8 (invalid bytes replaced); exact bytes in `stderrBytes`. Empty with `collectOutput: false`. */
  readonly stderr: string;
  stdoutBytes: Uint8Array;
  stderrBytes: Uint8Array;
  durationMs: number;
  timedOut: boolean;
  oomKilled: boolean;
  /** The output went over the team's cap and the run was ended. */
  truncated: boolean;
  /** The run wrote more than the team's write quota into its allowed paths (or their disk ran low) and was ended. */
  writeQuotaExceeded: boolean;
  /** With `collect`: where to download the files, or why collecting failed. */
  artifact?: Omit<ArtifactReadyEvent, 'type'> | Omit<ArtifactFailedEvent, 'type'> | undefined;
}

export type ApprovalStatus = 'pending' | 'approved' | 'rejected' | 'expired' | 'withdrawn';

/** An approval as `GET /v1/approvals` shows it: exactly what would run. */
export interface Approval {
  id: string;
  execId: string;
  team: string;
  status: ApprovalStatus;
  command: string;
  cwd: string;
  env: Record<string, string>;
  stdin?: { bytes: number; sha256: string; preview: string; encoding: 'utf8' | 'base64' } | undefined;
  timeoutMs?: number | undefined;
  files?: { entries: number; bytes: number; sha256: string; names: string[] } | undefined;
  collect?: string[] | undefined;
  session?: string | undefined;
  planHash: string;
  explanation: Decision;
  requestedBy: string;
  createdAt: string;
  expiresAt: string;
  resolvedAt?: string | undefined;
  resolvedBy?: string | undefined;
  note?: string | undefined;
  reason?: string | undefined;
}

export interface ApproveOptions {
  note?: string | undefined;
  /** Add a persistent allow rule for the team: the exact command (in this cwd), or its prefix. */
  remember?: { scope: 'exact' | 'prefix'; ttlMs?: number | undefined } | undefined;
}

export type ExecutionStatus = 'denied' | 'pending_approval' | 'running' | 'finished' | 'failed' | 'rejected' | 'expired' | 'withdrawn';

/** One execution from the history (`GET /v1/executions`). */
export interface ExecutionRecord {
  id: string;
  team: string;
  requestedBy: string;
  command: string;
  cwd: string;
  decision: DecisionKind;
  code: DecisionCode;
  explanation: Decision;
  policyHash: string;
  status: ExecutionStatus;
  createdAt: string;
  finishedAt?: string | undefined;
  approvalId?: string | undefined;
  approvedBy?: string | undefined;
  rejectedReason?: string | undefined;
  containerId?: string | undefined;
  image: string;
  imageId?: string | undefined;
  runtime: string;
  mounts?: { path: string; readOnly: boolean }[] | undefined;
  limits?: { memoryMb: number; cpus: number; pidsLimit: number; timeoutMs: number; maxOutputBytes: number; network: string; user: string } | undefined;
  exitCode?: number | null | undefined;
  durationMs?: number | undefined;
  timedOut?: boolean | undefined;
  oomKilled?: boolean | undefined;
  truncated?: boolean | undefined;
  writeQuotaExceeded?: boolean | undefined;
  bytesOut?: number | undefined;
  error?: string | undefined;
  files?: { entries: number; bytes: number; sha256: string } | undefined;
  collect?: string[] | undefined;
  sessionId?: string | undefined;
  artifacts?: { bytes: number; files: number; sha256: string; expiresAt: number } | undefined;
  artifactError?: string | undefined;
}

export interface ExecutionsQuery {
  /** Admins: one team's executions only. */
  team?: string | undefined;
  decision?: DecisionKind | undefined;
  /** Only executions created at or after this time. */
  since?: Date | string | undefined;
  /** 1..1000, default 100. */
  limit?: number | undefined;
}

/** What `POST /v1/sessions` may lower (never raise) from the team's settings. */
export interface SessionOptions {
  /** sandbox.image of the team, or one of its sessions.allowedImages. */
  image?: string | undefined;
  memoryMb?: number | undefined;
  cpus?: number | undefined;
  pidsLimit?: number | undefined;
  idleTimeoutMs?: number | undefined;
  maxLifetimeMs?: number | undefined;
}

/** A session as the server describes it. */
export interface SessionInfo {
  id: string;
  team: string;
  status: 'open' | 'ended';
  createdBy: string;
  createdAt: string;
  lastUsedAt: string;
  expiresAt: string;
  idleTimeoutMs: number;
  containerId: string;
  image: string;
  limits: { memoryMb: number; cpus: number; pidsLimit: number };
  commands: number;
  busy: boolean;
  endedReason?: string | undefined;
}

/** What `PUT /v1/sessions/:id/files` answers: the archive as it was written. */
export interface PutFilesResult {
  sessionId: string;
  entries: number;
  bytes: number;
  sha256: string;
}
