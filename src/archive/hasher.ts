import { Worker } from 'node:worker_threads';
import { StowageError } from '../errors.js';

/** A stretch of the archive file, in file order. `length` -1: not known yet (see close()). */
export interface HashSegment {
  start: number;
  length: number;
}

interface WorkerResult {
  archive?: string;
  error?: string;
}

/**
 * Computes an archive's sha256 while it is written, on a worker thread that follows the writes in file
 * order and reads them back from the page cache, so the main thread is left with the network and the
 * writes. Blob digests are checked by the writers on the bytes as they arrive.
 */
export class ArchiveHasher {
  private readonly progress: BigInt64Array;
  private readonly lengths: BigInt64Array;
  private readonly signal: Int32Array;
  private readonly worker: Worker;
  private readonly result: Promise<WorkerResult>;

  constructor(path: string, segments: HashSegment[]) {
    this.progress = new BigInt64Array(new SharedArrayBuffer(8 * (segments.length + 1)));
    this.lengths = new BigInt64Array(new SharedArrayBuffer(8 * segments.length));
    for (const [i, s] of segments.entries()) this.lengths[i] = BigInt(s.length);
    this.signal = new Int32Array(new SharedArrayBuffer(8));
    this.worker = new Worker(new URL('./hash-worker.js', import.meta.url), {
      workerData: {
        path,
        segments: segments.map((s) => ({ start: s.start })),
        progress: this.progress,
        lengths: this.lengths,
        signal: this.signal,
      },
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

  private wake(): void {
    Atomics.add(this.signal, 0, 1);
    if (Atomics.load(this.signal, 1) === 1) Atomics.notify(this.signal, 0);
  }

  /** The first `bytes` of segment `index` are on disk and final. */
  written(index: number, bytes: number): void {
    Atomics.store(this.progress, index, BigInt(bytes));
    this.wake();
  }

  /** Segment `index` (opened with length -1) ends after `length` bytes, all of them final. */
  close(index: number, length: number): void {
    Atomics.store(this.progress, index, BigInt(length));
    Atomics.store(this.lengths, index, BigInt(length));
    this.wake();
  }

  abort(): void {
    Atomics.store(this.progress, this.lengths.length, 1n);
    this.wake();
    void this.worker.terminate();
  }

  /** Waits for the worker; returns the archive's sha256 (hex). */
  async finish(): Promise<string> {
    const r = await this.result;
    void this.worker.terminate();
    if (r.error || !r.archive) throw new StowageError('IO', `hashing the archive failed: ${r.error}`);
    return r.archive;
  }
}
