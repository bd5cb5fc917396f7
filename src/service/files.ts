import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TeamConfig } from '../config/load.js';
import { writeChecked } from '../files/write-checked.js';
import { ArchiveError, packFileMap, sanitizeTar, validateCollectPatterns, type FileMap } from '../files/archive.js';
import { ServiceError } from './errors.js';

/** Input files, checked and packed, waiting on the host's disk for their run (which may wait for a human). */
export interface StagedInput {
  path: string;
  entries: number;
  bytes: number;
  sha256: string;
  names: string[];
}

export type FilesSource = { map: FileMap } | { tar: AsyncIterable<Uint8Array | string> };

const NAMES_SHOWN = 50;

export const ownerOf = (team: TeamConfig): { uid: number; gid: number } => {
  const [uid, gid = uid] = team.sandbox.user.split(':').map(Number) as [number, number?];
  return { uid, gid };
};

/** An archive refused: 400 naming the entry, in the error shape of SPEC §3. */
export function archiveProblem(err: ArchiveError, field: string): ServiceError {
  return new ServiceError('invalid_files', `${field}: ${err.message}`, { fields: [{ path: field, message: err.message }], entry: err.entry, reason: err.code });
}

/**
 * Input files are written to `<store>/inputs` rather than held in memory: a request that waits for approval
 * may wait minutes, and many may wait at once. The file is removed when its run ends, whatever the outcome,
 * and leftovers of a crash are removed at start-up.
 */
export class InputStaging {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(dir)) rmSync(join(dir, name), { force: true });
  }

  async stage(team: TeamConfig, source: FilesSource, field = 'files'): Promise<StagedInput> {
    const limits = { maxBytes: team.files.maxInputBytes, maxEntries: team.files.maxEntries };
    const path = join(this.dir, `${randomBytes(12).toString('hex')}.tar`);
    try {
      if ('map' in source) {
        const packed = await packFileMap(source.map, limits, ownerOf(team));
        writeFileSync(path, packed.tar, { mode: 0o600 });
        const names = Object.keys(source.map).slice(0, NAMES_SHOWN);
        return { path, entries: packed.entries, bytes: packed.bytes, sha256: createHash('sha256').update(packed.tar).digest('hex'), names };
      }
      const { output, done } = sanitizeTar(source.tar, { limits, owner: ownerOf(team) });
      const { result, sha256 } = await writeChecked(output, done, path);
      return { path, entries: result.entries, bytes: result.bytes, sha256, names: result.files.slice(0, NAMES_SHOWN) };
    } catch (err) {
      rmSync(path, { force: true });
      if (err instanceof ArchiveError) throw archiveProblem(err, field);
      throw err;
    }
  }

  /** Writes an already-checked stream (`done`: the checker's verdict) to a staged file; `bytes` is the tar's size. */
  async stageChecked(output: NodeJS.ReadableStream, done: Promise<{ entries: number; files: string[] }>): Promise<StagedInput> {
    const path = join(this.dir, `${randomBytes(12).toString('hex')}.tar`);
    const { result, bytes, sha256 } = await writeChecked(output, done, path);
    return { path, entries: result.entries, bytes, sha256, names: result.files.slice(0, NAMES_SHOWN) };
  }

  release(input: StagedInput | undefined): void {
    if (input) rmSync(input.path, { force: true });
  }
}

export function checkCollect(patterns: string[] | undefined): string[] | undefined {
  if (patterns === undefined) return undefined;
  try {
    return validateCollectPatterns(patterns);
  } catch (err) {
    if (err instanceof ArchiveError) throw archiveProblem(err, 'collect');
    throw err;
  }
}
