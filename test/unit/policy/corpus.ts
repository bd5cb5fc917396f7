/**
 * Shared corpora for the policy tests and bench: hostile spellings that must never be allowed, and everyday
 * developer commands that must be allowed, both under DEFAULT_ALLOW_POLICY with cwd /srv/proj.
 */
import type { ExecPolicy } from '../../../src/policy/index.js';

export const DEFAULT_ALLOW_POLICY: ExecPolicy = {
  securityMode: 'sandboxed',
  toolMode: 'allowed',
  blockedPatterns: ['rm -rf', 'sudo', 'chmod 777'],
  allowedPaths: [{ path: '/srv/proj', readOnly: false }],
  rules: [],
  noMatch: 'allow',
  onDeny: 'ask',
};

export const CWD = '/srv/proj';

/** Each must come out `deny` or `ask`, never `allow`. */
export const HOSTILE: readonly string[] = [
  // expansions that become options of tools running code (found in review)
  `X='-cimport os;os.system("rm -rf /srv/p")'; python3 "$X"`, 'X="-exec rm -rf {} +"; find . $X', 'find . $X', 'python3 $X', 'bash $X',
  'sh "$X"', 'node $X', 'perl $X', 'awk "$X"', 'git "$X" status', 'xargs $X', 'tar $X', 'env $X', 'sort $X x', 'make $X', 'ssh $X host',
  // quoting and escapes
  "r''m -fr x", '"rm" -rf x', 'r\\m -rf x', "$'\\x72m' -rf x", "$'\\162m' -rf x", "$'r'm -rf x", '"r"m -rf x', "'rm' '-rf' x",
  'rm "-rf" x', "rm '-r''f' x", 'rm -\\r\\f x', '$"rm" -rf x', "r'm' -r -f x", 'rm -r"f" x',
  // flag permutations and long forms
  'rm -fr x', 'rm -r -f x', 'rm -f -r x', 'rm --recursive --force x', 'rm -Rf x', 'rm -rfv x', 'rm x -rf', 'rm -r x -f',
  'rm --recur --forc x', 'rm -R --force x', 'rm --force -R x', 'rm -rf -- x', 'rm -f --recursive /srv/proj/x',
  // absolute and odd names
  '/bin/rm -rf x', '/usr/bin/rm -rf x', '/usr/bin/../bin/rm -rf x', '//bin///rm -rf x', './rm -rf x', '/bin/./rm -rf x',
  // wrappers
  'env rm -rf x', 'env -i rm -rf x', 'env -u HOME rm -rf x', 'env A=B rm -rf x', 'command rm -rf x', 'exec rm -rf x',
  'nice rm -rf x', 'nice -n 5 rm -rf x', 'nohup rm -rf x', 'timeout 5s rm -rf x', 'timeout -s KILL 5 rm -rf x',
  'stdbuf -oL rm -rf x', 'setsid rm -rf x', 'ionice -c3 rm -rf x', 'flock /tmp/l rm -rf x', 'time rm -rf x',
  'xargs rm -rf', 'busybox rm -rf x', 'sudo -u bob ls', 'sudo ls', 'doas rm -rf x', 'builtin command rm -rf x',
  'env -- rm -rf x', 'nice -5 rm -rf x', 'command -p rm -rf x', 'unbuffer rm -rf x', 'chroot / rm -rf x', 'env -S "rm -rf x"',
  'sudo env nice rm -rf x', 'caffeinate -i rm -rf x',
  // separators and grouping
  'echo ok; rm -rf x', 'echo ok & rm -rf x', 'true && rm -rf x', 'false || rm -rf x', 'ls | rm -rf x', 'ls |& rm -rf x',
  'echo ok\nrm -rf x', '(rm -rf x)', '{ rm -rf x; }', '! rm -rf x', 'echo a; (cd /srv/proj && { rm -rf x; })',
  // compound statements
  'if true; then rm -rf x; fi', 'if rm -rf x; then :; fi', 'while true; do rm -rf x; done', 'until false; do rm -rf x; done',
  'for i in 1; do rm -rf x; done', 'case a in a) rm -rf x;; esac', 'if false; then :; else rm -rf x; fi', 'f() { rm -rf x; }; f',
  // expansions
  'echo $(rm -rf x)', 'echo `rm -rf x`', '${x:-rm} -rf x', '$RM -rf x', '"$RM" -rf x', '{r,m} -rf x', 'r? -rf x', 'rm -r $F',
  'rm -r *', 'rm -{r,f} x', '~user/rm -rf x', 'cat <(rm -rf x)', 'echo $((1+1))', 'cat <<EOF\nx\nEOF', 'cat <<< x', '${!x} -rf',
  'echo ${#x}', 'echo ${x/a/b}', 'echo ${x@Q}', 'x=rm; $x -rf y', 'eval "rm -rf x"', 'eval rm -rf x', '. ./evil.sh', 'source evil.sh',
  // nested shells and interpreters
  "bash -c 'rm -rf x'", "sh -c 'rm -rf x'", "busybox sh -c 'rm -rf x'", "bash -c \"$CMD\"", "sh -c 'sh -c \"rm -rf x\"'", 'bash',
  "python3 -c 'import os'", "node -e 'process.exit()'", "perl -e 'print 1'", "perl -ne 'print' f", "ruby -e 'p 1'", "php -r 'echo 1;'",
  "awk 'BEGIN{system(\"rm -rf x\")}'", "find . -exec rm -rf {} \\;", 'find . -delete', "git -c core.pager=sh log", 'git --upload-pack=x fetch',
  "tar --to-command=sh -xf a.tar", "rg --pre ./x foo", "sed 's/x/y/e' f", "sed '1e rm -rf x' f", "ssh -o ProxyCommand=x host",
  "sort --compress-program=sh f", "vim -c ':!rm -rf x' f", 'watch rm -rf x', "script -c 'rm -rf x'", 'parallel rm ::: x',
  '/lib64/ld-linux-x86-64.so.2 /bin/rm -rf x', 'nsenter -t 1 rm -rf x', 'unshare rm -rf x', 'git config alias.x "!rm -rf x"',
  // dangerous state
  'PATH=/tmp rm x', 'LD_PRELOAD=/tmp/x.so ls', 'BASH_ENV=/tmp/x bash s.sh', 'env PATH=/tmp ls', 'export PATH=/tmp', 'alias ls=rm',
  'IFS=/ ls', 'GIT_SSH_COMMAND=x git fetch', 'PYTHONSTARTUP=x python3 s.py', 'NODE_OPTIONS=--require=x node a.js', 'hash -p /tmp/x ls',
  'trap "rm -rf x" EXIT', 'enable -f x.so y', 'shopt -s expand_aliases', 'set -k', 'declare -n r=PATH', 'declare -i x=1', 'exec >/tmp/log',
  'exec 3<>/etc/passwd', 'let x=1', 'read PATH', 'PROMPT_COMMAND=x bash s', 'ENV=/tmp/x sh s.sh',
  // paths
  'cat /etc/passwd', 'echo x > /etc/passwd', 'cat ../../etc/passwd', 'cat /srv/proj/../../etc/shadow', 'cp x /etc/', 'cd /etc && cat passwd',
  'cd .. && ls', 'cat ~/.ssh/id_rsa', 'cat ~root/.bashrc', 'ls ~', 'cat /proc/self/root/etc/passwd', 'cat /proc/1/environ',
  'tar czf /home/out.tgz src', 'cp -r src /var/www', 'dd if=/dev/sda of=x', 'curl file:///etc/passwd', 'git -C /etc status',
  'echo hi >> ~/.bashrc', 'ls --directory=/etc', 'cat /srv/projx/secret', 'cat /srv/proj/../proj2/x', 'cat $HOME/.ssh/id_rsa',
  'cat src/*/../../../etc/passwd', 'cat > /srv/../etc/x', 'cd src; cd ../..; cat x', 'while true; do cd ..; done',
  // unicode and control characters
  'rм -rf x', 'r\u200bm -rf x', 'rm -rf x \u202e', 'rm\u0000 -rf x', 'rm -rf x\r', 'rm -rf x\r\necho', '\u0007rm -rf x', 'rm\u00a0-rf x',
  'ｒｍ -rf x', 'rm -rf x\u2066', '\ufeffrm -rf x', 'r\u00adm -rf x', '',
  // line continuations
  'r\\\nm -rf x', 'rm -r\\\nf x', 'rm \\\n-rf x', 's\\\nudo ls', 'su\\\ndo ls',
  // parser disagreements with bash (tree-sitter-bash misreads these; the engine must refuse them)
  "echo $'\\\\' ; rm -rf x ; # '", "echo $'\\\\' ; sudo ls ; # '", "echo $'a\\\\' ; cat /etc/passwd ; # '", 'echo \\  sudo',
  'nice 5<x rm -rf y', 'nice 0</dev/null rm -rf y', 'nice >/tmp/o rm -rf y', 'time >/tmp/x sudo ls', 'env 2>/dev/null sudo ls',
  'cat 0</etc/passwd', 'cat {fd}</etc/passwd',
  // misc
  'sudo', 'chmod 777 x', 'chmod 0777 x', 'chmod -R 777 x', 'chmod 777 -R x', 'CHMOD=1 sudo ls', 'x=1; sudo ls', 'echo "$(sudo ls)"',
  "time sudo ls", "nice sudo ls", 'command sudo ls', '(sudo ls) 2>/dev/null', 'rm -rf x 2>/dev/null', 'rm -rf x || true',
];

/** Each must come out `allow`. */
export const BENIGN: readonly string[] = [
  'git status', 'git diff --stat', 'git log --oneline -n 20', 'git add -A', 'git commit -m "fix: handle a/b paths"', 'git branch -a',
  'git checkout -b feature/x', 'git stash list', 'git show HEAD~1', 'git rev-parse --abbrev-ref HEAD', 'git blame src/main.ts',
  'git diff HEAD -- src/a.ts', 'git config --get user.name', 'git fetch origin', 'git pull --rebase', 'git push origin main',
  'npm test', 'npm run build', 'npm ci', 'npm install', 'npx vitest run', 'npx tsc --noEmit', 'yarn test', 'pnpm lint',
  'ls -la src | grep ts', 'cat package.json | jq .name', 'mkdir -p build && cp a b', 'grep -rn TODO src', "find . -name '*.ts'",
  'sed -n 1,20p file', 'tar czf out.tgz src', 'curl -fsSL https://example.com -o out.html', 'echo $HOME', 'make', 'make test',
  'cargo test', 'cargo build --release', 'python3 script.py', 'node dist/main.js', 'go test ./...', 'go build ./cmd/app',
  'pytest -q tests/', 'python3 -m pytest', 'python3 -m pip install -r requirements.txt', 'ruff check .', 'black --check src',
  'eslint src --fix', 'prettier --write "src/**/*.ts"', 'tsc -p tsconfig.json', 'ls', 'ls -lah', 'pwd', 'whoami', 'date', 'uname -a',
  'wc -l src/*.ts', 'head -n 50 README.md', 'tail -f /tmp/log.txt', 'cat README.md', 'less README.md', 'diff a.txt b.txt',
  'sort names.txt | uniq -c | sort -rn', 'cut -d, -f1 data.csv', 'tr a-z A-Z < in.txt > out.txt', 'awk \'{print $1}\' file.txt',
  "sed -i 's/foo/bar/g' src/a.ts", "sed 's/a/b/' file", 'grep -E "^import" src/index.ts', 'rg -n "TODO" src', 'rg --files',
  'find src -type f -name "*.test.ts"', 'xxd file.bin | head', 'du -sh node_modules', 'df -h', 'env', 'printenv PATH', 'which node',
  'node --version', 'npm --version', 'echo "hello world"', "printf '%s\\n' a b", 'true', 'mkdir -p out/logs', 'touch src/new.ts',
  'cp src/a.ts src/b.ts', 'mv build/old build/new', 'rm build/tmp.txt', 'rm -r build/cache', 'rm -f out.log', 'ln -s src/a.ts b',
  'chmod +x scripts/run.sh', 'chmod 644 README.md', './scripts/run.sh', 'bash scripts/build.sh', 'sh ./configure',
  'docker --version', 'jq -r ".version" package.json', 'cat package.json | jq ".dependencies | keys"', 'zip -r out.zip src',
  'unzip -l out.zip', 'gzip -k data.csv', 'echo ok > /tmp/x 2>&1', 'npm test 2>&1 | tee /tmp/test.log', 'ls > /dev/null',
  'cd src && ls', 'cd src; cat a.ts', 'cd /srv/proj/src && npm test', 'time npm test', 'timeout 60 npm test', 'nice -n 10 make',
  'env NODE_ENV=production node dist/main.js', 'NODE_ENV=test npm test', 'CI=true npm test', 'FOO=1 BAR=2 make build',
  'set -euo pipefail; npm test', 'if [ -f package.json ]; then npm ci; fi', 'for f in a b c; do echo $f; done',
  '[[ -d node_modules ]] || npm ci', 'test -f .env && echo yes', 'command -v node', 'type git', 'export FOO=bar',
  'git log --format="%h %s" | head -5', 'wget -q https://example.com/file.txt', 'ssh -V', 'openssl version',
  'find . -maxdepth 2 -type d', 'tree -L 2 src', 'stat package.json', 'file dist/main.js', 'md5sum a b', 'sha256sum out.tgz',
  'seq 1 10', 'sleep 1', 'echo done', 'git diff --name-only',
  'cat <in.txt', 'cat a.txt b.txt > merged.txt', 'mkdir build; cd build; ls', 'ls -la ./src/../test', 'cat s/a/b/',
  'git log -p -- src/a.ts', 'npm run test -- --watch=false', 'npx eslint . --ext .ts', 'node -r ts-node/register src/a.ts',
  'python3 -u script.py --flag=value', 'java -jar app.jar', 'gcc -O2 -o out main.c', 'go vet ./...', 'cargo fmt -- --check',
];
