/**
 * Differential fuzzing of the policy's bash parser against real bash: mutations of the seed corpora (quotes,
 * backslashes, `$`, brackets, separators, redirects, newlines, comments, backticks, spaces, keywords, splices
 * of two seeds) are decided by the engine and parsed, without running anything, by `bash --pretty-print`
 * (bash's own parser, which prints back what it read).
 *
 * Promises checked for every generated command:
 *   - deciding never throws, never hangs and never reports an internal error;
 *   - a command that bash rejects as a syntax error is never `allow`;
 *   - an allowed command has the same segments, each with the same argv, in the same order, as bash's own
 *     re-printing of it: bash's printer makes its reading explicit (one simple command per `;`, `&&`, `||`, `|`,
 *     `&`, newline; redirects moved to the end with their descriptor; no comments or line continuations), so
 *     a segment or an argument the engine misses, invents or misplaces shows up as a difference. Word values
 *     (quote removal) are compared with bash by the argv differential tests (differential.test.ts).
 * The sandbox runs commands with /bin/sh -c, which is dash in its image: dash has no printer, so what it
 * reads otherwise is pinned by examples at the end (run with fixed echo probes, never with generated text).
 *
 * Reproducible: a fixed seed (FUZZ_SEED), FUZZ_RUNS generated commands (default 1000). Nothing generated is
 * ever executed: bash only parses files (`--pretty-print FILE`, never `-c`).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyEngine, type Decision, type PolicyEngine } from '../../../src/policy/index.js';
import { BENIGN, CWD, DEFAULT_ALLOW_POLICY, HOSTILE } from './corpus.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20240808);
const RUNS = Number(process.env.FUZZ_RUNS ?? 1000);

let engine: PolicyEngine;
let dir: string;
beforeAll(async () => {
  engine = await createPolicyEngine();
  dir = mkdtempSync(join(tmpdir(), 'execgate-bash-fuzz-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const EXTRA_SEEDS = [
  'if [ -f a ]; then echo yes; else echo no; fi', 'while read l; do echo "$l"; done < in.txt', 'case "$x" in a) ls;; *) pwd;; esac',
  '{ ls; pwd; } > out.txt', '(cd src && make)', 'echo "a $(date) b"', 'ls `pwd`', 'echo ${HOME}', "echo $'a\\tb'", 'a=1 b=2 env',
  'ls | sort | uniq -c', 'make 2>&1 | tee log', 'echo a # comment ; rm -rf x', 'echo "#not a comment" ; ls', "echo 'a;b' \"c|d\" e\\&f",
  '[[ -n "$x" && -d src ]]', '[ "$a" = b ] || exit 1', 'for i in 1 2 3; do echo $i; done', 'ls &>/dev/null &', 'cat <<< hi',
  'echo \\$HOME \\`id\\`', 'ls -la \\\n  src', 'time ls', '! grep -q x file', 'ls; ; ls', 'f() { ls; }', 'echo $((1+2))',
];
const SEEDS = [...BENIGN, ...HOSTILE, ...EXTRA_SEEDS];

/** Characters and tokens where shells are most likely to disagree. */
const TOKEN = fc.constantFrom(
  "'", '"', '\\', '$', '(', ')', '{', '}', ';', '&', '|', '<', '>', '\n', '#', '`', ' ', '$(', '${', "$'", '$"', '&&', '||', ';;',
  '<<', '>&', '&>', '|&', '[[', ']]', '((', '))', '\\\n', "\\'", '\\"', '2>&1', '=', '~', '*', '!', '\t', 'rm -rf x', 'sudo',
  '>&-', '<&', '-', '--', '1', '2', '777', '$2', ' -f', 'esac', 'fi', 'done', 'then', 'in', 'case', 'for', 'time', '[', ']', '-~',
);

type Mutation = (s: string) => string;
const at = (s: string, i: number) => Math.min(i, s.length);
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.nat(), TOKEN).map(([i, t]) => (s: string) => s.slice(0, at(s, i % (s.length + 1))) + t + s.slice(at(s, i % (s.length + 1)))),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 3 })).map(([i, n]) => (s: string) => (s.length === 0 ? s : s.slice(0, i % s.length) + s.slice((i % s.length) + n))),
  fc.tuple(fc.nat(), TOKEN).map(([i, t]) => (s: string) => (s.length === 0 ? t : s.slice(0, i % s.length) + t + s.slice((i % s.length) + 1))),
  fc.tuple(fc.constantFrom(...SEEDS), fc.nat(), fc.nat(), fc.constantFrom('', ' ', ';', '\n', '&&', '|', '&', '#')).map(([other, i, j, glue]) => (s: string) =>
    s.slice(0, i % (s.length + 1)) + glue + other.slice(j % (other.length + 1)),
  ),
);

const commandArb = fc.tuple(fc.constantFrom(...SEEDS), fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([seed, ms]) => ms.reduce((s, m) => m(s), seed));

interface ShellVerdict {
  bash: boolean;
  /** bash's re-printing of the parsed command (only when bash accepts it). */
  printed: string | null;
}

/**
 * One driver process parses every case file with `bash --pretty-print` (a file: the generated text is never
 * executed) and reports, per case, its exit status and the printed text. A message on stderr counts as a
 * rejection too: bash exits 0 on some syntax errors (`[[ -~ x ]]` only prints "conditional binary operator
 * expected"; `bash -n` misses it altogether).
 */
function shells(commands: string[]): ShellVerdict[] {
  commands.forEach((c, i) => writeFileSync(join(dir, `${i}.sh`), c));
  const driver = [
    'for ((i = 0; i < $1; i++)); do',
    '  f="$2/$i.sh"',
    '  p=$(bash --pretty-print "$f" 2>"$2/err"); b=$?',
    '  if [ -s "$2/err" ]; then b=9; fi',
    '  printf "%s\\0%s\\0" "$b" "$p"',
    'done',
  ].join('\n');
  const r = spawnSync('bash', ['--norc', '--noprofile', '-c', driver, 'driver', String(commands.length), dir], {
    env: { PATH: '/usr/bin:/bin', LC_ALL: 'C.UTF-8', HOME: '/nonexistent' },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`the shell driver failed: ${r.stderr}`);
  const parts = r.stdout.split('\0');
  return commands.map((_, i) => {
    const ok = parts[2 * i] === '0';
    return { bash: ok, printed: ok ? (parts[2 * i + 1] ?? '') : null };
  });
}

/**
 * The argv of each segment, as the engine reads it (before wrappers are unwrapped). bash prints `[[ x ]]` as
 * `[[ -n x ]]`, the same test, so a `-n` right after `[[` is left out on both sides.
 */
function canonical(command: string): string[] | null {
  const s = engine.segments(command);
  if (!s.ok) return null;
  return s.segments.map((x) => JSON.stringify(x.argv[0] === '[[' && x.argv[1] === '-n' ? ['[[', ...x.argv.slice(2)] : x.argv));
}

describe('bash is there (the fuzzer compares with it; it never skips)', () => {
  it('bash parses a file and prints what it read', () => {
    expect(shells(['echo ok', 'echo "', '[[ -~ x ]]', 'a&&b;c 2>/dev/null'])).toEqual([
      { bash: true, printed: 'echo ok' },
      { bash: false, printed: null },
      { bash: false, printed: null },
      { bash: true, printed: 'a && b; c 2> /dev/null' },
    ]);
  });
});

describe('mutated commands: the engine never allows what bash would read differently', () => {
  const commands = fc.sample(commandArb, { seed: SEED, numRuns: RUNS });
  let verdicts: ShellVerdict[] = [];
  let decisions: Decision[] = [];
  beforeAll(() => {
    verdicts = shells(commands);
    decisions = commands.map((command) => engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY));
  }, 120_000);

  it('deciding never fails (no throw, no internal error), and the fuzzer reaches every outcome', () => {
    const kinds = new Set<string>();
    for (const [i, d] of decisions.entries()) {
      expect(['allow', 'ask', 'deny'], JSON.stringify(commands[i])).toContain(d.decision);
      expect(d.reason, JSON.stringify(commands[i])).not.toMatch(/internal error/);
      kinds.add(d.decision);
    }
    // A fuzzer that only ever produced syntax errors would prove nothing: the mix is part of the test.
    expect([...kinds].sort()).toEqual(['allow', 'ask', 'deny']);
    expect(verdicts.filter((v) => v.bash).length).toBeGreaterThan(RUNS / 10);
    expect(verdicts.filter((v) => !v.bash).length).toBeGreaterThan(RUNS / 10);
  });

  it('a command bash rejects as a syntax error is never allowed', () => {
    const wrong = commands.filter((_, i) => decisions[i]!.decision === 'allow' && !verdicts[i]!.bash);
    expect(wrong.map((c) => JSON.stringify(c))).toEqual([]);
  });

  it('an allowed command has the segments of bash\'s own re-printing of it', () => {
    const differ: string[] = [];
    let compared = 0;
    // Bash's printing can hold what the engine refuses where the original did not (an assignment with a
    // redirect, `2>&1 |` for `|&`): a refusal there is fail-closed, not a disagreement; counted, not compared.
    let refusedPrinted = 0;
    for (const [i, command] of commands.entries()) {
      if (decisions[i]!.decision !== 'allow') continue;
      const printed = verdicts[i]!.printed;
      if (printed === null) continue; // covered by the previous test
      compared++;
      const ours = canonical(command);
      // Bash prints nothing for a command that is only a comment; the engine refuses an empty command.
      const theirs = printed.trim() === '' ? [] : canonical(printed);
      if (theirs === null) {
        refusedPrinted++;
        continue;
      }
      if (JSON.stringify(ours) !== JSON.stringify(theirs)) differ.push(`${JSON.stringify(command)} → ${JSON.stringify(ours)}; bash printed ${JSON.stringify(printed)} → ${JSON.stringify(theirs)}`);
    }
    expect(differ).toEqual([]);
    expect(compared - refusedPrinted).toBeGreaterThan(RUNS / 20);
  });
});

// ---------------------------------------------------------------------------------------------------------
// What the fuzzer found, pinned as examples. Each was `allow` before it was fixed.

describe('regressions: where bash reads a command otherwise than the parser did, the engine does not allow it', () => {
  // [command, what bash's own printing of it shows (its real reading)]
  it.each<[string, string]>([
    // a flag hidden from the matcher (blocked patterns bypassed: bash runs `rm -r -f x`, `chmod 777 f`)
    ['rm -r >& --f x', 'rm -r -f x'],
    ['chmod >& -777 f', 'chmod 777 f'],
    ['chmod 777&>/dev/null f', 'chmod 777 f'],
    ['rm -r$"f" x', 'rm -r"f" x'],
    ['perl -n2>&1 f', 'perl -n2 f'],
    ['no]]$2>&1', 'no]]$2'],
    // a command hidden in an argument: `\rm -rf x` runs on a line of its own
    ['ls \\\\\n\\rm -rf x', '\n\\rm -rf x'],
    // a redirect that is not a test operator, a command named `[$`
    ['[ a > b ]', '[ a ] > b'],
    ['[$  packagejson ]', '[$ packagejson ]'],
  ])('%j (bash: %j)', (command, bashReads) => {
    const [v] = shells([command]);
    expect(v!.printed).toContain(bashReads);
    const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
    expect(d.decision, d.reason).not.toBe('allow');
  });

  it.each([
    ['a;;b'], ['time && ls'], ['echo>&\nrm -rx'], ['{ ls; }#x'], ['for f in a b ;; do echo $f; done'], ['case x in a) ls esac'],
    ['for f in777a b c; do echo $f; done'], ['if a; then fi'], ['[[ -~ x ]]'], ['[[ -n "$x"  -d y ]]'], ['a | ! b'], ['case\n x in a) ls;; esac'],
    ['g<2>&1t config'], ['mkdir build;&> cd build'], ['{\\" ls; pwd; }'], ['a || exit 0<&1'],
  ])('%j is a syntax error to bash (or misread by the parser) and is not allowed', (command) => {
    const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
    expect(d.decision, d.reason).not.toBe('allow');
    // All but the last are syntax errors to bash; the last is read by bash with `0<&1` on `exit` alone.
    if (command !== 'a || exit 0<&1') expect(shells([command])[0]!.bash).toBe(false);
  });
});

describe('regressions: the guards above do not refuse what bash reads plainly', () => {
  // Inside double quotes tree-sitter starts an expansion at the blank before it (` $B` in `"$A $B"`); bash
  // reads that blank and then `$B`, an ordinary expansion.
  it.each([['echo "$API_KEY $MODE"; echo "$DB_URL" >&2'], ['echo "a  $B c ${D}"'], ['printf \'%s\\n\' "x $HOME"']])('%j is allowed, as bash reads it', (command) => {
    expect(shells([command])[0]!.bash).toBe(true);
    const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
    expect(d.decision, d.reason).toBe('allow');
  });
});

describe('regressions: /bin/sh in the sandbox is dash, which reads some bash syntax otherwise', () => {
  // [command the engine must not allow, the same shape with an echo in place of rm, what dash prints for it].
  // Only the fixed echo variants are run (by dash, in an empty directory); nothing generated is.
  it.each<[string, string, string]>([
    ["echo $'\\' ; rm -rf x ; #'", "echo $'\\' ; echo HIDDEN ; #'", 'HIDDEN'],
    ['[[ x || rm == -rf ]]', '[[ x || echo HIDDEN ]]', 'HIDDEN ]]'],
  ])('%j', (command, probe, hidden) => {
    const r = spawnSync('dash', ['-c', probe], { cwd: dir, env: { PATH: '/usr/bin:/bin' }, encoding: 'utf8' });
    expect(r.stdout).toContain(hidden);
    const d = engine.decide({ command, cwd: CWD }, DEFAULT_ALLOW_POLICY);
    expect(d.decision, d.reason).not.toBe('allow');
  });
});
