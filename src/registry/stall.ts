/**
 * The stall rule at work on a response body: cut a transfer that moves too slowly, so that the caller
 * can resume it (see StallRule).
 */
import type { StallRule } from './http.js';

/** A body that moved too slowly for the stall rule. */
export class StallError extends Error {}

const STALLED = Symbol('stalled');

/**
 * Passes a body's chunks on, failing with StallError (and cutting the request) when fewer than the
 * rule's bytes arrive over its window. Only time spent waiting on the registry counts: while the
 * consumer holds a chunk (a slow disk), the clock stops, so back-pressure is never taken for a stall.
 */
export async function* watchStalls(
  body: AsyncIterable<Uint8Array>,
  rule: StallRule,
  cut: AbortController,
): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  const minBytes = (rule.minBytesPerSecond * rule.windowMs) / 1000;
  let waited = 0;
  let got = 0;
  let pending: Promise<IteratorResult<Uint8Array>> | undefined;
  let done = false;
  const check = () => {
    if (waited < rule.windowMs) return;
    if (got < minBytes) {
      const err = new StallError(
        `${got} bytes in ${Math.round(waited / 1000)} s, under the low-speed limit of ${rule.minBytesPerSecond} bytes/s over ${rule.windowMs / 1000} s`,
      );
      pending?.catch(() => {});
      cut.abort(err);
      throw err;
    }
    waited = 0;
    got = 0;
  };
  try {
    for (;;) {
      pending ??= it.next();
      const started = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<typeof STALLED>((r) => {
        timer = setTimeout(r, Math.max(0, rule.windowMs - waited), STALLED);
      });
      let r: IteratorResult<Uint8Array> | typeof STALLED;
      try {
        r = await Promise.race([pending, timeout]);
      } finally {
        // Also when the body fails: a live timer would hold the process open for the rest of the window.
        clearTimeout(timer);
      }
      waited += performance.now() - started;
      if (r === STALLED) {
        check();
        continue;
      }
      pending = undefined;
      if (r.done) {
        done = true;
        return;
      }
      got += r.value.byteLength;
      check();
      yield r.value;
    }
  } finally {
    // Given up early (an error, or the consumer stopped reading): the request must not linger.
    if (!done && !cut.signal.aborted) cut.abort();
  }
}
