import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError, DEFAULT_TEAM, loadConfigFile, type AppConfig } from '../config/load.js';
import { ConfigFileSchema } from '../config/schema.js';
import { createPolicyEngine, type Decision, type PolicyEngine } from '../policy/index.js';
import { ServiceError } from '../service/errors.js';
import { resolveCwd } from '../service/exec-service.js';

export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export const CONFIG_SCHEMA_ID = 'https://execgate.dev/schema/config.json';

/**
 * The JSON Schema of the config file, generated from the zod schema that validates it (one source of truth).
 * It describes the file as written (defaults shown, nothing required that has a default); the checks zod does
 * in code (rule examples compile and match, paths exist, teams' tokens) are `execgate config check`'s job.
 */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(ConfigFileSchema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>;
  return {
    $schema: schema.$schema,
    $id: CONFIG_SCHEMA_ID,
    title: 'execgate configuration',
    description: 'The execgate config file (YAML or JSON). Point your editor at this schema, e.g. "# yaml-language-server: $schema=./config.schema.json".',
    ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== '$schema')),
  };
}

const CONFIG_USAGE = `Usage:
  execgate config schema                 print the config file's JSON Schema (for editors)
  execgate config check FILE [--offline] validate FILE; prints every problem with its path (exit 1 when any)
      --offline: checking away from where it runs (CI): allowed paths missing here and env: tokens whose
      variable is unset are warnings, not problems`;

const POLICY_USAGE = `Usage:
  execgate policy test FILE COMMAND [--team T] [--cwd D] [--non-interactive] [--json]

Prints the decision FILE's policy gives COMMAND and why, segment by segment, without a server. The file is
read as for \`config check --offline\`: allowed paths missing on this machine are taken as written (so --cwd
may name one), and unset env: tokens do not matter.
Safe mode is taken as on (the default); remembered rules live in a running service's store and are not considered.
Exit: 0 allow, 3 ask, 4 deny, 2 usage or config error.`;

/** Exit codes of `execgate policy test`, so scripts can branch on the decision. */
export const POLICY_EXIT = { allow: 0, ask: 3, deny: 4, usage: 2 } as const;

function loadChecked(file: string, engine: PolicyEngine, offline: boolean): AppConfig {
  return loadConfigFile(file, { offline, checkRuleExamples: (rules) => engine.checkRuleExamples(rules) });
}

const warningLines = (warnings: readonly string[] | undefined) => (warnings ?? []).map((w) => `  warning: ${w}\n`).join('');

export async function configCommand(argv: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'schema' && rest.length === 0) {
    io.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
    return 0;
  }
  const offline = rest.includes('--offline');
  const args = rest.filter((a) => a !== '--offline');
  if (sub === 'check' && args.length === 1 && !args[0]!.startsWith('-')) {
    const file = args[0]!;
    try {
      const config = loadChecked(file, await createPolicyEngine(), offline);
      const teams = Object.values(config.teams);
      io.stdout.write(
        `${config.source}: ok — ${teams.length} team(s): ${teams.map((t) => `${t.name} (${t.policy.securityMode}/${t.policy.toolMode}, ${t.policy.allowedPaths.length} allowed path(s))`).join(', ')}; ` +
          `${config.gateway.auth.enabled ? `${config.gateway.auth.tokens.length} token(s)` : 'auth disabled'}; listens on ${config.gateway.host}:${config.gateway.port}\n` +
          warningLines(config.warnings),
      );
      return 0;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      io.stderr.write(`${file}: ${err.problems.length} problem(s)\n${err.problems.map((p) => `  ${p}\n`).join('')}${warningLines(err.warnings)}`);
      return 1;
    }
  }
  io.stderr.write(`${sub === undefined || sub === '--help' || sub === '-h' ? '' : 'execgate config: bad arguments\n'}${CONFIG_USAGE}\n`);
  return sub === '--help' || sub === '-h' ? 0 : 2;
}

export async function policyCommand(argv: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { team: { type: 'string', short: 't' }, cwd: { type: 'string' }, 'non-interactive': { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    io.stderr.write(`execgate policy: ${(err as Error).message}\n${POLICY_USAGE}\n`);
    return POLICY_EXIT.usage;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(`${POLICY_USAGE}\n`);
    return 0;
  }
  if (positionals[0] !== 'test' || positionals.length !== 3) {
    io.stderr.write(`execgate policy: expected "test FILE COMMAND"\n${POLICY_USAGE}\n`);
    return POLICY_EXIT.usage;
  }
  const [, file, command] = positionals as [string, string, string];
  const engine = await createPolicyEngine();
  let config: AppConfig;
  try {
    config = loadChecked(file, engine, true);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.stderr.write(`${err.message}\n`);
    return POLICY_EXIT.usage;
  }
  const teamName = values.team ?? DEFAULT_TEAM;
  const team = config.teams[teamName];
  if (!team) {
    io.stderr.write(`execgate policy: team "${teamName}" is not in ${file} (teams: ${Object.keys(config.teams).join(', ')})\n`);
    return POLICY_EXIT.usage;
  }
  let cwd: string;
  try {
    cwd = offlineCwd(team, values.cwd);
  } catch (err) {
    if (!(err instanceof ServiceError)) throw err;
    io.stderr.write(`execgate policy: ${err.message}\n`);
    return POLICY_EXIT.usage;
  }
  const decision = engine.decide({ command, cwd, interactive: values['non-interactive'] !== true, safeMode: true, rememberedRules: [] }, team.policy);
  io.stdout.write(values.json ? `${JSON.stringify({ team: teamName, ...decision }, null, 2)}\n` : formatDecision(decision, teamName));
  io.stderr.write(warningLines(config.warnings));
  return POLICY_EXIT[decision.decision];
}

/** The decision as a person reads it: the verdict and reason, then one line per segment. */
export function formatDecision(d: Decision, team: string): string {
  const lines = [`${d.decision.toUpperCase()}${d.hard ? ' (hard)' : ''} — ${d.reason}`, `  team ${team}, cwd ${d.cwd}, code ${d.code}, policy ${d.policyHash}`];
  for (const s of d.segments) {
    const by = s.rule ? `rule "${s.rule}"` : s.pattern ? `pattern "${s.pattern}"` : s.code;
    lines.push(`  ${s.verdict.padEnd(5)} ${s.canonical || s.source}  [${by}] ${s.reason}`);
  }
  return `${lines.join('\n')}\n`;
}

/** As the service resolves cwd, except inside an allowed path missing on this machine: judged as written. */
function offlineCwd(team: AppConfig['teams'][string], cwd: string | undefined): string {
  try {
    return resolveCwd(team, cwd);
  } catch (err) {
    const abs = cwd === undefined ? undefined : resolve(team.policy.allowedPaths[0]!.path, cwd);
    const inMissing = abs !== undefined && team.policy.allowedPaths.some((p) => !existsSync(p.path) && (abs === p.path || abs.startsWith(`${p.path}/`)));
    if (err instanceof ServiceError && inMissing) return abs;
    throw err;
  }
}
