/**
 * Archives as views of the store: a version is exported as the same reproducible archive `stowage pull`
 * writes for that image (it is read from the store, which is an OCI layout), and its oci-archive
 * sha256 is recorded once computed. `df` compares what all archives would take with what the store
 * holds on disk.
 */

import type { StowageConfig } from '../config/stowage.js';
import type { ProgressListener } from '../core/progress.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import type { PlatformSpec } from '../image/platform.js';
import { parseRepository, repositoryName } from '../reference/reference.js';
import type { ArchiveFormat } from '../transfer/archive-source.js';
import type { Context } from '../transfer/context.js';
import { type PullResult, pull } from '../transfer/pull.js';
import { retentionVictims } from './retention.js';
import type { ArchiveStore, StoredVersion } from './store.js';

export interface ExportOptions {
  output: string;
  format?: ArchiveFormat | undefined;
  all?: boolean | undefined;
  platforms?: PlatformSpec[] | undefined;
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

export async function exportVersion(
  ctx: Context,
  store: ArchiveStore,
  idOrName: string,
  opts: ExportOptions,
): Promise<PullResult & { version: StoredVersion }> {
  const version = await store.find(idOrName);
  const result = await pull(ctx, [`oci:${store.path}:${version.descriptor.digest}`], {
    output: opts.output,
    format: opts.format,
    all: opts.all,
    platforms: opts.platforms,
    concurrency: opts.concurrency,
    signal: opts.signal,
    onProgress: opts.onProgress,
    name: `${version.repository}:${version.tag}`,
  });
  // The whole version as an oci-archive: reproducible, so its checksum is recorded for good.
  const whole = !isIndexMediaType(version.descriptor.mediaType) || opts.all;
  if ((opts.format ?? 'oci-archive') === 'oci-archive' && whole && result.sha256 && !version.archive) {
    await store.recordArchive(version.id, { sha256: result.sha256, size: result.size ?? 0 });
  }
  const name = `${version.repository}:${version.tag}`;
  return {
    ...result,
    reference: name,
    images: result.images.map((i) => ({
      ...i,
      reference: name,
      source: `${store.path} (version ${version.id})`,
    })),
    version,
  };
}

export interface RepositoryUsage {
  repository: string;
  versions: number;
  /** What all its versions' archives hold together (blobs counted once per version). */
  logicalBytes: number;
  /** Distinct blobs of its versions (shared ones counted in each repository that uses them). */
  uniqueBytes: number;
}

export interface DiskUsage {
  store: string;
  repositories: RepositoryUsage[];
  logicalBytes: number;
  diskBytes: number;
  /** What retention (as configured) would remove now. */
  reclaimable: { versions: number; bytes: number };
}

export async function diskUsage(store: ArchiveStore, config: StowageConfig): Promise<DiskUsage> {
  const versions = await store.versions();
  const sizes = new Map<string, number>();
  const sizeOf = async (digest: string) => {
    let n = sizes.get(digest);
    if (n === undefined) {
      n = (await store.blobSize(digest)) ?? 0;
      sizes.set(digest, n);
    }
    return n;
  };
  const blobsOf = new Map<string, Set<string>>();
  for (const v of versions) blobsOf.set(v.id, await store.referenced([v]));
  const byRepo = new Map<string, StoredVersion[]>();
  for (const v of versions) byRepo.set(v.repository, [...(byRepo.get(v.repository) ?? []), v]);
  const repositories: RepositoryUsage[] = [];
  let logicalBytes = 0;
  const victims: StoredVersion[] = [];
  for (const [repository, list] of [...byRepo].sort(([a], [b]) => (a < b ? -1 : 1))) {
    let logical = 0;
    const unique = new Set<string>();
    for (const v of list) {
      for (const d of blobsOf.get(v.id)!) {
        logical += await sizeOf(d);
        unique.add(d);
      }
    }
    let uniqueBytes = 0;
    for (const d of unique) uniqueBytes += await sizeOf(d);
    repositories.push({ repository, versions: list.length, logicalBytes: logical, uniqueBytes });
    logicalBytes += logical;
    const job = config.jobs.find((j) => {
      try {
        return repositoryName(parseRepository(j.source)) === repository;
      } catch {
        return false;
      }
    });
    victims.push(...retentionVictims(list, job?.retention ?? config.retention));
  }
  const kept = new Set<string>();
  const gone = new Set(victims.map((v) => v.id));
  for (const v of versions) if (!gone.has(v.id)) for (const d of blobsOf.get(v.id)!) kept.add(d);
  const freed = new Set<string>();
  for (const v of victims) for (const d of blobsOf.get(v.id)!) if (!kept.has(d)) freed.add(d);
  let freedBytes = 0;
  for (const d of freed) freedBytes += await sizeOf(d);
  return {
    store: store.path,
    repositories,
    logicalBytes,
    diskBytes: await store.diskBytes(),
    reclaimable: { versions: victims.length, bytes: freedBytes },
  };
}
