import { Readable } from 'node:stream';
import picomatch from 'picomatch';
import { compileGlobs } from './glob.js';
import tar from 'tar-stream';

/**
 * Safe tar archives in both directions: files INTO a sandbox (packFileMap) and artifacts OUT of a sandbox
 * (sanitizeTar). Everything a sandbox produces is hostile, so sanitizeTar re-packs every entry from scratch
 * with a header it built itself: no absolute or `..` paths, no links leaving the root, no devices, no
 * set-id bits, no foreign owners, no pax extensions (xattrs, ACLs and file capabilities are dropped).
 */

export type ArchiveErrorCode =
  | 'absolute_path'
  | 'parent_traversal'
  | 'symlink_escape'
  | 'hardlink_escape'
  | 'special_file'
  | 'too_large'
  | 'too_many_entries'
  | 'bad_path'
  | 'bad_archive'
  | 'bad_encoding';

/** Names the offending entry, so a caller can tell a user which of their files (or which artifact) was refused. */
export class ArchiveError extends Error {
  constructor(
    readonly code: ArchiveErrorCode,
    readonly entry: string | undefined,
    reason: string,
  ) {
    super(entry === undefined ? `archive: ${reason}` : `archive entry ${quote(entry)}: ${reason}`);
    this.name = 'ArchiveError';
  }
}

/** maxBytes bounds the sum of regular-file sizes; maxEntries bounds every entry (files, dirs, links). */
export interface ArchiveLimits {
  maxBytes: number;
  maxEntries: number;
  maxEntryBytes?: number;
}

const MAX_PATH_BYTES = 4096;
const MAX_NAME_BYTES = 255;

/** JSON quoting makes NUL bytes and newlines visible; hostile names may be megabytes long, so cut them. */
const quote = (s: string): string => JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);

/** The components of a relative path, `.` and empty ones dropped; [] for the root (`.`, `./`). */
function splitPath(name: string): string[] {
  if (name === '' || name.includes('\0')) throw new ArchiveError('bad_path', name, 'a path may not be empty or contain NUL');
  if (name.startsWith('/')) throw new ArchiveError('absolute_path', name, 'a path must be relative');
  // A backslash is a separator to a Windows client extracting our output: `..\x` would escape there.
  if (name.includes('\\')) throw new ArchiveError('bad_path', name, 'a path may not contain a backslash');
  if (Buffer.byteLength(name) > MAX_PATH_BYTES) throw new ArchiveError('bad_path', name, `a path is limited to ${MAX_PATH_BYTES} bytes`);
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  for (const c of parts) {
    if (c === '..') throw new ArchiveError('parent_traversal', name, 'a path may not contain ".."');
    if (Buffer.byteLength(c) > MAX_NAME_BYTES) throw new ArchiveError('bad_path', name, `a path component is limited to ${MAX_NAME_BYTES} bytes`);
  }
  return parts;
}

/**
 * Validates one relative entry path and returns its one spelling (`./a//b/` → `a/b`), so that duplicates,
 * parent directories and include patterns are all compared on the same string. A leading `/` is
 * `absolute_path`; any `..` component (even one that would stay inside) is `parent_traversal`; empty, `.`,
 * NUL, backslash and over-long paths (4096 bytes, 255 per component) are `bad_path`.
 */
export function normalizeEntryPath(name: string): string {
  const parts = splitPath(name);
  if (parts.length === 0) throw new ArchiveError('bad_path', name, 'a path must name something below the root');
  return parts.join('/');
}

export type FileMap = Record<string, string | { data: string; encoding?: 'utf8' | 'base64'; mode?: number }>;

/** Strict base64: only the canonical padded form round-trips; Buffer.from alone silently skips bad characters. */
function decodeFile(key: string, value: FileMap[string]): { data: Buffer; mode: number } {
  if (typeof value === 'string') return { data: Buffer.from(value, 'utf8'), mode: 0o644 };
  let data: Buffer;
  if (value.encoding === 'base64') {
    data = Buffer.from(value.data, 'base64');
    if (data.toString('base64') !== value.data) throw new ArchiveError('bad_encoding', key, 'data is not valid base64');
  } else {
    data = Buffer.from(value.data, 'utf8');
  }
  return { data, mode: (value.mode ?? 0o644) & 0o777 };
}

function checkSize(limits: ArchiveLimits, entry: string, size: number, total: number): void {
  if (limits.maxEntryBytes !== undefined && size > limits.maxEntryBytes) {
    throw new ArchiveError('too_large', entry, `${size} bytes is over the ${limits.maxEntryBytes}-byte limit for one file`);
  }
  if (total > limits.maxBytes) throw new ArchiveError('too_large', entry, `files total more than ${limits.maxBytes} bytes`);
}

/**
 * Turns a JSON file map (an API request body) into a tar for Docker's putArchive. Parent directories get
 * their own 0755 entries so they are owned by the sandbox user rather than root, and modes lose their
 * set-id and sticky bits. Everything is validated before a byte is packed, so a refused map packs nothing.
 * Async only because tar-stream's pack is a stream. Note: tar-stream writes mode 0 as 0644.
 */
export async function packFileMap(
  files: FileMap,
  limits: ArchiveLimits,
  owner: { uid: number; gid: number },
): Promise<{ tar: Buffer; entries: number; bytes: number }> {
  const keys = Object.keys(files);
  if (keys.length > limits.maxEntries) throw new ArchiveError('too_many_entries', undefined, `more than ${limits.maxEntries} entries`);
  const out = new Map<string, { key: string; data: Buffer; mode: number }>();
  const dirs = new Set<string>();
  let bytes = 0;
  for (const key of keys) {
    const path = normalizeEntryPath(key);
    const dup = out.get(path);
    if (dup) throw new ArchiveError('bad_path', key, `names the same file as ${quote(dup.key)}`);
    const file = decodeFile(key, files[key]!);
    checkSize(limits, key, file.data.length, (bytes += file.data.length));
    out.set(path, { key, ...file });
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) dirs.add(path.slice(0, i));
  }
  for (const [path, { key }] of out) {
    if (dirs.has(path)) throw new ArchiveError('bad_path', key, 'a path is used both as a file and as a directory');
  }
  const entries = out.size + dirs.size;
  if (entries > limits.maxEntries) throw new ArchiveError('too_many_entries', undefined, `${entries} entries (with directories) is more than ${limits.maxEntries}`);

  const pack = tar.pack();
  const mtime = new Date();
  const base = { uid: owner.uid, gid: owner.gid, mtime };
  for (const name of [...dirs].sort()) pack.entry({ ...base, name, type: 'directory', mode: 0o755 });
  for (const [name, f] of out) pack.entry({ ...base, name, type: 'file', mode: f.mode, size: f.data.length }, f.data);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return { tar: Buffer.concat(chunks), entries, bytes };
}

export interface SanitizeOptions {
  limits: ArchiveLimits;
  /** Leading components to drop: Docker's getArchive prefixes every entry with the requested directory's name. */
  stripComponents?: number;
  /** Prepended to every name after stripping (a globBase asked of Docker), so names and include stay root-relative. */
  prefix?: string;
  /** Globs (glob.ts: `*`, `?`, `**`) on the stripped path; when given, only matching non-directories are emitted. */
  include?: string[];
  owner?: { uid: number; gid: number };
}

export interface SanitizeResult {
  /** Entries emitted (directories included). */
  entries: number;
  /** Sum of the emitted regular files' sizes. */
  bytes: number;
  /** Emitted non-directory paths (files, symlinks, hard links), in archive order. */
  files: string[];
}

type Entry = tar.ExtractEvents['entry'][1];
type Kind = 'file' | 'directory' | 'symlink' | 'link';
/** tar-stream's type names; anything else (devices, fifos, GNU sparse/volume types it reports as null) is refused. */
const KINDS = new Map<string | null | undefined, Kind>([
  ['file', 'file'],
  ['contiguous-file', 'file'],
  ['directory', 'directory'],
  ['symlink', 'symlink'],
  ['link', 'link'],
]);

/** Case- and Unicode-folded, so that `A -> .` also guards `a/x` for a client on a case-insensitive disk. */
const fold = (s: string): string => s.normalize('NFC').toLowerCase();

/**
 * A symlink target is judged lexically from the link's directory, which is sound only if that directory is
 * real: hence entries under an emitted symlink are refused, and `..` may appear only as a leading run
 * (`../../x`), since `a/..` after a symlink `a` climbs from wherever `a` points, not from here.
 */
function checkSymlink(entry: string, parts: string[], target: string): void {
  if (target === '' || Buffer.byteLength(target) > MAX_PATH_BYTES) throw new ArchiveError('bad_path', entry, 'a symlink target must be 1 to 4096 bytes');
  const escape = (why: string) => new ArchiveError('symlink_escape', entry, `symlink target ${quote(target)} ${why}`);
  if (target.startsWith('/')) throw escape('is absolute');
  const t = target.split('/').filter((c) => c !== '' && c !== '.');
  const first = t.findIndex((c) => c !== '..');
  const ups = first === -1 ? t.length : first;
  if (t.indexOf('..', ups) !== -1) throw escape('has ".." after a name');
  if (ups > parts.length - 1) throw escape('leaves the archive root');
}

/** Waits for 'drain' or 'close', whichever comes first, so a destroyed stream never leaves a waiter hanging. */
function drained(s: tar.Extract): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

/**
 * Re-packs a hostile tar stream (Docker's getArchive of a sandbox directory) into a safe one, entry by
 * entry with backpressure, so an artifact of any size passes through in bounded memory. Rules, checked on
 * every entry before include filtering: path (after stripComponents), type, symlink and hard-link targets,
 * then limits from the header before any body byte is read. On the first refusal `output` is destroyed and
 * `done` rejects with the ArchiveError (`done` never causes an unhandled rejection by itself); an error
 * from `input` itself is passed through as is. A missing end-of-archive block is `bad_archive`, so a stream
 * cut between two entries is not mistaken for a shorter archive. After a failure `input` is no longer read
 * (a Node stream is destroyed through its iterator at its next chunk). `done` resolves once every entry is
 * checked and queued; `output` still has to be read to its end, and needs an 'error' listener like any stream.
 */
export function sanitizeTar(
  input: AsyncIterable<Uint8Array | string>,
  opts: SanitizeOptions,
): { output: Readable; done: Promise<SanitizeResult> } {
  const { limits, owner } = opts;
  const strip = opts.stripComponents ?? 0;
  const prefix = opts.prefix ? splitPath(opts.prefix) : [];
  const matches = opts.include ? compileGlobs(opts.include) : undefined;
  const extract = tar.extract();
  const pack = tar.pack();
  // Only fail() puts an error on output: errors inside tar-stream would otherwise race ours to the consumer.
  const output = new Readable({
    read: () => void pack.resume(),
    destroy: (err, cb) => {
      if (!output.readableEnded) fail(err ?? new Error('sanitizeTar output closed before the end of the archive'));
      cb(err);
    },
  });
  pack.on('data', (chunk) => output.push(chunk) || pack.pause());
  pack.on('end', () => output.push(null));
  const result: SanitizeResult = { entries: 0, bytes: 0, files: [] };
  const regular = new Map<string, boolean>(); // regular files seen (after strip) → emitted?
  const symlinks = new Map<string, string>(); // emitted symlinks: folded → path
  const linkLengths = new Set<number>(); // their folded lengths: most prefixes need no lookup at all
  // Every path seen (folded) → its kind. A second entry for a path is refused: replacing a checked file by a
  // link (or a link by a file) is how `file, symlink, hard link to it, file beneath` walks out of the root.
  const kinds = new Map<string, Kind>();
  let seen = 0;
  let failure: unknown;

  let reject!: (err: unknown) => void;
  let resolve!: (r: SanitizeResult) => void;
  const done = new Promise<SanitizeResult>((res, rej) => ((resolve = res), (reject = rej)));
  done.catch(() => {});
  const fail = (err: unknown) => {
    if (failure !== undefined) return;
    failure = err;
    reject(err);
    extract.destroy(err as Error);
    pack.destroy(err as Error);
    output.destroy(err as Error);
  };
  const ignore = () => {}; // errors reach the caller through fail(), never as unhandled 'error' events
  extract.on('error', ignore);
  pack.on('error', ignore);

  // Feeds extract by hand (not pipe) to see the last block: tar-stream accepts a stream that simply stops.
  const pump = async (): Promise<boolean> => {
    let tail: Buffer = Buffer.alloc(0);
    try {
      for await (const chunk of input) {
        if (failure !== undefined) return false;
        if (typeof chunk === 'string') throw new ArchiveError('bad_archive', undefined, 'input must be bytes, not text');
        const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        tail = buf.length >= 512 ? buf.subarray(buf.length - 512) : Buffer.concat([tail, buf]).subarray(-512);
        if (!extract.write(buf) && !extract.destroyed) await drained(extract);
      }
    } catch (err) {
      fail(err); // the input's own error (a Docker stream cut), passed through as is
      return false;
    }
    extract.end(null);
    return tail.length === 512 && tail.every((b) => b === 0);
  };

  const forward = (header: Partial<tar.Header> & { name: string }, body?: Entry) =>
    new Promise<void>((res, rej) => {
      const sink = pack.entry(header, (err) => (err ? rej(err) : res())).on('error', ignore);
      if (body) body.pipe(sink);
      else sink.end(null);
    });
  const skip = async (entry: Entry) => {
    for await (const _ of entry);
  };

  const one = async (entry: Entry): Promise<void> => {
    const h = entry.header;
    const raw = h.name;
    if (++seen > limits.maxEntries) throw new ArchiveError('too_many_entries', raw, `more than ${limits.maxEntries} entries`);
    const all = splitPath(raw);
    const kind = KINDS.get(h.type);
    if (!kind) throw new ArchiveError('special_file', raw, `entry type ${h.type ?? 'unknown'} is not allowed`);
    if (all.length <= strip) return skip(entry); // the root itself
    const parts = [...prefix, ...all.slice(strip)];
    const path = parts.join('/');
    const folded = fold(path);
    for (let i = folded.indexOf('/'); i !== -1 && symlinks.size > 0; i = folded.indexOf('/', i + 1)) {
      const link = linkLengths.has(i) ? symlinks.get(folded.slice(0, i)) : undefined;
      if (link !== undefined) throw new ArchiveError('symlink_escape', raw, `a path may not pass through the symlink ${quote(link)}`);
    }
    const before = kinds.get(folded);
    if (before !== undefined && !(before === 'directory' && kind === 'directory')) {
      throw new ArchiveError('bad_path', raw, 'the archive names this path twice');
    }
    for (let i = folded.indexOf('/'); i !== -1; i = folded.indexOf('/', i + 1)) {
      const k = kinds.get(folded.slice(0, i));
      if (k !== undefined && k !== 'directory') throw new ArchiveError(k === 'symlink' || k === 'link' ? 'symlink_escape' : 'bad_path', raw, `a path may not pass through the ${k === 'file' ? 'file' : 'link'} ${quote(parts.slice(0, folded.slice(0, i).split('/').length).join('/'))}`);
    }
    kinds.set(folded, kind);
    let linkname: string | undefined;
    if (kind === 'symlink') checkSymlink(raw, parts, (linkname = h.linkname ?? ''));
    if (kind === 'link') {
      let target = '';
      try {
        const t = splitPath(h.linkname ?? '');
        if (t.length > strip) target = [...prefix, ...t.slice(strip)].join('/');
      } catch {
        // any unusable name is simply not an earlier file
      }
      if (!regular.has(target)) throw new ArchiveError('hardlink_escape', raw, `hard link target ${quote(h.linkname ?? '')} is not a regular file earlier in the archive`);
      linkname = target;
    }
    const emit = kind === 'directory' ? !matches : !matches || matches(path);
    if (kind === 'file') regular.set(path, emit);
    if (!emit) return skip(entry);
    if (kind === 'link' && !regular.get(linkname!)) throw new ArchiveError('hardlink_escape', raw, `hard link target ${quote(linkname!)} was not included`);
    const size = kind === 'file' ? (h.size ?? 0) : 0;
    if (kind === 'file') checkSize(limits, raw, size, (result.bytes += size));
    const mode = kind === 'symlink' ? 0o777 : ((h.mode ?? 0) & 0o777) || (kind === 'directory' ? 0o755 : 0o644);
    const uid = owner?.uid ?? h.uid;
    const gid = owner?.gid ?? h.gid;
    const header = { name: path, type: kind, size, mode, mtime: h.mtime, uid, gid, linkname: linkname ?? '' };
    if (kind === 'symlink') {
      symlinks.set(folded, path);
      linkLengths.add(folded.length);
    }
    result.entries++;
    if (kind !== 'directory') result.files.push(path);
    if (kind === 'file') return forward(header, entry);
    await skip(entry); // a link or directory may carry a body; it is not ours to forward
    await forward(header);
  };

  const walk = async () => {
    try {
      for await (const entry of extract) {
        if (failure !== undefined) return;
        await one(entry);
      }
    } catch (err) {
      fail(err instanceof ArchiveError ? err : new ArchiveError('bad_archive', undefined, errorText(err)));
    }
  };

  void Promise.all([pump(), walk()]).then(([ended]) => {
    if (failure !== undefined) return;
    if (!ended) return fail(new ArchiveError('bad_archive', undefined, 'no end-of-archive block: the archive is truncated'));
    pack.finalize();
    resolve(result);
  });
  return { output, done };
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * The literal directory prefix of a glob (`dist/**` → `dist`, `**\/*.log` → ``), so a caller can ask Docker
 * for only the subtrees that can match instead of the whole working directory. Docker names the entries of
 * `<workdir>/a/b` as `b/...` (and a file as `b`), so sanitize them with `{ stripComponents: 0, prefix: 'a' }`
 * (the base's dirname); for the base `` ask for the workdir itself with `{ stripComponents: 1 }`.
 */
export function globBase(pattern: string): string {
  const base = picomatch.scan(pattern).base;
  const slash = base.indexOf('\\'); // an escaped glob character: the literal part ends before its component
  return slash === -1 ? base : base.slice(0, Math.max(base.lastIndexOf('/', slash), 0));
}

/**
 * Checks the user's artifact patterns before any Docker call: no absolute or `..` patterns (a glob cannot
 * match outside the root anyway, but its base would be asked of Docker), bounded count and length. Returns
 * them without a leading `./`; a trailing `/` means the directory's contents (`dist/` → `dist/**`).
 */
export function validateCollectPatterns(patterns: string[]): string[] {
  if (patterns.length > 64) throw new ArchiveError('bad_path', undefined, 'at most 64 patterns');
  return patterns.map((p) => {
    const bad = (why: string) => new ArchiveError('bad_path', p, why);
    if (p.length > 1024) throw bad('a pattern is limited to 1024 characters');
    if (p.startsWith('/')) throw bad('a pattern must be relative');
    if (p.split('/').includes('..')) throw bad('a pattern may not contain ".."');
    const n = p.replace(/^(\.\/+)+/, '').replace(/\/{2,}/g, '/');
    if (n === '' || n === '.' || n.includes('\0')) throw bad('a pattern must name something below the root');
    if (/[[\]{}()!+@\\]/.test(n)) throw bad('only *, ? and ** are glob characters here; [ ] { } ( ) ! + @ and \\ are not allowed');
    if ((n.match(/\*/g)?.length ?? 0) > 16) throw bad('at most 16 * in a pattern');
    return n.endsWith('/') ? `${n}**` : n;
  });
}
