/**
 * The engine's argv (before wrapper unwrapping) must be exactly what bash would execute. Real bash is the
 * oracle: `printf '%s\0' WORDS` prints the words bash built.
 */
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { createPolicyEngine, type PolicyEngine } from '../../../src/policy/index.js';
import { printableWord, spellingOf } from './spelling.js';

let engine: PolicyEngine;
beforeAll(async () => {
  engine = await createPolicyEngine();
});

function bashArgv(words: string): string[] {
  const r = spawnSync('bash', ['--norc', '--noprofile', '-c', `printf '%s\\0' ${words}`], {
    env: { PATH: '/usr/bin:/bin', LC_ALL: 'C.UTF-8', HOME: '/nonexistent' },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`bash failed on ${JSON.stringify(words)}: ${r.stderr}`);
  return r.stdout.split('\0').slice(0, -1);
}

function engineArgv(command: string): string[] | null {
  const s = engine.segments(command);
  if (!s.ok && s.code === 'unsupported_construct') return null; // refused: fail closed is fine
  if (!s.ok) throw new Error(`engine refused ${JSON.stringify(command)}: ${s.reason}`);
  expect(s.segments).toHaveLength(1);
  return (s.segments[0]?.argv ?? []).slice(2);
}

const fixed = [
  "r''m -fr x", '"rm" -rf x', 'r\\m -rf x', "$'\\x72m' -rf x", "$'\\162m'", "$'a\\tb'", "$'\\u00e9'", '$"hello"', 'a$"b"c',
  '"a b" c', "'a \"b\" c'", '"a \\"b\\" c"', '"\\$x \\` \\\\ \\a"', 'a\\ b', '\\\\', "'\\'", '"a\\\nb"', 'r\\\nm -rf', 'a \\\n b',
  '-rf --x=/y ./z ../q', "'#' a#b", 'a=b c=d', '@{u} x{} {}', "'*' \\? \"[a]\"", "x'$y'z", "\"'\"", "'\"'", 'é ü', '--', '-', "''", '""',
  "$'\\\\'", "$'\\x41\\x42'", 'a"b"\'c\'$\'d\'', '"$"', 'a$', '%s %d', 'a,b:c', "$'\\e'x".replace("\\e", 'n'),
];

describe('differential against bash: fixed spellings', () => {
  it.each(fixed.map((c) => [c]))('%j', (words) => {
    expect(engineArgv(`printf '%s\\0' ${words}`)).toEqual(bashArgv(words));
  });
});

describe('differential against bash: generated spellings', () => {
  it('argv matches bash for random printable words in random quoting (when the engine accepts them)', () => {
    let accepted = 0;
    let total = 0;
    fc.assert(
      fc.property(
        fc.array(printableWord, { minLength: 1, maxLength: 4 }).chain((words) => spellingOf(words).map((spelled) => ({ words, spelled }))),
        ({ words, spelled }) => {
          const fromBash = bashArgv(spelled);
          expect(fromBash).toEqual(words);
          total++;
          const argv = engineArgv(`printf '%s\\0' ${spelled}`);
          // The engine may refuse a spelling (fail closed) but must never read it differently from bash.
          if (argv === null) return;
          accepted++;
          expect(argv).toEqual(words);
        },
      ),
      { numRuns: 400 },
    );
    expect(accepted / total).toBeGreaterThan(0.8);
  }, 60_000);
});

describe('differential against bash: where tree-sitter-bash and bash disagree, the engine refuses', () => {
  it.each([
    ["echo $'\\\\' ; rm -rf x ; # '"],
    ["echo $'a\\\\' ; rm -rf x ; # '"],
    ['echo \\  x'],
    ['echo \\ '],
  ])('%j', (command) => {
    const s = engine.segments(command);
    expect(s.ok).toBe(false);
  });
});

describe('differential against bash: command structure', () => {
  /** Runs the whole script in bash; every segment is a printf of its words then a SEGEND marker. */
  function bashScript(script: string): string[] {
    const r = spawnSync('bash', ['--norc', '--noprofile', '-c', script], {
      env: { PATH: '/usr/bin:/bin', LC_ALL: 'C.UTF-8', HOME: '/nonexistent' },
      encoding: 'utf8',
    });
    return r.stdout.split('\0').slice(0, -1);
  }

  it('the segments and their argv are the ones bash runs, whatever the quoting, separators and comments', () => {
    let accepted = 0;
    let total = 0;
    const segment = fc.array(printableWord, { minLength: 0, maxLength: 3 }).chain((words) => spellingOf(words).map((spelled) => ({ words, spelled })));
    const sep = fc.constantFrom(' ; ', ';', '\n', ' && ', '&&');
    fc.assert(
      fc.property(fc.array(fc.tuple(segment, sep), { minLength: 1, maxLength: 4 }), fc.option(printableWord), (parts, comment) => {
        const script = parts.map(([s, sp], i) => `printf '%s\\0' ${s.spelled} SEGEND${i < parts.length - 1 ? sp : ''}`).join('')
          + (comment === null ? '' : ` # ${comment}`);
        const expected = parts.flatMap(([s]) => [...s.words, 'SEGEND']);
        total++;
        expect(bashScript(script)).toEqual(expected);
        const seg = engine.segments(script);
        if (!seg.ok) return; // refused: fail closed is fine
        accepted++;
        expect(seg.segments.flatMap((s) => s.argv.slice(2))).toEqual(expected);
      }),
      { numRuns: 300 },
    );
    expect(accepted / total).toBeGreaterThan(0.7);
  }, 120_000);
});

describe('differential against bash: redirects between words', () => {
  it.each([
    ['a 3>/dev/null b c'], ['a 2>/dev/null b'], ['a 0</dev/null b c'], ['a 5</dev/null b'], ['a 4>/dev/null b 2>/dev/null c'],
    ['a 2>&1 b'], ['a 3>/dev/null 4>/dev/null b'], ['a b 2>/dev/null'], ['a 6</dev/null'],
  ])('%j', (words) => {
    expect(engineArgv(`printf '%s\\0' ${words}`)).toEqual(bashArgv(words));
  });
});

describe('differential against bash: redirects anywhere', () => {
  it('words around redirects are the arguments bash passes', () => {
    const redirect = fc.constantFrom('', '', '2>/dev/null', '3</dev/null', '4>/dev/null', '2>&1', '5>>/dev/null', '0</dev/null');
    const token = printableWord.chain((w) => fc.tuple(spellingOf([w]), redirect).map(([spelled, r]) => ({ w, text: r ? `${spelled} ${r}` : spelled })));
    let accepted = 0;
    let total = 0;
    fc.assert(
      fc.property(fc.array(token, { minLength: 1, maxLength: 5 }), redirect, (tokens, lead) => {
        const words = tokens.map((t) => t.text).join(' ');
        const expected = tokens.map((t) => t.w);
        expect(bashArgv(words)).toEqual(expected);
        total++;
        const command = `printf '%s\\0' ${lead ? `${lead} ` : ''}${words}`;
        const s = engine.segments(command);
        if (!s.ok) return;
        accepted++;
        expect(s.segments.flatMap((x) => x.argv.slice(2))).toEqual(expected);
      }),
      { numRuns: 300 },
    );
    expect(accepted / total).toBeGreaterThan(0.7);
  }, 120_000);
});
