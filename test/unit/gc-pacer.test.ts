import { describe, expect, it } from 'vitest';
import { GcPacer, startGcPacer } from '../../src/gc-pacer.js';
import { NODE_FLAGS } from '../../src/node-flags.js';

const MiB = 1024 * 1024;

/** A pacer over scripted probe readings and clock; records each GC request's options. */
function scripted(readings: Array<[atMs: number, arrayBuffers: number]>, threshold = 16 * MiB, cooldown = 250) {
  let i = 0;
  const calls: unknown[] = [];
  const pacer = new GcPacer({
    thresholdBytes: threshold,
    cooldownMs: cooldown,
    now: () => readings[i]![0],
    arrayBuffers: () => readings[i]![1],
    gc: (o) => calls.push(o),
  });
  const fired = readings.map((_, k) => {
    i = k;
    return pacer.tick();
  });
  return { fired, calls, pacer };
}

describe('GcPacer', () => {
  it.each<[string, Array<[number, number]>, boolean[]]>([
    ['under the threshold: nothing', [[0, 1 * MiB], [50, 15 * MiB], [100, 16 * MiB]], [false, false, false]],
    ['over it: one request', [[0, 17 * MiB]], [true]],
    ['still over within the cooldown: no second request', [[0, 40 * MiB], [50, 40 * MiB], [200, 60 * MiB]], [true, false, false]],
    // After a request, the first look past the cooldown only reads what stayed live: the new base.
    ['what stays live after a GC is the new base: no request while it merely stays', [[0, 40 * MiB], [250, 30 * MiB], [300, 30 * MiB], [500, 45 * MiB]], [true, false, false, false]],
    ['growth of the threshold over the new base: another request', [[0, 40 * MiB], [250, 30 * MiB], [300, 47 * MiB]], [true, false, true]],
    ['back under after a request: nothing more', [[0, 20 * MiB], [300, 2 * MiB], [600, 3 * MiB], [900, 17 * MiB], [950, 19 * MiB]], [true, false, false, false, true]],
  ])('%s', (_name, readings, expected) => {
    const { fired, calls, pacer } = scripted(readings);
    expect(fired).toEqual(expected);
    expect(pacer.requested).toBe(expected.filter(Boolean).length);
    for (const c of calls) expect(c).toEqual({ type: 'major', execution: 'async' });
  });

  it('without a collector (no --expose-gc) it is inactive and never probes', () => {
    let probed = 0;
    const pacer = new GcPacer({ gc: undefined, arrayBuffers: () => (probed++, 100 * MiB) });
    expect(pacer.active).toBe(false);
    expect(pacer.tick()).toBe(false);
    expect(probed).toBe(0);
    const { stop } = startGcPacer({ gc: undefined });
    stop();
  });

  it('the service is started with --expose-gc, so the pacer has its collector', () => {
    expect(NODE_FLAGS).toContain('--expose-gc');
  });

  it('started, it asks on its own timer when live ArrayBuffers are over the threshold', async () => {
    let requests = 0;
    let live = 0;
    const { stop } = startGcPacer({ intervalMs: 5, cooldownMs: 0, thresholdBytes: 1, arrayBuffers: () => (live += 2), gc: () => requests++ });
    await new Promise((r) => setTimeout(r, 60));
    stop();
    const after = requests;
    await new Promise((r) => setTimeout(r, 30));
    expect(after).toBeGreaterThan(0);
    expect(requests).toBe(after);
  });
});
