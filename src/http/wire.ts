import { z } from 'zod';

/**
 * What the API answers, as zod schemas: the OpenAPI document is generated from these (and from the request
 * schemas in schemas.ts that validate the input), and the conformance test checks real answers against them.
 * Objects are strict, so a field the service sends but this file does not document fails that test.
 */

const iso = z.string().describe('ISO 8601 time');

export const ErrorBodySchema = z
  .strictObject({
    error: z
      .object({
        code: z.string().describe('snake_case, e.g. invalid_request, unauthorized, policy_denied, approval_rejected, session_busy, too_many_requests, runner_failed'),
        message: z.string(),
        fields: z.array(z.strictObject({ path: z.string(), message: z.string() })).optional().describe('400 invalid_request: each failing field'),
      })
      .catchall(z.unknown())
      .describe('Codes carry more detail where it helps: `decision` (policy_denied), `execId`, `entry` (invalid_files), `retryAfterSeconds`…'),
  })
  .meta({ id: 'Error' });

export const DecisionCodeSchema = z.enum([
  'allowed',
  'approval_required',
  'locked',
  'tool_blocked',
  'invalid_command',
  'unsupported_construct',
  'blocked_pattern',
  'path_not_allowed',
  'rule_denied',
  'rule_ask',
  'no_match',
  'opaque_execution',
  'approval_unavailable',
]);

export const SegmentSchema = z.strictObject({
  canonical: z.string().describe('argv of the innermost layer joined by single spaces'),
  layers: z.array(z.string()).describe('every layer of the unwrapping, outermost first'),
  source: z.string(),
  verdict: z.enum(['allow', 'ask', 'deny']),
  code: DecisionCodeSchema,
  rule: z.string().optional(),
  pattern: z.string().optional(),
  reason: z.string(),
});

export const DecisionSchema = z
  .strictObject({
    decision: z.enum(['allow', 'ask', 'deny']),
    code: DecisionCodeSchema,
    hard: z.boolean().describe('a hard deny can never be approved or remembered away'),
    reason: z.string().describe('one sentence: which segment, which rule'),
    segments: z.array(SegmentSchema),
    policyHash: z.string(),
    cwd: z.string(),
  })
  .meta({ id: 'Decision' });

const Text = z.strictObject({ type: z.enum(['stdout', 'stderr']), data: z.string(), encoding: z.literal('base64').optional().describe('set when the bytes are not UTF-8') });

export const ArtifactInfoSchema = z.strictObject({
  execId: z.string(),
  url: z.string(),
  bytes: z.number().int(),
  files: z.number().int(),
  names: z.array(z.string()),
  sha256: z.string(),
  expiresAt: iso,
});
const ArtifactErrorSchema = z.strictObject({ execId: z.string(), error: z.strictObject({ code: z.string(), message: z.string(), entry: z.string().optional() }) });

const WriteQuotaExceeded = z
  .boolean()
  .describe('The sandbox was stopped because its read-write allowed paths grew past sandbox.writeQuotaMb (or their disk ran low)');

/** One line of the NDJSON stream (or one SSE `data:`) of POST /v1/exec. */
export const ExecEventSchema = z
  .union([
    z.strictObject({ type: z.literal('decision'), execId: z.string(), decision: z.enum(['allow', 'ask']), explanation: DecisionSchema }),
    z.strictObject({ type: z.literal('approval_pending'), approvalId: z.string(), planHash: z.string(), expiresAt: iso }),
    z.strictObject({ type: z.literal('approval_resolved'), approved: z.literal(true), by: z.string(), note: z.string().optional() }),
    z.strictObject({ type: z.literal('rejected'), reason: z.string(), by: z.string() }),
    z.strictObject({ type: z.literal('started'), containerId: z.string(), image: z.string() }),
    Text,
    z.union([ArtifactInfoSchema.extend({ type: z.literal('artifact') }), ArtifactErrorSchema.extend({ type: z.literal('artifact') })]),
    z.strictObject({ type: z.literal('exit'), exitCode: z.number().int().nullable(), durationMs: z.number(), timedOut: z.boolean(), oomKilled: z.boolean(), truncated: z.boolean(), writeQuotaExceeded: WriteQuotaExceeded }),
    z.strictObject({ type: z.literal('error'), code: z.string(), message: z.string() }),
  ])
  .meta({ id: 'ExecEvent' });

/** POST /v1/exec with Accept: application/json. */
export const ExecResultSchema = z
  .strictObject({
    execId: z.string(),
    decision: z.enum(['allow', 'ask']).optional(),
    approvalId: z.string().optional(),
    exitCode: z.number().int().nullable(),
    stdout: z.string(),
    stderr: z.string(),
    stdoutEncoding: z.literal('base64').optional(),
    stderrEncoding: z.literal('base64').optional(),
    durationMs: z.number(),
    timedOut: z.boolean(),
    oomKilled: z.boolean(),
    truncated: z.boolean(),
    writeQuotaExceeded: WriteQuotaExceeded,
    artifact: z.union([ArtifactInfoSchema, ArtifactErrorSchema]).optional(),
  })
  .meta({ id: 'ExecResult' });

const PlanFiles = z.strictObject({ entries: z.number().int(), bytes: z.number().int(), sha256: z.string(), names: z.array(z.string()) });

export const ApprovalSchema = z
  .strictObject({
    id: z.string(),
    execId: z.string(),
    team: z.string(),
    status: z.enum(['pending', 'approved', 'rejected', 'expired', 'withdrawn']),
    command: z.string(),
    cwd: z.string(),
    env: z.record(z.string(), z.string()).describe('The request\'s env; a value named in secretEnv shows only as `[secret hmac:<12 hex>]`'),
    stdin: z.strictObject({ bytes: z.number().int(), sha256: z.string(), preview: z.string(), encoding: z.enum(['utf8', 'base64']) }).optional(),
    timeoutMs: z.number().int().optional(),
    files: PlanFiles.optional(),
    collect: z.array(z.string()).optional(),
    session: z.string().optional(),
    planHash: z.string().describe('sha256 of what is approved: command, cwd, env, stdin, files, team'),
    explanation: DecisionSchema,
    requestedBy: z.string(),
    createdAt: iso,
    expiresAt: iso,
    resolvedAt: iso.optional(),
    resolvedBy: z.string().optional(),
    note: z.string().optional(),
    reason: z.string().optional(),
  })
  .meta({ id: 'Approval' });

export const SessionSchema = z
  .strictObject({
    id: z.string(),
    team: z.string(),
    status: z.enum(['open', 'ended']),
    createdBy: z.string(),
    createdAt: iso,
    lastUsedAt: iso,
    expiresAt: iso,
    idleTimeoutMs: z.number().int(),
    containerId: z.string(),
    image: z.string(),
    limits: z.strictObject({ memoryMb: z.number(), cpus: z.number(), pidsLimit: z.number().int() }),
    commands: z.number().int(),
    busy: z.boolean(),
    endedReason: z.string().optional(),
  })
  .meta({ id: 'Session' });

export const ExecutionSchema = z
  .strictObject({
    id: z.string(),
    team: z.string(),
    requestedBy: z.string(),
    command: z.string(),
    cwd: z.string(),
    decision: z.enum(['allow', 'ask', 'deny']),
    code: DecisionCodeSchema,
    explanation: DecisionSchema,
    policyHash: z.string(),
    status: z.enum(['denied', 'pending_approval', 'running', 'finished', 'failed', 'rejected', 'expired', 'withdrawn']),
    createdAt: iso,
    finishedAt: iso.optional(),
    approvalId: z.string().optional(),
    approvedBy: z.string().optional(),
    rejectedReason: z.string().optional(),
    containerId: z.string().optional(),
    image: z.string(),
    imageId: z.string().optional(),
    runtime: z.string(),
    mounts: z.array(z.strictObject({ path: z.string(), readOnly: z.boolean() })).optional(),
    limits: z
      .strictObject({ memoryMb: z.number(), cpus: z.number(), pidsLimit: z.number().int(), timeoutMs: z.number().int(), maxOutputBytes: z.number().int(), network: z.string(), user: z.string() })
      .optional(),
    exitCode: z.number().int().nullable().optional(),
    durationMs: z.number().optional(),
    timedOut: z.boolean().optional(),
    oomKilled: z.boolean().optional(),
    truncated: z.boolean().optional(),
    writeQuotaExceeded: z.boolean().optional(),
    bytesOut: z.number().int().optional(),
    error: z.string().optional(),
    files: z.strictObject({ entries: z.number().int(), bytes: z.number().int(), sha256: z.string() }).optional(),
    collect: z.array(z.string()).optional(),
    sessionId: z.string().optional(),
    artifacts: z.strictObject({ bytes: z.number().int(), files: z.number().int(), sha256: z.string(), expiresAt: z.number() }).optional(),
    artifactError: z.string().optional(),
  })
  .meta({ id: 'Execution' });

export const RememberedRuleSchema = z
  .strictObject({
    id: z.string(),
    team: z.string(),
    scope: z.enum(['exact', 'prefix']),
    pattern: z.string(),
    cwd: z.string().optional(),
    command: z.string(),
    createdBy: z.string(),
    createdAt: iso,
    expiresAt: iso.optional(),
    approvalId: z.string(),
  })
  .meta({ id: 'RememberedRule' });

export const SafeModeSchema = z.strictObject({ team: z.string(), enabled: z.boolean() });
export const HealthSchema = z.strictObject({ status: z.literal('ok') });
export const ReadySchema = z.strictObject({ status: z.literal('ready'), runtimes: z.array(z.string()).optional(), images: z.record(z.string(), z.boolean()).optional() });
export const NotReadySchema = ErrorBodySchema.extend({ runtimes: z.array(z.string()).optional(), images: z.record(z.string(), z.boolean()).optional() });
export const FilesPutResultSchema = z.strictObject({ sessionId: z.string(), entries: z.number().int(), bytes: z.number().int(), sha256: z.string() });
