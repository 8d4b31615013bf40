import { type Command, InvalidArgumentError, Option } from 'commander';
import { COMPRESSION_HELP, compressionFrom, type LayerCompression } from '../archive/compress.js';
import { type Credentials, parseCredsOption } from '../auth/authfile.js';
import { blobLocationsPath } from '../config/stowage.js';
import { Context, type RegistryLimits } from '../registry/context.js';
import { readPassword } from './prompt.js';

export interface RegistryCliOptions {
  registriesConf?: string;
  authfile?: string;
  /** false: --no-creds. */
  creds?: string | false;
  registryToken?: string;
  tlsVerify?: boolean;
  certDir?: string;
  retryTimes?: number;
  retryDelay?: number;
  lowSpeedLimit?: number;
  lowSpeedTime?: number;
  policy?: string;
}

/** The options every command that talks to a registry takes, spelled as skopeo spells them. */
export function addRegistryOptions(cmd: Command): Command {
  return cmd
    .option(
      '--registries-conf <file>',
      'registries.conf to use (default: $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf, /etc/containers/registries.conf)',
    )
    .option(
      '--authfile <file>',
      'auth.json with credentials (default: $REGISTRY_AUTH_FILE, then the containers and docker locations)',
    )
    .option(
      '--creds <user:password>',
      'credentials for the registry (prefer --authfile: command lines are visible to other users)',
    )
    .option('--no-creds', 'access the registry anonymously: no auth file, helper or keyring is read')
    .option('--registry-token <token>', 'a bearer token for the registry, sent as it is (as skopeo takes it)')
    .addOption(
      new Option(
        '--tls-verify <bool>',
        'require HTTPS with a verified certificate (false allows HTTP and self-signed TLS)',
      )
        .argParser(parseBool)
        .default(undefined),
    )
    .option('--cert-dir <dir>', 'directory with CA certificates (*.crt) for the registry')
    .option(
      '--retry-times <n>',
      'retries after a connection error, 5xx or 429, with backoff and Retry-After honoured (default 5)',
      parseRetryTimes,
    )
    .option(
      '--retry-delay <duration>',
      'a fixed wait between retries, as skopeo takes it (500ms, 2s, 1m30s; default: backoff from 250 ms doubling to 20 s)',
      parseGoDuration,
    )
    .option(
      '--low-speed-limit <bytes>',
      'a download slower than this many bytes/s over --low-speed-time is cut and resumed where it stopped (default 1024)',
      parseNonNegative,
    )
    .option(
      '--low-speed-time <seconds>',
      'the window --low-speed-limit is measured over (default 30)',
      parsePositiveSeconds,
    )
    .option(
      '--policy <file>',
      'trust policy (containers-policy.json) images must pass (default: ~/.config/containers/policy.json, /etc/containers/policy.json)',
    );
}

/** --creds USER:PASSWORD or --registry-token TOKEN (not both), as the credentials to use. */
export async function credentialsFrom(
  creds: string | false | undefined,
  token: string | undefined,
): Promise<Credentials | undefined> {
  if (creds && token) throw new InvalidArgumentError('give --creds or --registry-token, not both');
  if (token) return { kind: 'bearer', token };
  if (!creds) return undefined;
  // --creds USER: asked for on the terminal, as skopeo does, so it never shows in the process list.
  if (!creds.includes(':'))
    return parseCredsOption(`${creds}:${await readPassword(`Password for ${creds}: `)}`);
  return parseCredsOption(creds);
}

/** --retry-times and --retry-delay as the transport's retry settings (a fixed delay: min = max). */
export function retryFrom(opts: { retryTimes?: number | undefined; retryDelay?: number | undefined }) {
  if (opts.retryTimes === undefined && opts.retryDelay === undefined) return undefined;
  return {
    ...(opts.retryTimes !== undefined ? { maxRetries: opts.retryTimes } : {}),
    ...(opts.retryDelay !== undefined
      ? { minTimeoutMs: opts.retryDelay, maxTimeoutMs: opts.retryDelay }
      : {}),
  };
}

/** A Go duration (skopeo's flags take them): 500ms, 2s, 1.5m, 1h30m; milliseconds, at most an hour. */
export function parseGoDuration(v: string): number {
  // Go writes microseconds as "µs" (U+00B5); spelled as an escape, the bundle stays ASCII.
  const units: Record<string, number> = {
    ns: 1e-6,
    us: 1e-3,
    '\u00b5s': 1e-3,
    ms: 1,
    s: 1e3,
    m: 60e3,
    h: 3600e3,
  };
  const parts = [...v.matchAll(/(\d+(?:\.\d+)?)(ns|us|\u00b5s|ms|s|m|h)/g)];
  const total = parts.reduce((n, m) => n + Number(m[1]) * units[m[2]!]!, 0);
  if (!parts.length || parts.map((m) => m[0]).join('') !== v || total > 3600e3) {
    throw new InvalidArgumentError('expected a duration such as 500ms, 2s or 1m30s (at most 1h)');
  }
  return total;
}

export function parseNonNegative(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number of 0 or more');
  return n;
}

export function parsePositiveSeconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || n > 86_400)
    throw new InvalidArgumentError('expected a number of seconds above 0 (at most 86400)');
  return n;
}

export function parseBool(v: string): boolean {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new InvalidArgumentError('expected true or false');
}

export function parseRetryTimes(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 20)
    throw new InvalidArgumentError('expected a whole number from 0 to 20');
  return n;
}

export function parsePositiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new InvalidArgumentError('expected a whole number from 1 to 64');
  return n;
}

export async function contextFrom(
  opts: RegistryCliOptions,
  limits?: Record<string, RegistryLimits>,
): Promise<Context> {
  return Context.create({
    limits,
    registriesConf: opts.registriesConf,
    authFile: opts.authfile,
    credentials: await credentialsFrom(opts.creds, opts.registryToken),
    noCreds: opts.creds === false,
    tlsVerify: opts.tlsVerify,
    certDir: opts.certDir,
    policy: opts.policy,
    locationsDir: blobLocationsPath(),
    retry: retryFrom(opts),
    stall: {
      ...(opts.lowSpeedLimit !== undefined ? { minBytesPerSecond: opts.lowSpeedLimit } : {}),
      ...(opts.lowSpeedTime !== undefined ? { windowMs: opts.lowSpeedTime * 1000 } : {}),
    },
  });
}

/** --compress and --compress-level, as push, copy and pull read them. */
export interface CompressCliOptions {
  compress?: string;
  compressLevel?: string;
}

export function addCompressOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--compress <format>', `how ${what}: ${COMPRESSION_HELP.format}`)
    .option('--compress-level <n>', COMPRESSION_HELP.level);
}

/** The compression asked for, checked (undefined: the destination's default). */
export function compressFrom(opts: CompressCliOptions): LayerCompression | undefined {
  return compressionFrom({ format: opts.compress, level: opts.compressLevel });
}
