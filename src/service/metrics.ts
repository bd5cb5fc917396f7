import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of the service (served as text at GET /metrics). */
export interface MetricSources {
  approvalsPending(): Record<string, number>;
  queueDepth(): Record<string, number>;
  poolIdle(): Record<string, number>;
  poolBreakerOpen(): boolean;
  /** Teams with a warm pool: their run counters are shown from the start, at zero. */
  pooledTeams(): string[];
}

const POOL_OUTCOMES = ['hit', 'miss', 'bypass'] as const;

export class Metrics {
  readonly registry = new Registry();
  /** Read at scrape time by the gauges below. */
  sources: MetricSources = { approvalsPending: () => ({}), queueDepth: () => ({}), poolIdle: () => ({}), poolBreakerOpen: () => false, pooledTeams: () => [] };
  readonly executions = new Counter({ name: 'execgate_executions_total', help: 'Executions by team, decision and final status', labelNames: ['team', 'decision', 'status'], registers: [this.registry] });
  readonly duration = new Histogram({
    name: 'execgate_execution_duration_seconds',
    help: 'Sandbox run time of finished executions',
    labelNames: ['team'],
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly dockerErrors = new Counter({ name: 'execgate_docker_errors_total', help: 'Runs that failed because of the Docker engine', labelNames: ['team', 'code'], registers: [this.registry] });
  readonly approvalsPending: Gauge<'team'> = gaugeFrom(this, 'execgate_approvals_pending', 'Approvals waiting for a human', () => this.sources.approvalsPending());
  readonly containersRunning = new Gauge({ name: 'execgate_containers_running', help: 'Sandboxes running a command now', labelNames: ['team'], registers: [this.registry] });
  readonly queueDepth: Gauge<'team'> = gaugeFrom(this, 'execgate_queue_depth', 'Executions waiting for a quota slot', () => this.sources.queueDepth());
  readonly poolIdle: Gauge<'team'> = gaugeFrom(this, 'execgate_pool_idle', 'Warm containers waiting for a command', () => this.sources.poolIdle());
  readonly poolRuns: Counter<'team' | 'result'> = new Counter({
    name: 'execgate_pool_runs_total',
    help: 'One-shot runs of teams with a warm pool, by how they got their container: hit (a warm one), miss (none was waiting, or Docker failed first: cold path), bypass (files, or a command and env of 32 KiB or more: cold path)',
    labelNames: ['team', 'result'],
    registers: [this.registry],
    collect: (): void => {
      for (const team of this.sources.pooledTeams()) for (const result of POOL_OUTCOMES) this.poolRuns.inc({ team, result }, 0);
    },
  });
  readonly poolBreakerOpen: Gauge = new Gauge({
    name: 'execgate_pool_breaker_open',
    help: "1 while Docker failures hold the warm pool's circuit breaker open: nothing refills, and once the idle containers are used runs take the cold path",
    registers: [this.registry],
    collect: (): void => this.poolBreakerOpen.set(this.sources.poolBreakerOpen() ? 1 : 0),
  });
  readonly rejectedByQuota = new Counter({ name: 'execgate_quota_rejections_total', help: 'Requests refused with 429', labelNames: ['team'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'execgate_process_' });
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function gaugeFrom(m: Metrics, name: string, help: string, read: () => Record<string, number>): Gauge<'team'> {
  return new Gauge({
    name,
    help,
    labelNames: ['team'],
    registers: [m.registry],
    collect() {
      this.reset();
      for (const [team, n] of Object.entries(read())) this.set({ team }, n);
    },
  });
}
