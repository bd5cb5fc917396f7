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

const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

export type BuildRuleOutcome = { ok: true; patterns: string[] } | { ok: false; message: string };

/**
 * Builds the patterns of a remembered allow rule from the canonical segments of the approved command (their
 * innermost layer: wrappers peeled, flags canonical).
 * exact: each segment exactly as approved; the rule then only applies to that same whole command (see
 * activeRules). prefix: the command name plus its subcommand (the first word after the name, when no flag
 * comes before it), never broader, and never for programs that run code or for segments that are opaque.
 */
export function rememberPatterns(
  segments: readonly { canonical: string; code?: string }[],
  scope: RememberScope,
  runsArbitraryCode: (name: string) => boolean,
): BuildRuleOutcome {
  if (segments.length === 0) return { ok: false, message: 'the command has no segment to remember' };
  const patterns = new Set<string>();
  for (const seg of segments) {
    if (scope === 'exact') {
      patterns.add(`^${escapeRegex(seg.canonical)}$`);
      continue;
    }
    if (seg.code === 'opaque_execution' || seg.code === 'unsupported_construct') {
      return { ok: false, message: `refusing to remember \`${seg.canonical}\` by prefix: it runs code the matcher cannot see; remember it with scope "exact" instead` };
    }
    const [name, ...rest] = seg.canonical.split(' ');
    if (!name) return { ok: false, message: 'a segment has no command name' };
    if (runsArbitraryCode(name)) {
      return { ok: false, message: `refusing to remember "${name}" by prefix: it would allow any program; remember it with scope "exact" instead` };
    }
    const firstWord = rest.findIndex((w) => !w.startsWith('-'));
    if (firstWord > 0) {
      return { ok: false, message: `refusing to remember \`${seg.canonical}\` by prefix: options come before its subcommand; remember it with scope "exact" instead` };
    }
    const words = firstWord === 0 ? [name, rest[0]!] : [name];
    patterns.add(`^${words.map(escapeRegex).join(' ')}(?: |$)`);
  }
  return { ok: true, patterns: [...patterns] };
}

/** Remembered patterns are consulted on every decision: each is compiled once. */
const regexCache = new Map<string, RegExp>();
function compiled(pattern: string): RegExp {
  let re = regexCache.get(pattern);
  if (!re) {
    if (regexCache.size >= 10_000) regexCache.clear();
    re = new RegExp(pattern);
    regexCache.set(pattern, re);
  }
  return re;
}

/**
 * The policy engine's view of the remembered rules in force for a request. An exact rule applies only to the
 * very command (and directory) it was approved for: approving `cat build.sh | sh` must not approve `sh`
 * after any other pipe.
 */
export function activeRules(rules: readonly RememberedRule[], now: number, req: { command: string; cwd: string }): PolicyRule[] {
  return rules
    .filter((r) => r.expiresAt === undefined || r.expiresAt > now)
    .filter((r) => r.scope !== 'exact' || (r.command === req.command && r.cwd === req.cwd))
    .map((r) => ({ name: `remembered:${r.id} (${r.scope} "${r.command}")`, pattern: compiled(r.pattern), action: 'allow' as const, enabled: true, source: 'remembered' as const, cwd: r.cwd, scope: r.scope }));
}
