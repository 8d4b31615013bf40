/**
 * API tokens: kept as sha256 hashes (the token itself is shown once, when made), each with scopes.
 * A presented token is hashed and compared with every stored hash in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiScope } from '../config/stowage.js';

export interface ApiToken {
  name: string;
  sha256: string;
  scopes: ApiScope[];
}

/** A new random token: "stw_" and 43 base64url characters (256 bits). */
export function newToken(): string {
  return `stw_${randomBytes(32).toString('base64url')}`;
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** The token entry a presented token matches, if any; every entry is compared, whatever matched. */
export function findToken(tokens: ApiToken[], presented: string): ApiToken | undefined {
  const hash = Buffer.from(tokenHash(presented), 'hex');
  let found: ApiToken | undefined;
  for (const t of tokens) {
    if (timingSafeEqual(hash, Buffer.from(t.sha256, 'hex')) && !found) found = t;
  }
  return found;
}

/** Whether the token may do what `scope` allows (admin may do everything). */
export function allows(token: ApiToken, scope: ApiScope): boolean {
  return token.scopes.includes('admin') || token.scopes.includes(scope);
}
