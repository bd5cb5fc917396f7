import { createReadStream, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, type ReadStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { writeChecked } from './write-checked.js';

export interface ArtifactInfo {
  execId: string;
  team: string;
  /** Size of the stored tar. */
  bytes: number;
  /** Regular files (and links) in it. */
  files: number;
  /** The first names, for display. */
  names: string[];
  sha256: string;
  createdAt: number;
  expiresAt: number;
}

const EXEC_ID = /^ex_[0-9a-f-]{36}$/;
const NAMES_SHOWN = 100;

/**
 * Collected artifacts on the host's disk, in the store directory: one tar per execution and a JSON file
 * describing it, per team. A tar is written to a temporary name while it streams in and renamed only when
 * complete and checked, so a reader never sees half of one. Bounded per team by age (ttl) and total size
 * (oldest removed first). Downloads stream the file; nothing is held in memory whole.
 */
export class ArtifactStore {
  constructor(
    private readonly dir: string,
    private readonly now: () => number = Date.now,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private teamDir(team: string): string {
    return join(this.dir, team);
  }

  /**
   * Stores a (checked) tar stream. `checked` settles when the checker has seen the whole archive: when it
   * rejects, nothing is kept and the rejection is thrown.
   */
  async save(
    team: string,
    execId: string,
    tar: Readable,
    checked: Promise<{ files: string[] }>,
    bounds: { ttlMs: number; maxStoreBytes: number },
  ): Promise<ArtifactInfo> {
    if (!EXEC_ID.test(execId)) throw new Error(`bad execution id ${execId}`);
    const dir = this.teamDir(team);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `.${execId}.${randomBytes(4).toString('hex')}.part`);
    try {
      const { result, bytes, sha256 } = await writeChecked(tar, checked, tmp);
      const now = this.now();
      const info: ArtifactInfo = {
        execId,
        team,
        bytes,
        files: result.files.length,
        names: result.files.slice(0, NAMES_SHOWN),
        sha256,
        createdAt: now,
        expiresAt: now + bounds.ttlMs,
      };
      renameSync(tmp, join(dir, `${execId}.tar`));
      writeFileSync(join(dir, `${execId}.json`), JSON.stringify(info), { mode: 0o600 });
      this.enforce(team, bounds.maxStoreBytes, execId);
      return info;
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
  }

  info(team: string | null, execId: string): ArtifactInfo | undefined {
    if (!EXEC_ID.test(execId)) return undefined;
    for (const t of team === null ? this.teams() : [team]) {
      try {
        const info = JSON.parse(readFileSync(join(this.teamDir(t), `${execId}.json`), 'utf8')) as ArtifactInfo;
        if (info.expiresAt <= this.now()) return undefined;
        return info;
      } catch {
        // not in this team
      }
    }
    return undefined;
  }

  /** The tar of an execution the caller may see, as a stream; undefined when there is none (or it expired). */
  open(team: string | null, execId: string): { info: ArtifactInfo; stream: ReadStream } | undefined {
    const info = this.info(team, execId);
    if (!info) return undefined;
    try {
      return { info, stream: createReadStream(join(this.teamDir(info.team), `${execId}.tar`)) };
    } catch {
      return undefined;
    }
  }

  private teams(): string[] {
    try {
      return readdirSync(this.dir, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return [];
    }
  }

  private list(team: string): ArtifactInfo[] {
    const dir = this.teamDir(team);
    const out: ArtifactInfo[] = [];
    for (const name of readdirSync(dir)) {
      if (!name.endsWith('.json')) continue;
      try {
        out.push(JSON.parse(readFileSync(join(dir, name), 'utf8')) as ArtifactInfo);
      } catch {
        // a half-written description: its tar goes with the next sweep of leftovers
      }
    }
    return out.sort((a, b) => a.createdAt - b.createdAt);
  }

  private remove(team: string, execId: string): void {
    rmSync(join(this.teamDir(team), `${execId}.json`), { force: true });
    rmSync(join(this.teamDir(team), `${execId}.tar`), { force: true });
  }

  /** Oldest first until the team's artifacts fit; the one just stored is kept (it was checked against its own limit). */
  private enforce(team: string, maxStoreBytes: number, keep: string): void {
    const all = this.list(team);
    let total = all.reduce((n, a) => n + a.bytes, 0);
    for (const a of all) {
      if (total <= maxStoreBytes) break;
      if (a.execId === keep) continue;
      this.remove(team, a.execId);
      total -= a.bytes;
    }
  }

  /** Removes expired artifacts and leftovers of interrupted writes; returns how many artifacts went. */
  sweep(): number {
    const now = this.now();
    let removed = 0;
    for (const team of this.teams()) {
      const dir = this.teamDir(team);
      for (const a of this.list(team)) {
        if (a.expiresAt <= now) {
          this.remove(team, a.execId);
          removed++;
        }
      }
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        // A .part older than an hour belongs to a write that died with its process.
        if (name.endsWith('.part') && statSync(path).mtimeMs < now - 3_600_000) rmSync(path, { force: true });
        // A tar without its description (the description is written right after the rename) is a leftover.
        if (name.endsWith('.tar') && statSync(path).mtimeMs < now - 60_000 && !readdirSync(dir).includes(name.replace(/\.tar$/, '.json'))) rmSync(path, { force: true });
      }
    }
    return removed;
  }
}
