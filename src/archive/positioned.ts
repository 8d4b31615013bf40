/**
 * What the archive writers share: blobs fetched several at a time (every writer), each written straight
 * to its place in the file in large batches (the writers that know their layout up front).
 */
import type { FileHandle } from 'node:fs/promises';
import type { SyncAhead } from '../core/atomic.js';

/** Bytes per write. */
export const WRITE_BATCH = 1 << 20;

/**
 * Runs `task` over `items`, `concurrency` at a time, in order. The first failure aborts `controller` (so
 * that the tasks in flight stop), ends the queue, and is the error thrown once every task has settled.
 */
export async function runQueue<T>(
  items: readonly T[],
  concurrency: number,
  controller: AbortController,
  task: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  let firstError: unknown;
  const worker = async () => {
    while (next < items.length && !failed) {
      try {
        await task(items[next++]!);
      } catch (e) {
        if (!failed) {
          failed = true;
          firstError = e;
        }
        controller.abort();
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  if (failed) throw firstError;
}

/** Batches written ahead of the stream: the reader goes on while up to this many are in flight. */
const WRITES_IN_FLIGHT = 2;

/**
 * Writes a stream of chunks at consecutive offsets from `start`: gathered into batches of WRITE_BATCH
 * and written with one writev each, in order, with early writeback. Writing does not hold up the stream
 * until WRITES_IN_FLIGHT batches are on their way, so the network, the decompressor and the disk work at
 * once. `onFlush` learns how many bytes from `start` are on disk after each write.
 */
export class PositionedWriter {
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private queued = 0;
  private inFlight = 0;
  private chain: Promise<void> = Promise.resolve();
  private failed: unknown;

  constructor(
    private readonly fh: FileHandle,
    private readonly start: number,
    private readonly writeback: SyncAhead,
    private readonly onFlush: (written: number) => void,
  ) {}

  /** Bytes taken so far, on disk, on their way, or batched. */
  get bytes(): number {
    return this.queued + this.batchBytes;
  }

  /** Takes a chunk (without copying it); true when a batch was sent. */
  async push(chunk: Uint8Array): Promise<boolean> {
    this.batch.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.batchBytes += chunk.byteLength;
    if (this.batchBytes < WRITE_BATCH) return false;
    this.send();
    if (this.inFlight >= WRITES_IN_FLIGHT) await this.chain;
    if (this.failed) throw this.failed;
    return true;
  }

  /** Sends what is batched and waits until everything is on disk. */
  async flush(): Promise<void> {
    this.send();
    await this.chain;
    if (this.failed) throw this.failed;
  }

  private send(): void {
    if (this.batchBytes === 0) return;
    const batch = this.batch;
    const n = this.batchBytes;
    const at = this.start + this.queued;
    this.batch = [];
    this.batchBytes = 0;
    this.queued += n;
    this.inFlight++;
    this.chain = this.chain.then(async () => {
      try {
        if (this.failed) return;
        await this.fh.writev(batch, at);
        this.writeback.wrote(n);
        this.onFlush(at + n - this.start);
      } catch (e) {
        this.failed ??= e;
      } finally {
        this.inFlight--;
      }
    });
  }
}
