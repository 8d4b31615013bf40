/**
 * The stall rule at work on a response body: cut a transfer that moves too slowly, so that the caller
 * can resume it (see StallRule).
 */
import type { StallRule } from './http.js';

/** A body that moved too slowly for the stall rule. */
export class StallError extends Error {}

/**
 * Passes a body's chunks on, failing with StallError (and cutting the request) when fewer than the
 * rule's bytes arrive over its window. Only time spent waiting on the registry counts: while the
 * consumer holds a chunk (a slow disk), the clock stops, so back-pressure is never taken for a stall.
 *
 * One timer serves the whole transfer, re-armed once a window at most: a body arrives in thousands of
 * 64 KiB chunks, and a timer set and cleared (and a promise raced) for each of them cost about 3% of a
 * copy's CPU. A stall the timer finds is ended by cutting the request: the body (undici's, whose request
 * `cut` aborts) then fails its pending read, and StallError is what the caller sees.
 */
export async function* watchStalls(
  body: AsyncIterable<Uint8Array>,
  rule: StallRule,
  cut: AbortController,
): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  // A stall cuts the request; when the timer finds it, that ends the body's pending read with an error.
  const window = new StallWindow(rule, (err) => cut.abort(err));
  let done = false;
  try {
    for (;;) {
      window.waiting();
      let r: IteratorResult<Uint8Array>;
      try {
        r = await it.next();
      } catch (e) {
        throw window.error ?? e;
      }
      if (r.done) {
        done = true;
        return;
      }
      window.arrived(r.value.byteLength);
      if (window.error) throw window.error;
      yield r.value;
    }
  } finally {
    window.stop();
    // Given up early (an error, or the consumer stopped reading): the request must not linger.
    if (!done && !cut.signal.aborted) cut.abort();
  }
}

/**
 * The bytes and the waiting time of the current window, judged when a chunk arrives and when the timer
 * fires; a stall sets `error` and calls `onStall` once.
 */
class StallWindow {
  error: StallError | undefined;
  private waited = 0;
  private got = 0;
  private since: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly minBytes: number;

  constructor(
    private readonly rule: StallRule,
    private readonly onStall: (err: StallError) => void,
  ) {
    this.minBytes = (rule.minBytesPerSecond * rule.windowMs) / 1000;
    this.arm(rule.windowMs);
  }

  waiting(): void {
    this.since = performance.now();
  }

  arrived(bytes: number): void {
    this.stopWaiting();
    this.got += bytes;
    this.judge();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private stopWaiting(): void {
    if (this.since !== undefined) this.waited += performance.now() - this.since;
    this.since = undefined;
  }

  /** At the window's end: too few bytes is a stall, else a new window begins. */
  private judge(): void {
    if (this.waited < this.rule.windowMs || this.error) return;
    if (this.got < this.minBytes) {
      this.error = new StallError(
        `${this.got} bytes in ${Math.round(this.waited / 1000)} s, under the low-speed limit of ${this.rule.minBytesPerSecond} bytes/s over ${this.rule.windowMs / 1000} s`,
      );
      this.onStall(this.error);
      return;
    }
    this.waited = 0;
    this.got = 0;
  }

  private arm(ms: number): void {
    // A live timer would hold the process open: stop() clears it whichever way the body ends.
    this.timer = setTimeout(() => this.tick(), Math.max(1, ms));
  }

  private tick(): void {
    // The wait under way counts up to now, and goes on from here.
    if (this.since !== undefined) {
      this.stopWaiting();
      this.waiting();
    }
    this.judge();
    if (!this.error) this.arm(this.rule.windowMs - this.waited);
  }
}
