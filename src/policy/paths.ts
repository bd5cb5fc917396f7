/**
 * Lexical path checks. Every path a command names must stay inside an allowed path: the sandbox mounts
 * only those, and the check makes an escape attempt a visible, hard deny instead of a silent failure.
 * Paths are resolved lexically (`..`, `.`, `//`) against the working directory; symlinks are not followed
 * (this code never touches the file system), which is safe because only allowed paths exist in the sandbox.
 */
import type { AllowedPath } from './types.js';
import type { Word } from './shell.js';

export type PathVerdict =
  | { ok: true }
  | { ok: false; kind: 'outside' | 'unsupported'; reason: string };

/** Devices that read or discard nothing of the host's. */
const SAFE_DEVICES = new Set(['/dev/null', '/dev/stdin', '/dev/stdout', '/dev/stderr', '/dev/zero', '/dev/urandom', '/dev/random',
  '/dev/tty', '/dev/fd/0', '/dev/fd/1', '/dev/fd/2', '/dev/full']);

/** Process views that reach another mount namespace or process: never allowed, even under an allowed `/`. */
const PROC_ESCAPE = /^\/proc\/[^/]+\/(root|cwd|exe|fd|environ|mem|map_files|fdinfo|task|mountinfo|mounts)(\/|$)/;

export function normalise(path: string): string {
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return '/' + out.join('/');
}

export function resolve(cwd: string, p: string): string {
  return normalise(p.startsWith('/') ? p : `${cwd}/${p}`);
}

export function isInside(path: string, root: string): boolean {
  return root === '/' || path === root || path.startsWith(root + '/');
}

/** The allowed path holding `path`, most specific first (a read-only subdirectory wins over its parent). */
export function allowedFor(path: string, allowed: readonly AllowedPath[]): AllowedPath | null {
  let best: AllowedPath | null = null;
  for (const a of allowed) {
    const root = a.path === '/' ? '/' : normalise(a.path);
    if (isInside(path, root) && (best === null || root.length > normalise(best.path).length)) best = a;
  }
  return best;
}

/** Checks one resolved absolute path. */
export function checkResolved(path: string, allowed: readonly AllowedPath[], write: boolean, shown: string): PathVerdict {
  if (PROC_ESCAPE.test(path)) return { ok: false, kind: 'outside', reason: `${shown} resolves to ${path}, a view into another process or root` };
  if (/^\/proc\/(self|thread-self|\d+)$/.test(path)) return { ok: false, kind: 'outside', reason: `${shown} resolves to ${path}, a process directory` };
  if (SAFE_DEVICES.has(path)) return { ok: true };
  // /tmp is a private tmpfs inside the sandbox.
  if (isInside(path, '/tmp')) return { ok: true };
  const a = allowedFor(path, allowed);
  if (a === null) return { ok: false, kind: 'outside', reason: `${shown} resolves to ${path}, outside every allowed path` };
  if (write && a.readOnly) return { ok: false, kind: 'outside', reason: `${shown} writes to ${path}, inside the read-only allowed path ${a.path}` };
  return { ok: true };
}

const URL = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/**
 * The part of a word that names a path, or null when it names none. Path-looking: holds `/`, starts with
 * `~`, or is `.`/`..`; `--opt=VALUE`, `-oVALUE` and `NAME=VALUE` are checked through their value. URLs
 * are not paths, except `file://`.
 */
export function pathPart(value: string): string | null {
  if (URL.test(value)) {
    if (/^file:\/\//i.test(value)) return value.replace(/^file:\/\/[^/]*/i, '') || '/';
    return null;
  }
  let v = value;
  const long = /^--[A-Za-z0-9][\w-]*=(.*)$/s.exec(v);
  const short = /^-[A-Za-z](.+)$/s.exec(v);
  const assign = /^[A-Za-z_][\w.-]*=(.*)$/s.exec(v);
  if (long) v = long[1] as string;
  else if (short && looksLikePath(short[1] as string)) v = short[1] as string;
  else if (assign) v = assign[1] as string;
  if (URL.test(v)) return /^file:\/\//i.test(v) ? v.replace(/^file:\/\/[^/]*/i, '') || '/' : null;
  return looksLikePath(v) ? v : null;
}

function looksLikePath(v: string): boolean {
  return v.includes('/') || v.startsWith('~') || v === '..' || v === '.';
}

/**
 * Checks a word against every possible working directory. Expansions in a path word are unsupported:
 * `$HOME/x` or `src/*` could name anything. An unquoted `~` is refused as outside: the sandbox's home is
 * not an allowed path, and `~user` names another user's home.
 */
export function checkWord(w: Word, cwds: readonly string[], allowed: readonly AllowedPath[], write: boolean, role: string): PathVerdict {
  const part = pathPart(w.value);
  if (part === null) return { ok: true };
  if (w.unsupported) return { ok: false, kind: 'unsupported', reason: w.unsupported };
  if (w.glob && !w.dynamic && !w.brace && !w.tilde && w.value === part) {
    // `src/*.ts`: a glob only in the last component, which cannot start with `.` (so cannot match `..`),
    // stays in the directory before it; that directory is what we check.
    const slash = part.lastIndexOf('/');
    const dir = part.slice(0, slash + 1) || '.';
    const last = part.slice(slash + 1);
    if (slash >= 0 && !/[*?[]/.test(dir) && !last.startsWith('.') && !last.startsWith('[')) {
      for (const cwd of cwds) {
        const v = checkResolved(resolve(cwd, dir), allowed, write, `the ${role} ${w.raw}`);
        if (!v.ok) return v;
      }
      return { ok: true };
    }
  }
  if (w.dynamic || w.glob || w.brace) {
    return { ok: false, kind: 'unsupported', reason: `the ${role} ${w.raw} holds an expansion, so the path check cannot resolve it` };
  }
  const tilde = w.tilde || (part.startsWith('~') && !w.quoted && part !== w.value);
  if (tilde) return { ok: false, kind: 'outside', reason: `the ${role} ${w.raw} names a home directory, which is not an allowed path` };
  for (const cwd of cwds) {
    const v = checkResolved(resolve(cwd, part), allowed, write, `the ${role} ${w.raw}`);
    if (!v.ok) return v;
  }
  return { ok: true };
}

/** Directories whose programs are the sandbox image's own, not the host's: running them is not a path access. */
const SYSTEM_BIN = /^\/(usr\/(local\/)?)?s?bin\/[^/]+$/;

export function isSystemProgram(path: string): boolean {
  return SYSTEM_BIN.test(normalise(path));
}
