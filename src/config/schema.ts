import { z } from 'zod';

/**
 * The config file's schema (SPEC §1). The `.describe()` texts are the reference documentation: they are
 * printed by `execgate config schema` and copied into the README.
 *
 * Per-agent settings (`agents.defaults`, `agents.teams.NAME`) are parsed as *partial* objects with no defaults,
 * merged key by key (built-in defaults ← agents.defaults ← agents.teams.NAME), and the merge is then validated
 * against the complete `ResolvedAgentSettingsSchema`. That way a team overrides exactly the keys it names.
 */

const SecurityModeSchema = z
  .enum(['unrestricted', 'sandboxed', 'locked'])
  .describe('unrestricted: every ask becomes allow (hard denies stay); sandboxed: the policy decides; locked: nothing runs');

const AllowedPathSchema = z.union([
  z.string().min(1),
  z.object({
    path: z.string().min(1).describe('Host directory; resolved to its real path at load and mounted at that same path'),
    readOnly: z.boolean().default(false).describe('Mount read-only'),
  }).strict(),
]);

const RuleSchema = z
  .object({
    name: z.string().min(1).describe('Shown in every explanation this rule decides'),
    pattern: z.string().min(1).describe('Regular expression over the canonical segment text (argv joined by single spaces)'),
    action: z.enum(['allow', 'deny', 'ask']),
    enabled: z.boolean().default(true),
    match: z.array(z.string()).optional().describe('Example commands this rule must match; checked at load'),
    notMatch: z.array(z.string()).optional().describe('Example commands this rule must not match; checked at load'),
  })
  .strict()
  .superRefine((rule, ctx) => {
    try {
      new RegExp(rule.pattern);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['pattern'], message: `rule "${rule.name}": invalid regular expression: ${(err as Error).message}` });
    }
  });

const ExecToolPolicyInputSchema = z
  .object({
    mode: z.enum(['allowed', 'approval-required', 'blocked']).describe('allowed: the policy decides; approval-required: every allow asks a human; blocked: nothing runs'),
    blockedPatterns: z.array(z.string().min(1)).describe('Commands that are never run (hard deny), matched against canonical segments: "rm -rf" also catches "rm -r -f", "/bin/rm -fr", "env rm -rf"'),
    allowedPaths: z.array(AllowedPathSchema).min(1).describe('Host directories the sandbox may see; the first is the default working directory'),
    rules: z.array(RuleSchema).describe('Ordered; the first enabled rule that matches a segment decides it'),
    noMatch: z.enum(['allow', 'deny']).describe('What a segment no rule matches gets'),
    onDeny: z.enum(['ask', 'block']).describe('What a soft deny becomes: ask a human, or stay denied'),
  })
  .strict()
  .partial();

const PoolSchema = z
  .object({
    size: z.number().int().min(0).max(64).describe('Containers started ahead of time per team and mount set; 0 = off'),
    maxIdleMs: z.number().int().min(1000).describe('A pooled container idle longer than this is replaced'),
  })
  .strict();

/** Names as the request's env takes them (src/service/env.ts refuses the dangerous ones at load). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const SandboxEnvEntrySchema = z.union(
  [
    z.string().describe('The value; not secret'),
    z
      .object({
        value: z.string().optional().describe('The value'),
        fromEnv: z.string().regex(ENV_NAME, 'must be an environment variable name').optional().describe("Read from this variable of the service's own environment when the config is loaded (a missing variable is an error)"),
        secret: z
          .boolean()
          .optional()
          .describe('Never shown, logged or stored, and replaced by [redacted:NAME] wherever it appears in a command\'s output; at least 8 characters. Default: true with fromEnv, false with value'),
      })
      .strict()
      .superRefine((e, ctx) => {
        if ((e.value === undefined) === (e.fromEnv === undefined)) ctx.addIssue({ code: 'custom', message: 'give exactly one of "value" and "fromEnv"' });
      }),
    z.null().describe('In a team: removes a variable that agents.defaults sets'),
  ],
  { error: 'expected a string, { value | fromEnv, secret? }, or null' },
);

export type SandboxEnvEntry = z.infer<typeof SandboxEnvEntrySchema>;

const SandboxEnvSchema = z
  .record(z.string(), SandboxEnvEntrySchema)
  .superRefine((env, ctx) => {
    for (const name of Object.keys(env)) if (!ENV_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'not a valid variable name' });
  })
  .meta({ propertyNames: { pattern: ENV_NAME.source } })
  .describe('Variables set in every sandbox of the team, over the image\'s own; a team\'s entries replace those of agents.defaults one by one. A request may not set a variable named here');

const SandboxInputSchema = z
  .object({
    image: z.string().min(1).describe('Image the commands run in; must have /bin/sh'),
    runtime: z.string().min(1).describe('OCI runtime dockerd knows: runc, runsc (gVisor), ...'),
    network: z
      .string()
      .min(1)
      .refine((n) => !['host', 'bridge', 'default'].includes(n) && !n.startsWith('container:'), 'the host\'s network, Docker\'s shared bridge and other containers\' namespaces are never given to a sandbox')
      .describe('"none" (default); "team": a Docker network of the team\'s own, created on demand, that no other team\'s sandboxes are on; or the name of an existing network used by this team only'),
    memoryMb: z.number().int().min(16).max(1 << 20),
    cpus: z.number().positive().max(256),
    pidsLimit: z.number().int().min(8).max(1 << 22),
    tmpfsMb: z.number().int().min(1).max(1 << 16).describe('Size of the tmpfs at /tmp'),
    timeoutMs: z.number().int().min(100).max(24 * 3600_000).describe('Upper bound of a command\'s run time; requests may ask for less'),
    maxOutputBytes: z.number().int().min(1024).describe('stdout+stderr beyond this stops the container (truncated: true)'),
    writeQuotaMb: z
      .number()
      .int()
      .min(1)
      .max(1 << 24)
      .describe('What one execution may add to the disk holding its read-write allowed paths: no file grows past it (RLIMIT_FSIZE, which also bounds single files in /tmp and /scratch), and a watchdog stops the sandbox (writeQuotaExceeded: true) once the filesystem has grown by more than this since the run started, or its free space runs low'),
    user: z.string().regex(/^(auto|\d+(:\d+)?)$/, 'must be "auto" or "uid[:gid]"').describe('"auto": the owner of the first allowed path when not root, else 1000:1000; never root'),
    pool: PoolSchema.partial(),
    env: SandboxEnvSchema,
  })
  .strict()
  .partial();

const QuotaInputSchema = z
  .object({
    maxConcurrent: z.number().int().min(1).max(1024).describe('Executions of the team running at once; more wait in a queue'),
    maxQueued: z.number().int().min(0).max(100_000).describe('Executions waiting for a slot; beyond this: 429 with Retry-After'),
    cpuSecondsPerHour: z.number().positive().nullable().describe('Ceiling on sandbox CPU time reserved per rolling hour (cpus x run time); null = none'),
  })
  .strict()
  .partial();

const FilesInputSchema = z
  .object({
    scratchMb: z.number().int().min(1).max(1 << 16).describe('Size of /scratch, the per-execution (or per-session) writable directory that input files go to; memory-backed, so it counts against the host'),
    maxInputBytes: z.number().int().min(1).max(1 << 30).describe('Sum of the sizes of the files sent with one request'),
    maxEntries: z.number().int().min(1).max(1_000_000).describe('Entries (files, directories, links) in one archive, in or out'),
    maxArtifactBytes: z.number().int().min(1).describe('Sum of the sizes of the files one execution may collect'),
    artifactTtlMs: z.number().int().min(1000).describe('How long collected artifacts are kept for download'),
    maxArtifactStoreMb: z.number().int().min(1).describe('Artifacts kept per team; the oldest are removed first to make room'),
  })
  .strict()
  .partial();

const SessionsInputSchema = z
  .object({
    maxSessions: z.number().int().min(0).max(1024).describe('Sessions of the team alive at once; 0 turns sessions off'),
    idleTimeoutMs: z.number().int().min(1000).max(7 * 24 * 3600_000).describe('A session without a command for this long is ended'),
    maxLifetimeMs: z.number().int().min(1000).max(7 * 24 * 3600_000).describe('A session is ended this long after it started, busy or not'),
    allowedImages: z.array(z.string().min(1)).describe('Images a session may ask for besides sandbox.image'),
  })
  .strict()
  .partial();

export const AgentSettingsInputSchema = z
  .object({
    security: z.object({ mode: SecurityModeSchema }).strict().partial(),
    quota: QuotaInputSchema,
    toolPolicies: z.object({ exec: ExecToolPolicyInputSchema }).strict().partial(),
    sandbox: SandboxInputSchema,
    files: FilesInputSchema,
    sessions: SessionsInputSchema,
  })
  .strict()
  .partial();
export type AgentSettingsInput = z.infer<typeof AgentSettingsInputSchema>;

/** The complete per-team settings after the merge. */
export const ResolvedAgentSettingsSchema = z.object({
  security: z.object({ mode: SecurityModeSchema }),
  quota: QuotaInputSchema.required(),
  toolPolicies: z.object({ exec: ExecToolPolicyInputSchema.required() }),
  sandbox: SandboxInputSchema.required().extend({ pool: PoolSchema, env: SandboxEnvSchema.optional() }),
  files: FilesInputSchema.required(),
  sessions: SessionsInputSchema.required(),
});
export type ResolvedAgentSettings = z.infer<typeof ResolvedAgentSettingsSchema>;

export const RoleSchema = z.enum(['exec', 'approve', 'admin']);
export type Role = z.infer<typeof RoleSchema>;

const TEAM_NAME = /^[a-z0-9][a-z0-9_-]{0,39}$/;
const TeamNameSchema = z.string().regex(TEAM_NAME, 'team names are lowercase letters, digits, "-" and "_" (at most 40)');

const TokenSchema = z
  .object({
    token: z.string().min(1).describe('The bearer token, "sha256:HEX" of it, or "env:VAR" to read it from the environment'),
    team: TeamNameSchema.optional().describe('The team this token acts for; omitted: the "default" team'),
    roles: z.array(RoleSchema).min(1).describe('exec: run and check commands; approve: resolve approvals, switch safe mode; admin: everything, every team'),
    name: z.string().optional().describe('Shown as "by" on approvals and in history'),
  })
  .strict();

export const ConfigFileSchema = z
  .object({
    gateway: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8787),
        auth: z
          .object({
            enabled: z.boolean().default(true),
            token: z.string().min(1).optional().describe('One token with every role (admin), as in the seed docs'),
            tokens: z.array(TokenSchema).default([]),
          })
          .strict()
          .prefault({}),
        bodyLimitBytes: z.number().int().min(1024).default(8 * 1024 * 1024),
        trustProxy: z.boolean().default(false),
        drainTimeoutMs: z
          .number()
          .int()
          .min(0)
          // 8 s: the drain, the stop and the sandboxes' removal fit in `docker stop`'s 10 s grace period.
          .default(8_000)
          .describe('On SIGTERM, how long running executions may take to finish before they are stopped (their clients get error shutting_down); keep it under the grace period of whatever stops the service'),
        nice: z
          .number()
          .int()
          .min(-20)
          .max(19)
          // -10: on 2 cores under `npm run load` /healthz p99 went from 56–121 ms (0) to 19–28 ms (README, CPU priority).
          .default(-10)
          .describe('CPU priority (nice, -20 to 19) of the service itself, not of the sandboxes: set on every thread at start and on reload, and on its autogroup when it leads its session in the root cgroup. Below the current value needs CAP_SYS_NICE; without it the service logs so and keeps its priority. Under cgroups (systemd, containers) give it CPU weight instead (CPUWeight=, cpu_shares)'),
      })
      .strict()
      .prefault({}),
    agents: z
      .object({
        defaults: AgentSettingsInputSchema.default({}),
        teams: z
          .record(z.string(), AgentSettingsInputSchema)
          .superRefine((teams, ctx) => {
            for (const name of Object.keys(teams)) {
              const r = TeamNameSchema.safeParse(name);
              if (!r.success) ctx.addIssue({ code: 'custom', path: [name], message: r.error.issues[0]!.message });
            }
          })
          // The same rule for editors (the JSON Schema): superRefine itself has no JSON Schema form.
          .meta({ propertyNames: { pattern: TEAM_NAME.source } })
          .default({}),
      })
      .strict()
      .prefault({}),
    approvals: z
      .object({
        timeoutMs: z.number().int().min(1000).default(300_000),
        webhookUrl: z.url().optional().describe('POSTed a JSON notification when an approval is created (every team)'),
        webhooks: z.record(z.string(), z.url()).default({}).describe('Per-team webhook URLs, over webhookUrl'),
      })
      .strict()
      .prefault({}),
    store: z
      .object({
        path: z.string().min(1).default('./execgate-data').describe('Directory of the SQLite file; must not be inside an allowed path'),
        history: z
          .object({
            maxAgeDays: z.number().positive().optional().describe('Executions older than this are pruned'),
            maxPerTeam: z.number().int().min(1).default(10_000).describe('At most this many executions are kept per team'),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    reaper: z.object({ intervalMs: z.number().int().min(1000).default(60_000) }).strict().prefault({}),
  })
  .strict();
export type ConfigFile = z.infer<typeof ConfigFileSchema>;

/** Built-in values under every agents.defaults key a file leaves out. */
export const BUILTIN_AGENT_DEFAULTS = {
  security: { mode: 'sandboxed' },
  quota: { maxConcurrent: 4, maxQueued: 32, cpuSecondsPerHour: null },
  toolPolicies: {
    exec: {
      mode: 'approval-required',
      blockedPatterns: ['rm -rf', 'sudo', 'chmod 777'],
      rules: [],
      noMatch: 'allow',
      onDeny: 'ask',
    },
  },
  sandbox: {
    image: 'execgate/sandbox:latest',
    runtime: 'runc',
    network: 'none',
    memoryMb: 512,
    cpus: 1,
    pidsLimit: 256,
    tmpfsMb: 64,
    timeoutMs: 60_000,
    maxOutputBytes: 1_048_576,
    writeQuotaMb: 1024,
    user: 'auto',
    pool: { size: 2, maxIdleMs: 600_000 },
  },
  files: {
    scratchMb: 256,
    maxInputBytes: 64 * 1024 * 1024,
    maxEntries: 10_000,
    maxArtifactBytes: 256 * 1024 * 1024,
    artifactTtlMs: 3_600_000,
    maxArtifactStoreMb: 2048,
  },
  sessions: { maxSessions: 4, idleTimeoutMs: 600_000, maxLifetimeMs: 4 * 3_600_000, allowedImages: [] },
} as const satisfies AgentSettingsInput;
