/**
 * Docker's attach stream with Tty=false multiplexes stdout and stderr as frames:
 * [stream: u8, 0, 0, 0, size: u32 big-endian] followed by `size` bytes.
 * This parser yields frame payloads as views into the received chunks (no copy when a frame lies within
 * one chunk) and pulls from the source only as fast as its consumer takes frames, so backpressure from the
 * HTTP client reaches the Docker socket.
 */
export interface Frame {
  stream: 'stdout' | 'stderr';
  data: Buffer;
}

const HEADER = 8;

export async function* demuxDockerStream(source: AsyncIterable<Buffer | string>): AsyncGenerator<Frame> {
  let buf: Buffer = Buffer.alloc(0);
  for await (const raw of source) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw) : raw;
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let offset = 0;
    while (buf.length - offset >= HEADER) {
      const type = buf[offset];
      const size = buf.readUInt32BE(offset + 4);
      if (buf.length - offset - HEADER < size) break;
      const data = buf.subarray(offset + HEADER, offset + HEADER + size);
      offset += HEADER + size;
      // 0 is stdin (never echoed with Tty=false); 1 stdout; 2 stderr (and 3, system errors, treated as stderr).
      if (type === 1) yield { stream: 'stdout', data };
      else if (type === 2 || type === 3) yield { stream: 'stderr', data };
    }
    buf = offset === buf.length ? Buffer.alloc(0) : buf.subarray(offset);
  }
  if (buf.length > 0) throw new Error(`docker stream ended inside a frame (${buf.length} bytes left)`);
}
