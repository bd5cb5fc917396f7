import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MULTIPLEXED_TYPE } from '../../src/http/streaming.js';
import { MultiplexedDecoder } from '../support/multiplexed.js';
import { readNdjson } from '../support/ndjson.js';
import { SANDBOX_IMAGE, TEST_RUNTIME, projectDir } from '../support/sandbox.js';
import { buildDist, memoryOf, resetPeak, startService, stopService, type ServiceProcess } from '../support/service-process.js';

const TOKEN = 'slow-reader-token-1';
const TOTAL = 200_000_000;
const project = projectDir();
const work = mkdtempSync(join('/var/tmp', 'execgate-slow-'));
let service: ServiceProcess;

beforeAll(async () => {
  buildDist();
  const config = join(work, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      store: { path: join(work, 'store') },
      gateway: { port: 0, auth: { token: TOKEN } },
      agents: { defaults: { toolPolicies: { exec: { mode: 'allowed', allowedPaths: [project.path] } }, sandbox: { image: SANDBOX_IMAGE, runtime: TEST_RUNTIME, maxOutputBytes: 300_000_000, timeoutMs: 120_000, pool: { size: 0 } } } },
    }),
  );
  service = await startService(config);
}, 120_000);

afterAll(async () => {
  if (service) await stopService(service);
  project.remove();
  rmSync(work, { recursive: true, force: true });
});

describe('backpressure', () => {
  it("the service's memory stays bounded while a client reads 200 MB slowly, and every byte arrives", async () => {
    const pid = service.proc.pid!;
    resetPeak(pid);
    const baseline = memoryOf(pid).rss;
    const res = await fetch(`${service.url}/v1/exec`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: `yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c ${TOTAL}` }),
    });
    let bytes = 0;
    let exit: Record<string, unknown> | undefined;
    let reads = 0;
    await readNdjson(res, {
      keep: false,
      onEvent: (e) => {
        if (e.type === 'stdout') bytes += (e.data as string).length;
        if (e.type === 'exit') exit = e;
      },
      // A slow reader: the sandbox produces many times faster than this.
      afterRead: async (n) => {
        reads = n;
        if (n % 2 === 0) await new Promise((r) => setTimeout(r, 1));
      },
    });
    const { peak } = memoryOf(pid);
    console.log(`slow reader: ${reads} reads; service RSS ${(baseline / 1048576).toFixed(0)} MiB at start, peak ${(peak / 1048576).toFixed(0)} MiB`);
    expect(bytes).toBe(TOTAL);
    expect(exit).toMatchObject({ exitCode: 0, truncated: false });
    // Without backpressure the 200 MB (and its JSON) would pile up in the service. What growth there is, is
    // V8's heap headroom and what the allocator keeps: 85–89 → 107–111 MiB here with NODE_FLAGS and SERVICE_ENV
    // (src/node-flags.ts); 135–143 MiB before `--liftoff-only`, which this bound would not let through.
    expect(peak - baseline).toBeLessThan(40 * 1024 * 1024);
  }, 120_000);

  it('the same holds for the binary multiplexed stream, whose output frames point into what Docker sent', async () => {
    const pid = service.proc.pid!;
    resetPeak(pid);
    const baseline = memoryOf(pid).rss;
    const res = await fetch(`${service.url}/v1/exec`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', accept: MULTIPLEXED_TYPE },
      body: JSON.stringify({ command: `yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c ${TOTAL}` }),
    });
    expect(res.headers.get('content-type')).toBe(MULTIPLEXED_TYPE);
    const decoder = new MultiplexedDecoder();
    const reader = res.body!.getReader();
    let bytes = 0;
    let exit: Record<string, unknown> | undefined;
    let reads = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const e of decoder.push(value)) {
        if (e.type === 'stdout') bytes += (e.bytes as Buffer).length;
        if (e.type === 'exit') exit = e;
      }
      if (++reads % 2 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    decoder.end();
    const { peak } = memoryOf(pid);
    console.log(`slow reader, multiplexed: ${reads} reads; service RSS ${(baseline / 1048576).toFixed(0)} MiB at start, peak ${(peak / 1048576).toFixed(0)} MiB`);
    expect(bytes).toBe(TOTAL);
    expect(exit).toMatchObject({ exitCode: 0, truncated: false });
    expect(peak - baseline).toBeLessThan(40 * 1024 * 1024);
  }, 120_000);
});
