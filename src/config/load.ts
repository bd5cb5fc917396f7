import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { extname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import type { AllowedPath, ExecPolicy, PolicyRule } from '../policy/types.js';
import { dangerousEnvName } from '../service/env.js';
import { MAX_SECRET_NAME_LENGTH, MIN_SECRET_LENGTH } from '../service/redact.js';
import {
  BUILTIN_AGENT_DEFAULTS,
  ConfigFileSchema,
  ResolvedAgentSettingsSchema,
  type ConfigFile,
  type ResolvedAgentSettings,
  type Role,
  type SandboxEnvEntry,
} from './schema.js';

export class ConfigError extends Error {
  readonly code = 'EXECGATE_CONFIG';
  constructor(
    readonly problems: string[],
    /** With `offline`: what could not be checked here (shown with the problems). */
    readonly warnings: string[] = [],
  ) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

export interface SandboxSettings {
  image: string;
  runtime: string;
  network: string;
  memoryMb: number;
  cpus: number;
  pidsLimit: number;
  tmpfsMb: number;
  timeoutMs: number;
  maxOutputBytes: number;
  /**
   * MB one execution may add to the disk of its read-write allowed paths (runner/write-quota.ts). Always set by
   * the config; settings built by hand without it get the built-in 1024.
   */
  writeQuotaMb?: number | undefined;
  /** Resolved "uid:gid", never root. */
  user: string;
  pool: { size: number; maxIdleMs: number };
}

export interface RuleExample {
  name: string;
  pattern: RegExp;
  match?: string[] | undefined;
  notMatch?: string[] | undefined;
}

export interface QuotaSettings {
  maxConcurrent: number;
  maxQueued: number;
  cpuSecondsPerHour: number | null;
}

export interface FilesSettings {
  scratchMb: number;
  maxInputBytes: number;
  maxEntries: number;
  maxArtifactBytes: number;
  artifactTtlMs: number;
  maxArtifactStoreMb: number;
}

export interface SessionSettings {
  maxSessions: number;
  idleTimeoutMs: number;
  maxLifetimeMs: number;
  allowedImages: string[];
}

/** A variable of `sandbox.env`, resolved (fromEnv read) at load. */
export interface TeamEnvVar {
  value: string;
  /** Never shown, logged or stored; redacted from command output. */
  secret: boolean;
}

export interface TeamConfig {
  name: string;
  /** Set in every sandbox of the team; a request may not set these names. */
  env: Record<string, TeamEnvVar>;
  quota: QuotaSettings;
  files: FilesSettings;
  sessions: SessionSettings;
  policy: ExecPolicy;
  sandbox: SandboxSettings;
  ruleExamples: RuleExample[];
}

export interface AuthToken {
  /** sha256 of the token; tokens are compared by digest in constant time. */
  digest: Buffer;
  /** The team the token acts for; admin tokens may act for and see every team. */
  team: string;
  roles: ReadonlySet<Role>;
  name: string;
}

export interface AppConfig {
  source: string;
  gateway: {
    host: string;
    port: number;
    bodyLimitBytes: number;
    trustProxy: boolean;
    /** SIGTERM: how long running executions may take before they are stopped. */
    drainTimeoutMs: number;
    nice: number;
    auth: { enabled: boolean; tokens: AuthToken[] };
  };
  teams: Record<string, TeamConfig>;
  approvals: { timeoutMs: number; webhookUrl?: string | undefined; webhooks: Record<string, string> };
  store: { path: string; history: { maxAgeMs?: number | undefined; maxPerTeam: number } };
  reaper: { intervalMs: number };
  /** Set when the embedded default generated a token: printed once at start-up. */
  generatedToken?: string;
  /** Loaded with `offline`: what could not be checked on this machine. */
  warnings?: string[];
}

export const DEFAULT_TEAM = 'default';

export interface LoadOptions {
  /** Directory relative paths in the file are resolved against (the file's directory, or the cwd). */
  baseDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Checks rules' examples (needs the policy engine); returns problems. */
  checkRuleExamples?: (rules: RuleExample[]) => string[];
  /**
   * Checking a file away from where it runs (`config check --offline`, `policy test`): an allowed path missing
   * on this machine is taken as written and an `env:` token whose variable is unset matches nothing; both are
   * reported in `warnings` instead of refusing the file. Never used by `serve`.
   */
  offline?: boolean;
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function formatZodIssues(error: z.ZodError, prefix = ''): string[] {
  return error.issues.map((issue) => {
    const path = [prefix, ...issue.path.map(String)].filter(Boolean).join('.');
    return `${path || '(root)'}: ${issue.message}`;
  });
}

/** Deep merge of plain objects; arrays and scalars of `over` replace those of `base`. */
export function mergeSettings<T>(base: T, over: unknown): T {
  if (over === undefined) return base;
  if (!isPlainObject(base) || !isPlainObject(over)) return over as T;
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    out[key] = mergeSettings((base as Record<string, unknown>)[key], value);
  }
  return out as T;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
  }
  try {
    return extname(path) === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError([`${path}: not valid ${extname(path) === '.json' ? 'JSON' : 'YAML/JSON'}: ${(err as Error).message}`]);
  }
}

export function loadConfigFile(path: string, options: Omit<LoadOptions, 'baseDir'> = {}): AppConfig {
  const abs = resolve(path);
  const raw = readConfigFile(abs);
  return resolveConfig(raw ?? {}, { ...options, baseDir: resolve(abs, '..') }, abs);
}

/** The configuration used when no file is given (SPEC §1). */
export function embeddedDefaultConfig(options: LoadOptions & { cwd: string }): AppConfig {
  const token = randomBytes(24).toString('base64url');
  const env = options.env ?? process.env;
  // Not ./execgate-data: the current directory is the allowed path, and the store must stay out of reach of
  // the sandbox. One store per project directory, under the user's state directory.
  const stateHome = env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  const storePath = join(stateHome, 'execgate', createHash('sha256').update(options.cwd).digest('hex').slice(0, 12));
  const raw = {
    gateway: { host: '127.0.0.1', port: 8787, auth: { enabled: true, token } },
    agents: { defaults: { toolPolicies: { exec: { allowedPaths: [options.cwd] } } } },
    store: { path: storePath },
  };
  const config = resolveConfig(raw, { ...options, baseDir: options.cwd }, '(embedded default)');
  config.generatedToken = token;
  return config;
}

export function resolveConfig(raw: unknown, options: LoadOptions, source: string): AppConfig {
  const env = options.env ?? process.env;
  const baseDir = options.baseDir ?? process.cwd();
  const parsed = ConfigFileSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatZodIssues(parsed.error));
  const file: ConfigFile = parsed.data;
  const problems: string[] = [];
  const offline = options.offline ? ([] as string[]) : undefined;

  const teamNames = [DEFAULT_TEAM, ...Object.keys(file.agents.teams).filter((t) => t !== DEFAULT_TEAM)];
  const teams: Record<string, TeamConfig> = {};
  for (const name of teamNames) {
    const prefix = name === DEFAULT_TEAM && !file.agents.teams[DEFAULT_TEAM] ? 'agents.defaults' : `agents.teams.${name}`;
    let merged = mergeSettings<unknown>(structuredClone(BUILTIN_AGENT_DEFAULTS), file.agents.defaults);
    merged = mergeSettings(merged, file.agents.teams[name]);
    // sandbox.env merges variable by variable: a team's entry replaces the default's whole (a deep merge
    // would mix a default's fromEnv with a team's value).
    const envEntries = teamEnvEntries(file, name, prefix);
    if (isPlainObject(merged) && isPlainObject(merged.sandbox)) delete merged.sandbox.env;
    const settings = ResolvedAgentSettingsSchema.safeParse(merged);
    if (!settings.success) {
      problems.push(...formatZodIssues(settings.error, prefix));
      continue;
    }
    const teamEnv = resolveTeamEnv(envEntries, env, problems, offline);
    const team = resolveTeam(name, settings.data, baseDir, prefix, problems, offline);
    // With a problem in env the file is refused below; the team still counts as defined for the checks after.
    if (team) teams[name] = { ...team, env: teamEnv ?? {} };
  }

  const tokens = resolveTokens(file, env, problems, offline);
  const auth = { enabled: file.gateway.auth.enabled, tokens };
  if (auth.enabled && tokens.length === 0) {
    problems.push('gateway.auth: auth is enabled but no token is configured (set gateway.auth.token or gateway.auth.tokens)');
  }
  if (!auth.enabled && !isLoopback(file.gateway.host)) {
    problems.push(`gateway.host: "${file.gateway.host}" is not a loopback address; refusing to listen there with gateway.auth.enabled false`);
  }
  for (const t of file.gateway.auth.tokens) {
    if (t.team && !teams[t.team] && !problems.some((p) => p.startsWith(`agents.teams.${t.team}`))) {
      problems.push(`gateway.auth.tokens: team "${t.team}" is not defined under agents.teams`);
    }
  }

  // The store holds history, remembered allow rules and the audit chain: a sandbox that could write it could
  // approve itself. So it may not lie inside (or contain) any allowed path.
  const storePath = resolve(baseDir, file.store.path);
  const storeReal = realpathOrSelf(storePath);
  for (const team of Object.values(teams)) {
    for (const p of team.policy.allowedPaths) {
      if (isWithin(storeReal, p.path) || isWithin(p.path, storeReal)) {
        problems.push(`store.path: "${storePath}" overlaps the allowed path "${p.path}" of team "${team.name}"; a sandbox could edit its own history and remembered rules`);
      }
    }
  }
  // A sandbox can replace anything inside a read-write allowed path with a symlink, and the engine follows
  // symlinks in bind-mount sources: so no allowed path (of any team) may lie strictly inside a read-write one,
  // or the next mount of the inner path could be the host's /.
  const all = Object.values(teams).flatMap((t) => t.policy.allowedPaths.map((p) => ({ team: t.name, ...p })));
  for (const outer of all) {
    if (outer.readOnly) continue;
    for (const inner of all) {
      if (inner.path !== outer.path && isWithin(inner.path, outer.path)) {
        problems.push(`agents.teams.${inner.team}.toolPolicies.exec.allowedPaths: "${inner.path}" lies inside the read-write allowed path "${outer.path}" of team "${outer.team}"; a sandbox could swap it for a symlink to /`);
      }
    }
  }
  // Teams never share a network: a named network belongs to one team.
  const networkOwner = new Map<string, string>();
  for (const team of Object.values(teams)) {
    const n = team.sandbox.network;
    if (n === 'none' || n === 'team') continue;
    const other = networkOwner.get(n);
    if (other) problems.push(`agents.teams.${team.name}.sandbox.network: network "${n}" is already used by team "${other}"; teams never share a network (use "team")`);
    networkOwner.set(n, team.name);
  }

  if (options.checkRuleExamples) {
    for (const team of Object.values(teams)) problems.push(...options.checkRuleExamples(team.ruleExamples).map((p) => `agents.teams.${team.name}: ${p}`));
  }
  // A variable of agents.defaults is resolved once per team: the same problem is named once.
  if (problems.length > 0) throw new ConfigError([...new Set(problems)], offline && [...new Set(offline)]);

  return {
    ...(offline ? { warnings: [...new Set(offline)] } : {}),
    source,
    gateway: { host: file.gateway.host, port: file.gateway.port, bodyLimitBytes: file.gateway.bodyLimitBytes, trustProxy: file.gateway.trustProxy, drainTimeoutMs: file.gateway.drainTimeoutMs, nice: file.gateway.nice, auth },
    teams,
    approvals: { timeoutMs: file.approvals.timeoutMs, webhookUrl: file.approvals.webhookUrl, webhooks: file.approvals.webhooks },
    store: {
      path: storePath,
      history: { maxAgeMs: file.store.history.maxAgeDays !== undefined ? file.store.history.maxAgeDays * 86_400_000 : undefined, maxPerTeam: file.store.history.maxPerTeam },
    },
    reaper: file.reaper,
  };
}

/** The team's sandbox.env entries over those of agents.defaults, each with the key it was written under. */
function teamEnvEntries(file: ConfigFile, team: string, prefix: string): Map<string, { entry: SandboxEnvEntry; where: string }> {
  const out = new Map<string, { entry: SandboxEnvEntry; where: string }>();
  for (const [n, entry] of Object.entries(file.agents.defaults.sandbox?.env ?? {})) out.set(n, { entry, where: `agents.defaults.sandbox.env.${n}` });
  if (prefix !== 'agents.defaults') for (const [n, entry] of Object.entries(file.agents.teams[team]?.sandbox?.env ?? {})) out.set(n, { entry, where: `${prefix}.sandbox.env.${n}` });
  return out;
}

/**
 * Resolves sandbox.env: names checked as a request's are, `fromEnv` read from the service's environment now,
 * and secret values long enough to be redacted from output without matching ordinary text. Undefined when a
 * problem was found.
 */
function resolveTeamEnv(
  entries: Map<string, { entry: SandboxEnvEntry; where: string }>,
  env: NodeJS.ProcessEnv,
  problems: string[],
  offline: string[] | undefined,
): Record<string, TeamEnvVar> | undefined {
  const before = problems.length;
  const out: Record<string, TeamEnvVar> = {};
  for (const [name, { entry, where }] of entries) {
    if (entry === null) continue;
    const why = dangerousEnvName(name);
    if (why) {
      problems.push(`${where}: ${why}`);
      continue;
    }
    let value: string;
    let secret: boolean;
    if (typeof entry === 'string') {
      value = entry;
      secret = false;
    } else if (entry.fromEnv !== undefined) {
      secret = entry.secret ?? true;
      const v = env[entry.fromEnv];
      if (v === undefined) {
        if (offline) offline.push(`${where}: environment variable ${entry.fromEnv} is not set here; the variable is left out`);
        else problems.push(`${where}: environment variable ${entry.fromEnv} is not set`);
        continue;
      }
      value = v;
    } else {
      value = entry.value ?? '';
      secret = entry.secret ?? false;
    }
    // Never the value itself in a problem: it may be the secret.
    if (value.includes('\0')) problems.push(`${where}: the value must not contain NUL`);
    if (secret && value.length < MIN_SECRET_LENGTH) problems.push(`${where}: a secret value must be at least ${MIN_SECRET_LENGTH} characters (a shorter one cannot be redacted from output safely)`);
    if (secret && name.length > MAX_SECRET_NAME_LENGTH) problems.push(`${where}: a secret variable's name is at most ${MAX_SECRET_NAME_LENGTH} characters (it is shown in every redaction marker)`);
    out[name] = { value, secret };
  }
  return problems.length > before ? undefined : out;
}

function resolveTeam(name: string, s: ResolvedAgentSettings, baseDir: string, prefix: string, problems: string[], offline: string[] | undefined): Omit<TeamConfig, 'env'> | undefined {
  const exec = s.toolPolicies.exec;
  const before = problems.length;
  const allowedPaths: AllowedPath[] = [];
  exec.allowedPaths.forEach((entry, i) => {
    const given = typeof entry === 'string' ? entry : entry.path;
    const readOnly = typeof entry === 'string' ? false : entry.readOnly;
    const where = `${prefix}.toolPolicies.exec.allowedPaths.${i}`;
    const abs = isAbsolute(given) ? given : resolve(baseDir, given);
    let real: string;
    try {
      // Resolved once, here: the policy and the mounts use the real path, so a symlink swapped later cannot
      // redirect a mount, and the path the agent knows is the one mounted.
      real = realpathSync(abs);
    } catch {
      if (offline) {
        offline.push(`${where}: "${given}" does not exist on this machine; taken as written`);
        allowedPaths.push({ path: resolve(abs), readOnly });
        return;
      }
      problems.push(`${where}: "${given}" does not exist`);
      return;
    }
    if (!statSync(real).isDirectory()) {
      problems.push(`${where}: "${given}" is not a directory`);
      return;
    }
    if (real === '/') {
      problems.push(`${where}: the host root "/" cannot be an allowed path`);
      return;
    }
    // Inside the sandbox /scratch is the per-run files directory: an allowed path there would clash with it.
    if (real === '/scratch' || real.startsWith('/scratch/') || '/scratch'.startsWith(`${real}/`)) {
      problems.push(`${where}: "${real}" overlaps /scratch, where the sandbox gets its files; choose another directory`);
      return;
    }
    allowedPaths.push({ path: real, readOnly });
  });

  const rules: PolicyRule[] = exec.rules.map((r) => ({ name: r.name, pattern: new RegExp(r.pattern), action: r.action, enabled: r.enabled, source: 'config' as const }));
  const ruleExamples: RuleExample[] = exec.rules
    .filter((r) => r.match || r.notMatch)
    .map((r) => ({ name: r.name, pattern: new RegExp(r.pattern), match: r.match, notMatch: r.notMatch }));

  const user = resolveUser(s.sandbox.user, allowedPaths[0]?.path, `${prefix}.sandbox.user`, problems);
  if (problems.length > before) return undefined;
  return {
    name,
    quota: s.quota,
    files: s.files,
    sessions: s.sessions,
    policy: {
      securityMode: s.security.mode,
      toolMode: exec.mode,
      blockedPatterns: exec.blockedPatterns,
      allowedPaths,
      rules,
      noMatch: exec.noMatch,
      onDeny: exec.onDeny,
    },
    sandbox: { ...sandboxSettings(s.sandbox), user: user ?? '1000:1000' },
    ruleExamples,
  };
}

/** The runner's settings: env is the team's (TeamConfig.env), never part of what is handed to Docker code as settings. */
function sandboxSettings(s: ResolvedAgentSettings['sandbox']): Omit<ResolvedAgentSettings['sandbox'], 'env'> {
  const { env: _env, ...rest } = s;
  return rest;
}

/** SPEC §4: the owner of the first allowed path when that owner is not root, else 1000:1000; never root. */
function resolveUser(setting: string, firstPath: string | undefined, where: string, problems: string[]): string | undefined {
  if (setting !== 'auto') {
    const [uid, gid = uid] = setting.split(':').map(Number) as [number, number?];
    if (uid === 0 || gid === 0) {
      problems.push(`${where}: the sandbox never runs as root (uid or gid 0)`);
      return undefined;
    }
    return `${uid}:${gid}`;
  }
  if (!firstPath || !existsSync(firstPath)) return '1000:1000'; // missing: only when checking offline
  const st = statSync(firstPath);
  return st.uid !== 0 && st.gid !== 0 ? `${st.uid}:${st.gid}` : st.uid !== 0 ? `${st.uid}:${st.uid}` : '1000:1000';
}

function resolveTokens(file: ConfigFile, env: NodeJS.ProcessEnv, problems: string[], offline: string[] | undefined): AuthToken[] {
  const out: AuthToken[] = [];
  const add = (value: string, where: string, team: string | undefined, roles: Role[], name: string | undefined) => {
    let digest: Buffer | undefined;
    if (offline && value.startsWith('env:') && !env[value.slice(4)]) {
      offline.push(`${where}: environment variable ${value.slice(4)} is not set here; the token matches nothing`);
      digest = sha256(randomBytes(32).toString('hex'));
    } else digest = tokenDigest(value, env, where, problems);
    if (!digest) return;
    out.push({ digest, team: team ?? DEFAULT_TEAM, roles: new Set(roles), name: name ?? (team ? `${team}:${roles.join('+')}` : roles.join('+')) });
  };
  if (file.gateway.auth.token) add(file.gateway.auth.token, 'gateway.auth.token', undefined, ['admin'], 'admin');
  file.gateway.auth.tokens.forEach((t, i) => add(t.token, `gateway.auth.tokens.${i}.token`, t.team, t.roles, t.name));
  const seen = new Set<string>();
  for (const t of out) {
    const hex = t.digest.toString('hex');
    if (seen.has(hex)) problems.push(`gateway.auth.tokens: the same token is configured twice (${t.name})`);
    seen.add(hex);
  }
  return out;
}

/** Tokens may be given literally, as "sha256:HEX" (the file then holds no secret), or as "env:VAR". */
function tokenDigest(value: string, env: NodeJS.ProcessEnv, where: string, problems: string[]): Buffer | undefined {
  if (value.startsWith('sha256:')) {
    const hex = value.slice(7);
    if (!/^[0-9a-f]{64}$/i.test(hex)) {
      problems.push(`${where}: "sha256:" must be followed by 64 hex digits`);
      return undefined;
    }
    return Buffer.from(hex, 'hex');
  }
  if (value.startsWith('env:')) {
    const v = env[value.slice(4)];
    if (!v) {
      problems.push(`${where}: environment variable ${value.slice(4)} is not set`);
      return undefined;
    }
    return sha256(v);
  }
  if (value.length < 8) {
    problems.push(`${where}: a token must be at least 8 characters`);
    return undefined;
  }
  return sha256(value);
}

function realpathOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

function isWithin(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent.endsWith('/') ? parent : `${parent}/`);
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

