/**
 * What the engine knows about particular tools: how their flags are spelled, which ones are transparent
 * wrappers around another command, and which run code the matcher cannot see.
 */

/**
 * Tools whose single-dash words must not be split into letters: their single-dash options are long names
 * (`find -name`), or their letter options take attached values (`stdbuf -oL`).
 */
export const SINGLE_DASH_LONG = new Set([
  'find', 'java', 'javac', 'gcc', 'g++', 'cc', 'c++', 'clang', 'clang++', 'go', 'ffmpeg', 'ffprobe', 'ld', 'xdotool',
  'openssl', 'qemu-system-x86_64', 'tclsh', 'wish', 'xterm', 'ant', 'mvn', 'gradle', 'vim', 'vi', 'nvim', 'ex', 'dd',
  'mysql', 'psql', 'iptables', 'ip', 'tc', 'bc', 'lsof', 'ps', 'expect', 'swift', 'kotlinc', 'scalac', 'rustc',
  // Wrappers whose letter options take attached values (`stdbuf -oL`, `sudo -ubob`, `env -uHOME`).
  'stdbuf', 'ionice', 'xargs', 'timeout', 'sudo', 'doas', 'env', 'flock', 'ssh', 'scp', 'nice', 'caffeinate',
]);

/** Per tool: long option (without `--`) → canonical short flag. Used for bundling-aware blocked patterns. */
const LONG_TO_SHORT: Record<string, Record<string, string>> = {
  rm: { recursive: '-r', force: '-f', interactive: '-i', dir: '-d', verbose: '-v', 'one-file-system': '--one-file-system', 'no-preserve-root': '--no-preserve-root', 'preserve-root': '--preserve-root' },
  cp: { recursive: '-r', force: '-f', archive: '-a', 'no-clobber': '-n', interactive: '-i', link: '-l', 'symbolic-link': '-s', update: '-u', verbose: '-v', 'target-directory': '-t', 'dereference': '-L', 'no-dereference': '-P' },
  mv: { force: '-f', interactive: '-i', 'no-clobber': '-n', update: '-u', verbose: '-v', 'target-directory': '-t' },
  chmod: { recursive: '-R', verbose: '-v', changes: '-c', silent: '-f', quiet: '-f' },
  chown: { recursive: '-R', verbose: '-v', changes: '-c', silent: '-f', quiet: '-f', dereference: '--dereference', 'no-dereference': '-h' },
  chgrp: { recursive: '-R', verbose: '-v', changes: '-c', silent: '-f', quiet: '-f', 'no-dereference': '-h' },
  ln: { symbolic: '-s', force: '-f', interactive: '-i', verbose: '-v', 'no-dereference': '-n' },
  mkdir: { parents: '-p', mode: '-m', verbose: '-v' },
  rmdir: { parents: '-p', verbose: '-v', 'ignore-fail-on-non-empty': '--ignore-fail-on-non-empty' },
  shred: { force: '-f', remove: '-u', zero: '-z', iterations: '-n', verbose: '-v', exact: '-x' },
  git: { force: '-f', quiet: '-q', verbose: '-v', message: '-m', all: '-a', hard: '--hard', recursive: '-r' },
  grep: { recursive: '-r', 'dereference-recursive': '-R', 'ignore-case': '-i', 'line-number': '-n', 'files-with-matches': '-l', 'invert-match': '-v', count: '-c', 'extended-regexp': '-E', 'fixed-strings': '-F', 'word-regexp': '-w', regexp: '-e', file: '-f' },
  kill: { signal: '-s' },
  chattr: { recursive: '-R' },
};

/** Per tool: short flag aliases (`rm -R` is `rm -r`). */
const SHORT_ALIASES: Record<string, Record<string, string>> = {
  rm: { '-R': '-r' },
  cp: { '-R': '-r' },
  grep: {},
};

/** chmod/chown-style tools where `-rwx` is a mode operand, not a bundle of flags. */
const MODE_TOOLS = new Set(['chmod']);

export function isFlagWord(tool: string, arg: string): boolean {
  if (arg.length < 2 || !arg.startsWith('-')) return false;
  if (MODE_TOOLS.has(tool) && /^-[rwxXstugoa]+$/.test(arg) && !/^-[Rcfv]+$/.test(arg)) return false;
  return true;
}

/** Resolves `--recur` to `recursive` when it is an unambiguous prefix of a known long option (GNU getopt does). */
function resolveLong(tool: string, name: string): string {
  const table = LONG_TO_SHORT[tool];
  if (!table) return '--' + name;
  const exact = table[name];
  if (exact !== undefined) return exact;
  const candidates = Object.keys(table).filter((k) => k.startsWith(name));
  if (candidates.length === 1) return table[candidates[0] as string] as string;
  return '--' + name;
}

/**
 * Expands one flag word to canonical flags. Bundles of letters are split (`-rf` → `-r -f`) unless the tool
 * uses single-dash long options; words with digits or `=` (`-n5`, `-oFoo=bar`) stay whole, since there the
 * letters after the first are usually a value, not more flags.
 */
export function expandFlag(tool: string, arg: string): string[] {
  if (arg.startsWith('--')) {
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const mapped = resolveLong(tool, name);
    return [eq < 0 ? mapped : `${mapped}=${arg.slice(eq + 1)}`];
  }
  const aliases = SHORT_ALIASES[tool] ?? {};
  if (SINGLE_DASH_LONG.has(tool)) return [arg];
  if (/^-[A-Za-z]{2,}$/.test(arg)) return [...arg.slice(1)].map((c) => aliases['-' + c] ?? '-' + c);
  return [aliases[arg] ?? arg];
}

export interface CanonicalArgs {
  tokens: string[];
  flags: Set<string>;
  positionals: string[];
}

/**
 * Canonical form of a command's arguments: bundles split, long forms mapped, each run of adjacent flags
 * sorted (so flag order is ignored) while positionals keep their places (so `git status --short` stays a
 * `git status …` command). Everything after `--` is positional.
 */
export function canonicalArgs(tool: string, args: readonly string[]): CanonicalArgs {
  const tokens: string[] = [];
  const flags = new Set<string>();
  const positionals: string[] = [];
  let run: string[] = [];
  const flush = (): void => {
    if (run.length > 0) tokens.push(...run.sort());
    run = [];
  };
  let ended = false;
  for (let i = 0; i < args.length; i++) {
    let arg = args[i] as string;
    if (!ended && arg === '--') {
      flush();
      tokens.push('--');
      ended = true;
      continue;
    }
    // Old-style tar bundles without a dash (`tar czf out.tgz`) are flags all the same.
    if (i === 0 && tool === 'tar' && /^[A-Za-z]+$/.test(arg)) arg = '-' + arg;
    if (ended || !isFlagWord(tool, arg)) {
      flush();
      const p = tool === 'chmod' ? normaliseMode(arg) : arg;
      tokens.push(p);
      positionals.push(p);
      continue;
    }
    for (const f of expandFlag(tool, arg)) {
      run.push(f);
      flags.add(f);
    }
  }
  flush();
  return { tokens, flags, positionals };
}

/** `chmod 0777` is `chmod 777`: leading zeros of an octal mode do not change it. */
function normaliseMode(arg: string): string {
  const m = /^0+([0-7]{3,4})$/.exec(arg);
  return m ? (m[1] as string) : arg;
}

export interface WrapperSpec {
  shortArg?: string;
  shortNoArg?: string;
  /** Short options whose value is optional and only ever attached (`xargs -i{}`). */
  shortOptionalArg?: string;
  longArg?: string[];
  longNoArg?: string[];
  /** Positional words taken before the command (the duration of `timeout`, the lock file of `flock`). */
  leading?: number;
  /** Takes `NAME=VALUE` words before the command (`env`, `sudo`). */
  assignments?: boolean;
  /** Accepts `-N` numbers as an option (`nice -5`). */
  numeric?: boolean;
  /** Options after which no command is run (`command -v`), so there is nothing to unwrap. */
  noCommand?: string[];
  /** Options that make the wrapper run its command out of the matcher's sight, with the reason. */
  opaqueOpts?: Record<string, string>;
  /** Options we refuse to reason about, with the reason. */
  unsupportedOpts?: Record<string, string>;
  /** The wrapper always runs code out of sight (its command is still unwrapped and checked). */
  opaque?: string;
  /** Unknown options are assumed to take no value instead of failing closed (only for opaque wrappers). */
  lenient?: boolean;
}

/**
 * Transparent wrappers: they run the rest of their argv as a command. Unknown options of a wrapper fail
 * closed (unsupported), because an option that takes a value would shift where the real command starts.
 */
export const WRAPPERS: Record<string, WrapperSpec> = {
  env: {
    shortArg: 'uCS', shortNoArg: 'i0v', assignments: true,
    longArg: ['unset', 'chdir', 'split-string'],
    longNoArg: ['ignore-environment', 'null', 'debug', 'block-signal', 'default-signal', 'ignore-signal', 'list-signal-handling'],
    opaqueOpts: { '-S': 'env -S splits a string into a command line out of sight', '--split-string': 'env -S splits a string into a command line out of sight' },
    unsupportedOpts: { '-C': 'env -C changes the working directory', '--chdir': 'env -C changes the working directory' },
  },
  command: { shortNoArg: 'pvV', noCommand: ['-v', '-V'] },
  exec: { shortNoArg: 'cl', shortArg: 'a' },
  builtin: {},
  nohup: {},
  setsid: { shortNoArg: 'cfw', longNoArg: ['ctty', 'fork', 'wait'] },
  nice: { shortArg: 'n', longArg: ['adjustment'], numeric: true },
  renice: { shortArg: 'n', noCommand: ['-p', '-g', '-u'] },
  timeout: {
    shortArg: 'sk', shortNoArg: 'v', longArg: ['signal', 'kill-after'], longNoArg: ['preserve-status', 'foreground', 'verbose'], leading: 1,
  },
  stdbuf: { shortArg: 'ioe', longArg: ['input', 'output', 'error'] },
  ionice: { shortArg: 'cnpPu', shortNoArg: 't', longArg: ['class', 'classdata', 'pid', 'pgid', 'uid'], longNoArg: ['ignore'], noCommand: ['-p', '-P', '-u', '--pid', '--pgid', '--uid'] },
  flock: {
    shortNoArg: 'sxeunoF', shortArg: 'wEc', leading: 1,
    longArg: ['wait', 'timeout', 'conflict-exit-code', 'command'],
    longNoArg: ['shared', 'exclusive', 'unlock', 'nonblock', 'nb', 'close', 'no-fork', 'verbose'],
    opaqueOpts: { '-c': 'flock -c runs its command through a shell', '--command': 'flock -c runs its command through a shell' },
  },
  time: { shortNoArg: 'pvaq', shortArg: 'fo', longArg: ['format', 'output'], longNoArg: ['portability', 'verbose', 'append', 'quiet'] },
  xargs: {
    shortArg: 'IEdLnPsa', shortOptionalArg: 'iel', shortNoArg: '0prtxo', lenient: true,
    longArg: ['arg-file', 'delimiter', 'replace', 'max-lines', 'max-args', 'max-procs', 'max-chars', 'eof', 'process-slot-var'],
    longNoArg: ['null', 'no-run-if-empty', 'interactive', 'verbose', 'exit', 'open-tty', 'show-limits'],
    opaque: 'xargs runs a command built from its input, which the matcher cannot see',
  },
  busybox: { noCommand: ['--list', '--list-full', '--install', '--help'] },
  sudo: {
    shortArg: 'ugCDhprtTU', shortNoArg: 'AbEeHKklnPSsViBN', assignments: true,
    longArg: ['user', 'group', 'close-from', 'chdir', 'host', 'prompt', 'role', 'type', 'command-timeout', 'other-user'],
    longNoArg: ['askpass', 'background', 'preserve-env', 'edit', 'set-home', 'remove-timestamp', 'reset-timestamp', 'list', 'non-interactive', 'preserve-groups', 'stdin', 'shell', 'login', 'validate', 'bell', 'no-update'],
    opaqueOpts: { '-s': 'sudo -s runs its command through a shell', '-i': 'sudo -i runs its command through a login shell', '--shell': 'sudo -s runs its command through a shell', '--login': 'sudo -i runs its command through a login shell' },
    noCommand: ['-l', '-v', '-k', '-K', '-V', '-e', '--list', '--validate', '--edit', '--reset-timestamp', '--remove-timestamp'],
  },
  doas: { shortArg: 'uC', shortNoArg: 'nsL', opaqueOpts: { '-s': 'doas -s runs a shell' }, noCommand: ['-L', '-C'] },
  pkexec: { longArg: ['user'], longNoArg: ['disable-internal-agent', 'keep-cwd'] },
  unbuffer: { shortNoArg: 'p' },
  caffeinate: { shortNoArg: 'dimsu', shortArg: 'tw' },
  chroot: {
    longArg: ['userspec', 'groups'], longNoArg: ['skip-chdir'], leading: 1,
    opaque: 'chroot runs its command under another root the matcher cannot see',
  },
  nsenter: { lenient: true, shortArg: 'tSG', opaque: 'nsenter runs its command in other namespaces' },
  unshare: { lenient: true, opaque: 'unshare runs its command in new namespaces' },
  watch: {
    shortArg: 'nq', shortNoArg: 'bcdeghptxwr', longArg: ['interval', 'equexit'],
    longNoArg: ['beep', 'color', 'no-color', 'differences', 'errexit', 'chgexit', 'no-title', 'precise', 'exec', 'no-wrap', 'no-rerun'],
    lenient: true, opaque: 'watch runs its command through sh -c, repeatedly',
  },
  strace: { lenient: true, shortArg: 'oeEpPsSuUIbaX', opaque: 'strace can inject faults and run its command with altered syscalls' },
  ltrace: { lenient: true, shortArg: 'oeEpsuaAlLnwx', opaque: 'ltrace runs its command under a tracer' },
  chrt: { lenient: true, shortNoArg: 'bdfiormaRpvT', opaque: 'chrt arguments cannot be told apart from its command reliably' },
  taskset: { lenient: true, shortNoArg: 'acp', leading: 1, opaque: 'taskset arguments cannot be told apart from its command reliably' },
};

/** Shells: `-c` runs a script from a string; with no script file they read commands from stdin. */
export const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh', 'ash', 'fish', 'csh', 'tcsh', 'yash', 'posh', 'rbash', 'elvish', 'nu', 'xonsh', 'pwsh', 'powershell']);

/** Interpreters and the options that take inline code; with no script argument they read code from stdin. */
export const INTERPRETERS: Record<string, { inline: string[]; subcommands?: string[]; noStdinOpts?: string[] }> = {
  python: { inline: ['-c'], noStdinOpts: ['-m', '-V', '--version', '-h', '--help'] },
  node: { inline: ['-e', '-p', '--eval', '--print', '-pe'], noStdinOpts: ['-v', '--version', '-h', '--help', '--test', '--run'] },
  nodejs: { inline: ['-e', '-p', '--eval', '--print'], noStdinOpts: ['-v', '--version', '-h', '--help', '--test', '--run'] },
  perl: { inline: ['-e', '-E'], noStdinOpts: ['-v', '-V', '-h', '-c'] },
  ruby: { inline: ['-e'], noStdinOpts: ['-v', '--version', '-h', '--help'] },
  php: { inline: ['-r', '-B', '-R', '-E', '-F'], noStdinOpts: ['-v', '--version', '-h', '-l', '-m', '-i', '-S'] },
  lua: { inline: ['-e'], noStdinOpts: ['-v'] },
  luajit: { inline: ['-e'], noStdinOpts: ['-v'] },
  deno: { inline: ['-e'], subcommands: ['eval', 'repl'], noStdinOpts: [] },
  bun: { inline: ['-e', '--eval', '-p', '--print'], noStdinOpts: [] },
  Rscript: { inline: ['-e'], noStdinOpts: ['--version'] },
  R: { inline: ['-e'], noStdinOpts: ['--version'] },
  osascript: { inline: ['-e'], noStdinOpts: [] },
  tclsh: { inline: [], noStdinOpts: [] },
  irb: { inline: [], noStdinOpts: [] },
  jshell: { inline: [], noStdinOpts: [] },
  ghci: { inline: ['-e'], noStdinOpts: [] },
  julia: { inline: ['-e', '-E', '--eval', '--print'], noStdinOpts: ['-v', '--version'] },
  scala: { inline: ['-e'], noStdinOpts: [] },
  groovy: { inline: ['-e'], noStdinOpts: [] },
  pwsh: { inline: ['-c', '-Command', '-command', '-EncodedCommand', '-e', '-ec'], noStdinOpts: [] },
};

/** Interpreters like `python3.12` and `pypy3` map to the `python` entry. */
export function interpreterKey(name: string): string | null {
  if (/^(python|pypy)(\d+(\.\d+)?)?$/.test(name)) return 'python';
  if (/^(perl|ruby|php|lua)\d+(\.\d+)*$/.test(name)) return name.replace(/\d.*$/, '');
  return name in INTERPRETERS ? name : null;
}

/** Always opaque: they run code from their arguments or input by design. */
export const ALWAYS_OPAQUE: Record<string, string> = {
  eval: 'eval runs its arguments as a script',
  source: 'source runs a script in this shell',
  '.': '`.` runs a script in this shell',
  parallel: 'parallel runs commands built from its arguments and input',
  script: 'script runs a shell',
  su: 'su runs a shell',
  runuser: 'runuser runs a shell or a command as another user',
  expect: 'expect runs a script',
  vi: 'vi-family editors read commands (including `:!cmd`) from their input',
  vim: 'vi-family editors read commands (including `:!cmd`) from their input',
  nvim: 'vi-family editors read commands (including `:!cmd`) from their input',
  view: 'vi-family editors read commands (including `:!cmd`) from their input',
  ex: 'vi-family editors read commands (including `:!cmd`) from their input',
  ed: 'ed reads commands (including `!cmd`) from its input',
  emacs: 'emacs can evaluate code from its arguments and input',
  gdb: 'gdb runs programs and commands from its input',
  lldb: 'lldb runs programs and commands from its input',
  'ld.so': 'the dynamic loader runs any file as a program',
  nsenter: 'nsenter runs its command in other namespaces',
  unshare: 'unshare runs its command in new namespaces',
  chroot: 'chroot runs its command under another root',
  crontab: 'crontab schedules commands',
  at: 'at schedules commands',
  batch: 'batch schedules commands',
  systemd_run: 'systemd-run runs commands',
  'systemd-run': 'systemd-run runs commands',
  dbus_send: 'dbus-send can ask services to run commands',
};

/**
 * Shell builtins that change what later segments run, or that we cannot reason about: unsupported.
 * (`set` and `declare`-family builtins are checked separately, since their safe forms are common.)
 */
export const STATE_BUILTINS: Record<string, string> = {
  alias: 'alias changes what later command names run',
  hash: 'hash changes which file a command name runs',
  trap: 'trap runs commands on signals and exit',
  enable: 'enable loads or swaps builtins',
  shopt: 'shopt changes how later words are expanded',
  let: 'let evaluates arithmetic, which can run commands through array subscripts',
  fc: 'fc re-runs commands from history',
  bind: 'bind changes key bindings that run commands',
  complete: 'complete registers commands to run',
  coproc: 'coproc is not supported',
  pushd: 'pushd changes the directory stack in ways the path check does not follow',
  popd: 'popd changes the directory stack in ways the path check does not follow',
  function: 'function definitions change what later command names run',
  select: 'select reads its choice from stdin',
  mapfile: 'mapfile assigns variables from input',
  readarray: 'readarray assigns variables from input',
  exec: 'exec without a command rearranges file descriptors of the shell',
};

/** Reserved words that bash would never run as a command name from this position. */
export const RESERVED = new Set(['{', '}', '!', '[[', ']]', 'then', 'else', 'elif', 'fi', 'do', 'done', 'esac', 'in', 'case', 'if', 'while', 'until', 'for']);

const DANGEROUS_VARS = new Set([
  'PATH', 'BASH_ENV', 'ENV', 'IFS', 'LESSOPEN', 'LESSCLOSE', 'LESSKEY', 'LESS', 'NODE_OPTIONS', 'NODE_PATH', 'PERL5OPT', 'PERL5LIB', 'PERLLIB',
  'PERL5DB', 'RUBYOPT', 'RUBYLIB', 'SHELLOPTS', 'BASHOPTS', 'PS0', 'PS1', 'PS2', 'PS3', 'PS4', 'PROMPT_COMMAND', 'CDPATH', 'GLOBIGNORE',
  'HOME', 'SHELL', 'EDITOR', 'VISUAL', 'PAGER', 'MANPAGER', 'MANOPT', 'BROWSER', 'SSH_ASKPASS', 'SUDO_ASKPASS', 'SUDO_EDITOR',
  'JAVA_TOOL_OPTIONS', '_JAVA_OPTIONS', 'JDK_JAVA_OPTIONS', 'CLASSPATH', 'BASH_XTRACEFD', 'BASH_LOADABLES_PATH', 'EXECIGNORE', 'FPATH',
  'ZDOTDIR', 'INPUTRC', 'MAIL', 'MAILPATH', 'TERMINFO', 'TERMINFO_DIRS', 'RUSTC_WRAPPER', 'RUSTC', 'RUSTDOC', 'CC', 'CXX', 'LD', 'AR',
  'MAKEFLAGS', 'MFLAGS', 'GNUMAKEFLAGS', 'MAKEFILES', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_CONFIG_DIRS', 'TAR_OPTIONS', 'GREP_OPTIONS',
  'GZIP', 'BZIP2', 'XZ_DEFAULTS', 'ZIPOPT', 'UNZIP', 'OPENSSL_CONF', 'OPENSSL_ENGINES', 'GOFLAGS', 'GOROOT', 'GOPATH', 'GOTOOLCHAIN',
  'TMPDIR', 'POSIXLY_CORRECT', 'SSH_AUTH_SOCK', 'GCONV_PATH', 'HOSTALIASES', 'RESOLV_HOST_CONF', 'LOCALDOMAIN', 'NLSPATH',
  'MALLOC_CHECK_', 'NODE_REPL_EXTERNAL_MODULE', 'CURL_HOME', 'WGETRC', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'REQUESTS_CA_BUNDLE', 'PIP_CONFIG_FILE',
  'PKG_CONFIG_PATH', 'CMAKE_TOOLCHAIN_FILE', 'DOCKER_HOST', 'KUBECONFIG', 'HISTFILE',
  'RSH', 'AWKPATH', 'AWKLIBPATH', 'LOCPATH', 'HGRCPATH', 'PSQLRC', 'MYSQL_HOME', 'MYSQL_HISTFILE', 'SQLITE_HISTORY', 'WGETRC', 'NETRC',
  'LYNX_CFG', 'EMACSLOADPATH', 'VIMINIT', 'EXINIT', 'MYVIMRC', 'GVIMINIT', 'SCREENRC', 'TMUX_TMPDIR', 'INPUTRC', 'TZDIR',
]);
const DANGEROUS_PREFIXES = ['LD_', 'GIT_', 'PYTHON', 'DYLD_', 'BASH_FUNC_', 'NPM_CONFIG_', 'YARN_', 'PNPM_', 'BUN_', 'CARGO_', 'RUSTUP_',
  'PERL', 'RUBY', 'GEM_', 'BUNDLE_', 'DENO_', 'JAVA_', 'MAVEN_', 'GRADLE_', 'PHP', 'LUA_', 'R_', 'CONDA', 'VIRTUAL_ENV', 'PIP_',
  'MSYS', 'GCC_', 'CPATH', 'LIBRARY_PATH', 'COMPILER_PATH', 'GCONV', 'PAGER', 'EDITOR', 'SSH_', 'GNUPG', 'GPG_', 'DOCKER_',
  'RSYNC_', 'CVS_', 'AWS_', 'HG', 'PG', 'KRB5', 'BOTO', 'GOOGLE_APPLICATION', 'CLOUDSDK_', 'AZURE_CONFIG', 'TERRAFORM_', 'TF_CLI_', 'ANSIBLE_', 'HELM_', 'JQ_'];

/**
 * Variables that change which program runs or what a program loads and executes (PATH, LD_PRELOAD,
 * BASH_ENV, GIT_SSH_COMMAND, PYTHONSTARTUP, NODE_OPTIONS…). Setting them makes the canonical command lie
 * about what runs, so such assignments are unsupported. Exported so the service can apply the same list
 * to the request's `env`.
 */
export function isDangerousVariable(name: string): boolean {
  const upper = name.toUpperCase();
  if (DANGEROUS_VARS.has(upper)) return true;
  return DANGEROUS_PREFIXES.some((p) => upper.startsWith(p));
}

/**
 * Programs that run other programs or code given to them (shells, interpreters, wrappers, `find`, `xargs`…):
 * a rule remembered "by prefix" for one of them would allow anything, so they are only remembered exactly.
 */
export function runsArbitraryCode(name: string): boolean {
  return SHELLS.has(name) || interpreterKey(name) !== null || Object.hasOwn(WRAPPERS, name) || Object.hasOwn(ALWAYS_OPAQUE, name) || PREFIX_REFUSED.has(name);
}
const PREFIX_REFUSED = new Set(['find', 'xargs', 'parallel', 'ssh', 'su', 'sudo', 'doas', 'pkexec', 'docker', 'podman', 'kubectl', 'npx', 'pnpx', 'bunx', 'dlx',
  'eval', 'source', '.', 'exec', 'command', 'builtin', 'awk', 'gawk', 'mawk', 'nawk', 'sed', 'perl', 'watch', 'script', 'strace', 'ltrace', 'gdb', 'flock', 'chroot', 'nsenter', 'unshare']);
