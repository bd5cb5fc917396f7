import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { SandboxSettings, TeamConfig } from '../config/load.js';
import type { SessionHandle } from '../runner/session.js';
import type { Runner } from '../runner/types.js';
import type { Clock } from '../approvals/queue.js';
import { ServiceError } from './errors.js';

export interface SessionLimits {
  image?: string | undefined;
  memoryMb?: number | undefined;
  cpus?: number | undefined;
  pidsLimit?: number | undefined;
  idleTimeoutMs?: number | undefined;
  maxLifetimeMs?: number | undefined;
}

export interface Session {
  id: string;
  team: string;
  createdBy: string;
  createdAt: number;
  lastUsedAt: number;
  expiresAt: number;
  idleTimeoutMs: number;
  sandbox: SandboxSettings;
  handle: SessionHandle;
  commands: number;
  busy: boolean;
  status: 'open' | 'ended';
  endedReason?: string | undefined;
  /** What the container was created with (see fixedSettings). */
  fixed: string;
}

/** The team settings a session's container cannot change after creation. */
function fixedSettings(team: TeamConfig): string {
  const s = team.sandbox;
  return JSON.stringify([team.policy.allowedPaths, s.user, s.runtime, s.network, team.files.scratchMb]);
}

export type SessionEvent = { type: 'session_started' | 'session_ended'; session: Record<string, unknown> };

/**
 * Sessions: sandboxes that live across commands, one team each. Ended by DELETE, by an idle time-out, by
 * their maximum lifetime, or when their container dies; ending removes the container (and its /scratch).
 * Timers use the injected clock's idea of now but real time-outs (setTimeout), re-armed after each command.
 */
export class SessionManager {
  private readonly sessions = new Map<string, Session>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Sessions being created, per team: they count against maxSessions before their container exists. */
  private readonly creating = new Map<string, number>();

  constructor(
    private readonly deps: {
      runner: Runner;
      clock: Clock;
      logger: Logger;
      publish: (team: string, e: SessionEvent) => void;
    },
  ) {}

  /** The settings a session runs with: the team's, lowered (never raised) by the request. */
  static settingsFor(team: TeamConfig, req: SessionLimits): { sandbox: SandboxSettings; idleTimeoutMs: number; lifetimeMs: number } {
    const s = team.sandbox;
    const problems: { path: string; message: string }[] = [];
    const within = (field: keyof SessionLimits, asked: number | undefined, max: number): number => {
      if (asked === undefined) return max;
      if (asked > max) problems.push({ path: field, message: `at most ${max} for team "${team.name}"` });
      return Math.min(asked, max);
    };
    const allowedImages = [s.image, ...team.sessions.allowedImages];
    if (req.image !== undefined && !allowedImages.includes(req.image)) {
      problems.push({ path: 'image', message: `team "${team.name}" may use ${allowedImages.map((i) => `"${i}"`).join(', ')}` });
    }
    const sandbox: SandboxSettings = {
      ...s,
      image: req.image ?? s.image,
      memoryMb: within('memoryMb', req.memoryMb, s.memoryMb),
      cpus: within('cpus', req.cpus, s.cpus),
      pidsLimit: within('pidsLimit', req.pidsLimit, s.pidsLimit),
    };
    const idleTimeoutMs = within('idleTimeoutMs', req.idleTimeoutMs, team.sessions.idleTimeoutMs);
    const lifetimeMs = within('maxLifetimeMs', req.maxLifetimeMs, team.sessions.maxLifetimeMs);
    if (problems.length > 0) {
      throw new ServiceError('invalid_request', problems.map((p) => `${p.path}: ${p.message}`).join('; '), { fields: problems });
    }
    return { sandbox, idleTimeoutMs, lifetimeMs };
  }

  async create(team: TeamConfig, by: string, req: SessionLimits): Promise<Session> {
    if (!this.deps.runner.openSession) throw new ServiceError('not_ready', 'this runner has no sessions');
    for (const s of [...this.sessions.values()]) if (!s.handle.alive) void this.end(s, 'container_gone');
    const open = [...this.sessions.values()].filter((x) => x.team === team.name && x.status === 'open').length + (this.creating.get(team.name) ?? 0);
    if (open >= team.sessions.maxSessions) {
      throw new ServiceError('session_limit', `team "${team.name}" already has ${open} open sessions (at most ${team.sessions.maxSessions})`);
    }
    const { sandbox, idleTimeoutMs, lifetimeMs } = SessionManager.settingsFor(team, req);
    const id = `ses_${randomUUID()}`;
    this.creating.set(team.name, (this.creating.get(team.name) ?? 0) + 1);
    let handle: SessionHandle;
    try {
      handle = await this.deps.runner.openSession({ sessionId: id, team: team.name, mounts: team.policy.allowedPaths, sandbox, scratchMb: team.files.scratchMb, lifetimeMs });
    } finally {
      this.creating.set(team.name, (this.creating.get(team.name) ?? 1) - 1);
    }
    const now = this.deps.clock.now();
    const session: Session = { id, team: team.name, createdBy: by, createdAt: now, lastUsedAt: now, expiresAt: now + lifetimeMs, idleTimeoutMs, sandbox, handle, commands: 0, busy: false, status: 'open', fixed: fixedSettings(team) };
    this.sessions.set(id, session);
    this.arm(session);
    this.deps.logger.info({ sessionId: id, team: team.name, by, containerId: handle.containerId }, 'session started');
    this.deps.publish(team.name, { type: 'session_started', session: sessionView(session) });
    return session;
  }

  /** A session the caller's team owns (admins: any). Another team's session is 404, as if it did not exist. */
  get(visibleTeam: string | null, id: string): Session {
    const s = this.sessions.get(id);
    if (!s || (visibleTeam !== null && s.team !== visibleTeam) || s.status !== 'open') throw new ServiceError('session_not_found', `no session ${id}`);
    if (!s.handle.alive) {
      void this.end(s, 'container_gone');
      throw new ServiceError('session_not_found', `session ${id} has ended (its container stopped)`);
    }
    return s;
  }

  list(visibleTeam: string | null): Session[] {
    return [...this.sessions.values()].filter((s) => s.status === 'open' && (visibleTeam === null || s.team === visibleTeam));
  }

  /** Marks the session busy for one command (409 when it already is); the idle clock stops meanwhile. */
  begin(s: Session, current: TeamConfig): () => void {
    if (s.busy) throw new ServiceError('session_busy', `session ${s.id} is running another command`);
    // Mounts, user and runtime were fixed when the container was made: after a reload that changed them the
    // session would run new commands with old settings, so it ends instead.
    if (fixedSettings(current) !== s.fixed) {
      void this.end(s, 'config_changed');
      throw new ServiceError('session_ended', `session ${s.id} has ended: the team's allowed paths or sandbox settings changed`);
    }
    s.busy = true;
    s.commands++;
    this.arm(s); // while busy only the lifetime counts
    return () => {
      s.busy = false;
      s.lastUsedAt = this.deps.clock.now();
      if (s.status === 'open') this.arm(s);
    };
  }

  private disarmIdle(s: Session): void {
    clearTimeout(this.timers.get(s.id));
    this.timers.delete(s.id);
  }

  /** One timer: whichever comes first of idle expiry (when not busy) and the maximum lifetime. */
  private arm(s: Session): void {
    this.disarmIdle(s);
    const now = this.deps.clock.now();
    const lifetimeLeft = s.expiresAt - now;
    const idleLeft = s.busy ? Infinity : s.lastUsedAt + s.idleTimeoutMs - now;
    const left = Math.max(0, Math.min(lifetimeLeft, idleLeft));
    const reason = lifetimeLeft <= idleLeft ? 'lifetime' : 'idle';
    const t = setTimeout(() => void this.end(s, reason), left);
    t.unref();
    this.timers.set(s.id, t);
  }

  async end(s: Session, reason: string): Promise<void> {
    if (s.status === 'ended') return;
    s.status = 'ended';
    s.endedReason = reason;
    this.disarmIdle(s);
    this.sessions.delete(s.id);
    this.deps.logger.info({ sessionId: s.id, team: s.team, reason, commands: s.commands }, 'session ended');
    this.deps.publish(s.team, { type: 'session_ended', session: sessionView(s) });
    await s.handle.close();
  }

  async closeAll(reason = 'shutdown'): Promise<void> {
    await Promise.all([...this.sessions.values()].map((s) => this.end(s, reason)));
  }
}

export function sessionView(s: Session): Record<string, unknown> {
  return {
    id: s.id,
    team: s.team,
    status: s.status,
    createdBy: s.createdBy,
    createdAt: new Date(s.createdAt).toISOString(),
    lastUsedAt: new Date(s.lastUsedAt).toISOString(),
    expiresAt: new Date(s.expiresAt).toISOString(),
    idleTimeoutMs: s.idleTimeoutMs,
    containerId: s.handle.containerId,
    image: s.sandbox.image,
    limits: { memoryMb: s.sandbox.memoryMb, cpus: s.sandbox.cpus, pidsLimit: s.sandbox.pidsLimit },
    commands: s.commands,
    busy: s.busy,
    endedReason: s.endedReason,
  };
}
