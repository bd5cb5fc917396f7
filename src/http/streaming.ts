import type { ServerResponse } from 'node:http';
import type { ExecEvent } from '../service/exec-service.js';
import { jsonLine } from '../service/json-escape.js';
import { OutputEncoder, type EncodedPart } from '../service/output-encoder.js';

export type StreamFormat = 'ndjson' | 'sse' | 'json' | 'multiplexed';

/**
 * The binary stream: the same events as NDJSON, each in a frame with an 8-byte header laid out as in Docker's
 * attach stream: byte 0 the kind, bytes 1–3 zero, bytes 4–7 the payload's length (unsigned, big-endian). Kind 1
 * is stdout and 2 stderr, the payload the output's bytes as they came, never escaped or re-encoded; kind 3 is
 * any other event as UTF-8 JSON (decision, started, exit...). Docker uses kind 3 for its own errors, so a
 * Docker demultiplexer cannot read this stream as it is.
 */
export const MULTIPLEXED_TYPE = 'application/vnd.execgate.multiplexed-stream';
export const FRAME_STDOUT = 1;
export const FRAME_STDERR = 2;
export const FRAME_EVENT = 3;

/** The answers POST /v1/exec can give, in the order that breaks a tie between ranges that name them exactly. */
const FORMATS: ReadonlyArray<readonly [StreamFormat, string]> = [
  ['multiplexed', MULTIPLEXED_TYPE],
  ['sse', 'text/event-stream'],
  ['ndjson', 'application/x-ndjson'],
  ['json', 'application/json'],
];

/** One media range of an Accept header: its type (lower case) and weight; undefined when the weight is malformed. */
function mediaRange(part: string): { type: string; q: number } | undefined {
  const [type = '', ...params] = part.split(';').map((p) => p.trim().toLowerCase());
  let q = 1;
  for (const p of params) {
    const m = /^q\s*=\s*(.*)$/.exec(p);
    if (!m) continue;
    if (!/^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/.test(m[1]!)) return undefined;
    q = Number(m[1]);
  }
  return type ? { type, q } : undefined;
}

/**
 * SPEC §3: NDJSON by default, SSE when asked for, one JSON answer on `Accept: application/json`; and the binary
 * multiplexed stream (MULTIPLEXED_TYPE) for output in bulk. Weights count (RFC 9110 §12.5.1): each format takes
 * the weight of the most specific range that matches it (its own type, then `type/*`, then the any-type
 * wildcard), `q=0` refuses it, and the highest weight wins. Ties go to an exact match over a wildcard, then,
 * between exact matches, to the order of FORMATS, and between wildcards to NDJSON. A range with a malformed
 * weight is ignored, and a header that accepts none of them gets the default, NDJSON.
 */
export function negotiate(accept: string | undefined): StreamFormat {
  const ranges = (accept ?? '').split(',').flatMap((p) => mediaRange(p) ?? []);
  let best: { format: StreamFormat; score: number } = { format: 'ndjson', score: 0 };
  FORMATS.forEach(([format, type], i) => {
    let q = 0;
    let specificity = -1;
    for (const r of ranges) {
      const s = r.type === type ? 2 : r.type === `${type.split('/')[0]}/*` ? 1 : r.type === '*/*' ? 0 : -1;
      if (s > specificity) [specificity, q] = [s, r.q];
    }
    if (specificity < 0 || q <= 0) return;
    // Weight (thousandths), then specificity, then the tie order, as the digits of one number.
    const tie = specificity === 2 ? FORMATS.length - i : format === 'ndjson' ? FORMATS.length + 1 : 0;
    const score = Math.round(q * 1000) * 100 + specificity * 10 + tie;
    if (score > best.score) best = { format, score };
  });
  return best.format;
}

/**
 * Bytes a stream may have queued in the socket before the writer waits for it to drain. Waiting on every
 * `false` from write() (the response's high-water mark is 16 KiB, less than one Docker frame) would stall the
 * pipeline at each event; this keeps it full while memory per stream stays bounded.
 */
export const STREAM_BUFFER_BYTES = 1 << 20;

/** Undefined while the socket's queue is under STREAM_BUFFER_BYTES; else resolves once it drains (or closes). */
function drained(res: ServerResponse): Promise<void> | undefined {
  if (res.writableLength < STREAM_BUFFER_BYTES || res.destroyed) return undefined;
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Holds a response's writes until the event loop's next turn, then sends them at once. Output comes in Docker
 * frames of 4–32 KiB, one socket read each when the service keeps up; each written on its own would be a
 * syscall of its own. It corks the socket, not the response: a corked chunked response (Node 21 and later)
 * buffers in itself and answers write() by its own fill, not the socket's, so backpressure (drained()) would
 * never see a slow client. `end()` sends whatever is left; a later uncork of an ended or destroyed socket is
 * skipped.
 */
class TurnBatcher {
  private pending = false;

  constructor(private readonly res: ServerResponse) {}

  hold(): void {
    if (this.pending) return;
    const target: { cork(): void; uncork(): void; destroyed: boolean; writableEnded: boolean } = this.res.socket ?? this.res;
    this.pending = true;
    target.cork();
    setImmediate(() => {
      this.pending = false;
      if (!target.destroyed && !target.writableEnded) target.uncork();
    });
  }
}

/**
 * An execution's events as NDJSON or SSE. Output events carry bytes (ExecEvent): each stream keeps its own
 * OutputEncoder, so a character split across chunks is whole in one line, and its rest goes out before any
 * other event. A text line is escaped straight from the bytes (jsonLine, WebAssembly SIMD), with no UTF-8
 * decoding, so the service's CPU per streamed byte stays small next to Docker's.
 */
export class EventStream {
  private readonly enc = { stdout: new OutputEncoder(), stderr: new OutputEncoder() };
  private readonly batch: TurnBatcher;
  private readonly pre: string;
  private readonly post: string;
  /** What comes before and after a text line's data (jsonLine). */
  private readonly head: Record<'stdout' | 'stderr', Buffer>;
  private readonly tail: Buffer;

  constructor(
    private readonly res: ServerResponse,
    format: 'ndjson' | 'sse',
  ) {
    this.batch = new TurnBatcher(res);
    this.pre = format === 'sse' ? 'data: ' : '';
    this.post = format === 'sse' ? '\n\n' : '\n';
    const head = (stream: string) => Buffer.from(`${this.pre}{"type":"${stream}","data":`);
    this.head = { stdout: head('stdout'), stderr: head('stderr') };
    this.tail = Buffer.from(`}${this.post}`);
  }

  /** Writes one event; resolves when the client can take more (backpressure) or is gone. */
  write(event: ExecEvent): Promise<void> | undefined {
    this.batch.hold();
    if (event.type === 'stdout' || event.type === 'stderr') this.output(event.type, this.enc[event.type].push(event.bytes));
    else {
      for (const s of ['stdout', 'stderr'] as const) this.output(s, this.enc[s].flush());
      this.res.write(`${this.pre}${JSON.stringify(event)}${this.post}`);
    }
    return drained(this.res);
  }

  private output(stream: 'stdout' | 'stderr', parts: EncodedPart[]): void {
    // Each line is one Buffer: it may wait in the socket's queue (up to STREAM_BUFFER_BYTES), and off the V8
    // heap it is not copied by young-generation GCs meanwhile (when lines were strings, GC per 200 MB streamed
    // went from 264 to 216 ms this way).
    for (const p of parts) {
      this.res.write(
        p.base64
          ? Buffer.concat([this.head[stream], Buffer.from(`"${p.bytes.toString('base64')}","encoding":"base64"`, 'latin1'), this.tail])
          : jsonLine(this.head[stream], p.bytes, this.tail),
      );
    }
  }
}

/** A frame's 8-byte header. */
export function frameHeader(kind: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(8);
  h.writeUInt32BE(kind << 24, 0);
  h.writeUInt32BE(length, 4);
  return h;
}

/**
 * An execution's events as the multiplexed stream (MULTIPLEXED_TYPE). Output passes through as the runner
 * read it from Docker, without a copy or an escape: headers and bytes are written corked (TurnBatcher), so
 * Node sends them together.
 */
export class MultiplexedStream {
  private readonly batch: TurnBatcher;

  constructor(private readonly res: ServerResponse) {
    this.batch = new TurnBatcher(res);
  }

  write(event: ExecEvent): Promise<void> | undefined {
    const output = event.type === 'stdout' || event.type === 'stderr';
    const payload = output ? event.bytes : Buffer.from(JSON.stringify(event), 'utf8');
    if (payload.length > 0 || !output) {
      this.batch.hold();
      this.res.write(frameHeader(event.type === 'stdout' ? FRAME_STDOUT : event.type === 'stderr' ? FRAME_STDERR : FRAME_EVENT, payload.length));
      this.res.write(payload);
    }
    return drained(this.res);
  }
}

const CONTENT_TYPES = { ndjson: 'application/x-ndjson; charset=utf-8', sse: 'text/event-stream; charset=utf-8', multiplexed: MULTIPLEXED_TYPE } as const;

export function startStream(res: ServerResponse, format: 'ndjson' | 'sse' | 'multiplexed', headers: Record<string, string> = {}): void {
  res.writeHead(200, {
    'content-type': CONTENT_TYPES[format],
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
    ...headers,
  });
  res.flushHeaders();
}
