#!/usr/bin/env -S MALLOC_ARENA_MAX=1 node --max-semi-space-size=2 --liftoff-only --expose-gc
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import pino, { type Logger } from 'pino';
import { buildApp } from './app.js';
import { logSerializers } from './http/log.js';
import { systemClock } from './approvals/queue.js';
import { ConfigError, embeddedDefaultConfig, isLoopback, loadConfigFile, type AppConfig } from './config/load.js';
import { createPolicyEngine, policyHash, type PolicyEngine } from './policy/index.js';
import { applyNice, NICE_HINT } from './priority.js';
import { DockerRunner } from './runner/docker-runner.js';
import type { SessionHandle } from './runner/session.js';
import type { ReadyState, RunEvent, RunResult, RunSpec, Runner, SessionSpec } from './runner/types.js';
import { ServiceError } from './service/errors.js';
import { ExecService } from './service/exec-service.js';
import { startGcPacer } from './gc-pacer.js';
import { escapesWithWasm } from './service/json-escape.js';
import { SqliteStateStore } from './store/sqlite-store.js';

const USAGE = `execgate — a sandboxed exec gateway

Usage:
  execgate serve [--config FILE] [--host H] [--port N]   run the service (EXECGATE_CONFIG = --config)
  execgate audit verify [--config FILE | --store DIR]    check the audit chain; names the first broken record
  execgate config schema                                 print the config file's JSON Schema (for editors)
  execgate config check FILE                             validate a config file; every problem with its path
  execgate policy test FILE COMMAND [--team T] [--cwd D] the decision and why, without a server
  execgate exec [--url U] [--token T] [--team T] [--cwd D] [--env K=V]... [--timeout MS] [--no-wait] [--stdin] -- COMMAND...
                                                         run a command through a running execgate (execgate exec --help)
  execgate --help

Signals: SIGHUP reloads the config file (a bad file is refused and the old one kept); SIGTERM drains.

With no config file the service starts on the embedded default: loopback only, sandboxed mode,
exec approval-required, the current directory as the only allowed path, and a random token.`;

function fail(message: string): never {
  process.stderr.write(`execgate: ${message}\n`);
  process.exit(2);
}

/** gateway.nice: the service's own CPU priority (src/priority.ts says why and what it reaches). */
async function setNice(nice: number, logger: Logger): Promise<void> {
  const got = await applyNice(nice);
  // Info, not a warning: an unprivileged start (the README's first command) is normal, only slower under contention.
  if (got.error) logger.info({ nice, threads: got.threads, autogroup: got.autogroup, err: got.error }, `could not set the service's CPU priority (gateway.nice); under CPU contention /healthz and decisions wait behind the sandboxes: ${NICE_HINT}`);
  else logger.info({ nice, threads: got.threads, autogroup: got.autogroup }, 'service CPU priority set (gateway.nice)');
}

function loadConfig(path: string | undefined, engine: PolicyEngine, overrides: { host?: string | undefined; port?: string | undefined }): AppConfig {
  const checkRuleExamples = (rules: Parameters<PolicyEngine['checkRuleExamples']>[0]) => engine.checkRuleExamples(rules);
  const config = path ? loadConfigFile(path, { checkRuleExamples }) : embeddedDefaultConfig({ cwd: process.cwd(), checkRuleExamples });
  if (overrides.host) config.gateway.host = overrides.host;
  if (overrides.port) {
    const port = Number(overrides.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port: "${overrides.port}" is not a port number`);
    config.gateway.port = port;
  }
  if (!config.gateway.auth.enabled && !isLoopback(config.gateway.host)) {
    throw new ConfigError([`gateway.host: "${config.gateway.host}" is not a loopback address; refusing to listen there with auth disabled`]);
  }
  return config;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, host: { type: 'string' }, port: { type: 'string', short: 'p' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const logger: Logger = pino({
    level: process.env.EXECGATE_LOG_LEVEL ?? 'info',
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization'], censor: '[redacted]' },
    // Request lines without query values the API does not define: a token put in the URL is never logged.
    serializers: logSerializers,
  });
  const engine = await createPolicyEngine();
  let config: AppConfig;
  try {
    config = loadConfig(values.config ?? process.env.EXECGATE_CONFIG, engine, values);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  await setNice(config.gateway.nice, logger);

  const instance = process.env.EXECGATE_INSTANCE ?? createHash('sha256').update(`${hostname()}:${config.store.path}`).digest('hex').slice(0, 12);
  // DOCKER_HOST (unix://PATH or tcp://HOST:PORT) names the engine, as for the docker CLI; else /var/run/docker.sock.
  const runner = new DockerRunner({ instance, logger: logger.child({ component: 'runner' }), docker: new Docker() });
  const images = (c: AppConfig) => [...new Set(Object.values(c.teams).map((t) => t.sandbox.image))];

  // A team asking for a runtime dockerd does not offer could never run anything: when Docker answers now,
  // that is a start-up error. When it does not, the service starts, /readyz says why it is not ready, and the
  // check is made (and reported there) once Docker appears.
  const first = await runner.ready(images(config));
  let knownRuntimes = first.runtimes;
  if (knownRuntimes) {
    const missing = missingRuntimes(config, knownRuntimes);
    if (missing.length > 0) fail(missing.join('\n'));
  }

  const state = new SqliteStateStore(config.store.path, config.store.history);
  const unfinished = state.unfinished();
  const recovered = state.recoverAfterRestart();
  if (recovered.failed + recovered.expired > 0) logger.warn(recovered, 'marked executions interrupted by the last stop as failed / expired');
  const drainable = new DrainableRunner(runner);
  const service = new ExecService({ config: () => config, runner: drainable, engine, state, logger, clock: systemClock });
  // Approvals that were pending when the last process stopped: nobody can wait for them any more. They answer
  // as expired (GET; approve or reject gets 409), as their executions do in the history.
  for (const r of unfinished) {
    if (r.status !== 'pending_approval' || !r.approvalId) continue;
    const at = state.getExecution(r.id)?.finishedAt ?? Date.now();
    service.approvals.restore({
      id: r.approvalId,
      execId: r.id,
      team: r.team,
      plan: { team: r.team, command: r.command, cwd: r.cwd, env: {}, collect: r.collect, session: r.sessionId },
      planHash: '',
      explanation: r.explanation,
      requestedBy: r.requestedBy,
      createdAt: r.createdAt,
      expiresAt: at,
      status: 'expired',
      resolvedAt: at,
      resolvedBy: 'system',
      reason: 'service_restarted',
    });
  }

  let draining = false;
  const app = await buildApp({ config: () => config, service, runner: drainable, state, logger, isDraining: () => draining });

  // Draining: requests that would start work get 503 (health, history and approvals keep answering); the
  // requests under way are counted so SIGTERM can wait for them. /v1/events subscriptions never end by
  // themselves: they are not waited for, only closed at the end.
  let inflight = 0;
  let idle: (() => void) | undefined;
  app.addHook('onRequest', async (req, reply) => {
    const route = `${req.method} ${req.routeOptions.url ?? ''}`;
    if (draining && WORK_ROUTES.has(route)) throw new ServiceError('shutting_down', 'the service is shutting down; retry on another instance');
    if (route === 'GET /v1/events') return;
    inflight++;
    reply.raw.once('close', () => {
      if (--inflight === 0) idle?.();
    });
  });

  const poolTemplates = (c: AppConfig) => Object.values(c.teams).map((t) => ({ team: t.name, sandbox: t.sandbox, mounts: t.policy.allowedPaths }));
  if (!first.ok) logger.warn({ reason: first.reason }, `not ready: ${first.reason}`);
  await runner.configurePool(poolTemplates(config));

  // Whether Docker answered at start or not, the engine is watched: when it first answers (or answers again
  // after going away) leftovers are reaped and the warm pool is refilled, which is what start-up does.
  let answeredBefore = false;
  const watch = runner.watchEngine({
    up: async () => {
      const st = await runner.ready(images(config));
      if (st.runtimes) knownRuntimes = st.runtimes;
      const missing = st.runtimes ? missingRuntimes(config, st.runtimes) : [];
      if (missing.length > 0) logger.error({ problems: missing }, 'the configuration asks for runtimes dockerd does not offer; /readyz reports it');
      const removed = await runner.recovered().catch((err: unknown) => {
        logger.warn({ err }, 'reaping after the engine answered failed');
        return 0;
      });
      if (removed > 0) logger.info({ removed }, 'reaped leftover sandboxes');
      if (answeredBefore) logger.info({ ready: st.ok, reason: st.reason }, 'the Docker engine answers again');
      answeredBefore = true;
    },
    down: (reason) => {
      logger.warn({ reason }, 'the Docker engine is not reachable; executions fail with docker_unavailable until it is back');
    },
  });
  const reaper = setInterval(() => {
    runner.reap().catch((err) => logger.warn({ err }, 'reaper failed'));
    try {
      service.artifacts.sweep();
    } catch (err) {
      logger.warn({ err }, 'artifact sweep failed');
    }
  }, config.reaper.intervalMs);
  reaper.unref();

  const gcPacer = startGcPacer();
  const address = await app.listen({ host: config.gateway.host, port: config.gateway.port });
  const url = address.replace('[::1]', 'localhost');
  logger.info({ address: url, config: config.source, instance, teams: Object.keys(config.teams) }, 'execgate listening');
  if (!escapesWithWasm) logger.warn('WebAssembly SIMD is not available here: NDJSON and SSE lines are escaped by JSON.stringify, which takes more CPU');
  if (config.generatedToken) {
    // Printed once, to the terminal only (not the JSON log): the embedded default's random admin token.
    process.stderr.write(
      `\n  execgate is running on the embedded default (allowed path: ${config.teams.default!.policy.allowedPaths[0]!.path})\n` +
        `  token:     ${config.generatedToken}\n` +
        `  dashboard: ${url}/  (sign in with the token)\n` +
        `  try:       curl -N -H "Authorization: Bearer ${config.generatedToken}" -H 'content-type: application/json' \\\n` +
        `               -d '{"command":"echo hi"}' ${url}/v1/exec\n` +
        (first.ok ? '' : `  WARNING:   ${first.reason}\n`) +
        '\n',
    );
  }

  /** Resolves true when no request is under way, false when `ms` pass first. */
  const untilIdle = (ms: number) =>
    new Promise<boolean>((resolve) => {
      if (inflight === 0) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      idle = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });

  const shutdown = async (signal: string) => {
    if (draining) return;
    draining = true;
    const drainMs = config.gateway.drainTimeoutMs;
    logger.info({ signal, running: inflight, drainTimeoutMs: drainMs }, 'shutting down: draining');
    clearInterval(reaper);
    watch.stop();
    // Nobody will approve now: waiting clients get error shutting_down (retry elsewhere).
    service.approvals.expireAll('shutting_down');
    if (!(await untilIdle(drainMs))) {
      logger.warn({ running: inflight }, 'drain deadline passed; stopping the executions still running');
      // Their clients get error shutting_down as the last event; sessions end (their commands with them).
      drainable.stopAll();
      await service.sessions.closeAll('shutdown');
      if (!(await untilIdle(1_500))) logger.warn({ running: inflight }, 'requests still open after stopping; closing their connections');
    }
    const closing = app.close();
    app.server.closeAllConnections();
    await closing;
    // After the drain: streams still running while it lasts keep their buffers paced.
    gcPacer.stop();
    await service.sessions.closeAll('shutdown');
    await runner.close();
    await service.notifier.idle();
    state.close();
    logger.info('stopped');
    process.exit(0);
  };
  const reload = async () => {
    const path = values.config ?? process.env.EXECGATE_CONFIG;
    if (!path) {
      logger.warn('SIGHUP: running on the embedded default; there is no file to reload');
      return;
    }
    try {
      const next = loadConfig(path, engine, values);
      if (next.gateway.host !== config.gateway.host || next.gateway.port !== config.gateway.port || next.store.path !== config.store.path) {
        logger.warn('SIGHUP: gateway.host, gateway.port and store.path take effect only after a restart');
        next.gateway.host = config.gateway.host;
        next.gateway.port = config.gateway.port;
        next.store = config.store;
      }
      // A runtime dockerd does not offer (now, or when it last answered) is refused like any other bad key.
      const offered = (await runner.ready([])).runtimes ?? knownRuntimes;
      if (offered) {
        knownRuntimes = offered;
        const missing = missingRuntimes(next, offered);
        if (missing.length > 0) throw new ConfigError(missing);
      }
      const niceChanged = next.gateway.nice !== config.gateway.nice;
      // Running executions keep the team settings they started with; new requests get the new ones.
      config = next;
      if (niceChanged) await setNice(next.gateway.nice, logger);
      void runner.configurePool(poolTemplates(next));
      const policies = Object.fromEntries(Object.values(next.teams).map((t) => [t.name, policyHash(t.policy)]));
      state.appendAudit('config_reloaded', 'default', { source: next.source, policies });
      logger.info({ config: next.source, policies }, 'configuration reloaded');
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
      logger.error({ problems }, 'configuration reload refused; keeping the previous configuration');
    }
  };
  process.on('SIGHUP', () => void reload());
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

/** Routes that start work: answered 503 while the service drains. */
const WORK_ROUTES = new Set(['POST /v1/exec', 'POST /v1/sessions', 'POST /v1/sessions/:id/exec', 'PUT /v1/sessions/:id/files', 'GET /v1/sessions/:id/files']);

/** One line per team whose sandbox.runtime dockerd does not offer, naming what it does offer. */
function missingRuntimes(config: AppConfig, offered: readonly string[]): string[] {
  return Object.values(config.teams)
    .filter((t) => !offered.includes(t.sandbox.runtime))
    .map((t) => `agents.teams.${t.name}.sandbox.runtime: team "${t.name}" asks for runtime "${t.sandbox.runtime}", which dockerd does not offer (it offers: ${offered.join(', ') || 'none'}); register it in dockerd's daemon.json or choose one of those`);
}

/**
 * The runner the service uses: the Docker runner, plus a way to stop every run at the drain deadline so that
 * each ends with error shutting_down (its client is told why) rather than a bare kill.
 */
class DrainableRunner implements Runner {
  private stopping = false;
  /** One stop function per run under way: no listener piles up on a shared signal. */
  private readonly running = new Set<() => void>();

  constructor(private readonly inner: DockerRunner) {}

  stopAll(): void {
    this.stopping = true;
    for (const stop of this.running) stop();
  }

  async *run(spec: RunSpec, signal: AbortSignal): AsyncGenerator<RunEvent, RunResult, void> {
    const ac = new AbortController();
    let stopped = false;
    const stop = () => {
      stopped = true;
      ac.abort();
    };
    const onClientGone = () => ac.abort();
    signal.addEventListener('abort', onClientGone, { once: true });
    if (signal.aborted) ac.abort();
    if (this.stopping) stop();
    this.running.add(stop);
    try {
      const result = yield* this.inner.run(spec, ac.signal);
      if (stopped && !signal.aborted) return { ...result, error: { code: 'shutting_down', message: 'the service is shutting down and stopped this command at its drain deadline (gateway.drainTimeoutMs)' } };
      return result;
    } finally {
      this.running.delete(stop);
      signal.removeEventListener('abort', onClientGone);
    }
  }

  ready(images: string[]): Promise<ReadyState> {
    return this.inner.ready(images);
  }

  reap(): Promise<number> {
    return this.inner.reap();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  openSession(spec: SessionSpec): Promise<SessionHandle> {
    return this.inner.openSession(spec);
  }

  poolIdle(): Record<string, number> {
    return this.inner.poolIdle();
  }

  poolBreakerOpen(): boolean {
    return this.inner.poolBreakerOpen();
  }
}

async function audit(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' }, store: { type: 'string' } }, allowPositionals: true, strict: true });
  if (positionals[0] !== 'verify') fail(`usage: execgate audit verify [--config FILE | --store DIR]`);
  let dir = values.store;
  if (!dir) {
    const path = values.config ?? process.env.EXECGATE_CONFIG;
    if (!path) fail('audit verify needs --config FILE or --store DIR');
    try {
      dir = loadConfigFile(path).store.path;
    } catch (err) {
      if (err instanceof ConfigError) fail(err.message);
      throw err;
    }
  }
  const store = new SqliteStateStore(dir);
  try {
    const r = store.verifyAudit();
    if (r.ok) {
      process.stdout.write(`audit chain intact: ${r.records} records, head ${r.head}\n`);
      return;
    }
    process.stdout.write(`audit chain BROKEN at record ${r.brokenAt}: ${r.reason}\n`);
    process.exitCode = 1;
  } finally {
    store.close();
  }
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case 'audit':
      return audit(rest);
    case 'config': {
      const { configCommand } = await import('./cli/config.js');
      process.exitCode = await configCommand(rest, { stdout: process.stdout, stderr: process.stderr });
      return;
    }
    case 'policy': {
      const { policyCommand } = await import('./cli/config.js');
      process.exitCode = await policyCommand(rest, { stdout: process.stdout, stderr: process.stderr });
      return;
    }
    case 'exec': {
      const { execCommand } = await import('./cli/exec.js');
      process.exitCode = await execCommand(rest, { stdout: process.stdout, stderr: process.stderr, env: process.env, stdin: process.stdin });
      return;
    }
    case 'serve':
    case undefined:
      return serve(rest);
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      fail(`unknown command "${cmd}"\n\n${USAGE}`);
  }
}

main().catch((err) => {
  process.stderr.write(`execgate: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
