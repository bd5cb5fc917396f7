// Byte helpers that work with or without Node's Buffer (the client also runs in Deno, Bun and browsers).

const hasBuffer = typeof Buffer === 'function';

export function toBase64(bytes: Uint8Array): string {
  if (hasBuffer) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(text: string): Uint8Array {
  if (hasBuffer) {
    const b = Buffer.from(text, 'base64');
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const encoder = new TextEncoder();
export const utf8 = (text: string): Uint8Array => encoder.encode(text);

export function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Reads a whole body into one array. */
export async function readAll(body: ReadableStream<Uint8Array> | null): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.length;
  }
  return concat(chunks, total);
}

/**
 * Splits a byte stream into lines (without the newline), decoding UTF-8 across chunk boundaries. A last line
 * without a newline is yielded too.
 */
export async function* lines(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<string, void, void> {
  const reader = body.getReader();
  // fetch ends the body on abort itself; a fetch passed in by the caller might not.
  const onAbort = () => void reader.cancel().catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let start = 0;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n', start)) {
        yield buf.slice(start, i);
        start = i + 1;
      }
      buf = buf.slice(start);
    }
    if (signal?.aborted) return;
    buf += decoder.decode();
    if (buf.length > 0) yield buf;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // Stopped early (an abort, a broken line): let go of the connection.
    reader.cancel().catch(() => undefined);
  }
}
