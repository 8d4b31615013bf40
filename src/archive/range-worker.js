// Hashes ranges of files on request, for as long as its pool (hasher.ts, hashFileRange) keeps it: a
// worker started once serves every in-place blob check of a run, instead of one worker started (about
// 30 ms of a core) for each blob. One request at a time: {id, path, start, length} in, {id, hex} or
// {id, error} out.
// Plain JavaScript (checked by tsc through JSDoc) so that it runs as a Worker from source and from dist.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

/** @typedef {{ id: number, path: string, start: number, length: number }} RangeJob */

const buf = Buffer.allocUnsafe(1 << 20);

parentPort?.on('message', (/** @type {RangeJob} */ job) => {
  /** @type {number | undefined} */
  let fd;
  try {
    fd = openSync(job.path, 'r');
    const hash = createHash('sha256');
    for (let done = 0; done < job.length; ) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, job.length - done), job.start + done);
      if (n === 0) throw new Error(`the file ends ${job.length - done} bytes early`);
      hash.update(buf.subarray(0, n));
      done += n;
    }
    parentPort?.postMessage({ id: job.id, hex: hash.digest('hex') });
  } catch (e) {
    parentPort?.postMessage({ id: job.id, error: e instanceof Error ? e.message : String(e) });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
});
