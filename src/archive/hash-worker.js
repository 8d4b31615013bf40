// Computes the sha256 of an archive while it is being written, off the main thread. The writer
// publishes in shared memory how many bytes of each segment are final; this worker follows in file
// order, reading back from the page cache. A segment's length may be open (-1) until the writer
// closes it, for writers that learn sizes as they go.
// Plain JavaScript (checked by tsc through JSDoc) so that it runs as a Worker from source and from dist.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * @typedef {{ start: number }} HashSegment
 * @typedef {{ path: string, segments: HashSegment[], progress: BigInt64Array, lengths: BigInt64Array, signal: Int32Array }} HashJob
 */

/** @type {HashJob} */
const job = workerData;
const abortSlot = job.segments.length;
const fd = openSync(job.path, 'r');
const buf = Buffer.allocUnsafe(1 << 20);
const archive = createHash('sha256');
try {
  for (let i = 0; i < job.segments.length; i++) {
    const seg = /** @type {HashSegment} */ (job.segments[i]);
    let hashed = 0;
    for (;;) {
      if (Atomics.load(job.progress, abortSlot) !== 0n) throw new Error('aborted');
      const seen = Atomics.load(job.signal, 0);
      const length = Number(Atomics.load(job.lengths, i));
      if (length >= 0 && hashed >= length) break;
      const written = Number(Atomics.load(job.progress, i));
      if (hashed < written) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, written - hashed), seg.start + hashed);
        if (n === 0) throw new Error(`short read from ${job.path}`);
        archive.update(buf.subarray(0, n));
        hashed += n;
      } else {
        // Slot 1 tells the writer a wake-up is wanted; it skips the futex call otherwise. A write that
        // lands between the check above and the wait changes slot 0, so the wait returns at once.
        Atomics.store(job.signal, 1, 1);
        Atomics.wait(job.signal, 0, seen, 1000);
        Atomics.store(job.signal, 1, 0);
      }
    }
  }
  parentPort?.postMessage({ archive: archive.digest('hex') });
} catch (e) {
  parentPort?.postMessage({ error: e instanceof Error ? e.message : String(e) });
} finally {
  closeSync(fd);
}
