import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { resolveConfig, type AppConfig } from '../../src/config/load.js';
import { createPolicyEngine, type PolicyEngine } from '../../src/policy/index.js';
import { ExecService } from '../../src/service/exec-service.js';
import { MemoryStateStore } from '../../src/service/state.js';
import { ManualClock } from './clock.js';
import { FakeRunner } from './fake-runner.js';
import { silentLogger } from './sandbox.js';

let enginePromise: Promise<PolicyEngine> | undefined;
export const engine = (): Promise<PolicyEngine> => (enginePromise ??= createPolicyEngine());

export const TOKENS = {
  admin: 'admin-secret-token',
  agent: 't-agent-data-0001',
  human: 't-human-data-0001',
  otherAgent: 't-agent-web-00001',
  otherHuman: 't-human-web-00001',
} as const;

/** The token entries of the default test config: an agent and an approver per team ("data", "web"). */
export const TOKEN_ENTRIES = [
  { token: TOKENS.agent, team: 'data', roles: ['exec'], name: 'agent-data' },
  { token: TOKENS.human, team: 'data', roles: ['approve'], name: 'alice' },
  { token: TOKENS.otherAgent, team: 'web', roles: ['exec'], name: 'agent-web' },
  { token: TOKENS.otherHuman, team: 'web', roles: ['approve'], name: 'bob' },
];

export interface TestApp {
  app: FastifyInstance;
  runner: FakeRunner;
  clock: ManualClock;
  service: ExecService;
  config: AppConfig;
  dir: string;
  close(): Promise<void>;
}

/** Builds the real app with a fake runner, a manual clock, and teams "data" and "web" (plus "default"). */
export async function testApp(opts: { exec?: Record<string, unknown>; raw?: (dir: string) => Record<string, unknown> } = {}): Promise<TestApp> {
  const dir = mkdtempSync(join('/var/tmp', 'execgate-http-'));
  const exec = { mode: 'allowed', blockedPatterns: ['rm -rf', 'sudo', 'chmod 777'], allowedPaths: [dir], noMatch: 'allow', onDeny: 'ask', ...opts.exec };
  const raw = opts.raw?.(dir) ?? {
    gateway: {
      auth: {
        token: TOKENS.admin,
        tokens: TOKEN_ENTRIES,
      },
    },
    agents: { defaults: { toolPolicies: { exec }, sandbox: { user: '1000:1000' } }, teams: { data: {}, web: {} } },
    approvals: { timeoutMs: 60_000 },
    store: { path: `${dir}-store` },
  };
  const eng = await engine();
  const config = resolveConfig(raw, { baseDir: dir, checkRuleExamples: (r) => eng.checkRuleExamples(r) }, 'test');
  const runner = new FakeRunner();
  const clock = new ManualClock();
  const state = new MemoryStateStore();
  const service = new ExecService({ config: () => config, runner, engine: eng, state, logger: silentLogger, clock });
  const app = await buildApp({ config: () => config, service, runner, state, logger: silentLogger });
  return {
    app,
    runner,
    clock,
    service,
    config,
    dir,
    async close() {
      // A client that aborted may leave its keep-alive socket open; it must not hold the test up.
      app.server.closeAllConnections();
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const auth = (token: string) => ({ authorization: `Bearer ${token}` });

export function ndjson(body: string): Record<string, unknown>[] {
  return body
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
