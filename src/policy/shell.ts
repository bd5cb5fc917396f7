/**
 * Turns bash text into raw segments (one per simple command) by walking the tree-sitter-bash syntax tree
 * with an allow-list of node kinds. Anything the walker does not know is reported as unsupported, never
 * guessed at: a matcher that guesses is a matcher that can be bypassed.
 */
import type { Node, Parser } from 'web-tree-sitter';

export interface Word {
  /** The word after quote removal and escape processing; expansions keep their source text (`$HOME`). */
  value: string;
  /** Source text of the word. */
  raw: string;
  /** Holds a parameter expansion (`$x`, `${x}`), whose value the matcher cannot know. */
  dynamic: boolean;
  /** Holds an unquoted glob character (`*`, `?`, `[`), so it may expand to other words. */
  glob: boolean;
  /** Holds an unquoted brace expansion (`{a,b}`, `{1..3}`), so it expands to several words. */
  brace: boolean;
  /** Starts with an unquoted `~`, which bash replaces with a home directory. */
  tilde: boolean;
  /** Some part of it was quoted or escaped. */
  quoted: boolean;
  /** Why the word cannot be reasoned about (command substitution, `${x:-…}`…), or null. */
  unsupported: string | null;
}

export interface Redirect {
  op: string;
  target: Word | null;
  /** Opens the target for writing (`>`, `>>`, `>|`, `&>`, `&>>`, `<>`, `>&file`). */
  write: boolean;
  /** The target is a file descriptor (`2>&1`, `>&-`), not a path. */
  fdDup: boolean;
}

export interface Assignment {
  name: string;
  value: Word | null;
}

export type SegmentKind = 'simple' | 'test' | 'declaration' | 'unset' | 'context';

export interface RawSegment {
  kind: SegmentKind;
  /** Source text as written. */
  source: string;
  assignments: Assignment[];
  /** argv as bash would build it (before wrappers are unwrapped); for `context` the words it checks. */
  words: Word[];
  redirects: Redirect[];
  /** Inside a loop body or condition: a relative `cd` here could climb any number of times. */
  inLoop: boolean;
  /** Why this segment cannot be reasoned about, or null. */
  unsupported: string | null;
  /** How many `sh -c` levels deep the segment is. */
  depth: number;
}

export type ParseResult = { ok: true; segments: RawSegment[] } | { ok: false; reason: string };

/**
 * Bounds on the work one decision may spend on the parser and the analysis. Past a bound nothing more is
 * looked at, so nothing is known about the command (not even whether it holds a blocked pattern): the engine
 * turns BudgetExceeded into a hard deny, as it does a command over 16 KiB.
 */
export interface ParseBudget {
  /** Syntax nodes over every tree of one decision (the command and the `sh -c` scripts in it). */
  maxNodes: number;
  /**
   * `|` characters in one script, counted before it is parsed: on a long broken pipeline tree-sitter's error
   * recovery runs for seconds without calling back (8000 pipes: about 7 s), so the time budget cannot stop it.
   */
  maxPipes: number;
  /** Depth of a syntax tree: the walk recurses along it, so this also keeps the stack bounded. */
  maxDepth: number;
  /** Wall-clock milliseconds for parsing and analysing one decision. */
  timeMs: number;
  /** The clock (milliseconds), told what the engine is doing when it reads it; tests inject one. */
  now?: (phase: BudgetPhase) => number;
}

/**
 * Ordinary commands take about one node per two or three bytes, so a 16 KiB script of them fits; nothing
 * hand-written nests 400 levels deep or pipes 1000 times; legitimate commands take milliseconds.
 */
export const DEFAULT_BUDGET: Readonly<ParseBudget> = { maxNodes: 20_000, maxPipes: 1_000, maxDepth: 400, timeMs: 1_000 };

export type BudgetKind = 'node' | 'nesting' | 'time';
export type BudgetPhase = 'parsing' | 'analysing';

export class BudgetExceeded extends Error {
  constructor(readonly budget: BudgetKind, message: string) {
    super(message);
    this.name = 'BudgetExceeded';
  }
}

/** One decision's spending against a ParseBudget; shared by every parse and analysis step of that decision. */
export class BudgetMeter {
  private nodes = 0;
  private ticks = 0;
  private readonly clock: (phase: BudgetPhase) => number;
  private readonly deadline: number;
  /** What the engine is doing, for the explanation (and the clock). */
  phase: BudgetPhase = 'parsing';

  constructor(readonly limits: Readonly<ParseBudget>) {
    this.clock = limits.now ?? (() => performance.now());
    this.deadline = this.clock(this.phase) + limits.timeMs;
  }

  expired(): boolean {
    return this.clock(this.phase) > this.deadline;
  }

  /** Enters a phase and checks the clock at once, so every phase is checked at least once. */
  enter(phase: BudgetPhase): void {
    this.phase = phase;
    this.checkTime();
  }

  /** Throws when the time budget is spent; cheap enough to call often (looks at the clock every 64 calls). */
  tick(): void {
    if ((++this.ticks & 63) === 0) this.checkTime();
  }

  checkTime(): void {
    if (this.expired()) {
      throw new BudgetExceeded('time', `the command exceeds the time budget: ${this.phase} it took longer than ${this.limits.timeMs} ms`);
    }
  }

  countPipes(text: string): void {
    let pipes = 0;
    for (let i = text.indexOf('|'); i !== -1; i = text.indexOf('|', i + 1)) pipes++;
    if (pipes > this.limits.maxPipes) {
      throw new BudgetExceeded('node', `the command exceeds the node budget: it has more than ${this.limits.maxPipes} \`|\`, which the parser cannot parse in bounded time`);
    }
  }

  /** Counts the nodes of one syntax tree and checks its depth (a cursor walk: no recursion, no node objects). */
  measure(root: Node): void {
    const cursor = root.walk();
    try {
      let depth = 1;
      for (;;) {
        if (++this.nodes > this.limits.maxNodes) {
          throw new BudgetExceeded('node', `the command exceeds the node budget: it has more than ${this.limits.maxNodes} syntax nodes`);
        }
        if (depth > this.limits.maxDepth) {
          throw new BudgetExceeded('nesting', `the command exceeds the nesting budget: its syntax nests deeper than ${this.limits.maxDepth} levels`);
        }
        if ((this.nodes & 1023) === 0) this.checkTime();
        if (cursor.gotoFirstChild()) {
          depth++;
          continue;
        }
        while (!cursor.gotoNextSibling()) {
          if (!cursor.gotoParent()) return;
          depth--;
        }
      }
    } finally {
      cursor.delete();
    }
  }
}

/** Node kinds that only group statements; their named children are walked. */
const GROUPING = new Set([
  'program', 'list', 'pipeline', 'compound_statement', 'subshell', 'do_group', 'if_statement', 'elif_clause',
  'else_clause', 'negated_command', 'while_statement',
]);

/** Kinds that may appear as (part of) a word. Everything else inside a word is unsupported. */
const WORD_KINDS = new Set([
  'word', 'string', 'raw_string', 'ansi_c_string', 'simple_expansion', 'expansion', 'concatenation', 'number',
  'brace_expression', 'extglob_pattern', 'command_substitution', 'process_substitution', 'arithmetic_expansion',
  'translated_string',
]);

const WRITE_OPS = new Set(['>', '>>', '>|', '&>', '&>>', '<>']);

/** The unary and binary operators of bash's `[[ … ]]` (`=`, `==`, `!=`, `=~`, `<`, `>`, `&&`, `||` are anonymous tokens). */
const COND_UNARY = new Set(['-a', '-b', '-c', '-d', '-e', '-f', '-g', '-h', '-k', '-p', '-r', '-s', '-t', '-u', '-w', '-x', '-G', '-L', '-N', '-O', '-S', '-o', '-v', '-R', '-z', '-n']);
const COND_BINARY = new Set(['-eq', '-ne', '-lt', '-le', '-gt', '-ge', '-ef', '-nt', '-ot', '==', '=', '!=', '=~']);

/**
 * tree-sitter takes `[[ -n "$x" -d y ]]` as `-n` applied to the binary `"$x" -d y`; bash wants a unary operator
 * before a word and a binary one between words. An expression of another shape is a syntax error to bash.
 */
function condShapeProblem(e: Node): string | null {
  const op = e.childForFieldName('operator');
  if (op === null || op.type !== 'test_operator') return null;
  if (e.type === 'unary_expression') {
    const operand = e.namedChildren.find((x) => x.id !== op.id);
    if (!COND_UNARY.has(op.text) || (operand !== undefined && !WORD_KINDS.has(operand.type))) return `bash does not read ${JSON.stringify(e.text.slice(0, 30))} as a \`[[\` test`;
  } else if (e.type === 'binary_expression' && !COND_BINARY.has(op.text)) {
    return `\`${op.text}\` is not a binary \`[[\` operator in bash`;
  }
  return null;
}

/** Anonymous tokens a test expression may hold; tree-sitter also makes operators of others (`[[ -~ x ]]`). */
const TEST_TOKENS = new Set(['[', ']', '[[', ']]', '!', '=', '==', '!=', '=~', '<', '>', '&&', '||', '(', ')', '-a', '-o']);

/** Tokens of a test expression that are shell operators outside `[[ … ]]` (and, for `<` `>` `&&` `||`, inside `[ … ]`). */
const TEST_SPLITTERS = new Set(['<', '>', '&&', '||', '(', ')']);

/** Whether text holds a shell operator character outside quotes and escapes. */
function unquotedMeta(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === '\\') i++;
    else if (ch === "'") i = text.indexOf("'", i + 1) === -1 ? text.length : text.indexOf("'", i + 1);
    else if (ch === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
    } else if ('|&;<>() \t\n'.includes(ch)) return true;
  }
  return false;
}

/**
 * Parses one script (the command, or a literal `sh -c` script in it) into raw segments. Throws BudgetExceeded
 * when `meter` runs out; never anything else for any text.
 */
export function parseScript(parser: Parser, text: string, depth = 0, meter = new BudgetMeter(DEFAULT_BUDGET)): ParseResult {
  meter.enter('parsing');
  meter.countPipes(text);
  // tree-sitter calls back every hundred or so parse steps: a parse that runs past the deadline is cancelled.
  const tree = parser.parse(text, null, { progressCallback: () => meter.expired() });
  if (!tree) {
    // A cancelled parse would otherwise be resumed by the next call, on the next text.
    parser.reset();
    meter.checkTime();
    return { ok: false, reason: 'the command could not be parsed' };
  }
  try {
    const root = tree.rootNode;
    meter.checkTime();
    meter.measure(root);
    meter.enter('analysing');
    if (root.hasError) return { ok: false, reason: `the command does not parse as bash (${describeError(root)})` };
    const skipped = uncoveredText(root, text);
    if (skipped !== null) return { ok: false, reason: `${skipped}, so the command cannot be reasoned about` };
    const walker = new Walker(parser, text, depth, meter);
    walker.statement(root, false);
    return { ok: true, segments: walker.segments };
  } finally {
    tree.delete();
  }
}

/**
 * tree-sitter-bash silently drops some text (a word made of `\ ` alone, for one): every non-blank
 * character must belong to some token, or the tree is not the command bash will run. And every token must be
 * one bash would read there (tokenProblem).
 */
function uncoveredText(root: Node, text: string): string | null {
  let pos = 0;
  const stack: Node[] = [root];
  const parents: (Node | null)[] = [null];
  let gapFound: string | null = null;
  const visitLeaf = (start: number, end: number): void => {
    if (start > pos) {
      const gap = text.slice(pos, start);
      if (/[^ \t\n]/.test(gap) && gapFound === null) gapFound = gap.trim();
    }
    if (end > pos) pos = end;
  };
  while (stack.length > 0) {
    const n = stack.pop() as Node;
    const parent = parents.pop() ?? null;
    if ((n.type === 'ansi_c_string' || n.type === 'raw_string') && !quoteEndsAtNodeEnd(n.text)) {
      return `the parser misreads the quoting of ${JSON.stringify(n.text.slice(0, 40))}`;
    }
    const token = tokenProblem(n, parent, text);
    if (token !== null) return token;
    const count = n.childCount;
    if (count === 0) { visitLeaf(n.startIndex, n.endIndex); continue; }
    for (let i = count - 1; i >= 0; i--) {
      stack.push(n.child(i) as Node);
      parents.push(n);
    }
  }
  visitLeaf(text.length, text.length);
  return gapFound === null ? null : `the parser skipped ${JSON.stringify(gapFound)}`;
}

/** Statements that end in a reserved word or bracket, after which bash takes `esac`, `fi`, `done`, `}` as such. */
const COMPOUND = new Set(['subshell', 'compound_statement', 'if_statement', 'while_statement', 'for_statement', 'case_statement', 'c_style_for_statement', 'test_command']);

/** Tokens that never hold a newline to bash (line continuations are joined before parsing). */
const NO_NEWLINE = new Set(['word', 'number', '$', 'file_descriptor', 'extglob_pattern', 'test_operator', 'variable_name', 'special_variable_name', 'brace_expression']);

const RESERVED_WORDS = new Set(['if', 'then', 'else', 'elif', 'fi', 'case', 'esac', 'for', 'select', 'while', 'until', 'do', 'done', 'in', 'function', 'time', 'coproc']);

/** Characters that end a word in bash (besides the end of the text). */
const WORD_END = ' \t\n;&|()<>';

/**
 * Tokens tree-sitter-bash accepts where bash reads the text otherwise (found by differential fuzzing against
 * bash, test/unit/policy/bash-fuzz.test.ts): each is either a syntax error to bash, or a different command.
 */
function tokenProblem(n: Node, parentNode: Node | null, text: string): string | null {
  const t = n.type;
  const parent = parentNode?.type ?? '';
  if ((t === ';;' || t === ';&' || t === ';;&') && parent !== 'case_item' && parent !== 'case_statement') {
    return `\`${t}\` outside a case statement is a syntax error in bash, so the command cannot be reasoned about`;
  }
  if (t === 'comment' && n.startIndex > 0 && !WORD_END.includes(text[n.startIndex - 1] as string)) {
    return `bash reads ${JSON.stringify(text.slice(Math.max(0, n.startIndex - 10), n.startIndex + 10))} as one word, not a comment, so the command cannot be reasoned about`;
  }
  // A newline ends a command in bash; tree-sitter can take it into a word: in `ls \\<newline>\rm -rf x` it reads
  // one `ls` with the argument `<newline>\rm`, where bash runs `ls \` and then `rm -rf x`.
  if (NO_NEWLINE.has(t) && n.text.includes('\n')) {
    return `the parser joins ${JSON.stringify(n.text.slice(0, 30))} across a newline, where bash ends the command, so the command cannot be reasoned about`;
  }
  // `$  name` is no expansion to bash (a `$` then a word); tree-sitter makes one of it in some places. Inside
  // double quotes tree-sitter starts the node at the blank before it (`"$a $b"`: ` $b`), which bash reads as
  // that blank and then `$b`: only the text from the `$` on is judged there.
  const expansionText = parent === 'string' ? n.text.trimStart() : n.text;
  if ((t === 'simple_expansion' || t === 'expansion') && /\s/.test(expansionText.slice(0, 2))) {
    return `bash does not read ${JSON.stringify(n.text.slice(0, 20))} as an expansion, so the command cannot be reasoned about`;
  }
  // The brackets of a test are words of their own to bash: `[$x` is a command named `[$x`, `x]` an argument.
  if (parent === 'test_command' && !n.isNamed && (t === '[' || t === '[[' || t === ']' || t === ']]')) {
    const outside = t.startsWith('[') ? text[n.endIndex] : text[n.startIndex - 1];
    if (outside !== undefined && !' \t\n'.includes(outside)) {
      return `bash does not read ${JSON.stringify(text.slice(Math.max(0, n.startIndex - 6), n.endIndex + 6))} as \`${t}\`, so the command cannot be reasoned about`;
    }
  }
  // `if x; then fi`, `while x; do done`: an empty body is a syntax error in bash, not to tree-sitter.
  if (!n.isNamed && (t === 'fi' || t === 'else' || t === 'elif' || t === 'done')) {
    const before = n.previousSibling;
    if (before !== null && !before.isNamed && (before.type === 'then' || before.type === 'else' || before.type === 'do')) {
      return `\`${before.type}\` with nothing before \`${t}\` is a syntax error in bash, so the command cannot be reasoned about`;
    }
  }
  // A reserved word is one only as a whole word: `for f in777a b` has no `in` to bash.
  if (!n.isNamed && RESERVED_WORDS.has(t)) {
    const before = text[n.startIndex - 1];
    const after = text[n.endIndex];
    if ((before !== undefined && !WORD_END.includes(before)) || (after !== undefined && !WORD_END.includes(after))) {
      return `bash does not read ${JSON.stringify(text.slice(Math.max(0, n.startIndex - 6), n.endIndex + 6))} as the keyword \`${t}\`, so the command cannot be reasoned about`;
    }
  }
  // `;&>` is `;&` (a case fall-through) then `>` to bash, a syntax error outside `case`; tree-sitter reads `;` `&>`.
  if (t === ';' && text[n.endIndex] === '&') return 'bash reads `;&` here, which is a syntax error outside a case statement, so the command cannot be reasoned about';
  // `case x in a) ls esac`: bash reads `esac` as an argument of `ls` (it needs `;;`, `;` or a newline first).
  if (t === 'esac' && parent === 'case_statement') {
    const last = n.previousSibling?.type === 'case_item' ? n.previousSibling.lastChild : null;
    if (last !== null && last.isNamed && !COMPOUND.has(last.type) && !/[;&\n]/.test(text.slice(last.endIndex, n.startIndex))) {
      return 'bash reads this `esac` as an argument (it needs `;;` before it), so the command cannot be reasoned about';
    }
  }
  if (t === 'negated_command' && parent === 'pipeline' && n.startIndex !== parentNode?.startIndex) {
    return 'a `!` after `|` is a syntax error in bash, so the command cannot be reasoned about';
  }
  if (parent === 'compound_statement' && !n.isNamed && (t === '{' || t === '}')) {
    const next = text[n.endIndex];
    if (next !== undefined && !(t === '{' ? ' \t\n(<>' : WORD_END).includes(next)) {
      return `bash reads ${JSON.stringify(text.slice(n.startIndex, n.startIndex + 12))} as a word, not as \`${t}\`, so the command cannot be reasoned about`;
    }
  }
  return null;
}

/**
 * tree-sitter-bash reads `$'\\'` as an unfinished string (it takes `\'` for an escaped quote), so
 * `echo $'\\' ; rm -rf x ; # '` looks like one echo while bash runs rm. Re-scan every single-quoted
 * string the way bash does and refuse the tree when the closing quote is not where the node ends.
 */
function quoteEndsAtNodeEnd(text: string): boolean {
  const ansi = text.startsWith("$'");
  let i = ansi ? 2 : 1;
  for (; i < text.length; i++) {
    const ch = text[i];
    if (ansi && ch === '\\') { i++; continue; }
    if (ch === "'") break;
  }
  return i === text.length - 1;
}

function describeError(root: Node): string {
  const stack: Node[] = [root];
  while (stack.length > 0) {
    const n = stack.pop() as Node;
    if (n.isError) return `syntax error near ${JSON.stringify(n.text.slice(0, 40))}`;
    if (n.isMissing) return `missing ${JSON.stringify(n.type)}`;
    for (const c of n.children) stack.push(c);
  }
  return 'syntax error';
}

class Walker {
  readonly segments: RawSegment[] = [];
  constructor(
    private readonly parser: Parser,
    private readonly text: string,
    private readonly depth: number,
    private readonly meter: BudgetMeter,
  ) {}

  statement(node: Node, inLoop: boolean): void {
    this.meter.tick();
    const t = node.type;
    if (t === 'comment') return;
    if (GROUPING.has(t)) {
      const loop = inLoop || t === 'while_statement';
      for (const c of node.namedChildren) this.statement(c, loop);
      return;
    }
    switch (t) {
      case 'command':
        this.command(node, [], inLoop);
        return;
      case 'redirected_statement':
        this.redirected(node, inLoop);
        return;
      case 'variable_assignment':
      case 'variable_assignments':
        this.assignmentsOnly(node, inLoop);
        return;
      case 'for_statement':
        this.forStatement(node, inLoop);
        return;
      case 'case_statement':
        this.caseStatement(node, inLoop);
        return;
      case 'test_command':
        this.testCommand(node, [], inLoop);
        return;
      case 'declaration_command':
      case 'unset_command':
        this.declaration(node, [], inLoop);
        return;
      case 'function_definition':
        // Walk the body so a blocked command inside still decides, but a definition changes what a later
        // name runs, so the statement itself is unsupported.
        this.unsupported(node, 'function definitions change what later command names run', inLoop);
        for (const c of node.namedChildren) if (c.type !== 'word') this.statement(c, inLoop);
        return;
      default:
        this.unsupported(node, `the construct ${describeKind(t)} is not supported`, inLoop);
        for (const c of node.namedChildren) if (isStatementLike(c.type)) this.statement(c, inLoop);
    }
  }

  private unsupported(node: Node, reason: string, inLoop: boolean): void {
    this.segments.push(emptySegment('context', node.text, inLoop, this.depth, reason));
  }

  private redirected(node: Node, inLoop: boolean): void {
    const redirects: Redirect[] = [];
    const redirectNodes: Node[] = [];
    const extra: Node[] = [];
    let problem: string | null = null;
    for (let i = 0; i < node.childCount; i++) {
      const c = node.child(i) as Node;
      if (node.fieldNameForChild(i) !== 'redirect') continue;
      redirectNodes.push(c);
      const r = this.redirect(c);
      if (typeof r === 'string') problem ??= r;
      else {
        redirects.push(r.redirect);
        extra.push(...r.extra);
        problem ??= r.problem;
      }
    }
    const body = node.childForFieldName('body');
    if (extra.length > 0 && body?.type !== 'command') {
      problem ??= 'words after a redirect target of a compound command are not supported';
    }
    // `a || exit 0<&1`: tree-sitter hangs the redirect on the whole list and leaves `0` to `exit` as an argument;
    // bash redirects descriptor 0 of `exit` alone.
    const first = redirectNodes[0];
    if (first !== undefined && body !== null && body.type !== 'command' && /(^|[\s;&|()<>])\d+$/.test(this.text.slice(node.startIndex, first.startIndex))) {
      problem ??= 'a descriptor number before a redirect that the parser hangs on a whole list or pipeline is not supported';
    }
    if (body === null) {
      // `> file` alone truncates a file: keep it as a segment with no argv so the path check sees it.
      const seg = emptySegment('simple', node.text, inLoop, this.depth, problem);
      seg.redirects = redirects;
      this.segments.push(seg);
      return;
    }
    if (body.type === 'command') {
      this.command(body, redirects, inLoop, problem, node.text, redirectNodes, extra);
    } else if (body.type === 'test_command') {
      this.testCommand(body, redirects, inLoop, problem);
    } else if (body.type === 'declaration_command' || body.type === 'unset_command') {
      this.declaration(body, redirects, inLoop, problem);
    } else {
      // A redirect on a compound statement applies to every command inside: check it as its own context.
      const seg = emptySegment('context', node.text, inLoop, this.depth, problem);
      seg.redirects = redirects;
      this.segments.push(seg);
      this.statement(body, inLoop);
    }
  }

  private redirect(node: Node): { redirect: Redirect; problem: string | null; extra: Node[] } | string {
    if (node.type === 'heredoc_redirect') return 'heredocs are not supported';
    if (node.type === 'herestring_redirect') return 'here-strings are not supported';
    if (node.type !== 'file_redirect') return `the redirect ${describeKind(node.type)} is not supported`;
    let op = '';
    let target: Word | null = null;
    // tree-sitter-bash hangs the words that follow a redirect target (`nice 5<x rm -rf y`) on the redirect
    // as more destinations; bash makes them arguments of the command. Hand them back as such.
    const extra: Node[] = [];
    let opEnd = node.startIndex;
    for (let i = 0; i < node.childCount; i++) {
      const c = node.child(i) as Node;
      const field = node.fieldNameForChild(i);
      if (field === 'destination' && (op === '>&-' || op === '<&-')) {
        // `>&-` closes the descriptor and takes no word: what follows is an argument (`rm >&- -rf x` is `rm -rf x`).
        extra.push(c);
        continue;
      }
      if (field === 'destination' && target === null && this.text.slice(opEnd, c.startIndex).includes('\n')) {
        return `the target of ${op} is on the next line, which is a syntax error in bash`;
      }
      if (field === 'descriptor') {
        // bash takes the word before `>` as a descriptor only when it is all digits: in `perl -n2>&1 f`,
        // `-n2` is an argument, which tree-sitter reads as a descriptor (and the argv would lose it).
        if (!/^\d+$/.test(c.text)) return `\`${c.text}\` before a redirect is an argument to bash, not a file descriptor, and the parser misreads it`;
        continue;
      }
      if (field === 'destination') {
        if (target === null) {
          // `<2>&1`: bash reads `2>` as the next redirect's descriptor, so `<` has no word: a syntax error.
          if (/^\d+$/.test(c.text) && '<>'.includes(this.text[c.endIndex] ?? ' ')) return `\`${op}\` is followed by a descriptor number, which is a syntax error in bash`;
          target = this.word([c]);
        } else extra.push(c);
      } else if (!c.isNamed) {
        op += c.type;
        opEnd = c.endIndex;
      } else return `the redirect part ${describeKind(c.type)} is not supported`;
    }
    if (op === '>&-' || op === '<&-') return { redirect: { op, target: null, write: false, fdDup: true }, problem: null, extra };
    const dupOp = op === '>&' || op === '<&';
    // After `>&` or `<&` bash reads a leading `-` as "close" on its own and the rest of the word as an argument:
    // `rm -r >& --f x` runs `rm -r -f x`.
    if (dupOp && target !== null && target.raw.length > 1 && target.raw.startsWith('-')) {
      return `\`${op} ${target.raw}\` closes the descriptor and passes \`${target.raw.slice(1)}\` as an argument in bash`;
    }
    const fdDup = dupOp && target !== null && !target.dynamic && /^(\d+-?|-)$/.test(target.value);
    const write = WRITE_OPS.has(op) || (op === '>&' && !fdDup);
    if (op === '<&' && !fdDup) return 'an input fd duplication to a non-descriptor is not supported';
    return { redirect: { op, target, write, fdDup }, problem: target?.unsupported ?? null, extra };
  }

  private command(
    node: Node, redirects: Redirect[], inLoop: boolean, inherited: string | null = null, source?: string,
    outerRedirects: Node[] = [], extra: Node[] = [],
  ): void {
    const assignments: Assignment[] = [];
    let parts: Node[] = [];
    const redirectNodes: Node[] = [...outerRedirects];
    let problem = inherited;
    for (let i = 0; i < node.childCount; i++) {
      const c = node.child(i) as Node;
      const field = node.fieldNameForChild(i);
      if (c.type === 'variable_assignment') {
        const a = this.assignment(c);
        problem ??= a.problem;
        assignments.push(a.assignment);
      } else if (field === 'redirect' || c.type === 'file_redirect' || c.type.endsWith('_redirect')) {
        redirectNodes.push(c);
        const r = this.redirect(c);
        if (typeof r === 'string') problem ??= r;
        else {
          redirects.push(r.redirect);
          parts.push(...r.extra);
          problem ??= r.problem;
        }
      } else if (c.type === 'command_name') {
        parts.push(...c.children);
      } else if (field === 'argument' || c.type === '$') {
        parts.push(c);
      } else if (c.type === 'comment') {
        continue;
      } else {
        problem ??= `the command part ${describeKind(c.type)} is not supported`;
      }
    }
    parts.push(...extra);
    parts.sort((x, y) => x.startIndex - y.startIndex);
    // `cat 0</etc/passwd`: tree-sitter sometimes keeps the descriptor digits as an argument. A word glued to
    // the redirect that follows it is its descriptor in bash (`{name}` allocates one and sets a variable) -
    // except before `&>` and `&>>`, which take no descriptor: `chmod 777&>/dev/null f` is `chmod 777 f`.
    const redirectStarts = new Set(redirectNodes.filter((r) => this.text[r.startIndex] !== '&').map((r) => r.startIndex));
    parts = parts.filter((p) => {
      if (!redirectStarts.has(p.endIndex)) return true;
      // `x$2>&1`: bash reads `$2` (a parameter) where tree-sitter reads `$` and a redirect of descriptor 2.
      if (endsWithDollar(p.text)) problem ??= `\`${p.text}\` runs into the redirect after it, which bash reads as a parameter (\`$N\`)`;
      if (/^\d+$/.test(p.text)) return false;
      if (/^\{\w+\}$/.test(p.text)) problem ??= 'named file descriptors (`{fd}>file`) are not supported';
      return true;
    });
    const words = this.words(parts);
    for (const w of words) problem ??= w.unsupported;
    // The keyword `time` with nothing to time: tree-sitter makes it a command, but bash reads the `&&`, `||`,
    // `|` or `&` after it as a syntax error (`time && ls`). It runs nothing anyway.
    if (words[0]?.raw === 'time' && words.slice(1).every((w) => w.raw === '-p' || w.raw === '--') && redirects.length === 0) {
      problem ??= '`time` without a command to time is not supported';
    }
    this.segments.push({
      kind: 'simple', source: source ?? node.text, assignments, words, redirects, inLoop, unsupported: problem, depth: this.depth,
    });
  }

  private assignment(node: Node): { assignment: Assignment; problem: string | null } {
    const nameNode = node.childForFieldName('name');
    const valueNode = node.childForFieldName('value');
    let problem: string | null = null;
    if (nameNode === null || nameNode.type !== 'variable_name') {
      problem = 'an assignment to an array element or computed name is not supported';
    }
    let op = '';
    for (const c of node.children) if (!c.isNamed) op += c.type;
    if (op !== '=' && op !== '+=') problem ??= `the assignment operator ${JSON.stringify(op)} is not supported`;
    let value: Word | null = null;
    if (valueNode !== null) {
      if (valueNode.type === 'array') problem ??= 'array assignments are not supported';
      else {
        value = this.word([valueNode]);
        problem ??= value.unsupported;
      }
    }
    return { assignment: { name: nameNode?.text ?? node.text, value }, problem };
  }

  private assignmentsOnly(node: Node, inLoop: boolean): void {
    const list = node.type === 'variable_assignment' ? [node] : node.namedChildren;
    const assignments: Assignment[] = [];
    let problem: string | null = null;
    for (const c of list) {
      if (c.type !== 'variable_assignment') { problem ??= `${describeKind(c.type)} is not supported here`; continue; }
      const a = this.assignment(c);
      problem ??= a.problem;
      assignments.push(a.assignment);
    }
    const seg = emptySegment('simple', node.text, inLoop, this.depth, problem);
    seg.assignments = assignments;
    this.segments.push(seg);
  }

  private forStatement(node: Node, inLoop: boolean): void {
    const keyword = node.child(0);
    if (keyword?.type === 'select') {
      this.unsupported(node, '`select` reads its choice from stdin, which is not supported', inLoop);
    }
    this.keywordNewline(node, ['for', 'select', 'in'], inLoop);
    const values: Node[] = [];
    for (let i = 0; i < node.childCount; i++) {
      if (node.fieldNameForChild(i) === 'value') values.push(node.child(i) as Node);
    }
    // The word list is expanded like arguments: check it for unsupported expansions and path words.
    const words = values.map((v) => this.word([v]));
    const seg = emptySegment('context', node.text.split('\n')[0] ?? node.text, inLoop, this.depth, null);
    seg.words = words;
    for (const w of words) seg.unsupported ??= w.unsupported;
    this.segments.push(seg);
    const body = node.childForFieldName('body');
    if (body) this.statement(body, true);
  }

  private caseStatement(node: Node, inLoop: boolean): void {
    this.keywordNewline(node, ['case'], inLoop);
    const words: Word[] = [];
    for (let i = 0; i < node.childCount; i++) {
      const c = node.child(i) as Node;
      if (node.fieldNameForChild(i) === 'value') words.push(this.word([c]));
      else if (c.type === 'case_item') {
        for (let j = 0; j < c.childCount; j++) {
          const cc = c.child(j) as Node;
          if (c.fieldNameForChild(j) === 'value') words.push(this.word([cc]));
          else if (cc.isNamed) this.statement(cc, inLoop);
        }
      } else if (c.isNamed && c.type !== 'comment') {
        this.unsupported(c, `the case part ${describeKind(c.type)} is not supported`, inLoop);
      }
    }
    const seg = emptySegment('context', node.text.split('\n')[0] ?? node.text, inLoop, this.depth, null);
    // Case patterns are matched, not expanded to files: only their unsupported parts matter.
    for (const w of words) seg.unsupported ??= w.unsupported;
    this.segments.push(seg);
  }

  /** `for`, `select`, `case` and a `for`'s `in` need their word on the same line in bash; tree-sitter does not care. */
  private keywordNewline(node: Node, keywords: string[], inLoop: boolean): void {
    for (let i = 0; i + 1 < node.childCount; i++) {
      const k = node.child(i) as Node;
      if (k.isNamed || !keywords.includes(k.type)) continue;
      const after = node.child(i + 1) as Node;
      if (after.isNamed && this.text.slice(k.endIndex, after.startIndex).includes('\n')) {
        this.unsupported(node, `a newline after \`${k.type}\` is a syntax error in bash`, inLoop);
        return;
      }
    }
  }

  private testCommand(node: Node, redirects: Redirect[], inLoop: boolean, inherited: string | null = null): void {
    const open = node.child(0)?.type ?? '[';
    const leaves: Node[] = [];
    let problem = inherited;
    const visit = (n: Node): void => {
      for (const c of n.children) {
        if (!c.isNamed) {
          // Shell operators read inside the brackets: in `[ … ]` bash itself takes `<`, `>` as redirections and
          // `&&`, `||` as the end of the command; /bin/sh (dash) does the same inside `[[ … ]]`, where
          // `[[ x || rm == -rf ]]` runs `rm == -rf ]]`. Either way the test is not one command to every shell.
          if (!TEST_TOKENS.has(c.type)) problem ??= `the parser reads \`${c.type}\` as a test operator, which bash does not`;
          if (TEST_SPLITTERS.has(c.type)) problem ??= `\`${c.type}\` inside \`${open} … ${open === '[[' ? ']]' : ']'}\` is read as a shell operator by /bin/sh (dash)${open === '[' ? ' and bash' : ''}, which then runs something else`;
          continue;
        }
        if (c.type === 'unary_expression' || c.type === 'binary_expression' || c.type === 'parenthesized_expression'
          || c.type === 'negated_expression') {
          if (open === '[[') problem ??= condShapeProblem(c);
          visit(c);
        }
        else if (c.type === 'regex' && unquotedMeta(c.text)) problem ??= `the regex ${JSON.stringify(c.text)} holds a shell operator, which /bin/sh (dash) reads as the end of the command`;
        else if (c.type === 'test_operator' || WORD_KINDS.has(c.type) || c.type === 'regex') leaves.push(c);
        else problem ??= `the test part ${describeKind(c.type)} is not supported`;
      }
    };
    visit(node);
    // bash knows a fixed set of `[[` operators; tree-sitter takes any `-x` (`[[ -~ x ]]` is a syntax error in bash).
    if (open === '[[') {
      const unknown = leaves.find((l) => l.type === 'test_operator' && !COND_UNARY.has(l.text) && !COND_BINARY.has(l.text));
      if (unknown) problem ??= `\`${unknown.text}\` is not a \`[[\` operator bash knows`;
    }
    const words = leaves.map((l) => (l.type === 'test_operator' || l.type === 'regex' ? literalWord(l.text) : this.word([l])));
    for (const w of words) problem ??= w.unsupported;
    // `[[ x -eq y ]]` evaluates both sides as arithmetic, and arithmetic on `a[$(cmd)]` runs cmd: only
    // plain integers are safe there.
    if (open === '[[' && words.some((w) => /^-(eq|ne|lt|le|gt|ge)$/.test(w.value))) {
      const bad = words.find((w) => !/^-(eq|ne|lt|le|gt|ge)$/.test(w.value) && !/^-?\d+$/.test(w.value) && !/^(&&|\|\||!|\(|\))$/.test(w.value));
      if (bad) problem ??= '`[[ … -eq … ]]` evaluates its operands as arithmetic, which can run commands';
    }
    this.segments.push({
      kind: 'test', source: node.text, assignments: [], words: [literalWord(open), ...words], redirects, inLoop,
      unsupported: problem, depth: this.depth,
    });
  }

  private declaration(node: Node, redirects: Redirect[], inLoop: boolean, inherited: string | null = null): void {
    const keyword = node.child(0)?.type ?? 'declare';
    const words: Word[] = [literalWord(keyword)];
    const assignments: Assignment[] = [];
    let problem = inherited;
    for (const c of node.namedChildren) {
      if (c.type === 'variable_assignment') {
        const a = this.assignment(c);
        problem ??= a.problem;
        assignments.push(a.assignment);
        words.push(literalWord(c.text));
      } else if (c.type === 'variable_name') {
        assignments.push({ name: c.text, value: null });
        words.push(literalWord(c.text));
      } else if (WORD_KINDS.has(c.type)) {
        const w = this.word([c]);
        problem ??= w.unsupported;
        words.push(w);
      } else {
        problem ??= `the ${keyword} part ${describeKind(c.type)} is not supported`;
      }
    }
    this.segments.push({
      kind: node.type === 'unset_command' ? 'unset' : 'declaration', source: node.text, assignments, words, redirects,
      inLoop, unsupported: problem, depth: this.depth,
    });
  }

  /** Builds argv words from argument nodes, joining nodes that touch (bash sees one word there). */
  private words(parts: Node[]): Word[] {
    const out: Word[] = [];
    let group: Node[] = [];
    for (const p of parts) {
      const last = group[group.length - 1];
      if (last !== undefined && last.endIndex !== p.startIndex) {
        out.push(this.word(group));
        group = [];
      }
      group.push(p);
    }
    if (group.length > 0) out.push(this.word(group));
    return out;
  }

  /** Evaluates adjacent nodes as one word (quote removal, escapes, expansion flags). */
  word(nodes: Node[]): Word {
    this.meter.tick();
    const w: Word = {
      value: '', raw: '', dynamic: false, glob: false, brace: false, tilde: false, quoted: false, unsupported: null,
    };
    // `mask` holds the unquoted, unescaped characters (others become `_`), to find globs, braces and `~`.
    const acc = { mask: '' };
    const flat: Node[] = [];
    for (const n of nodes) {
      if (n.type === 'concatenation') flat.push(...n.children);
      else flat.push(n);
    }
    for (let i = 0; i < flat.length; i++) {
      const n = flat[i] as Node;
      const next = flat[i + 1];
      const glued = next !== undefined && next.startIndex === n.endIndex && (n.type === '$' || n.type === 'word') && endsWithDollar(n.text);
      if (glued && next.type === 'string') {
        // `$"…"` is a locale-translated string: with no message catalog it is the plain string. tree-sitter may
        // keep the `$` at the end of the token before it (`-r$"f"` is `-r$` then `"f"`): bash runs `-rf`.
        const before = n.text.slice(0, -1);
        const u = unescapeUnquoted(before);
        w.value += u.value;
        acc.mask += u.mask;
        if (u.value !== before) w.quoted = true;
        continue;
      }
      if (glued && next.type === 'raw_string') w.unsupported ??= `the parser splits the $'…' string in ${JSON.stringify(n.text + next.text)}`;
      this.part(n, w, acc);
    }
    w.raw = nodes.map((n) => n.text).join('');
    const mask = acc.mask;
    if (/[*?[]/.test(mask) || /[@!+]\(/.test(mask)) w.glob = true;
    if (/\{[^{}]*(,|\.\.)[^{}]*\}/.test(mask)) w.brace = true;
    if (mask.startsWith('~')) w.tilde = true;
    return w;
  }

  private part(n: Node, w: Word, acc: { mask: string }): void {
    switch (n.type) {
      case 'word':
      case '$': {
        // tree-sitter-bash sometimes emits an escaped `\$` as an anonymous `$` token: unescape it like a word.
        const u = unescapeUnquoted(n.text);
        w.value += u.value;
        acc.mask += u.mask;
        if (u.value !== n.text) w.quoted = true;
        return;
      }
      case 'number':
        w.value += n.text;
        acc.mask += n.text;
        return;
      case 'extglob_pattern':
        w.value += n.text;
        acc.mask += n.text;
        w.glob = true;
        return;
      case 'raw_string': {
        const inner = n.text.slice(1, -1);
        w.value += inner;
        acc.mask += '_'.repeat(inner.length);
        w.quoted = true;
        return;
      }
      case 'ansi_c_string': {
        const decoded = decodeAnsiC(n.text.slice(2, -1));
        if (decoded === null) w.unsupported ??= `the $'…' string ${JSON.stringify(n.text)} is not supported`;
        // /bin/sh in the sandbox is dash, which has no $'…': there `$'\'' ; rm -rf x ; #'` is `$`, a quoted
        // backslash, then `; rm -rf x`. Only an escaped quote makes the two shells end the string apart.
        else if (hasEscapedQuote(n.text.slice(2, -1))) w.unsupported ??= `the $'…' string ${JSON.stringify(n.text)} holds an escaped quote, where /bin/sh (dash) ends the string and reads the rest as commands`;
        else {
          w.value += decoded;
          acc.mask += '_'.repeat(decoded.length);
        }
        w.quoted = true;
        return;
      }
      case 'string':
      case 'translated_string':
        this.doubleQuoted(n, w);
        acc.mask += '_'.repeat(Math.max(0, n.text.length - 2));
        w.quoted = true;
        return;
      case 'simple_expansion':
      case 'expansion':
        this.expansion(n, w);
        acc.mask += '_';
        return;
      case 'brace_expression':
        w.value += n.text;
        acc.mask += n.text;
        w.brace = true;
        return;
      case 'command_substitution':
        w.unsupported ??= n.text.startsWith('`') ? 'backtick command substitution is not supported' : '`$( )` command substitution is not supported';
        w.value += n.text;
        this.nestedStatements(n);
        return;
      case 'process_substitution':
        w.unsupported ??= 'process substitution is not supported';
        w.value += n.text;
        this.nestedStatements(n);
        return;
      case 'arithmetic_expansion':
        w.unsupported ??= 'arithmetic expansion is not supported';
        w.value += n.text;
        return;
      default:
        w.unsupported ??= `the word part ${describeKind(n.type)} is not supported`;
        w.value += n.text;
    }
  }

  /** Statements inside `$( )` or `<( )` still run: collect them so a blocked command in there decides. */
  private nestedStatements(n: Node): void {
    for (const c of n.namedChildren) if (isStatementLike(c.type)) this.statement(c, false);
  }

  private doubleQuoted(n: Node, w: Word): void {
    let pos = n.startIndex + (n.type === 'translated_string' ? 2 : 1);
    const end = n.endIndex - 1;
    const text = this.text;
    const gap = (to: number): void => {
      if (to > pos) w.value += unescapeDouble(text.slice(pos, to));
    };
    for (const c of n.namedChildren) {
      if (c.type === 'string_content') continue;
      gap(c.startIndex);
      if (c.type === 'simple_expansion' || c.type === 'expansion') this.expansion(c, w);
      else if (c.type === 'command_substitution') {
        w.unsupported ??= c.text.startsWith('`') ? 'backtick command substitution is not supported' : '`$( )` command substitution is not supported';
        w.value += c.text;
        this.nestedStatements(c);
      } else if (c.type === 'arithmetic_expansion') {
        w.unsupported ??= 'arithmetic expansion is not supported';
        w.value += c.text;
      } else {
        w.unsupported ??= `the string part ${describeKind(c.type)} is not supported`;
        w.value += c.text;
      }
      pos = c.endIndex;
    }
    gap(end);
  }

  /** Plain `$name` / `${name}` only: operators (`${x:-…}`, `${x/…}`, `${!x}`, `${#x}`, `${x@…}`) are unsupported. */
  private expansion(n: Node, w: Word): void {
    w.dynamic = true;
    w.value += n.text;
    const named = n.namedChildren;
    const okName = named.length === 1 && (named[0]?.type === 'variable_name' || named[0]?.type === 'special_variable_name');
    if (n.type === 'simple_expansion') {
      if (!okName) w.unsupported ??= `the expansion ${n.text} is not supported`;
      return;
    }
    const anon = n.children.filter((c) => !c.isNamed).map((c) => c.type).join('');
    if (!okName || anon !== '${}') w.unsupported ??= `the parameter expansion ${n.text} uses an operator, which is not supported`;
  }
}

function isStatementLike(type: string): boolean {
  return GROUPING.has(type) || ['command', 'redirected_statement', 'for_statement', 'case_statement', 'test_command',
    'declaration_command', 'unset_command', 'function_definition', 'c_style_for_statement', 'variable_assignment',
    'variable_assignments', 'compound_statement'].includes(type);
}

function describeKind(type: string): string {
  const names: Record<string, string> = {
    c_style_for_statement: '`for (( … ))`',
    arithmetic_expansion: 'arithmetic `$(( ))`',
    compound_statement: '`{ … }`',
    heredoc_redirect: 'heredoc',
    herestring_redirect: 'here-string',
  };
  return names[type] ?? `\`${type}\``;
}

function emptySegment(kind: SegmentKind, source: string, inLoop: boolean, depth: number, unsupported: string | null): RawSegment {
  return { kind, source, assignments: [], words: [], redirects: [], inLoop, unsupported, depth };
}

export function literalWord(value: string): Word {
  return { value, raw: value, dynamic: false, glob: false, brace: false, tilde: false, quoted: false, unsupported: null };
}

/** Unquoted word: `\c` is `c`. The mask marks escaped characters so `\*` is not a glob. */
function unescapeUnquoted(text: string): { value: string; mask: string } {
  if (!text.includes('\\')) return { value: text, mask: text };
  let value = '';
  let mask = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === '\\' && i + 1 < text.length) {
      value += text[i + 1];
      mask += '_';
      i++;
    } else {
      value += ch;
      mask += ch;
    }
  }
  return { value, mask };
}

/** Whether text ends in a `$` that is not backslash-escaped. */
function endsWithDollar(text: string): boolean {
  if (!text.endsWith('$')) return false;
  let slashes = 0;
  for (let i = text.length - 2; i >= 0 && text[i] === '\\'; i--) slashes++;
  return slashes % 2 === 0;
}

/** A `\'` in the body of a `$'…'` string, read the way bash reads escapes there. */
function hasEscapedQuote(body: string): boolean {
  for (let i = 0; i < body.length; i++) {
    if (body[i] !== '\\') continue;
    if (body[i + 1] === "'") return true;
    i++;
  }
  return false;
}

/** Inside double quotes a backslash only escapes `$`, backtick, `"`, `\` and newline. */
function unescapeDouble(text: string): string {
  if (!text.includes('\\')) return text;
  return text.replace(/\\([$`"\\\n])/g, (_m, c: string) => (c === '\n' ? '' : c));
}

/**
 * Decodes the body of a `$'…'` string as bash does. Returns null when the result holds characters we refuse
 * (NUL truncates the word in bash; other control characters hide what runs).
 */
export function decodeAnsiC(body: string): string | null {
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const ch = body[i] as string;
    if (ch !== '\\' || i + 1 >= body.length) { out += ch; continue; }
    const e = body[++i] as string;
    const simple: Record<string, string> = {
      a: '\x07', b: '\b', e: '\x1b', E: '\x1b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\', "'": "'", '"': '"', '?': '?',
    };
    if (e in simple) { out += simple[e]; continue; }
    let m: RegExpExecArray | null;
    const rest = body.slice(i);
    if ((m = /^[0-7]{1,3}/.exec(rest))) { out += String.fromCharCode(parseInt(m[0], 8) & 0xff); i += m[0].length - 1; continue; }
    if ((m = /^x([0-9a-fA-F]{1,2})/.exec(rest))) { out += String.fromCharCode(parseInt(m[1] as string, 16)); i += m[0].length - 1; continue; }
    if ((m = /^u([0-9a-fA-F]{1,4})/.exec(rest))) { out += String.fromCodePoint(parseInt(m[1] as string, 16)); i += m[0].length - 1; continue; }
    if ((m = /^U([0-9a-fA-F]{1,8})/.exec(rest))) {
      const cp = parseInt(m[1] as string, 16);
      if (cp > 0x10ffff) return null;
      out += String.fromCodePoint(cp); i += m[0].length - 1; continue;
    }
    if (e === 'c') return null; // control-character escapes: refused
    out += '\\' + e;
  }
  if (/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/.test(out)) return null;
  return out;
}
