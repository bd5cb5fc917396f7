import { createHash } from 'node:crypto';

/**
 * The audit trail is a hash chain: each record carries the hash of the one before it, and its own hash
 * covers its sequence number, time, type, team, payload and that previous hash. Editing, deleting or
 * reordering any record breaks the chain at that record; `execgate audit verify` names the first break.
 */
export interface AuditRecord {
  seq: number;
  ts: number;
  type: string;
  team: string;
  payload: string;
  prev: string;
  hash: string;
}

export const GENESIS = '0'.repeat(64);

export function auditHash(r: Omit<AuditRecord, 'hash'>): string {
  return createHash('sha256').update(JSON.stringify([r.seq, r.ts, r.type, r.team, r.payload, r.prev])).digest('hex');
}

export type VerifyResult = { ok: true; records: number; head: string } | { ok: false; records: number; brokenAt: number; reason: string };

/** Checks a chain in sequence order; `brokenAt` is the seq of the first record that does not fit. */
export function verifyChain(records: Iterable<AuditRecord>): VerifyResult {
  let prev = GENESIS;
  let expectSeq = 1;
  let n = 0;
  for (const r of records) {
    n++;
    if (r.seq !== expectSeq) return { ok: false, records: n, brokenAt: r.seq, reason: `expected record ${expectSeq} here, found ${r.seq} (a record was deleted or moved)` };
    if (r.prev !== prev) return { ok: false, records: n, brokenAt: r.seq, reason: 'its previous-hash does not match the record before it (a record before it was changed, deleted or moved)' };
    if (auditHash(r) !== r.hash) return { ok: false, records: n, brokenAt: r.seq, reason: 'its content does not match its hash (the record was edited)' };
    prev = r.hash;
    expectSeq++;
  }
  return { ok: true, records: n, head: prev };
}
