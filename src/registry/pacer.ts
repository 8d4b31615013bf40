/**
 * When a registry's next request may go: the registry's own rate limit (RateLimit-Remaining: 0 pauses
 * every request until its reset), then the configured requests-per-second, as slots `1/rate` apart
 * handed out in order. The clock is an option, so that what the pacing holds is tested by counting
 * against a clock the test moves, not by timing a real run.
 */
import { StowageError } from '../errors.js';

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

export class Pacer {
  private nextSlot = 0;
  private pausedUntil = 0;
  private readonly interval: number;

  constructor(
    private readonly opts: {
      host: string;
      requestsPerSecond?: number | undefined;
      /** The longest the registry's own rate limit is waited out; longer fails at once. */
      maxPauseMs: number;
      clock?: Clock | undefined;
    },
  ) {
    this.interval = opts.requestsPerSecond ? 1000 / opts.requestsPerSecond : 0;
  }

  private get clock(): Clock {
    return this.opts.clock ?? realClock;
  }

  /** The registry said its limit is used up for `seconds`: every request waits that long. */
  pauseFor(seconds: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, this.clock.now() + seconds * 1000);
  }

  /** Waits for this request's turn. */
  async turn(): Promise<void> {
    const paused = this.pausedUntil - this.clock.now();
    if (paused > 0) {
      if (paused > this.opts.maxPauseMs) {
        throw new StowageError(
          'RATE_LIMITED',
          `${this.opts.host} says its rate limit is used up for ${Math.ceil(paused / 1000)} s more (RateLimit-Remaining: 0); try again later, or lower requests-per-second for it`,
          { retryable: false },
        );
      }
      await this.clock.sleep(paused);
    }
    if (!this.interval) return;
    const now = this.clock.now();
    const at = Math.max(now, this.nextSlot);
    this.nextSlot = at + this.interval;
    if (at > now) await this.clock.sleep(at - now);
  }
}
