import { timingSafeEqual } from 'node:crypto';
import type { AppConfig, AuthToken } from '../config/load.js';
import { DEFAULT_TEAM, isLoopback, sha256 } from '../config/load.js';
import type { Role } from '../config/schema.js';
import { ServiceError } from '../service/errors.js';
import type { Caller } from '../service/exec-service.js';

export interface AuthedCaller extends Caller {
  roles: ReadonlySet<Role>;
  admin: boolean;
}

const ANONYMOUS_ADMIN: Omit<AuthedCaller, 'team'> = { visibleTeam: null, name: 'anonymous', roles: new Set<Role>(['admin']), admin: true };

/**
 * Finds the token by comparing sha256 digests in constant time against every configured token (no early
 * exit), so neither the token nor which one matched leaks through timing.
 */
export function findToken(tokens: readonly AuthToken[], presented: string): AuthToken | undefined {
  const digest = sha256(presented);
  let found: AuthToken | undefined;
  for (const t of tokens) if (timingSafeEqual(t.digest, digest) && !found) found = t;
  return found;
}

export function authenticate(config: AppConfig, authorization: string | undefined, teamHeader: string | undefined): AuthedCaller {
  if (!config.gateway.auth.enabled) return { ...ANONYMOUS_ADMIN, team: actingTeam(config, DEFAULT_TEAM, teamHeader, true) };
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  if (!m) throw new ServiceError('unauthorized', 'missing bearer token (Authorization: Bearer TOKEN)');
  const token = findToken(config.gateway.auth.tokens, m[1]!);
  if (!token) throw new ServiceError('unauthorized', 'invalid token');
  const admin = token.roles.has('admin');
  return { team: actingTeam(config, token.team, teamHeader, admin), visibleTeam: admin ? null : token.team, name: token.name, roles: token.roles, admin };
}

/** Admins may act for any team with `X-Execgate-Team`; everyone else acts for their own. */
function actingTeam(config: AppConfig, own: string, header: string | undefined, admin: boolean): string {
  if (header === undefined || header === '' || header === own) return own;
  if (!admin) throw new ServiceError('forbidden', 'only admin tokens may act for another team (X-Execgate-Team)');
  if (!Object.hasOwn(config.teams, header)) throw new ServiceError('team_not_found', `team "${header}" is not configured`);
  return header;
}

export function requireRole(caller: AuthedCaller, role: Role): void {
  if (caller.admin || caller.roles.has(role)) return;
  throw new ServiceError('forbidden', `this token lacks the "${role}" role`);
}

/** The host name of a Host header or an Origin URL, without port or IPv6 brackets; null when unparsable. */
function hostnameOf(value: string, isOrigin: boolean): string | null {
  try {
    const u = new URL(isOrigin ? value : `http://${value}`);
    return u.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  } catch {
    return null;
  }
}

/**
 * With auth disabled (loopback only), anything that reaches the port is the admin, so a web page could use
 * DNS rebinding (its own name resolving to 127.0.0.1) to drive /v1 and /mcp from the user's browser. The
 * Host must then name a loopback address (or the configured host), and an Origin, when sent, too.
 */
export function checkLoopbackRequest(config: AppConfig, host: string | undefined, origin: string | undefined): void {
  if (config.gateway.auth.enabled) return;
  const allowed = (name: string | null) => name !== null && (isLoopback(name) || name === config.gateway.host.toLowerCase());
  if (!allowed(hostnameOf(host ?? '', false))) {
    throw new ServiceError('forbidden', `Host "${host ?? ''}" is not a loopback name; with auth disabled only loopback requests are served`);
  }
  if (origin !== undefined && (origin === 'null' || !allowed(hostnameOf(origin, true)))) {
    throw new ServiceError('forbidden', `Origin "${origin}" is not a loopback origin; with auth disabled only loopback requests are served`);
  }
}
