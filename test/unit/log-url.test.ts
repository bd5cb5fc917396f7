import { describe, expect, it } from 'vitest';
import { logSerializers, redactUrl } from '../../src/http/log.js';

describe('request URLs in the log', () => {
  it.each([
    ['/v1/executions', '/v1/executions'],
    ['/v1/executions?limit=5&team=data', '/v1/executions?limit=5&team=data'],
    ['/v1/approvals?status=pending', '/v1/approvals?status=pending'],
    // Promise: a token put in the URL never reaches the log.
    ['/v1/events?token=sk-secret-123', '/v1/events?[redacted]'],
    ['/v1/executions?limit=5&access_token=abc&team=data', '/v1/executions?limit=5&[redacted]&team=data'],
    ['/v1/executions?sk-secret-as-a-name', '/v1/executions?[redacted]'],
    ['/v1/executions?%74oken=x', '/v1/executions?[redacted]'],
    ['/v1/executions?%E0%A4%A=x', '/v1/executions?[redacted]'],
    ['/v1/executions?', '/v1/executions?[redacted]'],
  ])('%s → %s', (url, logged) => {
    expect(redactUrl(url)).toBe(logged);
  });

  it('the req serializer keeps Fastify\'s fields, with the URL redacted', () => {
    expect(logSerializers.req({ method: 'GET', url: '/v1/events?token=t0k3n-value', host: 'localhost:8787', ip: '127.0.0.1', socket: { remotePort: 5555 } })).toEqual({
      method: 'GET',
      url: '/v1/events?[redacted]',
      host: 'localhost:8787',
      remoteAddress: '127.0.0.1',
      remotePort: 5555,
    });
  });
});
