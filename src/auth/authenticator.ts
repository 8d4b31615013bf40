import type { Dispatcher } from 'undici';
import { StowageError } from '../errors.js';
import type { Credentials } from './authfile.js';
import { type Challenge, parseChallenges } from './challenge.js';

interface CachedToken {
  token: string;
  expiresAt: number;
}

const tokenResponseSchemaKeys = ['token', 'access_token'] as const;

/**
 * Decides whether a host a registry sends the client to (its token realm, a redirect, an upload
 * location) may be reached: undefined when it may, else why not. The service passes one built from its
 * allow-lists; the CLI reaches wherever the registry points, as skopeo does.
 */
export type OutboundGuard = (url: URL, kind: 'token realm' | 'redirect') => string | undefined;

export interface AuthenticatorOptions {
  /** The registry, as in references (for messages). */
  host: string;
  dispatcher: Dispatcher;
  credentials?: Credentials | undefined;
  insecure: boolean;
  userAgent: string;
  /**
   * For a client without credentials of its own: where to look for a repository's credentials once the
   * registry asks for some (the OS keyring, whose library is then loaded, and only then).
   */
  late?: ((repository: string) => Promise<Credentials | undefined>) | undefined;
  guard?: OutboundGuard | undefined;
}

/**
 * Authorization for one registry: Basic, or Bearer tokens from the realm the registry names,
 * requested anonymously or with credentials, cached per scope until they expire.
 */
export class Authenticator {
  /** The registry's challenge, from /v2/: what every repository without one of its own answers. */
  private challenge: Challenge | undefined;
  /**
   * Challenges by repository, where a request for one got its own: a registry may send one
   * repository's clients to another realm, and a refusal of that realm must not become every other
   * repository's (it did: one refused realm failed all of a registry's repositories until restart).
   */
  private readonly repositoryChallenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();

  /** Credentials found late, by repository path (see `late`). */
  private readonly found = new Map<string, Promise<Credentials | undefined>>();

  private readonly host: string;
  private readonly dispatcher: Dispatcher;
  private readonly credentials: Credentials | undefined;
  private readonly insecure: boolean;
  private readonly userAgent: string;
  private readonly late: AuthenticatorOptions['late'];
  private readonly guard: OutboundGuard | undefined;

  constructor(opts: AuthenticatorOptions) {
    this.host = opts.host;
    this.dispatcher = opts.dispatcher;
    this.credentials = opts.credentials;
    this.insecure = opts.insecure;
    this.userAgent = opts.userAgent;
    this.late = opts.late;
    this.guard = opts.guard;
  }

  /** Whether the registry has asked for authentication. */
  get challenged(): boolean {
    return this.challenge !== undefined || this.repositoryChallenges.size > 0;
  }

  /**
   * The credentials for a scope: the client's own, else (with `late`) those found for the scope's first
   * repository (the push target, in a scope that also mounts from another).
   */
  credentialsFor(scope: string): Promise<Credentials | undefined> {
    if (this.credentials || !this.late) return Promise.resolve(this.credentials);
    const repository = /(?:^|\s)repository:([^:\s]+):/.exec(scope)?.[1] ?? '';
    let p = this.found.get(repository);
    if (!p) {
      p = this.late(repository);
      this.found.set(repository, p);
    }
    return p;
  }

  /**
   * Records the challenge from a 401: the registry's (from /v2/, no scope), or, for a request needing
   * `scope`, its repository's. Returns false when it is not one we can answer.
   */
  setChallenge(header: string | string[] | undefined, scope?: string): boolean {
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const basic = challenges.find((c) => c.scheme === 'basic');
    const chosen = bearer ?? basic;
    if (!chosen) return false;
    const repository = scope ? repositoryOf(scope) : undefined;
    if (repository) {
      this.repositoryChallenges.set(repository, chosen);
      // Bounded: a long-lived service meets many repositories; the oldest go first.
      if (this.repositoryChallenges.size > 1000) {
        this.repositoryChallenges.delete(this.repositoryChallenges.keys().next().value!);
      }
    } else {
      this.challenge = chosen;
    }
    return true;
  }

  /** The challenge a request needing `scope` answers: its repository's own, else the registry's. */
  private challengeFor(scope: string): Challenge | undefined {
    const repository = repositoryOf(scope);
    return (repository && this.repositoryChallenges.get(repository)) || this.challenge;
  }

  /** Forgets a token that the registry refused. */
  invalidate(scope: string): void {
    this.tokens.delete(scope);
  }

  /**
   * The Authorization header for a request needing `scope` (one or more scopes separated by spaces,
   * all asked for in one token request), or undefined before any challenge.
   */
  async authorization(scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const c = this.challengeFor(scope);
    if (!c) return undefined;
    if (c.scheme === 'basic') {
      const creds = await this.credentialsFor(scope);
      if (creds?.kind !== 'basic') return undefined;
      const { username, password } = creds;
      return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
    }
    const own = await this.credentialsFor(scope);
    if (own?.kind === 'bearer') return `Bearer ${own.token}`;
    const cached = this.tokens.get(scope);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    let p = this.pending.get(scope);
    if (!p) {
      p = this.fetchToken(c, scope, signal).finally(() => this.pending.delete(scope));
      this.pending.set(scope, p);
    }
    const t = await p;
    this.tokens.set(scope, t);
    return `Bearer ${t.token}`;
  }

  private async fetchToken(c: Challenge, scope: string, signal?: AbortSignal): Promise<CachedToken> {
    let realm: URL;
    try {
      realm = new URL(c.params.realm!);
    } catch {
      throw new StowageError(
        'REGISTRY',
        `registry ${this.host} named an invalid token realm; it is misconfigured`,
      );
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') {
      throw new StowageError('REGISTRY', `registry ${this.host} named a token realm that is not http(s)`);
    }
    const refused = this.guard?.(realm, 'token realm');
    if (refused) {
      throw new StowageError(
        'BLOCKED',
        `registry ${this.host} sends clients for tokens to ${realm.host}, which ${refused}`,
      );
    }
    const creds = await this.credentialsFor(scope);
    if (creds && realm.protocol === 'http:' && !this.insecure) {
      throw new StowageError(
        'UNAUTHORIZED',
        `registry ${this.host} asks for credentials to be sent to a token service over plain HTTP (${realm.origin}); refusing. Mark the registry insecure in registries.conf if this is intended`,
      );
    }
    const service = c.params.service;
    const headers: Record<string, string> = { 'user-agent': this.userAgent };
    let res: Dispatcher.ResponseData;
    if (creds?.kind === 'identityToken') {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: creds.token,
        client_id: 'stowage',
      });
      if (service) form.set('service', service);
      for (const sc of scope.split(' ').filter(Boolean)) form.append('scope', sc);
      headers['content-type'] = 'application/x-www-form-urlencoded';
      res = await this.send(realm, { method: 'POST', headers, body: form.toString(), signal });
      if (res.statusCode === 404 || res.statusCode === 405) {
        // A token service without the OAuth2 endpoint: the plain GET, the refresh token as the secret.
        await res.body.dump();
        const url = new URL(realm);
        if (service) url.searchParams.set('service', service);
        for (const sc of scope.split(' ').filter(Boolean)) url.searchParams.append('scope', sc);
        const get: Record<string, string> = { 'user-agent': this.userAgent };
        const user = creds.username ?? '<token>';
        url.searchParams.set('account', user);
        get.authorization = `Basic ${Buffer.from(`${user}:${creds.token}`).toString('base64')}`;
        res = await this.send(url, { method: 'GET', headers: get, signal });
      }
    } else {
      const url = new URL(realm);
      if (service) url.searchParams.set('service', service);
      for (const sc of scope.split(' ').filter(Boolean)) url.searchParams.append('scope', sc);
      if (creds?.kind === 'basic') {
        url.searchParams.set('account', creds.username);
        headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      }
      res = await this.send(url, { method: 'GET', headers, signal });
    }
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new StowageError(
        'UNAUTHORIZED',
        creds
          ? `the token service of ${this.host} rejected the credentials (HTTP ${res.statusCode}); check the username and password, or log in again`
          : `the token service of ${this.host} requires credentials (HTTP ${res.statusCode}); pass --creds or log in`,
      );
    }
    if (res.statusCode !== 200) {
      throw new StowageError('REGISTRY', `the token service of ${this.host} answered HTTP ${res.statusCode}`);
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new StowageError(
        'REGISTRY',
        `the token service of ${this.host} answered with something that is not JSON`,
      );
    }
    const token = tokenResponseSchemaKeys
      .map((k) => body[k])
      .find((v) => typeof v === 'string' && v.length > 0);
    if (typeof token !== 'string') {
      throw new StowageError('REGISTRY', `the token service of ${this.host} answered without a token`);
    }
    const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60;
    const issuedAt = typeof body.issued_at === 'string' ? Date.parse(body.issued_at) : Number.NaN;
    const start = Number.isFinite(issuedAt) && issuedAt <= Date.now() ? issuedAt : Date.now();
    // Renew ten seconds early so a token never expires in flight.
    return { token, expiresAt: start + Math.max(expiresIn - 10, 1) * 1000 };
  }

  private async send(
    url: URL,
    opts: {
      method: 'GET' | 'POST';
      headers: Record<string, string>;
      body?: string;
      signal?: AbortSignal | undefined;
    },
  ): Promise<Dispatcher.ResponseData> {
    try {
      return await this.dispatcher.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method: opts.method,
        headers: opts.headers,
        body: opts.body ?? null,
        signal: opts.signal ?? null,
      });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      throw new StowageError(
        'NETWORK',
        `cannot reach the token service of ${this.host} at ${url.origin}: ${(e as Error).message}`,
      );
    }
  }
}

/** The first repository a scope names (`repository:team/app:pull` is team/app). */
function repositoryOf(scope: string): string | undefined {
  return /(?:^|\s)repository:([^:\s]+):/.exec(scope)?.[1];
}
