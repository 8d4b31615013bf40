/**
 * `stowage store migrate`: a local store's versions into the store configured now (the S3 store of a
 * replicated deployment), digests intact. Blobs first, each written only if the destination lacks it
 * (and checked against its digest on the way, by S3 for the S3 store), then every version in one
 * update of the destination's index, with its original time and checksum: a replica never lists a
 * version whose blobs are not all there. Running it again copies nothing and adds nothing.
 */
import { Limiter } from '../core/limiter.js';
import { StowageError } from '../errors.js';
import type { ArchiveStore } from './archive-store.js';
import type { StoredVersion } from './store.js';

export interface MigrateReport {
  versions: number;
  /** Versions the destination did not have. */
  added: number;
  blobs: number;
  /** Blobs written to the destination (the rest it had). */
  copied: number;
  copiedBytes: number;
}

export async function migrateStore(
  from: ArchiveStore,
  to: ArchiveStore,
  opts: {
    concurrency?: number | undefined;
    signal?: AbortSignal | undefined;
    onBlob?: ((e: { digest: string; size: number; copied: boolean }) => void) | undefined;
  } = {},
): Promise<MigrateReport> {
  const versions = await from.versions();
  const digests = [...(await from.referenced(versions))];
  let copied = 0;
  let copiedBytes = 0;
  const limiter = new Limiter(opts.concurrency ?? 4);
  const copy = async (digest: string) => {
    opts.signal?.throwIfAborted();
    const size = await from.blobSize(digest);
    if (size === undefined) {
      throw new StowageError(
        'NOT_FOUND',
        `the store being migrated lacks blob ${digest}, which a version references; run stowage verify on its exports first`,
      );
    }
    const there = await to.hasBlob(digest);
    if (!there) {
      await to.putBlob({ mediaType: 'application/octet-stream', digest, size }, from.openBlob(digest));
      copied++;
      copiedBytes += size;
    }
    opts.onBlob?.({ digest, size, copied: !there });
  };
  await Promise.all(digests.map((d) => limiter.run(() => copy(d))));
  opts.signal?.throwIfAborted();
  let added = 0;
  await to.update((existing) => {
    const have = new Set(existing.map((v) => v.id));
    const fresh: StoredVersion[] = versions.filter((v) => !have.has(v.id));
    added = fresh.length;
    return [...existing, ...fresh];
  });
  return { versions: versions.length, added, blobs: digests.length, copied, copiedBytes };
}
