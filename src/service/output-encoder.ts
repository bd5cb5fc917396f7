import { isUtf8 } from 'node:buffer';

/** A piece of output as it goes on the wire: UTF-8 text as is, anything else base64 (SPEC §3). */
export interface EncodedPart {
  bytes: Buffer;
  base64: boolean;
}

/**
 * Splits a byte stream into parts that are whole UTF-8 text or else go out base64. A multi-byte character
 * split across two Docker frames is carried to the next chunk instead of being mangled. The parts stay bytes:
 * the wire layer escapes them straight into its JSON line (src/http/streaming.ts), with no string decoded.
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

/**
 * The JSON text of a part's `data` value, quotes included, as a one-byte (latin1) string whose char codes are
 * the bytes to send. For text: the UTF-8 bytes read as latin1 (a copy, no decoding) and JSON-escaped by V8;
 * JSON escapes only quotes, backslashes and control characters, all ASCII, so every other byte, including each
 * byte of a multi-byte character, comes through unchanged, and writing the result as latin1 gives back exactly
 * the UTF-8 that `JSON.stringify(text)` would have produced.
 */
export function jsonDataLatin1(part: EncodedPart): string {
  if (part.base64) return `"${part.bytes.toString('base64')}"`;
  return JSON.stringify(part.bytes.toString('latin1'));
}
