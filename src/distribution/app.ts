/**
 * The archive store served as a read-only OCI registry on `stowage serve`'s listener: the pull and
 * content-discovery parts of the distribution spec at /v2/ (the base, the catalog, tag lists,
 * manifests, blobs with Range, referrers), and a token endpoint at /auth/token that `podman login`,
 * `skopeo login` and `docker login` use with an API token as the password. Push, mount and delete
 * answer 405 UNSUPPORTED. Names: see names.ts.
 */
import { type Context, Hono } from 'hono';
import { parseRange } from '../api/range.js';
import type { Env } from '../api/shared.js';
import { StowageError } from '../errors.js';
import { MediaType } from '../image/mediatypes.js';
import type { ArchiveStore } from '../store/archive-store.js';
import { type AccessRules, type Caller, callerOf, grantable, permits, subjectOf } from './access.js';
import {
  accepts,
  catalog,
  findManifest,
  isDigest,
  type Manifest,
  pageOf,
  referrersOf,
  tagsOf,
} from './content.js';
import { ociError } from './errors.js';
import { cosignSubject, isServableName, parseVersionTag, storedName } from './names.js';
import type { PullThrough } from './pull-through.js';
import { sendBytes } from './send.js';
import { parseScopes } from './tokens.js';

export interface RegistryApiDeps {
  store: ArchiveStore;
  rules: AccessRules;
  /** The upstreams that fill the store as clients pull (none: the store alone is served). */
  pullThrough?: PullThrough | undefined;
  /** Takes the server's own paths out of error messages (see pathRedactor). */
  redact?: ((text: string) => string) | undefined;
}

export const TOKEN_PATH = '/auth/token';

/** What a /v2/ path asks for. */
type Route =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'tags'; name: string }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'upload'; name: string }
  | { kind: 'referrers'; name: string; digest: string }
  | { kind: 'unknown' };

export function routeOf(path: string): Route {
  if (path === '/v2' || path === '/v2/') return { kind: 'base' };
  if (path === '/v2/_catalog') return { kind: 'catalog' };
  let m = /^\/v2\/(.+)\/tags\/list$/.exec(path);
  if (m) return { kind: 'tags', name: m[1]! };
  m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
  if (m) return { kind: 'manifest', name: m[1]!, reference: m[2]! };
  m = /^\/v2\/(.+)\/blobs\/uploads(?:\/.*)?$/.exec(path);
  if (m) return { kind: 'upload', name: m[1]! };
  m = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(path);
  if (m) return { kind: 'blob', name: m[1]!, digest: m[2]! };
  m = /^\/v2\/(.+)\/referrers\/([^/]+)$/.exec(path);
  if (m) return { kind: 'referrers', name: m[1]!, digest: m[2]! };
  return { kind: 'unknown' };
}

/** The endpoint a route is counted under in the metrics (no names: they are unbounded). */
const ENDPOINTS: Record<Route['kind'], string> = {
  base: '/v2/',
  catalog: '/v2/_catalog',
  tags: '/v2/{name}/tags/list',
  manifest: '/v2/{name}/manifests/{reference}',
  blob: '/v2/{name}/blobs/{digest}',
  upload: '/v2/{name}/blobs/uploads/',
  referrers: '/v2/{name}/referrers/{digest}',
  unknown: '/v2/*',
};

export function registryApi(deps: RegistryApiDeps): Hono<Env> {
  const app = new Hono<Env>();
  app.on(['GET', 'POST'], TOKEN_PATH, (c) => issueToken(c, deps.rules));
  app.all('/v2', (c) => serve(c, deps));
  app.all('/v2/*', (c) => serve(c, deps));
  return app;
}

async function serve(c: Context<Env>, deps: RegistryApiDeps): Promise<Response> {
  const route = routeOf(c.req.path);
  c.set('endpoint', ENDPOINTS[route.kind]);
  c.header('Docker-Distribution-API-Version', 'registry/2.0');
  const read = c.req.method === 'GET' || c.req.method === 'HEAD';
  if (route.kind === 'upload' || !read) {
    return ociError(
      c,
      405,
      'UNSUPPORTED',
      'this registry is read-only: it serves the archive store, and takes no pushes, mounts or deletes',
    );
  }
  if (route.kind === 'unknown')
    return ociError(c, 404, 'NAME_UNKNOWN', `no such endpoint: ${c.req.path.slice(0, 200)}`);
  const caller = callerOf(c.req.header('authorization'), deps.rules);
  const refused = authorize(c, caller, deps.rules, route);
  if (refused) return refused;
  try {
    return await answer(c, deps, route);
  } catch (e) {
    return failure(c, e, deps.redact ?? ((t) => t));
  }
}

/** 401 with the challenge that sends a client to the token endpoint, or 403; undefined: let in. */
function authorize(c: Context<Env>, caller: Caller, rules: AccessRules, route: Route): Response | undefined {
  const scope =
    route.kind === 'catalog'
      ? { type: 'registry' as const, name: 'catalog', action: '*' }
      : 'name' in route
        ? { type: 'repository' as const, name: route.name, action: 'pull' }
        : undefined;
  if (caller.kind === 'invalid' || (caller.kind === 'anonymous' && !rules.anonymousPull)) {
    return challenge(c, scope && `${scope.type}:${scope.name}:${scope.action}`, caller.kind === 'invalid');
  }
  if (!scope) return undefined;
  if (permits(caller, rules, scope.type, scope.name, scope.action)) return undefined;
  if (caller.kind === 'bearer' || caller.kind === 'anonymous') {
    // A token for other repositories: the client asks the token endpoint again for this one.
    return challenge(c, `${scope.type}:${scope.name}:${scope.action}`, false, 'insufficient_scope');
  }
  return ociError(c, 403, 'DENIED', `token "${subjectOf(caller)}" lacks the "read" scope pulling needs`);
}

function challenge(c: Context<Env>, scope: string | undefined, invalid: boolean, error?: string): Response {
  const realm = `${new URL(c.req.url).origin}${TOKEN_PATH}`;
  const parts = [`realm="${realm}"`, 'service="stowage"'];
  if (scope) parts.push(`scope="${scope}"`);
  if (error) parts.push(`error="${error}"`);
  c.header('WWW-Authenticate', `Bearer ${parts.join(',')}`);
  return ociError(
    c,
    401,
    'UNAUTHORIZED',
    invalid
      ? 'the credentials are not valid here: log in with an API token of this gateway as the password'
      : 'authentication required: log in (podman login, skopeo login, docker login) with an API token as the password',
  );
}

async function answer(c: Context<Env>, deps: RegistryApiDeps, route: Route): Promise<Response> {
  const { store } = deps;
  if (route.kind === 'base') return c.json({});
  if (route.kind === 'catalog')
    return listing(c, await catalog(store), '/v2/_catalog', (items) => ({ repositories: items }));
  if (!('name' in route)) return ociError(c, 404, 'NAME_UNKNOWN', 'no such endpoint');
  if (!isServableName(route.name)) {
    return ociError(c, 400, 'NAME_INVALID', `"${route.name.slice(0, 256)}" is not a repository name`);
  }
  const repository = storedName(route.name);
  // The spec's referrers answer is an index, empty where nothing refers to the digest: never a 404.
  if (route.kind === 'referrers') return referrers(c, store, repository, route.digest);
  const pullThrough = deps.pullThrough?.covers(repository) ? deps.pullThrough : undefined;
  const filling = pullThrough && route.kind !== 'tags';
  if (!filling && !(await store.hasRepository(repository))) {
    return ociError(c, 404, 'NAME_UNKNOWN', `the store holds no repository ${route.name}`);
  }
  if (route.kind === 'tags') {
    return listing(c, await tagsOf(store, repository), `/v2/${route.name}/tags/list`, (items) => ({
      name: route.name,
      tags: items,
    }));
  }
  if (route.kind === 'manifest') {
    const found = await lookUpManifest(store, pullThrough, repository, route.reference);
    return manifest(c, found, route.name, route.reference);
  }
  if (route.kind === 'blob') return blob(c, store, pullThrough, repository, route.digest);
  return ociError(c, 404, 'NAME_UNKNOWN', 'no such endpoint');
}

/** A list a page at a time (`n`, `last`), with a Link to the next page when there is one. */
function listing(
  c: Context<Env>,
  all: string[],
  path: string,
  shape: (items: string[]) => Record<string, unknown>,
): Response {
  const nRaw = c.req.query('n');
  const n = nRaw === undefined || nRaw === '' ? undefined : Number(nRaw);
  if (n !== undefined && (!Number.isInteger(n) || n < 0)) {
    return ociError(
      c,
      400,
      'PAGINATION_NUMBER_INVALID',
      `n=${String(nRaw).slice(0, 20)} is not a count: give a whole number`,
    );
  }
  const { items, more } = pageOf(all, n, c.req.query('last'));
  if (more && n !== undefined && items.length) {
    const last = encodeURIComponent(items[items.length - 1]!);
    c.header('Link', `<${path}?n=${n}&last=${last}>; rel="next"`);
  }
  return c.json(shape(items));
}

/**
 * The manifest a reference names: from the store; under a pull-through upstream, a tag is the
 * upstream's (checked once per tag-ttl) and a digest the store lacks is fetched.
 */
async function lookUpManifest(
  store: ArchiveStore,
  pullThrough: PullThrough | undefined,
  repository: string,
  reference: string,
): Promise<Manifest | undefined> {
  if (!pullThrough) return findManifest(store, repository, reference);
  if (isDigest(reference)) {
    const found =
      (await findManifest(store, repository, reference)) ??
      (await pullThrough.digestManifest(repository, reference));
    if (found) pullThrough.remember(found);
    return found;
  }
  if (parseVersionTag(reference) || cosignSubject(reference)) {
    const found = await findManifest(store, repository, reference);
    if (found) return found;
  }
  const found = await pullThrough.tagManifest(
    repository,
    reference,
    await store.latest(repository, reference),
  );
  if (found) pullThrough.remember(found);
  return found;
}

function manifest(c: Context<Env>, found: Manifest | undefined, name: string, reference: string): Response {
  if (!found)
    return ociError(c, 404, 'MANIFEST_UNKNOWN', `${name} has no manifest ${reference.slice(0, 200)}`);
  if (!accepts(c.req.header('accept'), found.mediaType)) {
    return ociError(
      c,
      404,
      'MANIFEST_UNKNOWN',
      `${name}:${reference} is a ${found.mediaType}, which the request's Accept header does not list`,
    );
  }
  c.header('Content-Type', found.mediaType);
  c.header('Docker-Content-Digest', found.digest);
  c.header('ETag', `"${found.digest}"`);
  c.header('Content-Length', String(found.bytes.length));
  if (c.req.method === 'HEAD') return c.body(null, 200);
  return c.body(new Uint8Array(found.bytes), 200);
}

async function blob(
  c: Context<Env>,
  store: ArchiveStore,
  pullThrough: PullThrough | undefined,
  repository: string,
  digest: string,
): Promise<Response> {
  if (!isDigest(digest))
    return ociError(c, 400, 'DIGEST_INVALID', `"${digest.slice(0, 100)}" is not a sha256 digest`);
  let size = await store.blobSize(digest);
  if (size === undefined && pullThrough) {
    const passing = await pullThrough.blob(repository, digest);
    // The first client gets the bytes as they arrive; a HEAD waits for them to land.
    if (passing && c.req.method === 'GET' && passing.size !== undefined) {
      return sendBytes(c, 200, blobHeaders(digest, passing.size), () => passing.body);
    }
    if (passing) for await (const _ of passing.body);
    size = await store.blobSize(digest);
  }
  if (size === undefined) return ociError(c, 404, 'BLOB_UNKNOWN', `the store holds no blob ${digest}`);
  const headers = blobHeaders(digest, size);
  const rangeHeader = c.req.header('range');
  const range = rangeHeader && size > 0 ? parseRange(rangeHeader, size) : undefined;
  if (range === 'unsatisfiable') {
    c.header('Content-Range', `bytes */${size}`);
    return ociError(c, 416, 'BLOB_UNKNOWN', `the range ${rangeHeader} lies outside the blob's ${size} bytes`);
  }
  const [start, end] = range ?? [0, size - 1];
  const status = range ? 206 : 200;
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  headers['Content-Length'] = String(size === 0 ? 0 : end - start + 1);
  if (c.req.method === 'HEAD' || size === 0) {
    for (const [k, v] of Object.entries(headers)) c.header(k, v);
    return c.body(null, status);
  }
  return sendBytes(c, status, headers, (signal) =>
    store.openBlob(digest, range ? { start, end } : undefined, signal),
  );
}

function blobHeaders(digest: string, size: number): Record<string, string> {
  return {
    'Docker-Distribution-API-Version': 'registry/2.0',
    'Docker-Content-Digest': digest,
    'Accept-Ranges': 'bytes',
    ETag: `"${digest}"`,
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(size),
  };
}

/** An error reading the store or the upstream, as the spec's error body; no server path in it. */
function failure(c: Context<Env>, e: unknown, redact: (text: string) => string): Response {
  if (!(e instanceof StowageError)) {
    return ociError(
      c,
      500,
      'UNKNOWN',
      `the store could not be read (${(e as Error).name}); see the service's log`,
    );
  }
  const message = redact(e.message);
  if (e.code === 'RATE_LIMITED') return ociError(c, 429, 'TOOMANYREQUESTS', message);
  if (e.code === 'POLICY_REJECTED' || e.code === 'BLOCKED') return ociError(c, 403, 'DENIED', message);
  if (e.code === 'NOT_FOUND') return ociError(c, 404, 'MANIFEST_UNKNOWN', message);
  if (e.code === 'IO' || e.code === 'INTERNAL') return ociError(c, 500, 'UNKNOWN', message);
  return ociError(c, 502, 'UNKNOWN', `the upstream registry failed: ${message}`);
}

async function referrers(
  c: Context<Env>,
  store: ArchiveStore,
  repository: string,
  digest: string,
): Promise<Response> {
  if (!isDigest(digest))
    return ociError(c, 400, 'DIGEST_INVALID', `"${digest.slice(0, 100)}" is not a sha256 digest`);
  let manifests = await referrersOf(store, repository, digest);
  // A '+' sent unencoded reads as a space; no media type holds one.
  const wanted = c.req.query('artifactType')?.replace(/ /g, '+');
  if (wanted) {
    manifests = manifests.filter((m) => m.artifactType === wanted);
    c.header('OCI-Filters-Applied', 'artifactType');
  }
  c.header('Content-Type', MediaType.OciIndex);
  return c.body(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }), 200);
}

/**
 * GET (the Docker token protocol) or POST (OAuth2's password grant, as containerd may send it) of
 * /auth/token: a short-lived bearer token granting what the caller may have of the scopes asked for.
 */
async function issueToken(c: Context<Env>, rules: AccessRules): Promise<Response> {
  c.set('endpoint', TOKEN_PATH);
  let caller: Caller;
  let scopes: string[];
  if (c.req.method === 'POST') {
    const form = await c.req.parseBody();
    const password = typeof form.password === 'string' ? form.password : undefined;
    caller =
      form.grant_type === 'password' && password
        ? callerOf(`Basic ${Buffer.from(`any:${password}`).toString('base64')}`, rules)
        : callerOf(c.req.header('authorization'), rules);
    scopes = typeof form.scope === 'string' ? form.scope.split(' ') : [];
  } else {
    caller = callerOf(c.req.header('authorization'), rules);
    scopes = c.req.queries('scope')?.flatMap((s) => s.split(' ')) ?? [];
  }
  if (caller.kind === 'invalid' || (caller.kind === 'anonymous' && !rules.anonymousPull)) {
    c.header('WWW-Authenticate', 'Basic realm="stowage"');
    return ociError(
      c,
      401,
      'UNAUTHORIZED',
      caller.kind === 'invalid'
        ? "the API token is not valid here: use one of this gateway's API tokens as the password (any user name)"
        : 'log in with an API token of this gateway as the password (any user name)',
    );
  }
  const access = grantable(caller, rules, parseScopes(scopes));
  const issued = rules.registryTokens.issue(subjectOf(caller), access);
  return c.json({
    token: issued.token,
    access_token: issued.token,
    expires_in: issued.expiresIn,
    issued_at: issued.issuedAt,
  });
}
