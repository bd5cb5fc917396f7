import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BOOTSTRAP, MarkerScanner, encodeLine, markerOf, warmScript } from '../../src/runner/warm.js';

const NONCE = '0123456789abcdef0123456789abcdef';
/** The marker as the bootstrap prints it: SOH, the nonce, a colon. */
const M = markerOf(NONCE).toString('latin1');

describe('MarkerScanner', () => {
  it.each<[string, string[], string, number | undefined]>([
    ['marker alone', [`${M}0\n`], '', 0],
    ['output then marker in one chunk', [`hello${M}3\n`], 'hello', 3],
    ['marker split across chunks', ['out', M.slice(0, 5), `${M.slice(5)}12`, '7\n'], 'out', 127],
    ['marker split after its first byte', ['out\x01', `${M.slice(1)}0\n`], 'out', 0],
    ['a prefix of the marker that turns out not to be one', ['abc', M.slice(0, 4), 'zzz'], `abc${M.slice(0, 4)}zzz`, undefined],
    ['a tail with two marker-first bytes, the second one the marker', ['a\x01b\x01', `${M.slice(1)}2\n`], 'a\x01b', 2],
    ['the nonce without the SOH is just output', [`${NONCE}:0\n`], `${NONCE}:0\n`, undefined],
    ['nothing after the marker is passed on', [`x${M}1\n`, 'late output'], 'x', 1],
    ['another nonce is just output', ['\x01ffffffffffffffffffffffffffffffff:0\n'], '\x01ffffffffffffffffffffffffffffffff:0\n', undefined],
  ])('%s', (_name, chunks, out, code) => {
    const s = new MarkerScanner(NONCE);
    let got = Buffer.concat(chunks.map((c) => s.push(Buffer.from(c, 'latin1')))).toString('latin1');
    if (!s.done) got += s.flush().toString('latin1');
    expect(got).toBe(out);
    expect(s.exitCode).toBe(code);
    expect(s.done).toBe(code !== undefined);
  });

  it('passes every byte before the marker, however the stream is cut (random output full of SOH and marker prefixes)', () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    const pieces = ['\x01', M.slice(0, 9), M.slice(0, M.length - 1), 'plain text\n', NONCE, '\x00\xff'];
    for (let round = 0; round < 300; round++) {
      let output = '';
      for (let i = rnd(12); i > 0; i--) output += pieces[rnd(pieces.length)];
      const code = rnd(256);
      const whole = Buffer.from(`${output}${M}${code}\n`, 'latin1');
      const s = new MarkerScanner(NONCE);
      const passed: Buffer[] = [];
      for (let at = 0; at < whole.length; ) {
        const n = 1 + rnd(20);
        passed.push(s.push(whole.subarray(at, at + n)));
        at += n;
      }
      expect(Buffer.concat(passed).toString('latin1')).toBe(output);
      expect([s.done, s.exitCode]).toEqual([true, code]);
    }
  });
});

describe('the warm protocol in real shells', () => {
  // The bootstrap and script run under dash (Debian's /bin/sh) and bash here, as in any image with a POSIX sh.
  it.each(['sh', 'bash'])('%s reads the line, runs the command with cwd and env, and reports the exit code on both streams', (shell) => {
    const script = warmScript({ execId: 'x', team: 't', command: `printf '%s|' "$A" "$(pwd)"; cat; exit 5`, cwd: '/tmp', env: { A: `it's "quoted"\nand multi-line` }, mounts: [], sandbox: undefined as never, timeoutMs: 1 }, NONCE);
    const out = execFileSync('bash', ['-c', `${shell} -c '${BOOTSTRAP.replace(/'/g, `'\\''`)}' 2>/tmp/warm-stderr; cat /tmp/warm-stderr`], { input: `${encodeLine(script)}stdin bytes` }).toString();
    expect(out).toBe(`it's "quoted"\nand multi-line|/tmp|stdin bytes${M}5\n${M}5\n`);
  });
});
