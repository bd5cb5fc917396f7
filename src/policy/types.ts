/**
 * The contract between the policy engine and the rest of execgate. Pure data: the engine takes a
 * compiled policy and a request and returns a Decision; it never throws on any command text.
 */

export type SecurityMode = 'unrestricted' | 'sandboxed' | 'locked';
export type ExecToolMode = 'allowed' | 'approval-required' | 'blocked';
export type RuleAction = 'allow' | 'deny' | 'ask';

export interface AllowedPath {
  /** Absolute real path (symlinks already resolved at config load), no trailing slash except "/". */
  path: string;
  readOnly: boolean;
}

export interface PolicyRule {
  name: string;
  /** Compiled when the config loads; matched against each layer of a segment's canonical text. */
  pattern: RegExp;
  action: RuleAction;
  enabled: boolean;
  /** Where the rule comes from: the config file or a remembered approval. */
  source?: 'config' | 'remembered';
  /** For remembered rules: it only applies to requests with exactly this cwd (absent = any cwd). */
  cwd?: string;
  /** For remembered rules: only an `exact` one may allow a segment that runs code the matcher cannot see. */
  scope?: 'exact' | 'prefix';
}

/** Everything about a team's exec policy that a decision depends on. */
export interface ExecPolicy {
  securityMode: SecurityMode;
  toolMode: ExecToolMode;
  blockedPatterns: readonly string[];
  allowedPaths: readonly AllowedPath[];
  rules: readonly PolicyRule[];
  noMatch: 'allow' | 'deny';
  onDeny: 'ask' | 'block';
}

export interface DecisionRequest {
  command: string;
  /** Absolute path; defaults to the first allowed path. */
  cwd?: string | undefined;
  /** false: nobody can be asked, so `ask` becomes deny `approval_unavailable`. Default true. */
  interactive?: boolean | undefined;
  /** Per-team runtime switch held by the service; with safe mode off, `ask` becomes `allow`. Default true. */
  safeMode?: boolean | undefined;
  /** Rules learned from approvals (`remember`); consulted before the config rules. Never override a hard deny. */
  rememberedRules?: readonly PolicyRule[] | undefined;
}

export type DecisionKind = 'allow' | 'ask' | 'deny';

export type DecisionCode =
  | 'allowed'
  | 'approval_required'
  | 'locked'
  | 'tool_blocked'
  | 'invalid_command'
  | 'unsupported_construct'
  | 'blocked_pattern'
  | 'path_not_allowed'
  | 'rule_denied'
  | 'rule_ask'
  | 'no_match'
  | 'opaque_execution'
  | 'approval_unavailable';

export interface SegmentExplanation {
  /** Canonical text of the innermost layer: argv joined by single spaces. */
  canonical: string;
  /** Every layer of the unwrapping, outermost first (`sudo env rm -rf x`, `env rm -rf x`, `rm -rf x`). */
  layers: string[];
  /** The source text of the segment as written. */
  source: string;
  /** What decided this segment. */
  verdict: 'allow' | 'ask' | 'deny';
  code: DecisionCode;
  /** The rule name or blocked pattern that decided it, when one did. */
  rule?: string;
  pattern?: string;
  reason: string;
}

export interface Decision {
  decision: DecisionKind;
  code: DecisionCode;
  /** A hard deny can never be approved or remembered away. */
  hard: boolean;
  /** One human sentence: which segment, which rule. */
  reason: string;
  segments: SegmentExplanation[];
  /** sha256 (hex, first 16 chars) of the canonical JSON of the ExecPolicy that decided. */
  policyHash: string;
  /** The resolved working directory the decision assumed. */
  cwd: string;
}
