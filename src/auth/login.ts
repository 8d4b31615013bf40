/**
 * `stowage login` and `stowage logout`: credentials verified against the registry, then stored where
 * podman and skopeo look for them (auth.json, or the credential helper auth.json names for that
 * registry), or in the OS keyring. auth.json is rewritten atomically with mode 0600, keeping every
 * other entry and field as it was.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../core/atomic.js';
import { StowageError } from '../errors.js';
import { parseReference } from '../reference/reference.js';
import {
  AUTH_FILE_HELPER,
  authFileCandidates,
  authFileForWriting,
  type Credentials,
  helperServer,
  normalizeAuthKey,
  readAuthFile,
} from './authfile.js';
import { helperErase, helperStore } from './helpers.js';
import { type KeyringMode, keyringDelete, keyringGet, keyringSet } from './keyring.js';

export type CredentialStore = 'auth.json' | 'keyring';

/** The auth key for a login argument: registry[/namespace[/repo]], as podman accepts it. */
export function loginKey(input: string): string {
  const raw = normalizeAuthKey(input.replace(/\/+$/, ''));
  const slash = raw.indexOf('/');
  const host = slash < 0 ? raw : raw.slice(0, slash);
  if (
    !/^[a-zA-Z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:.]+\](:\d+)?$/.test(host) ||
    (!host.includes('.') && !host.includes(':') && host !== 'localhost')
  ) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `"${input}" is not a registry; give a host[:port], optionally with a namespace (registry.internal:5000/team)`,
    );
  }
  if (slash >= 0) {
    const ref = parseReference(raw);
    if (ref.tag || ref.digest) {
      throw new StowageError('INVALID_ARGUMENT', `"${input}": a login key takes no tag or digest`);
    }
  }
  return raw;
}

interface RawAuthFile {
  auths?: Record<string, { auth?: string; identitytoken?: string; [k: string]: unknown }>;
  credHelpers?: Record<string, string>;
  [k: string]: unknown;
}

async function readRaw(path: string): Promise<RawAuthFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new StowageError('IO', `cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as RawAuthFile;
  } catch {
    // reported below
  }
  throw new StowageError(
    'INVALID_CONFIG',
    `${path} is not a valid auth file; it was left as it is (fix or remove it, then log in again)`,
  );
}

async function writeRaw(path: string, content: RawAuthFile): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, `${JSON.stringify(content, null, '\t')}\n`, 0o600);
}

export interface StoreOptions {
  authFile?: string | undefined;
  store: CredentialStore;
  keyring: KeyringMode;
  env?: NodeJS.ProcessEnv | undefined;
}

/** Stores credentials for `key`; returns a description of where (for the user, not a secret). */
export async function storeCredentials(
  key: string,
  creds: Credentials & { kind: 'basic' },
  opts: StoreOptions,
): Promise<string> {
  if (opts.store === 'keyring') {
    await keyringSet(key, creds, opts.keyring === 'off' ? 'auto' : opts.keyring);
    return `the OS keyring (service "stowage", account "${key}")`;
  }
  const path = authFileForWriting(opts.authFile, opts.env);
  const content = await readRaw(path);
  const host = key.split('/')[0]!;
  const helper = content.credHelpers?.[host];
  if (helper && helper !== AUTH_FILE_HELPER) {
    if (key !== host) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${path} sends ${host} to credential helper ${helper}, which stores whole registries only; log in to ${host}`,
      );
    }
    await helperStore(helper, helperServer(host), creds.username, creds.password);
    return `credential helper docker-credential-${helper} (named by ${path})`;
  }
  content.auths = {
    ...content.auths,
    [key]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') },
  };
  await writeRaw(path, content);
  return path;
}

/** Removes credentials for `key` (or every auths entry with `all`); returns where they were removed from. */
export async function removeCredentials(
  key: string | undefined,
  opts: Omit<StoreOptions, 'store'>,
): Promise<string[]> {
  const removed: string[] = [];
  const path = authFileForWriting(opts.authFile, opts.env);
  const content = await readRaw(path);
  if (key === undefined) {
    if (content.auths && Object.keys(content.auths).length > 0) {
      content.auths = {};
      await writeRaw(path, content);
      removed.push(path);
    }
    return removed;
  }
  const host = key.split('/')[0]!;
  const helper = content.credHelpers?.[host];
  if (helper && helper !== AUTH_FILE_HELPER && key === host) {
    if (await helperErase(helper, helperServer(host)))
      removed.push(`credential helper docker-credential-${helper}`);
  }
  const entries = content.auths ?? {};
  const matching = Object.keys(entries).filter((k) => normalizeAuthKey(k) === key);
  if (matching.length > 0) {
    for (const k of matching) delete entries[k];
    content.auths = entries;
    await writeRaw(path, content);
    removed.push(path);
  }
  const mode = opts.keyring;
  if (await keyringDelete(key, mode, { quiet: mode === 'auto' })) removed.push('the OS keyring');
  return removed;
}

/** The user name stored for `key` (login --get-login), from the auth files or the keyring. */
export async function storedLogin(
  key: string,
  opts: Omit<StoreOptions, 'store'>,
): Promise<string | undefined> {
  for (const file of authFileCandidates(opts.authFile, opts.env)) {
    const f = await readAuthFile(file, file === opts.authFile);
    const entry = f?.auths.get(key);
    if (entry?.auth) {
      const text = Buffer.from(entry.auth, 'base64').toString('utf8');
      const i = text.indexOf(':');
      if (i > 0) return text.slice(0, i);
    }
  }
  const c = await keyringGet(key, opts.keyring, { quiet: true });
  return c && c.kind !== 'bearer' ? c.username : undefined;
}
