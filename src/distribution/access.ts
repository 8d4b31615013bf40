/**
 * Who is asking, as a registry reads it: a bearer token this deployment issued (what it grants), an
 * API token sent as the password of Basic auth (any user name, as `podman login` sends it) or as a
 * bearer token (a CI job's plain curl), or nobody. An API token may pull when it has the read scope;
 * nobody may pull only where `[server.registry] anonymous-pull = true`.
 */
import { type ApiToken, allows, findToken } from '../api/auth.js';
import { type Access, grants, type RegistryTokens } from './tokens.js';

export type Caller =
  | { kind: 'anonymous' }
  /** Credentials were presented and are not good (a wrong token, an expired or foreign bearer). */
  | { kind: 'invalid' }
  | { kind: 'api-token'; token: ApiToken }
  | { kind: 'bearer'; sub: string; access: Access[] };

export interface AccessRules {
  tokens: ApiToken[];
  registryTokens: RegistryTokens;
  anonymousPull: boolean;
}

export function callerOf(authorization: string | undefined, rules: AccessRules): Caller {
  if (!authorization) return { kind: 'anonymous' };
  const bearer = /^Bearer\s+(\S+)$/i.exec(authorization);
  if (bearer) {
    const issued = rules.registryTokens.verify(bearer[1]!);
    if (issued) return { kind: 'bearer', ...issued };
    const token = findToken(rules.tokens, bearer[1]!);
    return token ? { kind: 'api-token', token } : { kind: 'invalid' };
  }
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(authorization);
  if (basic) {
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const token = colon >= 0 ? findToken(rules.tokens, decoded.slice(colon + 1)) : undefined;
    return token ? { kind: 'api-token', token } : { kind: 'invalid' };
  }
  return { kind: 'invalid' };
}

/** Whether an API token, or nobody, may pull at all. */
function mayRead(caller: Caller, rules: AccessRules): boolean {
  if (caller.kind === 'api-token') return allows(caller.token, 'read');
  return caller.kind === 'anonymous' && rules.anonymousPull;
}

/** Whether the caller may do `action` on `type:name`. */
export function permits(
  caller: Caller,
  rules: AccessRules,
  type: Access['type'],
  name: string,
  action: string,
): boolean {
  if (caller.kind === 'bearer') return grants(caller.access, type, name, action);
  if (!mayRead(caller, rules)) return false;
  return type === 'repository' ? action === 'pull' : name === 'catalog';
}

/**
 * What a token asked of the token endpoint carries: of each scope asked for, the actions the caller
 * may have (only pull: this registry is read-only). Nothing for a caller who may not read.
 */
export function grantable(caller: Caller, rules: AccessRules, asked: Access[]): Access[] {
  if (!mayRead(caller, rules)) return [];
  const out: Access[] = [];
  for (const a of asked) {
    const actions =
      a.type === 'repository'
        ? a.actions.filter((x) => x === 'pull')
        : a.name === 'catalog'
          ? a.actions.filter((x) => x === '*')
          : [];
    if (actions.length) out.push({ ...a, actions });
  }
  return out;
}

/** The name a token is issued to, for the log. */
export function subjectOf(caller: Caller): string {
  return caller.kind === 'api-token'
    ? caller.token.name
    : caller.kind === 'bearer'
      ? caller.sub
      : 'anonymous';
}
