import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RememberedRule } from '../../src/approvals/remember.js';
import type { ExecutionRecord } from '../../src/service/state.js';
import { auditHash } from '../../src/store/audit.js';
import { SqliteStateStore } from '../../src/store/sqlite-store.js';

let dir: string;
let now = 1_000_000;
beforeEach(() => {
  dir = mkdtempSync(join('/var/tmp', 'execgate-store-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const rec = (id: string, team = 'data', over: Partial<ExecutionRecord> = {}): ExecutionRecord => ({
  id,
  team,
  requestedBy: 'agent',
  command: `echo ${id}`,
  cwd: '/srv',
  decision: 'allow',
  code: 'allowed',
  explanation: { decision: 'allow', code: 'allowed', hard: false, reason: 'ok', segments: [], policyHash: 'abc', cwd: '/srv' },
  policyHash: 'abc',
  status: 'finished',
  createdAt: now++,
  image: 'img',
  runtime: 'runc',
  ...over,
});

const rule = (id: string, team = 'data'): RememberedRule => ({ id, team, scope: 'exact', pattern: '^make$', command: 'make', createdBy: 'alice', createdAt: 1, approvalId: 'apr_1' });

describe('SqliteStateStore', () => {
  it('history, remembered rules and safe mode survive closing and reopening', () => {
    const a = new SqliteStateStore(dir);
    a.putExecution(rec('ex_1'));
    a.updateExecution('ex_1', { exitCode: 3, approvedBy: 'alice' });
    a.addRemembered(rule('rule_1'));
    a.setSafeMode('data', false);
    a.close();
    const b = new SqliteStateStore(dir);
    expect(b.getExecution('ex_1')).toMatchObject({ id: 'ex_1', exitCode: 3, approvedBy: 'alice', explanation: { code: 'allowed' } });
    expect(b.listRemembered('data')).toEqual([rule('rule_1')]);
    expect(b.listRemembered('web')).toEqual([]);
    expect(b.getSafeMode('data')).toBe(false);
    expect(b.getSafeMode('web')).toBeUndefined();
    b.close();
  });

  it('lists with team, decision, since and limit filters, newest first', () => {
    const s = new SqliteStateStore(dir);
    s.putExecution(rec('ex_1', 'data'));
    s.putExecution(rec('ex_2', 'web'));
    s.putExecution(rec('ex_3', 'data', { decision: 'deny', status: 'denied' }));
    s.putExecution(rec('ex_4', 'data'));
    expect(s.listExecutions({ team: 'data', limit: 10 }).map((r) => r.id)).toEqual(['ex_4', 'ex_3', 'ex_1']);
    expect(s.listExecutions({ team: null, limit: 2 }).map((r) => r.id)).toEqual(['ex_4', 'ex_3']);
    expect(s.listExecutions({ team: 'data', decision: 'deny', limit: 10 }).map((r) => r.id)).toEqual(['ex_3']);
    const since = s.getExecution('ex_3')!.createdAt;
    expect(s.listExecutions({ team: null, since, limit: 10 }).map((r) => r.id)).toEqual(['ex_4', 'ex_3']);
    s.close();
  });

  it('bounds history by count per team and by age', () => {
    let clock = 10_000_000;
    const s = new SqliteStateStore(dir, { maxPerTeam: 3, maxAgeMs: 1000 }, () => clock);
    for (let i = 0; i < 6; i++) s.putExecution(rec(`d${i}`, 'data', { createdAt: clock - 500 + i }));
    s.putExecution(rec('w0', 'web', { createdAt: clock - 5000 }));
    s.putExecution(rec('w1', 'web', { createdAt: clock - 10 }));
    expect(s.prune()).toBe(4);
    expect(s.listExecutions({ team: 'data', limit: 10 }).map((r) => r.id)).toEqual(['d5', 'd4', 'd3']);
    expect(s.listExecutions({ team: 'web', limit: 10 }).map((r) => r.id)).toEqual(['w1']);
    clock += 2000;
    s.prune();
    expect(s.listExecutions({ team: null, limit: 10 })).toEqual([]);
    s.close();
  });

  it('the count bound keeps the newest per team in history order, even when creation times tie', () => {
    const s = new SqliteStateStore(dir, { maxPerTeam: 2 });
    for (let i = 0; i < 5; i++) s.putExecution(rec(`d${i}`, 'data', { createdAt: 5000 }));
    s.putExecution(rec('w0', 'web', { createdAt: 1 }));
    expect(s.prune()).toBe(3);
    expect(s.listExecutions({ team: 'data', limit: 10 }).map((r) => r.id)).toEqual(['d4', 'd3']);
    expect(s.listExecutions({ team: 'web', limit: 10 }).map((r) => r.id)).toEqual(['w0']);
    expect(s.prune()).toBe(0);
    s.close();
  });

  it('after a crash, running executions become failed and pending approvals expired', () => {
    const a = new SqliteStateStore(dir);
    a.putExecution(rec('ex_run', 'data', { status: 'running' }));
    a.putExecution(rec('ex_ask', 'data', { status: 'pending_approval', decision: 'ask' }));
    a.putExecution(rec('ex_done', 'data'));
    a.close();
    const b = new SqliteStateStore(dir);
    expect(b.recoverAfterRestart()).toEqual({ failed: 1, expired: 1 });
    expect(b.getExecution('ex_run')).toMatchObject({ status: 'failed', error: 'service_restarted' });
    expect(b.getExecution('ex_ask')).toMatchObject({ status: 'expired', rejectedReason: 'expired' });
    expect(b.getExecution('ex_done')!.status).toBe('finished');
    b.close();
  });
});

describe('audit chain', () => {
  function storeWith(n: number): SqliteStateStore {
    const s = new SqliteStateStore(dir);
    for (let i = 1; i <= n; i++) s.appendAudit('execution', i % 2 ? 'data' : 'web', { i, command: `echo ${i}` });
    return s;
  }
  /** Tampers with the file directly, as someone with disk access would. */
  function tamper(sql: string, ...args: unknown[]): void {
    const db = new Database(join(dir, 'execgate.db'));
    db.prepare(sql).run(...args);
    db.close();
  }

  it('an untouched chain verifies, across reopen', () => {
    storeWith(5).close();
    const s = new SqliteStateStore(dir);
    s.appendAudit('safe_mode_changed', 'data', { enabled: false });
    expect(s.verifyAudit()).toMatchObject({ ok: true, records: 6 });
    s.close();
  });

  it('detects an edited record and names it', () => {
    storeWith(5).close();
    tamper("UPDATE audit SET payload = ? WHERE seq = 3", JSON.stringify({ i: 3, command: 'echo innocent' }));
    const s = new SqliteStateStore(dir);
    expect(s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 3, reason: expect.stringContaining('edited') });
    s.close();
  });

  it('detects an edited record whose hash was recomputed: the next record no longer links to it', () => {
    storeWith(5).close();
    const s0 = new SqliteStateStore(dir);
    const [r3] = [...s0.auditRecords()].filter((r) => r.seq === 3);
    s0.close();
    const forged = { ...r3!, payload: '{"forged":true}' };
    tamper('UPDATE audit SET payload = ?, hash = ? WHERE seq = 3', forged.payload, auditHash(forged));
    const s = new SqliteStateStore(dir);
    expect(s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 4 });
    s.close();
  });

  it('detects a deleted record', () => {
    storeWith(5).close();
    tamper('DELETE FROM audit WHERE seq = 2');
    const s = new SqliteStateStore(dir);
    expect(s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 3, reason: expect.stringContaining('deleted') });
    s.close();
  });

  it('detects reordered records', () => {
    storeWith(5).close();
    const db = new Database(join(dir, 'execgate.db'));
    const a = db.prepare('SELECT * FROM audit WHERE seq = 2').get() as Record<string, unknown>;
    const b = db.prepare('SELECT * FROM audit WHERE seq = 4').get() as Record<string, unknown>;
    const set = db.prepare('UPDATE audit SET ts = ?, type = ?, team = ?, payload = ?, prev = ?, hash = ? WHERE seq = ?');
    set.run(b.ts, b.type, b.team, b.payload, b.prev, b.hash, 2);
    set.run(a.ts, a.type, a.team, a.payload, a.prev, a.hash, 4);
    db.close();
    const s = new SqliteStateStore(dir);
    expect(s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 2 });
    s.close();
  });
});
