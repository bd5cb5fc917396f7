import type { RememberedRule } from '../approvals/remember.js';
import type { Decision } from '../policy/types.js';
import { GENESIS, auditHash, verifyChain, type AuditRecord, type VerifyResult } from '../store/audit.js';

export type ExecutionStatus = 'denied' | 'pending_approval' | 'running' | 'finished' | 'failed' | 'rejected' | 'expired' | 'withdrawn';

export interface ExecutionRecord {
  id: string;
  team: string;
  requestedBy: string;
  command: string;
  cwd: string;
  decision: Decision['decision'];
  code: Decision['code'];
  explanation: Decision;
  policyHash: string;
  status: ExecutionStatus;
  createdAt: number;
  finishedAt?: number;
  approvalId?: string;
  approvedBy?: string;
  rejectedReason?: string;
  containerId?: string;
  image: string;
  /** The image id (sha256) the container was created from. */
  imageId?: string;
  runtime: string;
  mounts?: { path: string; readOnly: boolean }[];
  limits?: { memoryMb: number; cpus: number; pidsLimit: number; timeoutMs: number; maxOutputBytes: number; network: string; user: string };
  exitCode?: number | null;
  durationMs?: number;
  timedOut?: boolean;
  oomKilled?: boolean;
  truncated?: boolean;
  /** Stopped by the write quota of the read-write allowed paths (sandbox.writeQuotaMb). */
  writeQuotaExceeded?: boolean;
  bytesOut?: number;
  error?: string;
  /** Input files put into /scratch (counts and hash, not content). */
  files?: { entries: number; bytes: number; sha256: string };
  collect?: string[];
  sessionId?: string;
  artifacts?: { bytes: number; files: number; sha256: string; expiresAt: number };
  /** Why collecting artifacts failed (the command's own result stands). */
  artifactError?: string;
}

export interface ExecutionQuery {
  team: string | null;
  decision?: Decision['decision'] | undefined;
  since?: number | undefined;
  limit: number;
}

/** History, remembered rules and safe-mode switches. `team` null means every team (admin). */
export interface StateStore {
  putExecution(r: ExecutionRecord): void;
  updateExecution(id: string, fields: Partial<ExecutionRecord>): void;
  getExecution(id: string): ExecutionRecord | undefined;
  listExecutions(q: ExecutionQuery): ExecutionRecord[];
  addRemembered(r: RememberedRule): void;
  removeRemembered(id: string): void;
  listRemembered(team: string | null): RememberedRule[];
  getSafeMode(team: string): boolean | undefined;
  setSafeMode(team: string, enabled: boolean): void;
  /** Appends to the tamper-evident audit chain. */
  appendAudit(type: string, team: string, payload: unknown): void;
  close(): void;
}

/** In-process state, bounded per team; forgets everything on restart. */
export class MemoryStateStore implements StateStore {
  private readonly executions = new Map<string, ExecutionRecord>();
  private readonly remembered = new Map<string, RememberedRule>();
  private readonly safeModes = new Map<string, boolean>();

  constructor(private readonly maxExecutions = 10_000) {}

  putExecution(r: ExecutionRecord): void {
    this.executions.set(r.id, r);
    while (this.executions.size > this.maxExecutions) this.executions.delete(this.executions.keys().next().value as string);
  }
  updateExecution(id: string, fields: Partial<ExecutionRecord>): void {
    const r = this.executions.get(id);
    if (r) Object.assign(r, fields);
  }
  getExecution(id: string): ExecutionRecord | undefined {
    return this.executions.get(id);
  }
  listExecutions(q: ExecutionQuery): ExecutionRecord[] {
    const out: ExecutionRecord[] = [];
    for (const r of [...this.executions.values()].reverse()) {
      if (q.team !== null && r.team !== q.team) continue;
      if (q.decision && r.decision !== q.decision) continue;
      if (q.since !== undefined && r.createdAt < q.since) continue;
      out.push(r);
      if (out.length >= q.limit) break;
    }
    return out;
  }
  addRemembered(r: RememberedRule): void {
    this.remembered.set(r.id, r);
  }
  removeRemembered(id: string): void {
    this.remembered.delete(id);
  }
  listRemembered(team: string | null): RememberedRule[] {
    return [...this.remembered.values()].filter((r) => team === null || r.team === team);
  }
  getSafeMode(team: string): boolean | undefined {
    return this.safeModes.get(team);
  }
  setSafeMode(team: string, enabled: boolean): void {
    this.safeModes.set(team, enabled);
  }
  readonly audit: AuditRecord[] = [];
  appendAudit(type: string, team: string, payload: unknown): void {
    const prev = this.audit.at(-1)?.hash ?? GENESIS;
    const rec = { seq: this.audit.length + 1, ts: Date.now(), type, team, payload: JSON.stringify(payload), prev };
    this.audit.push({ ...rec, hash: auditHash(rec) });
  }
  verifyAudit(): VerifyResult {
    return verifyChain(this.audit);
  }
  close(): void {}
}
