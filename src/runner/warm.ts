import { COMMAND_SHELL } from './container-spec.js';
import type { RunSpec } from './types.js';

/**
 * The protocol of a pre-started ("warm") sandbox. The container runs BOOTSTRAP under /bin/sh, blocked in
 * `read` on its attached stdin, so nothing it could print is lost and it works with any image that has a
 * POSIX sh. To run a command the service writes one line — the script below, every byte as a printf octal
 * escape so that newlines and quotes in the command cannot end the line early — then the request's stdin,
 * then closes stdin.
 *
 * The script runs the command in a subshell with the cwd and env of the request, then prints
 * `\x01<nonce>:<exit code>` (`markerOf`) on stdout and on stderr. Each is a FIFO pipe, so once the marker has
 * arrived on both, all of the command's output has too, and the exit code is known milliseconds before Docker notices the
 * exit. The nonce is random per run and never exported, so the command cannot easily print a fake marker;
 * if it did, it would only lie about its own exit, and the container is removed either way.
 */
export const BOOTSTRAP = `IFS= read -r line || exit 97; s=$(printf '%b' "$line"); eval "$s"`;
/** The shell the bootstrap runs under: any image's POSIX sh, lighter to start than bash. */
export const BOOTSTRAP_SHELL = '/bin/sh';

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** `cd` to the cwd, export the env, then exec the command under bash (COMMAND_SHELL): every value single-quoted. */
export function commandScript(spec: Pick<RunSpec, 'env' | 'cwd' | 'command'>): string {
  const exports = Object.entries(spec.env).map(([k, v]) => `export ${shellQuote(`${k}=${v}`)}`);
  return [`cd -- ${shellQuote(spec.cwd)}`, ...exports, `exec ${COMMAND_SHELL} -c ${shellQuote(spec.command)}`].join(' && ');
}

/**
 * `hold`: after the markers the bootstrap shell stops itself (SIGSTOP; docker-init is PID 1, so it can), which
 * keeps the container and its /scratch volume alive until the service has copied the artifacts out.
 */
export function warmScript(spec: Pick<RunSpec, 'env' | 'cwd' | 'command'> & Partial<RunSpec>, nonce: string, hold = false): string {
  const inner = commandScript(spec);
  const after = hold ? '; kill -STOP $$' : '';
  return `(${inner}); __rc=$?; printf '\\001%s:%d\\n' ${nonce} "$__rc"; printf '\\001%s:%d\\n' ${nonce} "$__rc" >&2${after}`;
}

/** The single line the bootstrap reads: every byte as `\\0NNN`, understood by printf %b in dash, bash and busybox. */
export function encodeLine(script: string): string {
  let out = '';
  for (const b of Buffer.from(script, 'utf8')) out += `\\0${b.toString(8).padStart(3, '0')}`;
  return `${out}\n`;
}

/**
 * The marker before the exit code: a control byte, then the nonce. Every byte of a run's output is searched
 * for it, and the search skips ahead with memchr to each occurrence of the first byte: SOH (0x01) is all but
 * absent from text, where a hex digit would be everywhere (a 200 MB stream spent 65 ms of the service's CPU
 * in the search when the marker began with the nonce, and 40 ms more testing each chunk's tail for a prefix).
 */
export const markerOf = (nonce: string): Buffer => Buffer.from(`\x01${nonce}:`, 'latin1');

/**
 * Finds the marker in one output stream and strips it. Bytes that could be the start of a marker split across
 * frames are held back until the next frame says whether they are.
 */
export class MarkerScanner {
  private carry: Buffer = Buffer.alloc(0);
  private readonly marker: Buffer;
  done = false;
  exitCode: number | undefined;

  constructor(nonce: string) {
    this.marker = markerOf(nonce);
  }

  /** Returns the output to pass on. After the marker (`done`), nothing more is passed on. */
  push(chunk: Buffer): Buffer {
    if (this.done) return Buffer.alloc(0);
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = Buffer.alloc(0);
    const at = buf.indexOf(this.marker);
    if (at >= 0) {
      const nl = buf.indexOf(0x0a, at + this.marker.length);
      if (nl < 0) {
        // The code and newline are still on their way.
        this.carry = Buffer.from(buf.subarray(at));
        return buf.subarray(0, at);
      }
      this.exitCode = Number(buf.subarray(at + this.marker.length, nl).toString());
      this.done = true;
      return buf.subarray(0, at);
    }
    // Hold back a tail that is a prefix of the marker: it starts at one of the few marker-first bytes in the
    // last marker.length - 1 bytes.
    const first = this.marker[0]!;
    for (let k = buf.indexOf(first, Math.max(0, buf.length - this.marker.length + 1)); k >= 0; k = buf.indexOf(first, k + 1)) {
      if (buf.subarray(k).equals(this.marker.subarray(0, buf.length - k))) {
        this.carry = Buffer.from(buf.subarray(k));
        return buf.subarray(0, k);
      }
    }
    return buf;
  }

  /** What is held back when the stream ends without a marker (the container was killed). */
  flush(): Buffer {
    const c = this.done ? Buffer.alloc(0) : this.carry;
    this.carry = Buffer.alloc(0);
    return c;
  }
}
