import { FRAME_EVENT, FRAME_STDERR, FRAME_STDOUT } from '../../src/http/streaming.js';

export type MultiplexedEvent = { type: 'stdout' | 'stderr'; bytes: Buffer } | ({ type: string } & Record<string, unknown>);

/**
 * Reads a multiplexed exec stream (src/http/streaming.ts) as it arrives: 8-byte headers, kind 1/2 raw output,
 * kind 3 a JSON event. Strict: a header with anything but zeros in bytes 1–3 or an unknown kind throws, and
 * end() throws when the stream stopped inside a frame.
 */
export class MultiplexedDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): MultiplexedEvent[] {
    this.buf = this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : Buffer.from(chunk);
    const out: MultiplexedEvent[] = [];
    let at = 0;
    while (this.buf.length - at >= 8) {
      const kind = this.buf[at]!;
      if (this.buf[at + 1] !== 0 || this.buf[at + 2] !== 0 || this.buf[at + 3] !== 0) throw new Error('bad frame header');
      if (kind !== FRAME_STDOUT && kind !== FRAME_STDERR && kind !== FRAME_EVENT) throw new Error(`unknown frame kind ${kind}`);
      const length = this.buf.readUInt32BE(at + 4);
      if (this.buf.length - at - 8 < length) break;
      const payload = Buffer.from(this.buf.subarray(at + 8, at + 8 + length));
      at += 8 + length;
      if (kind === FRAME_EVENT) out.push(JSON.parse(payload.toString('utf8')) as MultiplexedEvent);
      else out.push({ type: kind === FRAME_STDOUT ? 'stdout' : 'stderr', bytes: payload });
    }
    this.buf = this.buf.subarray(at);
    return out;
  }

  end(): void {
    if (this.buf.length > 0) throw new Error(`the stream ended inside a frame (${this.buf.length} bytes)`);
  }
}

/** A whole multiplexed stream's events. */
export function decodeMultiplexed(body: Uint8Array): MultiplexedEvent[] {
  const d = new MultiplexedDecoder();
  const events = d.push(body);
  d.end();
  return events;
}
