/**
 * Blocked patterns: plain command strings (`rm -rf`, `sudo`, `chmod 777`) canonicalised like commands, so
 * that spelling, flag order, bundling and long forms cannot dodge them.
 */
import type { Layer } from './analyze.js';
import { basename } from './analyze.js';
import { canonicalArgs } from './tools.js';

export interface CompiledPattern {
  source: string;
  name: string;
  flags: string[];
  positionals: string[];
}

/** Splits a pattern like a shell would for plain words (quotes removed, backslash escapes honoured). */
function splitWords(pattern: string): string[] {
  const out: string[] = [];
  let cur = '';
  let has = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i] as string;
    if (quote) {
      if (ch === quote) quote = null;
      else if (ch === '\\' && quote === '"' && i + 1 < pattern.length) cur += pattern[++i];
      else cur += ch;
      continue;
    }
    if (ch === '"' || ch === "'") { quote = ch; has = true; continue; }
    if (ch === '\\' && i + 1 < pattern.length) { cur += pattern[++i]; has = true; continue; }
    if (/\s/.test(ch)) { if (has || cur) out.push(cur); cur = ''; has = false; continue; }
    cur += ch;
    has = true;
  }
  if (has || cur) out.push(cur);
  return out;
}

export function compilePattern(source: string): CompiledPattern | null {
  const words = splitWords(source.trim());
  const first = words[0];
  if (first === undefined) return null;
  const name = basename(first);
  const c = canonicalArgs(name, words.slice(1));
  return { source, name, flags: [...c.flags], positionals: c.positionals };
}

function isSubsequence(needle: readonly string[], hay: readonly string[]): boolean {
  let j = 0;
  for (const h of hay) if (j < needle.length && h === needle[j]) j++;
  return j === needle.length;
}

/**
 * A layer matches when the command name is equal, every flag of the pattern is present (order ignored)
 * and the pattern's positional words appear among the layer's positionals in order.
 */
export function layerMatches(p: CompiledPattern, layer: Layer): boolean {
  if (layer.name !== p.name) return false;
  for (const f of p.flags) if (!layer.flags.has(f)) return false;
  return isSubsequence(p.positionals, layer.positionals);
}

/**
 * `rm -r $X` or `rm -r *` could become `rm -r -f` once expanded (a file named `-f` is enough), so an
 * expansion in a layer named like a blocked pattern that is not already matched is not something we can
 * reason about.
 */
export function layerMightMatch(p: CompiledPattern, layer: Layer): boolean {
  return layer.name === p.name && layer.dynamicArgs && (p.flags.length > 0 || p.positionals.length > 0);
}
