/**
 * The registry's bearer tokens, as a registry's token service issues them (the Docker token
 * protocol): short-lived, naming what they allow (`repository:NAME:pull`, `registry:catalog:*`), and
 * signed with HMAC-SHA256 under a key of this deployment (derived from its session key, which
 * replicas share), so a token from one deployment is refused by another. Stateless: any replica checks
 * any replica's tokens.
 */
import { createHmac } from 'node:crypto';
import { readClaims, signClaims } from '../core/signed.js';

/** How long an issued token is good for (clients ask again when it runs out). */
export const REGISTRY_TOKEN_TTL_S = 300;

export interface Access {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

interface Claims {
  /** Who it was issued to: an API token's name, or "anonymous". */
  sub: string;
  access: Access[];
  /** Expiry, epoch seconds. */
  exp: number;
  /** Which service it is for (the audience a client asked for). */
  aud: 'stowage';
}

export class RegistryTokens {
  private readonly key: Buffer;

  constructor(
    deploymentKey: Buffer,
    private readonly now: () => number = Date.now,
  ) {
    // A key of its own: a session cookie is never a registry token, nor the other way round.
    this.key = createHmac('sha256', deploymentKey).update('stowage registry tokens v1').digest();
  }

  issue(sub: string, access: Access[]): { token: string; expiresIn: number; issuedAt: string } {
    const claims: Claims = {
      sub,
      access,
      exp: Math.floor(this.now() / 1000) + REGISTRY_TOKEN_TTL_S,
      aud: 'stowage',
    };
    return {
      token: signClaims(this.key, claims),
      expiresIn: REGISTRY_TOKEN_TTL_S,
      issuedAt: new Date(this.now()).toISOString(),
    };
  }

  /** The claims of a token this deployment issued and that has not expired; undefined otherwise. */
  verify(token: string): { sub: string; access: Access[] } | undefined {
    const claims = readClaims<Claims>(this.key, token);
    if (claims?.aud !== 'stowage' || typeof claims.exp !== 'number') return undefined;
    if (claims.exp * 1000 <= this.now() || !Array.isArray(claims.access)) return undefined;
    return { sub: claims.sub, access: claims.access };
  }
}

/** Whether `access` lets one do `action` on `type:name` (a "*" name or action matches any). */
export function grants(access: Access[], type: Access['type'], name: string, action: string): boolean {
  return access.some(
    (a) =>
      a.type === type &&
      (a.name === name || a.name === '*') &&
      (a.actions.includes(action) || a.actions.includes('*')),
  );
}

/**
 * The scopes a client asked for (`scope=repository:team/app:pull,push`, repeatable), read as the
 * token protocol spells them; what is not understood is left out.
 */
export function parseScopes(scopes: string[]): Access[] {
  const out: Access[] = [];
  for (const s of scopes) {
    // The name may hold a colon only in a registry host's port, which served names spell HOST_PORT.
    const m = /^(repository|registry):([^:]+):([a-z*,]+)$/.exec(s.trim());
    if (m) out.push({ type: m[1] as Access['type'], name: m[2]!, actions: m[3]!.split(',') });
  }
  return out;
}
