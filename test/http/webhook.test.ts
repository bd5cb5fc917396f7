import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { WebhookNotifier } from '../../src/service/notifier.js';
import { TOKENS, auth, testApp } from '../support/app.js';
import { silentLogger } from '../support/sandbox.js';

describe('approval webhook', () => {
  it('POSTs the approval as JSON and retries with backoff after failures, without blocking the request', async () => {
    const received: { body: Record<string, unknown>; at: number }[] = [];
    let failuresLeft = 2;
    const server = createServer((req, res) => {
      let data = '';
      req.on('data', (c) => (data += c));
      req.on('end', () => {
        received.push({ body: JSON.parse(data), at: Date.now() });
        res.statusCode = failuresLeft-- > 0 ? 500 : 204;
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const hook = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const delays: number[] = [];
    const t = await testApp({
      exec: { mode: 'approval-required' },
      raw: (dir) => ({
        gateway: { auth: { tokens: [{ token: TOKENS.agent, team: 'data', roles: ['exec', 'approve'] }] } },
        agents: { defaults: { toolPolicies: { exec: { mode: 'approval-required', allowedPaths: [dir] } } }, teams: { data: {}, web: {} } },
        approvals: { webhooks: { data: hook } },
        store: { path: `${dir}-store` },
      }),
    });
    // Swap in a notifier whose backoff is recorded rather than slept.
    const notifier = new WebhookNotifier({ urlFor: (team) => t.config.approvals.webhooks[team], logger: silentLogger, sleep: async (ms) => void delays.push(ms) });
    (t.service as unknown as { notifier: WebhookNotifier }).notifier = notifier;
    try {
      const response = t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.agent), payload: { command: 'make deploy' } });
      for (let i = 0; i < 200 && t.service.approvals.pendingCount() === 0; i++) await new Promise((r) => setTimeout(r, 5));
      const [approval] = t.service.approvals.list(null, 'pending');
      expect(approval).toBeDefined();
      await notifier.idle();
      expect(received).toHaveLength(3);
      expect(received[0]!.body).toMatchObject({ type: 'approval_created', team: 'data', approval: { id: approval!.id, command: 'make deploy', status: 'pending' } });
      expect(delays).toEqual([1000, 2000]);
      await t.app.inject({ method: 'POST', url: `/v1/approvals/${approval!.id}/reject`, headers: auth(TOKENS.agent), payload: {} });
      await response;
    } finally {
      await t.close();
      server.close();
    }
  });

  it('gives up after the last attempt and logs, never throwing', async () => {
    const calls: string[] = [];
    const n = new WebhookNotifier({
      urlFor: () => 'http://127.0.0.1:9/nowhere',
      logger: silentLogger,
      attempts: 3,
      sleep: async () => undefined,
      fetch: (async (url: string) => {
        calls.push(url);
        throw new Error('connection refused');
      }) as unknown as typeof fetch,
    });
    n.notify('data', { type: 'approval_created' });
    await n.idle();
    expect(calls).toHaveLength(3);
  });

  it('teams without a webhook send nothing', async () => {
    let called = false;
    const n = new WebhookNotifier({ urlFor: () => undefined, logger: silentLogger, fetch: (async () => ((called = true), new Response())) as unknown as typeof fetch });
    n.notify('data', {});
    await n.idle();
    expect(called).toBe(false);
  });
});
