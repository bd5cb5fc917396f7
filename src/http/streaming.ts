import type { ServerResponse } from 'node:http';

export type StreamFormat = 'ndjson' | 'sse' | 'json';

/** SPEC §3: NDJSON by default, SSE when asked for, one JSON answer on `Accept: application/json`. */
export function negotiate(accept: string | undefined): StreamFormat {
  const a = (accept ?? '').toLowerCase();
  if (a.includes('text/event-stream')) return 'sse';
  if (a.includes('application/x-ndjson')) return 'ndjson';
  if (a.includes('application/json')) return 'json';
  return 'ndjson';
}

/**
 * Bytes a stream may have queued in the socket before the writer waits for it to drain. Waiting on every
 * `false` from write() (the response's high-water mark is 16 KiB, less than one Docker frame) would stall the
 * pipeline at each event; this keeps it full while memory per stream stays bounded.
 */
export const STREAM_BUFFER_BYTES = 1 << 20;

/** Writes one event; resolves when the client can take more (backpressure) or is gone. */
export function writeEvent(res: ServerResponse, format: 'ndjson' | 'sse', event: unknown): Promise<void> | undefined {
  const json = JSON.stringify(event);
  res.write(format === 'sse' ? `data: ${json}\n\n` : `${json}\n`);
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

export function startStream(res: ServerResponse, format: 'ndjson' | 'sse', headers: Record<string, string> = {}): void {
  res.writeHead(200, {
    'content-type': format === 'sse' ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
    ...headers,
  });
  res.flushHeaders();
}
