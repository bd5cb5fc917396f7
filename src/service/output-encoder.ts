import { isUtf8 } from 'node:buffer';

/** A piece of output as it goes on the wire: UTF-8 text as is, anything else base64 (SPEC §3). */
export interface EncodedPart {
  bytes: Buffer;
  base64: boolean;
}

/**
 * Splits a byte stream into parts that are whole UTF-8 text or else go out base64. A multi-byte character
 * split across two Docker frames is carried to the next chunk instead of being mangled. The parts stay bytes:
 * the wire layer escapes them straight into its JSON line (src/service/json-escape.ts), with no string decoded.
 */
export class OutputEncoder {
  private carry: Buffer = Buffer.alloc(0);

  push(bytes: Buffer): EncodedPart[] {
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, bytes]) : bytes;
    this.carry = Buffer.alloc(0);
    if (buf.length === 0) return [];
    if (isUtf8(buf)) return [{ bytes: buf, base64: false }];
    const cut = incompleteTail(buf);
    if (cut > 0 && isUtf8(buf.subarray(0, buf.length - cut))) {
      this.carry = Buffer.from(buf.subarray(buf.length - cut));
      const head = buf.subarray(0, buf.length - cut);
      return head.length > 0 ? [{ bytes: head, base64: false }] : [];
    }
    return [{ bytes: buf, base64: true }];
  }

  /** What is left at the end of the stream (an incomplete character) goes out as base64. */
  flush(): EncodedPart[] {
    if (this.carry.length === 0) return [];
    const out = [{ bytes: this.carry, base64: true }];
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
