/**
 * Environment variables a request may not set: each changes which program runs or what code a program
 * loads, so a command the policy allowed could run something it never saw (`LD_PRELOAD` turning `ls` into
 * arbitrary code, `GIT_SSH_COMMAND`, `BASH_ENV`, `PYTHONSTARTUP`, …).
 */
const EXACT = new Set([
  'PATH', 'BASH_ENV', 'ENV', 'IFS', 'CDPATH', 'GLOBIGNORE', 'SHELLOPTS', 'BASHOPTS', 'PS4', 'PROMPT_COMMAND',
  'LESSOPEN', 'LESSCLOSE', 'PAGER', 'EDITOR', 'VISUAL', 'MANPAGER', 'BROWSER', 'SHELL', 'HOME', 'ZDOTDIR',
  'NODE_OPTIONS', 'NODE_PATH', 'PERL5OPT', 'PERL5LIB', 'PERLLIB', 'RUBYOPT', 'RUBYLIB', 'JAVA_TOOL_OPTIONS',
  '_JAVA_OPTIONS', 'JDK_JAVA_OPTIONS', 'TERMINFO', 'GCONV_PATH', 'HOSTALIASES', 'RESOLV_HOST_CONF', 'TMPDIR',
  'npm_config_script_shell', 'NPM_CONFIG_SCRIPT_SHELL',
]);
const PREFIXES = ['LD_', 'GIT_', 'PYTHON', 'DYLD_', 'BASH_FUNC_', 'MALLOC_', 'GLIBC_', 'SSH_', 'PIP_', 'NPM_CONFIG_', 'npm_config_'];

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Returns why `name` may not be set, or undefined when it may. */
export function dangerousEnvName(name: string): string | undefined {
  if (!NAME.test(name)) return 'not a valid variable name';
  if (EXACT.has(name) || PREFIXES.some((p) => name.startsWith(p))) return 'changes which program runs or what it loads; not allowed';
  return undefined;
}
