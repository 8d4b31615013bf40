import type { OutboundGuard } from '../auth/authenticator.js';
import { type Credentials, findHelperCredentials, findKeyringCredentials } from '../auth/authfile.js';
import { loadRegistriesConf, type RegistriesConf } from '../config/registries.js';
import {
  type Endpoint,
  type PullEndpoint,
  pullEndpoints,
  resolveCandidates,
  resolveEndpoint,
} from '../config/resolve.js';
import { StowageError } from '../errors.js';
import { loadPolicy, type Policy } from '../policy/policy.js';
import { formatReference, type ImageReference } from '../reference/reference.js';
import { DEFAULT_RETRY, RegistryClient, type RetryOptions, type StallRule } from './client.js';
import { BlobLocations } from './locations.js';

/** Failures of one short-name candidate (or one mirror) that make podman go on to the next one. */
export const CANDIDATE_FAILURES = new Set<string>([
  'NOT_FOUND',
  'NETWORK',
  'TLS',
  'REGISTRY',
  'UNAUTHORIZED',
  'DENIED',
  'BLOCKED',
  'RATE_LIMITED',
  'UNAVAILABLE',
]);

/** Per-registry settings (stowage.toml [registries."HOST"]). */
export interface RegistryLimits {
  concurrency?: number | undefined;
  'requests-per-second'?: number | undefined;
  /** Bytes per second a body must average over low-speed-time, else it is cut and resumed. */
  'low-speed-limit'?: number | undefined;
  /** Seconds the low-speed limit is measured over. */
  'low-speed-time'?: number | undefined;
}

export interface ContextOptions {
  /** Path of registries.conf (else the standard search). */
  registriesConf?: string | undefined;
  /** Path of auth.json (else the standard search). */
  authFile?: string | undefined;
  /** Credentials for every registry, overriding auth files (--creds, --registry-token). */
  credentials?: Credentials | undefined;
  /** No credentials at all: no auth file, helper or keyring is read (--no-creds). */
  noCreds?: boolean | undefined;
  /** false: allow HTTP and unverified TLS for every registry (--tls-verify=false). */
  tlsVerify?: boolean | undefined;
  /** Directory with CA certificates (--cert-dir). */
  certDir?: string | undefined;
  /** Connections per registry. */
  connections?: number | undefined;
  /** Per-registry limits by host (stowage.toml [registries."HOST"]). */
  limits?: Record<string, RegistryLimits> | undefined;
  retry?: Partial<RetryOptions> | undefined;
  /** The stall rule for every registry (--low-speed-limit, --low-speed-time); limits may override it per host. */
  stall?: Partial<StallRule> | undefined;
  /** Checks the hosts registries send clients to (the service's allow-lists). */
  guard?: OutboundGuard | undefined;
  /** containers-policy.json to admit images by (--policy; default: the user's, else the system's). */
  policy?: string | undefined;
  /**
   * Where the blob locations learnt are kept between runs (the CLI and the service give
   * blobLocationsPath: $XDG_CACHE_HOME/stowage/locations/); without it, only for this context's life.
   */
  locationsDir?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

/**
 * What every operation needs: the registries configuration, credentials, and one client per
 * registry endpoint (connections and tokens are reused across images and tags).
 */
export class Context {
  private readonly clients = new Map<string, RegistryClient>();
  /** Which repositories hold which blobs (for cross-repository mounts): learnt, and kept in locationsDir. */
  readonly blobLocations: BlobLocations;
  private readonly credentials = new Map<string, Promise<Credentials | undefined>>();
  private constructor(
    readonly conf: RegistriesConf,
    private readonly opts: ContextOptions,
  ) {
    this.blobLocations = new BlobLocations(opts.locationsDir);
  }

  static async create(opts: ContextOptions = {}): Promise<Context> {
    const conf = await loadRegistriesConf(opts.registriesConf, opts.env ?? process.env);
    return new Context(conf, opts);
  }

  /** Attempts after the first for an operation that failed transiently (--retry-times). */
  get retries(): number {
    return this.opts.retry?.maxRetries ?? DEFAULT_RETRY.maxRetries;
  }

  /** Fully qualified candidates for a (possibly short) reference. */
  candidates(ref: ImageReference): ImageReference[] {
    return resolveCandidates(this.conf, ref);
  }

  endpoint(ref: ImageReference): Endpoint {
    return resolveEndpoint(this.conf, ref, this.opts.tlsVerify === false);
  }

  /** The client for a reference's endpoint (BLOCKED when registries.conf blocks it). */
  async client(ref: ImageReference): Promise<{ client: RegistryClient; endpoint: Endpoint }> {
    const endpoint = this.endpoint(ref);
    return { client: await this.clientFor(endpoint), endpoint };
  }

  /**
   * The client for an endpoint, with the credentials --creds or the credential helpers (auth files)
   * have for it. Without those, the OS keyring is asked, per repository, once the registry asks for
   * authentication: a registry that never does (a local mirror) never loads the keyring library, 7 ms a
   * start. A mirror gets at most one retry: when it is down, the next endpoint is the better bet than
   * waiting on it.
   */
  async clientFor(endpoint: Endpoint & { mirror?: boolean }): Promise<RegistryClient> {
    const credentials = this.opts.noCreds
      ? undefined
      : (this.opts.credentials ?? (await this.storedCredentials(endpoint)));
    const retry = endpoint.mirror
      ? { ...this.opts.retry, maxRetries: Math.min(1, this.retries) }
      : this.opts.retry;
    const key = `${endpoint.host}|${endpoint.insecure}|${endpoint.mirror === true}|${credentials ? JSON.stringify(credentials) : ''}`;
    let client = this.clients.get(key);
    if (!client) {
      client = new RegistryClient({
        host: endpoint.host,
        insecure: endpoint.insecure,
        credentials,
        // The Authenticator looks each repository up once.
        lateCredentials:
          credentials || this.opts.noCreds
            ? undefined
            : (repository) => findKeyringCredentials(endpoint.host, repository, { env: this.opts.env }),
        certDir: this.opts.certDir,
        connections: this.opts.limits?.[endpoint.host]?.concurrency ?? this.opts.connections,
        requestsPerSecond: this.opts.limits?.[endpoint.host]?.['requests-per-second'],
        retry,
        stall: this.stallFor(endpoint.host),
        guard: this.opts.guard,
      });
      this.clients.set(key, client);
    }
    return client;
  }

  private stallFor(host: string): Partial<StallRule> {
    const limit = this.opts.limits?.[host];
    const rule: Partial<StallRule> = { ...this.opts.stall };
    if (limit?.['low-speed-limit'] !== undefined) rule.minBytesPerSecond = limit['low-speed-limit'];
    if (limit?.['low-speed-time'] !== undefined) rule.windowMs = limit['low-speed-time'] * 1000;
    return rule;
  }

  /** The credential helpers' (auth files') credentials for an endpoint, looked up once per repository. */
  private storedCredentials(endpoint: Endpoint): Promise<Credentials | undefined> {
    const key = `${endpoint.host}/${endpoint.path}`;
    let p = this.credentials.get(key);
    if (!p) {
      p = findHelperCredentials(endpoint.host, endpoint.path, {
        authFile: this.opts.authFile,
        helpers: this.conf.credentialHelpers,
        env: this.opts.env,
      });
      this.credentials.set(key, p);
    }
    return p;
  }

  /**
   * Runs a read of `ref` against its mirrors in order, then its primary location, until one succeeds
   * (containers-registries.conf(5) [[registry.mirror]]). `fn` learns which endpoint it is talking to,
   * so results can say which one served the image.
   */
  async pullFrom<T>(
    ref: ImageReference,
    fn: (client: RegistryClient, endpoint: PullEndpoint, later: PullEndpoint[]) => Promise<T>,
  ): Promise<T> {
    const endpoints = pullEndpoints(this.conf, ref, this.opts.tlsVerify === false);
    const failed: string[] = [];
    for (const [i, endpoint] of endpoints.entries()) {
      try {
        return await fn(await this.clientFor(endpoint), endpoint, endpoints.slice(i + 1));
      } catch (e) {
        const err = e instanceof StowageError ? e : undefined;
        if (!err || err.code === 'ABORTED' || i === endpoints.length - 1) {
          if (err && failed.length > 0) {
            throw new StowageError(err.code, `${err.message} (mirrors tried first: ${failed.join('; ')})`, {
              cause: err,
            });
          }
          throw e;
        }
        failed.push(`${endpoint.host}/${endpoint.path}: ${err.message}`);
      }
    }
    throw new StowageError('INTERNAL', 'no endpoint to pull from');
  }

  /**
   * Runs `fn` on each candidate of a short name in turn until one succeeds, as podman resolves them: a
   * candidate that is missing, unreachable or refuses is passed over for the next. Only when every
   * one fails is it an error, naming each. A fully qualified reference has one candidate. An abort, or
   * a failure of our own (bad input, a full disk), stops at once.
   */
  async withCandidates<T>(ref: ImageReference, fn: (ref: ImageReference) => Promise<T>): Promise<T> {
    const list = this.candidates(ref);
    if (list.length === 1) return fn(list[0]!);
    const failures: { ref: ImageReference; error: StowageError }[] = [];
    for (const c of list) {
      try {
        return await fn(c);
      } catch (e) {
        if (!(e instanceof StowageError) || !CANDIDATE_FAILURES.has(e.code)) throw e;
        failures.push({ ref: c, error: e });
      }
    }
    const all = failures.map((f) => `${formatReference(f.ref)}: ${f.error.message}`).join('; ');
    // Not found everywhere is NOT_FOUND; anything else is the first other failure's kind.
    const code = failures.find((f) => f.error.code !== 'NOT_FOUND')?.error.code ?? 'NOT_FOUND';
    throw new StowageError(
      code,
      `no candidate for the short name ${formatReference(ref)} could be used: ${all}`,
      {
        cause: failures[0]?.error,
        retryable: failures.some((f) => f.error.retryable),
      },
    );
  }

  private policyLoaded: Promise<Policy | undefined> | undefined;

  /** The trust policy every image read is admitted by (loaded once; undefined: there is none). */
  policy(): Promise<Policy | undefined> {
    this.policyLoaded ??= loadPolicy({ path: this.opts.policy, env: this.opts.env });
    return this.policyLoaded;
  }

  /** Closes the connections, and keeps what was learnt of blob locations (locationsDir). */
  async close(): Promise<void> {
    await Promise.all([this.blobLocations.save(), ...[...this.clients.values()].map((c) => c.close())]);
    this.clients.clear();
  }
}
