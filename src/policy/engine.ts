/**
 * The decision pipeline of SPEC §2. Pure: a request and a policy in, a Decision out; never throws.
 */
import type { Parser } from 'web-tree-sitter';
import { analyze, type Analysis, type Layer } from './analyze.js';
import { policyHash } from './hash.js';
import { checkResolved, checkWord, isSystemProgram, normalise, resolve, type PathVerdict } from './paths.js';
import { compilePattern, layerMatches, layerMightMatch, type CompiledPattern } from './patterns.js';
import { BudgetExceeded, BudgetMeter, DEFAULT_BUDGET, parseScript, type ParseBudget, type RawSegment } from './shell.js';
import { invalidCommandReason, joinLineContinuations } from './text.js';
import type {
  AllowedPath, Decision, DecisionCode, DecisionKind, DecisionRequest, ExecPolicy, PolicyRule, SegmentExplanation,
} from './types.js';

export interface CanonicalSegment {
  /** Canonical text of the innermost layer. */
  canonical: string;
  /** Canonical text of every layer, outermost first. */
  layers: string[];
  /** argv as bash builds it for this segment, before wrappers are unwrapped and before canonicalisation. */
  argv: string[];
}

export type SegmentsResult =
  | { ok: true; segments: CanonicalSegment[] }
  | { ok: false; code: DecisionCode; reason: string };

export interface RuleWithExamples {
  name: string;
  pattern: RegExp;
  match?: string[] | undefined;
  notMatch?: string[] | undefined;
}

export interface PolicyEngine {
  /** Sync, pure, never throws: an internal error is a hard `invalid_command` deny (fail closed). */
  decide(req: DecisionRequest, policy: ExecPolicy): Decision;
  /** Canonical segments of a command, or why it has none we can reason about (used to build `remember` rules). */
  segments(command: string): SegmentsResult;
  /** Checks rules' `match`/`notMatch` example commands; returns one human-readable error per failure. */
  checkRuleExamples(rules: readonly RuleWithExamples[]): string[];
}

/** `sh -c 'sh -c …'` nesting deeper than this is refused rather than followed. */
const MAX_NESTING = 3;
/** Bound on the set of directories a segment may run in (see followCd). */
const MAX_CWDS = 32;

interface Unit {
  seg: RawSegment;
  a: Analysis;
  /** Set when the engine itself finds the segment unsupported (nested parse failure, relative cd in a loop). */
  problem: string | null;
}

type Severity = 0 | 1 | 2 | 3; // allow, ask, soft deny, hard deny

/** Between segments of equal severity, the one that failed an earlier pipeline step names the decision. */
const STEP: Record<DecisionCode, number> = {
  locked: 0, tool_blocked: 1, invalid_command: 2, unsupported_construct: 3, blocked_pattern: 4, path_not_allowed: 5,
  rule_denied: 6, no_match: 6, rule_ask: 6, opaque_execution: 7, approval_required: 8, approval_unavailable: 8, allowed: 9,
};

interface SegmentVerdict {
  severity: Severity;
  code: DecisionCode;
  rule?: string;
  pattern?: string;
  reason: string;
  /** Allowed by a rule a human remembered when approving. */
  remembered?: boolean;
}

export class Engine implements PolicyEngine {
  private readonly patterns = new Map<string, CompiledPattern | null>();
  private readonly hashes = new WeakMap<ExecPolicy, string>();

  constructor(
    private readonly parser: Parser,
    private readonly budget: Readonly<ParseBudget> = DEFAULT_BUDGET,
  ) {}

  decide(req: DecisionRequest, policy: ExecPolicy): Decision {
    let hash = '';
    const cwd = req.cwd ?? policy.allowedPaths[0]?.path ?? '';
    try {
      hash = this.hash(policy);
      return this.decideUnsafe(req, policy, hash, new BudgetMeter(this.budget));
    } catch (err) {
      // Past a budget nothing more was looked at, blocked patterns included: a hard deny, like a command over
      // 16 KiB. A soft one would become `allow` in unrestricted mode or with safe mode off, unchecked.
      if (err instanceof BudgetExceeded) {
        return {
          decision: 'deny', code: 'invalid_command', hard: true, segments: [], policyHash: hash, cwd: cwd.startsWith('/') ? normalise(cwd) : cwd,
          reason: `invalid command: ${err.message}, so nothing in it could be checked (split it into smaller commands)`,
        };
      }
      return {
        decision: 'deny', code: 'invalid_command', hard: true, segments: [], policyHash: hash, cwd,
        reason: `internal error while deciding, denied to fail closed: ${err instanceof Error ? err.message : String(err)}`,
      };
    }
  }

  segments(command: string): SegmentsResult {
    try {
      const invalid = invalidCommandReason(command);
      if (invalid) return { ok: false, code: 'invalid_command', reason: invalid };
      const units = this.units(command, new BudgetMeter(this.budget));
      if (!units.ok) return { ok: false, code: 'unsupported_construct', reason: units.reason };
      const out: CanonicalSegment[] = [];
      for (const u of units.units) {
        const problem = u.problem ?? u.seg.unsupported ?? u.a.unsupported;
        if (problem) return { ok: false, code: 'unsupported_construct', reason: `${u.seg.source}: ${problem}` };
        if (u.seg.kind === 'context' || u.a.layers.length === 0) continue;
        out.push({
          canonical: (u.a.layers[u.a.layers.length - 1] as Layer).text,
          layers: u.a.layers.map((l) => l.text),
          argv: u.seg.words.map((w) => w.value),
        });
      }
      return { ok: true, segments: out };
    } catch (err) {
      if (err instanceof BudgetExceeded) return { ok: false, code: 'invalid_command', reason: err.message };
      return { ok: false, code: 'invalid_command', reason: `internal error: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  checkRuleExamples(rules: readonly RuleWithExamples[]): string[] {
    const errors: string[] = [];
    for (const rule of rules) {
      const check = (example: string, shouldMatch: boolean): void => {
        const s = this.segments(example);
        if (!s.ok) {
          errors.push(`rule "${rule.name}": example ${JSON.stringify(example)} cannot be reasoned about (${s.reason})`);
          return;
        }
        const hit = s.segments.some((seg) => seg.layers.some((l) => testRegex(rule.pattern, l)));
        if (hit !== shouldMatch) {
          const canon = s.segments.map((seg) => seg.canonical).join(' ; ');
          errors.push(`rule "${rule.name}": example ${JSON.stringify(example)} (canonical ${JSON.stringify(canon)}) ${shouldMatch ? 'should match but does not' : 'should not match but does'}`);
        }
      };
      for (const m of rule.match ?? []) check(m, true);
      for (const m of rule.notMatch ?? []) check(m, false);
    }
    return errors;
  }

  private hash(policy: ExecPolicy): string {
    let h = this.hashes.get(policy);
    if (h === undefined) {
      h = policyHash(policy);
      this.hashes.set(policy, h);
    }
    return h;
  }

  private pattern(source: string): CompiledPattern | null {
    let p = this.patterns.get(source);
    if (p === undefined) {
      p = compilePattern(source);
      if (this.patterns.size > 1000) this.patterns.clear();
      this.patterns.set(source, p);
    }
    return p;
  }

  /** Parses the command and every literal `sh -c` script in it into analysed segments (BudgetExceeded past `meter`). */
  private units(command: string, meter: BudgetMeter): { ok: true; units: Unit[] } | { ok: false; reason: string } {
    const parsed = parseScript(this.parser, joinLineContinuations(command), 0, meter);
    if (!parsed.ok) return parsed;
    const units: Unit[] = [];
    // A stack (reversed) so that nested segments can be put in front cheaply.
    const stack: RawSegment[] = [...parsed.segments].reverse();
    while (stack.length > 0) {
      const seg = stack.pop() as RawSegment;
      meter.enter('analysing');
      const a = analyze(seg);
      const unit: Unit = { seg, a, problem: null };
      units.push(unit);
      for (const script of a.nestedScripts) {
        if (seg.depth + 1 > MAX_NESTING) { unit.problem = `shell scripts nested more than ${MAX_NESTING} deep are not supported`; break; }
        const inner = parseScript(this.parser, joinLineContinuations(script), seg.depth + 1, meter);
        if (!inner.ok) { unit.problem = `the nested script cannot be reasoned about: ${inner.reason}`; break; }
        // Nested segments are checked right after their shell, before the rest of the outer command.
        for (let i = inner.segments.length - 1; i >= 0; i--) stack.push(inner.segments[i] as RawSegment);
      }
    }
    return { ok: true, units };
  }

  private decideUnsafe(req: DecisionRequest, policy: ExecPolicy, hash: string, meter: BudgetMeter): Decision {
    const requested = req.cwd ?? policy.allowedPaths[0]?.path;
    const cwd = requested !== undefined && requested.startsWith('/') ? normalise(requested) : (requested ?? '');
    const finish = (kind: DecisionKind, code: DecisionCode, hard: boolean, reason: string, segments: SegmentExplanation[] = []): Decision => ({
      decision: kind, code, hard, reason, segments, policyHash: hash, cwd,
    });

    if (policy.securityMode === 'locked') return finish('deny', 'locked', true, 'security mode is locked: nothing runs');
    if (policy.toolMode === 'blocked') return finish('deny', 'tool_blocked', true, 'the exec tool is blocked by policy');
    const invalid = invalidCommandReason(req.command);
    if (invalid) return finish('deny', 'invalid_command', true, `invalid command: ${invalid}`);

    const parsed = this.units(req.command, meter);
    if (!parsed.ok) return this.combine(req, policy, finish, { severity: 2, code: 'unsupported_construct', reason: parsed.reason }, []);

    // The working directory itself must be inside an allowed path.
    let cwdVerdict: PathVerdict;
    if (requested === undefined) cwdVerdict = { ok: false, kind: 'outside', reason: 'no allowed path is configured, so there is no working directory' };
    else if (!requested.startsWith('/')) cwdVerdict = { ok: false, kind: 'outside', reason: `the working directory ${requested} is not absolute` };
    else cwdVerdict = checkResolved(cwd, policy.allowedPaths, false, `the working directory ${requested}`);

    const cwds = this.followCd(parsed.units, cwd);
    const explanations: SegmentExplanation[] = [];
    let worst: { v: SegmentVerdict; index: number; canonical: string } | null = null;
    let allRemembered = true;
    for (const u of parsed.units) {
      meter.tick();
      const v = this.segmentVerdict(u, policy, req, cwdVerdict, cwds);
      if (u.seg.kind !== 'context' && !v.remembered) allRemembered = false;
      const layers = u.a.layers.map((l) => l.text);
      const canonical = layers[layers.length - 1] ?? '';
      // Word-list contexts (for/case/compound redirects) are shown only when they decide something.
      if (u.seg.kind === 'context' && v.severity === 0) continue;
      const e: SegmentExplanation = {
        canonical, layers, source: u.seg.source, verdict: v.severity === 0 ? 'allow' : v.severity === 1 ? 'ask' : 'deny', code: v.code, reason: v.reason,
      };
      if (v.rule !== undefined) e.rule = v.rule;
      if (v.pattern !== undefined) e.pattern = v.pattern;
      explanations.push(e);
      if (worst === null || v.severity > worst.v.severity || (v.severity === worst.v.severity && STEP[v.code] < STEP[worst.v.code])) worst = { v, index: explanations.length, canonical: canonical || u.seg.source };
    }
    // The last look at the clock: a decision that ran past the budget is not given, whatever it would be.
    meter.checkTime();
    if (worst === null) {
      if (!cwdVerdict.ok) return finish('deny', 'path_not_allowed', true, cwdVerdict.reason, explanations);
      return this.combine(req, policy, finish, { severity: 0, code: 'allowed', reason: 'the command runs nothing' }, explanations);
    }
    const named: SegmentVerdict = { ...worst.v, remembered: allRemembered, reason: `segment ${worst.index} \`${worst.canonical}\`: ${worst.v.reason}` };
    return this.combine(req, policy, finish, named, explanations);
  }

  /** Applies onDeny, the exec mode, unrestricted mode, safe mode and interactivity to the worst segment. */
  private combine(
    req: DecisionRequest, policy: ExecPolicy,
    finish: (k: DecisionKind, c: DecisionCode, h: boolean, r: string, s?: SegmentExplanation[]) => Decision,
    v: SegmentVerdict, segments: SegmentExplanation[],
  ): Decision {
    if (v.severity === 3) return finish('deny', v.code, true, v.reason, segments);
    let kind: DecisionKind;
    let code = v.code;
    let reason = v.reason;
    if (v.severity === 2) {
      if (policy.onDeny === 'block') return finish('deny', code, false, reason, segments);
      kind = 'ask';
      reason += ' (onDeny: ask)';
    } else if (v.severity === 1) {
      kind = 'ask';
    } else if (policy.toolMode === 'approval-required' && !v.remembered) {
      // Every segment allowed by a rule a human remembered was, in effect, approved already.
      kind = 'ask';
      code = 'approval_required';
      reason = `exec mode is approval-required; ${reason}`;
    } else {
      kind = 'allow';
    }
    if (kind === 'ask' && policy.securityMode === 'unrestricted') {
      return finish('allow', 'allowed', false, `${reason}; allowed without asking in unrestricted mode`, segments);
    }
    if (kind === 'ask' && req.safeMode === false) {
      return finish('allow', 'allowed', false, `${reason}; allowed without asking because safe mode is off`, segments);
    }
    if (kind === 'ask' && req.interactive === false) {
      return finish('deny', 'approval_unavailable', false, `${reason}; nobody can approve a non-interactive request`, segments);
    }
    return finish(kind, kind === 'allow' ? 'allowed' : code, false, reason, segments);
  }

  /**
   * Every directory a later segment may run in. `cd` may fail, and loops repeat, so the set only grows:
   * a path must be fine from every one of them. A relative `cd` inside a loop could climb without end.
   */
  private followCd(units: Unit[], cwd: string): string[] {
    const cwds = [cwd];
    for (const u of units) {
      const target = u.a.cd?.target;
      if (!target || u.a.unsupported || u.seg.unsupported) continue;
      if (u.seg.inLoop && !target.value.startsWith('/')) {
        u.problem ??= 'a relative `cd` inside a loop can move anywhere, which the path check cannot follow';
        continue;
      }
      for (const c of [...cwds]) {
        const next = resolve(c, target.value);
        if (!cwds.includes(next)) cwds.push(next);
      }
      // Each relative `cd` can double the set; past a bound, stop following rather than blow up.
      if (cwds.length > MAX_CWDS) {
        u.problem ??= `more than ${MAX_CWDS} possible working directories, which the path check does not follow`;
        cwds.length = MAX_CWDS;
      }
    }
    return cwds;
  }

  private segmentVerdict(u: Unit, policy: ExecPolicy, req: DecisionRequest, cwdVerdict: PathVerdict, cwds: string[]): SegmentVerdict {
    const { seg, a } = u;
    const problem = u.problem ?? seg.unsupported ?? a.unsupported;
    if (problem) return { severity: 2, code: 'unsupported_construct', reason: problem };

    for (const layer of a.layers) {
      for (const source of policy.blockedPatterns) {
        const p = this.pattern(source);
        if (p && layerMatches(p, layer)) {
          return { severity: 3, code: 'blocked_pattern', pattern: source, reason: `\`${layer.text}\` matches the blocked pattern "${source}"` };
        }
      }
    }
    for (const layer of a.layers) {
      for (const source of policy.blockedPatterns) {
        const p = this.pattern(source);
        if (p && layerMightMatch(p, layer)) {
          return { severity: 2, code: 'unsupported_construct', pattern: source, reason: `\`${layer.text}\` holds an expansion that could complete the blocked pattern "${source}"` };
        }
      }
    }

    const path = this.pathVerdict(u, policy.allowedPaths, cwdVerdict, cwds);
    if (!path.ok) {
      return path.kind === 'outside'
        ? { severity: 3, code: 'path_not_allowed', reason: path.reason }
        : { severity: 2, code: 'unsupported_construct', reason: path.reason };
    }
    if (seg.kind === 'context') return { severity: 0, code: 'allowed', reason: 'words checked' };
    if (a.layers.length === 0) return { severity: 0, code: 'allowed', reason: 'runs no command (assignments or redirects only)' };

    const texts = a.layers.map((l) => l.text);
    for (const rule of req.rememberedRules ?? []) {
      if (!rule.enabled || rule.action !== 'allow') continue;
      if (rule.cwd !== undefined && normalise(rule.cwd) !== cwds[0]) continue;
      // A prefix remembered from `npm test` must not vouch for code the matcher cannot see.
      if (a.opaque && rule.scope !== 'exact') continue;
      if (texts.some((t) => testRegex(rule.pattern, t))) {
        return { severity: 0, code: 'allowed', rule: rule.name, remembered: true, reason: `allowed by the remembered rule "${rule.name}"` };
      }
    }
    const rule = firstRule(policy.rules, texts);
    if (rule) {
      if (rule.action === 'deny') return { severity: 2, code: 'rule_denied', rule: rule.name, reason: `denied by the rule "${rule.name}"` };
      if (rule.action === 'ask') return { severity: 1, code: 'rule_ask', rule: rule.name, reason: `the rule "${rule.name}" asks for approval` };
      return { severity: 0, code: 'allowed', rule: rule.name, reason: `allowed by the rule "${rule.name}"` };
    }
    if (policy.noMatch === 'deny') return { severity: 2, code: 'no_match', reason: 'no rule matches and noMatch is deny' };
    if (a.opaque) return { severity: 2, code: 'opaque_execution', reason: `${a.opaque}, and no rule explicitly allows it` };
    return { severity: 0, code: 'allowed', reason: 'no rule matches and noMatch is allow' };
  }

  private pathVerdict(u: Unit, allowed: readonly AllowedPath[], cwdVerdict: PathVerdict, cwds: string[]): PathVerdict {
    if (!cwdVerdict.ok) return cwdVerdict;
    const { seg, a } = u;
    for (let i = 0; i < seg.words.length; i++) {
      const w = seg.words[i];
      if (w === undefined || a.notPaths.has(i)) continue;
      if (a.names.has(i)) {
        // Programs of the sandbox image (/usr/bin/git) are not a path access; anything else named by path is.
        if (!w.value.includes('/') || isSystemProgram(w.value)) continue;
        const v = checkWord(w, cwds, allowed, false, 'program');
        if (!v.ok) return v;
        continue;
      }
      const v = checkWord(w, cwds, allowed, false, seg.kind === 'context' ? 'word' : 'argument');
      if (!v.ok) return v;
    }
    if (a.cd?.target) {
      for (const c of cwds) {
        const v = checkResolved(resolve(c, a.cd.target.value), allowed, false, `the directory ${a.cd.target.raw}`);
        if (!v.ok) return v;
      }
    }
    for (const r of seg.redirects) {
      if (r.fdDup || r.target === null) continue;
      const t = r.target;
      if (t.unsupported) return { ok: false, kind: 'unsupported', reason: t.unsupported };
      if (t.dynamic || t.glob || t.brace) return { ok: false, kind: 'unsupported', reason: `the redirect target ${t.raw} holds an expansion, so the path check cannot resolve it` };
      if (t.tilde) return { ok: false, kind: 'outside', reason: `the redirect target ${t.raw} names a home directory, which is not an allowed path` };
      for (const c of cwds) {
        const v = checkResolved(resolve(c, t.value), allowed, r.write, `the redirect ${r.op} ${t.raw}`);
        if (!v.ok) return v;
      }
    }
    return { ok: true };
  }
}

function firstRule(rules: readonly PolicyRule[], texts: string[]): PolicyRule | null {
  for (const rule of rules) {
    if (!rule.enabled) continue;
    if (texts.some((t) => testRegex(rule.pattern, t))) return rule;
  }
  return null;
}

/** `RegExp.test` with a `g` or `y` flag is stateful; reset it so a rule matches the same way every time. */
function testRegex(re: RegExp, text: string): boolean {
  re.lastIndex = 0;
  const hit = re.test(text);
  re.lastIndex = 0;
  return hit;
}
