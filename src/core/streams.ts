/** Small waits on Node streams that every writer of the code base needs the same way. */
import type { EventEmitter } from 'node:events';

/**
 * Resolves once a writable can take more ('drain'), or once it never will (one of `ends`: 'error',
 * 'close'): a writer that waited on 'drain' alone would wait forever on a stream that failed.
 */
export function drained(stream: EventEmitter, ends: ('error' | 'close')[] = ['error']): Promise<void> {
  return new Promise<void>((resolve) => {
    const events = ['drain', ...ends];
    const done = () => {
      for (const e of events) stream.off(e, done);
      resolve();
    };
    for (const e of events) stream.once(e, done);
  });
}

/**
 * Chunks as a web stream (what a Hono response body takes): a few read ahead at most; a client that
 * goes away aborts `abort` (stopping the reads under the chunks) and ends the iterator.
 */
export function webStreamOf(
  chunks: AsyncIterator<Uint8Array>,
  abort: AbortController,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const next = await chunks.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      async cancel() {
        abort.abort();
        await chunks.return?.(undefined)?.catch(() => {});
      },
    },
    { highWaterMark: 4 },
  );
}
