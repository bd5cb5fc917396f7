import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { systemClock } from '../../src/approvals/queue.js';
import type { AppConfig } from '../../src/config/load.js';
import type { PolicyEngine } from '../../src/policy/index.js';
import type { DockerRunner } from '../../src/runner/docker-runner.js';
import { ExecService } from '../../src/service/exec-service.js';
import { MemoryStateStore } from '../../src/service/state.js';
import { silentLogger } from './sandbox.js';

/**
 * The real service and app in this process on a real runner (memory store, system clock), listening on a
 * loopback port: what the integration and e2e tests drive over HTTP. The caller owns the runner and closes both.
 */
export async function listenOnEngine(config: AppConfig, runner: DockerRunner, engine: PolicyEngine): Promise<{ service: ExecService; app: FastifyInstance; url: string }> {
  const state = new MemoryStateStore();
  const service = new ExecService({ config: () => config, runner, engine, state, logger: silentLogger, clock: systemClock });
  const app = await buildApp({ config: () => config, service, runner, state, logger: silentLogger });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { service, app, url };
}
