/**
 * Pacing: every attempt waits its turn (the requests-per-second limit, and a pause the registry asked
 * for), and every answer's rate-limit headers (RateLimit-Remaining / RateLimit-Reset, as Docker Hub and
 * the IETF draft spell them) are read: none left means no request to this registry until the window
 * resets.
 */
import type { Pacer } from '../pacer.js';
import { type Answer, header, type Step } from './chain.js';

export function pace(pacer: Pick<Pacer, 'turn' | 'pauseFor'>): Step {
  return async (req, next) => {
    await pacer.turn();
    const res = await next(req);
    const wait = exhaustedFor(res);
    if (wait !== undefined) pacer.pauseFor(wait);
    return res;
  };
}

/** Seconds to hold off when the answer says no requests are left; undefined while some are. */
export function exhaustedFor(res: Answer): number | undefined {
  const remaining = header(res, 'ratelimit-remaining');
  if (remaining === undefined || Number.parseInt(remaining, 10) !== 0) return undefined;
  const seconds = (v: string | undefined) => {
    const n = v === undefined ? Number.NaN : Number.parseInt(v, 10);
    return Number.isFinite(n) && n >= 0 ? n : undefined;
  };
  // Reset in seconds; else Retry-After; else the window (";w=SECONDS") the limit counts over.
  return (
    seconds(header(res, 'ratelimit-reset')) ??
    seconds(header(res, 'retry-after')) ??
    seconds(/;\s*w=(\d+)/.exec(remaining)?.[1]) ??
    60
  );
}
