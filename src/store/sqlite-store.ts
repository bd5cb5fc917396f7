import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { RememberedRule } from '../approvals/remember.js';
import type { ExecutionQuery, ExecutionRecord, StateStore } from '../service/state.js';
import { GENESIS, auditHash, verifyChain, type AuditRecord, type VerifyResult } from './audit.js';

export interface HistoryBounds {
  /** Executions older than this are pruned (per team, by creation time). */
  maxAgeMs?: number | undefined;
  /** At most this many executions are kept per team. */
  maxPerTeam?: number | undefined;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS executions (
  id TEXT PRIMARY KEY, team TEXT NOT NULL, created_at INTEGER NOT NULL, decision TEXT NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS executions_team_created ON executions (team, created_at);
CREATE TABLE IF NOT EXISTS remembered (id TEXT PRIMARY KEY, team TEXT NOT NULL, rule TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS safe_mode (team TEXT PRIMARY KEY, enabled INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, type TEXT NOT NULL, team TEXT NOT NULL, payload TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
`;

/**
 * The embedded default store: one SQLite file (WAL) under `store.path`, needing no server. History is
 * bounded per team; the audit chain is never pruned.
 */
export class SqliteStateStore implements StateStore {
  readonly db: Database.Database;
  private inserts = 0;
  private readonly stmts;

  constructor(
    dir: string,
    private readonly bounds: HistoryBounds = {},
    private readonly now: () => number = Date.now,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.db = new Database(join(dir, 'execgate.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    this.stmts = {
      put: this.db.prepare('INSERT OR REPLACE INTO executions (id, team, created_at, decision, status, record) VALUES (?, ?, ?, ?, ?, ?)'),
      get: this.db.prepare('SELECT record FROM executions WHERE id = ?'),
      addRule: this.db.prepare('INSERT OR REPLACE INTO remembered (id, team, rule) VALUES (?, ?, ?)'),
      delRule: this.db.prepare('DELETE FROM remembered WHERE id = ?'),
      rulesAll: this.db.prepare('SELECT rule FROM remembered ORDER BY rowid'),
      rulesTeam: this.db.prepare('SELECT rule FROM remembered WHERE team = ? ORDER BY rowid'),
      getSafe: this.db.prepare('SELECT enabled FROM safe_mode WHERE team = ?'),
      setSafe: this.db.prepare('INSERT OR REPLACE INTO safe_mode (team, enabled) VALUES (?, ?)'),
      auditHead: this.db.prepare('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1'),
      auditAdd: this.db.prepare('INSERT INTO audit (seq, ts, type, team, payload, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    };
  }

  /** Executions a stop left unfinished (running, or waiting for an approval): call before recoverAfterRestart. */
  unfinished(): ExecutionRecord[] {
    const rows = this.db.prepare("SELECT record FROM executions WHERE status IN ('running', 'pending_approval')").all() as { record: string }[];
    return rows.map((r) => JSON.parse(r.record) as ExecutionRecord);
  }

  /**
   * After a crash, nothing is running and nobody is waiting: runs still marked running are failed and pending
   * approvals expired, so history never shows a run that can no longer end.
   */
  recoverAfterRestart(): { failed: number; expired: number } {
    let failed = 0;
    let expired = 0;
    const rows = this.db.prepare("SELECT record FROM executions WHERE status IN ('running', 'pending_approval')").all() as { record: string }[];
    for (const { record } of rows) {
      const r = JSON.parse(record) as ExecutionRecord;
      if (r.status === 'running') {
        this.updateExecution(r.id, { status: 'failed', error: 'service_restarted', finishedAt: this.now() });
        failed++;
      } else {
        this.updateExecution(r.id, { status: 'expired', rejectedReason: 'expired', finishedAt: this.now() });
        expired++;
      }
    }
    return { failed, expired };
  }

  putExecution(r: ExecutionRecord): void {
    this.stmts.put.run(r.id, r.team, r.createdAt, r.decision, r.status, JSON.stringify(r));
    if (++this.inserts % 100 === 1) this.prune();
  }

  updateExecution(id: string, fields: Partial<ExecutionRecord>): void {
    const tx = this.db.transaction(() => {
      const r = this.getExecution(id);
      if (!r) return;
      const next = { ...r, ...fields };
      this.stmts.put.run(next.id, next.team, next.createdAt, next.decision, next.status, JSON.stringify(next));
    });
    tx();
  }

  getExecution(id: string): ExecutionRecord | undefined {
    const row = this.stmts.get.get(id) as { record: string } | undefined;
    return row ? (JSON.parse(row.record) as ExecutionRecord) : undefined;
  }

  listExecutions(q: ExecutionQuery): ExecutionRecord[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    const add = (clause: string, value: string | number) => {
      where.push(clause);
      args.push(value);
    };
    if (q.team !== null) add('team = ?', q.team);
    if (q.decision) add('decision = ?', q.decision);
    if (q.since !== undefined) add('created_at >= ?', q.since);
    const sql = `SELECT record FROM executions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, rowid DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, q.limit) as { record: string }[]).map((r) => JSON.parse(r.record) as ExecutionRecord);
  }

  /**
   * Applies the history bounds: by age, then by count per team. Runs on the event loop every 100 inserts, so
   * every step is an index range on (team, created_at), never a pass over the whole table: a window function
   * over a full history (10,000 per team by default) blocked the loop for 30-100 ms each time (npm run load).
   */
  prune(): number {
    let removed = 0;
    for (const { team } of this.db.prepare('SELECT DISTINCT team FROM executions').all() as { team: string }[]) {
      if (this.bounds.maxAgeMs !== undefined) {
        removed += this.db.prepare('DELETE FROM executions WHERE team = ? AND created_at < ?').run(team, this.now() - this.bounds.maxAgeMs).changes;
      }
      if (this.bounds.maxPerTeam === undefined) continue;
      // The newest row beyond the bound (same order as history: created_at, then rowid), and all older ones.
      const cut = this.db.prepare('SELECT created_at, rowid FROM executions WHERE team = ? ORDER BY created_at DESC, rowid DESC LIMIT 1 OFFSET ?').get(team, this.bounds.maxPerTeam) as { created_at: number; rowid: number } | undefined;
      if (cut) removed += this.db.prepare('DELETE FROM executions WHERE team = ? AND (created_at < ? OR (created_at = ? AND rowid <= ?))').run(team, cut.created_at, cut.created_at, cut.rowid).changes;
    }
    return removed;
  }

  addRemembered(r: RememberedRule): void {
    this.stmts.addRule.run(r.id, r.team, JSON.stringify(r));
  }
  removeRemembered(id: string): void {
    this.stmts.delRule.run(id);
  }
  listRemembered(team: string | null): RememberedRule[] {
    const rows = (team === null ? this.stmts.rulesAll.all() : this.stmts.rulesTeam.all(team)) as { rule: string }[];
    return rows.map((r) => JSON.parse(r.rule) as RememberedRule);
  }

  getSafeMode(team: string): boolean | undefined {
    const row = this.stmts.getSafe.get(team) as { enabled: number } | undefined;
    return row ? row.enabled === 1 : undefined;
  }
  setSafeMode(team: string, enabled: boolean): void {
    this.stmts.setSafe.run(team, enabled ? 1 : 0);
  }

  appendAudit(type: string, team: string, payload: unknown): void {
    const tx = this.db.transaction(() => {
      const head = this.stmts.auditHead.get() as { seq: number; hash: string } | undefined;
      const rec = { seq: (head?.seq ?? 0) + 1, ts: this.now(), type, team, payload: JSON.stringify(payload), prev: head?.hash ?? GENESIS };
      this.stmts.auditAdd.run(rec.seq, rec.ts, rec.type, rec.team, rec.payload, rec.prev, auditHash(rec));
    });
    tx.immediate();
  }

  *auditRecords(): Generator<AuditRecord> {
    yield* this.db.prepare('SELECT seq, ts, type, team, payload, prev, hash FROM audit ORDER BY rowid').iterate() as Iterable<AuditRecord>;
  }

  verifyAudit(): VerifyResult {
    return verifyChain(this.auditRecords());
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
