/**
 * The OS keyring through @napi-rs/keyring: the Secret Service (gnome-keyring, KWallet) over D-Bus, or
 * the kernel keyring (keyutils). Loaded only when used, every call bounded by a timeout. Entries are
 * service "stowage", account = the auth key (registry, or registry/namespace), secret = JSON.
 *
 * STOWAGE_KEYRING picks the store: "auto" (the default: whichever the library finds; lookups that
 * fail are ignored), "secret-service" or "keyutils" (that store only; failures are errors), "off".
 */
import { StowageError } from '../errors.js';
import type { Credentials } from './authfile.js';

export type KeyringMode = 'auto' | 'secret-service' | 'keyutils' | 'off';
export const KEYRING_MODES: readonly KeyringMode[] = ['auto', 'secret-service', 'keyutils', 'off'];

const SERVICE = 'stowage';
const TIMEOUT_MS = 5_000;

export function keyringMode(env: NodeJS.ProcessEnv = process.env): KeyringMode {
  const v = env.STOWAGE_KEYRING;
  if (!v) return 'auto';
  if ((KEYRING_MODES as readonly string[]).includes(v)) return v as KeyringMode;
  throw new StowageError('INVALID_CONFIG', `STOWAGE_KEYRING="${v}": use one of ${KEYRING_MODES.join(', ')}`);
}

type KeyringModule = typeof import('@napi-rs/keyring');
let loaded: Promise<KeyringModule> | undefined;

function load(): Promise<KeyringModule> {
  loaded ??= import('@napi-rs/keyring').catch((e: Error) => {
    loaded = undefined;
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && /@napi-rs\/keyring/.test(e.message)) {
      throw new StowageError(
        'UNSUPPORTED',
        'the OS keyring needs the optional package @napi-rs/keyring, which this installation of stowage lacks: npm install @napi-rs/keyring, or store credentials in auth.json (login --store auth.json)',
      );
    }
    throw new StowageError(
      'UNSUPPORTED',
      `the OS keyring library could not be loaded on this machine (${e.message.split('\n')[0]}); store credentials in auth.json instead`,
    );
  });
  return loaded;
}

async function entry(account: string, mode: KeyringMode) {
  const { AsyncEntry } = await load();
  const store = mode === 'secret-service' || mode === 'keyutils' ? mode : undefined;
  return new AsyncEntry(SERVICE, account, store ? { linux: { store } } : undefined);
}

/** A keyring failure, said plainly: which store, what to do. The library's text never holds the secret. */
function unreachable(mode: KeyringMode, e: unknown): StowageError {
  if (e instanceof StowageError) return e;
  const why = ((e as Error)?.message ?? String(e)).split('\n')[0]!.slice(0, 200);
  const which =
    mode === 'auto' ? 'no OS keyring' : mode === 'keyutils' ? 'the kernel keyring' : 'the Secret Service';
  const timedOut = (e as Error)?.name === 'AbortError' || /abort|timed? ?out/i.test(why);
  return new StowageError(
    'INVALID_CONFIG',
    `${which} ${mode === 'auto' ? 'is reachable' : 'is not reachable'} (${timedOut ? `no answer within ${TIMEOUT_MS / 1000} s` : why}); ` +
      'run a Secret Service (e.g. gnome-keyring in a D-Bus session), or join a kernel session keyring (keyctl session), ' +
      'or store credentials in auth.json (login --store auth.json)',
  );
}

function encode(c: Credentials): string {
  return JSON.stringify(
    c.kind === 'basic'
      ? { username: c.username, password: c.password }
      : { identitytoken: c.token, username: c.kind === 'identityToken' ? c.username : undefined },
  );
}

function decode(secret: string, account: string): Credentials | undefined {
  try {
    const v = JSON.parse(secret) as { username?: unknown; password?: unknown; identitytoken?: unknown };
    if (typeof v.identitytoken === 'string')
      return {
        kind: 'identityToken',
        token: v.identitytoken,
        username: typeof v.username === 'string' ? v.username : undefined,
      };
    if (typeof v.username === 'string' && typeof v.password === 'string')
      return { kind: 'basic', username: v.username, password: v.password };
  } catch {
    // fall through
  }
  throw new StowageError(
    'INVALID_CONFIG',
    `the keyring entry for ${account} (service "${SERVICE}") is not one stowage wrote; remove it with stowage logout ${account}`,
  );
}

/** Credentials the keyring holds for an auth key. With `quiet`, an unreachable keyring means none. */
export async function keyringGet(
  account: string,
  mode: KeyringMode,
  opts: { quiet?: boolean } = {},
): Promise<Credentials | undefined> {
  if (mode === 'off') return undefined;
  let secret: string | null;
  try {
    secret = await (await entry(account, mode)).getPassword(AbortSignal.timeout(TIMEOUT_MS));
  } catch (e) {
    if (opts.quiet) return undefined;
    throw unreachable(mode, e);
  }
  return secret === null ? undefined : decode(secret, account);
}

export async function keyringSet(account: string, c: Credentials, mode: KeyringMode): Promise<void> {
  if (mode === 'off')
    throw new StowageError('INVALID_ARGUMENT', 'STOWAGE_KEYRING is "off"; store credentials in auth.json');
  try {
    await (await entry(account, mode)).setPassword(encode(c), AbortSignal.timeout(TIMEOUT_MS));
  } catch (e) {
    throw unreachable(mode, e);
  }
}

/** Removes the keyring's entry for an auth key; false when there was none (or no keyring, quietly). */
export async function keyringDelete(
  account: string,
  mode: KeyringMode,
  opts: { quiet?: boolean } = {},
): Promise<boolean> {
  if (mode === 'off') return false;
  try {
    const e = await entry(account, mode);
    // Asked first: some backends answer a delete of nothing with success, and logout must not claim
    // it removed an entry that was never there.
    if ((await e.getPassword(AbortSignal.timeout(TIMEOUT_MS))) === null) return false;
    return await e.deleteCredential(AbortSignal.timeout(TIMEOUT_MS));
  } catch (e) {
    if (opts.quiet) return false;
    throw unreachable(mode, e);
  }
}
