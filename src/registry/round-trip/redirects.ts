/**
 * Redirects on reads (blob downloads are sent to storage this way), followed here rather than by
 * undici so that every hop is checked against the allow-list, is authorized on its own (credentials
 * never go to another host), and is paced and counted as a request of its own.
 */
import type { OutboundGuard } from '../../auth/authenticator.js';
import { StowageError } from '../../errors.js';
import { type Answer, isWrite, type Step } from './chain.js';

/** Redirects followed for one request, as undici did. */
export const MAX_REDIRECTS = 5;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export interface RedirectOptions {
  host: string;
  guard?: OutboundGuard | undefined;
  max?: number | undefined;
}

export function redirects(o: RedirectOptions): Step {
  const max = o.max ?? MAX_REDIRECTS;
  return async (req, next) => {
    if (isWrite(req)) return next(req);
    const visited: string[] = [];
    let target = req.url;
    for (;;) {
      const res = await next({ ...req, url: target });
      if (!REDIRECTS.has(res.statusCode)) return res;
      await res.body.dump();
      const to = location(res, target, `${o.host} answered ${req.what}`);
      visited.push(target.href);
      if (visited.includes(to.href)) {
        throw new StowageError(
          'REGISTRY',
          `${o.host} redirects ${req.what} in a loop (back to ${to.host}${to.pathname}); the registry or a proxy in front of it is misconfigured`,
        );
      }
      if (visited.length > max) {
        throw new StowageError(
          'REGISTRY',
          `${o.host} redirected ${req.what} more than ${max} times; the registry or a proxy in front of it is misconfigured`,
        );
      }
      checkOutbound(o, to, req.what);
      target = to;
    }
  };
}

/** Where a redirect leads, resolved against the URL that answered it. */
function location(res: Answer, from: URL, answered: string): URL {
  const value = res.headers.location;
  try {
    if (typeof value !== 'string' || !value) throw new Error('no location');
    const next = new URL(value, from);
    if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new Error('not http(s)');
    return next;
  } catch {
    throw new StowageError(
      'REGISTRY',
      `${answered} with a redirect (HTTP ${res.statusCode}) that names no usable location`,
    );
  }
}

/** Refuses a host outside what the guard allows (the service's allow-lists). */
export function checkOutbound(o: RedirectOptions, url: URL, what: string): void {
  const refused = o.guard?.(url, 'redirect');
  if (refused) {
    throw new StowageError('BLOCKED', `${o.host} sends ${what} to ${url.host}, which ${refused}`);
  }
}
