import { beforeAll, describe, expect, it } from 'vitest';
import { createPolicyEngine, type DecisionCode, type ExecPolicy, type PolicyEngine } from '../../../src/policy/index.js';
import { DEFAULT_ALLOW_POLICY } from './corpus.js';

let engine: PolicyEngine;
beforeAll(async () => {
  engine = await createPolicyEngine();
});
const policy: ExecPolicy = { ...DEFAULT_ALLOW_POLICY, allowedPaths: [{ path: '/srv/proj', readOnly: false }, { path: '/srv/ro', readOnly: true }] };
const code = (command: string, cwd = '/srv/proj'): DecisionCode => engine.decide({ command, cwd }, policy).code;

describe('path checks', () => {
  it.each<[string, DecisionCode]>([
    ['cat src/a.ts', 'allowed'],
    ['cat ./src/../README.md', 'allowed'],
    ["sed -i 's/a/b/' src/a.ts", 'allowed'],
    ['cat s/a/b/', 'allowed'],
    ['grep -r "/usr/lib" src', 'allowed'],
    ['echo /etc/passwd', 'allowed'],
    ['cat /etc/passwd', 'path_not_allowed'],
    ['cat ../x', 'path_not_allowed'],
    ['cat /srv/proj/../ro/x', 'allowed'],
    ['cat /srv/projx', 'path_not_allowed'],
    ['cat //srv///proj/./a', 'allowed'],
    ['ls ..', 'path_not_allowed'],
    ['cat ~/.bashrc', 'path_not_allowed'],
    ["cat '~/x'", 'allowed'],
    ['cat --file=/etc/x', 'path_not_allowed'],
    ['gcc -o/etc/x a.c', 'path_not_allowed'],
    ['make PREFIX=/usr/local install', 'path_not_allowed'],
    ['curl https://example.com/a/b', 'allowed'],
    ['curl file:///etc/passwd', 'path_not_allowed'],
    ['cat /proc/self/root/srv/proj/a', 'path_not_allowed'],
    ['cat /dev/null /dev/urandom /tmp/x', 'allowed'],
    ['echo x > /dev/null 2>&1', 'allowed'],
    ['echo x > /tmp/y', 'allowed'],
    ['echo x > /srv/ro/y', 'path_not_allowed'],
    ['cat < /srv/ro/y', 'allowed'],
    ['echo x > $F', 'unsupported_construct'],
    ['cat $HOME/x', 'unsupported_construct'],
    ['cat src/*.ts', 'allowed'],
    ['cat ../*.ts', 'path_not_allowed'],
    ['cat src/.*', 'unsupported_construct'],
    ['cat */x', 'unsupported_construct'],
    ['rm $F', 'unsupported_construct'],
    ['echo $F', 'allowed'],
    ['/srv/proj/bin/tool', 'allowed'],
    ['/opt/evil/tool', 'path_not_allowed'],
    ['/usr/local/bin/node x.js', 'allowed'],
  ])('%j → %s', (command, expected) => {
    expect(code(command)).toBe(expected);
  });

  it('follows cd across segments, from every directory a segment may run in', () => {
    expect(code('cd src && cat ./a.ts')).toBe('allowed');
    expect(code('cd src/deep && cat ./a.ts')).toBe('allowed');
    // Conservative: `..` is checked from the old directory too (a failed `cd` leaves it in place).
    expect(code('cd src && cat ../../proj/x')).toBe('path_not_allowed');
    expect(code('cd src && cat ../../x')).toBe('path_not_allowed');
    expect(code('cd /srv/ro && echo x > y')).toBe('path_not_allowed');
    expect(code('cd /etc')).toBe('path_not_allowed');
    expect(code('cd')).toBe('unsupported_construct');
    expect(code('cd -')).toBe('unsupported_construct');
    expect(code('cd $D')).toBe('unsupported_construct');
    expect(code('for d in a b; do cd ..; done')).toBe('unsupported_construct');
    expect(code('cat ../x; cd sub')).toBe('path_not_allowed');
  });

  it('checks the working directory', () => {
    expect(code('ls', '/srv/proj/sub/../sub')).toBe('allowed');
    expect(code('ls', '/srv/proj/..')).toBe('path_not_allowed');
    expect(code('ls', '/srv/ro')).toBe('allowed');
  });
});

describe('opaque execution', () => {
  it.each([
    "bash -c 'ls'", 'bash', 'sh -s', 'bash -i', 'eval ls', 'source x.sh', '. x.sh', "python3 -c 'print(1)'", 'python3', 'python3 -',
    "python3.12 -c 'x'", "node -e '1'", "node -p '1'", "node --eval '1'", 'node', "perl -ne 'print' f", "perl -E 'say 1'", "ruby -e 'p 1'",
    "php -r 'echo 1;'", "lua -e 'x'", "deno eval '1'", "awk 'BEGIN { system(\"ls\") }'", "awk '{ print | \"sh\" }'",
    "awk '{ \"date\" | getline d }'", "awk '{ print > \"out\" }'", 'xargs ls', 'find . -exec ls {} +', 'find . -execdir ls \\;', 'find . -ok ls \\;',
    'find . -delete', 'git -c core.pager=less log', 'git --upload-pack=x fetch', 'git fetch --upload-pack=x', 'git clone -u x repo',
    'git config core.pager less', 'git config alias.x "!ls"', 'git rebase -x "make" main', 'git bisect run make', 'git submodule foreach ls',
    "rg --pre cat x", "tar --to-command=cat -xf a.tar", 'tar -I zstd -xf a.tar', 'tar --use-compress-program=zstd -cf a.tar src',
    "sed 's/a/b/e' f", "sed '1e date' f", "sed 's/a/b/w out' f", "sed 'w out' f", "ssh -o ProxyCommand=x h", 'ssh -oLocalCommand=x h',
    'sort --compress-program=gzip f', "vim -c ':q' f", 'watch ls', "script -c 'ls'", 'parallel echo ::: a', '/lib64/ld-linux-x86-64.so.2 /bin/ls',
    'env -S "ls -l"', 'nsenter -t 1 ls', 'unshare -r ls', 'chroot /srv/proj ls', 'make --eval="x:"', 'nc -c sh h 1', 'tmux new ls',
    "sudo -s ls", 'flock /tmp/l -c ls', 'rsync -e ssh a b:',
  ])('%j is opaque (or unsupported)', (command) => {
    const d = engine.decide({ command, cwd: '/srv/proj' }, { ...policy, blockedPatterns: [] });
    expect(['opaque_execution', 'unsupported_construct', ...(command.startsWith('/lib64') ? ['path_not_allowed'] : [])], d.reason).toContain(d.code);
  });

  it.each([
    'python3 script.py', 'node dist/main.js', 'bash scripts/build.sh', 'git config --get user.name', 'git config user.name',
    "sed -n '1,5p' f", "sed -e 's/a/b/g' -e '/x/d' f", "awk -F, '{print $1}' f", 'make -j4', 'find . -name x -print', 'python3 -m http.server',
    'node --test', 'tar xzf a.tgz', 'ssh -V', "perl script.pl", 'git rebase main',
  ])('%j is not opaque', (command) => {
    const d = engine.decide({ command, cwd: '/srv/proj' }, { ...policy, blockedPatterns: [] });
    expect(d.code, d.reason).toBe('allowed');
  });

  it('parses the literal script of sh -c and checks its segments', () => {
    const d = engine.decide({ command: "bash -c 'ls; cat /etc/passwd'", cwd: '/srv/proj' }, policy);
    expect(d).toMatchObject({ decision: 'deny', code: 'path_not_allowed', hard: true });
    expect(d.segments.map((s) => s.canonical)).toEqual(['bash -c ls; cat /etc/passwd', 'ls', 'cat /etc/passwd']);
  });

  it('refuses deeply nested shells', () => {
    const d = engine.decide({ command: `sh -c "sh -c 'sh -c \\"sh -c ls\\"'"`, cwd: '/srv/proj' }, policy);
    expect(d.code).toBe('unsupported_construct');
  });
});

describe('unsupported constructs and state-changing builtins', () => {
  it.each([
    'echo `id`', 'echo $(id)', 'cat <(ls)', 'echo $((1+2))', 'cat <<EOF\nx\nEOF', 'cat <<< x', 'echo ${x:-y}', 'echo ${x/a/b}', 'echo ${!x}',
    'echo ${#x}', 'echo ${x@Q}', 'echo ${x[0]}', '$CMD', '"$CMD" x', '*.sh', '{ls,-l}', '~/bin/x', 'f() { ls; }', 'alias ll="ls -l"',
    'hash -r', 'trap "" INT', 'enable -n echo', 'shopt -s extglob', 'set -o vi', 'set -k', 'export PATH=/x', 'declare -x LD_PRELOAD=x',
    'local IFS=:', 'readonly BASH_ENV=x', 'declare -n x=y', 'typeset -i n=1', 'PATH=/x ls', 'LD_LIBRARY_PATH=/x ls', 'GIT_DIR=/x git status',
    'env PYTHONPATH=x python3 a.py', 'exec > out', 'exec 3>&1', 'let x=1', 'for ((i=0;i<3;i++)); do ls; done', 'select x in a; do ls; done',
    'time { ls; }', 'read -r PATH', 'printf -v PATH x', 'coproc ls', '[[ $x -eq 1 ]]', 'echo a |& rм', 'env -C /x ls', 'env --chdir=/x ls',
    'nice --unknown ls', 'sudo --frobnicate ls', 'echo "unclosed', 'unset PATH',
  ])('%j is unsupported', (command) => {
    const d = engine.decide({ command, cwd: '/srv/proj' }, { ...policy, blockedPatterns: [] });
    expect(d.code, d.reason).toBe('unsupported_construct');
  });

  it.each([
    'set -e', 'set -euo pipefail', 'set +x', 'set -- a b', 'export FOO=bar', 'declare -r X=1', 'unset FOO', 'read -r line',
    'X=1', 'ulimit -n 1024', 'umask 022', '[[ 1 -eq 1 ]]', '[ "$x" -eq 1 ]', 'echo $x "$y" ${z}', 'echo $@ $1 $?', 'echo *.ts',
    'ls {a,b}.txt', 'echo ~', 'NODE_ENV=production node a.js', 'LC_ALL=C sort f',
  ])('%j is allowed', (command) => {
    const d = engine.decide({ command, cwd: '/srv/proj' }, policy);
    expect(d.code, d.reason).toBe('allowed');
  });
});
