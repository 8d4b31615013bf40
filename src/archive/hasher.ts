import { Worker } from 'node:worker_threads';
import { StowageError } from '../errors.js';
import { digestAlgorithm, digestMismatch } from '../image/digest.js';

/** A region of the archive file, in file order. `size` is the blob's byte count (without padding). */
export interface HashRegion {
  start: number;
  length: number;
  blob?: { digest: string; size: number };
}

interface WorkerResult {
  archive?: string;
  digests?: (string | null)[];
  error?: string;
}

/**
 * Hashes an archive while it is written, on a worker thread: the whole file's sha256 in file order, and
 * each blob's digest from the same read-back, so the main thread is left with the network and the writes.
 * Regions without a blob are readable at once; a blob's region as its bytes are reported written.
 */
export class ArchiveHasher {
  private readonly progress: BigInt64Array;
  private readonly signal: Int32Array;
  private readonly worker: Worker;
  private readonly result: Promise<WorkerResult>;

  constructor(
    path: string,
    private readonly regions: HashRegion[],
  ) {
    this.progress = new BigInt64Array(new SharedArrayBuffer(8 * (regions.length + 1)));
    this.signal = new Int32Array(new SharedArrayBuffer(4));
    const segments = regions.map((r) => ({
      start: r.start,
      length: r.length,
      size: r.blob?.size ?? r.length,
      algorithm: r.blob ? digestAlgorithm(r.blob.digest) : null,
    }));
    this.worker = new Worker(new URL('./hash-worker.js', import.meta.url), {
      workerData: { path, segments, progress: this.progress, signal: this.signal },
    });
    this.result = new Promise((resolve, reject) => {
      this.worker.once('message', resolve);
      this.worker.once('error', reject);
      this.worker.once('exit', (code) =>
        reject(new StowageError('INTERNAL', `archive hasher exited (${code})`)),
      );
    });
    this.result.catch(() => {});
  }

  /** Bytes of region `index` now on disk. */
  written(index: number, bytes: number): void {
    Atomics.store(this.progress, index, BigInt(bytes));
    Atomics.add(this.signal, 0, 1);
    Atomics.notify(this.signal, 0);
  }

  abort(): void {
    Atomics.store(this.progress, this.regions.length, 1n);
    Atomics.add(this.signal, 0, 1);
    Atomics.notify(this.signal, 0);
    void this.worker.terminate();
  }

  /**
   * Waits for the worker; throws DIGEST_MISMATCH for the first blob whose bytes do not match its digest.
   * Returns the archive's sha256 (hex).
   */
  async finish(): Promise<string> {
    const r = await this.result;
    void this.worker.terminate();
    if (r.error || !r.archive || !r.digests)
      throw new StowageError('IO', `hashing the archive failed: ${r.error}`);
    for (const [i, region] of this.regions.entries()) {
      const actual = r.digests[i];
      if (region.blob && actual !== region.blob.digest) {
        throw digestMismatch(`blob ${region.blob.digest}`, String(actual), region.blob.digest);
      }
    }
    return r.archive;
  }
}
