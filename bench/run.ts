/**
 * `npm run bench`: figures, not assertions. Starts the service in process on a real Docker engine and
 * measures it against plain `docker run` on the same image in the same run, printing a table and a JSON
 * summary (also written to bench-results.json).
 */
import { execFile } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { buildApp } from '../src/app.js';
import { systemClock } from '../src/approvals/queue.js';
import { resolveConfig } from '../src/config/load.js';
import { createPolicyEngine } from '../src/policy/index.js';
import { DockerRunner } from '../src/runner/docker-runner.js';
import { ExecService } from '../src/service/exec-service.js';
import { MemoryStateStore } from '../src/service/state.js';
import { benchPolicy } from './policy-bench.js';

const run = promisify(execFile);
const IMAGE = process.env.EXECGATE_BENCH_IMAGE ?? 'execgate/sandbox:latest';
const N = Number(process.env.EXECGATE_BENCH_N ?? 50);
const TOKEN = 'bench-token-0123456789';

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const stats = (xs: number[]) => ({ p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99) });
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

async function timeIt(n: number, fn: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    out.push(ms(t0));
  }
  return out;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join('/var/tmp', 'execgate-bench-'));
  chownSync(dir, 1000, 1000);
  const logger = pino({ level: 'silent' });
  const engine = await createPolicyEngine();
  const config = resolveConfig(
    {
      gateway: { auth: { token: TOKEN } },
      store: { path: `${dir}-store` },
      agents: { defaults: { toolPolicies: { exec: { mode: 'allowed', allowedPaths: [dir] } }, sandbox: { image: IMAGE, pool: { size: 0 } } } },
    },
    { baseDir: dir },
    'bench',
  );
  const runner = new DockerRunner({ instance: 'bench', logger });
  const state = new MemoryStateStore();
  const service = new ExecService({ config: () => config, runner, engine, state, logger, clock: systemClock });
  const app = await buildApp({ config: () => config, service, runner, state, logger });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', accept: 'application/json' };
  const results: Record<string, unknown> = { date: new Date().toISOString(), machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version }, image: IMAGE, n: N };

  try {
    // 1. Latency of `echo hi`: plain docker run vs the service's cold path, same image, same run.
    const dockerRun = () => run('docker', ['run', '--rm', '--network', 'none', IMAGE, 'sh', '-c', 'echo hi']).then(() => undefined);
    const viaHttp = async () => {
      const res = await fetch(`${url}/v1/exec`, { method: 'POST', headers, body: JSON.stringify({ command: 'echo hi' }) });
      const body = (await res.json()) as { stdout?: string };
      if (body.stdout !== 'hi\n') throw new Error(`unexpected answer ${JSON.stringify(body)}`);
    };
    await timeIt(3, dockerRun);
    await timeIt(3, viaHttp);
    const docker = stats(await timeIt(N, dockerRun));
    const cold = stats(await timeIt(N, viaHttp));
    await runner.close();
    results.latency = { dockerRun: docker, cold, coldRatio: { p50: cold.p50 / docker.p50, p90: cold.p90 / docker.p90, p99: cold.p99 / docker.p99 } };

    // 5. Policy decisions per second in process, and POST /v1/policy/check requests per second.
    results.policy = await benchPolicy();
    const checkSeconds = 3;
    const deadline = Date.now() + checkSeconds * 1000;
    let checks = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (Date.now() < deadline) {
          const r = await fetch(`${url}/v1/policy/check`, { method: 'POST', headers, body: JSON.stringify({ command: 'git status && ls -la src | grep ts' }) });
          await r.arrayBuffer();
          checks++;
        }
      }),
    );
    results.policyCheckHttp = { requestsPerSec: checks / checkSeconds, concurrency: 4 };
  } finally {
    app.server.closeAllConnections();
    await app.close();
    await runner.close();
    rmSync(dir, { recursive: true, force: true });
  }

  const l = results.latency as { dockerRun: ReturnType<typeof stats>; cold: ReturnType<typeof stats>; coldRatio: ReturnType<typeof stats> };
  const p = results.policy as { decisionsPerSec: number; usPerDecision: number; corpus: number };
  const f = (x: number) => x.toFixed(1);
  const rows = [
    ['figure', 'p50', 'p90', 'p99'],
    ['docker run --rm --network none (ms)', f(l.dockerRun.p50), f(l.dockerRun.p90), f(l.dockerRun.p99)],
    ['execgate cold `echo hi` over HTTP (ms)', f(l.cold.p50), f(l.cold.p90), f(l.cold.p99)],
    ['  ratio to docker run', l.coldRatio.p50.toFixed(2), l.coldRatio.p90.toFixed(2), l.coldRatio.p99.toFixed(2)],
  ];
  process.stdout.write(`\nexecgate bench — ${results.date} — ${(results.machine as { cpus: number }).cpus} cores, node ${process.version}, image ${IMAGE}, n=${N}\n\n`);
  for (const r of rows) process.stdout.write(`${r[0]!.padEnd(42)}${r.slice(1).map((c) => c!.padStart(9)).join('')}\n`);
  process.stdout.write(`\npolicy engine in process: ${Math.round(p.decisionsPerSec)} decisions/s (${p.usPerDecision.toFixed(1)} µs each, ${p.corpus} commands)\n`);
  process.stdout.write(`POST /v1/policy/check: ${Math.round((results.policyCheckHttp as { requestsPerSec: number }).requestsPerSec)} requests/s at concurrency 4\n\n`);
  writeFileSync('bench-results.json', `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
