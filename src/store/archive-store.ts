/**
 * The archive store's interface: what the sync engine, the transports and the service need of a store,
 * whatever holds it (store.ts: an OCI layout on a file system; replicated.ts: S3 and PostgreSQL).
 */
import type { Descriptor } from '../image/schemas.js';
import type { BundleHistory } from './bundle-history.js';
import type { Renditions } from './renditions.js';
import type { StoredVersion } from './version.js';
import type { VersionPage, VersionQuery } from './version-index.js';

/**
 * What the sync engine and the service need of an archive store. `Store` keeps it as an OCI layout on
 * a file system; another backend (an S3-compatible object store) implements the same methods.
 * `path` names the store in messages and is where exports read it as an OCI layout.
 */
export interface ArchiveStore {
  readonly path: string;
  hasBlob(digest: string): Promise<boolean>;
  /** A stored blob's size, or undefined when it is not there. */
  blobSize(digest: string): Promise<number | undefined>;
  readBlob(digest: string, limit?: number): Promise<Buffer>;
  /** A blob's bytes (the whole blob, or `start`..`end` inclusive). */
  openBlob(
    digest: string,
    range?: { start: number; end: number },
    signal?: AbortSignal,
  ): AsyncIterable<Uint8Array>;
  /** Stores a blob, digest-checked; durable before it returns. */
  putBlob(d: Descriptor, body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void>;
  fetchBlob(
    d: Descriptor,
    open: () => Promise<AsyncIterable<Uint8Array>>,
  ): Promise<'present' | 'shared' | 'fetched'>;
  /** Whether a fetch of the blob into the store was under way and succeeded (waits for it). */
  fetched(digest: string): Promise<boolean>;
  putDocument(d: Descriptor, bytes: Buffer): Promise<void>;
  versions(): Promise<StoredVersion[]>;
  latest(repository: string, tag: string): Promise<StoredVersion | undefined>;
  /** The newest version of each tag of a repository: what a sync compares its HEADs with, read once. */
  newestByTag(repository: string): Promise<Map<string, StoredVersion>>;
  /** Whether any version of the repository is stored (one index lookup: the registry asks it per request). */
  hasRepository(repository: string): Promise<boolean>;
  /** The repositories that hold a version (each once, in no order): what a registry's catalog lists. */
  repositories(): Promise<string[]>;
  /** One page of the versions, oldest first, read only as far as the page needs. */
  page(q: VersionQuery): Promise<VersionPage>;
  find(idOrName: string): Promise<StoredVersion>;
  update(
    fn: (versions: StoredVersion[]) => StoredVersion[] | Promise<StoredVersion[]>,
  ): Promise<StoredVersion[]>;
  addVersion(v: Omit<StoredVersion, 'id'>): Promise<StoredVersion>;
  /** Removes these versions (ids no longer there are passed over); costs what it removes. */
  removeVersions(ids: string[]): Promise<void>;
  recordArchive(id: string, archive: { sha256: string; size: number }): Promise<void>;
  referenced(versions: StoredVersion[]): Promise<Set<string>>;
  collectGarbage(): Promise<{ blobs: number; bytes: number }>;
  diskBytes(): Promise<number>;
  /** Makes what was recorded visible to other readers of the store (the local store's index.json). */
  flush?(): Promise<void>;
  /** Releases what the store holds open (the replicated store's connections); the local one has none. */
  close?(): Promise<void>;
  /**
   * Where a store shared by replicas keeps renditions (made docker-archives), made in `workDir`; a
   * store without it leaves them to the service's cache directory.
   */
  renditions?(workDir: string): Renditions;
  /** Which bundles went out of the store or came into it (bundle/), kept where the versions are. */
  bundles(): BundleHistory;
}

/** What reading a version's content needs of a store (a bundle's blobs are read the same way). */
export type BlobReader = Pick<ArchiveStore, 'readBlob' | 'blobSize' | 'openBlob'>;

/** Every version of one repository, oldest first: what retention and usage read, and no more. */
export async function repositoryVersions(store: ArchiveStore, repository: string): Promise<StoredVersion[]> {
  const page = await store.page({ repository, limit: Number.MAX_SAFE_INTEGER });
  return page.versions.map((x) => x.version);
}
