import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BOOTSTRAP, MarkerScanner, encodeLine, warmScript } from '../../src/runner/warm.js';

const NONCE = '0123456789abcdef0123456789abcdef';

describe('MarkerScanner', () => {
  it.each<[string, string[], string, number | undefined]>([
    ['marker alone', [`${NONCE}:0\n`], '', 0],
    ['output then marker in one chunk', [`hello${NONCE}:3\n`], 'hello', 3],
    ['marker split across chunks', ['out', NONCE.slice(0, 5), `${NONCE.slice(5)}:12`, '7\n'], 'out', 127],
    ['a prefix of the marker that turns out not to be one', ['abc', NONCE.slice(0, 4), 'zzz'], `abc${NONCE.slice(0, 4)}zzz`, undefined],
    ['nothing after the marker is passed on', [`x${NONCE}:1\n`, 'late output'], 'x', 1],
    ['another nonce is just output', ['ffffffffffffffffffffffffffffffff:0\n'], 'ffffffffffffffffffffffffffffffff:0\n', undefined],
  ])('%s', (_name, chunks, out, code) => {
    const s = new MarkerScanner(NONCE);
    let got = Buffer.concat(chunks.map((c) => s.push(Buffer.from(c)))).toString();
    if (!s.done) got += s.flush().toString();
    expect(got).toBe(out);
    expect(s.exitCode).toBe(code);
    expect(s.done).toBe(code !== undefined);
  });
});

describe('the warm protocol in real shells', () => {
  // The bootstrap and script run under dash (Debian's /bin/sh) and bash here, as in any image with a POSIX sh.
  it.each(['sh', 'bash'])('%s reads the line, runs the command with cwd and env, and reports the exit code on both streams', (shell) => {
    const script = warmScript({ execId: 'x', team: 't', command: `printf '%s|' "$A" "$(pwd)"; cat; exit 5`, cwd: '/tmp', env: { A: `it's "quoted"\nand multi-line` }, mounts: [], sandbox: undefined as never, timeoutMs: 1 }, NONCE);
    const out = execFileSync('bash', ['-c', `${shell} -c '${BOOTSTRAP.replace(/'/g, `'\\''`)}' 2>/tmp/warm-stderr; cat /tmp/warm-stderr`], { input: `${encodeLine(script)}stdin bytes` }).toString();
    expect(out).toBe(`it's "quoted"\nand multi-line|/tmp|stdin bytes${NONCE}:5\n${NONCE}:5\n`);
  });
});
