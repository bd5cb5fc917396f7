import { describe, expect, it } from 'vitest';
import { DockerDemuxer, JOIN_BELOW, demuxDockerStream, type Frame } from '../../src/runner/demux.js';

const frame = (type: number, payload: string | Buffer): Buffer => {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const h = Buffer.alloc(8);
  h[0] = type;
  h.writeUInt32BE(data.length, 4);
  return Buffer.concat([h, data]);
};

/** Cuts `wire` at the given offsets. */
const cut = (wire: Buffer, at: number[]): Buffer[] => {
  const points = [0, ...at.filter((n) => n > 0 && n < wire.length).sort((a, b) => a - b), wire.length];
  return points.slice(1).map((end, i) => wire.subarray(points[i], end));
};

/** What each stream received, in order, and the interleaving of streams (runs of the same stream merged). */
const summarise = (frames: Frame[]) => {
  const per = { stdout: '', stderr: '' };
  const order: string[] = [];
  for (const f of frames) {
    per[f.stream] += f.data.toString('latin1');
    if (order[order.length - 1] !== f.stream) order.push(f.stream);
  }
  return { ...per, order };
};

async function collect(chunks: Buffer[]): Promise<Frame[]> {
  const out: Frame[] = [];
  for await (const f of demuxDockerStream((async function* () { yield* chunks; })())) out.push(f);
  return out;
}

describe('DockerDemuxer', () => {
  const wire = Buffer.concat([
    frame(1, 'out-1 '),
    frame(1, 'out-2 '),
    frame(2, 'err-1 '),
    frame(0, 'stdin is dropped'),
    frame(1, ''),
    frame(1, Buffer.from([0xff, 0x00, 0x0a])),
    frame(3, 'system error'),
    frame(1, 'x'.repeat(70_000)),
  ]);
  const expected = {
    stdout: `out-1 out-2 ${Buffer.from([0xff, 0x00, 0x0a]).toString('latin1')}${'x'.repeat(70_000)}`,
    stderr: 'err-1 system error',
    order: ['stdout', 'stderr', 'stdout', 'stderr', 'stdout'],
  };

  it.each<[string, number[]]>([
    ['one chunk', []],
    ['split inside the first header', [3]],
    ['split after each header byte', [1, 2, 3, 4, 5, 6, 7]],
    ['split between header and payload', [8]],
    ['split inside a payload', [10, 17]],
    ['split inside the big payload', [200, 30_000, 65_536]],
    ['every 1,000 bytes', Array.from({ length: 80 }, (_, i) => (i + 1) * 1000)],
  ])('%s: same bytes, same order', async (_name, at) => {
    expect(summarise(await collect(cut(wire, at)))).toEqual(expected);
  });

  it('every single-byte split point gives the same result', async () => {
    const small = Buffer.concat([frame(1, 'ab'), frame(2, 'cd'), frame(1, 'ef'), frame(1, 'gh')]);
    for (let i = 1; i < small.length; i++) {
      expect(summarise(await collect(cut(small, [i])))).toEqual({ stdout: 'abefgh', stderr: 'cd', order: ['stdout', 'stderr', 'stdout'] });
    }
  });

  it('joins same-stream frames that arrive in one chunk into one', () => {
    const d = new DockerDemuxer();
    const frames = d.push(Buffer.concat([frame(1, 'a'), frame(1, 'b'), frame(1, 'c'), frame(2, 'e'), frame(1, 'd')]));
    expect(frames.map((f) => [f.stream, f.data.toString()])).toEqual([['stdout', 'abc'], ['stderr', 'e'], ['stdout', 'd']]);
  });

  it('passes a large payload on as a view into the chunk, never joined with its neighbours', () => {
    const big = 'x'.repeat(JOIN_BELOW);
    const chunk = Buffer.concat([frame(1, 'a'), frame(1, big), frame(1, 'b'), frame(1, 'c'), frame(1, big), frame(1, big)]);
    const frames = new DockerDemuxer().push(chunk);
    expect(frames.map((f) => f.data.toString())).toEqual(['a', big, 'bc', big, big]);
    for (const f of frames.filter((f) => f.data.length === JOIN_BELOW)) expect(f.data.buffer).toBe(chunk.buffer);
  });

  it('a lone frame is a view into the chunk, not a copy', () => {
    const chunk = frame(1, 'hello');
    const [f] = new DockerDemuxer().push(chunk);
    expect(f!.data.buffer).toBe(chunk.buffer);
  });

  it.each<[string, Buffer]>([
    ['inside a header', frame(1, 'abc').subarray(0, 5)],
    ['inside a payload', frame(1, 'abcdef').subarray(0, 11)],
  ])('a stream that ends %s is an error', async (_name, wireBytes) => {
    await expect(collect([wireBytes])).rejects.toThrow(/ended inside a frame/);
  });
});
