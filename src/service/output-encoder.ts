import { isUtf8 } from 'node:buffer';

export interface EncodedChunk {
  data: string;
  encoding?: 'base64';
}

/**
 * Turns a byte stream into JSON-safe chunks: UTF-8 text as is, anything else base64 (SPEC §3). A multi-byte
 * character split across two Docker frames is carried to the next chunk instead of being mangled.
 */
export class OutputEncoder {
  private carry: Buffer = Buffer.alloc(0);

  push(bytes: Buffer): EncodedChunk[] {
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, bytes]) : bytes;
    this.carry = Buffer.alloc(0);
    if (isUtf8(buf)) return buf.length > 0 ? [{ data: buf.toString('utf8') }] : [];
    const cut = incompleteTail(buf);
    if (cut > 0 && isUtf8(buf.subarray(0, buf.length - cut))) {
      this.carry = Buffer.from(buf.subarray(buf.length - cut));
      const head = buf.subarray(0, buf.length - cut);
      return head.length > 0 ? [{ data: head.toString('utf8') }] : [];
    }
    return [{ data: buf.toString('base64'), encoding: 'base64' }];
  }

  /** What is left at the end of the stream (an incomplete character) goes out as base64. */
  flush(): EncodedChunk[] {
    if (this.carry.length === 0) return [];
    const out = [{ data: this.carry.toString('base64'), encoding: 'base64' as const }];
    this.carry = Buffer.alloc(0);
    return out;
  }
}

/** Length of a trailing, possibly-incomplete UTF-8 sequence (0 when the buffer ends on a boundary). */
function incompleteTail(buf: Buffer): number {
  for (let back = 1; back <= Math.min(3, buf.length); back++) {
    const b = buf[buf.length - back]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead byte
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}
