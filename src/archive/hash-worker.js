// Computes the sha256 of an archive while it is being written, off the main thread. Two of these run
// per archive: one hashes the archive (job.archive), the other the taps and "own" segments. The writer
// publishes in shared memory how many bytes of each segment are final; this worker follows in file
// order, reading back from the page cache. A segment's length may be open (-1) until the writer
// closes it, for writers that learn sizes as they go.
// Taps are ranges whose own sha256 the writer wants (docker-archive's uncompressed layers). They are
// announced, advanced and closed by messages, and hashed as soon as their bytes are written, ahead of
// the archive hash, which may be held back by a header the writer fills in last. A segment marked
// "own" gets its own sha256 too (a writer that knows its layout up front needs no taps: docker-archive's
// layers when their sizes are known): from the archive hash's reads, or ahead of them, from bytes
// already written while the archive hash waits for earlier ones.
// Plain JavaScript (checked by tsc through JSDoc) so that it runs as a Worker from source and from dist.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';

/**
 * @typedef {{ start: number, own?: boolean }} HashSegment
 * @typedef {{ path: string, segments: HashSegment[], progress: BigInt64Array, lengths: BigInt64Array, signal: Int32Array, taps?: import('node:worker_threads').MessagePort, archive: boolean }} HashJob
 * @typedef {{ start: number, written: number, end: number | undefined, hashed: number, hash: import('node:crypto').Hash }} Tap
 * @typedef {{ type: 'open', at: number } | { type: 'written', at: number } | { type: 'close', at: number }} TapMessage
 */

/** @type {HashJob} */
const job = workerData;
const abortSlot = job.segments.length;
const fd = openSync(job.path, 'r');
const buf = Buffer.allocUnsafe(1 << 20);
const archive = createHash('sha256');
/** @type {Tap[]} */
const taps = [];
/** Taps before this one are fully hashed. */
let nextTap = 0;

function receiveTaps() {
  if (!job.taps) return;
  for (let m = receiveMessageOnPort(job.taps); m; m = receiveMessageOnPort(job.taps)) {
    const msg = /** @type {TapMessage} */ (m.message);
    if (msg.type === 'open') {
      taps.push({
        start: msg.at,
        written: msg.at,
        end: undefined,
        hashed: msg.at,
        hash: createHash('sha256'),
      });
      continue;
    }
    const tap = /** @type {Tap} */ (taps[taps.length - 1]);
    tap.written = msg.at;
    if (msg.type === 'close') tap.end = msg.at;
  }
}

/** Hashes one read's worth of tapped bytes, if any are ready. */
function advanceTaps() {
  receiveTaps();
  for (; nextTap < taps.length; nextTap++) {
    const tap = /** @type {Tap} */ (taps[nextTap]);
    if (tap.hashed < tap.written) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, tap.written - tap.hashed), tap.hashed);
      if (n === 0) throw new Error(`short read from ${job.path}`);
      tap.hash.update(buf.subarray(0, n));
      tap.hashed += n;
      return true;
    }
    if (tap.end === undefined) return false;
  }
  return false;
}

function aborted() {
  return Atomics.load(job.progress, abortSlot) !== 0n;
}

/** Waits for the writer's next signal (slot 0 changes with every call it makes). */
function wait(/** @type {number} */ seen) {
  // Slot 1 tells the writer a wake-up is wanted; it skips the futex call otherwise. A write that lands
  // between the checks before and the wait changes slot 0, so the wait returns at once.
  Atomics.store(job.signal, 1, 1);
  Atomics.wait(job.signal, 0, seen, 1000);
  Atomics.store(job.signal, 1, 0);
}

/** Per segment marked own: its hash, and how many of its bytes it has taken. */
const own = job.segments.map((s) => (s.own ? { hash: createHash('sha256'), hashed: 0 } : undefined));

/**
 * Hashes, on their own, bytes of a later segment that are already written, while the archive hash
 * waits for segment `current`: a layer that arrives early is then read once more for the archive hash
 * only, instead of twice over at the end.
 */
function ownAhead(/** @type {number} */ current) {
  for (let j = current + 1; j < job.segments.length; j++) {
    const o = own[j];
    if (!o) continue;
    const written = Number(Atomics.load(job.progress, j));
    if (o.hashed >= written) continue;
    const seg = /** @type {HashSegment} */ (job.segments[j]);
    const n = readSync(fd, buf, 0, Math.min(buf.length, written - o.hashed), seg.start + o.hashed);
    if (n === 0) throw new Error(`short read from ${job.path}`);
    o.hash.update(buf.subarray(0, n));
    o.hashed += n;
    return true;
  }
  return false;
}

try {
  for (let i = 0; i < job.segments.length; i++) {
    const seg = /** @type {HashSegment} */ (job.segments[i]);
    const o = own[i];
    let hashed = 0;
    for (;;) {
      if (aborted()) throw new Error('aborted');
      const seen = Atomics.load(job.signal, 0);
      if (advanceTaps()) continue;
      const length = Number(Atomics.load(job.lengths, i));
      if (length >= 0 && hashed >= length) break;
      const written = Number(Atomics.load(job.progress, i));
      if (hashed < written && !job.archive && !o) {
        // The archive's hash is the other worker's: this one only waits for the segment to end.
        hashed = written;
      } else if (hashed < written) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, written - hashed), seg.start + hashed);
        if (n === 0) throw new Error(`short read from ${job.path}`);
        const bytes = buf.subarray(0, n);
        if (job.archive) archive.update(bytes);
        // Bytes hashed ahead are not hashed again for the segment's own digest.
        if (o && o.hashed < hashed + n) {
          o.hash.update(bytes.subarray(Math.max(0, o.hashed - hashed)));
          o.hashed = hashed + n;
        }
        hashed += n;
      } else if (!ownAhead(i)) {
        wait(seen);
      }
    }
  }
  // The archive is complete, so every tap has been closed.
  while (advanceTaps()) if (aborted()) throw new Error('aborted');
  parentPort?.postMessage({
    archive: archive.digest('hex'),
    taps: taps.map((t) => t.hash.digest('hex')),
    own: own.flatMap((o) => (o ? [o.hash.digest('hex')] : [])),
  });
} catch (e) {
  parentPort?.postMessage({ error: e instanceof Error ? e.message : String(e) });
} finally {
  closeSync(fd);
  job.taps?.close();
}
