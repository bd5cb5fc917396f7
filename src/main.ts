#!/usr/bin/env -S node --max-semi-space-size=2
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
import { DockerRunner } from './runner/docker-runner.js';
import { ExecService } from './service/exec-service.js';
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

  const instance = process.env.EXECGATE_INSTANCE ?? createHash('sha256').update(`${hostname()}:${config.store.path}`).digest('hex').slice(0, 12);
  const runner = new DockerRunner({ instance, logger: logger.child({ component: 'runner' }), docker: new Docker() });
  const state = new SqliteStateStore(config.store.path, config.store.history);
  const recovered = state.recoverAfterRestart();
  if (recovered.failed + recovered.expired > 0) logger.warn(recovered, 'marked executions interrupted by the last stop as failed / expired');
  const service = new ExecService({ config: () => config, runner, engine, state, logger, clock: systemClock });
  let draining = false;
  const app = await buildApp({ config: () => config, service, runner, state, logger, isDraining: () => draining });

  const poolTemplates = (c: AppConfig) => Object.values(c.teams).map((t) => ({ team: t.name, sandbox: t.sandbox, mounts: t.policy.allowedPaths }));
  const ready = await runner.ready([...new Set(Object.values(config.teams).map((t) => t.sandbox.image))]);
  if (!ready.ok) logger.warn({ reason: ready.reason }, `not ready: ${ready.reason}`);
  await runner.reap().then(
    (n) => n > 0 && logger.info({ removed: n }, 'reaped leftover sandboxes from an earlier run'),
    (err) => logger.warn({ err }, 'start-up reap failed'),
  );
  await runner.configurePool(poolTemplates(config));
  const reaper = setInterval(() => {
    runner.reap().catch((err) => logger.warn({ err }, 'reaper failed'));
    try {
      service.artifacts.sweep();
    } catch (err) {
      logger.warn({ err }, 'artifact sweep failed');
    }
  }, config.reaper.intervalMs);
  reaper.unref();

  const address = await app.listen({ host: config.gateway.host, port: config.gateway.port });
  const url = address.replace('[::1]', 'localhost');
  logger.info({ address: url, config: config.source, instance, teams: Object.keys(config.teams) }, 'execgate listening');
  if (config.generatedToken) {
    // Printed once, to the terminal only (not the JSON log): the embedded default's random admin token.
    process.stderr.write(
      `\n  execgate is running on the embedded default (allowed path: ${config.teams.default!.policy.allowedPaths[0]!.path})\n` +
        `  token:     ${config.generatedToken}\n` +
        `  dashboard: ${url}/  (sign in with the token)\n` +
        `  try:       curl -N -H "Authorization: Bearer ${config.generatedToken}" -H 'content-type: application/json' \\\n` +
        `               -d '{"command":"echo hi"}' ${url}/v1/exec\n` +
        (ready.ok ? '' : `  WARNING:   ${ready.reason}\n`) +
        '\n',
    );
  }

  const shutdown = async (signal: string) => {
    if (draining) return;
    draining = true;
    logger.info({ signal }, 'shutting down: draining');
    clearInterval(reaper);
    service.approvals.expireAll('shutting_down');
    const deadline = setTimeout(() => {
      logger.warn('drain deadline passed; closing connections');
      app.server.closeAllConnections();
    }, 10_000);
    deadline.unref();
    await app.close();
    await service.sessions.closeAll('shutdown');
    await runner.close();
    await service.notifier.idle();
    state.close();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGHUP', () => {
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
      // Running executions keep the team settings they started with; new requests get the new ones.
      config = next;
      void runner.configurePool(poolTemplates(next));
      const policies = Object.fromEntries(Object.values(next.teams).map((t) => [t.name, policyHash(t.policy)]));
      state.appendAudit('config_reloaded', 'default', { source: next.source, policies });
      logger.info({ config: next.source, policies }, 'configuration reloaded');
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
      logger.error({ problems }, 'configuration reload refused; keeping the previous configuration');
    }
  });
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
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
