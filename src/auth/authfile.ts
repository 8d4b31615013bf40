import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { StowageError } from '../errors.js';
import { DEFAULT_DOMAIN } from '../reference/reference.js';

/** Credentials for one registry. Never log or print these. */
export type Credentials =
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'identityToken'; token: string; username?: string | undefined };

const authEntrySchema = z.looseObject({
  auth: z.string().optional(),
  identitytoken: z.string().optional(),
});

const authFileSchema = z.looseObject({
  auths: z.record(z.string(), authEntrySchema).optional(),
  credHelpers: z.record(z.string(), z.string()).optional(),
  credsStore: z.string().optional(),
});

/** The auth files searched, in the order containers-auth.json(5) gives, then docker's config. */
export function authFileCandidates(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  if (explicit) return [explicit];
  const home = env.HOME || homedir();
  const list: string[] = [];
  if (env.REGISTRY_AUTH_FILE) list.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) list.push(join(env.XDG_RUNTIME_DIR, 'containers/auth.json'));
  list.push(join(home, '.config/containers/auth.json'));
  list.push(join(env.DOCKER_CONFIG || join(home, '.docker'), 'config.json'));
  return list;
}

/** Normalises an auth.json key: scheme and path of the legacy Docker Hub URL are dropped. */
export function normalizeAuthKey(key: string): string {
  let k = key;
  if (/^https?:\/\//.test(k)) {
    k = k.replace(/^https?:\/\//, '');
    k = k.split('/')[0]!;
  }
  if (k === 'index.docker.io' || k === 'registry-1.docker.io') k = DEFAULT_DOMAIN;
  return k;
}

function decodeAuth(value: string, file: string, key: string): { username: string; password: string } {
  const text = Buffer.from(value, 'base64').toString('utf8');
  const i = text.indexOf(':');
  if (i < 0) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${file}: the "auth" entry for ${key} is not base64 of user:password; log in again to rewrite it`,
    );
  }
  return { username: text.slice(0, i), password: text.slice(i + 1) };
}

/** Keys to try for a repository, most specific first: host/ns/repo, host/ns, host. */
export function authKeysFor(domain: string, path: string): string[] {
  const keys: string[] = [];
  const parts = path.split('/');
  for (let n = parts.length; n >= 1; n--) keys.push(`${domain}/${parts.slice(0, n).join('/')}`);
  keys.push(domain);
  return keys;
}

/**
 * Finds credentials for domain/path in the first auth file that has an entry for it.
 * Credential helpers and the keyring come with the credentials issue; an entry that needs one is
 * reported clearly instead of silently ignored.
 */
export async function lookupCredentials(
  domain: string,
  path: string,
  authFile: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Credentials | undefined> {
  const keys = authKeysFor(domain, path);
  for (const file of authFileCandidates(authFile, env)) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && file !== authFile) continue;
      throw new StowageError('INVALID_CONFIG', `cannot read auth file ${file}: ${(e as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new StowageError('INVALID_CONFIG', `auth file ${file} is not valid JSON; fix or remove it`);
    }
    const parsed = authFileSchema.safeParse(json);
    if (!parsed.success) {
      throw new StowageError(
        'INVALID_CONFIG',
        `auth file ${file} does not have the auth.json shape ({"auths": {...}})`,
      );
    }
    const auths = new Map<string, z.infer<typeof authEntrySchema>>();
    for (const [k, v] of Object.entries(parsed.data.auths ?? {})) {
      const nk = normalizeAuthKey(k);
      if (!auths.has(nk) || nk === k) auths.set(nk, v);
    }
    for (const key of keys) {
      const entry = auths.get(key);
      if (!entry) continue;
      if (entry.identitytoken) {
        const user = entry.auth ? decodeAuth(entry.auth, file, key).username : undefined;
        return { kind: 'identityToken', token: entry.identitytoken, username: user };
      }
      if (entry.auth) return { kind: 'basic', ...decodeAuth(entry.auth, file, key) };
    }
  }
  return undefined;
}

/** Parses --creds user:password (the password may contain colons). */
export function parseCredsOption(value: string): Credentials {
  const i = value.indexOf(':');
  if (i <= 0) throw new StowageError('INVALID_ARGUMENT', '--creds must be USERNAME:PASSWORD');
  return { kind: 'basic', username: value.slice(0, i), password: value.slice(i + 1) };
}
