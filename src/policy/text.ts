/**
 * Checks on the raw command text that run before any parsing, and the one rewrite bash itself does before
 * tokenising (line continuations).
 */

/** Longest command accepted, in UTF-8 bytes: longer texts are not something a human can review. */
export const MAX_COMMAND_BYTES = 16 * 1024;

/**
 * Control characters other than TAB and newline (C0, DEL, C1). A CR or a NUL makes what a reviewer sees
 * differ from what bash runs (CRLF splits words differently, NUL truncates C strings).
 */
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/u;
/** Bidi controls reorder what a human sees (trojan-source), so the shown command is not the run one. */
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;
/** Zero-width and invisible characters make two different commands look identical. */
const INVISIBLE = /[\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200d\u2060-\u2064\u3164\ufeff\uffa0]/u;

/** Returns why the text is not a command we accept at all, or null. */
export function invalidCommandReason(command: string): string | null {
  if (command.trim() === '') return 'the command is empty';
  if (Buffer.byteLength(command, 'utf8') > MAX_COMMAND_BYTES) return `the command is longer than ${MAX_COMMAND_BYTES} bytes`;
  if (command.includes('\u0000')) return 'the command holds a NUL character';
  const control = CONTROL.exec(command);
  if (control) return `the command holds the control character U+${hex(control[0])}`;
  const bidi = BIDI.exec(command);
  if (bidi) return `the command holds the bidi control U+${hex(bidi[0])}`;
  const invisible = INVISIBLE.exec(command);
  if (invisible) return `the command holds the invisible character U+${hex(invisible[0])}`;
  return null;
}

function hex(ch: string): string {
  return (ch.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0');
}

/**
 * Removes backslash-newline pairs the way bash's reader does: everywhere except inside single quotes,
 * `$'…'` strings and comments. tree-sitter-bash treats `r\<newline>m` as two words where bash runs `rm`,
 * so we must join them before parsing. Heredoc bodies are not tracked: heredocs are rejected later anyway.
 */
export function joinLineContinuations(command: string): string {
  if (!command.includes('\\\n')) return command;
  let out = '';
  let state: 'plain' | 'single' | 'double' | 'ansi' | 'comment' = 'plain';
  for (let i = 0; i < command.length; i++) {
    const ch = command[i] as string;
    const next = command[i + 1];
    switch (state) {
      case 'plain':
        if (ch === '\\' && next === '\n') { i++; continue; }
        if (ch === '\\' && next !== undefined) { out += ch + next; i++; continue; }
        if (ch === "'") state = out.endsWith('$') && !out.endsWith('\\$') ? 'ansi' : 'single';
        else if (ch === '"') state = 'double';
        else if (ch === '#' && (out === '' || /[\s;&|()<>]$/.test(out))) state = 'comment';
        break;
      case 'single':
        if (ch === "'") state = 'plain';
        break;
      case 'ansi':
        if (ch === '\\' && next !== undefined) { out += ch + next; i++; continue; }
        if (ch === "'") state = 'plain';
        break;
      case 'double':
        if (ch === '\\' && next === '\n') { i++; continue; }
        if (ch === '\\' && next !== undefined) { out += ch + next; i++; continue; }
        if (ch === '"') state = 'plain';
        break;
      case 'comment':
        if (ch === '\n') state = 'plain';
        break;
    }
    out += ch;
  }
  return out;
}
