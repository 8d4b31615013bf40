import { setMaxListeners } from 'node:events';
import { createSecureContext } from 'node:tls';
import type { Dispatcher } from 'undici';
import { Authenticator, type OutboundGuard } from '../auth/authenticator.js';
import type { Credentials } from '../auth/authfile.js';
import { StowageError } from '../errors.js';
import { digestMismatch, sha256Digest } from '../image/digest.js';
import { isSchema1MediaType, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import { DEFAULT_DOMAIN, DOCKER_HUB_API_HOST } from '../reference/reference.js';
import { extraCAs } from './tls.js';
import { Agent, interceptors } from './undici.js';

/** Redirects followed for one request (blob downloads are sent to storage this way), as undici did. */
const MAX_REDIRECTS = 5;

export const USER_AGENT = 'stowage/0.1';

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** The scope a push needs on a repository (pull too: HEAD and mounts read). */
export function pushScope(repo: string): string {
  return `repository:${repo}:pull,push`;
}

/** Where an upload goes next, and the smallest chunk the registry accepts (OCI-Chunk-Min-Length). */
export interface UploadSession {
  location: URL;
  minChunk: number | undefined;
}

export interface RetryOptions {
  /** Retries after the first attempt, for connection errors, 5xx and 429. */
  maxRetries: number;
  minTimeoutMs: number;
  maxTimeoutMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { maxRetries: 5, minTimeoutMs: 250, maxTimeoutMs: 20_000 };

/**
 * The stall rule for response bodies (curl's --speed-limit/--speed-time): fewer than `minBytesPerSecond`
 * on average over `windowMs` of waiting on the registry, and the transfer is cut and resumed. undici's
 * bodyTimeout only measures silence between chunks, so a registry sending a byte every few seconds
 * would otherwise hold a pull (and, in the service, a job slot) forever.
 */
export interface StallRule {
  windowMs: number;
  minBytesPerSecond: number;
}

export const DEFAULT_STALL: StallRule = { windowMs: 30_000, minBytesPerSecond: 1024 };

export interface RegistryClientOptions {
  /** Registry host with port, as in references (docker.io is mapped to its API host). */
  host: string;
  insecure?: boolean;
  credentials?: Credentials | undefined;
  /**
   * Without `credentials`: where a repository's credentials are looked for once the registry asks for
   * authentication (the OS keyring; see Authenticator).
   */
  lateCredentials?: ((repository: string) => Promise<Credentials | undefined>) | undefined;
  /** Directory holding *.crt CA files, like skopeo --cert-dir. */
  certDir?: string | undefined;
  /** Parallel connections to this registry. */
  connections?: number | undefined;
  /** At most this many requests per second (stowage.toml [registries."HOST"]). */
  requestsPerSecond?: number | undefined;
  retry?: Partial<RetryOptions>;
  /** Checks every host the registry sends the client to (token realm, redirects, upload locations). */
  guard?: OutboundGuard | undefined;
  /** When a body counts as stalled (default DEFAULT_STALL). */
  stall?: Partial<StallRule> | undefined;
}

export interface ManifestResponse {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface BlobResponse {
  body: AsyncIterable<Uint8Array>;
  /** Content-Length when the registry sent one. */
  size: number | undefined;
}

/** One open GET of a blob: its body, the controller that cuts it, and how to let go of the caller's signal. */
interface OpenBlob {
  body: AsyncIterable<Uint8Array>;
  size: number | undefined;
  cut: AbortController;
  /** Bytes at the start of `body` already passed on (a registry that ignored Range). */
  skip: number;
  release: () => void;
}

interface RegistryErrorBody {
  errors?: { code?: string; message?: string }[];
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

function isTlsError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  return (
    /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS|ERR_SSL|EPROTO/.test(code) ||
    /SSL|TLS|certificate/i.test((e as Error)?.message ?? '')
  );
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Longest wait for a registry's rate-limit window; longer, and the request fails (RATE_LIMITED). */
const MAX_RATE_LIMIT_WAIT_MS = 5 * 60_000;

/** One request to a registry as it ended: for metrics (status 0: no answer). */
export interface RegistryRequestRecord {
  host: string;
  method: string;
  status: number;
  seconds: number;
}

/** Called for every request any client makes (the service counts them); empty in the CLI. */
export const registryRequestObservers = new Set<(r: RegistryRequestRecord) => void>();

function observe(host: string, method: string, status: number, started: number): void {
  if (registryRequestObservers.size === 0) return;
  const r = { host, method, status, seconds: (performance.now() - started) / 1000 };
  for (const o of registryRequestObservers) o(r);
}

/** An OCI distribution client for one registry, on one undici agent with keep-alive. */
export class RegistryClient {
  readonly host: string;
  readonly insecure: boolean;
  private readonly apiHost: string;
  private readonly dispatcher: Dispatcher;
  private readonly agent: Agent;
  private readonly auth: Authenticator;
  private origin: Promise<string> | undefined;
  private readonly interval: number;
  private nextSlot = 0;
  private readonly stall: StallRule;
  private readonly retry: RetryOptions;
  private readonly guard: OutboundGuard | undefined;

  constructor(opts: RegistryClientOptions) {
    this.host = opts.host;
    this.insecure = opts.insecure ?? false;
    this.interval = opts.requestsPerSecond ? 1000 / opts.requestsPerSecond : 0;
    this.apiHost = opts.host === DEFAULT_DOMAIN ? DOCKER_HUB_API_HOST : opts.host;
    const retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.retry = retry;
    this.stall = { ...DEFAULT_STALL, ...opts.stall };
    // One TLS context for all of the client's connections: given a CA list instead, Node parses every
    // certificate in it again for each connection (35 ms apiece here with the ~140 roots). An insecure
    // registry's certificate is not checked, so its context holds no CAs (building the default root
    // store would cost the first connection about 28 ms for nothing).
    const ca = this.insecure ? [] : extraCAs(this.apiHost, opts.certDir);
    this.agent = new Agent({
      connections: opts.connections ?? 8,
      keepAliveTimeout: 30_000,
      headersTimeout: 60_000,
      bodyTimeout: 120_000,
      connect: {
        ...(ca ? { secureContext: createSecureContext({ ca }) } : {}),
        rejectUnauthorized: !this.insecure,
      },
    });
    this.dispatcher = this.agent.compose(
      interceptors.retry({
        maxRetries: retry.maxRetries,
        minTimeout: retry.minTimeoutMs,
        maxTimeout: retry.maxTimeoutMs,
        timeoutFactor: 2,
        throwOnError: false,
        // 429 is answered in request(): its Retry-After is honoured in full or refused, never cut short.
        statusCodes: [500, 502, 503, 504],
      }),
    );
    this.guard = opts.guard;
    this.auth = new Authenticator({
      host: this.host,
      dispatcher: this.dispatcher,
      credentials: opts.credentials,
      insecure: this.insecure,
      userAgent: USER_AGENT,
      late: opts.lateCredentials,
      guard: opts.guard,
    });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** GET /v2/: finds the scheme (HTTPS, or HTTP for an insecure registry) and the auth challenge. */
  ping(signal?: AbortSignal): Promise<string> {
    this.origin ??= this.discover(signal);
    this.origin.catch(() => {
      this.origin = undefined;
    });
    return this.origin;
  }

  private async discover(signal?: AbortSignal): Promise<string> {
    const ask = async (scheme: 'https' | 'http') => {
      const origin = `${scheme}://${this.apiHost}`;
      await this.pace();
      const res = await this.dispatcher.request({
        origin,
        path: '/v2/',
        method: 'GET',
        headers: { 'user-agent': USER_AGENT },
        signal: signal ?? null,
      });
      await res.body.dump();
      if (res.statusCode !== 200 && res.statusCode !== 401) {
        throw new StowageError(
          'REGISTRY',
          `${this.host} answered HTTP ${res.statusCode} at /v2/; it does not look like an OCI registry`,
        );
      }
      return { origin, challenge: res.statusCode === 401 ? res.headers['www-authenticate'] : undefined };
    };
    const settle = ({ origin, challenge }: Awaited<ReturnType<typeof ask>>) => {
      if (challenge !== undefined) this.auth.setChallenge(challenge);
      return origin;
    };
    const final = (e: unknown) =>
      e instanceof StowageError || (e as Error).name === 'AbortError' ? e : this.connectionError(e);
    // An insecure registry may serve HTTPS (its certificate unchecked) or plain HTTP. Both are asked at
    // once, saving a round trip: HTTPS wins when it answers, as it would if asked first.
    const https = ask('https');
    const http = this.insecure ? ask('http') : undefined;
    http?.catch(() => {});
    try {
      return settle(await https);
    } catch (e) {
      if (!http || e instanceof StowageError || (e as Error).name === 'AbortError') throw final(e);
    }
    try {
      return settle(await http);
    } catch (e) {
      throw final(e);
    }
  }

  private connectionError(e: unknown): StowageError {
    if (e instanceof StowageError) return e;
    const msg = ((e as Error)?.message ?? String(e)).split('\n')[0]!;
    if (/wrong version number|packet length too long|http request/i.test(msg)) {
      return new StowageError(
        'TLS',
        `${this.host} does not answer with TLS (it may serve plain HTTP); if that is intended, mark it insecure (--tls-verify=false or insecure = true in registries.conf)`,
        { cause: e },
      );
    }
    if (isTlsError(e)) {
      return new StowageError(
        'TLS',
        `TLS connection to ${this.host} failed: ${msg}; give its CA with --cert-dir or /etc/containers/certs.d/${this.apiHost}/ca.crt, or, for a test registry, mark it insecure (--tls-verify=false or insecure = true in registries.conf)`,
        { cause: e },
      );
    }
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code && NETWORK_CODES.has(code)) {
      return new StowageError(
        'NETWORK',
        `cannot reach registry ${this.host}: ${msg} (${code}); check that it is up and reachable`,
        { cause: e, retryable: true },
      );
    }
    return new StowageError('NETWORK', `request to registry ${this.host} failed: ${msg}`, {
      cause: e,
      retryable: true,
    });
  }

  /**
   * One request with authorization: answers a 401 challenge once (fetching a token for `scope`),
   * maps 401/403 to UNAUTHORIZED/DENIED. Other statuses are returned to the caller. Reads go through
   * the retrying dispatcher; writes (whose bodies may be streams that cannot be sent twice) do not:
   * the push engine retries them whole.
   */
  private async request(opts: {
    method: Method;
    path: string;
    /** An absolute URL (an upload location), instead of `path` on the registry's origin. */
    url?: URL | undefined;
    scope: string;
    headers?: Record<string, string>;
    body?: Buffer | AsyncIterable<Uint8Array> | undefined;
    signal?: AbortSignal | undefined;
    what: string;
  }): Promise<Dispatcher.ResponseData> {
    // One signal serves many requests at once (a sync's tags, a pull's blobs), each listening for
    // its abort: no leak, so no warning.
    if (opts.signal) setMaxListeners(0, opts.signal);
    const origin = await this.ping(opts.signal);
    let target = opts.url ?? new URL(opts.path, origin);
    if (target.origin !== origin) this.checkOutbound(target, 'redirect', opts.what);
    const write = opts.method !== 'GET' && opts.method !== 'HEAD';
    const replayable = opts.body === undefined || Buffer.isBuffer(opts.body);
    const visited: string[] = [];
    let challenged = false;
    let throttled = 0;
    for (;;) {
      // Credentials go to the registry's own origin only, never to a host an upload location or a
      // redirect names.
      const sameOrigin = target.origin === origin;
      const authorization = sameOrigin ? await this.auth.authorization(opts.scope, opts.signal) : undefined;
      // Every request waits its turn: a retry after a 401, a redirect or a 429 counts as one too.
      await this.pace();
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...opts.headers };
      if (authorization) headers.authorization = authorization;
      let res: Dispatcher.ResponseData;
      const started = performance.now();
      try {
        const dispatcher: Dispatcher = write ? this.agent : this.dispatcher;
        res = await dispatcher.request({
          origin: target.origin,
          path: target.pathname + target.search,
          method: opts.method,
          headers,
          // undici streams async iterables as request bodies; its types only list Readable.
          body: (opts.body ?? null) as Buffer | null,
          signal: opts.signal ?? null,
          // undici closes the connection after every HEAD unless told not to (in case a server sends a
          // body with its answer, which registries do not): a sync's HEADs would each open a new one.
          reset: false,
        });
      } catch (e) {
        observe(this.host, opts.method, 0, started);
        if (e instanceof StowageError) throw e;
        if ((e as Error).name === 'AbortError') throw new StowageError('ABORTED', `${opts.what}: aborted`);
        throw this.connectionError(e);
      }
      observe(this.host, opts.method, res.statusCode, started);
      this.noteRateLimit(res.headers);
      if (res.statusCode === 429 && !write && throttled < this.retry.maxRetries) {
        await res.body.dump();
        throttled++;
        await this.waitOut(res.headers['retry-after'], throttled, opts.what, opts.signal);
        continue;
      }
      if (!write && REDIRECTS.has(res.statusCode)) {
        await res.body.dump();
        target = this.redirectTarget(res, target, visited, opts.what);
        continue;
      }
      if (res.statusCode === 401) {
        await res.body.dump();
        if (!challenged && replayable && this.auth.setChallenge(res.headers['www-authenticate'])) {
          challenged = true;
          this.auth.invalidate(opts.scope);
          continue;
        }
        throw new StowageError(
          'UNAUTHORIZED',
          (await this.auth.credentialsFor(opts.scope))
            ? `${this.host} rejected the credentials for ${opts.what} (HTTP 401); check the username and password`
            : `${this.host} requires authentication for ${opts.what} (HTTP 401); pass --creds USER:PASS or add credentials to auth.json`,
        );
      }
      if (res.statusCode === 403) {
        const detail = await this.errorDetail(res);
        throw new StowageError(
          'DENIED',
          `${this.host} denied access to ${opts.what} (HTTP 403${detail}); check that the account may ${write || opts.scope.includes('push') ? 'push to' : 'read'} it`,
        );
      }
      return res;
    }
  }

  /**
   * Waits as long as a 429's Retry-After asks (seconds or an HTTP date; without one, backoff that
   * doubles from the retry minimum). A wait over the cap fails at once: waiting hours helps nobody, and
   * asking again early is what gets a client banned.
   */
  private async waitOut(
    header: string | string[] | undefined,
    attempt: number,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const value = (Array.isArray(header) ? header[0] : header)?.trim();
    let ms: number | undefined;
    if (value && /^\d+$/.test(value)) ms = Number(value) * 1000;
    else if (value && Number.isFinite(Date.parse(value))) ms = Math.max(0, Date.parse(value) - Date.now());
    ms ??= Math.min(this.retry.minTimeoutMs * 2 ** (attempt - 1), this.retry.maxTimeoutMs);
    if (ms > MAX_RATE_LIMIT_WAIT_MS) {
      throw new StowageError(
        'RATE_LIMITED',
        `${this.host} answered ${what} with 429 Too Many Requests and asks to wait ${Math.ceil(ms / 1000)} s (Retry-After); try again later, or lower requests-per-second for it`,
        { retryable: false },
      );
    }
    await new Promise<void>((resolve, reject) => {
      // The caller's signal often outlives this wait (a sync's one signal): its listener goes with it.
      const onAbort = () => {
        clearTimeout(timer);
        reject(new StowageError('ABORTED', `${what}: aborted`));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Where a redirect leads; a loop, too many hops or a host the guard refuses end the request. */
  private redirectTarget(res: Dispatcher.ResponseData, from: URL, visited: string[], what: string): URL {
    const location = res.headers.location;
    let next: URL;
    try {
      if (typeof location !== 'string' || !location) throw new Error('no location');
      next = new URL(location, from);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new Error('not http(s)');
    } catch {
      throw new StowageError(
        'REGISTRY',
        `${this.host} answered ${what} with a redirect (HTTP ${res.statusCode}) that names no usable location`,
      );
    }
    visited.push(from.href);
    if (visited.includes(next.href)) {
      throw new StowageError(
        'REGISTRY',
        `${this.host} redirects ${what} in a loop (back to ${next.host}${next.pathname}); the registry or a proxy in front of it is misconfigured`,
      );
    }
    if (visited.length > MAX_REDIRECTS) {
      throw new StowageError(
        'REGISTRY',
        `${this.host} redirected ${what} more than ${MAX_REDIRECTS} times; the registry or a proxy in front of it is misconfigured`,
      );
    }
    this.checkOutbound(next, 'redirect', what);
    return next;
  }

  /** Refuses a host outside what the guard allows (the service's allow-lists). */
  private checkOutbound(url: URL, kind: 'redirect', what: string): void {
    const refused = this.guard?.(url, kind);
    if (refused) {
      throw new StowageError('BLOCKED', `${this.host} sends ${what} to ${url.host}, which ${refused}`);
    }
  }

  /**
   * Reads a response's rate-limit headers (RateLimit-Remaining / RateLimit-Reset, as Docker Hub and the
   * IETF draft spell them): none left means no request to this registry until the window resets.
   */
  private noteRateLimit(headers: Dispatcher.ResponseData['headers']): void {
    const first = (name: string) => {
      const v = headers[name];
      return (Array.isArray(v) ? v[0] : v)?.trim();
    };
    const remaining = first('ratelimit-remaining');
    if (remaining === undefined || Number.parseInt(remaining, 10) !== 0) return;
    const seconds = (v: string | undefined) => {
      const n = v === undefined ? Number.NaN : Number.parseInt(v, 10);
      return Number.isFinite(n) && n >= 0 ? n : undefined;
    };
    // Reset in seconds; else Retry-After; else the window (";w=SECONDS") the limit counts over.
    const wait =
      seconds(first('ratelimit-reset')) ??
      seconds(first('retry-after')) ??
      seconds(/;\s*w=(\d+)/.exec(remaining)?.[1]) ??
      60;
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + wait * 1000);
  }

  private pausedUntil = 0;

  /** Waits for this request's turn: the registry's own rate limit, then the requests-per-second limit. */
  private async pace(): Promise<void> {
    const paused = this.pausedUntil - Date.now();
    if (paused > 0) {
      if (paused > MAX_RATE_LIMIT_WAIT_MS) {
        throw new StowageError(
          'RATE_LIMITED',
          `${this.host} says its rate limit is used up for ${Math.ceil(paused / 1000)} s more (RateLimit-Remaining: 0); try again later, or lower requests-per-second for it`,
          { retryable: false },
        );
      }
      await new Promise((r) => setTimeout(r, paused));
    }
    if (!this.interval) return;
    const now = Date.now();
    const at = Math.max(now, this.nextSlot);
    this.nextSlot = at + this.interval;
    if (at > now) await new Promise((r) => setTimeout(r, at - now));
  }

  private async errorDetail(res: Dispatcher.ResponseData): Promise<string> {
    if (res.statusCode >= 200 && res.statusCode < 300) return '';
    try {
      const text = (await res.body.text()).slice(0, 4096);
      const body = JSON.parse(text) as RegistryErrorBody;
      const e = body.errors?.[0];
      if (e?.code) return `: ${e.code}${e.message ? ` ${e.message}` : ''}`.slice(0, 300);
    } catch {
      // not a registry error body
    }
    return '';
  }

  private async unexpected(res: Dispatcher.ResponseData, what: string): Promise<StowageError> {
    const detail = await this.errorDetail(res);
    return new StowageError('REGISTRY', `${this.host} answered HTTP ${res.statusCode} for ${what}${detail}`, {
      retryable: res.statusCode >= 500 || res.statusCode === 429,
    });
  }

  /** GET a manifest or index by tag or digest, verifying its digest and refusing schema 1. */
  async getManifest(repo: string, reference: string, signal?: AbortSignal): Promise<ManifestResponse> {
    const what = `manifest ${this.host}/${repo}${reference.includes(':') ? '@' : ':'}${reference}`;
    const res = await this.request({
      method: 'GET',
      path: `/v2/${repo}/manifests/${reference}`,
      scope: `repository:${repo}:pull`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      signal,
      what,
    });
    if (res.statusCode === 404) {
      const detail = await this.errorDetail(res);
      throw new StowageError('NOT_FOUND', `${what} not found (HTTP 404${detail}); check the name and tag`);
    }
    if (res.statusCode !== 200) throw await this.unexpected(res, what);
    const mediaType = String(res.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    const length = Number(res.headers['content-length']);
    if (length > MAX_MANIFEST_BYTES) {
      await res.body.dump();
      throw new StowageError(
        'TOO_LARGE',
        `${what} is ${length} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit for manifests`,
      );
    }
    const bytes = await readLimited(res.body, MAX_MANIFEST_BYTES, what);
    let mt = mediaType;
    if (!mt || mt === 'application/octet-stream' || mt === 'text/plain') mt = sniffMediaType(bytes);
    if (isSchema1MediaType(mt)) {
      throw new StowageError(
        'UNSUPPORTED',
        `${what} is a Docker schema 1 manifest, which stowage does not support; push the image again with a current client (schema 2 or OCI)`,
      );
    }
    const digest = sha256Digest(bytes);
    const expected = reference.includes(':') ? reference : String(res.headers['docker-content-digest'] ?? '');
    if (expected.startsWith('sha256:') && expected !== digest) {
      throw digestMismatch(what, digest, expected, 'the registry or a proxy served corrupted data');
    }
    return { bytes, mediaType: mt, digest };
  }

  /**
   * HEAD a manifest: its digest (Docker-Content-Digest), media type and size, without a GET (Docker Hub
   * does not count it as a pull). Undefined when the registry has no such tag or digest.
   */
  async headManifest(
    repo: string,
    reference: string,
    signal?: AbortSignal,
  ): Promise<{ digest: string; mediaType: string; size: number } | undefined> {
    const what = `manifest ${this.host}/${repo}${reference.includes(':') ? '@' : ':'}${reference}`;
    const res = await this.request({
      method: 'HEAD',
      path: `/v2/${repo}/manifests/${reference}`,
      scope: `repository:${repo}:pull`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      signal,
      what,
    });
    await res.body.dump();
    if (res.statusCode === 404) return undefined;
    if (res.statusCode !== 200) throw await this.unexpected(res, what);
    const digest = String(res.headers['docker-content-digest'] ?? '');
    if (!digest.startsWith('sha256:')) {
      throw new StowageError(
        'REGISTRY',
        `${this.host} answered HEAD of ${what} without Docker-Content-Digest`,
      );
    }
    const mediaType = String(res.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    return { digest, mediaType, size: Number(res.headers['content-length'] ?? 0) };
  }

  /**
   * GET a blob as a stream. The caller verifies the digest while consuming it. A body that stalls (see
   * StallRule) or breaks off is resumed where it stopped with a Range request, up to the retry count.
   */
  async getBlob(repo: string, digest: string, signal?: AbortSignal): Promise<BlobResponse> {
    const what = `blob ${digest} of ${this.host}/${repo}`;
    const first = await this.blobRequest(repo, digest, 0, signal, what);
    return { body: this.resumingBody(repo, digest, first, signal, what), size: first.size };
  }

  /** One GET of a blob from `offset` on, with its own abort controller for the stall watch. */
  private async blobRequest(
    repo: string,
    digest: string,
    offset: number,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<OpenBlob> {
    const cut = new AbortController();
    // The caller's abort reaches this request through `cut`, by a listener removed as soon as the
    // request is over: a sync's one signal serves thousands of blob requests, and each would otherwise
    // leave a dependent signal behind until it is garbage-collected.
    const forward = () => cut.abort(signal?.reason);
    if (signal?.aborted) forward();
    signal?.addEventListener('abort', forward, { once: true });
    const release = () => signal?.removeEventListener('abort', forward);
    try {
      return await this.openBlob(repo, digest, offset, cut, release, what);
    } catch (e) {
      release();
      throw e;
    }
  }

  private async openBlob(
    repo: string,
    digest: string,
    offset: number,
    cut: AbortController,
    release: () => void,
    what: string,
  ): Promise<OpenBlob> {
    const res = await this.request({
      method: 'GET',
      path: `/v2/${repo}/blobs/${digest}`,
      scope: `repository:${repo}:pull`,
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      signal: cut.signal,
      what,
    });
    if (res.statusCode === 404) {
      await res.body.dump();
      throw new StowageError(
        'NOT_FOUND',
        `${what} not found (HTTP 404); the image in the registry is incomplete`,
      );
    }
    if (offset > 0 && res.statusCode === 206) {
      const start = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''))?.[1];
      if (Number(start) !== offset) {
        res.body.destroy();
        throw new StowageError('REGISTRY', `${this.host} answered a resumed ${what} with the wrong range`);
      }
      return { body: res.body, size: undefined, cut, skip: 0, release };
    }
    if (res.statusCode !== 200) throw await this.unexpected(res, what);
    const len = res.headers['content-length'];
    // A registry that ignores Range sends the whole blob again: the bytes already passed on are skipped.
    return { body: res.body, size: len === undefined ? undefined : Number(len), cut, skip: offset, release };
  }

  /**
   * A blob's bytes across as many requests as it takes: each is watched for stalls, and a stalled or
   * broken one is followed by a request for the rest. Transport errors that remain become NETWORK
   * errors naming the blob.
   */
  private async *resumingBody(
    repo: string,
    digest: string,
    first: OpenBlob,
    signal: AbortSignal | undefined,
    what: string,
  ): AsyncGenerator<Uint8Array> {
    let current = first;
    let offset = 0;
    for (let resumes = 0; ; resumes++) {
      try {
        let skip = current.skip;
        for await (let chunk of watchStalls(current.body, this.stall, current.cut)) {
          if (skip > 0) {
            const drop = Math.min(skip, chunk.byteLength);
            skip -= drop;
            chunk = chunk.subarray(drop);
            if (chunk.byteLength === 0) continue;
          }
          offset += chunk.byteLength;
          yield chunk;
        }
        current.release();
        return;
      } catch (e) {
        current.release();
        if (signal?.aborted) throw new StowageError('ABORTED', `${what}: aborted`);
        const stalled = e instanceof StallError;
        if (e instanceof StowageError) throw e;
        if (resumes >= this.retry.maxRetries) {
          if (stalled) {
            throw new StowageError(
              'NETWORK',
              `${what}: transfer stalled (${e.message}) ${resumes + 1} times; the registry or the network is too slow; raise the retries, or lower low-speed-limit / raise low-speed-time`,
              { cause: e, retryable: true },
            );
          }
          const err = this.connectionError(e);
          throw new StowageError(err.code, `${what}: transfer failed: ${err.message}`, { cause: e });
        }
        current = await this.blobRequest(repo, digest, offset, signal, what);
      }
    }
  }
  /**
   * The last `length` bytes of a blob of `size` bytes, with a Range request; undefined when the registry
   * does not answer with exactly that range (it may ignore Range: the body is then not read).
   */
  async getBlobTail(
    repo: string,
    digest: string,
    size: number,
    length: number,
    signal?: AbortSignal,
  ): Promise<Buffer | undefined> {
    if (size < length) return undefined;
    const res = await this.request({
      method: 'GET',
      path: `/v2/${repo}/blobs/${digest}`,
      scope: `repository:${repo}:pull`,
      headers: { range: `bytes=${size - length}-${size - 1}` },
      signal,
      what: `the end of blob ${digest} of ${this.host}/${repo}`,
    });
    if (res.statusCode !== 206) {
      res.body.destroy();
      return undefined;
    }
    const bytes = await readLimited(res.body, length, `the end of blob ${digest}`).catch(() => undefined);
    return bytes?.length === length ? bytes : undefined;
  }

  /**
   * Small blobs (configs) read while planning, kept for the client's life so that copying them, in
   * this job or another of the run, costs no second request. Bounded: the oldest go first.
   */
  private readonly kept = new Map<string, Buffer>();
  private keptBytes = 0;

  private readonly reading = new Map<string, Promise<Buffer>>();

  keptBlob(repo: string, digest: string): Buffer | undefined {
    return this.kept.get(`${repo}@${digest}`);
  }

  /**
   * A small blob, read once however many ask at once, checked by `verify`, then kept (see keptBlob).
   */
  readKept(
    repo: string,
    digest: string,
    signal: AbortSignal | undefined,
    verify: (b: Buffer) => void,
  ): Promise<Buffer> {
    const key = `${repo}@${digest}`;
    const kept = this.kept.get(key);
    if (kept) return Promise.resolve(kept);
    let p = this.reading.get(key);
    if (!p) {
      p = this.getBlobBytes(repo, digest, signal).then((bytes) => {
        verify(bytes);
        this.keep(key, bytes);
        return bytes;
      });
      this.reading.set(key, p);
      void p.finally(() => this.reading.delete(key)).catch(() => {});
    }
    return p;
  }

  private keep(key: string, bytes: Buffer): void {
    if (this.kept.has(key) || bytes.length > MAX_MANIFEST_BYTES) return;
    this.kept.set(key, bytes);
    this.keptBytes += bytes.length;
    for (const [k, b] of this.kept) {
      if (this.keptBytes <= MAX_KEPT_BYTES) break;
      this.kept.delete(k);
      this.keptBytes -= b.length;
    }
  }

  /** Reads a small blob (a config) into memory with the manifest size limit. */
  async getBlobBytes(repo: string, digest: string, signal?: AbortSignal): Promise<Buffer> {
    const { body } = await this.getBlob(repo, digest, signal);
    return readLimited(body, MAX_MANIFEST_BYTES, `blob ${digest}`);
  }

  /** Whether the repository has a blob (HEAD). */
  async hasBlob(repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    const what = `blob ${digest} in ${this.host}/${repo}`;
    const res = await this.request({
      method: 'HEAD',
      path: `/v2/${repo}/blobs/${digest}`,
      scope: pushScope(repo),
      signal,
      what,
    });
    await res.body.dump();
    if (res.statusCode === 200) return true;
    if (res.statusCode === 404) return false;
    throw await this.unexpected(res, what);
  }

  /**
   * Starts a blob upload. With `mount`, first asks the registry to link the blob from another of its
   * repositories (one token for pull on that one and push on this one): `mounted` when it did, else
   * the upload session the registry opened instead.
   */
  async startUpload(
    repo: string,
    mount: { digest: string; from: string } | undefined,
    signal?: AbortSignal,
  ): Promise<{ mounted: true } | ({ mounted: false } & UploadSession)> {
    const what = `an upload to ${this.host}/${repo}`;
    const query = mount
      ? `?${new URLSearchParams({ mount: mount.digest, from: mount.from }).toString()}`
      : '';
    const res = await this.request({
      method: 'POST',
      path: `/v2/${repo}/blobs/uploads/${query}`,
      scope: mount ? `${pushScope(repo)} repository:${mount.from}:pull` : pushScope(repo),
      headers: { 'content-length': '0' },
      signal,
      what,
    });
    if (mount && res.statusCode === 201) {
      await res.body.dump();
      return { mounted: true };
    }
    if (res.statusCode !== 202) {
      if (res.statusCode === 404) {
        const detail = await this.errorDetail(res);
        throw new StowageError('NOT_FOUND', `${this.host} refused ${what} (HTTP 404${detail})`);
      }
      throw await this.unexpected(res, what);
    }
    await res.body.dump();
    return { mounted: false, ...(await this.session(res, what)) };
  }

  private async session(res: Dispatcher.ResponseData, what: string): Promise<UploadSession> {
    const location = res.headers.location;
    if (typeof location !== 'string' || !location) {
      throw new StowageError('REGISTRY', `${this.host} answered ${what} without a Location`);
    }
    const min = Number(res.headers['oci-chunk-min-length']);
    return {
      location: new URL(location, await this.ping()),
      minChunk: Number.isSafeInteger(min) && min > 0 ? min : undefined,
    };
  }

  /** Sends `length` bytes of an upload as one chunk (PATCH); returns where the next goes. */
  async patchUpload(
    session: UploadSession,
    repo: string,
    start: number,
    length: number,
    body: AsyncIterable<Uint8Array> | Buffer,
    signal?: AbortSignal,
  ): Promise<UploadSession> {
    const what = `bytes ${start}-${start + length - 1} of an upload to ${this.host}/${repo}`;
    const res = await this.request({
      method: 'PATCH',
      path: '',
      url: session.location,
      scope: pushScope(repo),
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(length),
        'content-range': `${start}-${start + length - 1}`,
      },
      body,
      signal,
      what,
    });
    if (res.statusCode !== 202) throw await this.unexpected(res, what);
    await res.body.dump();
    const next = await this.session(res, what);
    return { location: next.location, minChunk: next.minChunk ?? session.minChunk };
  }

  /** Completes an upload (PUT with ?digest=), with the final bytes as body (all of them, for a monolithic upload). */
  async finishUpload(
    session: UploadSession,
    repo: string,
    digest: string,
    length: number,
    body: AsyncIterable<Uint8Array> | Buffer | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    const what = `blob ${digest} to ${this.host}/${repo}`;
    const url = new URL(session.location);
    url.searchParams.set('digest', digest);
    const res = await this.request({
      method: 'PUT',
      path: '',
      url,
      scope: pushScope(repo),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) },
      body: body ?? Buffer.alloc(0),
      signal,
      what,
    });
    if (res.statusCode !== 201) {
      if (res.statusCode === 400) {
        const detail = await this.errorDetail(res);
        throw new StowageError(
          detail.includes('DIGEST_INVALID') ? 'DIGEST_MISMATCH' : 'REGISTRY',
          `${this.host} refused ${what} (HTTP 400${detail})`,
        );
      }
      throw await this.unexpected(res, what);
    }
    await res.body.dump();
    const got = res.headers['docker-content-digest'];
    if (typeof got === 'string' && got && got !== digest) {
      throw digestMismatch(what, got, digest, 'the registry stored something else');
    }
  }

  /** Abandons an upload (best effort: the registry garbage-collects it anyway). */
  async cancelUpload(session: UploadSession, repo: string): Promise<void> {
    try {
      const res = await this.request({
        method: 'DELETE',
        path: '',
        url: session.location,
        scope: pushScope(repo),
        what: `cancelling an upload to ${this.host}/${repo}`,
        signal: AbortSignal.timeout(10_000),
      });
      await res.body.dump();
    } catch {
      // Nothing to do: an upload left behind expires on the registry.
    }
  }

  /** PUTs a manifest or index with its exact bytes; returns the digest the registry reports. */
  async putManifest(
    repo: string,
    reference: string,
    bytes: Buffer,
    mediaType: string,
    signal?: AbortSignal,
  ): Promise<string> {
    const what = `manifest ${this.host}/${repo}${reference.includes(':') ? '@' : ':'}${reference}`;
    const res = await this.request({
      method: 'PUT',
      path: `/v2/${repo}/manifests/${reference}`,
      scope: pushScope(repo),
      headers: { 'content-type': mediaType },
      body: bytes,
      signal,
      what,
    });
    if (res.statusCode !== 201 && res.statusCode !== 200) {
      if (res.statusCode === 400 || res.statusCode === 404) {
        const detail = await this.errorDetail(res);
        throw new StowageError('REGISTRY', `${this.host} refused ${what} (HTTP ${res.statusCode}${detail})`);
      }
      throw await this.unexpected(res, what);
    }
    await res.body.dump();
    const digest = sha256Digest(bytes);
    const got = res.headers['docker-content-digest'];
    if (typeof got === 'string' && got && got !== digest) {
      throw digestMismatch(what, got, digest, 'the registry changed the manifest');
    }
    return digest;
  }

  /**
   * Checks the client's credentials against the registry (GET /v2/ with them, after a token exchange
   * for token auth). Returns false when the registry does not ask for credentials at all.
   */
  async verifyLogin(signal?: AbortSignal): Promise<boolean> {
    await this.ping(signal);
    if (!this.auth.challenged) return false;
    const what = `a login to ${this.host}`;
    const res = await this.request({ method: 'GET', path: '/v2/', scope: '', signal, what });
    await res.body.dump();
    if (res.statusCode !== 200) throw await this.unexpected(res, what);
    return true;
  }

  /**
   * All tags of a repository, following Link pagination, each tag once. A registry whose `next` link
   * does not move forward (the same page again, or one already read) would make this loop forever:
   * it ends the listing with an error, as does reaching the page cap; neither is ever a short success.
   */
  async listTags(repo: string, signal?: AbortSignal): Promise<string[]> {
    const tags = new Set<string>();
    let path: string | undefined = `/v2/${repo}/tags/list?n=1000`;
    const what = `tags of ${this.host}/${repo}`;
    const visited = new Set<string>();
    while (path) {
      if (visited.has(path)) {
        throw new StowageError(
          'REGISTRY',
          `${this.host} sent a pagination link for the ${what} that points back at a page already read (${path}); the registry's tag listing is broken, report it to its operator`,
        );
      }
      if (visited.size >= MAX_TAG_PAGES) {
        throw new StowageError(
          'REGISTRY',
          `${this.host} is still paginating the ${what} after ${MAX_TAG_PAGES} pages; stowage stops there rather than return a partial list`,
        );
      }
      visited.add(path);
      const res = await this.request({ method: 'GET', path, scope: `repository:${repo}:pull`, signal, what });
      if (res.statusCode === 404) {
        const detail = await this.errorDetail(res);
        throw new StowageError('NOT_FOUND', `repository ${this.host}/${repo} not found (HTTP 404${detail})`);
      }
      if (res.statusCode !== 200) throw await this.unexpected(res, what);
      const text = (await readLimited(res.body, 64 * 1024 * 1024, what)).toString('utf8');
      let body: { tags?: string[] | null };
      try {
        body = JSON.parse(text) as { tags?: string[] | null };
      } catch {
        throw new StowageError(
          'REGISTRY',
          `${this.host} answered the tag list of ${repo} with something that is not JSON`,
        );
      }
      const before = tags.size;
      for (const t of body.tags ?? []) tags.add(t);
      const next = nextLink(res.headers.link);
      // A next page that adds nothing new and points to a `last` we already passed is a loop too.
      if (next && tags.size === before && (body.tags?.length ?? 0) > 0 && !advances(path, next)) {
        throw new StowageError(
          'REGISTRY',
          `${this.host} sent a pagination link for the ${what} that does not move forward (${next} after ${path}); the registry's tag listing is broken, report it to its operator`,
        );
      }
      path = next;
    }
    return [...tags];
  }
}

/** What a client keeps of small blobs read while planning (configs are a few KiB each). */
const MAX_KEPT_BYTES = 16 * 1024 * 1024;

/** More pages than any real repository has (10 million tags at 1000 a page). */
const MAX_TAG_PAGES = 10_000;

/** Whether a next link's `last=` cursor is past the current page's (a listing moves forward in tag order). */
function advances(current: string, next: string): boolean {
  const last = (p: string) => new URL(p, 'http://registry.invalid').searchParams.get('last');
  const a = last(current);
  const b = last(next);
  return a === null || b === null || b > a;
}

/** The path of a Link: <...>; rel="next" header, restricted to the same origin. */
export function nextLink(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header.join(', ') : header;
  if (!value) return undefined;
  const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(value);
  if (!m) return undefined;
  const url = new URL(m[1]!, 'http://registry.invalid');
  return url.pathname + url.search;
}

/** A body that moved too slowly for the stall rule. */
class StallError extends Error {}

const STALLED = Symbol('stalled');

/**
 * Passes a body's chunks on, failing with StallError (and cutting the request) when fewer than the
 * rule's bytes arrive over its window. Only time spent waiting on the registry counts: while the
 * consumer holds a chunk (a slow disk), the clock stops, so back-pressure is never taken for a stall.
 */
export async function* watchStalls(
  body: AsyncIterable<Uint8Array>,
  rule: StallRule,
  cut: AbortController,
): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  const minBytes = (rule.minBytesPerSecond * rule.windowMs) / 1000;
  let waited = 0;
  let got = 0;
  let pending: Promise<IteratorResult<Uint8Array>> | undefined;
  let done = false;
  const check = () => {
    if (waited < rule.windowMs) return;
    if (got < minBytes) {
      const err = new StallError(
        `${got} bytes in ${Math.round(waited / 1000)} s, under the low-speed limit of ${rule.minBytesPerSecond} bytes/s over ${rule.windowMs / 1000} s`,
      );
      pending?.catch(() => {});
      cut.abort(err);
      throw err;
    }
    waited = 0;
    got = 0;
  };
  try {
    for (;;) {
      pending ??= it.next();
      const started = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<typeof STALLED>((r) => {
        timer = setTimeout(r, Math.max(0, rule.windowMs - waited), STALLED);
      });
      let r: IteratorResult<Uint8Array> | typeof STALLED;
      try {
        r = await Promise.race([pending, timeout]);
      } finally {
        // Also when the body fails: a live timer would hold the process open for the rest of the window.
        clearTimeout(timer);
      }
      waited += performance.now() - started;
      if (r === STALLED) {
        check();
        continue;
      }
      pending = undefined;
      if (r.done) {
        done = true;
        return;
      }
      got += r.value.byteLength;
      check();
      yield r.value;
    }
  } finally {
    // Given up early (an error, or the consumer stopped reading): the request must not linger.
    if (!done && !cut.signal.aborted) cut.abort();
  }
}

function sniffMediaType(bytes: Buffer): string {
  try {
    const j = JSON.parse(bytes.toString('utf8')) as {
      mediaType?: string;
      schemaVersion?: number;
      manifests?: unknown;
    };
    if (j.mediaType) return j.mediaType;
    if (j.schemaVersion === 1) return 'application/vnd.docker.distribution.manifest.v1+json';
    return j.manifests
      ? 'application/vnd.oci.image.index.v1+json'
      : 'application/vnd.oci.image.manifest.v1+json';
  } catch {
    return 'application/octet-stream';
  }
}

export async function readLimited(
  body: AsyncIterable<Uint8Array>,
  limit: number,
  what: string,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.byteLength;
    if (n > limit) {
      throw new StowageError('TOO_LARGE', `${what} is larger than the ${limit}-byte limit`);
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}
