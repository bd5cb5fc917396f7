import { Writable } from 'node:stream';
import type { ServerResponse } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventStream, MultiplexedStream } from '../../src/http/streaming.js';
import { decodeMultiplexed } from '../support/multiplexed.js';
import { OutputEncoder } from '../../src/service/output-encoder.js';
import type { ExecEvent } from '../../src/service/exec-service.js';

/**
 * The NDJSON/SSE writer (src/http/streaming.ts): output events carry bytes and are escaped straight from
 * them (src/service/json-escape.ts, tested on its own in json-escape.test.ts). Checked against the plain way —
 * decode the text, JSON.stringify the event — byte for byte, and against the bytes the command wrote.
 */

/**
 * A ServerResponse stand-in that keeps what is written (the writers use write, cork, uncork, writableLength,
 * destroyed). `bytes()` ends it first, as the handler ends the response: the writers hold their writes corked
 * until the event loop's next turn, and end() sends them.
 */
function sink(): { res: ServerResponse; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  return {
    res: w as unknown as ServerResponse,
    bytes: () => {
      if (!w.writableEnded) w.end();
      return Buffer.concat(chunks);
    },
  };
}

function ndjson(events: ExecEvent[], format: 'ndjson' | 'sse' = 'ndjson'): string {
  const s = sink();
  const stream = new EventStream(s.res, format);
  for (const e of events) void stream.write(e);
  return s.bytes().toString('utf8');
}

const out = (bytes: Buffer | string, type: 'stdout' | 'stderr' = 'stdout'): ExecEvent => ({ type, bytes: Buffer.from(bytes) });
const exit: ExecEvent = { type: 'exit', exitCode: 0, durationMs: 1, timedOut: false, oomKilled: false, truncated: false, writeQuotaExceeded: false };

describe('EventStream', () => {
  it('writes the lines JSON.stringify of the wire events would', () => {
    const text = 'line "one"\n\ttwo é\n';
    expect(ndjson([out(text), out('oops\n', 'stderr'), exit])).toBe(
      [JSON.stringify({ type: 'stdout', data: text }), JSON.stringify({ type: 'stderr', data: 'oops\n' }), JSON.stringify(exit)].map((l) => `${l}\n`).join(''),
    );
  });

  it('SSE frames each event as one data: line', () => {
    expect(ndjson([out('a\nb'), exit], 'sse')).toBe(`data: ${JSON.stringify({ type: 'stdout', data: 'a\nb' })}\n\ndata: ${JSON.stringify(exit)}\n\n`);
  });

  it('a character split across chunks is whole in one line; bytes that are not UTF-8 go base64', () => {
    const euro = Buffer.from('€'); // 3 bytes
    const lines = ndjson([out(Buffer.concat([Buffer.from('x'), euro.subarray(0, 1)])), out(euro.subarray(1)), out(Buffer.from([0xff, 0x41])), exit])
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([{ type: 'stdout', data: 'x' }, { type: 'stdout', data: '€' }, { type: 'stdout', data: Buffer.from([0xff, 0x41]).toString('base64'), encoding: 'base64' }, exit]);
  });

  it("an incomplete character at the end goes out (base64) before the next event, in its stream's order", () => {
    const lines = ndjson([out(Buffer.from([0x61, 0xe2, 0x82])), out('err', 'stderr'), exit])
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      { type: 'stdout', data: 'a' },
      { type: 'stderr', data: 'err' },
      { type: 'stdout', data: Buffer.from([0xe2, 0x82]).toString('base64'), encoding: 'base64' },
      exit,
    ]);
  });

  it('decoding the lines gives back every byte written, however it was chunked (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 12 }), (chunks) => {
        const lines = ndjson([...chunks.map((c) => out(Buffer.from(c))), exit]).trim().split('\n').map((l) => JSON.parse(l) as { type: string; data: string; encoding?: string });
        const got = Buffer.concat(lines.filter((l) => l.type === 'stdout').map((l) => Buffer.from(l.data, l.encoding === 'base64' ? 'base64' : 'utf8')));
        expect(got.equals(Buffer.concat(chunks.map((c) => Buffer.from(c))))).toBe(true);
        expect(lines.at(-1)!.type).toBe('exit');
      }),
      { numRuns: 1000 },
    );
  });

  it('the encoder alone: text parts are the bytes themselves (no copy), split characters carried', () => {
    const enc = new OutputEncoder();
    const b = Buffer.from('plain');
    expect(enc.push(b)[0]!.bytes).toBe(b);
    expect(enc.push(Buffer.from([0xc3]))).toEqual([]);
    expect(enc.push(Buffer.from([0xa9]))).toEqual([{ bytes: Buffer.from('é'), base64: false }]);
    expect(enc.flush()).toEqual([]);
  });
});

describe('the multiplexed stream (MultiplexedStream)', () => {
  function multiplexed(events: ExecEvent[]): Buffer {
    const s = sink();
    const stream = new MultiplexedStream(s.res);
    for (const e of events) void stream.write(e);
    return s.bytes();
  }

  it('frames an output chunk as Docker does: kind, three zeros, big-endian length, the bytes as they are', () => {
    const bytes = Buffer.from([0xff, 0x00, 0x0a, 0x22]);
    expect(multiplexed([out(bytes, 'stderr')])).toEqual(Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 4]), bytes]));
    const json = Buffer.from(JSON.stringify(exit), 'utf8');
    expect(multiplexed([exit])).toEqual(Buffer.concat([Buffer.from([3, 0, 0, 0]), Buffer.from([0, 0, json.length >> 8, json.length & 0xff]), json]));
  });

  it('carries any sequence of events: output byte for byte (empty chunks dropped), the rest as their JSON (property)', () => {
    const event = fc.oneof(
      fc.record({ type: fc.constantFrom('stdout' as const, 'stderr' as const), bytes: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) }),
      fc.constant(exit),
      fc.record({ type: fc.constant('started' as const), containerId: fc.string({ minLength: 1, maxLength: 64 }), image: fc.string({ unit: 'binary', maxLength: 40 }) }),
    );
    fc.assert(
      fc.property(fc.array(event, { maxLength: 30 }), (events) => {
        const decoded = decodeMultiplexed(multiplexed(events as ExecEvent[]));
        const expected = (events as ExecEvent[])
          .filter((e) => !((e.type === 'stdout' || e.type === 'stderr') && e.bytes.length === 0))
          .map((e) => (e.type === 'stdout' || e.type === 'stderr' ? e : JSON.parse(JSON.stringify(e))));
        expect(decoded).toEqual(expected);
      }),
      { numRuns: 500 },
    );
  });
});

describe('writes of one turn of the event loop go out together', () => {
  it.each<[string, (res: ServerResponse) => { write: (e: ExecEvent) => unknown }]>([
    ['NDJSON', (res) => new EventStream(res, 'ndjson')],
    ['multiplexed', (res) => new MultiplexedStream(res)],
  ])('%s: five events in one turn are one writev, sent on the next turn without end()', async (_name, make) => {
    const calls: number[] = [];
    const w = new Writable({
      write(_chunk, _enc, cb) {
        calls.push(1);
        cb();
      },
      writev(chunks, cb) {
        calls.push(chunks.length);
        cb();
      },
    });
    const stream = make(w as unknown as ServerResponse);
    for (let i = 0; i < 4; i++) stream.write(out(`chunk ${i}\n`));
    stream.write(exit);
    expect(calls).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(calls.length).toBe(1);
    expect(calls[0]).toBeGreaterThanOrEqual(5);
  });
});
