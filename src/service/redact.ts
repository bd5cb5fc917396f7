import { createHmac, randomBytes } from 'node:crypto';

/**
 * Secret values and where they must never show: command output (streamed, as bytes), and every text the
 * service keeps or shows about an execution (history, approvals, events, audit, error messages).
 *
 * Semantics, the same for a stream cut anywhere and for a whole text: every byte covered by an occurrence of
 * any secret is hidden — occurrences may overlap (one secret inside another, two that share bytes, a secret
 * that overlaps itself), and a maximal run of overlapping occurrences becomes one marker
 * `[redacted:NAME]` (`[redacted:A,B]` when several secrets make up the run, names sorted). Hiding the union
 * rather than the first match means no byte of any secret ever gets out, even when two secrets overlap.
 */

export interface Secret {
  name: string;
  value: string;
}

/**
 * Shorter values are refused: a secret of a few bytes would be "found" all over ordinary output, and what a
 * marker replaces would tell an observer too much about it.
 */
export const MIN_SECRET_LENGTH = 8;

/** Every marker names its secret: a long name would let a short secret blow the output up many times over. */
export const MAX_SECRET_NAME_LENGTH = 64;

/**
 * A keyed hash of a secret value, with a key drawn at start-up and never shown: two values can be told apart,
 * but nothing published (markers, plan hashes) lets anyone test guesses of a value offline, as a plain sha256
 * of a short or guessable secret would.
 */
const FINGERPRINT_KEY = randomBytes(32);

export function secretFingerprint(value: string): string {
  return createHmac('sha256', FINGERPRINT_KEY).update(value, 'utf8').digest('hex');
}

/** How an approver, the history and the events show a secret env value: its name stays, the value never. */
export function secretMarker(value: string): string {
  return `[secret hmac:${secretFingerprint(value).slice(0, 12)}]`;
}

interface Pattern {
  bytes: Buffer;
  names: string[];
  /** KMP border table: border[i] = length of the longest proper prefix of bytes[0..i] that is also its suffix. */
  border: Int32Array;
  /** The smallest shift at which the pattern can overlap itself. */
  period: number;
}

function borders(p: Buffer): Int32Array {
  const b = new Int32Array(p.length);
  let k = 0;
  for (let i = 1; i < p.length; i++) {
    while (k > 0 && p[i] !== p[k]) k = b[k - 1]!;
    if (p[i] === p[k]) k++;
    b[i] = k;
  }
  return b;
}

/** An immutable set of secrets: makes stream redactors and redacts texts and JSON values. */
export class SecretSet {
  static readonly EMPTY = new SecretSet([]);
  private readonly patterns: Pattern[];
  /** Length of the longest secret, in bytes (0 when empty). */
  readonly maxLength: number;
  readonly names: readonly string[];

  constructor(secrets: readonly Secret[]) {
    const byValue = new Map<string, Set<string>>();
    for (const s of secrets) {
      if (s.value.length === 0) continue;
      const names = byValue.get(s.value) ?? new Set<string>();
      names.add(s.name);
      byValue.set(s.value, names);
    }
    this.patterns = [...byValue].map(([value, names]) => {
      const bytes = Buffer.from(value, 'utf8');
      const border = borders(bytes);
      return { bytes, names: [...names].sort(), border, period: bytes.length - border[bytes.length - 1]! };
    });
    this.maxLength = Math.max(0, ...this.patterns.map((p) => p.bytes.length));
    this.names = [...new Set(this.patterns.flatMap((p) => p.names))].sort();
  }

  get size(): number {
    return this.patterns.length;
  }

  /** This set and `other` together. */
  union(other: SecretSet): SecretSet {
    if (other.size === 0) return this;
    if (this.size === 0) return other;
    return new SecretSet([...this.entries(), ...other.entries()]);
  }

  private entries(): Secret[] {
    return this.patterns.flatMap((p) => p.names.map((name) => ({ name, value: p.bytes.toString('utf8') })));
  }

  /** A redactor for one output stream. */
  redactor(): StreamRedactor {
    return new StreamRedactor(this.patterns);
  }

  /** Whether `text` holds any secret. */
  occursIn(text: string): boolean {
    return this.patterns.some((p) => text.includes(p.bytes.toString('utf8')));
  }

  /** `text` with every secret replaced by its marker. */
  text(text: string): string {
    if (!this.occursIn(text)) return text;
    const r = this.redactor();
    return Buffer.concat([r.push(Buffer.from(text, 'utf8')), r.flush()]).toString('utf8');
  }

  /** A copy of a JSON-like value with every string redacted (keys included); other values as they are. */
  deep<T>(value: T): T {
    if (this.size === 0) return value;
    return this.walk(value) as T;
  }

  private walk(v: unknown): unknown {
    if (typeof v === 'string') return this.text(v);
    if (Array.isArray(v)) return v.map((x) => this.walk(x));
    if (v !== null && typeof v === 'object' && !Buffer.isBuffer(v)) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[this.text(k)] = this.walk(x);
      return out;
    }
    return v;
  }
}

interface Run {
  start: number;
  end: number;
  names: Set<string>;
}

/**
 * Redacts one byte stream as it passes. Bytes that could be the start of a secret continuing in the next
 * chunk are held back — at most (longest secret − 1) bytes — and `flush()` gives out what is left at the end.
 * Cost per chunk: one native `indexOf` scan per secret, plus a KMP pass over at most (secret length − 1) tail
 * bytes per secret to find what to hold back.
 */
export class StreamRedactor {
  private carry: Buffer = Buffer.alloc(0);
  /**
   * A run of hidden bytes that began before `carry` (its bytes are gone) and reaches `end` bytes into it: its
   * marker waits until no occurrence that is still possible could extend it.
   */
  private pending: { end: number; names: Set<string> } | undefined;

  constructor(private readonly patterns: readonly Pattern[]) {}

  /** Bytes held back so far (never more than the longest secret − 1). */
  get held(): number {
    return this.carry.length;
  }

  push(chunk: Buffer): Buffer {
    if (this.patterns.length === 0) return chunk;
    return this.process(this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk, false);
  }

  flush(): Buffer {
    if (this.patterns.length === 0) return Buffer.alloc(0);
    return this.process(this.carry, true);
  }

  private process(buf: Buffer, final: boolean): Buffer {
    // Every occurrence of every secret in buf, overlapping ones included.
    const occ: Run[] = [];
    for (const p of this.patterns) {
      for (let i = buf.indexOf(p.bytes); i !== -1; i = buf.indexOf(p.bytes, i + p.period)) {
        occ.push({ start: i, end: i + p.bytes.length, names: new Set(p.names) });
      }
    }
    occ.sort((a, b) => a.start - b.start);
    // Merged into runs of overlapping occurrences (touching ones stay apart), the pending run first.
    const runs: Run[] = this.pending ? [{ start: -1, end: this.pending.end, names: this.pending.names }] : [];
    for (const o of occ) {
      const last = runs.at(-1);
      if (last && o.start < last.end) {
        last.end = Math.max(last.end, o.end);
        for (const n of o.names) last.names.add(n);
      } else runs.push(o);
    }
    // Nothing from `hold` on is decided: a secret may start there and continue in the next chunk.
    const hold = final ? buf.length : this.holdPoint(buf);

    const out: Buffer[] = [];
    let pos = 0;
    this.pending = undefined;
    for (const r of runs) {
      if (r.start >= hold) break;
      if (r.start > pos) out.push(buf.subarray(pos, r.start));
      if (r.end <= hold) {
        out.push(Buffer.from(`[redacted:${[...r.names].sort().join(',')}]`));
        pos = r.end;
      } else {
        // Still growing: its marker goes out once it is complete. Its bytes before `hold` are dropped now.
        this.pending = { end: r.end - hold, names: r.names };
        pos = hold;
        break;
      }
    }
    if (hold > pos) out.push(buf.subarray(pos, hold));
    this.carry = Buffer.from(buf.subarray(hold));
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** The first position from which the rest of buf is a proper prefix of some secret (buf.length if none). */
  private holdPoint(buf: Buffer): number {
    let hold = buf.length;
    for (const p of this.patterns) {
      // The longest suffix of buf that is a proper prefix of p lies in its last (p.length − 1) bytes.
      const from = Math.max(0, buf.length - (p.bytes.length - 1));
      let q = 0;
      for (let i = from; i < buf.length; i++) {
        while (q > 0 && buf[i] !== p.bytes[q]) q = p.border[q - 1]!;
        if (buf[i] === p.bytes[q]) q++;
      }
      if (q > 0) hold = Math.min(hold, buf.length - q);
    }
    return hold;
  }
}
