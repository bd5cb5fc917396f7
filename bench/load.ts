/**
 * `npm run load`: a bounded load test of the real service process on the real Docker engine. Loopback only,
 * stops by itself. N concurrent clients for D seconds mix allowed one-shot commands answered as JSON (`echo`,
 * `ls`), denied commands (403 before any container exists), NDJSON streams of ~1.3 MB (`seq`) and SSE streams
 * of 2 MB (`yes | head -c`), each read to the end and checked. A prober in its own thread (so the clients'
 * parsing cannot delay it) asks GET /healthz every 50 ms and GET /readyz every 250 ms. Team quotas answer 429
 * with Retry-After when admission is full: counted apart (not an error), and the client waits as told.
 *
 * The service is the one a deployment runs for a while: its store already holds a full history (the
 * per-team cap), it runs in its own session (its own scheduling group, as under systemd or in a container),
 * logs at info to a file, and gets an unmeasured warm-up of each kind before the clock starts. The product's
 * own quota defaults apply. CPU use of the service, this process, Docker and everything else on the machine
 * is reported: on a shared machine the last says how much of a latency figure is the neighbours'.
 *
 * Afterwards, with the service still up: no container of this instance may remain but idle warm-pool ones;
 * after SIGTERM: the process exits 0 and none at all, and no execgate volume is new.
 *
 * Prints a figures table and writes a JSON result (test-artifacts/load-results.json). Exits non-zero on any
 * 5xx, malformed answer or client error, leak, crash, error-level service log line, or /healthz p99 >= 50 ms.
 * The same module runs as a short variant in `npm test` (test/e2e/load.test.ts), where timings are not gated.
 *
 * Diagnostics (environment): EXECGATE_LOAD_NODE_ARGS (extra node flags for the service, e.g. "--cpu-prof
 * --cpu-prof-dir=DIR"), EXECGATE_LOAD_SAME_SESSION=1 (the service in this process's session). `--nice N` sets the
 * service's gateway.nice (the product's default, -10, otherwise; `--nice 0` shows the figures without it).
 *
 *   node dist-bench/bench/load.js [--clients 100] [--duration 60] [--pool 0] [--teams 2]
 *     [--mix echo=3,ls=2,denied=3,stream=1,sse=1] [--max-concurrent 4] [--max-queued 32] [--warmup 20] [--history 10000]
 *     [--runtime runc] [--nice N] [--out FILE] [--no-gate]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import Docker from 'dockerode';
import { BUILTIN_AGENT_DEFAULTS, ConfigFileSchema } from '../src/config/schema.js';
import { serviceLaunch } from '../src/node-flags.js';
import { autogroupEnabled, niceOf } from '../src/priority.js';
import type { ExecutionRecord } from '../src/service/state.js';
import { SqliteStateStore } from '../src/store/sqlite-store.js';

export const KINDS = ['echo', 'ls', 'denied', 'stream', 'sse'] as const;
export type Kind = (typeof KINDS)[number];

export interface LoadOptions {
  clients: number;
  durationS: number;
  /** Relative weights of the request kinds. */
  mix: Record<Kind, number>;
  /** Warm containers per team (0: every run creates its container). */
  pool: number;
  teams: number;
  maxConcurrent: number;
  maxQueued: number;
  /** Requests of each kind sent before the clock starts (not in the figures; failures still count). */
  warmup: number;
  /** Executions per team already in the history when the service starts: one that has run a while. */
  history: number;
  healthIntervalMs: number;
  readyIntervalMs: number;
  image: string;
  runtime: string;
  /** Lines of `seq 1 N` per NDJSON stream, and bytes per SSE stream. */
  streamLines: number;
  sseBytes: number;
  /** The service's gateway.nice; undefined: the product's default. */
  nice?: number | undefined;
  /** /healthz p99 at or above this fails the run; undefined: timings are reported, not judged. */
  healthP99LimitMs?: number | undefined;
  /** JSON result file; undefined: none. */
  out?: string | undefined;
  log?: (line: string) => void;
}

export const DEFAULT_OPTIONS: LoadOptions = {
  clients: 100,
  durationS: 60,
  mix: { echo: 3, ls: 2, denied: 3, stream: 1, sse: 1 },
  // Off: under a load that keeps Docker saturated a warm container is still one create + start, only done
  // earlier, and refilling adds contention without throughput (2 cores, at nice 0: /healthz p99 172/180 ms with 4 per
  // team against 116/121 ms without, at the same ~6.6 runs/s). `--pool N` measures it; the CI variant uses 2.
  pool: 0,
  teams: 2,
  // The product's own per-team defaults: sized for a small machine (ENVIRONMENT.md: Docker starts ~9
  // containers/s at 8 at a time on 2 cores; more at once adds contention, not throughput).
  maxConcurrent: BUILTIN_AGENT_DEFAULTS.quota.maxConcurrent,
  maxQueued: BUILTIN_AGENT_DEFAULTS.quota.maxQueued,
  warmup: 20,
  // The history is bounded per team (store.history.maxPerTeam); a service that has run a while is at it.
  history: ConfigFileSchema.parse({}).store.history.maxPerTeam,
  healthIntervalMs: 50,
  readyIntervalMs: 250,
  image: process.env.EXECGATE_TEST_IMAGE ?? 'execgate/sandbox:latest',
  runtime: process.env.EXECGATE_TEST_RUNTIME ?? 'runc',
  streamLines: 200_000,
  sseBytes: 2_000_000,
  healthP99LimitMs: 50,
  out: 'test-artifacts/load-results.json',
};

export interface Percentiles {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export interface KindStats {
  requests: number;
  /** Well-formed expected answers: 200 with the right output (403 policy_denied for `denied`). */
  ok: number;
  /** 429 too_many_requests with a Retry-After. */
  throttled: number;
  status: Record<string, number>;
  serverErrors: number;
  /** Answers that were not what the request should get (wrong status, shape or output). */
  malformed: number;
  /** The request failed below HTTP (reset, refused, time-out). */
  clientErrors: number;
  latencyMs: Percentiles;
  throttledLatencyMs: Percentiles;
  denyCodes?: Record<string, number>;
}

export interface LoadResult {
  date: string;
  machine: { cpus: number; cpuModel: string | undefined; memGiB: number; node: string };
  options: Omit<LoadOptions, 'log'>;
  instance: string;
  warmupS: number;
  elapsedS: number;
  kinds: Record<Kind, KindStats>;
  total: { requests: number; ok: number; throttled: number; serverErrors: number; malformed: number; clientErrors: number; okPerSecond: number };
  status: Record<string, number>;
  problems: string[];
  health: Percentiles & { over50ms: number; errors: number; status: Record<string, number> };
  ready: Percentiles & { errors: number; status: Record<string, number> };
  cpu: CpuUse;
  service: {
    rssPeakMiB: number;
    rssStartMiB: number;
    eventLoopLagP99Ms: number | null;
    eventLoopLagMaxMs: number | null;
    /** The event-loop thread over the run: seconds on a CPU, seconds runnable but waiting for a CPU, wakeups. */
    mainThread: { cpuS: number; runqueueWaitS: number; timeslices: number };
    /** The priority the service ran at (gateway.nice): its main thread's nice and its autogroup's, as read
     *  from /proc; null where the kernel has no autogroup. */
    priority: { nice: number; autogroupNice: number | null };
    errorLogLines: string[];
    logLines: number;
    logMiB: number;
    crashed: boolean;
    exitCode: number | null;
    exitSignal: string | null;
  };
  containers: {
    created: number;
    started: number;
    startedPool: number;
    destroyed: number;
    maxAlive: number;
    deniedExecsThatReachedDocker: number;
  };
  leaks: {
    whileUp: { containers: number; idlePool: number; ids: string[] };
    afterStop: { containers: number; volumes: number; ids: string[] };
  };
  /** Every request as [ms since the start, kind, status (0: failed below HTTP), latency ms], and every
   *  /healthz probe as [ms since the start, latency ms]: to see when slow answers happened. */
  timeline: { requests: [number, Kind, number, number][]; healthz: [number, number][] };
  failures: string[];
  ok: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sinceMs = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

export function percentiles(xs: number[]): Percentiles {
  if (xs.length === 0) return { n: 0, p50: NaN, p95: NaN, p99: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
  return { n: s.length, p50: at(50), p95: at(95), p99: at(99), max: s[s.length - 1]! };
}

// ---------------------------------------------------------------------------------------------------------
// HTTP with node:http and one keep-alive agent: cheaper per request than fetch on 2 shared cores.

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
}

function post(agent: http.Agent, url: string, path: string, headers: Record<string, string>, body: string, onData: (res: http.IncomingMessage) => void, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { method: 'POST', agent, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      onData(res);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Collects a whole body. */
function collect(into: Buffer[]): (res: http.IncomingMessage) => void {
  return (res) => res.on('data', (c: Buffer) => into.push(c));
}

/** Splits a body into lines as it arrives (the last, unterminated one is passed at the end). */
function lines(onLine: (line: string) => void): (res: http.IncomingMessage) => void {
  return (res) => {
    res.setEncoding('utf8');
    let rest = '';
    res.on('data', (c: string) => {
      rest += c;
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        onLine(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    });
    res.on('end', () => {
      if (rest !== '') onLine(rest);
    });
  };
}

// ---------------------------------------------------------------------------------------------------------
// The request kinds. Each returns 'ok', 'throttled' (with the wait asked for) or throws Malformed.

class Malformed extends Error {
  constructor(
    message: string,
    /** The service said it failed (a 5xx, or an `error` event in a 200 stream): counted with the 5xx. */
    readonly server = false,
  ) {
    super(message);
  }
}

type Outcome = { kind: 'ok'; denyCode?: string; execId?: string } | { kind: 'throttled'; retryAfterS: number };

interface Ctx {
  agent: http.Agent;
  url: string;
  token: string;
  project: string;
  projectFiles: string[];
  opts: LoadOptions;
  deniedExecIds: Set<string>;
}

const DENIED = [
  'cat /etc/passwd', // path_not_allowed (hard)
  'cat < /etc/shadow', // a redirect outside the allowed paths (hard)
  'rm -rf build', // blocked_pattern (hard)
  'sudo ls', // blocked_pattern (hard)
  'echo ok; rm -r -f .', // a blocked segment after an allowed one
  'curl -s http://169.254.169.254/latest/meta-data/', // no_match (soft, onDeny block)
  'python3 -c "print(1)"', // rule_denied (soft, onDeny block)
];

function parseJson(text: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new Malformed(`${what}: not a JSON object (${(err as Error).message}): ${text.slice(0, 200)}`);
  }
}

/** 429 is an expected answer under load: the error shape, code too_many_requests, and a Retry-After. */
function throttled(a: Answer, body: string): Outcome {
  const e = parseJson(body, '429 body').error as { code?: string } | undefined;
  const retry = Number(a.headers['retry-after']);
  if (e?.code !== 'too_many_requests' || !Number.isInteger(retry) || retry < 1) throw new Malformed(`429 without too_many_requests and a Retry-After: ${a.headers['retry-after']} ${body.slice(0, 200)}`);
  return { kind: 'throttled', retryAfterS: retry };
}

function expectStatus(a: Answer, want: number, body: string): void {
  if (a.status !== want) throw new Malformed(`status ${a.status}, expected ${want}: ${body.slice(0, 300)}`, a.status >= 500);
}

const seqBytes = (n: number) => {
  let bytes = 0;
  for (let d = 1, lo = 1; lo <= n; d++, lo *= 10) bytes += (Math.min(n, lo * 10 - 1) - lo + 1) * (d + 1);
  return bytes;
};

async function jsonExec(ctx: Ctx, command: string, check: (body: Record<string, unknown>) => void): Promise<Outcome> {
  const chunks: Buffer[] = [];
  const a = await post(ctx.agent, ctx.url, '/v1/exec', { authorization: `Bearer ${ctx.token}`, 'content-type': 'application/json', accept: 'application/json' }, JSON.stringify({ command }), collect(chunks), 120_000);
  const text = Buffer.concat(chunks).toString('utf8');
  if (a.status === 429) return throttled(a, text);
  expectStatus(a, 200, text);
  if (!String(a.headers['content-type']).startsWith('application/json')) throw new Malformed(`content-type ${a.headers['content-type']}`);
  const body = parseJson(text, 'answer');
  if (body.decision !== 'allow' || body.exitCode !== 0 || body.timedOut !== false || body.truncated !== false || typeof body.execId !== 'string') {
    throw new Malformed(`unexpected answer: ${text.slice(0, 300)}`);
  }
  check(body);
  return { kind: 'ok', execId: body.execId };
}

let echoCounter = 0;
const runEcho = (ctx: Ctx): Promise<Outcome> => {
  const word = `hello-${++echoCounter}`;
  return jsonExec(ctx, `echo ${word}`, (b) => {
    if (b.stdout !== `${word}\n` || b.stderr !== '') throw new Malformed(`echo answered ${JSON.stringify(b.stdout)}`);
  });
};

const runLs = (ctx: Ctx): Promise<Outcome> =>
  jsonExec(ctx, `ls -1 ${ctx.project}`, (b) => {
    const got = String(b.stdout).split('\n').filter(Boolean);
    if (got.join(',') !== ctx.projectFiles.join(',')) throw new Malformed(`ls answered ${JSON.stringify(b.stdout)}`);
  });

async function runDenied(ctx: Ctx): Promise<Outcome> {
  const command = DENIED[Math.floor(Math.random() * DENIED.length)]!;
  const chunks: Buffer[] = [];
  const a = await post(ctx.agent, ctx.url, '/v1/exec', { authorization: `Bearer ${ctx.token}`, 'content-type': 'application/json', accept: 'application/json' }, JSON.stringify({ command }), collect(chunks), 30_000);
  const text = Buffer.concat(chunks).toString('utf8');
  expectStatus(a, 403, text);
  const e = parseJson(text, '403 body').error as { code?: string; execId?: string; decision?: { decision?: string; code?: string } } | undefined;
  if (e?.code !== 'policy_denied' || e.decision?.decision !== 'deny' || typeof e.decision.code !== 'string' || typeof e.execId !== 'string') throw new Malformed(`403 without a policy_denied explanation: ${text.slice(0, 300)}`);
  ctx.deniedExecIds.add(e.execId);
  return { kind: 'ok', denyCode: e.decision.code };
}

/** An NDJSON or SSE stream read to its end: decision, started, output (checked), exit 0 as the last event. */
async function streamExec(ctx: Ctx, format: 'ndjson' | 'sse', command: string, checkOutput: (size: number, head: string, tail: string) => void): Promise<Outcome> {
  const events: { type?: string }[] = [];
  let size = 0;
  let head = '';
  let tail = '';
  let bad: string | undefined;
  let raw = '';
  const onEvent = (text: string) => {
    let e: Record<string, unknown>;
    try {
      e = parseJson(text, 'event');
    } catch (err) {
      bad ??= (err as Error).message;
      return;
    }
    if (e.type === 'stdout') {
      if (typeof e.data !== 'string' || e.encoding !== undefined) bad ??= `stdout event ${text.slice(0, 100)}`;
      const d = String(e.data);
      size += Buffer.byteLength(d);
      if (head.length < 64) head += d.slice(0, 64);
      tail = (tail + d).slice(-64);
      if (events.at(-1)?.type !== 'stdout') events.push({ type: 'stdout' });
    } else {
      events.push(e);
    }
  };
  const onLine = (line: string) => {
    raw ||= line;
    if (format === 'ndjson') {
      if (line !== '') onEvent(line);
      return;
    }
    if (line === '') return;
    if (!line.startsWith('data: ')) {
      bad ??= `SSE line ${line.slice(0, 100)}`;
      return;
    }
    onEvent(line.slice(6));
  };
  const accept = format === 'sse' ? 'text/event-stream' : 'application/x-ndjson';
  const a = await post(ctx.agent, ctx.url, '/v1/exec', { authorization: `Bearer ${ctx.token}`, 'content-type': 'application/json', accept }, JSON.stringify({ command }), lines(onLine), 120_000);
  if (a.status === 429) return throttled(a, raw);
  expectStatus(a, 200, raw);
  if (!String(a.headers['content-type']).startsWith(format === 'sse' ? 'text/event-stream' : 'application/x-ndjson')) throw new Malformed(`content-type ${a.headers['content-type']}`);
  if (bad) throw new Malformed(bad);
  const types = events.map((e) => e.type).join(',');
  if (events.some((e) => e.type === 'error')) throw new Malformed(`an error event in the stream: ${JSON.stringify(events.filter((e) => e.type !== 'stdout')).slice(0, 400)}`, true);
  if (types !== 'decision,started,stdout,exit') throw new Malformed(`events ${types}: ${JSON.stringify(events.filter((e) => e.type !== 'stdout')).slice(0, 400)}`);
  const exit = events.at(-1) as { exitCode?: number; truncated?: boolean; timedOut?: boolean };
  if (exit.exitCode !== 0 || exit.truncated !== false || exit.timedOut !== false) throw new Malformed(`exit event ${JSON.stringify(exit)}`);
  checkOutput(size, head, tail);
  return { kind: 'ok', execId: String(a.headers['x-execgate-exec-id']) };
}

const runStream = (ctx: Ctx): Promise<Outcome> => {
  const n = ctx.opts.streamLines;
  return streamExec(ctx, 'ndjson', `seq 1 ${n}`, (size, head, tail) => {
    if (size !== seqBytes(n) || !head.startsWith('1\n2\n3\n') || !tail.endsWith(`\n${n}\n`)) throw new Malformed(`seq streamed ${size} bytes (want ${seqBytes(n)}), ends ${JSON.stringify(tail.slice(-16))}`);
  });
};

const runSse = (ctx: Ctx): Promise<Outcome> => {
  const n = ctx.opts.sseBytes;
  return streamExec(ctx, 'sse', `yes 0123456789abcdef | head -c ${n}`, (size, head) => {
    if (size !== n || !head.startsWith('0123456789abcdef\n0123456789abcdef\n')) throw new Malformed(`yes|head streamed ${size} bytes (want ${n})`);
  });
};

const RUN: Record<Kind, (ctx: Ctx) => Promise<Outcome>> = { echo: runEcho, ls: runLs, denied: runDenied, stream: runStream, sse: runSse };

// ---------------------------------------------------------------------------------------------------------
// The prober: its own thread and event loop, so the clients' work in this process cannot delay its requests.

const PROBER = `
const http = require('node:http');
const { parentPort, workerData } = require('node:worker_threads');
let stop = false;
parentPort.on('message', (m) => { if (m === 'stop') stop = true; });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function get(agent, path) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const done = (status, error) => resolve({ at: Date.now(), ms: Number(process.hrtime.bigint() - t0) / 1e6, status, error });
    const req = http.get(workerData.url + path, { agent }, (res) => { res.resume(); res.on('end', () => done(res.statusCode)); res.on('error', (e) => done(0, e.message)); });
    req.setTimeout(10000, () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', (e) => done(0, e.message));
  });
}
async function loop(path, interval) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const out = [];
  let next = Date.now();
  while (!stop) {
    out.push(await get(agent, path));
    next += interval;
    const wait = next - Date.now();
    if (wait > 0) await sleep(wait); else next = Date.now();
  }
  agent.destroy();
  return out;
}
Promise.all([loop('/healthz', workerData.healthMs), loop('/readyz', workerData.readyMs)]).then(([healthz, readyz]) => parentPort.postMessage({ healthz, readyz }));
`;

interface ProbeSample {
  at: number;
  ms: number;
  status: number;
  error?: string;
}

function startProber(url: string, healthMs: number, readyMs: number): { stop(): Promise<{ healthz: ProbeSample[]; readyz: ProbeSample[] }> } {
  const worker = new Worker(PROBER, { eval: true, workerData: { url, healthMs, readyMs } });
  const result = new Promise<{ healthz: ProbeSample[]; readyz: ProbeSample[] }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    async stop() {
      worker.postMessage('stop');
      const r = await result;
      await worker.terminate();
      return r;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// The service process, its log (a file: a pipe this busy process drains late would block pino's writes),
// its memory, and what Docker saw.

interface Service {
  proc: ChildProcess;
  url: string;
  exited: Promise<{ code: number | null; signal: string | null }>;
  /** The process ended without being told to. */
  crashed: () => boolean;
  signal: (s: NodeJS.Signals) => void;
}

async function startServiceProcess(configPath: string, logPath: string, instance: string): Promise<Service> {
  const fd = openSync(logPath, 'a');
  // EXECGATE_LOAD_NODE_ARGS: extra node flags for the service, e.g. "--cpu-prof --cpu-prof-dir=/var/tmp/prof".
  const extra = (process.env.EXECGATE_LOAD_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const launch = serviceLaunch(configPath, { EXECGATE_INSTANCE: instance, EXECGATE_LOG_LEVEL: process.env.EXECGATE_LOG_LEVEL ?? 'info' }, extra);
  const proc = spawn(process.execPath, launch.args, {
    env: launch.env,
    stdio: ['ignore', fd, fd],
    // Its own session, as under systemd or in a container: with the kernel's autogroup scheduling a session
    // is one scheduling group, and the service must not share its CPU share with the load generator.
    detached: process.env.EXECGATE_LOAD_SAME_SESSION !== '1',
  });
  closeSync(fd);
  // Detached, it would outlive this process if this one died first.
  const orphanGuard = () => proc.kill('SIGKILL');
  process.once('exit', orphanGuard);
  proc.once('exit', () => process.off('exit', orphanGuard));
  let stopping = false;
  let exitInfo: { code: number | null; signal: string | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => proc.once('exit', (code, signal) => resolve((exitInfo = { code, signal }))));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /"address":"(http:\/\/[^"]+)"/.exec(readFileSync(logPath, 'utf8'));
    if (m) {
      const signal = (s: NodeJS.Signals) => {
        stopping = true;
        proc.kill(s);
      };
      return { proc, url: m[1]!, exited, crashed: () => exitInfo !== undefined && !stopping, signal };
    }
    if (exitInfo || Date.now() > deadline) {
      if (!exitInfo) proc.kill('SIGKILL');
      throw new Error(`the service did not start:\n${readFileSync(logPath, 'utf8').slice(-4000)}`);
    }
    await sleep(50);
  }
}

/** The main (event-loop) thread's time on a CPU, time runnable but waiting for one, and timeslices (ns, ns, n). */
function schedstat(pid: number): [number, number, number] {
  try {
    const [run, wait, slices] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return [run!, wait!, slices!];
  } catch {
    return [NaN, NaN, NaN];
  }
}

/** The nice value of a process's main thread (/proc/PID/stat field 19) and of its autogroup, if any. */
function priorityOf(pid: number): { nice: number; autogroupNice: number | null } {
  let nice = NaN;
  let autogroupNice: number | null = null;
  try {
    nice = niceOf(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    if (autogroupEnabled()) {
      autogroupNice = Number(/nice (-?\d+)/.exec(readFileSync(`/proc/${pid}/autogroup`, 'utf8'))?.[1] ?? NaN);
    }
  } catch {
    /* gone */
  }
  return { nice, autogroupNice };
}

function memoryOf(pid: number): { rss: number; peak: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    return { rss: kb('VmRSS'), peak: kb('VmHWM') };
  } catch {
    return { rss: NaN, peak: NaN };
  }
}

interface DockerWatch {
  created: number;
  started: number;
  startedPool: number;
  destroyed: number;
  alive: number;
  maxAlive: number;
  execLabels: Set<string>;
  stop(): void;
}

async function watchDocker(docker: Docker, instance: string): Promise<DockerWatch> {
  const w: DockerWatch = { created: 0, started: 0, startedPool: 0, destroyed: 0, alive: 0, maxAlive: 0, execLabels: new Set(), stop: () => undefined };
  const stream = (await docker.getEvents({ filters: { type: ['container'], label: [`io.execgate.instance=${instance}`] } })) as NodeJS.ReadableStream & { destroy(): void };
  let rest = '';
  stream.on('data', (c: Buffer) => {
    rest += c.toString('utf8');
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (!line.trim()) continue;
      const e = JSON.parse(line) as { Action?: string; Actor?: { Attributes?: Record<string, string> } };
      const exec = e.Actor?.Attributes?.['io.execgate.exec'] ?? '';
      if (e.Action === 'create') {
        w.created++;
        w.alive++;
        w.maxAlive = Math.max(w.maxAlive, w.alive);
        w.execLabels.add(exec);
      } else if (e.Action === 'start') {
        w.started++;
        if (exec.startsWith('pool_')) w.startedPool++;
      } else if (e.Action === 'destroy') {
        w.destroyed++;
        w.alive--;
      }
    }
  });
  stream.on('error', () => undefined);
  w.stop = () => stream.destroy();
  return w;
}

/** Values of some metrics from one scrape (prom-client resets the event-loop lag histogram on each). */
async function metricValues(url: string, names: string[]): Promise<(number | null)[]> {
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    return names.map((name) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(text);
      return m ? Number(m[1]) : null;
    });
  } catch {
    return names.map(() => null);
  }
}

/**
 * CPU time by who used it, from /proc: the service, this load process, Docker (dockerd, containerd, shims,
 * runtimes, and every process in a container) and everything else. On a machine shared with other work the
 * "other" share says how much of a latency figure is the neighbours'.
 */
type CpuGroup = 'service' | 'load' | 'docker' | 'other';
interface CpuSnapshot {
  at: number;
  busy: number;
  total: number;
  procs: Map<string, { comm: string; group: CpuGroup; ticks: number }>;
}

const DOCKER_COMM = /^(dockerd|containerd|containerd-shim.*|runc.*|runsc.*|docker-init|docker-proxy|exe)$/;

function cpuSnapshot(servicePid: number): CpuSnapshot {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const procs = new Map<string, { comm: string; group: CpuGroup; ticks: number }>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime + stime, and cutime + cstime (fields 14-17 of proc(5); here 0-based after the comm).
      const own = Number(f[11]) + Number(f[12]);
      const children = Number(f[13]) + Number(f[14]);
      let group: CpuGroup = pid === servicePid ? 'service' : pid === process.pid ? 'load' : 'other';
      if (group === 'other' && (DOCKER_COMM.test(comm) || readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(':/docker/'))) group = 'docker';
      if (pid === 1) {
        // Container shims daemonize, so init reaps them, and with them the CPU of the runtimes and sandbox
        // processes they waited for.
        procs.set('1', { comm, group, ticks: own });
        procs.set('1/reaped', { comm: `${comm} (reaped shims)`, group: 'docker', ticks: children });
      } else {
        procs.set(String(pid), { comm, group, ticks: own + children });
      }
    } catch {
      // gone meanwhile
    }
  }
  return { at: Date.now(), busy: total - fields[3]! - (fields[4] ?? 0), total, procs };
}

export interface CpuUse {
  machineBusyPercent: number;
  /** Cores used on average over the run, by group. */
  cores: Record<CpuGroup, number>;
  /** The largest users in "other" and in "docker", as "command cores". */
  otherTop: string[];
  dockerTop: string[];
  loadAverage: number;
}

function cpuUse(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const seconds = (b.at - a.at) / 1000;
  const hz = 100;
  const cores: Record<CpuGroup, number> = { service: 0, load: 0, docker: 0, other: 0 };
  const by: Record<'other' | 'docker', Map<string, number>> = { other: new Map(), docker: new Map() };
  for (const [pid, p] of b.procs) {
    const d = p.ticks - (a.procs.get(pid)?.ticks ?? 0);
    if (d <= 0) continue;
    cores[p.group] += d / hz / seconds;
    if (p.group === 'other' || p.group === 'docker') by[p.group].set(p.comm, (by[p.group].get(p.comm) ?? 0) + d / hz / seconds);
  }
  const top = (m: Map<string, number>) => [...m].sort((x, y) => y[1] - x[1]).slice(0, 5).map(([c, n]) => `${c} ${n.toFixed(2)}`);
  return {
    machineBusyPercent: (100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total),
    cores,
    otherTop: top(by.other),
    dockerTop: top(by.docker),
    loadAverage: Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]),
  };
}

async function poolIdle(url: string): Promise<number> {
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    return [...text.matchAll(/^execgate_pool_idle\{[^}]*\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------------------

/** Writes `perTeam` finished executions per team into the store the service will open, as earlier runs would. */
function prefillHistory(dir: string, teams: string[], perTeam: number, project: string): void {
  const store = new SqliteStateStore(dir);
  const explanation = {
    decision: 'allow',
    code: 'allowed',
    hard: false,
    reason: 'allowed by the rule "echo"',
    segments: [{ index: 0, text: 'echo earlier', canonical: 'echo earlier', decision: 'allow', code: 'allowed', rule: 'echo', reason: 'allowed by the rule "echo"' }],
    policyHash: '0123456789abcdef',
  } as unknown as ExecutionRecord['explanation'];
  const start = Date.now() - perTeam * 1000;
  store.db.transaction(() => {
    for (let i = 0; i < perTeam; i++) {
      for (const team of teams) {
        store.putExecution({
          id: `ex_prefill_${team}_${i}`,
          team,
          requestedBy: `load-${team}`,
          command: 'echo earlier',
          cwd: project,
          decision: 'allow',
          code: explanation.code,
          explanation,
          policyHash: explanation.policyHash,
          status: 'finished',
          createdAt: start + i * 1000,
          finishedAt: start + i * 1000 + 200,
          containerId: 'f'.repeat(64),
          image: 'execgate/sandbox:latest',
          imageId: `sha256:${'e'.repeat(64)}`,
          runtime: 'runc',
          mounts: [{ path: project, readOnly: false }],
          limits: { memoryMb: 512, cpus: 1, pidsLimit: 256, timeoutMs: 60_000, maxOutputBytes: 16 << 20, network: 'none', user: '1000:1000' },
          exitCode: 0,
          durationMs: 200,
          timedOut: false,
          oomKilled: false,
          truncated: false,
          bytesOut: 8,
        });
      }
    }
  })();
  store.close();
}

function emptyStats(): { requests: number; ok: number; throttled: number; status: Record<string, number>; serverErrors: number; malformed: number; clientErrors: number; lat: number[]; thrLat: number[]; denyCodes: Record<string, number> } {
  return { requests: 0, ok: 0, throttled: 0, status: {}, serverErrors: 0, malformed: 0, clientErrors: 0, lat: [], thrLat: [], denyCodes: {} };
}

export async function runLoad(options: Partial<LoadOptions> = {}): Promise<LoadResult> {
  const opts: LoadOptions = { ...DEFAULT_OPTIONS, ...options, mix: { ...DEFAULT_OPTIONS.mix, ...options.mix } };
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const docker = new Docker();
  const instance = `load-${process.pid}-${Date.now().toString(36)}`;
  const work = mkdtempSync(join('/var/tmp', 'execgate-load-'));
  const project = join(work, 'project');
  mkdirSync(project);
  const projectFiles = ['Makefile', 'README.md', 'src', 'test'];
  for (const f of projectFiles) {
    if (f === 'src' || f === 'test') mkdirSync(join(project, f));
    else writeFileSync(join(project, f), `${f}\n`);
    chownSync(join(project, f), 1000, 1000);
  }
  chownSync(project, 1000, 1000);
  const teams = Array.from({ length: opts.teams }, (_, i) => `t${i}`);
  const tokens = teams.map((t) => `load-${t}-token-${Math.random().toString(36).slice(2)}`);
  const configPath = join(work, 'config.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      gateway: { host: '127.0.0.1', port: 0, ...(opts.nice !== undefined ? { nice: opts.nice } : {}), auth: { tokens: teams.map((team, i) => ({ token: tokens[i], team, roles: ['exec'], name: `load-${team}` })) } },
      store: { path: join(work, 'store') },
      agents: {
        defaults: {
          toolPolicies: {
            exec: {
              mode: 'allowed',
              allowedPaths: [project],
              noMatch: 'deny',
              onDeny: 'block',
              rules: [
                { name: 'echo', pattern: '^echo\\b', action: 'allow' },
                { name: 'ls', pattern: '^ls\\b', action: 'allow' },
                { name: 'seq', pattern: '^seq [0-9 ]+$', action: 'allow' },
                { name: 'yes', pattern: '^yes [0-9a-z]+$', action: 'allow' },
                { name: 'head', pattern: '^head -c [0-9]+$', action: 'allow' },
                { name: 'no interpreters', pattern: '^(python3?|node|perl)\\b', action: 'deny' },
              ],
            },
          },
          sandbox: { image: opts.image, runtime: opts.runtime, maxOutputBytes: 16 * 1024 * 1024, timeoutMs: 60_000, pool: { size: 0 } },
          quota: { maxConcurrent: opts.maxConcurrent, maxQueued: opts.maxQueued },
        },
        // The pool is per team: only the teams the clients use get one (not the implicit "default").
        teams: Object.fromEntries(teams.map((t) => [t, { sandbox: { pool: { size: opts.pool, maxIdleMs: 600_000 } } }])),
      },
    }),
  );
  if (opts.history > 0) prefillHistory(join(work, 'store'), teams, opts.history, project);
  const volumesBefore = new Set(((await docker.listVolumes({ filters: { label: ['io.execgate.managed=true'] } })).Volumes ?? []).map((v) => v.Name));
  const watch = await watchDocker(docker, instance);
  const logPath = join(work, 'service.log');
  const service = await startServiceProcess(configPath, logPath, instance);
  const failures: string[] = [];
  const problems: string[] = [];
  const perKind = Object.fromEntries(KINDS.map((k) => [k, emptyStats()])) as Record<Kind, ReturnType<typeof emptyStats>>;
  let result: LoadResult | undefined;
  try {
    // Let the pool fill before the clients start: the figures are for a service in its steady state.
    for (let i = 0; i < 200 && opts.pool > 0 && (await poolIdle(service.url)) < opts.pool * opts.teams; i++) await sleep(100);
    const rssStart = memoryOf(service.proc.pid!).rss;
    await metricValues(service.url, []); // a scrape resets the event-loop lag histogram: it then covers the load only
    const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
    const deniedExecIds = new Set<string>();
    const weights = KINDS.map((k) => Math.max(0, opts.mix[k]));
    const sum = weights.reduce((a, b) => a + b, 0);
    if (sum <= 0) throw new Error('the mix has no kind with a positive weight');
    const pick = (): Kind => {
      let r = Math.random() * sum;
      for (let i = 0; i < KINDS.length; i++) if ((r -= weights[i]!) < 0) return KINDS[i]!;
      return KINDS[KINDS.length - 1]!;
    };

    // Warm-up, not measured: a fresh process runs its first requests unoptimised (the first ~100 decisions
    // cost ~4x a warm one), and the figures are for the steady state. A failure here still fails the run.
    const warmStart = Date.now();
    for (const kind of KINDS) {
      if (opts.mix[kind] <= 0 || opts.warmup <= 0) continue;
      await Promise.all(
        Array.from({ length: 4 }, async (_, w) => {
          const ctx: Ctx = { agent, url: service.url, token: tokens[w % tokens.length]!, project, projectFiles, opts, deniedExecIds };
          for (let i = w; i < opts.warmup; i += 4) {
            try {
              await RUN[kind](ctx);
            } catch (err) {
              failures.push(`warm-up ${kind}: ${(err as Error).message.slice(0, 300)}`);
            }
          }
        }),
      );
    }
    const warmupS = (Date.now() - warmStart) / 1000;
    await sleep(1000);

    log(`load: ${opts.clients} clients for ${opts.durationS} s on ${service.url} (instance ${instance}, pool ${opts.pool}/team, ${opts.teams} teams, quota ${opts.maxConcurrent} running + ${opts.maxQueued} queued per team)`);
    const prober = startProber(service.url, opts.healthIntervalMs, opts.readyIntervalMs);
    const cpu0 = cpuSnapshot(service.proc.pid!);
    const sched0 = schedstat(service.proc.pid!);
    const timeline: LoadResult['timeline'] = { requests: [], healthz: [] };
    const startedAt = Date.now();
    const t0 = process.hrtime.bigint();
    const deadline = Date.now() + opts.durationS * 1000;
    const progress = setInterval(() => {
      const done = KINDS.reduce((a, k) => a + perKind[k].requests, 0);
      log(`load: ${Math.round(sinceMs(t0) / 1000)} s, ${done} requests answered, ${watch.started} containers started, ${watch.alive} alive`);
    }, 10_000);

    const client = async (i: number) => {
      const ctx: Ctx = { agent, url: service.url, token: tokens[i % tokens.length]!, project, projectFiles, opts, deniedExecIds };
      // Staggered start: 100 clients do not all send their first request in the same millisecond.
      await sleep(Math.random() * 500);
      while (Date.now() < deadline && !service.crashed()) {
        const kind = pick();
        const s = perKind[kind];
        const start = process.hrtime.bigint();
        const at = Date.now() - startedAt;
        let wait = 0;
        let status = 0;
        try {
          const out = await RUN[kind](ctx);
          const ms = sinceMs(start);
          s.requests++;
          status = out.kind === 'throttled' ? 429 : kind === 'denied' ? 403 : 200;
          if (out.kind === 'throttled') {
            s.throttled++;
            s.status['429'] = (s.status['429'] ?? 0) + 1;
            s.thrLat.push(ms);
            wait = out.retryAfterS * 1000 + Math.random() * 250;
          } else {
            s.ok++;
            const st = kind === 'denied' ? '403' : '200';
            s.status[st] = (s.status[st] ?? 0) + 1;
            s.lat.push(ms);
            if (out.denyCode) s.denyCodes[out.denyCode] = (s.denyCodes[out.denyCode] ?? 0) + 1;
          }
        } catch (err) {
          s.requests++;
          const msg = (err as Error).message;
          const code = /^status (\d+)/.exec(msg)?.[1];
          if (err instanceof Malformed) {
            s.status[code ?? '200'] = (s.status[code ?? '200'] ?? 0) + 1;
            status = Number(code ?? 200);
            if (err.server) s.serverErrors++;
            else s.malformed++;
          } else {
            s.clientErrors++;
            s.status.error = (s.status.error ?? 0) + 1;
          }
          if (problems.length < 20) problems.push(`${kind}: ${msg}`);
          wait = 100 + Math.random() * 200;
        }
        timeline.requests.push([at, kind, status, Math.round(sinceMs(start))]);
        if (wait > 0) await sleep(Math.min(wait, Math.max(0, deadline - Date.now())));
      }
    };
    await Promise.all(Array.from({ length: opts.clients }, (_, i) => client(i)));
    clearInterval(progress);
    const elapsedS = sinceMs(t0) / 1000;
    const cpu = cpuUse(cpu0, cpuSnapshot(service.proc.pid!));
    const sched1 = schedstat(service.proc.pid!);
    const priority = priorityOf(service.proc.pid!);
    const probes = await prober.stop();
    agent.destroy();
    log(`load: clients done after ${elapsedS.toFixed(1)} s; checking for leftovers with the service up`);

    const mem = memoryOf(service.proc.pid!);
    const [lagP99, lagMax] = await metricValues(service.url, ['execgate_process_nodejs_eventloop_lag_p99_seconds', 'execgate_process_nodejs_eventloop_lag_max_seconds']);

    // While still up: everything a request used is removed; only idle warm containers may stay.
    let whileUp = { containers: 0, idlePool: 0, ids: [] as string[] };
    for (let i = 0; i < 150; i++) {
      const list = await docker.listContainers({ all: true, filters: { label: [`io.execgate.instance=${instance}`] } });
      const idle = await poolIdle(service.url);
      whileUp = { containers: list.length - idle, idlePool: idle, ids: list.map((c) => `${c.Id.slice(0, 12)} ${c.Labels['io.execgate.exec']} ${c.State}`) };
      if (whileUp.containers === 0 && idle <= opts.pool * opts.teams) break;
      await sleep(100);
    }
    const crashedDuringRun = service.crashed();

    // SIGTERM: drains, removes the pool, exits 0; nothing of this instance may remain.
    service.signal('SIGTERM');
    const stopTimer = setTimeout(() => service.signal('SIGKILL'), 30_000);
    const exit = await service.exited;
    clearTimeout(stopTimer);
    const left = await docker.listContainers({ all: true, filters: { label: [`io.execgate.instance=${instance}`] } });
    const volumes = ((await docker.listVolumes({ filters: { label: ['io.execgate.managed=true'] } })).Volumes ?? []).filter((v) => !volumesBefore.has(v.Name));
    // The last destroy events may still be on their way.
    for (let i = 0; i < 30 && watch.alive > 0; i++) await sleep(100);
    watch.stop();

    const logText = readFileSync(logPath, 'utf8');
    const logLines = logText.split('\n').filter(Boolean);
    const errorLogLines = logLines.filter((l) => /"level":(50|60)\b/.test(l) || !l.startsWith('{')).slice(0, 10);
    const denied = [...deniedExecIds].filter((id) => watch.execLabels.has(id)).length;

    const kinds = Object.fromEntries(
      KINDS.map((k) => {
        const s = perKind[k];
        const st: KindStats = { requests: s.requests, ok: s.ok, throttled: s.throttled, status: s.status, serverErrors: s.serverErrors, malformed: s.malformed, clientErrors: s.clientErrors, latencyMs: percentiles(s.lat), throttledLatencyMs: percentiles(s.thrLat) };
        if (k === 'denied') st.denyCodes = s.denyCodes;
        return [k, st];
      }),
    ) as Record<Kind, KindStats>;
    const sumOf = (f: (s: KindStats) => number) => KINDS.reduce((a, k) => a + f(kinds[k]), 0);
    const status: Record<string, number> = {};
    for (const k of KINDS) for (const [c, n] of Object.entries(kinds[k].status)) status[c] = (status[c] ?? 0) + n;
    const hs = probes.healthz;
    const rs = probes.readyz;
    const countStatus = (xs: ProbeSample[]) => xs.reduce<Record<string, number>>((a, x) => ((a[String(x.status || 'error')] = (a[String(x.status || 'error')] ?? 0) + 1), a), {});

    result = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
      options: { ...opts, log: undefined } as Omit<LoadOptions, 'log'>,
      instance,
      warmupS,
      elapsedS,
      kinds,
      total: {
        requests: sumOf((s) => s.requests),
        ok: sumOf((s) => s.ok),
        throttled: sumOf((s) => s.throttled),
        serverErrors: sumOf((s) => s.serverErrors),
        malformed: sumOf((s) => s.malformed),
        clientErrors: sumOf((s) => s.clientErrors),
        okPerSecond: sumOf((s) => s.ok) / elapsedS,
      },
      status,
      problems,
      health: { ...percentiles(hs.filter((x) => x.status === 200).map((x) => x.ms)), over50ms: hs.filter((x) => x.ms >= 50).length, errors: hs.filter((x) => x.status !== 200).length, status: countStatus(hs) },
      ready: { ...percentiles(rs.filter((x) => x.status === 200).map((x) => x.ms)), errors: rs.filter((x) => x.status !== 200).length, status: countStatus(rs) },
      cpu,
      service: {
        rssPeakMiB: mem.peak / 2 ** 20,
        rssStartMiB: rssStart / 2 ** 20,
        eventLoopLagP99Ms: lagP99 == null ? null : lagP99 * 1000,
        eventLoopLagMaxMs: lagMax == null ? null : lagMax * 1000,
        mainThread: { cpuS: (sched1[0] - sched0[0]) / 1e9, runqueueWaitS: (sched1[1] - sched0[1]) / 1e9, timeslices: sched1[2] - sched0[2] },
        priority,
        errorLogLines,
        logLines: logLines.length,
        logMiB: Buffer.byteLength(logText) / 2 ** 20,
        crashed: crashedDuringRun,
        exitCode: exit.code,
        exitSignal: exit.signal,
      },
      containers: { created: watch.created, started: watch.started, startedPool: watch.startedPool, destroyed: watch.destroyed, maxAlive: watch.maxAlive, deniedExecsThatReachedDocker: denied },
      leaks: { whileUp, afterStop: { containers: left.length, volumes: volumes.length, ids: left.map((c) => `${c.Id.slice(0, 12)} ${c.Labels['io.execgate.exec']} ${c.State}`) } },
      timeline: { requests: timeline.requests, healthz: hs.map((x) => [x.at - startedAt, Math.round(x.ms * 10) / 10]) },
      failures,
      ok: false,
    };

    // The verdict.
    const r = result;
    if (r.total.serverErrors > 0) failures.push(`${r.total.serverErrors} answers were 5xx`);
    if (r.total.malformed > 0) failures.push(`${r.total.malformed} answers were not what the request should get`);
    if (r.total.clientErrors > 0) failures.push(`${r.total.clientErrors} requests failed below HTTP`);
    for (const k of KINDS) if (opts.mix[k] > 0 && r.kinds[k].ok === 0) failures.push(`no ${k} request got through (${r.kinds[k].requests} sent)`);
    if (r.service.crashed) failures.push('the service exited during the run');
    if (r.service.exitCode !== 0) failures.push(`the service exited with ${r.service.exitCode ?? r.service.exitSignal} after SIGTERM`);
    if (r.service.errorLogLines.length > 0) failures.push(`the service logged errors: ${r.service.errorLogLines.slice(0, 3).join(' | ').slice(0, 600)}`);
    if (r.health.errors > 0) failures.push(`${r.health.errors} /healthz probes failed`);
    if (r.health.n === 0) failures.push('no /healthz probe answered');
    if (r.containers.deniedExecsThatReachedDocker > 0) failures.push(`${r.containers.deniedExecsThatReachedDocker} denied executions have a container`);
    if (r.leaks.whileUp.containers > 0) failures.push(`${r.leaks.whileUp.containers} containers outlived their requests with the service up: ${r.leaks.whileUp.ids.join(', ')}`);
    if (r.leaks.afterStop.containers > 0) failures.push(`${r.leaks.afterStop.containers} containers outlived the service: ${r.leaks.afterStop.ids.join(', ')}`);
    if (r.leaks.afterStop.volumes > 0) failures.push(`${r.leaks.afterStop.volumes} execgate volumes outlived the service`);
    if (opts.healthP99LimitMs !== undefined && !(r.health.p99 < opts.healthP99LimitMs)) failures.push(`/healthz p99 ${r.health.p99.toFixed(1)} ms is not under ${opts.healthP99LimitMs} ms`);
    r.ok = r.failures.length === 0;
  } finally {
    if (service.proc.exitCode === null && service.proc.signalCode === null) {
      service.signal('SIGKILL');
      await service.exited;
    }
    watch.stop();
    if (!result) {
      // A run that threw: leave nothing of this instance behind either.
      for (const c of await docker.listContainers({ all: true, filters: { label: [`io.execgate.instance=${instance}`] } })) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
    }
    if (!result || result.ok) rmSync(work, { recursive: true, force: true });
    else log(`load: kept ${work} (config, service.log) for a look`);
  }
  if (!result) throw new Error('unreachable: the run neither finished nor threw');
  if (opts.out) {
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, `${JSON.stringify(result, null, 2)}\n`);
  }
  return result;
}

export function formatTable(r: LoadResult): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
  const pad = (s: string | number, n: number) => String(s).padStart(n);
  const o = r.options;
  const out = [
    `execgate load — ${r.date} — ${r.machine.cpus} cores (${r.machine.cpuModel}), node ${r.machine.node}, ${o.image} on ${o.runtime}`,
    `${o.clients} clients for ${o.durationS} s (ran ${r.elapsedS.toFixed(1)} s, after a ${r.warmupS.toFixed(1)} s warm-up of ${o.warmup} requests per kind); history ${o.history} executions per team at start; ${o.teams} teams, quota ${o.maxConcurrent} running + ${o.maxQueued} queued each; warm pool ${o.pool}/team; mix ${KINDS.map((k) => `${k}=${o.mix[k]}`).join(',')}`,
    '',
    `kind        requests      ok     429     5xx     bad  c.err   ok/s   p50 ms   p95 ms   p99 ms   max ms`,
    ...KINDS.map((k) => {
      const s = r.kinds[k];
      return `${k.padEnd(10)} ${pad(s.requests, 9)} ${pad(s.ok, 7)} ${pad(s.throttled, 7)} ${pad(s.serverErrors, 7)} ${pad(s.malformed, 7)} ${pad(s.clientErrors, 6)} ${pad(f(s.ok / r.elapsedS), 6)} ${pad(f(s.latencyMs.p50), 8)} ${pad(f(s.latencyMs.p95), 8)} ${pad(f(s.latencyMs.p99), 8)} ${pad(f(s.latencyMs.max), 8)}`;
    }),
    `${'total'.padEnd(10)} ${pad(r.total.requests, 9)} ${pad(r.total.ok, 7)} ${pad(r.total.throttled, 7)} ${pad(r.total.serverErrors, 7)} ${pad(r.total.malformed, 7)} ${pad(r.total.clientErrors, 6)} ${pad(f(r.total.okPerSecond), 6)}`,
    `status codes: ${Object.entries(r.status).sort().map(([c, n]) => `${c}: ${n}`).join(', ')}; deny codes: ${Object.entries(r.kinds.denied.denyCodes ?? {}).map(([c, n]) => `${c} ${n}`).join(', ')}`,
    '',
    `GET /healthz every ${o.healthIntervalMs} ms: ${r.health.n} probes, p50 ${f(r.health.p50)} ms, p95 ${f(r.health.p95)}, p99 ${f(r.health.p99)}, max ${f(r.health.max)}; ${r.health.over50ms} at or over 50 ms; ${r.health.errors} failed`,
    `GET /readyz every ${o.readyIntervalMs} ms: ${r.ready.n} probes, p50 ${f(r.ready.p50)} ms, p95 ${f(r.ready.p95)}, p99 ${f(r.ready.p99)}, max ${f(r.ready.max)}; statuses ${JSON.stringify(r.ready.status)}`,
    `CPU over the run: machine ${r.cpu.machineBusyPercent.toFixed(0)}% busy (load average ${r.cpu.loadAverage}); cores used: service ${r.cpu.cores.service.toFixed(2)}, load client ${r.cpu.cores.load.toFixed(2)}, Docker + sandboxes ${r.cpu.cores.docker.toFixed(2)} (${r.cpu.dockerTop.join(", ")}), other ${r.cpu.cores.other.toFixed(2)}${r.cpu.cores.other >= 0.2 ? ` — SHARED MACHINE (${r.cpu.otherTop.join(', ')}): latencies include the neighbours'` : ''}`,
    `service event-loop thread: ${f(r.service.mainThread.cpuS)} s on a CPU, ${f(r.service.mainThread.runqueueWaitS)} s runnable but waiting for one (${f((1000 * r.service.mainThread.runqueueWaitS) / Math.max(1, r.service.mainThread.timeslices))} ms per wakeup on average, ${r.service.mainThread.timeslices} wakeups); nice ${r.service.priority.nice}${r.service.priority.autogroupNice === null ? '' : `, autogroup nice ${r.service.priority.autogroupNice}`} (gateway.nice)`,
    `service: RSS ${f(r.service.rssStartMiB)} MiB before the load, peak (VmHWM) ${f(r.service.rssPeakMiB)} MiB; event-loop lag p99 ${r.service.eventLoopLagP99Ms === null ? '-' : f(r.service.eventLoopLagP99Ms)} ms, max ${r.service.eventLoopLagMaxMs === null ? '-' : f(r.service.eventLoopLagMaxMs)} ms; ${r.service.logLines} log lines (${f(r.service.logMiB)} MiB); error lines ${r.service.errorLogLines.length}`,
    `containers (docker events): ${r.containers.created} created, ${r.containers.started} started (${r.containers.startedPool} for the pool), ${r.containers.destroyed} destroyed, at most ${r.containers.maxAlive} at once; denied executions with a container: ${r.containers.deniedExecsThatReachedDocker}`,
    `after the load, service up: ${r.leaks.whileUp.containers} leftover containers, ${r.leaks.whileUp.idlePool} idle warm; after SIGTERM (exit ${r.service.exitCode ?? r.service.exitSignal}): ${r.leaks.afterStop.containers} containers, ${r.leaks.afterStop.volumes} volumes`,
    '',
    r.ok ? 'PASS' : `FAIL:\n  - ${r.failures.join('\n  - ')}`,
  ];
  if (r.problems.length > 0) out.push('', 'first problems seen:', ...r.problems.slice(0, 10).map((p) => `  ${p.slice(0, 300)}`));
  return out.join('\n');
}

function parseMix(text: string): Record<Kind, number> {
  const mix = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  for (const part of text.split(',')) {
    const [k, v] = part.split('=');
    if (!KINDS.includes(k as Kind) || !Number.isFinite(Number(v)) || Number(v) < 0) throw new Error(`--mix: "${part}" is not KIND=WEIGHT with KIND one of ${KINDS.join(', ')}`);
    mix[k as Kind] = Number(v);
  }
  return mix;
}

function niceArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < -20 || n > 19) throw new Error(`--nice: "${v}" is not a whole number from -20 to 19`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string' },
      duration: { type: 'string' },
      mix: { type: 'string' },
      pool: { type: 'string' },
      teams: { type: 'string' },
      'max-concurrent': { type: 'string' },
      'max-queued': { type: 'string' },
      warmup: { type: 'string' },
      history: { type: 'string' },
      runtime: { type: 'string' },
      nice: { type: 'string' },
      out: { type: 'string' },
      'no-gate': { type: 'boolean' },
    },
    strict: true,
  });
  const num = (v: string | undefined, name: string, d: number) => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name}: "${v}" is not a whole number`);
    return n;
  };
  const r = await runLoad({
    clients: num(values.clients, 'clients', DEFAULT_OPTIONS.clients),
    durationS: num(values.duration, 'duration', DEFAULT_OPTIONS.durationS),
    pool: num(values.pool, 'pool', DEFAULT_OPTIONS.pool),
    teams: num(values.teams, 'teams', DEFAULT_OPTIONS.teams),
    maxConcurrent: num(values['max-concurrent'], 'max-concurrent', DEFAULT_OPTIONS.maxConcurrent),
    maxQueued: num(values['max-queued'], 'max-queued', DEFAULT_OPTIONS.maxQueued),
    warmup: num(values.warmup, 'warmup', DEFAULT_OPTIONS.warmup),
    history: num(values.history, 'history', DEFAULT_OPTIONS.history),
    ...(values.mix ? { mix: parseMix(values.mix) } : {}),
    ...(values.runtime ? { runtime: values.runtime } : {}),
    ...(values.nice !== undefined ? { nice: niceArg(values.nice) } : {}),
    out: values.out ?? DEFAULT_OPTIONS.out,
    healthP99LimitMs: values['no-gate'] ? undefined : DEFAULT_OPTIONS.healthP99LimitMs,
  });
  process.stdout.write(`\n${formatTable(r)}\n\nresult: ${r.options.out}\n`);
  process.exitCode = r.ok ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    process.stderr.write(`load failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
