/**
 * Shell spellings of a word: every character written plainly, backslash-escaped, single-, double- or
 * ANSI-C-quoted, with optional empty quotes and line continuations between characters. All spellings of
 * a word are the same word to bash.
 */
import fc from 'fast-check';

const SAFE_PLAIN = /^[A-Za-z0-9_.,:\/+@%^=-]$/;

export type Style = 'plain' | 'backslash' | 'single' | 'double' | 'ansi' | 'ansiHex';
export type Gap = 'none' | 'emptySingle' | 'emptyDouble' | 'continuation';

export function spellChar(ch: string, style: Style): string {
  switch (style) {
    case 'plain':
      return SAFE_PLAIN.test(ch) ? ch : `\\${ch}`;
    case 'backslash':
      return `\\${ch}`;
    case 'single':
      return ch === "'" ? `\\'` : `'${ch}'`;
    case 'double':
      return /[$`"\\]/.test(ch) ? `"\\${ch}"` : `"${ch}"`;
    case 'ansi':
      return ch === "'" || ch === '\\' ? `$'\\${ch}'` : `$'${ch}'`;
    case 'ansiHex':
      return `$'\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}'`;
  }
}

export function spellGap(gap: Gap): string {
  return gap === 'emptySingle' ? "''" : gap === 'emptyDouble' ? '""' : gap === 'continuation' ? '\\\n' : '';
}

const style = fc.constantFrom<Style>('plain', 'plain', 'plain', 'backslash', 'single', 'double', 'ansi', 'ansiHex');
const gap = fc.constantFrom<Gap>('none', 'none', 'none', 'none', 'emptySingle', 'emptyDouble', 'continuation');

/** An arbitrary spelling of the given words (joined by single spaces). */
export function spellingOf(words: readonly string[]): fc.Arbitrary<string> {
  return fc.tuple(...words.map((w) => fc.array(fc.tuple(style, gap), { minLength: w.length, maxLength: w.length }))).map((choices) =>
    words.map((w, i) => [...w].map((ch, j) => {
      const [s, g] = (choices[i] as [Style, Gap][])[j] as [Style, Gap];
      // A continuation before the first character of a word would join it to the previous word's space: harmless,
      // but keep gaps inside words where they matter.
      return (j > 0 ? spellGap(g) : '') + spellChar(ch, s);
    }).join('')).join(' '),
  );
}

/** Printable ASCII words (space included: it is always quoted or escaped). */
export const printableWord = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 8 });
