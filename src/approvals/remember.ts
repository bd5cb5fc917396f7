import type { PolicyRule } from '../policy/types.js';

export type RememberScope = 'exact' | 'prefix';

export interface RememberedRule {
  id: string;
  team: string;
  scope: RememberScope;
  /** Regex source over canonical segment text. */
  pattern: string;
  /** Exact rules hold only in the directory they were approved in. */
  cwd?: string | undefined;
  command: string;
  createdBy: string;
  createdAt: number;
  expiresAt?: number | undefined;
  approvalId: string;
}

/**
 * First words that run arbitrary code given the right arguments: remembering "allow bash …" or "allow env …"
 * by prefix would approve every future program at once, so those are only ever remembered exactly.
 */
const NEVER_PREFIX = new Set([
  'sh', 'bash', 'dash', 'zsh', 'ksh', 'fish', 'csh', 'tcsh', 'busybox',
  'env', 'sudo', 'doas', 'su', 'exec', 'command', 'builtin', 'eval', 'source', '.', 'xargs', 'nohup', 'nice', 'timeout',
  'stdbuf', 'setsid', 'time', 'watch', 'script', 'parallel', 'find', 'ssh', 'chroot', 'nsenter', 'unshare',
  'python', 'python2', 'python3', 'node', 'nodejs', 'deno', 'bun', 'perl', 'ruby', 'php', 'lua', 'tclsh', 'awk', 'gawk', 'mawk',
  'npx', 'pnpx', 'bunx', 'dlx', 'docker', 'kubectl',
]);

const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

export type BuildRuleOutcome = { ok: true; patterns: string[] } | { ok: false; message: string };

/**
 * Builds the patterns of a remembered allow rule from the canonical segments of the approved command.
 * exact: each segment exactly as approved. prefix: the command name plus its subcommand (the first word
 * after the name when it is not a flag), never broader.
 */
export function rememberPatterns(segments: readonly { argv: readonly string[]; canonical: string }[], scope: RememberScope): BuildRuleOutcome {
  if (segments.length === 0) return { ok: false, message: 'the command has no segment to remember' };
  const patterns = new Set<string>();
  for (const seg of segments) {
    if (scope === 'exact') {
      patterns.add(`^${escapeRegex(seg.canonical)}$`);
      continue;
    }
    const [name, sub] = seg.argv;
    if (!name) return { ok: false, message: 'a segment has no command name' };
    if (NEVER_PREFIX.has(name) || /^(python|pypy|ruby|perl|php|node)[\d.]*$/.test(name)) {
      return { ok: false, message: `refusing to remember "${name}" by prefix: it would allow any program; remember it with scope "exact" instead` };
    }
    const words = sub !== undefined && !sub.startsWith('-') ? [name, sub] : [name];
    patterns.add(`^${words.map(escapeRegex).join(' ')}(?: |$)`);
  }
  return { ok: true, patterns: [...patterns] };
}

/** The policy engine's view of the remembered rules still in force for a request. */
export function activeRules(rules: readonly RememberedRule[], now: number): PolicyRule[] {
  return rules
    .filter((r) => r.expiresAt === undefined || r.expiresAt > now)
    .map((r) => ({ name: `remembered:${r.id} (${r.scope} "${r.command}")`, pattern: new RegExp(r.pattern), action: 'allow' as const, enabled: true, source: 'remembered' as const, cwd: r.cwd }));
}
