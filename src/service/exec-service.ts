import { isUtf8 } from 'node:buffer';
import { createHash, randomUUID } from 'node:crypto';
import { realpathSync, statSync } from 'node:fs';
import { createReadStream } from 'node:fs';
import { isAbsolute, join, posix, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { AppConfig, TeamConfig } from '../config/load.js';
import { ApprovalQueue, type Approval, type Clock, type ExecPlan } from '../approvals/queue.js';
import { activeRules, rememberPatterns, type RememberScope, type RememberedRule } from '../approvals/remember.js';
import { runsArbitraryCode, type PolicyEngine } from '../policy/index.js';
import type { Decision } from '../policy/types.js';
import { SCRATCH_DIR, type PoolOutcome, type RunEvent, type RunResult, type Runner } from '../runner/types.js';
import { ArtifactStore, type ArtifactInfo } from '../files/artifacts.js';
import { sanitizeTar, ArchiveError } from '../files/archive.js';
import { InputStaging, checkCollect, type StagedInput } from './files.js';
import { SessionManager, type Session } from './sessions.js';
import { SESSION_STDIN_MAX } from '../runner/session.js';
import { dangerousEnvName } from './env.js';
import { MAX_SECRET_NAME_LENGTH, MIN_SECRET_LENGTH, SecretSet, secretFingerprint, secretMarker } from './redact.js';
import { ServiceError } from './errors.js';
import { EventHub } from './events.js';
import type { ExecutionRecord, StateStore } from './state.js';
import { WebhookNotifier } from './notifier.js';
import { Metrics } from './metrics.js';
import { TeamQuota } from './quota.js';

export interface Caller {
  /** The team the caller acts for. */
  team: string;
  /** null for admins: they see every team. */
  visibleTeam: string | null;
  name: string;
}

export interface ExecRequest {
  command: string;
  cwd?: string | undefined;
  env?: Record<string, string> | undefined;
  /** Keys of `env` whose values are secret: shown only as a marker, redacted from the output. */
  secretEnv?: string[] | undefined;
  stdin?: Buffer | undefined;
  timeoutMs?: number | undefined;
  interactive?: boolean | undefined;
  /** Files to put into /scratch first (staged by `stageFiles`). */
  input?: StagedInput | undefined;
  /** Globs of /scratch files to return as artifacts after the command. */
  collect?: string[] | undefined;
  /** Run in this session's sandbox instead of a fresh one. */
  session?: Session | undefined;
}

export type ArtifactEvent =
  | { type: 'artifact'; execId: string; url: string; bytes: number; files: number; names: string[]; sha256: string; expiresAt: string }
  | { type: 'artifact'; execId: string; error: { code: string; message: string; entry?: string | undefined } };

export type ExecEvent =
  | { type: 'decision'; execId: string; decision: 'allow' | 'ask'; explanation: Decision }
  | { type: 'approval_pending'; approvalId: string; planHash: string; expiresAt: string }
  | { type: 'approval_resolved'; approved: true; by: string; note?: string | undefined }
  | { type: 'rejected'; reason: string; by: string }
  | { type: 'started'; containerId: string; image: string }
  /** Output as the command wrote it (secrets redacted); the wire layer encodes it (UTF-8 text or base64). */
  | { type: 'stdout' | 'stderr'; bytes: Buffer }
  | ArtifactEvent
  | { type: 'exit'; exitCode: number | null; durationMs: number; timedOut: boolean; oomKilled: boolean; truncated: boolean; writeQuotaExceeded: boolean }
  | { type: 'error'; code: string; message: string };

/** An ExecEvent as NDJSON and SSE carry it: output as UTF-8 text, or base64 when it is not (SPEC §3). */
export type ExecWireEvent = Exclude<ExecEvent, { type: 'stdout' | 'stderr' }> | { type: 'stdout' | 'stderr'; data: string; encoding?: 'base64' };

/** A request that passed the policy (allow or ask) and is ready to run. */
export interface PreparedExec {
  execId: string;
  caller: Caller;
  team: TeamConfig;
  plan: ExecPlan;
  planHash: string;
  decision: Decision;
  stdin?: Buffer | undefined;
  timeoutMs: number;
  interactive: boolean;
  input?: StagedInput | undefined;
  collect?: string[] | undefined;
  session?: Session | undefined;
  /** Set once the execution holds a quota slot. */
  release?: (() => void) | undefined;
  /**
   * Every secret of this run (the team's sandbox.env secrets and the request's secretEnv values): redacted from
   * its output and from everything kept or shown about it.
   */
  secrets: SecretSet;
}

export type PrepareOutcome = { ok: true; prepared: PreparedExec } | { ok: false; execId: string; decision: Decision };

export interface ExecServiceDeps {
  config: () => AppConfig;
  runner: Runner;
  engine: PolicyEngine;
  state: StateStore;
  logger: Logger;
  clock: Clock;
  notifier?: WebhookNotifier;
  metrics?: Metrics;
}

export function planHash(plan: ExecPlan): string {
  // A secret value counts by its keyed fingerprint: another value is another hash, but the hash (which
  // approvers and events see) cannot be used to test guesses of the value.
  const secretKeys = planSecretKeys.get(plan);
  const env = Object.fromEntries(
    Object.entries(plan.env)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => [k, secretKeys?.has(k) ? { secret: secretFingerprint(v) } : v]),
  );
  return createHash('sha256')
    .update(
      JSON.stringify({
        team: plan.team,
        command: plan.command,
        cwd: plan.cwd,
        env,
        stdin: plan.stdin?.sha256 ?? null,
        timeoutMs: plan.timeoutMs ?? null,
        files: plan.files?.sha256 ?? null,
        collect: plan.collect ?? null,
        session: plan.session ?? null,
      }),
    )
    .digest('hex');
}

const STDIN_PREVIEW = 4096;
/** Approvals hold their plan (env, stdin preview) in memory: bounded per team. */
const MAX_PENDING_PER_TEAM = 200;

/** What an approver is shown of stdin: its size, hash and (the start of) its content. */
function describeStdin(stdin: Buffer | undefined): ExecPlan['stdin'] {
  if (stdin === undefined) return undefined;
  const head = stdin.subarray(0, STDIN_PREVIEW);
  const utf8 = isUtf8(head) || isUtf8(stdin.subarray(0, Math.max(0, head.length - 3)));
  return {
    bytes: stdin.length,
    sha256: createHash('sha256').update(stdin).digest('hex'),
    preview: utf8 ? head.toString('utf8') : head.toString('base64'),
    encoding: utf8 ? 'utf8' : 'base64',
  };
}

/**
 * The secrets of a plan, for whoever shows it (approvalView) — kept beside the plan rather than in it, so the
 * plan stays exactly what is approved and hashed.
 */
const planSecrets = new WeakMap<ExecPlan, SecretSet>();
/** Which keys of a plan's env are secret (shown as a marker to the approver). */
const planSecretKeys = new WeakMap<ExecPlan, ReadonlySet<string>>();

const teamSecretSets = new WeakMap<TeamConfig, SecretSet>();

/** The team's sandbox.env secrets (built once per loaded config). */
export function teamSecrets(team: TeamConfig): SecretSet {
  let set = teamSecretSets.get(team);
  if (!set) {
    set = new SecretSet(Object.entries(team.env ?? {}).flatMap(([name, v]) => (v.secret ? [{ name, value: v.value }] : [])));
    teamSecretSets.set(team, set);
  }
  return set;
}

/** What runs in the sandbox: the request's env, then the team's sandbox.env (which a request may not change). */
function runEnv(team: TeamConfig, requested: Record<string, string>): Record<string, string> {
  const env = { ...requested };
  for (const [name, v] of Object.entries(team.env ?? {})) env[name] = v.value;
  return env;
}

/** Checks a request's env and secretEnv (400 naming the field); returns the request's secrets. */
function checkRequestEnv(team: TeamConfig, env: Record<string, string>, secretEnv: string[] | undefined): SecretSet {
  const bad = (path: string, message: string): never => {
    throw new ServiceError('invalid_request', `${path}: ${message}`, { fields: [{ path, message }] });
  };
  for (const name of Object.keys(env)) {
    const why = dangerousEnvName(name);
    if (why) bad(`env.${name}`, why);
    if (team.env?.[name]) bad(`env.${name}`, "set by the team's configuration (sandbox.env); a request may not change it");
  }
  if (!secretEnv) return SecretSet.EMPTY;
  secretEnv.forEach((name, i) => {
    // Never the value in a message: it is the secret.
    if (!Object.hasOwn(env, name)) bad(`secretEnv.${i}`, `"${name}" is not a key of env`);
    if (env[name]!.length < MIN_SECRET_LENGTH) bad(`env.${name}`, `a secret value must be at least ${MIN_SECRET_LENGTH} characters (a shorter one cannot be redacted from output safely)`);
    if (name.length > MAX_SECRET_NAME_LENGTH) bad(`secretEnv.${i}`, `a secret variable's name is at most ${MAX_SECRET_NAME_LENGTH} characters`);
  });
  return new SecretSet(secretEnv.map((name) => ({ name, value: env[name]! })));
}

/** Resolves cwd on the host: it must exist, and the policy judges its real path, never the string. */
export function resolveCwd(team: TeamConfig, cwd: string | undefined): string {
  const first = team.policy.allowedPaths[0]!.path;
  if (cwd === undefined || cwd === '') return first;
  const abs = isAbsolute(cwd) ? cwd : resolve(first, cwd);
  // Outside every allowed path the policy denies it as it stands: whether it exists on the host is not
  // something a caller may learn.
  if (!team.policy.allowedPaths.some((p) => abs === p.path || abs.startsWith(`${p.path}/`))) return abs;
  let real: string;
  try {
    real = realpathSync(abs);
  } catch {
    throw new ServiceError('invalid_request', `cwd "${cwd}" does not exist`, { fields: [{ path: 'cwd', message: 'does not exist' }] });
  }
  if (!statSync(real).isDirectory()) {
    throw new ServiceError('invalid_request', `cwd "${cwd}" is not a directory`, { fields: [{ path: 'cwd', message: 'not a directory' }] });
  }
  return real;
}

/**
 * The exec pipeline without HTTP: policy → approval → sandbox, with history, events and one log line per
 * execution. Every path ends with exactly one terminal event (`exit`, `error` or `rejected`).
 */
export class ExecService {
  readonly events = new EventHub();
  readonly approvals: ApprovalQueue;
  readonly notifier: WebhookNotifier;
  readonly metrics: Metrics;
  private readonly quotas = new Map<string, TeamQuota>();
  private readonly log: Logger;
  readonly artifacts: ArtifactStore;
  readonly staging: InputStaging;
  readonly sessions: SessionManager;

  constructor(private readonly deps: ExecServiceDeps) {
    this.log = deps.logger.child({ component: 'exec' });
    const storeDir = deps.config().store.path;
    this.artifacts = new ArtifactStore(join(storeDir, 'artifacts'), () => deps.clock.now());
    this.staging = new InputStaging(join(storeDir, 'inputs'));
    this.sessions = new SessionManager({ runner: deps.runner, clock: deps.clock, logger: deps.logger.child({ component: 'sessions' }), publish: (team, e) => this.events.publish(team, e) });
    this.metrics = deps.metrics ?? new Metrics();
    this.metrics.sources = {
      approvalsPending: () => {
        const out: Record<string, number> = {};
        for (const a of this.approvals.list(null, 'pending')) out[a.team] = (out[a.team] ?? 0) + 1;
        return out;
      },
      queueDepth: () => Object.fromEntries([...this.quotas].map(([team, q]) => [team, q.depth])),
      poolIdle: () => deps.runner.poolIdle?.() ?? {},
      poolBreakerOpen: () => deps.runner.poolBreakerOpen?.() ?? false,
      pooledTeams: () => Object.entries(deps.config().teams).flatMap(([name, t]) => (t.sandbox.pool.size > 0 ? [name] : [])),
    };
    this.notifier =
      deps.notifier ??
      new WebhookNotifier({
        urlFor: (team) => deps.config().approvals.webhooks[team] ?? deps.config().approvals.webhookUrl,
        logger: deps.logger.child({ component: 'webhook' }),
      });
    this.approvals = new ApprovalQueue({
      clock: deps.clock,
      timeoutMs: () => deps.config().approvals.timeoutMs,
      newId: () => `apr_${randomUUID()}`,
      onEvent: (e) => {
        const view = approvalView(e.approval);
        if (e.type === 'approval_resolved') {
          const a = e.approval;
          const secrets = planSecrets.get(a.plan) ?? SecretSet.EMPTY;
          deps.state.appendAudit('approval_resolved', a.team, secrets.deep({ approvalId: a.id, execId: a.execId, status: a.status, by: a.resolvedBy, note: a.note, reason: a.reason, planHash: a.planHash }));
        }
        this.events.publish(e.approval.team, { type: e.type, approval: view });
        if (e.type === 'approval_created') {
          // A third-party endpoint gets what to look at, not env values or stdin (which may hold secrets).
          const { env, stdin, ...rest } = view as { env?: Record<string, string>; stdin?: unknown };
          this.notifier.notify(e.approval.team, { type: e.type, team: e.approval.team, approval: { ...rest, envKeys: Object.keys(env ?? {}), hasStdin: stdin !== undefined } });
        }
      },
    });
  }

  team(name: string): TeamConfig {
    // Own keys only: a team named by a client ("constructor", "__proto__") must not find Object.prototype's.
    const teams = this.deps.config().teams;
    const team = Object.hasOwn(teams, name) ? teams[name] : undefined;
    if (!team) throw new ServiceError('team_not_found', `team "${name}" is not configured`);
    return team;
  }

  safeMode(team: string): boolean {
    return this.deps.state.getSafeMode(team) ?? true;
  }

  setSafeMode(team: string, enabled: boolean, by: string): void {
    this.team(team);
    this.deps.state.setSafeMode(team, enabled);
    this.deps.state.appendAudit('safe_mode_changed', team, { enabled, by });
    this.log.info({ team, enabled, by }, 'safe mode changed');
    this.events.publish(team, { type: 'safe_mode_changed', team, enabled, by });
  }

  check(caller: Caller, req: { command: string; cwd?: string | undefined; interactive?: boolean | undefined; scratch?: boolean | undefined }): Decision {
    const team = this.team(caller.team);
    const scratch = req.scratch === true;
    const cwd = this.cwdFor(team, req.cwd, scratch);
    return this.decide(team, req.command, cwd, req.interactive, scratch);
  }

  /**
   * With files, collect or a session the run has /scratch, the default cwd: a path inside the sandbox only,
   * normalised lexically (it does not exist on the host). Anything else is a host path, resolved.
   */
  private cwdFor(team: TeamConfig, cwd: string | undefined, scratch: boolean): string {
    if (scratch) {
      if (cwd === undefined || cwd === '') return SCRATCH_DIR;
      const abs = posix.resolve(SCRATCH_DIR, cwd);
      if (abs === SCRATCH_DIR || abs.startsWith(`${SCRATCH_DIR}/`)) return abs;
    }
    return resolveCwd(team, cwd);
  }

  private decide(team: TeamConfig, command: string, cwd: string, interactive: boolean | undefined, scratch = false): Decision {
    // /scratch is read-write for this run only, and lives inside the sandbox: the policy may let commands use it.
    const policy = scratch ? { ...team.policy, allowedPaths: [...team.policy.allowedPaths, { path: SCRATCH_DIR, readOnly: false }] } : team.policy;
    return this.deps.engine.decide(
      { command, cwd, interactive, safeMode: this.safeMode(team.name), rememberedRules: activeRules(this.deps.state.listRemembered(team.name), this.deps.clock.now(), { command, cwd }) },
      policy,
    );
  }

  /** Checks and stages input files for a later prepare(); 400 naming the entry when refused. */
  stageFiles(caller: Caller, source: Parameters<InputStaging['stage']>[1], field = 'files'): Promise<StagedInput> {
    return this.staging.stage(this.team(caller.team), source, field);
  }

  prepare(caller: Caller, req: ExecRequest): PrepareOutcome {
    const team = this.team(caller.team);
    const env = req.env ?? {};
    const requestSecrets = checkRequestEnv(team, env, req.secretEnv);
    const secrets = teamSecrets(team).union(requestSecrets);
    const collect = checkCollect(req.collect);
    if (req.session && req.stdin && req.stdin.length > SESSION_STDIN_MAX) {
      throw new ServiceError('invalid_request', `stdin: at most ${SESSION_STDIN_MAX} bytes in a session`, { fields: [{ path: 'stdin', message: `at most ${SESSION_STDIN_MAX} bytes in a session` }] });
    }
    const scratch = req.input !== undefined || collect !== undefined || req.session !== undefined;
    const cwd = this.cwdFor(team, req.cwd, scratch);
    const execId = `ex_${randomUUID()}`;
    const decision = this.decide(team, req.command, cwd, req.interactive, scratch);
    const timeoutMs = Math.min(req.timeoutMs ?? team.sandbox.timeoutMs, team.sandbox.timeoutMs);
    const files = req.input ? { entries: req.input.entries, bytes: req.input.bytes, sha256: req.input.sha256, names: req.input.names } : undefined;
    const plan: ExecPlan = { team: team.name, command: req.command, cwd, env, stdin: describeStdin(req.stdin), timeoutMs, files, collect, session: req.session?.id };
    planSecrets.set(plan, secrets);
    if (req.secretEnv?.length) planSecretKeys.set(plan, new Set(req.secretEnv));
    // History, events and audit get the record with every secret replaced by its marker (the command may hold one).
    const record: ExecutionRecord = secrets.deep({
      id: execId,
      team: team.name,
      requestedBy: caller.name,
      command: req.command,
      cwd,
      decision: decision.decision,
      code: decision.code,
      explanation: decision,
      policyHash: decision.policyHash,
      status: decision.decision === 'deny' ? 'denied' : decision.decision === 'ask' ? 'pending_approval' : 'running',
      createdAt: this.deps.clock.now(),
      image: team.sandbox.image,
      runtime: team.sandbox.runtime,
      mounts: team.policy.allowedPaths.map((m) => ({ path: m.path, readOnly: m.readOnly })),
      limits: {
        memoryMb: team.sandbox.memoryMb,
        cpus: team.sandbox.cpus,
        pidsLimit: team.sandbox.pidsLimit,
        timeoutMs,
        maxOutputBytes: team.sandbox.maxOutputBytes,
        network: team.sandbox.network,
        user: team.sandbox.user,
      },
      ...(files ? { files: { entries: files.entries, bytes: files.bytes, sha256: files.sha256 } } : {}),
      ...(collect ? { collect } : {}),
      ...(req.session ? { sessionId: req.session.id, containerId: req.session.handle.containerId } : {}),
    } satisfies ExecutionRecord);
    this.deps.state.putExecution(record);
    if (decision.decision === 'deny') {
      this.log.info({ execId, team: team.name, decision: 'deny', code: decision.code, by: caller.name }, 'exec denied');
      this.metrics.executions.inc({ team: team.name, decision: 'deny', status: 'denied' });
      this.deps.state.appendAudit('execution', team.name, auditView(record));
      this.events.publish(team.name, { type: 'execution_denied', execution: record });
      this.staging.release(req.input);
      return { ok: false, execId, decision: record.explanation };
    }
    return {
      ok: true,
      prepared: { execId, caller, team, plan, planHash: planHash(plan), decision, stdin: req.stdin, timeoutMs, interactive: req.interactive !== false, input: req.input, collect, session: req.session, secrets },
    };
  }

  quota(team: string): TeamQuota {
    let q = this.quotas.get(team);
    if (!q) {
      q = new TeamQuota(() => this.deps.config().teams[team]?.quota ?? { maxConcurrent: 1, maxQueued: 0, cpuSecondsPerHour: null }, this.deps.clock);
      this.quotas.set(team, q);
    }
    return q;
  }

  /** Waits for a quota slot (or throws 429); the slot is held until the run ends. */
  async admit(p: PreparedExec, signal: AbortSignal): Promise<void> {
    if (p.release) return;
    try {
      p.release = await this.quota(p.team.name).acquire(signal);
    } catch (err) {
      const code = signal.aborted ? 'client_disconnected' : err instanceof ServiceError ? err.code : 'internal_error';
      if (code === 'too_many_requests') this.metrics.rejectedByQuota.inc({ team: p.team.name });
      this.finishRecord(p, { status: 'failed', error: code });
      throw err;
    }
  }

  /**
   * admit() then run(), as every front end (HTTP, MCP) starts a prepared exec: an allowed run waits for its
   * team's quota slot first, so a full queue is an error before any answer (a 429); an `ask` takes its slot
   * after approval, inside run(). A run that never starts gives its staged input back.
   */
  async start(p: PreparedExec, signal: AbortSignal): Promise<AsyncGenerator<ExecEvent, void, void>> {
    if (p.decision.decision === 'allow') {
      try {
        await this.admit(p, signal);
      } catch (err) {
        this.staging.release(p.input);
        throw err;
      }
    }
    return this.run(p, signal);
  }

  /** Runs a prepared exec; the consumer pulls events (backpressure) and aborts `signal` when its client leaves. */
  async *run(p: PreparedExec, signal: AbortSignal): AsyncGenerator<ExecEvent, void, void> {
    // Whatever happens from here (the consumer may stop after any event), a quota slot taken is given back.
    try {
      yield* this.runSteps(p, signal);
    } finally {
      p.release?.();
      this.staging.release(p.input);
    }
  }

  private async *runSteps(p: PreparedExec, signal: AbortSignal): AsyncGenerator<ExecEvent, void, void> {
    const log = this.log.child({ execId: p.execId, team: p.team.name });
    yield { type: 'decision', execId: p.execId, decision: p.decision.decision as 'allow' | 'ask', explanation: p.secrets.deep(p.decision) };

    if (p.decision.decision === 'ask') {
      if (signal.aborted) {
        this.finishRecord(p, { status: 'withdrawn', rejectedReason: 'withdrawn' });
        return;
      }
      if (this.approvals.pendingCount(p.team.name) >= MAX_PENDING_PER_TEAM) {
        this.finishRecord(p, { status: 'failed', error: 'too_many_requests' });
        yield { type: 'error', code: 'too_many_requests', message: `the team already has ${MAX_PENDING_PER_TEAM} approvals waiting` };
        return;
      }
      const { approval, resolution } = this.approvals.open({ execId: p.execId, plan: p.plan, planHash: p.planHash, explanation: p.decision, requestedBy: p.caller.name });
      this.update(p, { approvalId: approval.id });
      const onAbort = () => this.approvals.withdraw(approval.id);
      signal.addEventListener('abort', onAbort, { once: true });
      yield { type: 'approval_pending', approvalId: approval.id, planHash: p.planHash, expiresAt: new Date(approval.expiresAt).toISOString() };
      const r = await resolution;
      signal.removeEventListener('abort', onAbort);
      if (!r.approved) {
        const status = r.reason === 'expired' || r.reason === 'shutting_down' ? 'expired' : r.reason === 'withdrawn' ? 'withdrawn' : 'rejected';
        this.finishRecord(p, { status, rejectedReason: r.reason, approvedBy: r.by });
        log.info({ decision: 'ask', outcome: status, by: r.by }, 'exec not approved');
        // Nobody said no: the service is stopping. Clients should retry elsewhere, not report a rejection.
        if (r.reason === 'shutting_down') yield { type: 'error', code: 'shutting_down', message: 'the service shut down while the approval waited; retry on another instance' };
        else yield { type: 'rejected', reason: p.secrets.text(r.reason), by: r.by };
        return;
      }
      // The configuration may have been reloaded while a human looked: decide again under the team's current
      // policy, and run with its current sandbox settings. A deny now is a rejection.
      let current: TeamConfig | undefined;
      try {
        current = this.team(p.team.name);
      } catch {
        current = undefined;
      }
      const scratch = p.input !== undefined || p.collect !== undefined || p.session !== undefined;
      const recheck = current ? this.decide(current, p.plan.command, p.plan.cwd, p.interactive, scratch) : undefined;
      if (!current || !recheck || recheck.decision === 'deny' || planHash(p.plan) !== approval.planHash) {
        this.finishRecord(p, { status: 'rejected', rejectedReason: 'policy_changed', approvedBy: r.by });
        yield { type: 'rejected', reason: 'policy_changed', by: 'system' };
        return;
      }
      // The current team's secrets are what the sandbox gets; the earlier ones stay redacted too.
      p.team = current;
      p.secrets = teamSecrets(current).union(p.secrets);
      this.update(p, { approvedBy: r.by, status: 'running' });
      yield { type: 'approval_resolved', approved: true, by: r.by, note: r.note === undefined ? undefined : p.secrets.text(r.note) };
    }

    try {
      await this.admit(p, signal);
    } catch (err) {
      if (signal.aborted) return;
      const e = err instanceof ServiceError ? err : new ServiceError('internal_error', String(err));
      yield { type: 'error', code: e.code, message: p.secrets.text(e.message) };
      return;
    }
    yield* this.runAdmitted(p, signal, log);
  }

  private async *runAdmitted(p: PreparedExec, signal: AbortSignal, log: Logger): AsyncGenerator<ExecEvent, void, void> {
    if (signal.aborted) {
      this.finishRecord(p, { status: 'failed', error: 'client_disconnected' });
      return;
    }

    this.events.publish(p.team.name, { type: 'execution_started', execution: this.deps.state.getExecution(p.execId) });
    const collect = p.collect ? (tar: NodeJS.ReadableStream) => this.collectArtifacts(p, tar) : undefined;
    let endSession: (() => void) | undefined;
    if (p.session) {
      try {
        endSession = this.sessions.begin(this.sessions.get(p.caller.team, p.session.id), this.team(p.caller.team));
      } catch (err) {
        const e = err as ServiceError;
        this.finishRecord(p, { status: 'failed', error: e.code });
        yield { type: 'error', code: e.code, message: p.secrets.text(e.message) };
        return;
      }
    }
    const gen = p.session
      ? this.runInSession(p.session, p, signal, collect)
      : this.deps.runner.run(
          {
            execId: p.execId,
            team: p.team.name,
            command: p.plan.command,
            cwd: p.plan.cwd,
            env: runEnv(p.team, p.plan.env),
            stdin: p.stdin,
            mounts: p.team.policy.allowedPaths,
            sandbox: p.team.sandbox,
            timeoutMs: p.timeoutMs,
            scratch: p.input || p.collect ? { sizeMb: p.team.files.scratchMb, input: p.input?.path, collect } : undefined,
          },
          signal,
        );
    // Secrets are replaced in the bytes (a secret split across frames is still found); bytesOut and the output
    // cap count what the command wrote, before redaction.
    const red = { stdout: p.secrets.redactor(), stderr: p.secrets.redactor() };
    let bytesOut = 0;
    let result: RunResult | undefined;
    /** How the run got its container (warm-pool teams), from its started event: a client may leave before the result. */
    let pool: PoolOutcome | undefined;
    this.metrics.containersRunning.inc({ team: p.team.name });
    try {
      for (;;) {
        const next = await gen.next();
        if (next.done) {
          result = next.value;
          break;
        }
        const e = next.value;
        if (e.type === 'started') {
          pool = e.pool;
          this.update(p, { containerId: e.containerId, imageId: e.imageId });
          yield { type: 'started', containerId: e.containerId, image: e.image };
        } else {
          bytesOut += e.data.length;
          const bytes = red[e.stream].push(e.data);
          if (bytes.length > 0) yield { type: e.stream, bytes };
        }
      }
    } finally {
      // Reached on normal end and when the consumer stops early: the runner's own finally removes the container.
      if (!result) await gen.return(undefined as never).catch(() => undefined);
      const outcome = result?.pool ?? pool;
      if (outcome) this.metrics.poolRuns.inc({ team: p.team.name, result: outcome });
      this.metrics.containersRunning.dec({ team: p.team.name });
      endSession?.();
    }
    this.quota(p.team.name).charge(p.team.sandbox.cpus, result.durationMs);
    for (const s of ['stdout', 'stderr'] as const) {
      const bytes = red[s].flush();
      if (bytes.length > 0) yield { type: s, bytes };
    }
    if (result.collected) {
      const a = result.collected as ArtifactInfo;
      this.update(p, { artifacts: { bytes: a.bytes, files: a.files, sha256: a.sha256, expiresAt: a.expiresAt } });
      yield { type: 'artifact', execId: p.execId, url: `/v1/executions/${p.execId}/artifacts`, bytes: a.bytes, files: a.files, names: a.names, sha256: a.sha256, expiresAt: new Date(a.expiresAt).toISOString() };
    } else if (result.collectError) {
      const error = p.secrets.deep(result.collectError);
      this.update(p, { artifactError: `${error.code}: ${error.message}` });
      yield { type: 'artifact', execId: p.execId, error };
    }

    const fields = { exitCode: result.exitCode, durationMs: result.durationMs, timedOut: result.timedOut, oomKilled: result.oomKilled, truncated: result.truncated, writeQuotaExceeded: result.writeQuotaExceeded === true, bytesOut };
    if (result.error) {
      if (['docker_unavailable', 'image_missing', 'runtime_unavailable', 'runner_failed'].includes(result.error.code)) this.metrics.dockerErrors.inc({ team: p.team.name, code: result.error.code });
      this.finishRecord(p, { ...fields, status: 'failed', error: result.error.code });
      log.warn({ code: result.error.code, durationMs: result.durationMs }, 'exec failed');
      yield { type: 'error', code: result.error.code, message: p.secrets.text(result.error.message) };
      return;
    }
    this.metrics.duration.observe({ team: p.team.name }, result.durationMs / 1000);
    this.finishRecord(p, { ...fields, status: 'finished' });
    log.info({ decision: p.decision.decision, exitCode: result.exitCode, durationMs: result.durationMs, timedOut: result.timedOut, truncated: result.truncated, oomKilled: result.oomKilled, writeQuotaExceeded: result.writeQuotaExceeded === true, bytesOut }, 'exec finished');
    yield { type: 'exit', exitCode: result.exitCode, durationMs: result.durationMs, timedOut: result.timedOut, oomKilled: result.oomKilled, truncated: result.truncated, writeQuotaExceeded: result.writeQuotaExceeded === true };
  }

  /** Checks Docker's tar of /scratch entry by entry, keeps the files `collect` asks for, and stores them. */
  private collectArtifacts(p: PreparedExec, tar: NodeJS.ReadableStream): Promise<ArtifactInfo> {
    const f = p.team.files;
    const { output, done } = sanitizeTar(tar as AsyncIterable<Buffer>, { limits: { maxBytes: f.maxArtifactBytes, maxEntries: f.maxEntries }, stripComponents: 1, include: p.collect });
    return this.artifacts.save(p.team.name, p.execId, output, done, { ttlMs: f.artifactTtlMs, maxStoreBytes: f.maxArtifactStoreMb * 1024 * 1024 });
  }

  /** /scratch of a session as a checked tar in a staged file (the caller sends it and releases it). */
  async sessionFiles(session: Session, include: string[] | undefined): Promise<StagedInput> {
    const team = this.team(session.team);
    const release = this.sessions.begin(session, team);
    try {
      const tar = await session.handle.getArchive(team.sandbox.timeoutMs);
      const f = team.files;
      const { output, done } = sanitizeTar(tar as AsyncIterable<Buffer>, { limits: { maxBytes: f.maxArtifactBytes, maxEntries: f.maxEntries }, stripComponents: 1, include });
      return await this.staging.stageChecked(output, done);
    } catch (err) {
      if (err instanceof ArchiveError) throw new ServiceError('invalid_files', `session files: ${err.message}`, { entry: err.entry, reason: err.code, fields: [{ path: 'include', message: err.message }] });
      if (err instanceof ServiceError) throw err;
      throw new ServiceError('runner_failed', `could not read the session's files: ${(err as Error).message}`);
    } finally {
      release();
    }
  }

  /** A command in a session: files in first, then the command, then artifacts out, as a one-shot run does. */
  private async *runInSession(session: Session, p: PreparedExec, signal: AbortSignal, collect: ((tar: NodeJS.ReadableStream) => Promise<unknown>) | undefined): AsyncGenerator<RunEvent, RunResult, void> {
    const t0 = this.deps.clock.now();
    if (p.input) {
      try {
        await session.handle.putArchive(createReadStream(p.input.path), p.timeoutMs);
      } catch (err) {
        return { exitCode: null, durationMs: this.deps.clock.now() - t0, timedOut: false, oomKilled: false, truncated: false, error: { code: 'runner_failed', message: `could not put the files into the session: ${(err as Error).message}` } };
      }
    }
    const result = yield* session.handle.run({ command: p.plan.command, cwd: p.plan.cwd, env: runEnv(p.team, p.plan.env), stdin: p.stdin, timeoutMs: p.timeoutMs, maxOutputBytes: session.sandbox.maxOutputBytes }, signal);
    if (collect && !result.error && !result.timedOut && !signal.aborted) {
      try {
        result.collected = await collect(await session.handle.getArchive(p.timeoutMs));
      } catch (err) {
        const e = err as Error & { code?: string; entry?: string };
        result.collectError = { code: err instanceof ArchiveError ? e.code! : 'collect_failed', message: e.message, entry: e.entry };
      }
    }
    return result;
  }

  /** Every change to an execution's record goes through here: its secrets never reach the store. */
  private update(p: PreparedExec, fields: Partial<ExecutionRecord>): void {
    this.deps.state.updateExecution(p.execId, p.secrets.deep(fields));
  }

  private finishRecord(p: PreparedExec, fields: Partial<ExecutionRecord>): void {
    this.update(p, { ...fields, finishedAt: this.deps.clock.now() });
    const r = this.deps.state.getExecution(p.execId);
    if (r) {
      this.metrics.executions.inc({ team: r.team, decision: r.decision, status: r.status });
      this.deps.state.appendAudit('execution', r.team, auditView(r));
    }
    this.events.publish(p.team.name, { type: 'execution_finished', execution: r });
  }

  /** Approves, and with `remember` adds a persistent allow rule for the team (never over a hard deny). */
  approve(caller: Caller, id: string, body: { note?: string | undefined; remember?: { scope: RememberScope; ttlMs?: number | undefined } | undefined }): Approval {
    const a = this.approvals.get(id, caller.visibleTeam);
    if (!a) throw new ServiceError('approval_not_found', `no approval ${id}`);
    let rule: RememberedRule | undefined;
    if (body.remember && a.status === 'pending') {
      rule = this.buildRemembered(a, body.remember.scope, body.remember.ttlMs, caller.name);
    }
    const out = this.approvals.approve(id, caller.visibleTeam, caller.name, body.note);
    if (!out.ok) throw new ServiceError(out.code, out.message);
    if (rule) {
      this.deps.state.addRemembered(rule);
      this.deps.state.appendAudit('rule_remembered', rule.team, rule);
      this.log.info({ team: rule.team, rule: rule.id, scope: rule.scope, by: caller.name }, 'remembered rule added');
      this.events.publish(rule.team, { type: 'rule_remembered', rule });
    }
    this.log.info({ approvalId: id, execId: a.execId, team: a.team, by: caller.name }, 'approval approved');
    return out.approval;
  }

  reject(caller: Caller, id: string, reason: string | undefined): Approval {
    const out = this.approvals.reject(id, caller.visibleTeam, caller.name, reason);
    if (!out.ok) throw new ServiceError(out.code, out.message);
    this.log.info({ approvalId: id, execId: out.approval.execId, team: out.approval.team, by: caller.name }, 'approval rejected');
    return out.approval;
  }

  private buildRemembered(a: Approval, scope: RememberScope, ttlMs: number | undefined, by: string): RememberedRule {
    if (a.explanation.hard) throw new ServiceError('remember_refused', 'a hard deny can never be remembered as allowed');
    if (a.plan.stdin) throw new ServiceError('remember_refused', 'a command given stdin is never remembered: the stdin may be the code that runs');
    const secrets = planSecrets.get(a.plan);
    if (secrets && (secrets.occursIn(a.plan.command) || secrets.occursIn(a.plan.cwd))) {
      throw new ServiceError('remember_refused', 'a command that holds a secret value is never remembered: the rule would keep the secret');
    }
    if (a.plan.files || a.plan.session) {
      throw new ServiceError('remember_refused', 'a command given files or run in a session is never remembered: the files (or what earlier commands left) may be the code that runs');
    }
    const built = rememberPatterns(a.explanation.segments, scope, runsArbitraryCode);
    if (!built.ok) throw new ServiceError('remember_refused', built.message);
    const now = this.deps.clock.now();
    return {
      id: `rule_${randomUUID().slice(0, 8)}`,
      team: a.team,
      scope,
      pattern: built.patterns.length === 1 ? built.patterns[0]! : built.patterns.map((p) => `(?:${p})`).join('|'),
      cwd: scope === 'exact' ? a.plan.cwd : undefined,
      command: a.plan.command,
      createdBy: by,
      createdAt: now,
      expiresAt: ttlMs !== undefined ? now + ttlMs : undefined,
      approvalId: a.id,
    };
  }

  listRemembered(caller: Caller): RememberedRule[] {
    return this.deps.state.listRemembered(caller.visibleTeam);
  }

  removeRemembered(caller: Caller, id: string): void {
    const rule = this.deps.state.listRemembered(caller.visibleTeam).find((r) => r.id === id);
    if (!rule) throw new ServiceError('rule_not_found', `no remembered rule ${id}`);
    this.deps.state.removeRemembered(id);
    this.deps.state.appendAudit('rule_removed', rule.team, { id, by: caller.name, command: rule.command });
    this.events.publish(rule.team, { type: 'rule_removed', rule });
  }
}

/** What the audit chain keeps of an execution: who, what, where, the decision and the outcome. */
function auditView(r: ExecutionRecord): Record<string, unknown> {
  return {
    execId: r.id, requestedBy: r.requestedBy, command: r.command, cwd: r.cwd, decision: r.decision, code: r.code, policyHash: r.policyHash,
    status: r.status, approvalId: r.approvalId, approvedBy: r.approvedBy, image: r.image, imageId: r.imageId, runtime: r.runtime, mounts: r.mounts, limits: r.limits, exitCode: r.exitCode,
    durationMs: r.durationMs, timedOut: r.timedOut, oomKilled: r.oomKilled, truncated: r.truncated, writeQuotaExceeded: r.writeQuotaExceeded, bytesOut: r.bytesOut, error: r.error,
  };
}

/**
 * What clients see of an approval: a secret env value only as `[secret hmac:…]` (the approver can tell two
 * values apart; the plan hash still covers the real one), and every secret redacted wherever else it appears.
 */
export function approvalView(a: Approval): Record<string, unknown> {
  const secretKeys = planSecretKeys.get(a.plan);
  const env = secretKeys ? Object.fromEntries(Object.entries(a.plan.env).map(([k, v]) => [k, secretKeys.has(k) ? secretMarker(v) : v])) : a.plan.env;
  return (planSecrets.get(a.plan) ?? SecretSet.EMPTY).deep({
    id: a.id,
    execId: a.execId,
    team: a.team,
    status: a.status,
    command: a.plan.command,
    cwd: a.plan.cwd,
    env,
    stdin: a.plan.stdin,
    timeoutMs: a.plan.timeoutMs,
    files: a.plan.files,
    collect: a.plan.collect,
    session: a.plan.session,
    planHash: a.planHash,
    explanation: a.explanation,
    requestedBy: a.requestedBy,
    createdAt: new Date(a.createdAt).toISOString(),
    expiresAt: new Date(a.expiresAt).toISOString(),
    resolvedAt: a.resolvedAt ? new Date(a.resolvedAt).toISOString() : undefined,
    resolvedBy: a.resolvedBy,
    note: a.note,
    reason: a.reason,
  });
}
