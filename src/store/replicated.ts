/**
 * The archive store shared by replicas (issue 22): blobs in an S3 bucket (S3Blobs), the version index
 * in PostgreSQL (PgVersionIndex). The same ArchiveStore as the local one, so sync, the service, exports
 * and downloads work on it unchanged. A version is added only after its blobs are in the bucket (the
 * store destination writes blobs, then the version), so no replica ever lists a version it cannot serve.
 *
 * Garbage collection is mark and sweep with a grace period: every blob a version references is kept,
 * and so is every blob younger than the grace, since another replica may have just written it for a
 * version it has not added yet.
 */
import { StowageError } from '../errors.js';
import { MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import type { ArchiveStore } from './archive-store.js';
import type { BlobLeases } from './blob-leases.js';
import type { BundleHistory } from './bundle-history.js';
import type { PgVersionIndex } from './pg-index.js';
import { type Renditions, S3Renditions } from './renditions.js';
import type { S3Blobs } from './s3-blobs.js';
import { BlobFetches, referencedBlobs } from './shared.js';
import type { StoredVersion, VersionPage, VersionQuery } from './store.js';

/** Blobs younger than this are never collected (default): longer than any one version's writes. */
export const DEFAULT_GC_GRACE_MS = 6 * 3600_000;

export class ReplicatedStore implements ArchiveStore {
  private readonly fetches = new BlobFetches();

  constructor(
    private readonly blobs: S3Blobs,
    private readonly index: PgVersionIndex,
    private readonly opts: {
      gcGraceMs?: number | undefined;
      /** Leases that make replicas write a shared blob once (none: each replica writes what it lacks). */
      leases?: BlobLeases | undefined;
      bundles?: BundleHistory | undefined;
    } = {},
  ) {}

  /** For messages: the bucket and prefix (never credentials). */
  get path(): string {
    return this.blobs.description;
  }

  bundles(): BundleHistory {
    if (!this.opts.bundles)
      throw new StowageError('UNSUPPORTED', `the store ${this.path} keeps no bundle history`);
    return this.opts.bundles;
  }

  hasBlob(digest: string): Promise<boolean> {
    return this.blobs.has(digest);
  }

  blobSize(digest: string): Promise<number | undefined> {
    return this.blobs.size(digest);
  }

  async readBlob(digest: string, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
    const size = await this.blobs.size(digest);
    if (size === undefined)
      throw new StowageError('NOT_FOUND', `the store ${this.path} has no blob ${digest}`);
    if (size > limit) throw new StowageError('TOO_LARGE', `blob ${digest} is over ${limit} bytes`);
    const parts: Uint8Array[] = [];
    for await (const c of await this.blobs.open(digest)) parts.push(c);
    return Buffer.concat(parts);
  }

  openBlob(
    digest: string,
    range?: { start: number; end: number },
    signal?: AbortSignal,
  ): AsyncIterable<Uint8Array> {
    const blobs = this.blobs;
    return (async function* () {
      yield* await blobs.open(digest, range, signal);
    })();
  }

  async putBlob(d: Descriptor, body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    await this.blobs.put(d, body);
  }

  fetchBlob(
    d: Descriptor,
    open: () => Promise<AsyncIterable<Uint8Array>>,
  ): Promise<'present' | 'shared' | 'fetched'> {
    const leases = this.opts.leases;
    const claim = leases && ((digest: string) => leases.claim(digest, () => this.blobs.has(digest)));
    return this.fetches.fetch(d, this, open, claim);
  }

  fetched(digest: string): Promise<boolean> {
    return this.fetches.fetched(digest);
  }

  putDocument(d: Descriptor, bytes: Buffer): Promise<void> {
    return this.putBlob(d, [bytes]);
  }

  versions(): Promise<StoredVersion[]> {
    return this.index.versions();
  }

  latest(repository: string, tag: string): Promise<StoredVersion | undefined> {
    return this.index.latest(repository, tag);
  }

  hasRepository(repository: string): Promise<boolean> {
    return this.index.hasRepository(repository);
  }

  repositories(): Promise<string[]> {
    return this.index.repositories();
  }

  newestByTag(repository: string): Promise<Map<string, StoredVersion>> {
    return this.index.newestByTag(repository);
  }

  page(q: VersionQuery): Promise<VersionPage> {
    return this.index.page(q);
  }

  find(idOrName: string): Promise<StoredVersion> {
    return this.index.find(idOrName);
  }

  update(
    fn: (versions: StoredVersion[]) => StoredVersion[] | Promise<StoredVersion[]>,
  ): Promise<StoredVersion[]> {
    return this.index.update(fn);
  }

  addVersion(v: Omit<StoredVersion, 'id'>): Promise<StoredVersion> {
    return this.index.addVersion(v);
  }

  removeVersions(ids: string[]): Promise<void> {
    return this.index.removeVersions(ids);
  }

  recordArchive(id: string, archive: { sha256: string; size: number }): Promise<void> {
    return this.index.recordArchive(id, archive);
  }

  referenced(versions: StoredVersion[]): Promise<Set<string>> {
    return referencedBlobs(this, versions);
  }

  /** Mark (what versions reference) and sweep (what is not, and older than the grace period). */
  async collectGarbage(): Promise<{ blobs: number; bytes: number }> {
    const grace = this.opts.gcGraceMs ?? DEFAULT_GC_GRACE_MS;
    // Listed before the mark: a blob written after the listing is not swept whatever the mark says.
    const listed = [];
    for await (const b of this.blobs.list()) listed.push(b);
    const versions = await this.versions();
    const keep = await this.referenced(versions);
    // Blobs another replica is writing now are kept whatever their age (a long upload's key is dated
    // from its start on some S3s).
    for (const d of (await this.opts.leases?.active()) ?? []) keep.add(d);
    const now = Date.now();
    const doomed = listed.filter((b) => !keep.has(b.digest) && now - b.modified.getTime() > grace);
    await this.blobs.delete(doomed.map((b) => b.digest));
    // Parts of uploads a dead replica began: invisible, but stored.
    await this.blobs.abortStaleUploads(grace);
    // Renditions of versions that are gone (retention pruned them, or another replica deleted them).
    const ids = new Set(versions.map((v) => v.id));
    for (const id of await this.blobs.listFolders('renditions/')) {
      if (!ids.has(id)) await this.blobs.deleteFiles(`renditions/${id}/`);
    }
    return { blobs: doomed.length, bytes: doomed.reduce((n, b) => n + b.size, 0) };
  }

  /** Bytes the store's blobs take in the bucket. */
  async diskBytes(): Promise<number> {
    let n = 0;
    for await (const b of this.blobs.list()) n += b.size;
    return n;
  }

  /** Renditions in the bucket beside the blobs: every replica serves what any one made. */
  renditions(workDir: string): Renditions {
    return new S3Renditions(this.blobs, workDir);
  }

  async close(): Promise<void> {
    this.blobs.close();
    await this.index.close();
  }
}
