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
