/**
 * 429 Too Many Requests on a read: waited out as long as Retry-After asks (seconds or an HTTP date;
 * without one, backoff that doubles from the retry minimum), then asked again. A wait over the cap
 * fails at once: waiting hours helps nobody, and asking again early is what gets a client banned.
 * (5xx and dropped connections are retried below this, by undici's retry interceptor.)
 */
import { StowageError } from '../../errors.js';
import { announceWait, retryAfterMs } from '../waits.js';
import { header, isWrite, type Step } from './chain.js';

/** Longest wait for a registry's rate-limit window; longer, and the request fails (RATE_LIMITED). */
export const MAX_RATE_LIMIT_WAIT_MS = 5 * 60_000;

export interface ThrottleOptions {
  host: string;
  /** 429s answered for one request before its last 429 is returned. */
  maxRetries: number;
  minTimeoutMs: number;
  maxTimeoutMs: number;
  maxWaitMs?: number | undefined;
  /** Waits `ms` (a test's clock); default a timer the request's signal cancels. */
  sleep?: ((ms: number, signal: AbortSignal | undefined, what: string) => Promise<void>) | undefined;
}

export function throttle(o: ThrottleOptions): Step {
  const sleep = o.sleep ?? abortableSleep;
  const cap = o.maxWaitMs ?? MAX_RATE_LIMIT_WAIT_MS;
  return async (req, next) => {
    if (isWrite(req)) return next(req);
    for (let attempt = 1; ; attempt++) {
      const res = await next(req);
      if (res.statusCode !== 429 || attempt > o.maxRetries) return res;
      await res.body.dump();
      const ms = retryAfterMs(header(res, 'retry-after')) ?? backoff(o, attempt);
      if (ms > cap) {
        throw new StowageError(
          'RATE_LIMITED',
          `${o.host} answered ${req.what} with 429 Too Many Requests and asks to wait ${Math.ceil(ms / 1000)} s (Retry-After); try again later, or lower requests-per-second for it`,
          { retryable: false },
        );
      }
      announceWait({
        host: o.host,
        reason: '429',
        attempt: attempt + 1,
        attempts: o.maxRetries + 1,
        delayMs: ms,
      });
      await sleep(ms, req.signal, req.what);
    }
  };
}

function backoff(o: ThrottleOptions, attempt: number): number {
  return Math.min(o.minTimeoutMs * 2 ** (attempt - 1), o.maxTimeoutMs);
}

function abortableSleep(ms: number, signal: AbortSignal | undefined, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // The caller's signal often outlives this wait (a sync's one signal): its listener goes with it.
    const onAbort = () => {
      clearTimeout(timer);
      reject(new StowageError('ABORTED', `${what}: aborted`));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
