import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PACING, pacedReads, type Pacing } from '../../src/runner/paced-reads.js';

/**
 * pacedReads (src/runner/paced-reads.ts) over a PassThrough standing in for Docker's attach socket: every byte
 * in order, small reads gathered once a run streams in bulk, backpressure, and the socket's end, error and
 * premature close.
 */

const tick = () => new Promise((r) => setImmediate(r));
const pacing = (p: Partial<Pacing>): Pacing => ({ ...PACING, ...p });

async function collect(it: AsyncGenerator<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(b);
  return out;
}

describe('pacedReads', () => {
  it('passes on every byte in order, however the socket delivered them, in bulk or not (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ minLength: 1, maxLength: 3000 }), { maxLength: 40 }), fc.integer({ min: 0, max: 20_000 }), async (chunks, bulkAfter) => {
        const socket = new PassThrough();
        const reads = collect(pacedReads(socket, pacing({ bulkAfter, small: 2048, high: 8192, pauseMs: 0 })));
        for (const c of chunks) {
          socket.write(Buffer.from(c));
          if (c[0]! % 3 === 0) await tick();
        }
        socket.end();
        expect(Buffer.concat(await reads).equals(Buffer.concat(chunks.map((c) => Buffer.from(c))))).toBe(true);
      }),
      { numRuns: 200 },
    );
  }, 30_000);

  it('before a run has streamed bulkAfter bytes, each read goes on as it comes', async () => {
    const socket = new PassThrough();
    const it = pacedReads(socket, pacing({ bulkAfter: 1000 }));
    socket.write('a');
    expect((await it.next()).value.toString()).toBe('a');
    expect(socket.isPaused()).toBe(false);
    socket.write('b');
    expect((await it.next()).value.toString()).toBe('b');
    await it.return(undefined);
  });

  it('after bulkAfter bytes, a small read pauses the socket for a moment; what arrives meanwhile follows, in order', async () => {
    const socket = new PassThrough();
    const it = pacedReads(socket, pacing({ bulkAfter: 100, small: 150, pauseMs: 20 }));
    socket.write(Buffer.alloc(200, 'x'));
    expect((await it.next()).value.length).toBe(200); // past bulkAfter, but not small: not held
    expect(socket.isPaused()).toBe(false);
    socket.write('small');
    expect((await it.next()).value.toString()).toBe('small');
    expect(socket.isPaused()).toBe(true); // held while the next pieces gather in the socket
    for (let i = 0; i < 10; i++) socket.write(`piece ${i};`);
    await tick();
    expect(socket.isPaused()).toBe(true);
    let gathered = '';
    while (gathered.length < 'piece 0;'.length * 10) gathered += (await it.next()).value.toString();
    expect(gathered).toBe(Array.from({ length: 10 }, (_, i) => `piece ${i};`).join(''));
    await it.return(undefined);
  });

  it('a read of `small` bytes or more is never held', async () => {
    const socket = new PassThrough();
    const it = pacedReads(socket, pacing({ bulkAfter: 0, small: 10 }));
    socket.write(Buffer.alloc(10, 'y'));
    expect((await it.next()).value.length).toBe(10);
    expect(socket.isPaused()).toBe(false);
    await it.return(undefined);
  });

  it('backpressure: the socket is paused while `high` bytes wait for the consumer, and flows again once taken', async () => {
    const socket = new PassThrough();
    const it = pacedReads(socket, pacing({ bulkAfter: Infinity, high: 4096 }));
    const first = it.next(); // starts the generator: it listens from here
    socket.write(Buffer.alloc(1000));
    expect((await first).value.length).toBe(1000);
    for (let i = 0; i < 5; i++) socket.write(Buffer.alloc(1000));
    await tick();
    expect(socket.isPaused()).toBe(true); // 5000 bytes wait, over `high`
    let taken = 0;
    for (let i = 0; i < 5; i++) taken += (await it.next()).value.length;
    expect(taken).toBe(5000);
    const next = it.next(); // all taken: it waits for more, flowing again
    await tick();
    expect(socket.isPaused()).toBe(false);
    socket.end(Buffer.alloc(7));
    expect((await next).value.length).toBe(7);
    expect((await it.next()).done).toBe(true);
  });

  it('ends at once for a socket that ended and closed before reading began (a command with no output)', async () => {
    const socket = new PassThrough();
    socket.end();
    socket.read(); // as a net.Socket does at EOF: 'end', then the socket destroys itself
    await tick();
    await tick();
    expect(socket.readableEnded && socket.destroyed).toBe(true);
    expect(await collect(pacedReads(socket))).toEqual([]);
  });

  it('the socket ending or failing during a hold: what came before goes on, then the end or the error', async () => {
    for (const how of ['end', 'error'] as const) {
      const socket = new PassThrough();
      const it = pacedReads(socket, pacing({ bulkAfter: 0, small: 100, pauseMs: 20 }));
      socket.write('held');
      expect((await it.next()).value.toString()).toBe('held');
      expect(socket.isPaused()).toBe(true);
      socket.write('last');
      if (how === 'end') socket.end();
      else setImmediate(() => socket.destroy(new Error('reset during the hold')));
      const rest = collect(it);
      if (how === 'end') expect(Buffer.concat(await rest).toString()).toBe('last');
      else await expect(rest).rejects.toThrow('reset during the hold');
    }
  });

  it('stopped early (even during a hold), it destroys the socket, as a stream\'s own iterator does', async () => {
    const socket = new PassThrough();
    const it = pacedReads(socket, pacing({ bulkAfter: 0, small: 100, pauseMs: 20 }));
    socket.write('held');
    await it.next();
    expect(socket.isPaused()).toBe(true);
    await it.return(undefined);
    expect(socket.destroyed).toBe(true);
  });

  it("throws the socket's error", async () => {
    const socket = new PassThrough();
    const reads = collect(pacedReads(socket));
    socket.write('partial');
    await tick();
    socket.destroy(new Error('connection reset'));
    await expect(reads).rejects.toThrow('connection reset');
  });

  it('throws ERR_STREAM_PREMATURE_CLOSE when the socket closes without ending', async () => {
    const socket = new PassThrough();
    const reads = collect(pacedReads(socket));
    await tick();
    socket.destroy();
    await expect(reads).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('leaves no listener behind when its reader stops early', async () => {
    const socket = new PassThrough();
    const before = ['data', 'end', 'close', 'error'].map((e) => socket.listenerCount(e));
    const it = pacedReads(socket);
    socket.write('x');
    await it.next();
    await it.return(undefined);
    expect(['data', 'end', 'close', 'error'].map((e) => socket.listenerCount(e))).toEqual(before);
  });
});
