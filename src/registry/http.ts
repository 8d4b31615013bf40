/**
 * The HTTP side of a registry client: one undici agent with keep-alive (reads retried by undici's retry
 * interceptor), the scheme and auth challenge found once (GET /v2/), and one request loop that every
 * call goes through: authorization (a 401 challenge answered once), pacing (requests per second, the
 * registry's own rate-limit headers, 429 with Retry-After), redirects checked against the allow-list,
 * 401 and 403 mapped, metrics. What a status means for a given call is said in one place: failure().
 */
import { channel } from 'node:diagnostics_channel';
import { setMaxListeners } from 'node:events';
import { createSecureContext } from 'node:tls';
import type { Dispatcher } from 'undici';
import { Authenticator, type OutboundGuard } from '../auth/authenticator.js';
import type { Credentials } from '../auth/authfile.js';
import { StowageError } from '../errors.js';
import { DEFAULT_DOMAIN, DOCKER_HUB_API_HOST } from '../reference/reference.js';
import { Pacer } from './pacer.js';
import { answerFailure, connectionFailure, errorDetail, type StatusRules } from './status.js';

import { extraCAs } from './tls.js';
import { Agent, interceptors } from './undici.js';

/** Redirects followed for one request (blob downloads are sent to storage this way), as undici did. */
const MAX_REDIRECTS = 5;

export const USER_AGENT = 'stowage/0.1';

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

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

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Longest wait for a registry's rate-limit window; longer, and the request fails (RATE_LIMITED). */
const MAX_RATE_LIMIT_WAIT_MS = 5 * 60_000;

/** One request to a registry as it ended: for metrics (status 0: no answer). */
/** What is published on REGISTRY_REQUESTS for each registry request (metrics, --debug listen). */
export interface RegistryRequestRecord {
  host: string;
  method: string;
  /** 0 when no answer came (a connection failure). */
  status: number;
  seconds: number;
}

/**
 * Every registry request, as it ends, on a diagnostics channel (as undici publishes its own): whoever
 * wants them subscribes (the service's metrics, the CLI's --debug), and nothing is kept when no one does.
 */
export const REGISTRY_REQUESTS_CHANNEL = 'stowage:registry:request';
const REGISTRY_REQUESTS = channel(REGISTRY_REQUESTS_CHANNEL);

function observe(host: string, method: string, status: number, started: number): void {
  if (!REGISTRY_REQUESTS.hasSubscribers) return;
  const r: RegistryRequestRecord = { host, method, status, seconds: (performance.now() - started) / 1000 };
  REGISTRY_REQUESTS.publish(r);
}

/** An OCI distribution client for one registry, on one undici agent with keep-alive. */

/** How statuses other than the expected ones read for one kind of request (see failure()). */
/** A registry's connection, auth and request loop (see the top of the file). */
export class RegistryHttp {
  readonly host: string;
  readonly insecure: boolean;
  readonly apiHost: string;
  private readonly dispatcher: Dispatcher;
  private readonly agent: Agent;
  readonly auth: Authenticator;
  private origin: Promise<string> | undefined;
  private readonly pacer: Pacer;
  readonly stall: StallRule;
  readonly retry: RetryOptions;
  private readonly guard: OutboundGuard | undefined;

  constructor(opts: RegistryClientOptions) {
    this.host = opts.host;
    this.insecure = opts.insecure ?? false;
    this.pacer = new Pacer({
      host: this.host,
      requestsPerSecond: opts.requestsPerSecond,
      maxPauseMs: MAX_RATE_LIMIT_WAIT_MS,
    });
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

  connectionError(e: unknown): StowageError {
    return connectionFailure(e, this.host, this.apiHost);
  }

  /**
   * One request with authorization: answers a 401 challenge once (fetching a token for `scope`),
   * maps 401/403 to UNAUTHORIZED/DENIED. Other statuses are returned to the caller. Reads go through
   * the retrying dispatcher; writes (whose bodies may be streams that cannot be sent twice) do not:
   * the push engine retries them whole.
   */
  async request(opts: {
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
        if (
          !challenged &&
          replayable &&
          this.auth.setChallenge(res.headers['www-authenticate'], opts.scope)
        ) {
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
    this.pacer.pauseFor(wait);
  }

  /** Waits for this request's turn: the registry's own rate limit, then the requests-per-second limit. */
  private pace(): Promise<void> {
    return this.pacer.turn();
  }

  errorDetail(res: Dispatcher.ResponseData): Promise<string> {
    return errorDetail(res);
  }

  failure(res: Dispatcher.ResponseData, what: string, rules: StatusRules = {}): Promise<StowageError> {
    return answerFailure(res, this.host, what, rules);
  }

  /** Throws failure() unless the answer's status is one of `ok`; the body is the caller's to read. */
  async check(res: Dispatcher.ResponseData, what: string, ok: number[], rules?: StatusRules): Promise<void> {
    if (!ok.includes(res.statusCode)) throw await this.failure(res, what, rules);
  }
}
