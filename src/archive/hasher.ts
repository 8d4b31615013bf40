import { availableParallelism } from 'node:os';
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

interface RangeJob {
  id: number;
  path: string;
  start: number;
  length: number;
  signal?: AbortSignal | undefined;
  resolve(hex: string): void;
  reject(e: Error): void;
}

/**
 * Workers that hash ranges of files on request (range-worker.js), one per core at most, started as the
 * first checks come and kept for the next: a run that checks twenty blobs in place starts two workers,
 * not twenty. Waiting checks go largest first, so the longest one does not start last and hold up the
 * end. An idle worker does not keep the process alive.
 */
class RangeHashPool {
  private readonly idle: Worker[] = [];
  private readonly queue: RangeJob[] = [];
  private readonly retiring = new Map<Worker, NodeJS.Timeout>();
  private started = 0;
  private nextId = 0;

  constructor(private readonly max: number) {}

  hash(path: string, start: number, length: number, signal?: AbortSignal): Promise<string> {
    return new Promise((resolve, reject) => {
      const job = { id: this.nextId++, path, start, length, signal, resolve, reject };
      const at = this.queue.findIndex((j) => j.length < length);
      this.queue.splice(at < 0 ? this.queue.length : at, 0, job);
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const worker = this.idle.pop() ?? (this.started < this.max ? this.spawn() : undefined);
      if (!worker) return;
      clearTimeout(this.retiring.get(worker));
      this.retiring.delete(worker);
      this.run(worker, this.queue.shift() as RangeJob);
    }
  }

  /**
   * Back among the idle, not keeping the process alive, and gone after IDLE_MS unused: a long-lived
   * service keeps no threads it does not use.
   */
  private release(worker: Worker): void {
    worker.unref();
    this.idle.push(worker);
    const timer = setTimeout(() => {
      const at = this.idle.indexOf(worker);
      if (at < 0) return;
      this.idle.splice(at, 1);
      this.retiring.delete(worker);
      this.started--;
      void worker.terminate();
    }, IDLE_MS);
    timer.unref();
    this.retiring.set(worker, timer);
  }

  private spawn(): Worker {
    this.started++;
    return new Worker(new URL('./range-worker.js', import.meta.url));
  }

  private run(worker: Worker, job: RangeJob): void {
    const aborted = () => new StowageError('ABORTED', `hashing ${job.path} was aborted`);
    if (job.signal?.aborted) {
      this.release(worker);
      job.reject(aborted());
      return;
    }
    const done = (fn: () => void, keep: boolean) => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
      job.signal?.removeEventListener('abort', onAbort);
      if (keep) this.release(worker);
      else this.started--;
      fn();
      this.pump();
    };
    const onMessage = (r: { id: number; hex?: string; error?: string }) =>
      done(() => {
        if (r.error !== undefined || r.id !== job.id || !r.hex) {
          job.reject(new StowageError('IO', `hashing ${job.path} failed: ${r.error ?? 'no digest'}`));
        } else job.resolve(r.hex);
      }, true);
    const onError = (e: Error) =>
      done(() => job.reject(new StowageError('IO', `hashing ${job.path} failed: ${e.message}`)), false);
    const onExit = (code: number) =>
      done(
        () =>
          job.reject(
            job.signal?.aborted ? aborted() : new StowageError('INTERNAL', `a hash worker exited (${code})`),
          ),
        false,
      );
    // A check in flight keeps the process alive; an abort ends it with the worker (it hashes in one go).
    const onAbort = () => void worker.terminate();
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
    job.signal?.addEventListener('abort', onAbort, { once: true });
    worker.ref();
    worker.postMessage({ id: job.id, path: job.path, start: job.start, length: job.length });
  }
}

/** How long an idle range-hash worker is kept for the next check. */
const IDLE_MS = 10_000;

let rangePool: RangeHashPool | undefined;

/**
 * The sha256 (hex) of `length` bytes of a file from `start`, computed by a worker thread reading them
 * in place: checking a large blob of an archive costs the main thread nothing, and several such checks
 * run on several cores (RangeHashPool).
 */
export function hashFileRange(
  path: string,
  start: number,
  length: number,
  signal?: AbortSignal,
): Promise<string> {
  rangePool ??= new RangeHashPool(Math.max(1, availableParallelism()));
  return rangePool.hash(path, start, length, signal);
}
