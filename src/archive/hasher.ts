import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { StowageError } from '../errors.js';

/** A stretch of the archive file, in file order. `length` -1: not known yet (see close()). */
export interface HashSegment {
  start: number;
  length: number;
  /** Also hash this segment on its own (its sha256 is in HashResult.own). */
  own?: boolean;
}

interface WorkerResult {
  archive?: string;
  taps?: string[];
  own?: string[];
  error?: string;
}

export interface HashResult {
  /** sha256 (hex) of the whole archive. */
  archive: string;
  /** sha256 (hex) of each tapped range, in the order tap() was called. */
  taps: string[];
  /** sha256 (hex) of each segment marked `own`, in file order. */
  own: string[];
}

/**
 * Computes an archive's sha256 while it is written, on a worker thread that follows the writes in file
 * order and reads them back from the page cache, so the main thread is left with the network and the
 * writes. Blob digests are checked by the writers on the bytes as they arrive. A writer may also "tap" a
 * range of the file, to get its sha256 as it is written (docker-archive's uncompressed layers, whose
 * diff_ids are checked this way).
 */
export class ArchiveHasher {
  private readonly progress: BigInt64Array;
  private readonly lengths: BigInt64Array;
  private readonly signal: Int32Array;
  private readonly worker: Worker;
  private readonly result: Promise<WorkerResult>;
  private readonly taps: MessagePort;
  private tapCount = 0;

  constructor(path: string, segments: HashSegment[]) {
    this.progress = new BigInt64Array(new SharedArrayBuffer(8 * (segments.length + 1)));
    this.lengths = new BigInt64Array(new SharedArrayBuffer(8 * segments.length));
    for (const [i, s] of segments.entries()) this.lengths[i] = BigInt(s.length);
    this.signal = new Int32Array(new SharedArrayBuffer(8));
    const { port1, port2 } = new MessageChannel();
    this.taps = port1;
    this.worker = new Worker(new URL('./hash-worker.js', import.meta.url), {
      workerData: {
        path,
        segments: segments.map((s) => ({ start: s.start, own: s.own === true })),
        progress: this.progress,
        lengths: this.lengths,
        signal: this.signal,
        taps: port2,
      },
      transferList: [port2],
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

  /** Starts a tapped range at file offset `start`; one tap is open at a time. */
  openTap(start: number): void {
    this.taps.postMessage({ type: 'open', at: start });
    this.tapCount++;
  }

  /** The open tap's bytes before file offset `end` are on disk and final. */
  tapWritten(end: number): void {
    this.taps.postMessage({ type: 'written', at: end });
    this.wake();
  }

  /** The open tap ends at file offset `end`, all of it final. */
  closeTap(end: number): void {
    this.taps.postMessage({ type: 'close', at: end });
    this.wake();
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
    this.taps.close();
    void this.worker.terminate();
  }

  /** Waits for the worker; returns the archive's sha256 and the tapped ranges' (hex). */
  async finish(): Promise<HashResult> {
    const r = await this.result;
    this.taps.close();
    void this.worker.terminate();
    if (r.error || !r.archive) throw new StowageError('IO', `hashing the archive failed: ${r.error}`);
    if (r.taps?.length !== this.tapCount) throw new StowageError('INTERNAL', 'archive hasher lost a tap');
    return { archive: r.archive, taps: r.taps, own: r.own ?? [] };
  }
}
