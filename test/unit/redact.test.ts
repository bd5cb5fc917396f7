import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SecretSet, secretFingerprint, secretMarker, type Secret } from '../../src/service/redact.js';

/**
 * The reference: hide the union of every occurrence of every secret, computed on the whole input at once,
 * byte by byte, with no cleverness. The stream redactor must give exactly this for every way of cutting the
 * input into chunks.
 */
function reference(input: Buffer, secrets: Secret[]): Buffer {
  const names: (Set<string> | undefined)[] = new Array(input.length).fill(undefined);
  const starts: boolean[] = new Array(input.length).fill(false);
  for (const s of secrets) {
    const v = Buffer.from(s.value);
    if (v.length === 0) continue;
    for (let i = 0; i + v.length <= input.length; i++) {
      if (!input.subarray(i, i + v.length).equals(v)) continue;
      starts[i] = true;
      for (let j = i; j < i + v.length; j++) (names[j] ??= new Set()).add(s.name);
    }
  }
  // A run is a maximal stretch of hidden bytes in which every occurrence overlaps the one before; two
  // occurrences that only touch (one ends where the next begins) are two runs.
  const out: Buffer[] = [];
  let i = 0;
  while (i < input.length) {
    if (!names[i]) {
      out.push(input.subarray(i, i + 1));
      i++;
      continue;
    }
    const run = new Set<string>();
    let end = i;
    // Extend while covered, but stop at a boundary where a new occurrence starts and nothing crosses it.
    for (let j = i; j < input.length && names[j]; j++) {
      if (j > i && starts[j] && !crosses(input, secrets, j)) break;
      for (const n of names[j]!) run.add(n);
      end = j + 1;
    }
    out.push(Buffer.from(`[redacted:${[...run].sort().join(',')}]`));
    i = end;
  }
  return Buffer.concat(out);
}

/** Whether some occurrence starts before `at` and ends after it (so `at` is inside a run, not between two). */
function crosses(input: Buffer, secrets: Secret[], at: number): boolean {
  for (const s of secrets) {
    const v = Buffer.from(s.value);
    for (let i = Math.max(0, at - v.length + 1); i < at; i++) {
      if (i + v.length > at && i + v.length <= input.length && input.subarray(i, i + v.length).equals(v)) return true;
    }
  }
  return false;
}

function streamed(input: Buffer, secrets: Secret[], cuts: number[]): { out: Buffer; maxHeld: number } {
  const set = new SecretSet(secrets);
  const r = set.redactor();
  const parts: Buffer[] = [];
  let prev = 0;
  let maxHeld = 0;
  for (const c of [...cuts, input.length]) {
    parts.push(r.push(input.subarray(prev, c)));
    maxHeld = Math.max(maxHeld, r.held);
    prev = c;
  }
  parts.push(r.flush());
  return { out: Buffer.concat(parts), maxHeld };
}

/** A small deterministic PRNG, so the random chunkings are the same on every run. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const S = (name: string, value: string): Secret => ({ name, value });
const bin = (...bytes: number[]) => Buffer.from(bytes);

interface Case {
  name: string;
  secrets: Secret[];
  input: Buffer;
  expected: string | Buffer;
}

const TOKEN = S('TOKEN', 'tok-12345678');
const cases: Case[] = [
  { name: 'no secret in the output passes unchanged', secrets: [TOKEN], input: Buffer.from('hello world\n'), expected: 'hello world\n' },
  { name: 'a secret in the middle', secrets: [TOKEN], input: Buffer.from('key=tok-12345678; ok\n'), expected: 'key=[redacted:TOKEN]; ok\n' },
  { name: 'a secret at the start', secrets: [TOKEN], input: Buffer.from('tok-12345678 rest'), expected: '[redacted:TOKEN] rest' },
  { name: 'a secret at the end, no newline', secrets: [TOKEN], input: Buffer.from('x tok-12345678'), expected: 'x [redacted:TOKEN]' },
  { name: 'the whole output is the secret', secrets: [TOKEN], input: Buffer.from('tok-12345678'), expected: '[redacted:TOKEN]' },
  { name: 'repeated, back to back: one marker each', secrets: [TOKEN], input: Buffer.from('tok-12345678tok-12345678'), expected: '[redacted:TOKEN][redacted:TOKEN]' },
  { name: 'repeated, apart', secrets: [TOKEN], input: Buffer.from('a tok-12345678 b tok-12345678 c'), expected: 'a [redacted:TOKEN] b [redacted:TOKEN] c' },
  { name: 'a prefix of the secret that never completes is output as is', secrets: [TOKEN], input: Buffer.from('tok-1234567 tok-123'), expected: 'tok-1234567 tok-123' },
  { name: 'a false start then the secret', secrets: [TOKEN], input: Buffer.from('tok-tok-12345678'), expected: 'tok-[redacted:TOKEN]' },
  {
    name: 'one secret inside another: the longer run hides both',
    secrets: [S('OUTER', 'xxabcdefghyy'), S('INNER', 'abcdefgh')],
    input: Buffer.from('1 xxabcdefghyy 2 abcdefgh 3'),
    expected: '1 [redacted:INNER,OUTER] 2 [redacted:INNER] 3',
  },
  {
    name: 'two secrets that share bytes: no byte of either gets out',
    secrets: [S('A', 'abcdefgh'), S('B', 'efghijkl')],
    input: Buffer.from('<abcdefghijkl>'),
    expected: '<[redacted:A,B]>',
  },
  {
    name: 'a secret that overlaps itself',
    secrets: [S('AAA', 'aaaaaaaa')],
    input: Buffer.from('baaaaaaaaaaab'),
    expected: 'b[redacted:AAA]b',
  },
  {
    name: 'a periodic secret, overlapping occurrences',
    secrets: [S('P', 'abababab')],
    input: Buffer.from('abababababab-abababab'),
    expected: '[redacted:P]-[redacted:P]',
  },
  {
    name: 'two names with the same value: one marker naming both',
    secrets: [S('ONE', 'same-value-1'), S('TWO', 'same-value-1')],
    input: Buffer.from('=same-value-1='),
    expected: '=[redacted:ONE,TWO]=',
  },
  {
    name: 'binary bytes around the secret stay as they are',
    secrets: [TOKEN],
    input: Buffer.concat([bin(0xff, 0x00, 0xfe), Buffer.from('tok-12345678'), bin(0x80, 0x00, 0xc3)]),
    expected: Buffer.concat([bin(0xff, 0x00, 0xfe), Buffer.from('[redacted:TOKEN]'), bin(0x80, 0x00, 0xc3)]),
  },
  {
    name: 'a binary secret',
    secrets: [S('BIN', Buffer.from([0xe2, 0x82, 0xac, 0x41, 0x42, 0x43, 0x44, 0x45]).toString('utf8'))],
    input: Buffer.from('€ABCDE€ABCD'),
    expected: '[redacted:BIN]€ABCD',
  },
  {
    name: 'a multi-byte UTF-8 secret inside text',
    secrets: [S('PASS', 'pässwörd-ü')],
    input: Buffer.from('pw: pässwörd-ü\n'),
    expected: 'pw: [redacted:PASS]\n',
  },
  {
    name: 'secrets of very different lengths',
    secrets: [S('SHORT', '12345678'), S('LONG', `-----BEGIN KEY-----${'Q'.repeat(200)}-----END KEY-----`)],
    input: Buffer.from(`a 12345678 b -----BEGIN KEY-----${'Q'.repeat(200)}-----END KEY----- c -----BEGIN KEY-----QQ`),
    expected: 'a [redacted:SHORT] b [redacted:LONG] c -----BEGIN KEY-----QQ',
  },
  { name: 'empty input', secrets: [TOKEN], input: Buffer.alloc(0), expected: '' },
  { name: 'no secrets at all', secrets: [], input: Buffer.from('tok-12345678'), expected: 'tok-12345678' },
];

describe('secret redaction: the reference itself', () => {
  // The exhaustive tests below compare with `reference`: first, it must give the expected answers.
  it.each(cases)('$name', ({ input, secrets, expected }) => {
    expect(reference(input, secrets)).toEqual(Buffer.isBuffer(expected) ? expected : Buffer.from(expected));
  });
});

describe('stream redaction: a secret split anywhere is still hidden (every cut point of every case)', () => {
  it.each(cases)('$name', ({ input, secrets, expected }) => {
    const want = Buffer.isBuffer(expected) ? expected : Buffer.from(expected);
    const longest = Math.max(0, ...secrets.map((s) => Buffer.byteLength(s.value)));
    // One cut at every position.
    for (let c = 0; c <= input.length; c++) {
      const { out, maxHeld } = streamed(input, secrets, [c]);
      expect(out, `cut at ${c}`).toEqual(want);
      expect(maxHeld).toBeLessThanOrEqual(Math.max(0, longest - 1));
    }
    // Two cuts at every pair of positions (inputs are short).
    if (input.length <= 64) {
      for (let a = 0; a <= input.length; a++) {
        for (let b = a; b <= input.length; b++) expect(streamed(input, secrets, [a, b]).out, `cuts at ${a},${b}`).toEqual(want);
      }
    }
    // One byte at a time.
    expect(streamed(input, secrets, Array.from({ length: input.length }, (_, i) => i)).out).toEqual(want);
  });
});

describe('stream redaction against the reference on generated input', () => {
  // Small alphabets make overlaps, near-misses and repeats frequent; the chunking is random too.
  const secretSets: Secret[][] = [
    [S('A', 'abcabcab'), S('B', 'cabcabca')],
    [S('A', 'aaaaaaaa'), S('B', 'aaaabaaa')],
    [S('A', 'abababab'), S('B', 'babababa'), S('C', 'abbaabba')],
    [S('A', 'xyzxyzxyzxyz'), S('B', 'zxyzxyzx')],
    [S('K', 'kkkkkkkkk'), S('L', 'klklklkl'), S('M', 'lkkkkkkkkl')],
  ];
  it.each(secretSets.map((secrets, i) => ({ i, secrets })))('set $i: 400 random inputs, random chunkings', ({ i, secrets }) => {
    const rand = prng(1000 + i);
    const alphabet = [...new Set(secrets.flatMap((s) => [...s.value]))].join('') + '\n';
    const longest = Math.max(...secrets.map((s) => s.value.length));
    for (let n = 0; n < 400; n++) {
      const len = Math.floor(rand() * 80);
      let text = '';
      while (text.length < len) {
        // Mix whole secrets in, so there are real hits, not only near misses.
        text += rand() < 0.15 ? secrets[Math.floor(rand() * secrets.length)]!.value : alphabet[Math.floor(rand() * alphabet.length)]!;
      }
      const input = Buffer.from(text);
      const cuts: number[] = [];
      for (let p = 0; p < input.length; p += 1 + Math.floor(rand() * 12)) cuts.push(p);
      const { out, maxHeld } = streamed(input, secrets, cuts);
      expect(out.toString(), JSON.stringify({ text, cuts })).toBe(reference(input, secrets).toString());
      expect(maxHeld).toBeLessThanOrEqual(longest - 1);
    }
  });
});

describe('stream redaction in bulk', () => {
  it('a megabyte of output with a secret every few kilobytes, in 4 KiB chunks: every one hidden, nothing else changed', () => {
    const secret = 'AKIA-0123456789-SECRET';
    const set = new SecretSet([S('AWS', secret)]);
    const line = 'x'.repeat(3000);
    const input = Buffer.from(Array.from({ length: 350 }, (_, i) => `${line}${i % 2 ? secret : ''}\n`).join(''));
    const r = set.redactor();
    const parts: Buffer[] = [];
    for (let p = 0; p < input.length; p += 4096) parts.push(r.push(input.subarray(p, p + 4096)));
    parts.push(r.flush());
    const out = Buffer.concat(parts).toString();
    expect(out).not.toContain(secret);
    expect(out.split('[redacted:AWS]')).toHaveLength(176);
    expect(out.replaceAll('[redacted:AWS]', secret)).toBe(input.toString());
  });

  it('output that overlaps a secret endlessly is held as one marker, not buffered', () => {
    const set = new SecretSet([S('A', 'aaaaaaaa')]);
    const r = set.redactor();
    let out = '';
    for (let i = 0; i < 10_000; i++) {
      out += r.push(Buffer.from('a'.repeat(100))).toString();
      expect(r.held).toBeLessThanOrEqual(7);
    }
    out += r.flush().toString();
    expect(out).toBe('[redacted:A]');
  });
});

describe('texts and JSON values', () => {
  const set = new SecretSet([S('API_KEY', 'sk-live-abcdef123'), S('DB_PASS', 'hunter2hunter2')]);

  it('redacts every string of a JSON value, keys included, and leaves the rest', () => {
    const v = { command: 'curl -u me:hunter2hunter2 x', n: 3, ok: true, none: null, list: ['sk-live-abcdef123', 1], nested: { 'sk-live-abcdef123': 'k' } };
    expect(set.deep(v)).toEqual({ command: 'curl -u me:[redacted:DB_PASS] x', n: 3, ok: true, none: null, list: ['[redacted:API_KEY]', 1], nested: { '[redacted:API_KEY]': 'k' } });
    expect(v.command).toBe('curl -u me:hunter2hunter2 x');
  });

  it('occursIn and text', () => {
    expect(set.occursIn('echo hunter2hunter2')).toBe(true);
    expect(set.occursIn('echo hunter2')).toBe(false);
    expect(set.text('no secret here')).toBe('no secret here');
  });

  it('union keeps both sets', () => {
    const u = set.union(new SecretSet([S('OTHER', 'other-secret-1')]));
    expect(u.names).toEqual(['API_KEY', 'DB_PASS', 'OTHER']);
    expect(u.text('other-secret-1 hunter2hunter2')).toBe('[redacted:OTHER] [redacted:DB_PASS]');
  });

  it('the approver marker names the value by a short keyed hash: stable, different for another value, never the value or its plain sha256', () => {
    const m = secretMarker('hunter2hunter2');
    expect(m).toMatch(/^\[secret hmac:[0-9a-f]{12}\]$/);
    expect(m).not.toContain('hunter2');
    expect(secretMarker('hunter2hunter2')).toBe(m);
    expect(secretMarker('hunter2hunter3')).not.toBe(m);
    // A plain sha256 would let anyone who sees the marker test guesses of the value offline.
    expect(m).not.toContain(createHash('sha256').update('hunter2hunter2').digest('hex').slice(0, 12));
    expect(secretFingerprint('hunter2hunter2')).not.toBe(createHash('sha256').update('hunter2hunter2').digest('hex'));
  });
});
