import { JSON_ESCAPE_WASM } from './json-escape-wasm.js';

/*
 * Output lines for NDJSON and SSE: `head`, the JSON string of some UTF-8 text (quotes included), then `tail`,
 * as one Buffer, made from the text's bytes without decoding them.
 *
 * The escape runs in WebAssembly with SIMD (src/service/json-escape.wat): 16 bytes at a time, and only the
 * bytes that need an escape (quotes, backslashes, control characters) take a slower step. For 64 KiB of
 * typical output (a line every 37 bytes) a line takes 0.26–0.43 ns a byte, copies in and out included, where
 * V8's JSON.stringify of the latin1 string, with the copies around it, took 1.0 (Node 20, --liftoff-only):
 * 0.12–0.15 s of CPU less for every 200 MB streamed as NDJSON. Where WebAssembly SIMD is missing (x64 without
 * SSE4.1), jsonLineJs does the same through JSON.stringify.
 */

const QUOTE = 0x22;
/** The input of one call starts here, after the escape tables (see the .wat). */
const IN = 64;
/** Text is escaped in pieces of at most this many bytes; a longer one takes several calls. */
const PIECE = 64 * 1024;
/** Where the line is assembled: head, the quoted escape, tail. */
const OUT = IN + PIECE;

/** The little of the WebAssembly API this needs (the project's lib and @types/node 20 do not declare it). */
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
};

interface Escaper {
  /** The module's memory (it never grows, so the view stays valid). */
  mem: Buffer;
  escape: (at: number, length: number, out: number) => number;
  /** The most bytes head and tail may take together (the rest of the memory holds the worst case escape). */
  affixRoom: number;
}

/** A line with every kind of escape, checked once at load against jsonLineJs. */
const SELF_CHECK = Buffer.from('a "quoted" \\ line\t\r\n\x00\x1b[0m \x7f é € 😀 '.repeat(3));

function load(): Escaper | undefined {
  try {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(JSON_ESCAPE_WASM, 'base64')));
    const { memory, escape } = instance.exports as { memory: { buffer: ArrayBuffer }; escape: Escaper['escape'] };
    // A piece's escape takes at most 6 bytes per byte, plus the 16 a last whole-vector store may run over.
    const affixRoom = memory.buffer.byteLength - (OUT + 6 * PIECE + 16 + 2);
    if (affixRoom <= 0) return undefined;
    const candidate = { mem: Buffer.from(memory.buffer), escape, affixRoom };
    // Compiled and run once here, inside the try: a module V8 cannot run fails now, not on a client's line.
    const head = Buffer.from('{"data":');
    const tail = Buffer.from('}');
    return escapeLine(candidate, head, SELF_CHECK, tail).equals(jsonLineJs(head, SELF_CHECK, tail)) ? candidate : undefined;
  } catch {
    return undefined; // no WebAssembly SIMD here
  }
}

/**
 * A copy of `mem[from, to)` that owns its memory (the escaper's memory is reused by the next call), made through
 * a latin1 string. That string is young garbage on V8's heap, and it keeps V8's young-generation GCs coming
 * while output streams; they free the lines already written. Copied straight into a new Buffer, a 200 MB NDJSON
 * stream made so little garbage on the heap that V8 ran 10–17 full GCs during it (0–1 this way, measured with
 * the service's flags), and the service's CPU for the stream doubled. The GC pacer (src/gc-pacer.ts) did not
 * prevent those: they came with or without it, and with a pacer that asked for a minor GC first.
 */
function copyOut(mem: Buffer, from: number, to: number): Buffer {
  return Buffer.from(mem.toString('latin1', from, to), 'latin1');
}

/**
 * `head`, then `text` (valid UTF-8) as a JSON string, then `tail`: the bytes of
 * `head + JSON.stringify(text.toString('utf8')) + tail`.
 */
export function jsonLine(head: Buffer, text: Buffer, tail: Buffer): Buffer {
  if (escaper === undefined || head.length + tail.length > escaper.affixRoom) return jsonLineJs(head, text, tail);
  return escapeLine(escaper, head, text, tail);
}

function escapeLine({ mem, escape }: Escaper, head: Buffer, text: Buffer, tail: Buffer): Buffer {
  const done: Buffer[] = [];
  mem.set(head, OUT);
  let o = OUT + head.length;
  mem[o++] = QUOTE;
  for (let at = 0; ; ) {
    const piece = text.subarray(at, at + PIECE);
    mem.set(piece, IN);
    o = escape(IN, piece.length, o);
    at += piece.length;
    if (at >= text.length) break;
    // Each byte's escape stands alone, so a piece may end anywhere, even inside a character.
    done.push(copyOut(mem, OUT, o));
    o = OUT;
  }
  mem[o++] = QUOTE;
  mem.set(tail, o);
  o += tail.length;
  const last = copyOut(mem, OUT, o);
  return done.length === 0 ? last : Buffer.concat([...done, last]);
}

/**
 * jsonLine through V8's JSON.stringify: the text's bytes read as latin1 (a copy, no decoding). JSON escapes only
 * ASCII, so every other byte, each byte of a multi-byte character too, comes through unchanged, and writing the
 * result as latin1 gives back exactly the UTF-8 that JSON.stringify of the decoded text would have produced.
 */
export function jsonLineJs(head: Buffer, text: Buffer, tail: Buffer): Buffer {
  return Buffer.concat([head, Buffer.from(JSON.stringify(text.toString('latin1')), 'latin1'), tail]);
}

const escaper = load();

/** Whether lines are escaped by WebAssembly here (the tests insist on it where they run). */
export const escapesWithWasm = escaper !== undefined;

/** The most bytes head and tail may take together for the WebAssembly path (for the tests). */
export const wasmAffixRoom = escaper?.affixRoom ?? 0;
