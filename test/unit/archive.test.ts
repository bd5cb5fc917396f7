import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { compileGlobs } from '../../src/files/glob.js';
import {
  ArchiveError,
  type ArchiveLimits,
  type FileMap,
  globBase,
  normalizeEntryPath,
  packFileMap,
  type SanitizeOptions,
  sanitizeTar,
  validateCollectPatterns,
} from '../../src/files/archive.js';

type TarType = tar.Header['type'];
interface Spec {
  name: string;
  type?: TarType;
  linkname?: string;
  data?: string | Buffer;
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
}
interface Read {
  name: string;
  type: TarType;
  linkname: string | null;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  data: string;
}

const LIMITS: ArchiveLimits = { maxBytes: 1 << 20, maxEntries: 1000 };

/** A tar built by tar-stream, as a hostile sandbox could build it: any name, type, link target or mode. */
async function makeTar(entries: Spec[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = { name: e.name, type, linkname: e.linkname, mode: e.mode, uid: e.uid, gid: e.gid, uname: 'evil', gname: 'evil' };
    if (type === 'file') pack.entry(header, e.data ?? Buffer.alloc(e.size ?? 0, 0x61));
    else pack.entry(header).end(null);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Reads a tar back; a stream is collected first, so its error rejects this promise. */
async function readTar(input: Buffer | Readable): Promise<Read[]> {
  const out: Read[] = [];
  const extract = tar.extract();
  extract.end(Buffer.isBuffer(input) ? input : Buffer.concat(await input.toArray()));
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    const h = entry.header;
    out.push({ name: h.name, type: h.type, linkname: h.linkname, mode: h.mode, uid: h.uid, gid: h.gid, uname: h.uname, data: Buffer.concat(chunks).toString() });
  }
  return out;
}

/** Feeds `buf` in small chunks, so headers and bodies straddle chunk boundaries. */
const chunked = (buf: Buffer, size = 700): Readable =>
  Readable.from(Array.from({ length: Math.ceil(buf.length / size) }, (_, i) => buf.subarray(i * size, (i + 1) * size)));

async function sanitize(input: Buffer, opts: Partial<SanitizeOptions> = {}) {
  const { output, done } = sanitizeTar(chunked(input), { limits: LIMITS, ...opts });
  const entries = await readTar(output);
  return { entries, result: await done };
}

async function refusal(input: Buffer, opts: Partial<SanitizeOptions> = {}) {
  const { output, done } = sanitizeTar(chunked(input), { limits: LIMITS, ...opts });
  const consumed = readTar(output).then(() => 'ended', (e: unknown) => e);
  const err = await done.then(() => 'resolved', (e: unknown) => e);
  expect(await consumed).toBe(err); // output is destroyed with the same error
  return err as ArchiveError;
}

const byteLen = (n: number) => 'x'.repeat(n);

describe('normalizeEntryPath', () => {
  it.each([
    ['a', 'a'],
    ['./a', 'a'],
    ['a//b', 'a/b'],
    ['a/./b', 'a/b'],
    ['dir/', 'dir'],
    ['././a/./b//', 'a/b'],
    ['é/日本.txt', 'é/日本.txt'],
    [`${byteLen(255)}/b`, `${byteLen(255)}/b`],
  ])('accepts %j as %j', (name, expected) => {
    expect(normalizeEntryPath(name)).toBe(expected);
  });

  // A leading "/" is absolute_path here too, so sanitizeTar and packFileMap report it the same way.
  it.each([
    ['/etc/passwd', 'absolute_path'],
    ['//x', 'absolute_path'],
    ['../x', 'parent_traversal'],
    ['a/../../x', 'parent_traversal'],
    ['a/..', 'parent_traversal'],
    ['a/../b', 'parent_traversal'],
    ['', 'bad_path'],
    ['.', 'bad_path'],
    ['./', 'bad_path'],
    ['a\u0000b', 'bad_path'],
    ['a\\b', 'bad_path'],
    ['..\\x', 'bad_path'],
    [`a/${byteLen(256)}`, 'bad_path'],
    [`a/${'é'.repeat(128)}`, 'bad_path'], // 256 bytes in 128 characters
    [Array.from({ length: 2049 }, () => 'a').join('/'), 'bad_path'], // 4097 bytes
  ])('rejects %j with %s', (name, code) => {
    const err = (() => {
      try {
        normalizeEntryPath(name);
      } catch (e) {
        return e;
      }
    })() as ArchiveError;
    expect(err).toBeInstanceOf(ArchiveError);
    expect(err.code).toBe(code);
    expect(err.entry).toBe(name);
    expect(err.message).toContain('archive entry "');
  });

  it('names the entry in the message', () => {
    expect(() => normalizeEntryPath('../x')).toThrow('archive entry "../x": a path may not contain ".."');
  });
});

describe('packFileMap', () => {
  const owner = { uid: 1000, gid: 1001 };
  const files = (entries: Read[]) => entries.filter((e) => e.type === 'file');

  it('round-trips UTF-8 text, all 256 byte values as base64, and builds parent directories first', async () => {
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const text = 'héllo wörld — 日本語 🎉\n';
    const packed = await packFileMap({ 'a/b/c.txt': text, './bin/blob': { data: binary.toString('base64'), encoding: 'base64' } }, LIMITS, owner);
    expect(packed).toMatchObject({ entries: 5, bytes: Buffer.byteLength(text) + 256 });
    const out = await readTar(packed.tar);
    expect(out.map((e) => [e.name, e.type, e.mode, e.uid, e.gid])).toEqual([
      ['a', 'directory', 0o755, 1000, 1001],
      ['a/b', 'directory', 0o755, 1000, 1001],
      ['bin', 'directory', 0o755, 1000, 1001],
      ['a/b/c.txt', 'file', 0o644, 1000, 1001],
      ['bin/blob', 'file', 0o644, 1000, 1001],
    ]);
    expect(out[3]!.data).toBe(text);
    const extract = tar.extract();
    extract.end(packed.tar);
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      if (entry.header.name === 'bin/blob') expect(Buffer.concat(chunks).equals(binary)).toBe(true);
    }
  });

  it('packs 500 small files in nested directories', async () => {
    const map: FileMap = {};
    for (let i = 0; i < 500; i++) map[`d${i % 10}/e${i % 7}/f${i}.txt`] = `file ${i}`;
    const packed = await packFileMap(map, LIMITS, owner);
    const out = await readTar(packed.tar);
    expect(files(out)).toHaveLength(500);
    expect(packed.entries).toBe(500 + 10 + 70);
    expect(out.find((e) => e.name === 'd3/e4/f123.txt')?.data).toBe('file 123');
    const seen = new Set<string>();
    for (const e of out) {
      const slash = e.name.lastIndexOf('/');
      if (slash !== -1) expect(seen.has(e.name.slice(0, slash))).toBe(true);
      seen.add(e.name);
    }
  });

  it.each([
    [0o755, 0o755],
    [0o4755, 0o755],
    [0o7777, 0o777],
    [0o600, 0o600],
  ])('mode %o is packed as %o', async (mode, expected) => {
    const out = await readTar((await packFileMap({ x: { data: 'x', mode } }, LIMITS, owner)).tar);
    expect(out[0]!.mode).toBe(expected);
  });

  it.each<[string, FileMap, Partial<ArchiveLimits>, string, string | undefined]>([
    ['absolute key', { '/etc/passwd': 'x' }, {}, 'absolute_path', '/etc/passwd'],
    ['.. key', { '../x': 'x' }, {}, 'parent_traversal', '../x'],
    ['nested .. key', { 'a/../../x': 'x' }, {}, 'parent_traversal', 'a/../../x'],
    ['empty key', { '': 'x' }, {}, 'bad_path', ''],
    ['dot key', { '.': 'x' }, {}, 'bad_path', '.'],
    ['NUL key', { 'a\u0000b': 'x' }, {}, 'bad_path', 'a\u0000b'],
    ['backslash key', { 'a\\b': 'x' }, {}, 'bad_path', 'a\\b'],
    ['bad base64 character', { 'b.bin': { data: 'ab$d', encoding: 'base64' } }, {}, 'bad_encoding', 'b.bin'],
    ['unpadded base64', { 'b.bin': { data: 'YQ', encoding: 'base64' } }, {}, 'bad_encoding', 'b.bin'],
    ['base64 with whitespace', { 'b.bin': { data: 'YWJj\nZGVm', encoding: 'base64' } }, {}, 'bad_encoding', 'b.bin'],
    ['file and directory clash', { a: 'x', 'a/b': 'y' }, {}, 'bad_path', 'a'],
    ['duplicate after normalisation', { 'a/b': 'x', './a//b': 'y' }, {}, 'bad_path', './a//b'],
    ['too large in total', { a: '12345', b: '123456' }, { maxBytes: 10 }, 'too_large', 'b'],
    ['one file too large', { a: '12345' }, { maxEntryBytes: 4 }, 'too_large', 'a'],
    ['too many files', { a: '1', b: '2', c: '3' }, { maxEntries: 2 }, 'too_many_entries', undefined],
    ['too many with directories', { 'a/b/c': '1', d: '2' }, { maxEntries: 3 }, 'too_many_entries', undefined],
  ])('rejects %s', async (_name, map, limits, code, entry) => {
    const err = (await packFileMap(map, { ...LIMITS, ...limits }, owner).catch((e: unknown) => e)) as ArchiveError;
    expect(err).toBeInstanceOf(ArchiveError);
    expect(err.code).toBe(code);
    expect(err.entry).toBe(entry);
    if (entry !== undefined) expect(err.message).toContain(JSON.stringify(entry));
  });
});

describe('sanitizeTar refuses', () => {
  const file = (name: string, data = 'x'): Spec => ({ name, data });
  const dir = (name: string): Spec => ({ name, type: 'directory' });
  const symlink = (name: string, linkname: string): Spec => ({ name, type: 'symlink', linkname });
  const link = (name: string, linkname: string): Spec => ({ name, type: 'link', linkname });

  it.each<[string, Spec[], Partial<SanitizeOptions>, string, string]>([
    ['an absolute path', [file('/etc/passwd')], {}, 'absolute_path', '/etc/passwd'],
    ['a .. path', [file('../x')], {}, 'parent_traversal', '../x'],
    ['a nested .. path', [dir('a'), file('a/../../x')], {}, 'parent_traversal', 'a/../../x'],
    ['a .. inside the stripped prefix', [file('scratch/../x')], { stripComponents: 1 }, 'parent_traversal', 'scratch/../x'],
    ['a backslash path', [file('..\\..\\x')], {}, 'bad_path', '..\\..\\x'],
    ['a symlink to /etc', [symlink('etc', '/etc')], {}, 'symlink_escape', 'etc'],
    ['a symlink a/b -> ../../x', [dir('a'), symlink('a/b', '../../x')], {}, 'symlink_escape', 'a/b'],
    ['a symlink leaving the root only after stripping', [symlink('scratch/l', '../scratch/x')], { stripComponents: 1 }, 'symlink_escape', 'scratch/l'],
    ['a symlink with .. after a name', [symlink('l', 'a/../..')], {}, 'symlink_escape', 'l'],
    ['an entry under a symlink', [symlink('a', '.'), symlink('a/b', '..')], {}, 'symlink_escape', 'a/b'],
    ['an entry under a symlink, other case', [symlink('A', 'sub'), file('a/x')], {}, 'symlink_escape', 'a/x'],
    ['a symlink with an empty target', [symlink('l', '')], {}, 'bad_path', 'l'],
    ['a hard link to /etc/passwd', [link('h', '/etc/passwd')], {}, 'hardlink_escape', 'h'],
    ['a hard link to a later file', [link('h', 'f'), file('f')], {}, 'hardlink_escape', 'h'],
    ['a hard link to a directory', [dir('d'), link('h', 'd')], {}, 'hardlink_escape', 'h'],
    ['a hard link to a symlink', [symlink('s', 'f'), link('h', 's')], {}, 'hardlink_escape', 'h'],
    ['a hard link to ..', [file('f'), link('h', '../f')], {}, 'hardlink_escape', 'h'],
    ['a hard link to a file left out by include', [file('other/f'), link('dist/h', 'other/f')], { include: ['dist/**'] }, 'hardlink_escape', 'dist/h'],
    ['a character device', [{ name: 'dev/null', type: 'character-device' }], {}, 'special_file', 'dev/null'],
    ['a block device', [{ name: 'sda', type: 'block-device' }], {}, 'special_file', 'sda'],
    ['a fifo', [{ name: 'pipe', type: 'fifo' }], {}, 'special_file', 'pipe'],
    ['a special file outside include', [{ name: 'pipe', type: 'fifo' }], { include: ['dist/**'] }, 'special_file', 'pipe'],
    ['a hostile symlink outside include', [symlink('other', '/etc')], { include: ['dist/**'] }, 'symlink_escape', 'other'],
    ['files over maxBytes in total', [file('a', '123456'), file('b', '123456')], { limits: { ...LIMITS, maxBytes: 10 } }, 'too_large', 'b'],
    ['one file over maxEntryBytes', [file('a', '12345')], { limits: { ...LIMITS, maxEntryBytes: 4 } }, 'too_large', 'a'],
    ['more than maxEntries', [file('a'), file('b'), dir('c'), file('d')], { limits: { ...LIMITS, maxEntries: 3 } }, 'too_many_entries', 'd'],
    ['more than maxEntries, counting excluded ones', [file('a'), file('b'), file('c')], { limits: { ...LIMITS, maxEntries: 2 }, include: ['z'] }, 'too_many_entries', 'c'],
  ])('%s', async (_name, specs, opts, code, entry) => {
    const err = await refusal(await makeTar(specs), opts);
    expect(err).toBeInstanceOf(ArchiveError);
    expect(err.code).toBe(code);
    expect(err.entry).toBe(entry);
    expect(err.message).toContain(`archive entry ${JSON.stringify(entry)}: `);
  });

  it('an oversize entry from its header, before the body arrives', async () => {
    const whole = await makeTar([{ name: 'big', size: 100_000 }]);
    const err = await refusal(whole.subarray(0, 512 + 1000), { limits: { ...LIMITS, maxEntryBytes: 50_000 } });
    expect([err.code, err.entry]).toEqual(['too_large', 'big']);
  });

  it.each<[string, () => Promise<Buffer>]>([
    ['cut inside a body', async () => (await makeTar([{ name: 'a', size: 5000 }])).subarray(0, 2000)],
    ['cut inside a header', async () => (await makeTar([{ name: 'a', size: 10 }, { name: 'b', size: 10 }])).subarray(0, 1024 + 100)],
    ['cut between two entries', async () => (await makeTar([{ name: 'a', size: 10 }, { name: 'b', size: 10 }])).subarray(0, 1024)],
    ['not a tar', async () => Buffer.from('this is not a tar archive\n'.repeat(100))],
    ['empty', async () => Buffer.alloc(0)],
  ])('a truncated or foreign archive: %s', async (_name, make) => {
    const err = await refusal(await make());
    expect(err).toBeInstanceOf(ArchiveError);
    expect([err.code, err.entry]).toEqual(['bad_archive', undefined]);
  });

  it('passes the input stream’s own error through', async () => {
    const cut = new Error('socket hang up');
    const tarball = await makeTar([{ name: 'a', size: 5000 }]);
    const input = new Readable({ read() {} });
    input.push(tarball.subarray(0, 1024));
    setImmediate(() => input.destroy(cut));
    const { output, done } = sanitizeTar(input, { limits: LIMITS });
    const consumed = readTar(output).catch((e: unknown) => e);
    await expect(done).rejects.toBe(cut);
    expect(await consumed).toBe(cut);
    expect(input.destroyed).toBe(true);
  });

  it('stops reading and destroys its input after a refusal', async () => {
    const tarball = await makeTar([{ name: '/etc/passwd', data: 'x' }, { name: 'big', size: 5_000_000 }]);
    const input = chunked(tarball, 16_384);
    const { output, done } = sanitizeTar(input, { limits: LIMITS });
    output.on('error', () => {}).resume();
    await expect(done).rejects.toMatchObject({ code: 'absolute_path' });
    await new Promise((r) => input.once('close', r));
    expect(input.destroyed).toBe(true);
    expect(input.readableEnded).toBe(false);
  });

  it('rejects done when the consumer destroys the output early', async () => {
    const { output, done } = sanitizeTar(chunked(await makeTar([{ name: 'a', size: 200_000 }])), { limits: LIMITS });
    output.destroy();
    await expect(done).rejects.toThrow(/closed before the end/);
  });
});

describe('sanitizeTar keeps', () => {
  it('files, nested directories, a safe symlink and a hard link to an earlier file', async () => {
    const { entries, result } = await sanitize(
      await makeTar([
        { name: './', type: 'directory' },
        { name: 'a/', type: 'directory', mode: 0o40700 },
        { name: 'a/b/', type: 'directory', mode: 0 },
        { name: 'a/b/c.txt', data: 'deep', mode: 0o104755, uid: 0, gid: 0 },
        { name: 'b.txt', data: 'bee' },
        { name: 'a/link', type: 'symlink', linkname: '../b.txt' },
        { name: 'a/b/up', type: 'symlink', linkname: '../..' },
        { name: 'a/hard', type: 'link', linkname: './b.txt' },
        { name: 'é/日本語.txt', data: 'unicode' },
        { name: `${'long/'.repeat(40)}name.txt`, data: 'long' },
      ]),
    );
    expect(entries.map((e) => [e.name, e.type, e.mode, e.linkname ?? '', e.data])).toEqual([
      ['a', 'directory', 0o700, '', ''],
      ['a/b', 'directory', 0o755, '', ''],
      ['a/b/c.txt', 'file', 0o755, '', 'deep'],
      ['b.txt', 'file', 0o644, '', 'bee'],
      ['a/link', 'symlink', 0o777, '../b.txt', ''],
      ['a/b/up', 'symlink', 0o777, '../..', ''],
      ['a/hard', 'link', 0o644, 'b.txt', ''],
      ['é/日本語.txt', 'file', 0o644, '', 'unicode'],
      [`${'long/'.repeat(40)}name.txt`, 'file', 0o644, '', 'long'],
    ]);
    expect(entries.every((e) => e.uname === '')).toBe(true);
    expect(result).toEqual({
      entries: 9,
      bytes: 4 + 3 + 7 + 4,
      files: ['a/b/c.txt', 'b.txt', 'a/link', 'a/b/up', 'a/hard', 'é/日本語.txt', `${'long/'.repeat(40)}name.txt`],
    });
  });

  const docker = [
    { name: 'scratch/', type: 'directory' as const },
    { name: 'scratch/dist/', type: 'directory' as const },
    { name: 'scratch/dist/a.js', data: 'a' },
    { name: 'scratch/dist/sub/b.js', data: 'bb' },
    { name: 'scratch/dist/hard.js', type: 'link' as const, linkname: 'scratch/dist/a.js' },
    { name: 'scratch/report.json', data: '{}' },
    { name: 'scratch/notes.txt', data: 'no' },
    { name: 'scratch/.hidden/report.json', data: 'hidden' },
  ];

  it('stripComponents=1 drops Docker’s prefix and the root entry', async () => {
    const { entries } = await sanitize(await makeTar(docker), { stripComponents: 1 });
    expect(entries.map((e) => [e.name, e.type, e.linkname ?? ''])).toEqual([
      ['dist', 'directory', ''],
      ['dist/a.js', 'file', ''],
      ['dist/sub/b.js', 'file', ''],
      ['dist/hard.js', 'link', 'dist/a.js'],
      ['report.json', 'file', ''],
      ['notes.txt', 'file', ''],
      ['.hidden/report.json', 'file', ''],
    ]);
  });

  it.each<[string[], string[]]>([
    [['dist/**', 'report.json'], ['dist/a.js', 'dist/sub/b.js', 'dist/hard.js', 'report.json']],
    [['**/report.json'], ['report.json', '.hidden/report.json']],
    [['*.txt'], ['notes.txt']],
    [['nothing'], []],
  ])('include %j keeps only matching entries, no directories', async (include, expected) => {
    const { entries, result } = await sanitize(await makeTar(docker), { stripComponents: 1, include });
    expect(entries.map((e) => e.name)).toEqual(expected);
    expect(result.files).toEqual(expected);
  });

  it('prefix puts a subtree Docker returned back under its base', async () => {
    // getArchive of <workdir>/out/dist yields dist/...; globBase('out/dist/**') is out/dist, its dirname out.
    const { entries } = await sanitize(
      await makeTar([
        { name: 'dist/', type: 'directory' },
        { name: 'dist/a.js', data: 'a' },
        { name: 'dist/h.js', type: 'link', linkname: 'dist/a.js' },
        { name: 'dist/up', type: 'symlink', linkname: '../../top.txt' },
      ]),
      { prefix: 'out', include: ['out/dist/**'] },
    );
    expect(entries.map((e) => [e.name, e.type, e.linkname ?? ''])).toEqual([
      ['out/dist/a.js', 'file', ''],
      ['out/dist/h.js', 'link', 'out/dist/a.js'],
      ['out/dist/up', 'symlink', '../../top.txt'],
    ]);
    const err = await refusal(await makeTar([{ name: 'dist/up', type: 'symlink', linkname: '../../../x' }]), { prefix: 'out' });
    expect([err.code, err.entry]).toEqual(['symlink_escape', 'dist/up']);
  });

  it('rewrites the owner and drops user and group names', async () => {
    const { entries } = await sanitize(
      await makeTar([{ name: 'd', type: 'directory', uid: 0, gid: 0 }, { name: 'd/f', data: 'x', uid: 4242, gid: 0 }, { name: 'l', type: 'symlink', linkname: 'd/f' }]),
      { owner: { uid: 1000, gid: 1000 } },
    );
    expect(entries.map((e) => [e.name, e.uid, e.gid, e.uname])).toEqual([
      ['d', 1000, 1000, ''],
      ['d/f', 1000, 1000, ''],
      ['l', 1000, 1000, ''],
    ]);
  });

  it('keeps the original owner when none is given', async () => {
    const { entries } = await sanitize(await makeTar([{ name: 'f', data: 'x', uid: 4242, gid: 17 }]));
    expect(entries.map((e) => [e.uid, e.gid])).toEqual([[4242, 17]]);
  });
});

describe('sanitizeTar streams', () => {
  it('passes a 50 MB entry through in bounded memory, content intact', { timeout: 60_000 }, async () => {
    const size = 50 * 1024 * 1024;
    const blocks = [0, 1, 2].map((seed) => Buffer.from(Array.from({ length: 65_536 }, (_, i) => (i * 31 + seed * 7) & 0xff)));
    const sent = createHash('sha256');
    async function* body() {
      for (let off = 0, i = 0; off < size; off += 65_536, i++) {
        const block = blocks[i % 3]!.subarray(0, Math.min(65_536, size - off));
        sent.update(block);
        yield block;
      }
    }
    const pack = tar.pack();
    const sink = pack.entry({ name: 'scratch/big.bin', size, mode: 0o644 });
    Readable.from(body()).pipe(sink as unknown as NodeJS.WritableStream);
    pack.entry({ name: 'scratch/after.txt' }, 'after');
    pack.finalize();

    const before = process.memoryUsage();
    let peakRss = 0;
    let peakBuffers = 0;
    const { output, done } = sanitizeTar(pack as AsyncIterable<Buffer>, { limits: { maxBytes: size + 100, maxEntries: 10 }, stripComponents: 1 });
    const extract = tar.extract();
    output.pipe(extract as unknown as NodeJS.WritableStream);
    const received: Record<string, string> = {};
    for await (const entry of extract) {
      const hash = createHash('sha256');
      for await (const chunk of entry) {
        hash.update(chunk as Buffer);
        const now = process.memoryUsage();
        peakRss = Math.max(peakRss, now.rss - before.rss);
        peakBuffers = Math.max(peakBuffers, now.arrayBuffers - before.arrayBuffers);
      }
      received[entry.header.name] = hash.digest('hex');
    }
    expect(await done).toEqual({ entries: 2, bytes: size + 5, files: ['big.bin', 'after.txt'] });
    expect(received['big.bin']).toBe(sent.digest('hex'));
    expect(received['after.txt']).toBe(createHash('sha256').update('after').digest('hex'));
    expect(peakRss).toBeLessThan(30 * 1024 * 1024);
    expect(peakBuffers).toBeLessThan(30 * 1024 * 1024);
  });

  it('stops reading its input while nobody reads the output', async () => {
    const size = 20 * 1024 * 1024;
    const block = Buffer.alloc(65_536, 0x5a);
    let produced = 0;
    async function* body() {
      for (; produced < size; produced += block.length) yield block;
    }
    const pack = tar.pack();
    Readable.from(body()).pipe(pack.entry({ name: 'big.bin', size }) as unknown as NodeJS.WritableStream);
    pack.finalize();
    const { output, done } = sanitizeTar(pack as AsyncIterable<Buffer>, { limits: { maxBytes: size, maxEntries: 10 } });
    await new Promise((r) => setTimeout(r, 200));
    expect(produced).toBeLessThan(2 * 1024 * 1024);
    output.resume();
    expect((await done).bytes).toBe(size);
    expect(produced).toBe(size);
  });
});

describe('globBase', () => {
  it.each([
    ['dist/**', 'dist'],
    ['report.json', 'report.json'],
    ['**/*.log', ''],
    ['src/*/x.ts', 'src'],
    ['a/b/c.txt', 'a/b/c.txt'],
    ['dist/{a,b}/x', 'dist'],
    ['{dist,src}/x', ''],
    ['out/file[0-9].txt', 'out'],
    ['out/sub/\\*literal', 'out/sub'],
  ])('%j → %j', (pattern, base) => {
    expect(globBase(pattern)).toBe(base);
  });
});

describe('validateCollectPatterns', () => {
  it('normalises patterns', () => {
    expect(validateCollectPatterns(['./dist/**', 'report.json', '././a//b/*.txt', 'out/'])).toEqual(['dist/**', 'report.json', 'a/b/*.txt', 'out/**']);
  });

  it.each<[string, string[], string | undefined]>([
    ['an absolute pattern', ['ok', '/etc/*'], '/etc/*'],
    ['a .. pattern', ['../x/**'], '../x/**'],
    ['a nested .. pattern', ['a/../../**'], 'a/../../**'],
    ['an empty pattern', [''], ''],
    ['a ./ pattern', ['./'], './'],
    ['a pattern over 1024 characters', ['a'.repeat(1025)], 'a'.repeat(1025)],
    ['more than 64 patterns', Array.from({ length: 65 }, (_, i) => `p${i}`), undefined],
  ])('rejects %s', (_name, patterns, entry) => {
    const err = (() => {
      try {
        validateCollectPatterns(patterns);
      } catch (e) {
        return e;
      }
    })() as ArchiveError;
    expect(err).toBeInstanceOf(ArchiveError);
    expect([err.code, err.entry]).toEqual(['bad_path', entry]);
  });

  it('accepts 64 patterns of 1024 characters', () => {
    expect(validateCollectPatterns(Array.from({ length: 64 }, () => 'a'.repeat(1024)))).toHaveLength(64);
  });
});

describe('review findings, pinned', () => {
  it.each<[string, Spec[], string]>([
    // file → symlink at the same path → hard link to it → a file beneath the link: walks out of the root
    ['a path replaced by a symlink and reached through a hard link', [{ name: 'd1/d2/f' }, { name: 'd1/d2/f', type: 'symlink', linkname: '../..' }, { name: 'h', type: 'link', linkname: 'd1/d2/f' }, { name: 'h/evil' }], 'bad_path'],
    ['a file named twice', [{ name: 'a' }, { name: 'a' }], 'bad_path'],
    ['an entry beneath a file', [{ name: 'a' }, { name: 'a/b' }], 'bad_path'],
    ['an entry beneath a hard link', [{ name: 'a' }, { name: 'l', type: 'link', linkname: 'a' }, { name: 'l/x' }], 'symlink_escape'],
  ])('%s is refused', async (_name, entries, code) => {
    const err = await refusal(await makeTar(entries));
    expect(err).toBeInstanceOf(ArchiveError);
    expect(err.code).toBe(code);
  });

  it('a directory named twice is fine (tar tools do that)', async () => {
    const { entries } = await sanitize(await makeTar([{ name: 'd', type: 'directory' }, { name: 'd', type: 'directory' }, { name: 'd/f', data: 'x' }]));
    expect(entries.map((e) => e.name)).toEqual(['d', 'd', 'd/f']);
  });

  it.each([['*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b'], ['**/**/**/**/**/**/**/**/x*y*z*q']])('pattern %s against long names finishes at once', (pattern) => {
    const match = compileGlobs([pattern]);
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) match(`${'a/'.repeat(40)}${'a'.repeat(250)}`);
    // Not a timing assertion of speed, a guard against exponential blow-up: a backtracking regex takes seconds.
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it.each<[string, string, boolean]>([
    ['dist/**', 'dist/a/b.js', true],
    ['dist/**', 'dist', true],
    ['dist/**', 'distx/a', false],
    ['*.json', 'report.json', true],
    ['*.json', 'sub/report.json', false],
    ['**/*.json', 'sub/deep/report.json', true],
    ['**/*.json', 'report.json', true],
    ['src/*/x.ts', 'src/a/x.ts', true],
    ['src/*/x.ts', 'src/a/b/x.ts', false],
    ['a?c', 'abc', true],
    ['a?c', 'a/c', false],
    ['.env', '.env', true],
    ['*', '.hidden', true],
  ])('glob %s ~ %s → %s', (pattern, path, expected) => {
    expect(compileGlobs([pattern])(path)).toBe(expected);
  });

  it.each([['{a,b}'], ['[ab]'], ['!(x)'], ['a\\*'], ['*'.repeat(17)]])('collect pattern %s uses syntax we do not support and is refused', (pattern) => {
    expect(() => validateCollectPatterns([pattern])).toThrow(ArchiveError);
  });
});
