/**
 * Stateless signed tokens: claims as base64url JSON, a dot, and their HMAC-SHA256 under a key. Web
 * console sessions and the registry's bearer tokens are both this; each checks its own claims.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export function signClaims(key: Buffer, claims: object): string {
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `${body}.${mac(key, body)}`;
}

/** The claims of a value signed with `key`, or undefined when it is not one (in constant time). */
export function readClaims<T>(key: Buffer, value: string): T | undefined {
  const [body, sig, extra] = value.split('.');
  if (!body || !sig || extra !== undefined) return undefined;
  const want = Buffer.from(mac(key, body));
  const got = Buffer.from(sig);
  if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as unknown;
    return typeof claims === 'object' && claims !== null ? (claims as T) : undefined;
  } catch {
    return undefined;
  }
}

function mac(key: Buffer, body: string): string {
  return createHmac('sha256', key).update(body).digest('base64url');
}
