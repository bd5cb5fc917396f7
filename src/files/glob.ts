/**
 * The globs of `collect` and `include`: `*` (any characters but `/`), `?` (one character but `/`) and `**`
 * (a whole segment: any number of directories). Dot files match like any other. Nothing else is special,
 * and patterns using other glob syntax are refused where they come in (validateCollectPatterns).
 *
 * Written here rather than taken from a regex-compiling glob library: patterns come from clients, and a
 * backtracking regex over a long file name (`*a*a*a*a*a*a*a*b`) can block the event loop for seconds. This
 * matcher is polynomial: segment matching is the two-pointer wildcard walk (O(len × len)), and `**` is a
 * memoised walk over (pattern segment, path segment) pairs.
 */
export function compileGlobs(patterns: readonly string[]): (path: string) => boolean {
  const compiled = patterns.map((p) => p.split('/'));
  return (path) => {
    const segs = path.split('/');
    return compiled.some((pat) => matchSegments(pat, segs));
  };
}

function matchSegments(pat: readonly string[], segs: readonly string[]): boolean {
  const memo = new Map<number, boolean>();
  const go = (pi: number, si: number): boolean => {
    const key = pi * (segs.length + 1) + si;
    const known = memo.get(key);
    if (known !== undefined) return known;
    let ok: boolean;
    if (pi === pat.length) ok = si === segs.length;
    else if (pat[pi] === '**') ok = go(pi + 1, si) || (si < segs.length && go(pi, si + 1));
    else ok = si < segs.length && matchSegment(pat[pi]!, segs[si]!) && go(pi + 1, si + 1);
    memo.set(key, ok);
    return ok;
  };
  return go(0, 0);
}

/** `*` and `?` within one segment: greedy with one remembered star, no recursion. */
export function matchSegment(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let mark = 0;
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === '?' || pattern[p] === text[t])) {
      p++;
      t++;
    } else if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      mark = t;
    } else if (star !== -1) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}
