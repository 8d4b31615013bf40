import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { StowageError } from '../errors.js';
import { DEFAULT_DOMAIN } from '../reference/reference.js';
import { helperGet } from './helpers.js';
import { type KeyringMode, keyringGet, keyringMode } from './keyring.js';

/** Credentials for one registry. Never log or print these. */
export type Credentials =
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'identityToken'; token: string; username?: string | undefined }
  /** A bearer token given as it is (--registry-token): sent to the registry, never to a token service. */
  | { kind: 'bearer'; token: string };

const authEntrySchema = z.looseObject({
  auth: z.string().optional(),
  identitytoken: z.string().optional(),
});

const authFileSchema = z.looseObject({
  auths: z.record(z.string(), authEntrySchema).optional(),
  credHelpers: z.record(z.string(), z.string()).optional(),
  credsStore: z.string().optional(),
});

/** The auth files searched, in the order containers-auth.json(5) gives, then docker's. */
export function authFileCandidates(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  if (explicit) return [explicit];
  const home = env.HOME || homedir();
  const list: string[] = [];
  if (env.REGISTRY_AUTH_FILE) list.push(env.REGISTRY_AUTH_FILE);
  list.push(runtimeAuthFile(env));
  list.push(join(home, '.config/containers/auth.json'));
  list.push(join(env.DOCKER_CONFIG || join(home, '.docker'), 'config.json'));
  list.push(join(home, '.dockercfg'));
  return list;
}

/** ${XDG_RUNTIME_DIR}/containers/auth.json, or /run/containers/UID/auth.json without it (as podman). */
function runtimeAuthFile(env: NodeJS.ProcessEnv): string {
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'containers/auth.json');
  return `/run/containers/${process.getuid?.() ?? 0}/auth.json`;
}

/** Where `login` writes: --authfile, $REGISTRY_AUTH_FILE, else the runtime auth.json (as podman login). */
export function authFileForWriting(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string {
  return explicit ?? env.REGISTRY_AUTH_FILE ?? runtimeAuthFile(env);
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
  const parts = path ? path.split('/') : [];
  for (let n = parts.length; n >= 1; n--) keys.push(`${domain}/${parts.slice(0, n).join('/')}`);
  keys.push(domain);
  return keys;
}

/** A parsed auth file: entries by normalised key, and the helpers it names. */
export interface AuthFile {
  path: string;
  auths: Map<string, z.infer<typeof authEntrySchema>>;
  credHelpers: Record<string, string>;
  credsStore?: string | undefined;
}

/** Reads an auth file; undefined when it does not exist (unless it was named explicitly). */
export async function readAuthFile(file: string, explicit = false): Promise<AuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !explicit) return undefined;
    throw new StowageError('INVALID_CONFIG', `cannot read auth file ${file}: ${(e as Error).message}`);
  }
  return parseAuthFile(text, file);
}

/** Parses auth.json (or ~/.dockercfg) text; `file` names it in errors and decides the dialect. */
export function parseAuthFile(text: string, file: string): AuthFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new StowageError('INVALID_CONFIG', `auth file ${file} is not valid JSON; fix or remove it`);
  }
  // ~/.dockercfg predates the "auths" wrapper: its entries are at the top level.
  if (file.endsWith('.dockercfg') && json && typeof json === 'object' && !('auths' in json)) {
    json = { auths: json };
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
  return {
    path: file,
    auths,
    credHelpers: parsed.data.credHelpers ?? {},
    credsStore: parsed.data.credsStore,
  };
}

/** The server name helpers know a registry by (Docker Hub keeps its historical URL). */
export function helperServer(domain: string): string {
  return domain === DEFAULT_DOMAIN ? 'https://index.docker.io/v1/' : domain;
}

/** Where credentials come from, besides --creds. */
export interface CredentialSources {
  /** --authfile: only this file is read. */
  authFile?: string | undefined;
  /** registries.conf credential-helpers ("containers-auth.json" stands for the auth files). */
  helpers?: string[] | undefined;
  /** The OS keyring, where `stowage login --store keyring` puts credentials. */
  keyring?: KeyringMode | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

export const AUTH_FILE_HELPER = 'containers-auth.json';

/** Credentials for domain/path from the auth files: credHelpers, then entries (most specific key first), then credsStore. */
async function fromAuthFiles(
  domain: string,
  keys: string[],
  authFile: string | undefined,
  env: NodeJS.ProcessEnv,
): Promise<Credentials | undefined> {
  for (const file of authFileCandidates(authFile, env)) {
    const f = await readAuthFile(file, file === authFile);
    if (!f) continue;
    const helper = f.credHelpers[domain];
    if (helper) {
      const c = await helperGet(helper, helperServer(domain));
      if (c) return c;
      continue;
    }
    for (const key of keys) {
      const entry = f.auths.get(key);
      if (!entry) continue;
      if (entry.identitytoken) {
        const user = entry.auth ? decodeAuth(entry.auth, file, key).username : undefined;
        return { kind: 'identityToken', token: entry.identitytoken, username: user };
      }
      if (entry.auth) return { kind: 'basic', ...decodeAuth(entry.auth, file, key) };
    }
    if (f.credsStore) {
      const c = await helperGet(f.credsStore, helperServer(domain));
      if (c) return c;
    }
  }
  return undefined;
}

/**
 * Credentials for domain/path from registries.conf's credential-helpers, each in turn (by default just
 * the auth files), as podman finds them.
 */
export async function findHelperCredentials(
  domain: string,
  path: string,
  sources: CredentialSources = {},
): Promise<Credentials | undefined> {
  const env = sources.env ?? process.env;
  const keys = authKeysFor(domain, path);
  const helpers = sources.helpers?.length ? sources.helpers : [AUTH_FILE_HELPER];
  for (const helper of helpers) {
    const c =
      helper === AUTH_FILE_HELPER
        ? await fromAuthFiles(domain, keys, sources.authFile, env)
        : await helperGet(helper, helperServer(domain));
    if (c) return c;
  }
  return undefined;
}

/** Credentials for domain/path from the OS keyring (stowage login --store keyring), most specific key first. */
export async function findKeyringCredentials(
  domain: string,
  path: string,
  sources: CredentialSources = {},
): Promise<Credentials | undefined> {
  const mode = sources.keyring ?? keyringMode(sources.env ?? process.env);
  if (mode === 'off') return undefined;
  for (const key of authKeysFor(domain, path)) {
    const c = await keyringGet(key, mode, { quiet: mode === 'auto' });
    if (c) return c;
  }
  return undefined;
}

/** The auth files only (no helpers, no keyring): kept for callers that want just those. */
export async function lookupCredentials(
  domain: string,
  path: string,
  authFile: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Credentials | undefined> {
  return fromAuthFiles(domain, authKeysFor(domain, path), authFile, env);
}

/** Parses --creds user:password (the password may contain colons). */
export function parseCredsOption(value: string): Credentials {
  const i = value.indexOf(':');
  if (i <= 0) throw new StowageError('INVALID_ARGUMENT', '--creds must be USERNAME:PASSWORD');
  return { kind: 'basic', username: value.slice(0, i), password: value.slice(i + 1) };
}
