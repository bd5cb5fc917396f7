/**
 * From a raw segment to what the matcher reasons about: the layers of wrappers (`sudo env rm -rf x` →
 * three layers), whether the segment runs code out of sight (opaque), and what it cannot reason about.
 */
import type { RawSegment, Word } from './shell.js';
import {
  ALWAYS_OPAQUE, INTERPRETERS, RESERVED, SHELLS, STATE_BUILTINS, WRAPPERS, canonicalArgs, interpreterKey, isDangerousVariable,
  type WrapperSpec,
} from './tools.js';

export interface Layer {
  /** Command name reduced to its basename. */
  name: string;
  /** Canonical text: name, this layer's own canonical options, then the inner layer's text. */
  text: string;
  /** Canonical argv of this layer (text split back into words). */
  argv: string[];
  /** Flags of the innermost command (for wrappers: of the wrapper's own options). */
  flags: Set<string>;
  positionals: string[];
  /** Index in the segment's words where this layer's command name is. */
  start: number;
  /** True when this layer's own options hold a word the matcher cannot know (`$X`, a glob, braces). */
  dynamicArgs: boolean;
}

export interface Analysis {
  layers: Layer[];
  unsupported: string | null;
  opaque: string | null;
  /** Literal scripts given to `sh -c`: parsed and checked as segments of their own. */
  nestedScripts: string[];
  /** For `cd`: the target word (null when it has none we can follow). */
  cd: { target: Word | null } | null;
  /** Indexes of words that are not paths even when they hold `/` (echo text, grep patterns, sed scripts). */
  notPaths: Set<number>;
  /** Indexes of command-name words. */
  names: Set<number>;
}

/**
 * The only commands whose arguments may hold an expansion (`$VAR`, `"$@"`): they print, compare or wait.
 * Anywhere else an expansion can become an option that runs code (`python3 "$X"` with X='-c…',
 * `find . $X` with X='-exec rm -rf {} +') or a path the check cannot see, so it is unsupported. An allow-list,
 * because a list of dangerous tools is never complete.
 */
const DYNAMIC_ARGS_OK = new Set(['echo', 'printf', 'test', '[', 'true', 'false', 'exit', 'return', 'sleep', 'basename', 'dirname', 'seq', 'expr']);

const SAFE_SET_OPTIONS = new Set(['errexit', 'nounset', 'xtrace', 'verbose', 'pipefail', 'noclobber', 'noglob', 'errtrace', 'functrace', 'noexec']);

export function analyze(seg: RawSegment): Analysis {
  const a: Analysis = { layers: [], unsupported: null, opaque: null, nestedScripts: [], cd: null, notPaths: new Set(), names: new Set() };
  for (const asg of seg.assignments) {
    // `unset PATH` matters too: bash then searches a built-in path that ends in `.` (the project).
    if (isDangerousVariable(asg.name)) {
      a.unsupported ??= `assigning ${asg.name} changes what the command runs or loads`;
    }
  }
  if (seg.kind === 'context') return a;
  const words = seg.words;
  if (words.length === 0) return a;
  if (seg.kind === 'declaration' || seg.kind === 'unset') {
    declarationChecks(seg, a);
    a.layers.push(innermostLayer(words, 0));
    a.names.add(0);
    return a;
  }
  if (seg.kind === 'test') {
    a.layers.push(innermostLayer(words, 0));
    a.names.add(0);
    return a;
  }

  const starts: { start: number; own: number; spec: WrapperSpec | null }[] = [];
  let start = 0;
  for (;;) {
    const w = words[start] as Word;
    const problem = commandNameProblem(w);
    if (problem) { a.unsupported ??= problem; return a; }
    a.names.add(start);
    const name = basename(w.value);
    const spec = Object.hasOwn(WRAPPERS, name) ? (WRAPPERS[name] as WrapperSpec) : null;
    if (spec === null) { starts.push({ start, own: words.length, spec: null }); break; }
    const parsed = parseWrapper(name, spec, words, start + 1);
    if (parsed.unsupported) { a.unsupported ??= parsed.unsupported; return a; }
    if (parsed.opaque) a.opaque ??= parsed.opaque;
    if (spec.opaque) a.opaque ??= spec.opaque;
    if (parsed.inner === null) {
      if (name === 'exec' && !parsed.noCommand) { a.unsupported ??= STATE_BUILTINS['exec'] as string; return a; }
      starts.push({ start, own: words.length, spec: null });
      break;
    }
    starts.push({ start, own: parsed.inner, spec });
    start = parsed.inner;
  }

  // Build layers innermost first, so each wrapper's text can end with its inner layer's text.
  let inner: Layer | null = null;
  const layers: Layer[] = [];
  for (let i = starts.length - 1; i >= 0; i--) {
    const s = starts[i] as { start: number; own: number; spec: WrapperSpec | null };
    const layer: Layer = inner === null ? innermostLayer(words, s.start) : wrapperLayer(words, s.start, s.own, inner);
    layers.unshift(layer);
    inner = layer;
  }
  a.layers = layers;
  const innermost = layers[layers.length - 1] as Layer;
  const innerWords = words.slice(innermost.start);
  commandChecks(innermost.name, innerWords.map((w) => w.value), innerWords, innermost.start, a);
  for (const l of layers) {
    if (/^ld(-linux[\w.-]*|-musl[\w.-]*)?\.so(\.\d+)*$/.test(l.name)) a.opaque ??= 'the dynamic loader runs any file as a program';
  }
  return a;
}

/**
 * A command name must be a literal: an expansion, glob or brace there means the matcher does not know
 * what runs. Non-ASCII names are refused because look-alikes (`rм` with a Cyrillic м) would slip past
 * blocked patterns while a shim could still run `rm`.
 */
function commandNameProblem(w: Word): string | null {
  if (w.unsupported) return w.unsupported;
  if (w.dynamic) return `the command name ${w.raw} is an expansion whose value the matcher cannot know`;
  if (w.glob || w.brace) return `the command name ${w.raw} is a glob or brace expansion`;
  if (w.tilde) return `the command name ${w.raw} uses ~ expansion`;
  if (w.value === '') return 'the command name is empty';
  if (!/^[\x21-\x7e]+$/.test(w.value)) return `the command name ${JSON.stringify(w.value)} holds non-ASCII or blank characters`;
  if (RESERVED.has(w.value) && !w.quoted) return `the reserved word ${w.value} is used where a command is expected (for example \`time { …; }\`), which is not supported`;
  const base = basename(w.value);
  if (w.value.includes('/') && (base === '' || base === '.' || base === '..')) return `the command name ${w.raw} is a directory`;
  return null;
}

export function basename(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? p : p.slice(i + 1);
}

function innermostLayer(words: Word[], start: number): Layer {
  const name = basename((words[start] as Word).value);
  const args = words.slice(start + 1);
  const c = canonicalArgs(name, args.map((w) => w.value));
  const argv = [name, ...c.tokens];
  return {
    name, text: argv.join(' '), argv, flags: c.flags, positionals: c.positionals, start,
    dynamicArgs: args.some((w) => w.dynamic || w.glob || w.brace),
  };
}

function wrapperLayer(words: Word[], start: number, innerStart: number, inner: Layer): Layer {
  const name = basename((words[start] as Word).value);
  const own = words.slice(start + 1, innerStart);
  const c = canonicalArgs(name, own.map((w) => w.value));
  const argv = [name, ...c.tokens, ...inner.argv];
  return {
    name, text: argv.join(' '), argv, flags: c.flags, positionals: c.positionals, start,
    dynamicArgs: own.some((w) => w.dynamic || w.glob || w.brace),
  };
}

interface WrapperParse {
  inner: number | null;
  opaque: string | null;
  unsupported: string | null;
  noCommand: boolean;
}

/** Parses a wrapper's own options to find where the wrapped command starts. Fails closed on anything unknown. */
function parseWrapper(name: string, spec: WrapperSpec, words: Word[], from: number): WrapperParse {
  const r: WrapperParse = { inner: null, opaque: null, unsupported: null, noCommand: false };
  let leading = spec.leading ?? 0;
  const seen = (opt: string): boolean => {
    if (spec.noCommand?.includes(opt)) r.noCommand = true;
    const op = spec.opaqueOpts?.[opt];
    if (op) r.opaque ??= op;
    const un = spec.unsupportedOpts?.[opt];
    if (un) { r.unsupported ??= un; return false; }
    return true;
  };
  const longArg = new Set(spec.longArg ?? []);
  const longNoArg = new Set(spec.longNoArg ?? []);
  let i = from;
  while (i < words.length) {
    const w = words[i] as Word;
    if (w.unsupported) { r.unsupported = w.unsupported; return r; }
    if (w.dynamic || w.glob || w.brace || w.tilde) {
      r.unsupported = `the ${name} argument ${w.raw} is an expansion, so the wrapped command cannot be found`;
      return r;
    }
    const v = w.value;
    if (v === '--') { i++; break; }
    if (name === 'env' && v === '-') { i++; continue; }
    if (spec.assignments && /^[A-Za-z_][A-Za-z0-9_]*=/.test(v)) {
      const varName = v.slice(0, v.indexOf('='));
      if (isDangerousVariable(varName)) { r.unsupported = `${name} sets ${varName}, which changes what the command runs or loads`; return r; }
      i++;
      continue;
    }
    if (v.startsWith('--') && v.length > 2) {
      const eq = v.indexOf('=');
      const given = eq < 0 ? v.slice(2) : v.slice(2, eq);
      const all = [...longArg, ...longNoArg];
      const full = all.includes(given) ? given : all.filter((o) => o.startsWith(given)).length === 1 ? all.find((o) => o.startsWith(given)) : undefined;
      if (full === undefined) {
        if (spec.lenient) { i++; continue; }
        r.unsupported = `the ${name} option --${given} is not known, so the wrapped command cannot be found`;
        return r;
      }
      if (!seen('--' + full)) return r;
      if (longArg.has(full) && eq < 0) i++;
      if (spec.noCommand?.includes('--' + full)) { r.noCommand = true; return r; }
      i++;
      continue;
    }
    if (v.startsWith('-') && v.length > 1) {
      if (spec.numeric && /^-\d+$/.test(v)) { i++; continue; }
      let consumedNext = false;
      for (let j = 1; j < v.length; j++) {
        const ch = v[j] as string;
        if (spec.shortArg?.includes(ch)) {
          if (!seen('-' + ch)) return r;
          if (j === v.length - 1) consumedNext = true;
          break;
        }
        if (spec.shortOptionalArg?.includes(ch)) { seen('-' + ch); break; }
        if (spec.shortNoArg?.includes(ch)) { if (!seen('-' + ch)) return r; continue; }
        if (spec.lenient) break;
        r.unsupported = `the ${name} option -${ch} is not known, so the wrapped command cannot be found`;
        return r;
      }
      if (r.noCommand) return r;
      i += consumedNext ? 2 : 1;
      continue;
    }
    if (leading > 0) { leading--; i++; continue; }
    break;
  }
  if (r.noCommand) return r;
  if (i < words.length) r.inner = i;
  return r;
}

function declarationChecks(seg: RawSegment, a: Analysis): void {
  const keyword = (seg.words[0] as Word).value;
  for (const w of seg.words.slice(1)) {
    if (w.dynamic) { a.unsupported ??= `${keyword} with the expansion ${w.raw} may set any variable`; return; }
    if (/^[-+]/.test(w.value)) {
      // -n makes a nameref (a later write lands in another variable), -i evaluates arithmetic (which can run
      // commands), -f/-F touch functions, -t traces: none of these can be reasoned about.
      if (keyword !== 'unset' && !/^[-+][xrglupaA]+$/.test(w.value)) { a.unsupported ??= `${keyword} ${w.value} is not supported`; return; }
    } else {
      const name = w.value.split('=')[0] ?? '';
      if (isDangerousVariable(name) && keyword !== 'unset') {
        a.unsupported ??= `${keyword} ${name} changes what later commands run or load`;
        return;
      }
    }
  }
}

/** Checks that depend on what the innermost command is. `args` includes the name at index 0. */
function commandChecks(name: string, argv: string[], words: Word[], base: number, a: Analysis): void {
  const args = argv.slice(1);
  const state = STATE_BUILTINS[name];
  if (state !== undefined && name !== 'exec') { a.unsupported ??= state; return; }
  if (Object.hasOwn(ALWAYS_OPAQUE, name)) a.opaque ??= ALWAYS_OPAQUE[name] as string;

  if (!DYNAMIC_ARGS_OK.has(name)) {
    const dyn = words.slice(1).find((w) => w.dynamic);
    if (dyn) a.unsupported ??= `${name} with the expansion ${dyn.raw}: it could become an option that runs code or a path the check cannot see`;
  }

  switch (name) {
    case 'set': {
      for (let i = 0; i < args.length; i++) {
        const v = args[i] as string;
        if (v === '--' || v === '-') break;
        if (v === '-o' || v === '+o') {
          const opt = args[++i];
          if (opt !== undefined && !SAFE_SET_OPTIONS.has(opt)) { a.unsupported ??= `set -o ${opt} is not supported`; return; }
          continue;
        }
        if (!/^[-+][euxvfCEBhHPTno]+$/.test(v)) { a.unsupported ??= `set ${v} is not supported (only -e, -u, -x, -o pipefail and similar)`; return; }
        if (v.includes('o')) {
          const opt = args[++i];
          if (opt !== undefined && !SAFE_SET_OPTIONS.has(opt)) { a.unsupported ??= `set -o ${opt} is not supported`; return; }
        }
      }
      return;
    }
    case 'read':
    case 'getopts':
    case 'printf':
    case 'wait': {
      const hit = args.find((v) => /^[A-Za-z_]\w*$/.test(v) && isDangerousVariable(v));
      if (hit && (name !== 'printf' || args.includes('-v'))) a.unsupported ??= `${name} may assign ${hit}, which changes what later commands run`;
      if (name === 'printf') args.forEach((_v, i) => a.notPaths.add(base + 1 + i));
      return;
    }
    case 'echo':
      args.forEach((_v, i) => a.notPaths.add(base + 1 + i));
      return;
    case 'cd': {
      const operands = args.filter((v, i) => !(/^-[LPe@]+$/.test(v) && args.slice(0, i).every((x) => x.startsWith('-'))));
      const first = operands[0];
      if (operands.length !== 1 || first === '-' ) {
        a.unsupported ??= operands.length === 0 ? '`cd` without a directory goes to $HOME, which the path check cannot follow' : `cd ${operands.join(' ')} cannot be followed by the path check`;
        a.cd = { target: null };
        return;
      }
      const idx = argv.lastIndexOf(first as string);
      const w = words[idx] ?? null;
      if (w && (w.dynamic || w.glob || w.brace || w.tilde || w.unsupported)) a.unsupported ??= `cd ${w.raw} cannot be followed by the path check`;
      a.cd = { target: w };
      return;
    }
    case 'find':
      for (let i = 0; i < args.length; i++) {
        const v = args[i] as string;
        if (['-exec', '-execdir', '-ok', '-okdir'].includes(v)) {
          a.opaque ??= `find ${v} runs a command for each file`;
          // The command it runs is checked like any other (blocked patterns, paths): `find . -exec rm -rf {} +`
          // is a hard deny, not an approvable opaque segment.
          let end = i + 1;
          while (end < args.length && args[end] !== ';' && args[end] !== '+') end++;
          const cmd = args.slice(i + 1, end);
          if (cmd.length > 0) a.nestedScripts.push(cmd.map((x) => `'${x.replace(/'/g, `'\\''`)}'`).join(' '));
          i = end;
          continue;
        }
        if (v === '-delete') a.opaque ??= 'find -delete deletes every file it finds';
      }
      return;
    case 'git':
      gitChecks(args, a);
      return;
    case 'rg':
      if (args.some((v) => v === '--pre' || v.startsWith('--pre='))) a.opaque ??= 'rg --pre runs a program on every file';
      patternArgs(args, base, a, ['-e', '--regexp'], ['-f', '--file']);
      return;
    case 'grep': case 'egrep': case 'fgrep': case 'zgrep': case 'ag': case 'ack':
      patternArgs(args, base, a, ['-e', '--regexp'], ['-f', '--file']);
      return;
    case 'sed': {
      const scripts = patternArgs(args, base, a, ['-e', '--expression'], ['-f', '--file']);
      for (const s of scripts) {
        const why = sedScriptProblem(s);
        if (why) { a.opaque ??= why; break; }
      }
      return;
    }
    case 'awk': case 'gawk': case 'mawk': case 'nawk': {
      const programs = patternArgs(args, base, a, ['-e', '--source'], ['-f', '--file'], ['-v', '-F', '--assign', '--field-separator']);
      for (const p of programs) {
        if (/system|getline|\||@load|\bprintf?\b[^;{}]*>/.test(p)) { a.opaque ??= 'the awk program runs commands or writes files (system, |, getline, print >)'; break; }
      }
      return;
    }
    case 'tar':
      for (const f of canonicalArgs('tar', args).flags) {
        if (/^(--checkpoint-action|--to-command|--use-compress-program|--info-script|--new-volume-script|--rsh-command|--rmt-command|-I|-F)(=|$)/.test(f)) {
          a.opaque ??= `tar ${f.split('=')[0] ?? f} runs a program`;
          break;
        }
      }
      return;
    case 'ssh': case 'scp': case 'sftp':
      for (let i = 0; i < args.length; i++) {
        const v = args[i] as string;
        const opt = v === '-o' ? (args[i + 1] ?? '') : v.startsWith('-o') ? v.slice(2) : '';
        if (/command|permitlocalcommand/i.test(opt)) { a.opaque ??= `${name} -o ${opt.split('=')[0] ?? ''} runs a local program`; break; }
        if (v === '-F' || (name === 'scp' && v === '-S')) { a.opaque ??= `${name} ${v} can make it run local programs`; break; }
      }
      return;
    case 'rsync':
      if (args.some((v) => /^(-e|--rsh|--rsync-path)(=|$)/.test(v) || /^-[a-zA-Z]*e/.test(v) && !v.startsWith('--'))) a.opaque ??= 'rsync -e/--rsh runs a program';
      return;
    case 'sort':
      if (args.some((v) => v.startsWith('--compress-prog'))) a.opaque ??= 'sort --compress-program runs a program';
      return;
    case 'make': case 'gmake':
      if (args.some((v) => v.startsWith('--eval') || /^-[A-Za-z]*E/.test(v))) a.opaque ??= 'make --eval runs make code given on the command line';
      return;
    case 'nc': case 'ncat': case 'netcat':
      if (args.some((v) => /^-[A-Za-z]*[ec]/.test(v) || v === '--exec' || v === '--sh-exec' || v === '--lua-exec')) a.opaque ??= `${name} -e/-c runs a program for the connection`;
      return;
    case 'socat':
      if (args.some((v) => /(^|[,:!])(EXEC|SYSTEM)[:,]?/i.test(v))) a.opaque ??= 'socat EXEC/SYSTEM addresses run programs';
      return;
    case 'tmux': case 'screen': case 'byobu':
      a.opaque ??= `${name} runs shells and commands out of sight`;
      return;
  }

  if (SHELLS.has(name)) {
    shellChecks(name, args, words, a);
    return;
  }
  const key = interpreterKey(name);
  if (key !== null) interpreterChecks(name, key, args, a);
}

/**
 * grep/sed/awk take a pattern or program as the first operand (or as `-e` values): those words are not
 * paths even when they hold `/`. Returns the pattern/program texts.
 */
function patternArgs(args: string[], base: number, a: Analysis, valueOpts: string[], fileOpts: string[], otherValueOpts: string[] = []): string[] {
  const out: string[] = [];
  let fromOption = false;
  let firstPositional = -1;
  for (let i = 0; i < args.length; i++) {
    const v = args[i] as string;
    if (v === '--') { if (firstPositional < 0 && i + 1 < args.length) firstPositional = i + 1; break; }
    const eqName = v.split('=')[0] as string;
    if (valueOpts.includes(v)) { fromOption = true; const next = args[i + 1]; if (next !== undefined) { out.push(next); a.notPaths.add(base + 2 + i); } i++; continue; }
    if (v.startsWith('--') && valueOpts.includes(eqName)) { fromOption = true; out.push(v.slice(eqName.length + 1)); a.notPaths.add(base + 1 + i); continue; }
    if (valueOpts.some((o) => o.length === 2 && v.startsWith(o) && v.length > 2)) { fromOption = true; out.push(v.slice(2)); a.notPaths.add(base + 1 + i); continue; }
    if (fileOpts.includes(v) || fileOpts.includes(eqName)) { fromOption = true; if (!v.includes('=')) i++; continue; }
    if (otherValueOpts.includes(v)) { i++; continue; }
    if (v.startsWith('-') && v.length > 1) continue;
    if (firstPositional < 0) firstPositional = i;
  }
  if (!fromOption && firstPositional >= 0) {
    out.push(args[firstPositional] as string);
    a.notPaths.add(base + 1 + firstPositional);
  }
  return out;
}

/**
 * A shell runs code the matcher cannot see when given `-c` (we still parse a literal script and check its
 * segments), `-s`, `-i`, or no script file at all (it reads commands from stdin). `bash script.sh` is treated
 * like `python3 script.py`: running a file of the project.
 */
function shellChecks(name: string, args: string[], words: Word[], a: Analysis): void {
  let hasC = false;
  let i = 0;
  for (; i < args.length; i++) {
    const v = args[i] as string;
    if (v === '--' || v === '-') { i++; break; }
    if (/^--(rcfile|init-file)$/.test(v)) { i++; continue; }
    if (v.startsWith('--')) continue;
    if (/^[-+][A-Za-z]+$/.test(v)) {
      const letters = v.slice(1);
      const longCommand = /^-[Cc]ommand$|^-EncodedCommand$/.test(v);
      if (longCommand || (v.startsWith('-') && letters.includes('c'))) hasC = true;
      if (!longCommand && v.startsWith('-') && /[si]/.test(letters)) a.opaque ??= `${name} ${v} reads commands from stdin`;
      if (/[oO]$/.test(letters)) i++;
      continue;
    }
    break;
  }
  const script = args[i];
  if (hasC) {
    a.opaque ??= `${name} -c runs a script given as a string`;
    const w = words[i + 1];
    if (script !== undefined && w !== undefined && !w.dynamic && !w.unsupported) a.nestedScripts.push(script);
    else a.opaque = `${name} -c runs a script the matcher cannot read`;
    return;
  }
  if (script === undefined) a.opaque ??= `${name} without a script file reads commands from stdin`;
}

/** Interpreters with inline code (`python -c`, `node -e`, `perl -e`) or reading code from stdin are opaque. */
function interpreterChecks(name: string, key: string, args: string[], a: Analysis): void {
  const spec = INTERPRETERS[key];
  if (!spec) return;
  const valueOpts = new Set(['-W', '-X', '-r', '--require', '--import', '--loader', '--experimental-loader', '-C', '-I', '-M', '-d', '-c', '-x']);
  for (let i = 0; i < args.length; i++) {
    const v = args[i] as string;
    const optName = v.split('=')[0] as string;
    if (spec.inline.includes(optName)) { a.opaque ??= `${name} ${optName} runs inline code`; return; }
    if (/^-[A-Za-z]+$/.test(v) && !v.startsWith('--') && spec.inline.some((o) => o.length === 2 && v.slice(1).includes(o[1] as string))) {
      // Bundles like `perl -ne` or `python -Bc`.
      a.opaque ??= `${name} ${v} runs inline code`;
      return;
    }
    if (v === '-i' && key !== 'php') { a.opaque ??= `${name} -i reads code interactively from stdin`; return; }
    if (spec.noStdinOpts?.includes(optName)) return;
    if (v === '-') { a.opaque ??= `${name} - reads code from stdin`; return; }
    if (v.startsWith('-')) { if (valueOpts.has(v) && !spec.inline.includes(v)) i++; continue; }
    if (spec.subcommands?.includes(v)) { a.opaque ??= `${name} ${v} runs code given on the command line`; return; }
    return; // a script file
  }
  a.opaque ??= `${name} without a script reads code from stdin`;
}

function gitChecks(args: string[], a: Analysis): void {
  let i = 0;
  // Global options come before the subcommand.
  for (; i < args.length; i++) {
    const v = args[i] as string;
    if (v === '-c' || v.startsWith('--config-env') || (v.startsWith('-c') && v.length > 2)) { a.opaque ??= 'git -c can set options that run programs (core.pager, core.sshCommand, alias.*)'; return; }
    if (v.startsWith('--exec-path') && v.includes('=')) { a.opaque ??= 'git --exec-path makes git run programs from another directory'; return; }
    if (v === '-C' || v === '--git-dir' || v === '--work-tree' || v === '--namespace') { i++; continue; }
    if (v.startsWith('-')) continue;
    break;
  }
  const sub = args[i];
  const rest = args.slice(i + 1);
  if (args.some((v) => /^--(upload-pack|receive-pack|exec)(=|$)/.test(v)) || ((sub === 'clone' || sub === 'fetch' || sub === 'ls-remote' || sub === 'pull') && rest.includes('-u'))) {
    a.opaque ??= `git ${sub ?? ''} --upload-pack/--receive-pack runs a program`;
    return;
  }
  switch (sub) {
    case 'config': {
      const reads = ['--get', '--get-all', '--get-regexp', '--list', '-l', '--get-urlmatch', '--show-origin', '--show-scope', '--name-only', '--null', '-z', 'get', 'list'];
      const positionals = rest.filter((v) => !v.startsWith('-'));
      const isRead = rest.some((v) => reads.includes(v)) || (positionals.length <= 1 && !rest.some((v) => /^--(add|replace-all|unset|unset-all|rename-section|remove-section|edit)$|^-e$/.test(v)));
      if (!isRead) a.opaque ??= 'git config can set values that run programs (core.pager, core.sshCommand, alias.*)';
      return;
    }
    case 'rebase':
      if (rest.some((v) => v === '-x' || v.startsWith('--exec'))) a.opaque ??= 'git rebase --exec runs commands';
      return;
    case 'bisect':
      if (rest[0] === 'run') a.opaque ??= 'git bisect run runs commands';
      return;
    case 'submodule':
      if (rest.includes('foreach')) a.opaque ??= 'git submodule foreach runs commands';
      return;
    case 'filter-branch':
    case 'filter-repo':
      a.opaque ??= `git ${sub} runs commands`;
      return;
    case 'difftool':
    case 'mergetool':
      if (rest.some((v) => v === '-x' || v.startsWith('--extcmd') || v.startsWith('--tool') || v === '-t')) a.opaque ??= `git ${sub} runs the given tool`;
      return;
  }
}

/**
 * Finds sed commands that run programs (`e`, the `s///e` flag) or touch files named inside the script
 * (`w`, `W`, `r`, `R`, the `s///w` flag), which the path check cannot see. A script we cannot scan is
 * treated the same way.
 */
export function sedScriptProblem(script: string): string | null {
  const s = script;
  let i = 0;
  const n = s.length;
  const skipDelimited = (delim: string): boolean => {
    while (i < n && s[i] !== delim) {
      if (s[i] === '\\') i++;
      else if (s[i] === '\n') return false;
      i++;
    }
    if (i >= n) return false;
    i++;
    return true;
  };
  while (i < n) {
    while (i < n && /[\s;{}!]/.test(s[i] as string)) i++;
    if (i >= n) break;
    // Addresses: numbers, $, /re/, \cREc, first~step, addr,+N
    for (let k = 0; k < 2; k++) {
      if (/[0-9]/.test(s[i] ?? '')) { while (/[0-9~]/.test(s[i] ?? '')) i++; }
      else if (s[i] === '$') i++;
      else if (s[i] === '/') { i++; if (!skipDelimited('/')) return 'the sed script cannot be scanned'; while (/[IM]/.test(s[i] ?? '')) i++; }
      else if (s[i] === '\\') { const d = s[i + 1] ?? ''; i += 2; if (!skipDelimited(d)) return 'the sed script cannot be scanned'; }
      if (s[i] === ',') { i++; if (s[i] === '+' || s[i] === '~') i++; continue; }
      break;
    }
    while (i < n && /[\s!]/.test(s[i] as string)) i++;
    const cmd = s[i];
    if (cmd === undefined) break;
    i++;
    if (cmd === 's' || cmd === 'y') {
      const d = s[i] ?? '';
      if (d === '' || d === '\n' || d === '\\') return 'the sed script cannot be scanned';
      i++;
      if (!skipDelimited(d) || !skipDelimited(d)) return 'the sed script cannot be scanned';
      if (cmd === 's') {
        const start = i;
        while (i < n && /[gpiImMe0-9w]/.test(s[i] as string)) {
          if (s[i] === 'w') break;
          i++;
        }
        const flags = s.slice(start, i + 1);
        if (flags.includes('e')) return 'the sed s///e flag runs the pattern space as a command';
        if (s[i] === 'w') return 'the sed s///w flag writes to a file named in the script';
      }
      continue;
    }
    if ('eF'.includes(cmd) && cmd === 'e') return 'the sed e command runs a command';
    if ('wWrR'.includes(cmd)) return `the sed ${cmd} command touches a file named in the script`;
    if ('aic'.includes(cmd) || cmd === '#' || ':btT'.includes(cmd)) {
      while (i < n && s[i] !== '\n' && (cmd === '#' || 'aic'.includes(cmd) || s[i] !== ';')) i++;
      continue;
    }
    if ('qQlLv'.includes(cmd)) { while (/[0-9]/.test(s[i] ?? '')) i++; continue; }
    if ('=dDgGhHnNpPxzF'.includes(cmd)) continue;
    if (cmd === '}' ) continue;
    return `the sed command ${JSON.stringify(cmd)} is not known`;
  }
  return null;
}
