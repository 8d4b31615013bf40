/** `df`: what all archives would take, compared with what the store holds on disk. */

import type { StowageConfig } from '../config/stowage.js';
import { isRepositoryPattern, parseRepositoryPattern } from '../reference/pattern.js';
import { parseRepository, repositoryName } from '../reference/reference.js';
import type { ArchiveStore } from './archive-store.js';
import { retentionVictims } from './retention.js';
import type { StoredVersion } from './store.js';

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

/** The job that keeps a repository: the one naming it, or the first whose pattern matches it. */
function jobFor(config: StowageConfig, repository: string): StowageConfig['jobs'][number] | undefined {
  return config.jobs.find((j) => {
    try {
      if (!isRepositoryPattern(j.source)) return repositoryName(parseRepository(j.source)) === repository;
      const p = parseRepositoryPattern(j.source);
      return repository.startsWith(`${p.host}/`) && p.matches(repository.slice(p.host.length + 1));
    } catch {
      return false;
    }
  });
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
  for (const v of versions) {
    const list = byRepo.get(v.repository);
    if (list) list.push(v);
    else byRepo.set(v.repository, [v]);
  }
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
    const job = jobFor(config, repository);
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
