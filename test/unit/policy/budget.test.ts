/**
 * The parser's budgets fail closed: a command whose syntax tree has more nodes than the node budget, nests
 * deeper than the nesting budget, or takes longer than the time budget to parse and analyse is a hard deny
 * `invalid_command` whose reason names the budget, never a crash, a hang, an internal error or an `allow`.
 * Hard, like a command over 16 KiB: past a budget nothing in the command was checked (blocked patterns
 * included), and a soft deny would become `allow` in unrestricted mode or with safe mode off.
 *
 * The time budget is tested with an injected clock, told the phase it is read in: no test here depends on
 * how fast the machine is.
 */
import { describe, expect, it } from 'vitest';
import { createPolicyEngine, DEFAULT_BUDGET, type BudgetPhase, type Decision, type ParseBudget, type PolicyEngine } from '../../../src/policy/index.js';
import { CWD, DEFAULT_ALLOW_POLICY } from './corpus.js';

const decide = (engine: PolicyEngine, command: string): Decision => engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
const UNRESTRICTED = { ...DEFAULT_ALLOW_POLICY, securityMode: 'unrestricted' as const };

/** What a decision says about budgets: the budget it names, or how it came out. */
function outcome(d: Decision): string {
  const m = /exceeds the (node|nesting|time) budget(?:: (parsing|analysing))?/.exec(d.reason);
  if (!m) return d.decision;
  // Every budget deny has the same shape: hard, invalid_command, and no segment claimed to be checked.
  expect({ decision: d.decision, code: d.code, hard: d.hard, segments: d.segments }).toEqual({ decision: 'deny', code: 'invalid_command', hard: true, segments: [] });
  return m[2] ? `${m[1]}:${m[2]}` : m[1]!;
}

const chain = (n: number, sep: string) => Array.from({ length: n }, () => 'ls').join(sep);
/** A clock that stands still: the node and nesting tables do not depend on the machine's speed. */
const FROZEN = { now: () => 0 };
const subshells = (n: number) => `${'( '.repeat(n)}ls${' )'.repeat(n)}`;

describe('the node budget: a syntax tree with more nodes than the budget is denied, naming it', () => {
  it.each<[string, Partial<ParseBudget>, string, string]>([
    ['a short command, small budget', { maxNodes: 20 }, 'ls -la src', 'allow'],
    ['ten commands, small budget', { maxNodes: 20 }, chain(10, '; '), 'node'],
    ['five commands, small budget', { maxNodes: 20 }, chain(5, '; '), 'allow'],
    ['the budget spans the `sh -c` scripts of the command', { maxNodes: 20 }, `sh -c '${chain(5, '; ')}'`, 'node'],
    ['the same ten commands, default budget', {}, chain(10, '; '), 'allow'],
    ['a long script of ordinary commands fits the default budget', {}, chain(1500, '\n'), 'allow'],
    ['8000 one-letter commands (16 KiB of `a;`) exceed the default budget', {}, 'a;'.repeat(8000), 'node'],
    ['16 KiB of quotes exceed the default budget', {}, '"'.repeat(16_000), 'node'],
    // Counted before parsing: tree-sitter spends seconds on a long broken pipeline without calling back.
    ['a 1000-stage pipeline fits', {}, chain(1000, '|'), 'allow'],
    ['8000 `a|` (a broken 16 KiB pipeline) exceed the pipe count', {}, 'a|'.repeat(8000), 'node'],
    ['a small pipe count', { maxPipes: 2 }, 'ls | sort | uniq', 'allow'],
    ['a small pipe count, exceeded', { maxPipes: 2 }, 'ls | sort | uniq | wc', 'node'],
  ])('%s', async (_name, budget, command, expected) => {
    const engine = await createPolicyEngine({ budget: { ...FROZEN, ...budget } });
    expect(outcome(decide(engine, command))).toBe(expected);
  });
});

describe('the nesting budget: a tree deeper than the budget is denied, naming it, and never overflows the stack', () => {
  it.each<[string, Partial<ParseBudget>, string, string]>([
    ['20 nested subshells', {}, subshells(20), 'allow'],
    ['500 nested subshells', {}, subshells(500), 'nesting'],
    ['4000 nested subshells', {}, subshells(4000), 'nesting'],
    ['10k `(` (over 16 KiB: refused before parsing)', {}, `${'('.repeat(10_000)}ls${')'.repeat(10_000)}`, 'deny'],
    ['5000 nested command substitutions (a stack overflow before the budget)', {}, `echo ${'$('.repeat(5000)}ls${')'.repeat(5000)}`, 'nesting'],
    ['an && chain of 100 commands', {}, chain(100, ' && '), 'allow'],
    ['an && chain of 3000 commands (tree-sitter nests lists to the left)', {}, chain(3000, '&&'), 'nesting'],
    ['a 2000-term [[ ]] test', {}, `[[ ${'-a a '.repeat(2000)}]]`, 'nesting'],
    ['a small nesting budget', { maxDepth: 6 }, subshells(3), 'nesting'],
    ['a small nesting budget, kept', { maxDepth: 6 }, subshells(1), 'allow'],
  ])('%s', async (_name, budget, command, expected) => {
    const engine = await createPolicyEngine({ budget: { ...FROZEN, ...budget } });
    expect(outcome(decide(engine, command))).toBe(expected);
  });
});

describe('the time budget: a decision that runs past the budget is denied, naming it and the phase', () => {
  /** A clock that stands still, except in `phase`, where it is always past any deadline. */
  const lateIn = (phase: BudgetPhase | 'never') => {
    let first = true;
    return (p: BudgetPhase): number => {
      if (first) {
        first = false;
        return 0; // the start of the decision
      }
      return p === phase ? 1e12 : 0;
    };
  };
  // Long enough that tree-sitter calls the progress callback while it parses.
  const long = chain(600, ' | ');

  it.each<[string, BudgetPhase | 'never', string, string]>([
    ['late while parsing: the parse is cancelled', 'parsing', long, 'time:parsing'],
    ['late while parsing a short command', 'parsing', 'ls', 'time:parsing'],
    ['late while analysing', 'analysing', 'ls', 'time:analysing'],
    ['late while analysing a long command', 'analysing', long, 'time:analysing'],
    ['never late', 'never', long, 'allow'],
  ])('%s', async (_name, phase, command, expected) => {
    const engine = await createPolicyEngine({ budget: { timeMs: 1_000, now: lateIn(phase) } });
    expect(outcome(decide(engine, command))).toBe(expected);
  });

  it('a cancelled parse is not resumed by the next decision: the parser starts over on the next command', async () => {
    let late = true;
    let start = true;
    const engine = await createPolicyEngine({
      budget: {
        timeMs: 1_000,
        now: () => {
          if (start) {
            start = false;
            return 0;
          }
          return late ? 1e12 : 0;
        },
      },
    });
    expect(outcome(decide(engine, `${long} ; rm -rf x`))).toBe('time:parsing');
    late = false;
    for (const command of ['ls -la', `${long} ; cat README.md`]) {
      start = true;
      const d = decide(engine, command);
      expect(d.decision, d.reason).toBe('allow');
      expect(d.segments.at(-1)?.canonical ?? '').toBe(command === 'ls -la' ? 'ls -a -l' : 'cat README.md');
    }
    start = true;
    expect(decide(engine, `${long} ; rm -rf x`).code).toBe('blocked_pattern');
  });
});

describe('budgets are hard denies', () => {
  it('even in unrestricted mode, where a soft deny would become allow', async () => {
    const engine = await createPolicyEngine({ budget: { maxNodes: 20 } });
    const d = engine.decide({ command: `${chain(10, '; ')}; rm -rf /srv/proj`, cwd: CWD }, UNRESTRICTED);
    expect({ decision: d.decision, hard: d.hard }).toEqual({ decision: 'deny', hard: true });
  });

  it('segments() (used to build remembered rules) refuses too, naming the budget', async () => {
    const engine = await createPolicyEngine({ budget: { maxNodes: 20 } });
    const s = engine.segments(chain(10, '; '));
    expect(s).toMatchObject({ ok: false, code: 'invalid_command', reason: expect.stringMatching(/node budget/) });
  });

  it('the defaults are the documented ones', () => {
    expect(DEFAULT_BUDGET).toEqual({ maxNodes: 20_000, maxPipes: 1_000, maxDepth: 400, timeMs: 1_000 });
  });
});

describe('pathological input at the 16 KiB limit is decided (by a budget, or as it is), never by an internal error', () => {
  const fit = (unit: string, prefix = '') => prefix + unit.repeat(Math.floor((16 * 1024 - prefix.length) / unit.length));
  it.each([
    ['$((', fit('$((')], ['(', fit('(')], ['$(', fit('$(')], ['`', fit('`')], ['a|', fit('a|')], ['a&&', fit('a&&')], ['cd a;', fit('cd a;')],
    ['{ ', fit('{ ')], ['if a; then ', fit('if a; then ')], ['case', `case x in ${fit('a) b;; ')}`.slice(0, 16 * 1024 - 5) + ' esac'],
    ['f(){ ', fit('f(){ ')], ['[[ -a a ', fit(' -a a', '[[ a')], ['"$(echo "', fit('"$(echo ')], ['<<a ', fit('<<a ', 'cat ')],
  ])('%s…', async (_name, command) => {
    const engine = await createPolicyEngine();
    const d = decide(engine, command);
    expect(d.reason).not.toMatch(/internal error/);
    expect(['allow', 'ask', 'deny']).toContain(d.decision);
  });
});
