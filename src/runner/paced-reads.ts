import { finished, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

/** How a run's reads are paced (pacedReads). */
export interface Pacing {
  /** Bytes a run streams before small reads are held. */
  bulkAfter: number;
  /** A read under this many bytes, with nothing else waiting, is held. */
  small: number;
  /** How long the socket is paused then (a timer: at least this, often a millisecond more). */
  pauseMs: number;
  /** Bytes waiting for the consumer at which the socket is paused (backpressure). */
  high: number;
}

export const PACING: Pacing = { bulkAfter: 1024 * 1024, small: 32 * 1024, pauseMs: 1, high: 256 * 1024 };

/**
 * Reads a run's Docker attach socket for the demultiplexer, and lets small reads gather while output flows in
 * bulk.
 *
 * dockerd writes one frame per read of the container's pipe, often 4–8 KiB, and a reader that keeps up reads
 * each frame on its own. Every read then costs a wake-up and a read(2), a pass through the demultiplexer and
 * the run's generators, an event, an output line and a write(2) to the client: streaming 200 MB to curl, the
 * service made 13,000–40,000 reads of 5–15 KiB on average, and its CPU for the stream grew with their number.
 * Once a run has streamed `bulkAfter` bytes, a read smaller than `small`, with nothing else waiting, pauses
 * the socket for `pauseMs`: Node reads on until it holds the socket's high-water mark (16 KiB on Node 20; 64
 * on Node 22, where less gathers in the kernel: measured on 20, the service's runtime), then the frames
 * gather in the socket's kernel buffer, and the next reads take 64 KiB each. Output that trickles still goes
 * on as it comes, about 1–2 ms later once a run has printed `bulkAfter` bytes. Reads go on one by one as they
 * came, never copied or joined: a new Buffer per batch made V8 run full GCs while the binary stream flowed
 * (0–3 per 200 MB this way, 6–9 with the batches joined).
 *
 * Backpressure: while `high` bytes wait for the consumer (a slow HTTP client), the socket is paused, so the
 * kernel's buffer fills and Docker waits; it flows again once the consumer has taken them all.
 *
 * Ends when the socket ends; throws the socket's error (after the reads that came before it), or
 * ERR_STREAM_PREMATURE_CLOSE when it closed without ending, as the socket's own async iterator does. Like
 * that iterator, it destroys the socket when its reader stops early (the runner, once the markers are in).
 */
export async function* pacedReads(socket: Readable, pacing: Pacing = PACING): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let queued = 0;
  let total = 0;
  let ended = false;
  let failed: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (chunk: Buffer): void => {
    queue.push(chunk);
    queued += chunk.length;
    if (queued >= pacing.high) socket.pause();
    notify();
  };
  socket.on('data', onData);
  // finished() also sees a socket that ended or closed before this started reading (a command with no output
  // can be over by then), and tells a premature close from an end.
  const stopWatching = finished(socket, { writable: false }, (err) => {
    if (err) failed ??= err;
    else ended = true;
    notify();
  });
  try {
    for (;;) {
      if (queue.length === 0) {
        if (failed) throw failed;
        if (ended) return;
        if (socket.isPaused()) socket.resume();
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      const chunk = queue.shift()!;
      queued -= chunk.length;
      total += chunk.length;
      const hold = total >= pacing.bulkAfter && chunk.length < pacing.small && queue.length === 0 && !ended && !failed;
      if (hold) socket.pause();
      yield chunk;
      if (hold) {
        await sleep(pacing.pauseMs);
        // Flowing again, the socket reads what gathered (64 KiB a read) in the event loop's next poll.
        socket.resume();
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  } finally {
    socket.off('data', onData);
    stopWatching();
    // Stopped before the end: flowing with no listener, the socket would drop what comes; paused, it would hold
    // the connection open.
    if (!ended && !failed) socket.destroy();
  }
}
