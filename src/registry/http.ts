/**
 * The HTTP side of a registry client: one undici agent with keep-alive (reads retried by undici's retry
 * interceptor), the scheme and auth challenge found once (GET /v2/), and one chain of round trippers
 * that every call goes through (round-trip/: redirects checked against the allow-list, authorization
 * with a 401 challenge answered once, 429 with Retry-After, pacing by requests per second and the
 * registry's own rate-limit headers, metrics on a diagnostics channel). What a status means for a
 * given call is said in one place: failure().
 */
import { setMaxListeners } from 'node:events';
import { createSecureContext } from 'node:tls';
import type { Dispatcher } from 'undici';
import { Authenticator, type OutboundGuard } from '../auth/authenticator.js';
import type { Credentials } from '../auth/authfile.js';
import { StowageError } from '../errors.js';
import { DEFAULT_DOMAIN, DOCKER_HUB_API_HOST } from '../reference/reference.js';
import { Pacer } from './pacer.js';
import { authorize } from './round-trip/authorize.js';
import { chain, isWrite, type Method, type Outgoing, type Send } from './round-trip/chain.js';
import { pace } from './round-trip/pace.js';
import { publish } from './round-trip/publish.js';
import { checkOutbound, redirects } from './round-trip/redirects.js';
import { MAX_RATE_LIMIT_WAIT_MS, throttle } from './round-trip/throttle.js';
import { answerFailure, connectionFailure, errorDetail, type StatusRules } from './status.js';
import { extraCAs } from './tls.js';
import { Agent, interceptors } from './undici.js';
import { announcedRetry } from './waits.js';

export const USER_AGENT = 'stowage/0.1';

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

/** Metrics of every request, for whoever subscribes (see round-trip/publish.ts). */
export { REGISTRY_REQUESTS_CHANNEL, type RegistryRequestRecord } from './round-trip/publish.js';

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
  private readonly send: Send;

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
        retry: announcedRetry(this.host) as never,
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
    this.send = chain(
      [
        redirects({ host: this.host, guard: this.guard }),
        authorize(this.host, this.auth),
        throttle({ host: this.host, ...retry }),
        pace(this.pacer),
        publish(this.host),
      ],
      (req) => this.sendOnce(req),
    );
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
   * One request through the chain of round trippers (round-trip/chain.ts): redirects, authorization,
   * 429s, pacing, metrics. Other statuses are returned to the caller. Reads go through the retrying
   * dispatcher; writes (whose bodies may be streams that cannot be sent twice) do not: the push engine
   * retries them whole.
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
    const url = opts.url ?? new URL(opts.path, origin);
    if (url.origin !== origin) checkOutbound({ host: this.host, guard: this.guard }, url, opts.what);
    return this.send({
      method: opts.method,
      url,
      origin,
      headers: { 'user-agent': USER_AGENT, ...opts.headers },
      body: opts.body,
      signal: opts.signal,
      scope: opts.scope,
      what: opts.what,
    });
  }

  /** The innermost step: one attempt on the wire, its failure to connect said as an error. */
  private async sendOnce(req: Outgoing): Promise<Dispatcher.ResponseData> {
    try {
      const dispatcher: Dispatcher = isWrite(req) ? this.agent : this.dispatcher;
      return await dispatcher.request({
        origin: req.url.origin,
        path: req.url.pathname + req.url.search,
        method: req.method,
        headers: req.headers,
        // undici streams async iterables as request bodies; its types only list Readable.
        body: (req.body ?? null) as Buffer | null,
        signal: req.signal ?? null,
        // undici closes the connection after every HEAD unless told not to (in case a server sends a
        // body with its answer, which registries do not): a sync's HEADs would each open a new one.
        reset: false,
      });
    } catch (e) {
      if (e instanceof StowageError) throw e;
      if ((e as Error).name === 'AbortError') throw new StowageError('ABORTED', `${req.what}: aborted`);
      throw this.connectionError(e);
    }
  }

  /** Waits for a request's turn: the registry's own rate limit, then the requests-per-second limit. */
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
