/**
 * Reads an NDJSON HTTP response line by line. `keep: false` does not collect events (a 200 MB stream);
 * `afterRead` runs after each network read (a test's slow reader sleeps there).
 */
export async function readNdjson(
  res: Response,
  opts: { onEvent?: (e: Record<string, unknown>) => void; afterRead?: (reads: number) => Promise<void> | void; keep?: boolean } = {},
): Promise<Record<string, unknown>[]> {
  const events: Record<string, unknown>[] = [];
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let reads = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const e = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
      buf = buf.slice(i + 1);
      if (opts.keep !== false) events.push(e);
      opts.onEvent?.(e);
    }
    await opts.afterRead?.(++reads);
  }
  return events;
}
