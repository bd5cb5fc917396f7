/**
 * Docker's attach stream with Tty=false multiplexes stdout and stderr as frames:
 * [stream: u8, 0, 0, 0, size: u32 big-endian] followed by `size` bytes.
 *
 * The parser is a state machine over the received chunks, so it never copies a chunk to join it with the
 * next one: a payload is a view into the chunk it arrived in. Consecutive payloads of the same stream within
 * one received chunk are then joined into one (a program writing 4–8 KiB at a time fills a 64 KiB socket
 * read with a dozen frames), which makes one event, one JSON line and one socket write out of them instead
 * of a dozen. Order between stdout and stderr is kept. The generator pulls from the source only as fast as
 * its consumer takes frames; the runner's source (pacedReads) pauses the Docker socket while 256 KiB wait, so
 * backpressure from the HTTP client reaches Docker.
 */
export interface Frame {
  stream: 'stdout' | 'stderr';
  data: Buffer;
}

const HEADER = 8;
/** Payloads smaller than this are joined with their same-stream neighbours. */
export const JOIN_BELOW = 8 * 1024;

export class DockerDemuxer {
  private readonly header = Buffer.alloc(HEADER);
  private headerHave = 0;
  /** Payload bytes still to come for the current frame, and which stream they belong to (null: stdin/unknown, dropped). */
  private remaining = 0;
  private current: Frame['stream'] | null = null;

  /** The frames completed or continued by this chunk, small same-stream neighbours joined. */
  push(chunk: Buffer): Frame[] {
    const out: { stream: Frame['stream']; parts: Buffer[]; small: boolean }[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.remaining === 0) {
        const take = Math.min(HEADER - this.headerHave, chunk.length - offset);
        chunk.copy(this.header, this.headerHave, offset, offset + take);
        this.headerHave += take;
        offset += take;
        if (this.headerHave < HEADER) break;
        this.headerHave = 0;
        const type = this.header[0];
        this.remaining = this.header.readUInt32BE(4);
        // 0 is stdin (never echoed with Tty=false); 1 stdout; 2 stderr (and 3, system errors, treated as stderr).
        this.current = type === 1 ? 'stdout' : type === 2 || type === 3 ? 'stderr' : null;
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - offset);
      const data = chunk.subarray(offset, offset + take);
      offset += take;
      this.remaining -= take;
      if (this.current === null) continue;
      const small = data.length < JOIN_BELOW;
      const last = out[out.length - 1];
      if (small && last?.small && last.stream === this.current) last.parts.push(data);
      else out.push({ stream: this.current, parts: [data], small });
    }
    return out.map(({ stream, parts }) => ({ stream, data: parts.length === 1 ? parts[0]! : Buffer.concat(parts) }));
  }

  /** Bytes of an unfinished frame (header or payload) at the end of the stream. */
  get pending(): number {
    return this.headerHave + this.remaining;
  }
}

export async function* demuxDockerStream(source: AsyncIterable<Buffer | string>): AsyncGenerator<Frame> {
  const demuxer = new DockerDemuxer();
  for await (const raw of source) {
    const frames = demuxer.push(typeof raw === 'string' ? Buffer.from(raw) : raw);
    for (const frame of frames) yield frame;
  }
  if (demuxer.pending > 0) throw new Error(`docker stream ended inside a frame (${demuxer.pending} bytes short)`);
}
