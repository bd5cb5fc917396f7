import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { escapesWithWasm, jsonLine, jsonLineJs, wasmAffixRoom } from '../../src/service/json-escape.js';

/**
 * The NDJSON/SSE line writer (src/service/json-escape.ts): text escaped from its bytes by WebAssembly SIMD, and
 * the JSON.stringify fallback. Both are checked against JSON.stringify itself, byte for byte.
 */

const head = Buffer.from('data: {"type":"stdout","data":');
const tail = Buffer.from('}\n\n');

/** JSON.stringify of the bytes read one char per byte: what any byte-wise escape must give, for any bytes. */
const byBytes = (text: Buffer, h = head, t = tail) => Buffer.concat([h, Buffer.from(JSON.stringify(text.toString('latin1')), 'latin1'), t]);
/** JSON.stringify of the decoded text, as UTF-8: what a client reading the line expects. */
const byText = (text: string) => Buffer.concat([head, Buffer.from(JSON.stringify(text), 'utf8'), tail]);

const both = [
  ['WebAssembly', jsonLine],
  ['JSON.stringify fallback', jsonLineJs],
] as const;

it('runs on WebAssembly SIMD here (the fallback is for x64 without SSE4.1)', () => {
  expect(escapesWithWasm).toBe(true);
});

it('the committed module is the .wat compiled (node scripts/gen-wasm.mjs)', () => {
  const fresh = execFileSync(process.execPath, [new URL('../../scripts/gen-wasm.mjs', import.meta.url).pathname, '--stdout'], { encoding: 'utf8' });
  expect(readFileSync(new URL('../../src/service/json-escape-wasm.ts', import.meta.url), 'utf8')).toBe(fresh);
});

describe.each(both)('%s', (_name, line) => {
  it('every byte value, at every place in and around a 16-byte vector and in the tail', () => {
    // Lengths 1-63 put the byte in the vector loop, at each of its 16 lanes, and in the byte-by-byte tail.
    for (let c = 0; c < 256; c++) {
      for (let length = 1; length < 64; length++) {
        for (const at of new Set([0, 1, 15, 16, 17, length >> 1, length - 16, length - 2, length - 1])) {
          if (at < 0 || at >= length) continue;
          const text = Buffer.alloc(length, 'a');
          text[at] = c;
          const got = line(head, text, tail);
          if (!got.equals(byBytes(text))) expect.fail(`byte ${c} at ${at} of ${length}: ${got.toString('latin1')}`);
        }
      }
    }
  });

  it.each<[string, string]>([
    ['empty', ''],
    ['ascii', 'hello world'],
    ['newlines and tabs', 'a\nb\tc\r\n'],
    ['quotes and backslashes', 'say "hi" \\ \\n'],
    ['every control character', Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join('')],
    ['DEL and the line separators JSON leaves alone', '\x7f\u2028\u2029'],
    ['two, three and four byte characters', 'é € 😀 日本語'],
    ['a line every 37 bytes, as the bench streams', '0123456789abcdefghijklmnopqrstuvwxyz\n'.repeat(100)],
    ['runs of escapes longer than a vector', `${'"'.repeat(40)}${'\\'.repeat(33)}${'\x1b[0m'.repeat(20)}`],
  ])('%s', (_case, text) => {
    expect(line(head, Buffer.from(text), tail).equals(byText(text))).toBe(true);
  });

  it('any valid UTF-8 (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        const text = Buffer.from(s, 'utf8').toString('utf8'); // lone surrogates become U+FFFD, as in any UTF-8 output
        expect(line(head, Buffer.from(text), tail).equals(byText(text))).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('any bytes, dense in escapes (property)', () => {
    const byte = fc.oneof(fc.integer({ min: 0, max: 0x22 }), fc.constant(0x5c), fc.integer({ min: 0, max: 255 }));
    fc.assert(
      fc.property(fc.array(byte, { maxLength: 300 }), (bytes) => {
        const text = Buffer.from(bytes);
        expect(line(head, text, tail).equals(byBytes(text))).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('text longer than a piece (64 KiB), a character and an escape on each boundary, the worst case expansion', () => {
    const long = Buffer.from('é"'.repeat(90_000)); // 270,000 bytes, 3 a repeat: pieces end inside a character
    expect(long.subarray(65_535, 65_537).every((b) => b >= 0x80)).toBe(true);
    expect(line(head, long, tail).equals(byBytes(long))).toBe(true);
    const controls = Buffer.alloc(200_000, 0x01); // 6 bytes out for each: 1.2 MB
    expect(line(head, controls, tail).equals(byBytes(controls))).toBe(true);
    const exactly = Buffer.alloc(65_536, 0x1f);
    expect(line(head, exactly, tail).equals(byBytes(exactly))).toBe(true);
    // and nothing of the long ones is left over for the next line
    expect(line(head, Buffer.from('ok'), tail).toString()).toBe(`${head.toString()}"ok"${tail.toString()}`);
  });

  it('the worst case next to the end of the module\'s memory: a head as long as it can be, a whole piece of controls', () => {
    expect(wasmAffixRoom).toBeGreaterThan(60_000);
    const controls = Buffer.alloc(65_536, 0x1f); // 6 bytes out for each
    for (const [h, t] of [[wasmAffixRoom - 1, 1], [wasmAffixRoom, 0], [wasmAffixRoom, 1]]) {
      const bigHead = Buffer.alloc(h!, 'h');
      const tailOf = Buffer.alloc(t!, '}');
      expect(line(bigHead, controls, tailOf).equals(byBytes(controls, bigHead, tailOf))).toBe(true);
    }
  });

  it('a head and tail of any size', () => {
    const bigHead = Buffer.alloc(70_000, 'h');
    expect(line(bigHead, Buffer.from('x\n'), Buffer.from('}')).equals(byBytes(Buffer.from('x\n'), bigHead, Buffer.from('}')))).toBe(true);
    expect(line(Buffer.alloc(0), Buffer.from('"'), Buffer.alloc(0)).toString()).toBe('"\\""');
  });

  it('returns a Buffer of its own: the next line does not change it', () => {
    const first = line(head, Buffer.from('first'), tail);
    const copy = Buffer.from(first);
    line(head, Buffer.from('second line, longer than the first'), tail);
    expect(first.equals(copy)).toBe(true);
  });
});
