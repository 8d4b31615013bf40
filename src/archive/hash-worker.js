// Hashes an archive being written, off the main thread: the archive's sha256 in file order, and each
// blob's own digest from the same read. The writer publishes how many bytes of each region are on
// disk in shared memory; this worker follows, reading back from the page cache.
// Plain JavaScript (checked by tsc through JSDoc) so that it runs as a Worker from source and from dist.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * @typedef {{ start: number, length: number, size: number, algorithm: string | null }} HashSegment
 * @typedef {{ path: string, segments: HashSegment[], progress: BigInt64Array, signal: Int32Array }} HashJob
 */

/** @type {HashJob} */
const job = workerData;
const abortSlot = job.segments.length;
const fd = openSync(job.path, 'r');
const buf = Buffer.allocUnsafe(1 << 20);
const archive = createHash('sha256');
/** @type {(string | null)[]} */
const digests = [];
try {
  for (let i = 0; i < job.segments.length; i++) {
    const seg = /** @type {HashSegment} */ (job.segments[i]);
    const blobHash = seg.algorithm ? createHash(seg.algorithm) : null;
    let hashed = 0;
    while (hashed < seg.length) {
      if (Atomics.load(job.progress, abortSlot) !== 0n) throw new Error('aborted');
      const seen = Atomics.load(job.signal, 0);
      const written = Number(Atomics.load(job.progress, i));
      // A blob's padding becomes readable with its last byte.
      const available = blobHash ? (written >= seg.size ? seg.length : written) : seg.length;
      if (hashed < available) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, available - hashed), seg.start + hashed);
        if (n === 0) throw new Error(`short read from ${job.path}`);
        const chunk = buf.subarray(0, n);
        archive.update(chunk);
        if (blobHash && hashed < seg.size) blobHash.update(chunk.subarray(0, Math.min(n, seg.size - hashed)));
        hashed += n;
      } else {
        Atomics.wait(job.signal, 0, seen, 1000);
      }
    }
    digests.push(blobHash ? `${seg.algorithm}:${blobHash.digest('hex')}` : null);
  }
  parentPort?.postMessage({ archive: archive.digest('hex'), digests });
} catch (e) {
  parentPort?.postMessage({ error: e instanceof Error ? e.message : String(e) });
} finally {
  closeSync(fd);
}
