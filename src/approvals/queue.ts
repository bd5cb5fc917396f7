import type { Decision } from '../policy/types.js';

/** Time is injected so that expiry is tested without waiting. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): { cancel(): void };
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return { cancel: () => clearTimeout(t) };
  },
};

export type ApprovalStatus = 'pending' | 'approved' | 'rejected' | 'expired' | 'withdrawn';

/** What exactly is being approved: an approval covers this plan and nothing else. */
export interface ExecPlan {
  team: string;
  command: string;
  cwd: string;
  env: Record<string, string>;
  /** stdin is code for `sh`, `python3`, `node`…: the approver sees it and the plan hash covers it. */
  stdin?: { bytes: number; sha256: string; preview: string; encoding: 'utf8' | 'base64' } | undefined;
  timeoutMs?: number | undefined;
  /** Files put into /scratch first: what the approver is shown of them, and their hash. */
  files?: { entries: number; bytes: number; sha256: string; names: string[] } | undefined;
  /** Glob patterns of /scratch files returned as artifacts. */
  collect?: string[] | undefined;
  /** The session the command runs in (its earlier commands' state is part of what runs). */
  session?: string | undefined;
}

export interface Approval {
  id: string;
  execId: string;
  team: string;
  plan: ExecPlan;
  /** sha256 of the canonical plan, shown to the approver and checked again before the run. */
  planHash: string;
  explanation: Decision;
  requestedBy: string;
  createdAt: number;
  expiresAt: number;
  status: ApprovalStatus;
  resolvedAt?: number;
  resolvedBy?: string;
  note?: string;
  reason?: string;
}

export type Resolution =
  | { approved: true; by: string; note?: string | undefined }
  | { approved: false; reason: string; by: string };

export type ResolveOutcome =
  | { ok: true; approval: Approval }
  | { ok: false; code: 'approval_not_found' | 'approval_already_resolved'; message: string; approval?: Approval };

export type ApprovalEvent = { type: 'approval_created' | 'approval_resolved'; approval: Approval };

interface Entry {
  approval: Approval;
  resolve: (r: Resolution) => void;
  timer: { cancel(): void };
}

/**
 * Pending approvals and their resolution. Holds no I/O: events go to `onEvent`, ids come from `newId`.
 * Resolved approvals are kept (bounded) so that a second resolve answers 409 rather than 404.
 */
export class ApprovalQueue {
  private readonly pending = new Map<string, Entry>();
  private readonly done = new Map<string, Approval>();

  constructor(
    private readonly opts: {
      clock: Clock;
      timeoutMs: () => number;
      newId: () => string;
      onEvent?: (e: ApprovalEvent) => void;
      keepResolved?: number;
    },
  ) {}

  /** Opens an approval; the promise settles when a human resolves it, it expires, or it is withdrawn. */
  open(input: { execId: string; plan: ExecPlan; planHash: string; explanation: Decision; requestedBy: string }): { approval: Approval; resolution: Promise<Resolution> } {
    const now = this.opts.clock.now();
    const timeoutMs = this.opts.timeoutMs();
    const approval: Approval = {
      id: this.opts.newId(),
      execId: input.execId,
      team: input.plan.team,
      plan: input.plan,
      planHash: input.planHash,
      explanation: input.explanation,
      requestedBy: input.requestedBy,
      createdAt: now,
      expiresAt: now + timeoutMs,
      status: 'pending',
    };
    let resolve!: (r: Resolution) => void;
    const resolution = new Promise<Resolution>((r) => (resolve = r));
    const timer = this.opts.clock.setTimeout(() => this.finish(approval.id, 'expired', { approved: false, reason: 'expired', by: 'system' }), timeoutMs);
    this.pending.set(approval.id, { approval, resolve, timer });
    this.opts.onEvent?.({ type: 'approval_created', approval });
    return { approval, resolution };
  }

  /** `team` null: an admin sees every team. */
  list(team: string | null, status?: ApprovalStatus): Approval[] {
    const all = [...[...this.pending.values()].map((e) => e.approval), ...this.done.values()];
    return all
      .filter((a) => (team === null || a.team === team) && (status === undefined || a.status === status))
      .sort((a, b) => a.createdAt - b.createdAt);
  }

  get(id: string, team: string | null): Approval | undefined {
    const a = this.pending.get(id)?.approval ?? this.done.get(id);
    return a && (team === null || a.team === team) ? a : undefined;
  }

  approve(id: string, team: string | null, by: string, note?: string): ResolveOutcome {
    return this.resolveAs(id, team, 'approved', { approved: true, by, note }, { resolvedBy: by, note });
  }

  reject(id: string, team: string | null, by: string, reason?: string): ResolveOutcome {
    const why = reason?.trim() || 'rejected';
    return this.resolveAs(id, team, 'rejected', { approved: false, reason: why, by }, { resolvedBy: by, reason: why });
  }

  /** The requesting client went away: nobody is waiting for the answer any more. */
  withdraw(id: string): void {
    this.finish(id, 'withdrawn', { approved: false, reason: 'withdrawn', by: 'system' });
  }

  /**
   * Puts back an approval resolved before this process started (one a restart expired), so that it answers
   * with its status (GET) and a late approve or reject gets 409, not 404.
   */
  restore(a: Approval): void {
    if (a.status === 'pending' || this.pending.has(a.id)) return;
    this.done.set(a.id, a);
    const keep = this.opts.keepResolved ?? 1000;
    while (this.done.size > keep) this.done.delete(this.done.keys().next().value as string);
  }

  /** Expires everything pending (service shutdown): waiting clients are answered, nothing hangs. */
  expireAll(reason = 'expired'): void {
    for (const id of [...this.pending.keys()]) this.finish(id, 'expired', { approved: false, reason, by: 'system' });
  }

  pendingCount(team?: string): number {
    let n = 0;
    for (const e of this.pending.values()) if (team === undefined || e.approval.team === team) n++;
    return n;
  }

  private resolveAs(id: string, team: string | null, status: ApprovalStatus, resolution: Resolution, fields: Partial<Approval>): ResolveOutcome {
    const entry = this.pending.get(id);
    if (!entry || (team !== null && entry.approval.team !== team)) {
      const resolved = this.done.get(id);
      if (resolved && (team === null || resolved.team === team)) {
        return { ok: false, code: 'approval_already_resolved', message: `approval ${id} is already ${resolved.status}`, approval: resolved };
      }
      // Another team's approval is answered exactly like an unknown one: its existence is not revealed.
      return { ok: false, code: 'approval_not_found', message: `no approval ${id}` };
    }
    Object.assign(entry.approval, fields);
    this.finish(id, status, resolution);
    return { ok: true, approval: entry.approval };
  }

  private finish(id: string, status: ApprovalStatus, resolution: Resolution): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    entry.timer.cancel();
    const a = entry.approval;
    a.status = status;
    a.resolvedAt = this.opts.clock.now();
    if (!resolution.approved) {
      a.reason = resolution.reason;
      a.resolvedBy ??= resolution.by;
    }
    this.done.set(id, a);
    const keep = this.opts.keepResolved ?? 1000;
    while (this.done.size > keep) this.done.delete(this.done.keys().next().value as string);
    entry.resolve(resolution);
    this.opts.onEvent?.({ type: 'approval_resolved', approval: a });
  }
}
