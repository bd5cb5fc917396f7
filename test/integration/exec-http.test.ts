import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig, type AppConfig } from '../../src/config/load.js';
import { LABEL_EXEC } from '../../src/runner/container-spec.js';
import { DockerRunner } from '../../src/runner/docker-runner.js';
import { engine } from '../support/app.js';
import { listenOnEngine } from '../support/engine-app.js';
import { readNdjson } from '../support/ndjson.js';
import { SANDBOX_IMAGE, TEST_RUNTIME, projectDir, silentLogger } from '../support/sandbox.js';

const TOKEN = 'integration-admin-token';
const docker = new Docker();
const instance = `it-${randomUUID().slice(0, 8)}`;
const project = projectDir();
let app: FastifyInstance;
let url: string;
let runner: DockerRunner;
let config: AppConfig;

beforeAll(async () => {
  const eng = await engine();
  config = resolveConfig(
    {
      store: { path: `${project.path}-store` },
      gateway: { auth: { token: TOKEN } },
      agents: {
        defaults: {
          toolPolicies: { exec: { mode: 'allowed', allowedPaths: [project.path], blockedPatterns: ['rm -rf', 'sudo', 'chmod 777'] } },
          sandbox: { image: SANDBOX_IMAGE, runtime: TEST_RUNTIME, memoryMb: 256, timeoutMs: 30_000 },
        },
      },
    },
    { baseDir: project.path },
    'integration',
  );
  runner = new DockerRunner({ instance, logger: silentLogger, docker });
  ({ app, url } = await listenOnEngine(config, runner, eng));
});

afterAll(async () => {
  await app.close();
  await runner.close();
  project.remove();
});

const headers = (accept?: string) => ({ authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(accept ? { accept } : {}) });

describe('POST /v1/exec on a real engine', () => {
  it('streams `echo hi` from a container as NDJSON', async () => {
    const res = await fetch(`${url}/v1/exec`, { method: 'POST', headers: headers(), body: JSON.stringify({ command: 'echo hi' }) });
    expect(res.status).toBe(200);
    const events = await readNdjson(res);
    expect(events.map((e) => e.type)).toEqual(['decision', 'started', 'stdout', 'exit']);
    expect(events[2]).toEqual({ type: 'stdout', data: 'hi\n' });
    expect(events[3]).toMatchObject({ exitCode: 0, timedOut: false });
  });

  it('answers once with JSON, writing into the allowed path', async () => {
    const res = await fetch(`${url}/v1/exec`, { method: 'POST', headers: headers('application/json'), body: JSON.stringify({ command: 'echo data > result.txt; cat result.txt; echo oops >&2; exit 4' }) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ decision: 'allow', exitCode: 4, stdout: 'data\n', stderr: 'oops\n' });
    expect(readFileSync(join(project.path, 'result.txt'), 'utf8')).toBe('data\n');
  });

  it('denies before any container exists', async () => {
    const since = Math.floor(Date.now() / 1000) - 1;
    const res = await fetch(`${url}/v1/exec`, { method: 'POST', headers: headers(), body: JSON.stringify({ command: 'rm -rf /' }) });
    expect(res.status).toBe(403);
    const body = (await res.json()) as { error: { code: string; execId: string } };
    expect(body.error.code).toBe('policy_denied');
    // Docker's own event log: no container was ever created for this exec id.
    const stream = await docker.getEvents({ since, until: Math.floor(Date.now() / 1000) + 1, filters: { type: ['container'], event: ['create'], label: [`${LABEL_EXEC}=${body.error.execId}`] } });
    let text = '';
    for await (const chunk of stream as AsyncIterable<Buffer>) text += chunk.toString();
    expect(text).toBe('');
  });

  it('a client that disconnects ends its container', async () => {
    const ac = new AbortController();
    let execId = '';
    let containerId = '';
    const res = await fetch(`${url}/v1/exec`, { method: 'POST', headers: headers(), body: JSON.stringify({ command: 'echo started; sleep 60' }), signal: ac.signal });
    await readNdjson(res, {
      onEvent: (e) => {
        if (e.type === 'decision') execId = e.execId as string;
        if (e.type === 'started') containerId = e.containerId as string;
        if (e.type === 'stdout') ac.abort();
      },
    }).catch(() => undefined);
    expect(containerId).not.toBe('');
    // Removal happens in the background; it must finish well before the command would have.
    for (let i = 0; i < 100; i++) {
      const left = await docker.listContainers({ all: true, filters: { label: [`${LABEL_EXEC}=${execId}`] } });
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await docker.listContainers({ all: true, filters: { label: [`${LABEL_EXEC}=${execId}`] } })).toEqual([]);
  });

  it('execution history records the run', async () => {
    const res = await fetch(`${url}/v1/executions?limit=5`, { headers: headers() });
    const { executions } = (await res.json()) as { executions: Record<string, unknown>[] };
    const imageId = (await docker.getImage(SANDBOX_IMAGE).inspect()).Id;
    expect(executions.find((e) => e.command === 'echo hi')).toMatchObject({
      status: 'finished', exitCode: 0, decision: 'allow', image: SANDBOX_IMAGE, imageId, bytesOut: 3,
      mounts: [{ path: project.path, readOnly: false }], limits: { memoryMb: 256, timeoutMs: 30_000, network: 'none' },
    });
  });
});
