import type { Logger } from 'pino';

export interface NotifierOptions {
  /** Webhook URL for a team, or undefined when that team has none. */
  urlFor: (team: string) => string | undefined;
  logger: Logger;
  attempts?: number;
  baseDelayMs?: number;
  timeoutMs?: number;
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Posts approval notifications to a team's webhook (a chat bot, say). Delivery never blocks a request:
 * each notification is sent in the background, retried with exponential backoff, and failures are logged.
 */
export class WebhookNotifier {
  private readonly inflight = new Set<Promise<void>>();

  constructor(private readonly opts: NotifierOptions) {}

  notify(team: string, payload: Record<string, unknown>): void {
    const url = this.opts.urlFor(team);
    if (!url) return;
    const p = this.deliver(url, team, payload).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  private async deliver(url: string, team: string, payload: Record<string, unknown>): Promise<void> {
    const attempts = this.opts.attempts ?? 5;
    const base = this.opts.baseDelayMs ?? 1000;
    const doFetch = this.opts.fetch ?? fetch;
    const sleep = this.opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref()));
    const body = JSON.stringify(payload);
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        const res = await doFetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'execgate-webhook/1' },
          body,
          signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5000),
        });
        if (res.ok) return;
        throw new Error(`HTTP ${res.status}`);
      } catch (err) {
        const last = attempt === attempts;
        this.opts.logger[last ? 'error' : 'warn']({ team, attempt, err: (err as Error).message }, last ? 'webhook delivery failed; giving up' : 'webhook delivery failed; retrying');
        if (!last) await sleep(base * 2 ** (attempt - 1));
      }
    }
  }

  /** Waits for deliveries under way (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }
}
