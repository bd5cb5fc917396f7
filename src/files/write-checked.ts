import { createHash } from 'node:crypto';
import { createWriteStream, rmSync } from 'node:fs';
import { once } from 'node:events';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * Writes a tar stream that a checker is reading alongside (sanitizeTar's output and `checked`, its verdict)
 * to `path`, hashing and counting it on the way. Both must settle before a failure removes the file, or the
 * writer could recreate it afterwards; the checker's refusal wins over the writer's error.
 */
export async function writeChecked<R>(tar: NodeJS.ReadableStream, checked: Promise<R>, path: string): Promise<{ result: R; bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      cb(null, chunk);
    },
  });
  const file = createWriteStream(path, { mode: 0o600 });
  const [written, check] = await Promise.allSettled([pipeline(tar, meter, file), checked]);
  if (check.status === 'rejected' || written.status === 'rejected') {
    // A destroyed write stream may still be opening its file (open is asynchronous): remove it only once
    // the stream has closed, or the open would recreate it after the removal.
    if (!file.closed) await once(file, 'close');
    rmSync(path, { force: true });
    throw check.status === 'rejected' ? check.reason : (written as PromiseRejectedResult).reason;
  }
  return { result: check.value, bytes, sha256: hash.digest('hex') };
}
