import { StowageError } from '../errors.js';
import { digestTag } from '../image/cosign.js';
import { digestMismatch, sha256Digest } from '../image/digest.js';
import { isSchema1MediaType, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, MediaType } from '../image/mediatypes.js';
import { type Descriptor, imageIndexSchema, type ManifestResponse } from '../image/schemas.js';
import { BlobReader, type BlobResponse } from './blobs.js';
import { type RegistryClientOptions, RegistryHttp } from './http.js';
import { CATALOG_PAGE, listPages } from './pages.js';
import { readLimited } from './status.js';
import { type UploadSession, Uploads } from './uploads.js';

export type { ManifestResponse } from '../image/schemas.js';
export type { BlobResponse } from './blobs.js';
export {
  DEFAULT_RETRY,
  DEFAULT_STALL,
  REGISTRY_REQUESTS_CHANNEL,
  type RegistryClientOptions,
  type RegistryRequestRecord,
  type RetryOptions,
  type StallRule,
  USER_AGENT,
} from './http.js';
export { watchStalls } from './stall.js';
export { readLimited } from './status.js';
export { pushScope, type UploadSession } from './uploads.js';

/** A manifest's referrers: from the referrers API, or from the tag schema's index. */
export interface ReferrersListing {
  manifests: Descriptor[];
  via: 'api' | 'tag-schema';
  bytes: Buffer;
}

/** How long a registry's "no referrers API" is believed before it is asked again (it may be upgraded). */
const REFERRERS_RECHECK_MS = 15 * 60_000;

export class RegistryClient {
  readonly host: string;
  readonly insecure: boolean;
  private readonly t: RegistryHttp;
  private readonly blobs: BlobReader;
  private readonly uploads: Uploads;

  constructor(opts: RegistryClientOptions) {
    this.t = new RegistryHttp(opts);
    this.host = this.t.host;
    this.insecure = this.t.insecure;
    this.blobs = new BlobReader(this.t);
    this.uploads = new Uploads(this.t);
  }

  close(): Promise<void> {
    return this.t.close();
  }

  /** GET /v2/: finds the scheme (HTTPS, or HTTP for an insecure registry) and the auth challenge. */
  ping(signal?: AbortSignal): Promise<string> {
    return this.t.ping(signal);
  }

  /** GET a manifest or index by tag or digest, verifying its digest and refusing schema 1. */
  async getManifest(repo: string, reference: string, signal?: AbortSignal): Promise<ManifestResponse> {
    const what = `manifest ${this.t.host}/${repo}${reference.includes(':') ? '@' : ':'}${reference}`;
    const res = await this.t.request({
      method: 'GET',
      path: `/v2/${repo}/manifests/${reference}`,
      scope: `repository:${repo}:pull`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      signal,
      what,
    });
    await this.t.check(res, what, [200], {
      notFound: (detail) => `${what} not found (HTTP 404${detail}); check the name and tag`,
    });
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

  /** As getManifest, but undefined where the registry has no such tag or digest (404). */
  async findManifest(
    repo: string,
    reference: string,
    signal?: AbortSignal,
  ): Promise<ManifestResponse | undefined> {
    return this.getManifest(repo, reference, signal).catch((e: unknown) => {
      if (e instanceof StowageError && e.code === 'NOT_FOUND') return undefined;
      throw e;
    });
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
    const what = `manifest ${this.t.host}/${repo}${reference.includes(':') ? '@' : ':'}${reference}`;
    const res = await this.t.request({
      method: 'HEAD',
      path: `/v2/${repo}/manifests/${reference}`,
      scope: `repository:${repo}:pull`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      signal,
      what,
    });
    await res.body.dump();
    if (res.statusCode === 404) return undefined;
    await this.t.check(res, what, [200]);
    const digest = String(res.headers['docker-content-digest'] ?? '');
    if (!digest.startsWith('sha256:')) {
      throw new StowageError(
        'REGISTRY',
        `${this.t.host} answered HEAD of ${what} without Docker-Content-Digest`,
      );
    }
    const mediaType = String(res.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    return { digest, mediaType, size: Number(res.headers['content-length'] ?? 0) };
  }

  // Blobs (blobs.ts).
  blobSize(repo: string, digest: string, signal?: AbortSignal): Promise<number | undefined> {
    return this.blobs.blobSize(repo, digest, signal);
  }

  getBlob(repo: string, digest: string, signal?: AbortSignal): Promise<BlobResponse> {
    return this.blobs.getBlob(repo, digest, signal);
  }
  getBlobTail(repo: string, digest: string, size: number, length: number, signal?: AbortSignal) {
    return this.blobs.getBlobTail(repo, digest, size, length, signal);
  }
  keptBlob(repo: string, digest: string): Buffer | undefined {
    return this.blobs.keptBlob(repo, digest);
  }
  readKept(repo: string, digest: string, signal: AbortSignal | undefined, verify: (b: Buffer) => void) {
    return this.blobs.readKept(repo, digest, signal, verify);
  }
  getBlobBytes(repo: string, digest: string, signal?: AbortSignal): Promise<Buffer> {
    return this.blobs.getBlobBytes(repo, digest, signal);
  }

  // Uploads (uploads.ts).
  hasBlob(repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    return this.uploads.hasBlob(repo, digest, signal);
  }
  startUpload(repo: string, mount: { digest: string; from: string } | undefined, signal?: AbortSignal) {
    return this.uploads.startUpload(repo, mount, signal);
  }
  patchUpload(
    session: UploadSession,
    repo: string,
    start: number,
    length: number,
    body: AsyncIterable<Uint8Array> | Buffer,
    signal?: AbortSignal,
  ): Promise<UploadSession> {
    return this.uploads.patchUpload(session, repo, start, length, body, signal);
  }
  streamUpload(
    session: UploadSession,
    repo: string,
    body: AsyncIterable<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<UploadSession> {
    return this.uploads.streamUpload(session, repo, body, signal);
  }
  finishUpload(
    session: UploadSession,
    repo: string,
    digest: string,
    length: number,
    body: AsyncIterable<Uint8Array> | Buffer | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    return this.uploads.finishUpload(session, repo, digest, length, body, signal);
  }
  cancelUpload(session: UploadSession, repo: string): Promise<void> {
    return this.uploads.cancelUpload(session, repo);
  }
  putManifest(repo: string, reference: string, bytes: Buffer, mediaType: string, signal?: AbortSignal) {
    return this.uploads.putManifest(repo, reference, bytes, mediaType, signal);
  }
  deleteManifest(repo: string, reference: string, signal?: AbortSignal): Promise<boolean> {
    return this.uploads.deleteManifest(repo, reference, signal);
  }

  /**
   * What refers to a manifest: the OCI 1.1 referrers API (GET /v2/NAME/referrers/DIGEST), and where a
   * registry has no such route (docker-registry 2.8 answers a plain 404), the referrers tag schema: an
   * index tagged sha256-HEX. Undefined when neither lists anything.
   */
  async referrersIndex(
    repo: string,
    digest: string,
    signal?: AbortSignal,
    /**
     * The repository's tags, where the caller listed them: the tag schema's `sha256-HEX` is then looked
     * up in them instead of asked for.
     */
    opts: { tags?: ReadonlySet<string> | undefined } = {},
  ): Promise<ReferrersListing | undefined> {
    // Until the registry has answered once, one request finds out whether it has the API; the rest wait.
    while (this.referrersProbe) await this.referrersProbe;
    if (this.referrersApiAbsent()) return this.tagSchemaReferrers(repo, digest, opts, signal);
    let probed = (): void => {};
    if (this.referrersApiAt === undefined) {
      this.referrersProbe = new Promise<void>((r) => {
        probed = r;
      });
    }
    try {
      const listed = await this.askReferrers(repo, digest, signal);
      return listed ?? (await this.tagSchemaReferrers(repo, digest, opts, signal));
    } finally {
      this.referrersProbe = undefined;
      probed();
    }
  }

  /** GET /v2/NAME/referrers/DIGEST; undefined where the registry has no referrers API. */
  private async askReferrers(
    repo: string,
    digest: string,
    signal: AbortSignal | undefined,
  ): Promise<ReferrersListing | undefined> {
    const what = `referrers of ${this.t.host}/${repo}@${digest}`;
    const res = await this.t.request({
      method: 'GET',
      path: `/v2/${repo}/referrers/${digest}`,
      scope: `repository:${repo}:pull`,
      headers: { accept: MediaType.OciIndex },
      signal,
      what,
    });
    const type = String(res.headers['content-type'] ?? '');
    if (res.statusCode === 200 && type.includes('json')) {
      const bytes = await readLimited(res.body, MAX_MANIFEST_BYTES, what);
      const index = parseIndexOrUndefined(bytes);
      if (!index)
        throw new StowageError(
          'REGISTRY',
          `${this.t.host} answered ${what} with something that is not an index`,
        );
      this.referrersApiAt = Date.now();
      return { manifests: index.manifests, via: 'api', bytes };
    }
    await res.body.dump();
    // A registry with the API answers 200 (an empty index) for an image with no referrers; 404, 405 or
    // a page that is not JSON means it has none, and it is not asked again for a while.
    if ([400, 404, 405].includes(res.statusCode) || res.statusCode === 200)
      this.noReferrersApiAt = Date.now();
    return undefined;
  }

  /** The tag schema's index of a manifest's referrers (`sha256-HEX`), if anyone wrote one. */
  private async tagSchemaReferrers(
    repo: string,
    digest: string,
    opts: { tags?: ReadonlySet<string> | undefined },
    signal: AbortSignal | undefined,
  ): Promise<ReferrersListing | undefined> {
    if (opts.tags && !opts.tags.has(digestTag(digest))) return undefined;
    const fallback = await this.findManifest(repo, digestTag(digest), signal);
    const index = fallback && parseIndexOrUndefined(fallback.bytes);
    return index && fallback
      ? { manifests: index.manifests, via: 'tag-schema', bytes: fallback.bytes }
      : undefined;
  }

  /** When the registry last said it has no referrers API (undefined: it has not). */
  private noReferrersApiAt: number | undefined;
  /** When it last answered the referrers API (undefined: never). */
  private referrersApiAt: number | undefined;
  /** The first referrers request, while it is under way. */
  private referrersProbe: Promise<void> | undefined;

  /** Whether the registry said lately that it has no referrers API (a long-lived service asks again later). */
  private referrersApiAbsent(): boolean {
    return this.noReferrersApiAt !== undefined && Date.now() - this.noReferrersApiAt < REFERRERS_RECHECK_MS;
  }

  /**
   * Checks the client's credentials against the registry (GET /v2/ with them, after a token exchange
   * for token auth). Returns false when the registry does not ask for credentials at all.
   */
  async verifyLogin(signal?: AbortSignal): Promise<boolean> {
    await this.t.ping(signal);
    if (!this.t.auth.challenged) return false;
    const what = `a login to ${this.t.host}`;
    const res = await this.t.request({ method: 'GET', path: '/v2/', scope: '', signal, what });
    await res.body.dump();
    await this.t.check(res, what, [200]);
    return true;
  }

  /**
   * All tags of a repository, following Link pagination, each tag once. A registry whose `next` link
   * does not move forward (the same page again, or one already read) would make this loop forever:
   * it ends the listing with an error, as does reaching the page cap; neither is ever a short success.
   */
  listTags(repo: string, signal?: AbortSignal): Promise<string[]> {
    return listPages(this.t, {
      first: `/v2/${repo}/tags/list?n=1000`,
      key: 'tags',
      scope: `repository:${repo}:pull`,
      what: `tags of ${this.t.host}/${repo}`,
      notFound: (detail) => `repository ${this.t.host}/${repo} not found (HTTP 404${detail})`,
      signal,
    });
  }

  /**
   * Every repository the registry lists (GET /v2/_catalog), followed page by page (`n`, `last`, Link)
   * with the tag listing's bounds. A registry that does not list them (Docker Hub, most cloud
   * registries, an account not allowed to) answers with an error that says what to do instead.
   */
  async listRepositories(
    opts: { pageSize?: number; signal?: AbortSignal | undefined } = {},
  ): Promise<string[]> {
    const instead = `name each repository as a job's source instead (source = "${this.t.host}/team/app")`;
    try {
      return await listPages(this.t, {
        first: `/v2/_catalog?n=${opts.pageSize ?? CATALOG_PAGE}`,
        key: 'repositories',
        scope: 'registry:catalog:*',
        what: `repository catalog of ${this.t.host}`,
        notFound: (detail) =>
          `${this.t.host} does not list its repositories (GET /v2/_catalog answered HTTP 404${detail}); ${instead}`,
        signal: opts.signal,
      });
    } catch (e) {
      if (e instanceof StowageError && (e.code === 'DENIED' || e.code === 'UNAUTHORIZED'))
        throw new StowageError(
          e.code,
          `${e.message}; the catalog needs an account allowed to list the registry, or ${instead}`,
        );
      if (e instanceof StowageError && /HTTP (400|405|501)\b/.test(e.message))
        throw new StowageError(
          'UNSUPPORTED',
          `${this.t.host} does not list its repositories (${e.message}); ${instead}`,
        );
      throw e;
    }
  }
}

/** An OCI index, or undefined for anything else (not JSON, not an index). */
function parseIndexOrUndefined(bytes: Buffer): { manifests: Descriptor[] } | undefined {
  try {
    const r = imageIndexSchema.safeParse(JSON.parse(bytes.toString('utf8')));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
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
