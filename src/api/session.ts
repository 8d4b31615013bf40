/**
 * Browser sessions for the web console (issue 23): a person signs in with an API token once, and the
 * browser then holds a session cookie instead of the token. The cookie is stateless and signed
 * (HMAC-SHA256 with the server's session key), so replicas sharing the key accept each other's
 * sessions: it names the token, a prefix of the token's hash (a token rotated in stowage.toml ends its
 * sessions), when it expires, and the session's CSRF secret. Requests that change something with a
 * session must carry that secret (a form field or the X-CSRF-Token header) and, when the browser
 * says where they come from, come from this origin; with SameSite=Strict that is two locks.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readClaims, signClaims } from '../core/signed.js';
import type { ApiToken } from './auth.js';

export const SESSION_COOKIE = 'stowage_session';
/** How long a session lasts without signing in again. */
export const SESSION_TTL_MS = 12 * 3600_000;

interface Claims {
  /** The token's name. */
  n: string;
  /** The first 16 hex digits of the token's sha256. */
  h: string;
  /** Expiry, epoch ms. */
  e: number;
  /** The CSRF secret. */
  c: string;
}

export interface Session {
  token: ApiToken;
  csrf: string;
  expires: number;
}

export class Sessions {
  constructor(
    private readonly key: Buffer,
    private readonly now: () => number = Date.now,
  ) {}

  /** A new session for a token: the cookie's value and its CSRF secret. */
  issue(token: ApiToken): { value: string; csrf: string; expires: number } {
    const claims: Claims = {
      n: token.name,
      h: token.sha256.slice(0, 16),
      e: this.now() + SESSION_TTL_MS,
      c: randomBytes(18).toString('base64url'),
    };
    return { value: signClaims(this.key, claims), csrf: claims.c, expires: claims.e };
  }

  /** The session a cookie value holds, if its signature is ours, it has not expired and its token is still configured. */
  read(value: string | undefined, tokens: ApiToken[]): Session | undefined {
    const claims = value ? readClaims<Claims>(this.key, value) : undefined;
    if (!claims || typeof claims.e !== 'number' || claims.e <= this.now()) return undefined;
    const token = tokens.find((t) => t.name === claims.n && t.sha256.slice(0, 16) === claims.h);
    return token ? { token, csrf: claims.c, expires: claims.e } : undefined;
  }
}

/** Whether a presented CSRF secret is the session's (constant time). */
export function csrfMatches(session: Session, presented: string | undefined): boolean {
  if (!presented) return false;
  const a = Buffer.from(session.csrf);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}
