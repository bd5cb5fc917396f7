import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { sessionOf } from '../../src/priority.js';

/**
 * gateway.nice (src/priority.ts). The parsing is pure; applying it is checked in child processes, with a
 * positive nice (which any user may set) so the whole path runs without privilege. The service process
 * itself is checked in test/integration/process.test.ts.
 */
describe('sessionOf', () => {
  const cases: [string, string, number][] = [
    ['plain', '1234 (node) S 1 1234 1234 0 -1 4194560', 1234],
    ['spaces in the name', '77 (my prog x) R 5 70 71 34816 77', 71],
    ['parentheses in the name', '88 (a) b (c)) S 2 3 4 0 -1', 4],
    ['a name that looks like fields', '9 (S 1 2 3) S 10 11 12 0', 12],
  ];
  it.each(cases)('%s', (_name, stat, session) => {
    expect(sessionOf(stat)).toBe(session);
  });
  it('reads this process', () => {
    expect(Number.isInteger(sessionOf(readFileSync('/proc/self/stat', 'utf8')))).toBe(true);
  });
});

// The child runs plain node (20 has no type stripping): the module, transpiled by TypeScript.
const priorityModule = join(mkdtempSync(join(tmpdir(), 'execgate-priority-')), 'priority.mjs');
writeFileSync(
  priorityModule,
  ts.transpileModule(readFileSync(fileURLToPath(new URL('../../src/priority.ts', import.meta.url)), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText,
);
afterAll(() => rmSync(dirname(priorityModule), { recursive: true, force: true }));

/** Runs applyNice(nice) in a fresh node (own session or not) that starts a few threads first; answers what
 *  it returned and, read from outside, the nice of each of its threads and its autogroup line. */
async function applyInChild(nice: number, ownSession: boolean): Promise<{ outcome: Record<string, unknown>; threads: number[]; autogroup: string }> {
  const script = `
    const { applyNice } = await import(${JSON.stringify(priorityModule)});
    await Promise.all([1, 2, 3].map(() => import('node:crypto').then((c) => new Promise((r) => c.pbkdf2( 'x', 'y', 1, 8, 'sha1', r)))));
    const outcome = applyNice(${nice});
    process.stdout.write(JSON.stringify(outcome) + '\\n');
    setTimeout(() => {}, 30_000);
    process.stdin.on('data', () => process.exit(0));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    detached: ownSession,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.trim());
      });
      child.once('exit', (code) => reject(new Error(`child exited ${code}: ${out}`)));
    });
    const pid = child.pid!;
    const threads = readdirSync(`/proc/${pid}/task`).map((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
    });
    return { outcome: JSON.parse(line) as Record<string, unknown>, threads, autogroup: readFileSync(`/proc/${pid}/autogroup`, 'utf8') };
  } finally {
    child.kill('SIGKILL');
  }
}

describe('applyNice', () => {
  const autogroupOn = readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1';

  it('sets every thread, and the autogroup of a session it leads', async () => {
    const r = await applyInChild(5, true);
    expect(r.outcome.error).toBeUndefined();
    const threads = r.outcome.threads as { set: number; of: number };
    expect(threads.set).toBe(threads.of);
    expect(threads.of).toBeGreaterThan(4);
    expect(new Set(r.threads)).toEqual(new Set([5]));
    if (autogroupOn) {
      expect(r.outcome.autogroup).toBe('set');
      expect(r.autogroup).toMatch(/ nice 5\n?$/);
    } else {
      expect(r.outcome.autogroup).toBe('absent');
    }
  });

  it('leaves the autogroup alone when the session is someone else\'s (a terminal, a test runner)', async () => {
    const before = readFileSync('/proc/self/autogroup', 'utf8');
    const r = await applyInChild(6, false);
    expect(new Set(r.threads)).toEqual(new Set([6]));
    expect(r.outcome.autogroup).toBe(autogroupOn ? 'not-session-leader' : 'absent');
    expect(r.autogroup).toBe(before);
  });

  it('raising priority is root\'s (CAP_SYS_NICE): set when permitted, otherwise an error and nothing changed', async () => {
    const r = await applyInChild(-3, true);
    if (process.getuid?.() === 0) {
      expect(r.outcome.error).toBeUndefined();
      expect(new Set(r.threads)).toEqual(new Set([-3]));
    } else {
      expect(String(r.outcome.error)).toMatch(/EACCES|EPERM|permission/i);
      expect(new Set(r.threads)).toEqual(new Set([0]));
    }
  });
});
