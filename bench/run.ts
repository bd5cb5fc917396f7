/**
 * `npm run bench`: figures, not assertions. Starts the built service as its own process on the real Docker
 * engine (a team with the warm pool and one without) and measures it against plain `docker run` on the same
 * image in the same run. Prints a table and a JSON summary (also written to bench-results.json).
 *
 * Knobs: EXECGATE_BENCH_N (latency samples, default 200), EXECGATE_BENCH_SECONDS (measured time per throughput
 * cell, default 30 as in the issue's target; split over 3 alternating rounds, each after 2 s of uncounted
 * warm-up), EXECGATE_BENCH_NICE (the service's gateway.nice; default the product's), EXECGATE_BENCH_STREAM_MB (default 200), EXECGATE_BENCH_CONCURRENCY (default 1,4,8), EXECGATE_BENCH_ONLY (a comma
 * list of latency, throughput, streaming, policy: run only those while working on one figure; the table is
 * printed only for a full run).
 */
import { execFile, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { loadConfigFile } from '../src/config/load.js';
import { MULTIPLEXED_TYPE as MULTIPLEXED } from '../src/http/streaming.js';
import { serviceLaunch } from '../src/node-flags.js';
import { containerSpec } from '../src/runner/container-spec.js';
import { benchPolicy } from './policy-bench.js';

const run = promisify(execFile);
const IMAGE = process.env.EXECGATE_BENCH_IMAGE ?? 'execgate/sandbox:latest';
const N = Number(process.env.EXECGATE_BENCH_N ?? 200);
const SECONDS = Number(process.env.EXECGATE_BENCH_SECONDS ?? 30);
const STREAM_MB = Number(process.env.EXECGATE_BENCH_STREAM_MB ?? 200);
const TOKEN = 'bench-token-0123456789';
const NDJSON = 'application/x-ndjson';
const POOL = Number(process.env.EXECGATE_BENCH_POOL ?? 8);
const CONCURRENCY = (process.env.EXECGATE_BENCH_CONCURRENCY ?? '1,4,8').split(',').map(Number);
const ONLY = new Set((process.env.EXECGATE_BENCH_ONLY ?? 'latency,throughput,streaming,policy').split(',').map((x) => x.trim()));

type Stats = { p50: number; p90: number; p99: number };
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const stats = (xs: number[]): Stats => ({ p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99) });
const sinceMs = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function latencies(n: number, fn: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    out.push(sinceMs(t0));
  }
  return out;
}

/**
 * Completed operations per second with `concurrency` workers: they run for `warmupMs` first, uncounted (a
 * pool's stock of ready containers, the previous cell's removals still under way), then for `seconds`, and
 * what completes in that window counts.
 */
async function throughput(concurrency: number, seconds: number, fn: () => Promise<void>, atWindow?: () => Promise<void>, warmupMs = 2000): Promise<number> {
  const start = Date.now() + warmupMs;
  const deadline = start + seconds * 1000;
  let done = 0;
  // Called as the counted window opens and as it closes (a snapshot of the service's counters, say).
  const edges = atWindow ? [start, deadline].map((at) => sleep(at - Date.now()).then(atWindow)) : [];
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < deadline) {
        await fn();
        const now = Date.now();
        if (now >= start && now <= deadline) done++;
      }
    }),
  );
  await Promise.all(edges);
  return done / seconds;
}

function rssOf(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/**
 * The engine's own rate for the service's sandboxes: the create body the runner sends for the bench's cold team
 * (src/runner/container-spec.ts; network "none" and no team env, as in the bench's config), driven straight over
 * the Docker API from this process with the runner's calls (create, attach, start, wait, remove in the
 * background) and no gateway, policy or HTTP in between.
 * What execgate adds at saturation is the gap between this and its cold and pooled figures.
 */
async function dockerApiDirect(configPath: string, cwd: string): Promise<{ one: () => Promise<void>; settle: () => Promise<unknown> }> {
  const docker = new Docker();
  const team = loadConfigFile(configPath).teams.cold!;
  const imageId = ((await docker.getImage(team.sandbox.image).inspect()) as { Id: string }).Id;
  const removals = new Set<Promise<unknown>>();
  let n = 0;
  const one = async (): Promise<void> => {
    const spec = { execId: `bench_direct_${n++}`, team: 'cold', command: 'echo hi', cwd, env: {}, mounts: team.policy.allowedPaths, sandbox: team.sandbox, timeoutMs: 60_000 };
    const container = await docker.createContainer(containerSpec(spec, 'bench-direct', Date.now(), 'none', imageId));
    try {
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true, hijack: true })) as NodeJS.ReadableStream;
      const chunks: Buffer[] = [];
      stream.on('data', (d: Buffer) => chunks.push(d));
      const ended = finished(stream, { writable: false });
      await container.start();
      const [exit] = (await Promise.all([container.wait(), ended])) as [{ StatusCode: number }, unknown];
      // Docker's frame header (8 bytes), then the output.
      if (exit.StatusCode !== 0 || Buffer.concat(chunks).subarray(8).toString() !== 'hi\n') throw new Error(`direct run: exit ${exit.StatusCode}`);
    } finally {
      const removal: Promise<unknown> = container
        .remove({ force: true, v: true })
        .catch(() => undefined)
        .finally(() => removals.delete(removal));
      removals.add(removal);
    }
  };
  return { one, settle: () => Promise.all(removals) };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join('/var/tmp', 'execgate-bench-'));
  chownSync(dir, 1000, 1000);
  const config = join(`${dir}-cfg.json`);
  writeFileSync(
    config,
    JSON.stringify({
      gateway: { port: 0, auth: { token: TOKEN }, ...(process.env.EXECGATE_BENCH_NICE ? { nice: Number(process.env.EXECGATE_BENCH_NICE) } : {}) },
      store: { path: `${dir}-store` },
      agents: {
        defaults: {
          toolPolicies: { exec: { mode: 'allowed', allowedPaths: [dir] } },
          sandbox: { image: IMAGE, maxOutputBytes: (STREAM_MB + 10) * 1_000_000, timeoutMs: 300_000 },
          quota: { maxConcurrent: 64, maxQueued: 256 },
        },
        teams: { cold: { sandbox: { pool: { size: 0 } } }, pooled: { sandbox: { pool: { size: POOL, maxIdleMs: 3_600_000 } } } },
      },
    }),
  );
  const launch = serviceLaunch(config, { EXECGATE_LOG_LEVEL: 'info' });
  const proc = spawn(process.execPath, launch.args, { env: launch.env, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      const m = /"address":"(http:\/\/[^"]+)"/.exec(d.toString());
      if (m) resolve(m[1]!);
    });
    proc.on('exit', (c) => reject(new Error(`service exited with ${c}`)));
  });
  proc.stdout!.resume();
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
    image: IMAGE,
    n: N,
    seconds: SECONDS,
  };

  const exec = (team: string) => async () => {
    const res = await fetch(`${url}/v1/exec`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', accept: 'application/json', 'x-execgate-team': team },
      body: JSON.stringify({ command: 'echo hi' }),
    });
    const body = (await res.json()) as { stdout?: string };
    if (body.stdout !== 'hi\n') throw new Error(`unexpected answer ${JSON.stringify(body)}`);
  };
  const dockerRun = () => run('docker', ['run', '--rm', '--network', 'none', IMAGE, 'sh', '-c', 'echo hi']).then(() => undefined);
  /** Pooled latency is measured with the pool refilled between samples: what one request sees. */
  const pooledOne = async () => {
    for (let i = 0; i < 400; i++) {
      const m = /execgate_pool_idle\{team="pooled"\} (\d+)/.exec(await (await fetch(`${url}/metrics`)).text());
      if (m && Number(m[1]) >= POOL) return;
      await sleep(10);
    }
    throw new Error(`the pool did not refill to ${POOL} in 4 s: a "pooled" sample would be a cold run`);
  };
  /** The pooled team's warm-pool counters (execgate_pool_runs_total): runs that found a warm container, and not. */
  const poolRuns = async (): Promise<{ hit: number; miss: number }> => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const count = (result: string) => Number(new RegExp(`^execgate_pool_runs_total\\{team="pooled",result="${result}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
    return { hit: count('hit'), miss: count('miss') };
  };

  try {
    process.stderr.write('bench: warming up\n');
    await sleep(3000);
    await latencies(5, dockerRun);
    await latencies(5, exec('cold'));
    await latencies(5, exec('pooled'));

    if (ONLY.has('latency')) {
    process.stderr.write(`bench: latency, ${N} sequential requests each\n`);
    const docker = stats(await latencies(N, dockerRun));
    const cold = stats(await latencies(N, exec('cold')));
    const pooledSamples: number[] = [];
    for (let i = 0; i < N; i++) {
      await pooledOne();
      pooledSamples.push(...(await latencies(1, exec('pooled'))));
    }
    const pooled = stats(pooledSamples);
    const ratio = (a: Stats): Stats => ({ p50: a.p50 / docker.p50, p90: a.p90 / docker.p90, p99: a.p99 / docker.p99 });
    results.latency = { dockerRun: docker, cold, pooled, coldRatio: ratio(cold), pooledRatio: ratio(pooled) };
    }

    if (ONLY.has('throughput')) {
    const ROUNDS = 3;
    process.stderr.write(`bench: throughput, ${SECONDS} s per cell in ${ROUNDS} alternating rounds\n`);
    const direct = await dockerApiDirect(config, dir);
    const tput: Record<string, Record<string, number>> = {};
    for (const c of CONCURRENCY) {
      const sides: Record<string, () => Promise<void>> = { dockerRun, dockerApi: direct.one, cold: exec('cold'), pooled: exec('pooled') };
      const rates: Record<string, number[]> = {};
      // Pooled runs in the counted windows that found a warm container, and those that went cold.
      const warm = { hit: 0, miss: 0 };
      // Rounds alternate the sides, so that the engine's drift over minutes (±7% here) falls on all of them.
      for (let r = 0; r < ROUNDS; r++) {
        for (const [side, fn] of Object.entries(sides)) {
          let opened: { hit: number; miss: number } | undefined;
          const atWindow = async () => {
            const now = await poolRuns();
            if (!opened) opened = now;
            else for (const k of ['hit', 'miss'] as const) warm[k] += now[k] - opened[k];
          };
          if (side === 'pooled') await pooledOne();
          (rates[side] ??= []).push(await throughput(c, SECONDS / ROUNDS, fn, side === 'pooled' ? atWindow : undefined));
          if (side === 'dockerApi') await direct.settle();
        }
      }
      // Equal rounds: the mean of their rates is what completed over all of them per second.
      tput[`c${c}`] = {
        ...Object.fromEntries(Object.entries(rates).map(([side, xs]) => [side, xs.reduce((a, b) => a + b, 0) / xs.length])),
        pooledWarmShare: warm.hit / (warm.hit + warm.miss),
      };
    }
    results.throughput = tput;
    }

    if (ONLY.has('streaming')) {
    process.stderr.write(`bench: streaming ${STREAM_MB} MB\n`);
    const bytes = STREAM_MB * 1_000_000;
    const gen = `yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c ${bytes}`;
    const ROUNDS = 5;
    let peakRss = rssOf(proc.pid!);
    const startRss = peakRss;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssOf(proc.pid!))), 20);
    // Each side ends in one reader process that takes every byte and counts it: `wc -c` after `docker run`
    // (the docker CLI cannot count), curl itself over HTTP (`-o /dev/null -w %{size_download}`). Both measure
    // the stream, not a JavaScript client's parsing on the same two cores. Over HTTP: the binary stream from a
    // pooled sandbox (what a team with the pool gets) and from a cold one, and NDJSON (the default wire form,
    // every byte JSON-escaped) from a pooled one. Each run is checked by its byte count and its record (exit
    // code 0, every byte of output, not truncated). The sides alternate for ROUNDS rounds, each side's median
    // counts: the engine's speed drifts from run to run.
    const samples: Record<'docker' | 'muxPooled' | 'muxCold' | 'ndjsonPooled', number[]> = { docker: [], muxPooled: [], muxCold: [], ndjsonPooled: [] };
    let ndjsonBytes = 0;
    /** One 200 MB run over HTTP, taken whole and counted by curl; checked by its size and its record. */
    const overHttp = async (accept: string, team: string): Promise<number> => {
      await pooledOne();
      const t0 = process.hrtime.bigint();
      const { stdout } = await run('curl', ['-sN', '-D', '-', '-o', '/dev/null', '-w', '\n%{http_code} %{size_download}', '-H', `authorization: Bearer ${TOKEN}`, '-H', 'content-type: application/json', '-H', `accept: ${accept}`, '-H', `x-execgate-team: ${team}`, '--data-binary', JSON.stringify({ command: gen }), `${url}/v1/exec`], { maxBuffer: 1 << 20 });
      const mbs = bytes / 1e6 / (sinceMs(t0) / 1000);
      const [code, size] = stdout.trim().split('\n').at(-1)!.split(' ').map(Number) as [number, number];
      const execId = /^x-execgate-exec-id: (\S+)/im.exec(stdout)?.[1];
      // Output framing costs the binary stream 8 bytes a frame; NDJSON's escapes and keys cost it more.
      const overhead = size - bytes;
      if (code !== 200 || !execId || overhead <= 0 || (accept === MULTIPLEXED && overhead > bytes / 100)) throw new Error(`stream check failed: ${JSON.stringify({ accept, code, size, execId })}`);
      await sleep(100);
      const rec = (await (await fetch(`${url}/v1/executions/${execId}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { exitCode: number; truncated: boolean; bytesOut: number };
      if (rec.exitCode !== 0 || rec.truncated || rec.bytesOut !== bytes) throw new Error(`stream check failed: ${JSON.stringify({ accept, team, rec })}`);
      if (accept === NDJSON) ndjsonBytes = size;
      return mbs;
    };
    const viaDocker = async (): Promise<void> => {
      const t0 = process.hrtime.bigint();
      const { stdout: wc } = await run('bash', ['-c', `docker run --rm --network none --log-driver none ${IMAGE} sh -c '${gen}' | wc -c`], { maxBuffer: 1 << 20 });
      if (Number(wc.trim()) !== bytes) throw new Error(`docker run streamed ${wc.trim()} bytes`);
      samples.docker.push(bytes / 1e6 / (sinceMs(t0) / 1000));
    };
    const sides = [
      viaDocker,
      async () => void samples.muxPooled.push(await overHttp(MULTIPLEXED, 'pooled')),
      async () => void samples.muxCold.push(await overHttp(MULTIPLEXED, 'cold')),
      async () => void samples.ndjsonPooled.push(await overHttp(NDJSON, 'pooled')),
    ];
    for (let round = 0; round < ROUNDS; round++) {
      // Each round starts with another side, so none always follows the previous run's background removal.
      for (let i = 0; i < sides.length; i++) {
        await sides[(round + i) % sides.length]!();
        await sleep(500);
      }
    }
    clearInterval(sampler);
    const median = (xs: number[]) => pct(xs, 50);
    const dockerMBs = median(samples.docker);
    const mb = { muxPooled: median(samples.muxPooled), muxCold: median(samples.muxCold), ndjsonPooled: median(samples.ndjsonPooled) };
    results.streaming = {
      mb: STREAM_MB,
      rounds: ROUNDS,
      ndjsonBytes,
      dockerRunLogNoneMBs: dockerMBs,
      multiplexedPooledMBs: mb.muxPooled,
      multiplexedPooledRatio: mb.muxPooled / dockerMBs,
      multiplexedColdMBs: mb.muxCold,
      multiplexedColdRatio: mb.muxCold / dockerMBs,
      ndjsonPooledMBs: mb.ndjsonPooled,
      ndjsonPooledRatio: mb.ndjsonPooled / dockerMBs,
      samples,
      serviceRssStartMiB: startRss / 2 ** 20,
      serviceRssPeakMiB: peakRss / 2 ** 20,
    };
    }

    if (ONLY.has('policy')) {
    results.policy = await benchPolicy();
    const checkSeconds = 3;
    const deadline = Date.now() + checkSeconds * 1000;
    let checks = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (Date.now() < deadline) {
          const r = await fetch(`${url}/v1/policy/check`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ command: 'git status && ls -la src | grep ts' }) });
          await r.arrayBuffer();
          checks++;
        }
      }),
    );
    results.policyCheckHttp = { requestsPerSec: checks / checkSeconds, concurrency: 4 };
    }
  } finally {
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}-store`, { recursive: true, force: true });
    rmSync(config, { force: true });
  }

  writeFileSync('bench-results.json', `${JSON.stringify(results, null, 2)}\n`);
  if (ONLY.size < 4) {
    process.stdout.write(`${JSON.stringify(results)}\n`);
    return;
  }
  const l = results.latency as { dockerRun: Stats; cold: Stats; pooled: Stats; coldRatio: Stats; pooledRatio: Stats };
  const t = results.throughput as Record<string, Record<string, number>>;
  const st = results.streaming as { dockerRunLogNoneMBs: number; multiplexedPooledMBs: number; multiplexedPooledRatio: number; multiplexedColdMBs: number; multiplexedColdRatio: number; ndjsonPooledMBs: number; ndjsonPooledRatio: number; serviceRssStartMiB: number; serviceRssPeakMiB: number; rounds: number };
  const p = results.policy as { decisionsPerSec: number; usPerDecision: number; corpus: number };
  const f1 = (x: number) => x.toFixed(1);
  const f2 = (x: number) => x.toFixed(2);
  const lines = [
    `execgate bench — ${results.date} — ${cpus().length} cores (${cpus()[0]?.model}), node ${process.version}, image ${IMAGE}`,
    '',
    `latency of \`echo hi\` (${N} sequential)     p50 ms   p90 ms   p99 ms   ratio p50/p90/p99 to docker run`,
    `  docker run --rm --network none       ${f1(l.dockerRun.p50).padStart(7)}  ${f1(l.dockerRun.p90).padStart(7)}  ${f1(l.dockerRun.p99).padStart(7)}`,
    `  execgate cold path over HTTP         ${f1(l.cold.p50).padStart(7)}  ${f1(l.cold.p90).padStart(7)}  ${f1(l.cold.p99).padStart(7)}   ${f2(l.coldRatio.p50)} / ${f2(l.coldRatio.p90)} / ${f2(l.coldRatio.p99)}`,
    `  execgate pooled over HTTP            ${f1(l.pooled.p50).padStart(7)}  ${f1(l.pooled.p90).padStart(7)}  ${f1(l.pooled.p99).padStart(7)}   ${f2(l.pooledRatio.p50)} / ${f2(l.pooledRatio.p90)} / ${f2(l.pooledRatio.p99)}`,
    '',
    `throughput, commands/s (${SECONDS} s each)   docker run   Docker API     cold   pooled   pooled / docker run, / Docker API   warm`,
    ...CONCURRENCY.map((c) => {
      const r = t[`c${c}`]!;
      return `  concurrency ${c}                     ${f1(r.dockerRun!).padStart(10)} ${f1(r.dockerApi!).padStart(12)} ${f1(r.cold!).padStart(8)} ${f1(r.pooled!).padStart(8)}   ${f2(r.pooled! / r.dockerRun!)}, ${f2(r.pooled! / r.dockerApi!)}${`${Math.round(r.pooledWarmShare! * 100)}%`.padStart(24)}`;
    }),
    `  (Docker API: the service's sandboxes created and run straight over the Docker API, no gateway;`,
    `   warm: the share of the pooled column's runs that found a warm container, from execgate_pool_runs_total)`,
    '',
    `streaming ${STREAM_MB} MB stdout, MB/s (median of ${st.rounds})   ratio to docker run`,
    `  docker run --log-driver none | wc -c      ${f1(st.dockerRunLogNoneMBs).padStart(6)}`,
    `  execgate binary stream, pooled sandbox    ${f1(st.multiplexedPooledMBs).padStart(6)}   ${f2(st.multiplexedPooledRatio)}`,
    `  execgate binary stream, cold sandbox      ${f1(st.multiplexedColdMBs).padStart(6)}   ${f2(st.multiplexedColdRatio)}`,
    `  execgate NDJSON, pooled sandbox           ${f1(st.ndjsonPooledMBs).padStart(6)}   ${f2(st.ndjsonPooledRatio)}`,
    `service RSS while streaming: ${st.serviceRssStartMiB.toFixed(0)} MiB at start, peak ${st.serviceRssPeakMiB.toFixed(0)} MiB`,
    `policy engine in process: ${Math.round(p.decisionsPerSec)} decisions/s (${f1(p.usPerDecision)} µs each, ${p.corpus} commands)`,
    `POST /v1/policy/check: ${Math.round((results.policyCheckHttp as { requestsPerSec: number }).requestsPerSec)} requests/s at concurrency 4`,
  ];
  process.stdout.write(`\n${lines.join('\n')}\n\n`);
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
