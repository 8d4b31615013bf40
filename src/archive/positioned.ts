/**
 * What the archive writers that know their layout up front share: blobs fetched several at a time, each
 * written straight to its place in the file in large batches.
 */
import type { FileHandle } from 'node:fs/promises';
import type { SyncAhead } from './atomic.js';

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

/**
 * Writes a stream of chunks at consecutive offsets from `start`: gathered into batches of WRITE_BATCH
 * and written with one writev each, with early writeback. `onFlush` learns how many bytes from `start` are
 * on disk after each write.
 */
export class PositionedWriter {
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private flushed = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly start: number,
    private readonly writeback: SyncAhead,
    private readonly onFlush: (written: number) => void,
  ) {}

  /** Bytes taken so far, on disk or batched. */
  get bytes(): number {
    return this.flushed + this.batchBytes;
  }

  /** Takes a chunk (without copying it); true when a write was made. */
  async push(chunk: Uint8Array): Promise<boolean> {
    this.batch.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.batchBytes += chunk.byteLength;
    if (this.batchBytes < WRITE_BATCH) return false;
    await this.flush();
    return true;
  }

  async flush(): Promise<void> {
    if (this.batchBytes === 0) return;
    const batch = this.batch;
    const n = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    await this.fh.writev(batch, this.start + this.flushed);
    this.flushed += n;
    this.writeback.wrote(n);
    this.onFlush(this.flushed);
  }
}
