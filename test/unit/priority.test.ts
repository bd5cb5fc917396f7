import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { inRootCpuCgroup, niceOf, sessionOf } from '../../src/priority.js';
import { autogroupEnabled, baseNice, mayLowerNiceTo, threadNices } from '../support/priority.js';

/**
 * gateway.nice (src/priority.ts). The parsing is pure; applying it is checked in child processes, with nice
 * values above this process's own (which any user may set), so the whole path runs without privilege, and
 * once below it, expecting what the kernel says this process may do. The service process itself is checked
 * in test/integration/process.test.ts.
 */
describe('sessionOf', () => {
  it.each<[string, string, number]>([
    ['plain', '1234 (node) S 1 1234 1234 0 -1 4194560', 1234],
    ['spaces in the name', '77 (my prog x) R 5 70 71 34816 77', 71],
    ['parentheses in the name', '88 (a) b (c)) S 2 3 4 0 -1', 4],
    ['a name that looks like fields', '9 (S 1 2 3) S 10 11 12 0', 12],
  ])('%s', (_name, stat, session) => {
    expect(sessionOf(stat)).toBe(session);
  });
  it('reads this process', () => {
    expect(Number.isInteger(sessionOf(readFileSync('/proc/self/stat', 'utf8')))).toBe(true);
  });
  it('niceOf reads field 19, past a command name with spaces and parentheses', () => {
    expect(niceOf('5 (a) b) S 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 -7 1 0')).toBe(-7);
    expect(niceOf(readFileSync('/proc/self/stat', 'utf8'))).toBe(baseNice());
  });
});

describe('inRootCpuCgroup', () => {
  it.each<[string, string, boolean]>([
    ['v1, cpu at the root', '4:memory:/sandbox/1\n3:cpu,cpuacct:/\n0::/\n', true],
    ['v1, cpu alone at the root', '1:cpu:/\n2:cpuacct:/x\n', true],
    ['v1, in a container', '3:cpu,cpuacct:/docker/abc\n0::/\n', false],
    ['v1, cpuacct is not cpu', '3:cpuacct:/x\n0::/\n', true],
    ['v2 at the root', '0::/\n', true],
    ['v2 under systemd', '0::/system.slice/execgate.service\n', false],
    ['v2 in a container', '0::/docker/abc\n', false],
    ['nothing known', '', true],
  ])('%s', (_name, cgroup, root) => {
    expect(inRootCpuCgroup(cgroup)).toBe(root);
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

interface ChildResult {
  outcome: { nice: number; threads: { set: number; of: number }; autogroup: string; error?: string };
  /** Threads the child had after applying and then starting a worker. */
  threadsAfter: number;
  threads: number[];
  autogroup: string | undefined;
  childCgroupRoot: boolean;
}

/** Runs applyNice(nice) in a fresh node (its own session or not), which then starts a worker thread; answers
 *  what applyNice returned and, read from outside, the nice of every thread and the autogroup line. */
async function applyInChild(nice: number, ownSession: boolean): Promise<ChildResult> {
  const script = `
    const { applyNice } = await import(${JSON.stringify(priorityModule)});
    const { Worker } = await import('node:worker_threads');
    const outcome = await applyNice(${nice});
    // A thread made afterwards: it must inherit the value.
    await new Promise((r) => new Worker('setInterval(() => {}, 1000)', { eval: true }).once('online', r));
    const { readdirSync } = await import('node:fs');
    process.stdout.write(JSON.stringify({ outcome, threadsAfter: readdirSync('/proc/self/task').length }) + '\\n');
    setTimeout(() => {}, 30_000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { detached: ownSession, stdio: ['ignore', 'pipe', 'inherit'] });
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
    const parsed = JSON.parse(line) as Pick<ChildResult, 'outcome' | 'threadsAfter'>;
    return {
      ...parsed,
      threads: threadNices(pid),
      autogroup: autogroupEnabled() ? readFileSync(`/proc/${pid}/autogroup`, 'utf8') : undefined,
      childCgroupRoot: inRootCpuCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8')),
    };
  } finally {
    child.kill('SIGKILL');
  }
}

describe('applyNice', () => {
  const base = baseNice();
  const up = Math.min(19, Math.max(base, 0) + 4);

  it('sets every thread, threads made later inherit it, and the autogroup of a session it leads in the root cgroup', async () => {
    const r = await applyInChild(up, true);
    expect(r.outcome.error).toBeUndefined();
    expect(r.outcome.threads.set).toBe(r.outcome.threads.of);
    expect(r.outcome.threads.of).toBeGreaterThan(1);
    expect(r.threadsAfter).toBeGreaterThan(r.outcome.threads.of);
    expect(r.threads.length).toBeGreaterThanOrEqual(r.threadsAfter);
    expect(new Set(r.threads)).toEqual(new Set([up]));
    if (!autogroupEnabled()) expect(r.outcome.autogroup).toBe('absent');
    else if (!r.childCgroupRoot) expect(r.outcome.autogroup).toBe('cgroup');
    else {
      expect(r.outcome.autogroup).toBe('set');
      expect(r.autogroup).toMatch(new RegExp(` nice ${up}\\n?$`));
    }
  });

  it("leaves the autogroup alone when the session is someone else's (a terminal, a test runner)", async () => {
    const before = autogroupEnabled() ? readFileSync('/proc/self/autogroup', 'utf8') : undefined;
    const r = await applyInChild(Math.min(19, up + 2), false);
    expect(new Set(r.threads)).toEqual(new Set([Math.min(19, up + 2)]));
    expect(r.outcome.autogroup).toBe(!autogroupEnabled() ? 'absent' : !r.childCgroupRoot ? 'cgroup' : 'not-session-leader');
    expect(r.autogroup).toBe(before);
  });

  it('lowering nice takes CAP_SYS_NICE (or RLIMIT_NICE): done when the kernel allows it, else an error and nothing changed', async () => {
    const down = Math.max(-20, base - 3);
    const r = await applyInChild(down, true);
    if (mayLowerNiceTo(down)) {
      expect(r.outcome.error).toBeUndefined();
      expect(new Set(r.threads)).toEqual(new Set([down]));
    } else {
      expect(r.outcome.error).toMatch(/EACCES|EPERM|permission/i);
      expect(new Set(r.threads)).toEqual(new Set([base]));
    }
  });
});
