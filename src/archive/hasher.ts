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

/** What an ArchiveHasher computes, and on how many workers. */
export interface HashRoles {
  /** The archive's own sha256 (false: --no-checksum; HashResult.archive is then ''). */
  archive: boolean;
  /**
   * Segments' and taps' digests come on a worker of their own (docker-archive's diff_ids): the same
   * bytes hashed twice would otherwise be one core's work, and sha256 is slow on CPUs without SHA
   * extensions. Without it, one worker does all.
   */
  separateParts?: boolean | undefined;
}

/**
 * Computes an archive's sha256 while it is written, on worker threads that follow the writes in file
 * order and read them back from the page cache, so the main thread is left with the network and the
 * writes. Blob digests are checked by the writers on the bytes as they arrive. A writer may also "tap" a
 * range of the file, to get its sha256 as it is written (docker-archive's uncompressed layers, whose
 * diff_ids are checked this way), on a second worker if asked (HashRoles).
 */
export class ArchiveHasher {
  private readonly progress: BigInt64Array;
  private readonly lengths: BigInt64Array;
  private readonly signals: Int32Array[] = [];
  private readonly workers: Worker[] = [];
  private readonly results: Promise<WorkerResult>[] = [];
  private readonly taps: MessagePort;
  private tapCount = 0;
  private readonly archiveWorker: number | undefined;

  constructor(path: string, segments: HashSegment[], roles: HashRoles = { archive: true }) {
    this.progress = new BigInt64Array(new SharedArrayBuffer(8 * (segments.length + 1)));
    this.lengths = new BigInt64Array(new SharedArrayBuffer(8 * segments.length));
    for (const [i, s] of segments.entries()) this.lengths[i] = BigInt(s.length);
    const { port1, port2 } = new MessageChannel();
    this.taps = port1;
    if (roles.archive && roles.separateParts) {
      this.start(path, segments, { archive: true, parts: false });
      this.start(path, segments, { archive: false, parts: true }, port2);
    } else {
      this.start(path, segments, { archive: roles.archive, parts: true }, port2);
    }
    this.archiveWorker = roles.archive ? 0 : undefined;
  }

  private start(
    path: string,
    segments: HashSegment[],
    roles: { archive: boolean; parts: boolean },
    taps?: MessagePort,
  ): void {
    const signal = new Int32Array(new SharedArrayBuffer(8));
    const worker = new Worker(new URL('./hash-worker.js', import.meta.url), {
      workerData: {
        path,
        segments: segments.map((s) => ({ start: s.start, own: roles.parts && s.own === true })),
        progress: this.progress,
        lengths: this.lengths,
        signal,
        taps,
        archive: roles.archive,
      },
      transferList: taps ? [taps] : [],
    });
    const result = new Promise<WorkerResult>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new StowageError('INTERNAL', `archive hasher exited (${code})`)));
    });
    result.catch(() => {});
    this.signals.push(signal);
    this.workers.push(worker);
    this.results.push(result);
  }

  private wake(): void {
    for (const signal of this.signals) {
      Atomics.add(signal, 0, 1);
      if (Atomics.load(signal, 1) === 1) Atomics.notify(signal, 0);
    }
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
    for (const w of this.workers) void w.terminate();
  }

  /** Waits for the workers; returns the archive's sha256 ('' if not asked for) and the tapped ranges' (hex). */
  async finish(): Promise<HashResult> {
    const results = await Promise.all(this.results);
    this.taps.close();
    for (const w of this.workers) void w.terminate();
    const failed = results.find((r) => r.error);
    if (failed) throw new StowageError('IO', `hashing the archive failed: ${failed.error}`);
    const parts = results[results.length - 1] as WorkerResult;
    const archive = this.archiveWorker === undefined ? '' : (results[this.archiveWorker]?.archive ?? '');
    if (parts.taps?.length !== this.tapCount) throw new StowageError('INTERNAL', 'archive hasher lost a tap');
    return { archive, taps: parts.taps, own: parts.own ?? [] };
  }
}

/**
 * The sha256 (hex) of `length` bytes of a file from `start`, computed by a worker thread reading them
 * in place: checking a large blob of an archive costs the main thread nothing, and several such checks
 * run on several cores.
 */
export async function hashFileRange(
  path: string,
  start: number,
  length: number,
  signal?: AbortSignal,
): Promise<string> {
  const hasher = new ArchiveHasher(path, [{ start, length, own: true }], { archive: false });
  const stop = () => hasher.abort();
  signal?.addEventListener('abort', stop, { once: true });
  try {
    hasher.written(0, length);
    const { own } = await hasher.finish();
    if (signal?.aborted) throw new StowageError('ABORTED', `hashing ${path} was aborted`);
    return own[0] as string;
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}
