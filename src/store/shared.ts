/**
 * What every archive store does the same way, whatever holds its blobs (a directory, an S3 bucket):
 * one fetch per blob in the process, and the walk from versions to the blobs they reference.
 */
import { isIndexMediaType } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import type { StoredVersion } from './store.js';

/**
 * Blobs being fetched into a store now, by digest: every job of the process waits on the one fetch.
 * A blob already there is 'present'; one another job was fetching and that arrived is 'shared'; else
 * it is fetched here. If the other fetch fails, this one tries itself rather than inherit the failure.
 */
export class BlobFetches {
  private readonly fetching = new Map<string, Promise<void>>();

  async fetch(
    d: Descriptor,
    store: {
      hasBlob(digest: string): Promise<boolean>;
      putBlob(d: Descriptor, body: AsyncIterable<Uint8Array>): Promise<unknown>;
    },
    open: () => Promise<AsyncIterable<Uint8Array>>,
    /**
     * Replicas sharing a store: waits for the blob's lease (another replica may be writing it) before
     * anything is fetched; `already` when the blob arrived meanwhile.
     */
    claim?: (digest: string) => Promise<{ already: boolean; release(): Promise<void> }>,
  ): Promise<'present' | 'shared' | 'fetched'> {
    // Looked up without an await when none is under way, so that this one is claimed (below) before
    // any other caller can look.
    if (this.fetching.has(d.digest) && (await this.fetched(d.digest))) return 'shared';
    const mine = (async () => {
      if (await store.hasBlob(d.digest)) return 'present' as const;
      const lease = await claim?.(d.digest);
      if (lease?.already) return 'shared' as const;
      try {
        await store.putBlob(d, await open());
      } finally {
        await lease?.release();
      }
      return 'fetched' as const;
    })();
    const settled = mine.then(() => {});
    // Waiters look at it with their own handlers; with none, its failure is this caller's to report.
    settled.catch(() => {});
    this.fetching.set(d.digest, settled);
    try {
      return await mine;
    } finally {
      if (this.fetching.get(d.digest) === settled) this.fetching.delete(d.digest);
    }
  }

  /** Whether a fetch of the blob was under way and succeeded (waits for it). */
  async fetched(digest: string): Promise<boolean> {
    const other = this.fetching.get(digest);
    return other
      ? other.then(
          () => true,
          () => false,
        )
      : false;
  }
}

/** Digests of every blob the versions reference (documents included), read through the store. */
export async function referencedBlobs(
  store: { hasBlob(digest: string): Promise<boolean>; readBlob(digest: string): Promise<Buffer> },
  versions: StoredVersion[],
): Promise<Set<string>> {
  const seen = new Set<string>();
  const walk = async (d: Descriptor) => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    if (!(await store.hasBlob(d.digest))) return;
    const doc = JSON.parse((await store.readBlob(d.digest)).toString('utf8')) as {
      manifests?: Descriptor[];
      config?: Descriptor;
      layers?: Descriptor[];
    };
    if (isIndexMediaType(d.mediaType) || Array.isArray(doc.manifests)) {
      for (const c of doc.manifests ?? []) await walk(c);
    } else {
      if (doc.config) seen.add(doc.config.digest);
      for (const l of doc.layers ?? []) seen.add(l.digest);
    }
  };
  for (const v of versions) {
    await walk(v.descriptor);
    // What is attached to it lives and dies with it.
    for (const r of v.referrers ?? []) await walk(r.descriptor);
  }
  return seen;
}
