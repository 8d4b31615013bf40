/**
 * Waits on a registry said aloud: a dropped connection or a 5xx is retried with backoff, and a 429 is
 * waited out, which can be seconds of silence before either success or the error. Each wait is
 * published on a diagnostics channel (nothing is built when no one listens), so the CLI can say what
 * it waits for and when it tries again, and a wrapper reading JSON progress can show it too.
 */
import { channel } from 'node:diagnostics_channel';
import type { Dispatcher } from 'undici';

export const REGISTRY_WAITS_CHANNEL = 'stowage:registry:wait';

export interface RegistryWait {
  host: string;
  /** What failed: an error code (ECONNREFUSED) or an HTTP status (503, 429). */
  reason: string;
  /** The try that comes after the wait (2 = the first retry), and how many there may be in all. */
  attempt: number;
  attempts: number;
  delayMs: number;
}

const waits = channel(REGISTRY_WAITS_CHANNEL);

export function announceWait(w: RegistryWait): void {
  if (waits.hasSubscribers) waits.publish(w);
}

/**
 * Retry-After as milliseconds from now (seconds or an HTTP date); undefined when absent or unreadable.
 * Both the 429 waits and the 5xx retries read it this way.
 */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (value && /^\d+$/.test(value)) return Number(value) * 1000;
  if (value && Number.isFinite(Date.parse(value))) return Math.max(0, Date.parse(value) - now);
  return undefined;
}

/** How a wait reads for a person: "127.0.0.1:5000: connection refused; trying again in 2 s (2 of 6)". */
export function describeWait(w: RegistryWait): string {
  const reasons: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ECONNRESET: 'connection reset',
    ENOTFOUND: 'host not found',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    EPIPE: 'connection closed',
    UND_ERR_SOCKET: 'connection closed',
    '429': 'answered 429 Too Many Requests',
  };
  const why = reasons[w.reason] ?? (/^\d+$/.test(w.reason) ? `answered ${w.reason}` : w.reason);
  const s = w.delayMs / 1000;
  const when = s < 10 ? s.toFixed(1) : String(Math.round(s));
  return `${w.host}: ${why}; trying again in ${when} s (${w.attempt} of ${w.attempts})`;
}

type RetryState = {
  state: { counter: number };
  opts: Dispatcher.DispatchOptions & { retryOptions?: RetryFacts };
};
interface RetryFacts {
  maxRetries: number;
  minTimeout: number;
  maxTimeout: number;
  timeoutFactor: number;
  statusCodes: number[];
  errorCodes: string[];
  methods: string[];
}

/**
 * undici's retry decision (the interceptor's own options: codes, methods, statuses, doubling backoff
 * from minTimeout, Retry-After honoured up to maxTimeout), with each wait announced before it starts.
 */
export function announcedRetry(host: string) {
  return (err: Error, { state, opts }: RetryState, cb: (err?: Error | null) => void): void => {
    const r = opts.retryOptions!;
    const e = err as Error & { code?: string; statusCode?: number; headers?: Record<string, string> };
    const retryable =
      (!e.code || e.code === 'UND_ERR_REQ_RETRY' || r.errorCodes.includes(e.code)) &&
      r.methods.includes(String(opts.method)) &&
      (e.statusCode == null || r.statusCodes.includes(e.statusCode)) &&
      state.counter <= r.maxRetries;
    if (!retryable) {
      cb(err);
      return;
    }
    const after = retryAfterMs(e.headers?.['retry-after']);
    const delayMs =
      after !== undefined && after > 0
        ? Math.min(after, r.maxTimeout)
        : Math.min(r.minTimeout * r.timeoutFactor ** (state.counter - 1), r.maxTimeout);
    announceWait({
      host,
      reason: e.statusCode != null ? String(e.statusCode) : (e.code ?? 'error'),
      attempt: state.counter + 1,
      attempts: r.maxRetries + 1,
      delayMs,
    });
    setTimeout(() => cb(null), delayMs);
  };
}
