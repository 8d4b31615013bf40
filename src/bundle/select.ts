/**
 * What a bundle takes: its base (the bundles the far side already has, named by id, by file or by
 * time) and the versions since it that the filters choose.
 */
import { stat } from 'node:fs/promises';
import type { JobConfig } from '../config/stowage.js';
import { StowageError } from '../errors.js';
import { isRepositoryPattern, parseRepositoryPattern } from '../reference/pattern.js';
import { parseReference, repositoryName } from '../reference/reference.js';
import type { ArchiveStore } from '../store/archive-store.js';
import type { BundleRecord } from '../store/bundle-history.js';
import type { StoredVersion } from '../store/version.js';
import { type BundleManifest, parseManifest, shortId, type VersionChoice } from './manifest.js';
import { readBundleManifest } from './read.js';

/** The bundles a delta builds on, and what the far side therefore holds. */
export interface Base {
  /** Bundle ids, oldest first. */
  ids: string[];
  /** Every blob those bundles carried or assumed: present at the far side once they were imported. */
  blobs: Set<string>;
  /** Versions taken after this time are the ones since the base (ISO; '' for no base). */
  after: string;
  /** How the base was named, for messages. */
  label: string;
}

export const NO_BASE: Base = { ids: [], blobs: new Set(), after: '', label: '' };

const ID = /^(?:sha256:)?([0-9a-f]{6,64})$/;

/** The base `since` names: a bundle file, a recorded bundle's id (or a prefix of one), or a time. */
export async function resolveBase(
  store: ArchiveStore,
  since: string | undefined,
  /** The service names bases by id or time only: never a file on its disk. */
  opts: { files?: boolean } = {},
): Promise<Base> {
  if (!since) return NO_BASE;
  const history = store.bundles();
  const records = await history.list();
  if (opts.files !== false && (await isFile(since))) {
    const { manifest, id } = await readBundleManifest(since);
    return chainBase(store, records, id, manifest, `bundle ${shortId(id)} (${since})`);
  }
  const m = ID.exec(since);
  if (m) {
    const hits = [...new Set(records.filter((r) => r.id.slice(7).startsWith(m[1]!)).map((r) => r.id))];
    if (hits.length > 1)
      throw new StowageError('INVALID_ARGUMENT', `bundle id ${since} is ambiguous: give more of it`);
    if (hits.length === 1) {
      const id = hits[0]!;
      const bytes = await history.manifest(id);
      if (!bytes)
        throw new StowageError('NOT_FOUND', `the store's record of bundle ${shortId(id)} lost its manifest`);
      return chainBase(
        store,
        records,
        id,
        parseManifest(bytes, `bundle ${shortId(id)}`),
        `bundle ${shortId(id)}`,
      );
    }
    if (!/^\d{4}-\d\d-\d\d/.test(since))
      throw new StowageError(
        'NOT_FOUND',
        `no bundle ${since} is recorded in the store (see stowage bundle list); --since takes a bundle file, a bundle id or a time`,
      );
  }
  const at = Date.parse(since);
  if (!/^\d{4}-\d\d-\d\d/.test(since) || Number.isNaN(at))
    throw new StowageError(
      'INVALID_ARGUMENT',
      `--since ${since} is neither a bundle file, a recorded bundle id, nor a time (2026-03-01 or 2026-03-01T12:00:00Z)`,
    );
  const iso = new Date(at).toISOString();
  // Every bundle recorded by then is at the far side: what they carried is not carried again.
  const before = records.filter((r) => Date.parse(r.at) <= at);
  const base: Base = { ids: [], blobs: new Set(), after: iso, label: `bundles recorded by ${iso}` };
  for (const r of before) await addRecorded(store, base, r.id);
  return base;
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

/** A bundle and every bundle it builds on. */
async function chainBase(
  store: ArchiveStore,
  records: BundleRecord[],
  id: string,
  manifest: BundleManifest,
  label: string,
): Promise<Base> {
  const base: Base = { ids: [], blobs: new Set(), after: manifest.through, label };
  for (const earlier of manifest.bases) {
    // One the store never recorded still counts by what the named bundle assumed of it.
    if (records.some((r) => r.id === earlier)) await addRecorded(store, base, earlier);
    else if (!base.ids.includes(earlier)) base.ids.push(earlier);
  }
  add(base, id, manifest);
  return base;
}

async function addRecorded(store: ArchiveStore, base: Base, id: string): Promise<void> {
  if (base.ids.includes(id)) return;
  const bytes = await store.bundles().manifest(id);
  if (!bytes) return;
  add(base, id, parseManifest(bytes, `bundle ${shortId(id)}`));
}

function add(base: Base, id: string, m: BundleManifest): void {
  if (!base.ids.includes(id)) base.ids.push(id);
  for (const b of m.blobs) base.blobs.add(b.digest);
  for (const b of m.assumes) base.blobs.add(b.digest);
  if (m.through > base.after) base.after = m.through;
}

export interface VersionFilter {
  versions: VersionChoice;
  /** Regular expressions the whole repository name, or tag, must match. */
  repository?: string | undefined;
  tag?: string | undefined;
  /** Only the repositories these sync jobs write. */
  jobs?: JobConfig[] | undefined;
}

function whole(re: string | undefined, what: string): RegExp | undefined {
  if (re === undefined) return undefined;
  try {
    return new RegExp(`^(?:${re})$`);
  } catch (e) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `--${what} ${re} is not a regular expression: ${(e as Error).message}`,
    );
  }
}

/** Whether a sync job writes this store repository (its source, or a repository its pattern finds). */
export function jobTakes(job: JobConfig, repository: string): boolean {
  if (!isRepositoryPattern(job.source)) return repositoryName(parseReference(job.source)) === repository;
  const pattern = parseRepositoryPattern(job.source);
  if (!repository.startsWith(`${pattern.host}/`)) return false;
  const path = repository.slice(pattern.host.length + 1);
  const include = job.repositories?.include?.map((r) => new RegExp(r));
  const exclude = job.repositories?.exclude?.map((r) => new RegExp(r));
  return (
    pattern.matches(path) &&
    (!include?.length || include.some((r) => r.test(path))) &&
    !exclude?.some((r) => r.test(path))
  );
}

/** The versions since the base the filter takes, oldest first (the store's order). */
export function chooseVersions(all: StoredVersion[], base: Base, filter: VersionFilter): StoredVersion[] {
  const repo = whole(filter.repository, 'repository');
  const tag = whole(filter.tag, 'tag');
  const taken = all.filter(
    (v) =>
      (!base.after || v.taken > base.after) &&
      (!repo || repo.test(v.repository)) &&
      (!tag || tag.test(v.tag)) &&
      (!filter.jobs?.length || filter.jobs.some((j) => jobTakes(j, v.repository))),
  );
  if (filter.versions === 'all') return taken;
  const newest = new Map<string, StoredVersion>();
  for (const v of taken) newest.set(`${v.repository}:${v.tag}`, v);
  const keep = new Set(newest.values());
  return taken.filter((v) => keep.has(v));
}
