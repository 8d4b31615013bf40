/**
 * One tag of a sync job: HEAD at the source, then into the store and/or the mirror, fetching only
 * what neither has; its outcome for the report.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { JobConfig } from '../config/stowage.js';
import {
  type BlobLookup,
  type CopyImage,
  type PlannedImage,
  planOne,
  type Selection,
} from '../engine/copy.js';
import type { BlobOutcome, BlobSink } from '../engine/destination.js';
import type { DigestCache } from '../engine/digest-cache.js';
import { copyToEach, firstFailure, type Target } from '../engine/fan-out.js';
import { newIndexReason } from '../engine/preserve.js';
import type { ReferrerOptions } from '../engine/referrers.js';
import type { ImageSource } from '../engine/source.js';
import { StowageError, toStowageError } from '../errors.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import { hostPlatform, parsePlatform } from '../image/platform.js';
import type { Descriptor } from '../image/schemas.js';
import type { Signer } from '../policy/sign.js';
import { admit } from '../policy/verify.js';
import { formatReference, type ImageReference, type parseRepository } from '../reference/reference.js';
import type { RegistryClient } from '../registry/client.js';
import type { Context } from '../registry/context.js';
import type { ArchiveStore } from '../store/archive-store.js';
import type { StoredVersion } from '../store/store.js';
import { openRegistryDestination } from '../transports/open.js';
import type { RegistrySource } from '../transports/registry/source.js';
import type { RegistrySink } from '../transports/registry/upload.js';
import { StoreDestination } from '../transports/store/destination.js';
import type { BlobCache } from './blob-cache.js';
import type { SyncOptions, TagOutcome } from './report.js';

/** A job's mirror: its registry's first answer (shared by the tags), client, repository, and the sink its tags share. */
export interface Mirror {
  /** What signs the images sent there (the job's key), if anything. */
  signer?: Signer | undefined;
  ready: Promise<unknown>;
  client: RegistryClient;
  repo: string;
  ref: ReturnType<typeof parseRepository>;
  sink: RegistrySink;
}

/** What a job's tags are run with: the options, and the mirror blob cache, opened on first use. */
export type JobOptions = SyncOptions & {
  cache?: (() => Promise<BlobCache | undefined>) | undefined;
  /** Where each image's manifest is remembered (see engine/digest-cache.ts); saved once, at the end. */
  digestCache?: DigestCache | undefined;
};

/** What every tag of a job shares: where from, where to, and the blobs already on their way. */
export interface TagSyncContext {
  ctx: Context;
  /** The source repository, as resolved (its tags are admitted by the trust policy under it). */
  ref: ImageReference;
  store: ArchiveStore;
  /** The store as this job's blob sink (its tags share it). */
  storing: BlobSink;
  /** The store's newest version of each tag of the repository, as the job started. */
  newest: Map<string, StoredVersion>;
  source: RegistrySource;
  repository: string;
  endpoint: { host: string; path: string };
  job: JobConfig;
  archiving: boolean;
  mirror: Mirror | undefined;
}

/** The source, counting the bytes of the blobs read from it into the tag's outcome. */
function counting(source: ImageSource, outcome: TagOutcome): ImageSource {
  return {
    description: source.description,
    getManifest: (r, s) => source.getManifest(r, s),
    getBlob: (d, s) => {
      outcome.fetchedBytes += d.size;
      return source.getBlob(d, s);
    },
    getBlobTail: source.getBlobTail ? (d, n, s) => source.getBlobTail!(d, n, s) : undefined,
    readSmallBlob: source.readSmallBlob ? (d, s) => source.readSmallBlob!(d, s) : undefined,
    referrers: source.referrers ? (d, s) => source.referrers!(d, s) : undefined,
    close: () => source.close(),
  };
}

/** A blob event for the report: fetched from the source, or found (the store, a cache, another tag). */
function blobEvent(opts: JobOptions): (d: Descriptor, outcome: BlobOutcome) => void {
  return (d, outcome) =>
    opts.onBlob?.({ type: outcome === 'written' ? 'fetched' : 'cached', digest: d.digest, size: d.size });
}

export async function syncTag(t: TagSyncContext, tag: string, opts: JobOptions): Promise<TagOutcome> {
  const { source, repository, endpoint, archiving, mirror } = t;
  const outcome: TagOutcome = { tag, action: 'skipped', fetchedBytes: 0 };
  try {
    // Both HEADs at once: the source's digest, and what the mirror has under the tag.
    const [head, there] = await Promise.all([
      source.client.headManifest(endpoint.path, tag, opts.signal),
      mirror?.ready.then(() => mirror.client.headManifest(mirror.repo, tag, opts.signal)),
    ]);
    if (!head) throw new StowageError('NOT_FOUND', `tag ${tag} of ${repository} not found`);
    outcome.digest = head.digest;
    let archiveCurrent = true;
    if (archiving) {
      const latest = t.newest.get(tag);
      archiveCurrent = latest !== undefined && sourceDigest(latest) === head.digest;
      outcome.archive = archiveCurrent ? 'current' : opts.dryRun ? 'would-store' : undefined;
    }
    let mirrorCurrent = true;
    if (mirror) {
      mirrorCurrent =
        there !== undefined &&
        (there.digest === head.digest || storedFor(t.newest.get(tag), head.digest) === there.digest);
      outcome.mirror = mirrorCurrent ? 'current' : opts.dryRun ? 'would-push' : undefined;
    }
    if (archiveCurrent && mirrorCurrent) {
      outcome.action = opts.dryRun ? 'would-skip' : 'skipped';
      return outcome;
    }
    if (opts.dryRun) {
      // The one refusal a HEAD can foresee: --preserve-digests with platforms chosen from an index.
      const refusal = digestWouldChange(t.job, head.mediaType);
      outcome.action = refusal ? 'would-fail' : 'would-fetch';
      if (refusal) Object.assign(outcome, { error: refusal, code: 'INVALID_ARGUMENT' });
      return outcome;
    }
    // A tag the trust policy refuses is neither stored nor mirrored; the report says why.
    await admit(await t.ctx.policy(), {
      transport: 'docker',
      ref: { ...t.ref, tag, digest: undefined },
      digest: head.digest,
      signatures: () => source.signatures(head.digest, opts.signal),
    });
    const image: CopyImage = {
      source: counting(source, outcome),
      reference: tag,
      names: { repoTags: [], annotations: {} },
      label: `${repository}:${tag}`,
      origin: { host: endpoint.host, repository: endpoint.path },
    };
    const planned = await planOne(image, selectionOf(t.job), opts.signal);
    // The store first: the mirror then takes from it what the source would otherwise send again.
    const targets: Target[] = [];
    const store = archiving && !archiveCurrent ? storeTarget(t, planned, head.digest, tag, opts) : undefined;
    const mirrored = mirror && !mirrorCurrent ? await mirrorTarget(t, mirror, planned, tag, opts) : undefined;
    for (const x of [store, mirrored]) if (x) targets.push(x);
    const r = await copyToEach([planned], targets, {
      concurrency: opts.concurrency ?? 4,
      signal: opts.signal,
      referrers: referrersOf(t.job),
      // The job's, saved once at its end (false: none, where the run has none).
      digestCache: opts.digestCache ?? false,
      preserveDigests: t.job['preserve-digests'],
    });
    const [first, second] = r.outcomes;
    const stored = store ? first : undefined;
    const pushed = store ? second : first;
    if (stored?.ok) {
      outcome.archive = 'stored';
      const v = (stored.committed as StoredVersion[] | undefined)?.[0];
      if (v) outcome.version = { id: v.id, digest: v.descriptor.digest, platforms: v.platforms };
      const before = t.newest.get(tag);
      if (before) outcome.previous = sourceDigest(before);
    }
    if (pushed?.ok) outcome.mirror = 'pushed';
    const failed = firstFailure(r.outcomes);
    if (failed) throw failed;
    outcome.action = 'fetched';
  } catch (e) {
    outcome.action = 'failed';
    const err = toStowageError(e);
    outcome.error = err.message;
    outcome.code = err.code;
  }
  return outcome;
}

/** A tag's image into the store: blobs a mirroring job of the run has in the blob cache come from there. */
function storeTarget(
  t: TagSyncContext,
  planned: PlannedImage,
  sourceDigest: string,
  tag: string,
  opts: JobOptions,
): Target {
  for (const b of planned.plan.blobs) opts.onBlob?.({ type: 'planned', digest: b.digest, size: b.size });
  const fromCache: BlobLookup = async (d) => (await opts.cache?.())?.lookup(d);
  const destination = new StoreDestination(t.store, {
    labels: [
      {
        repository: t.repository,
        tag,
        source: `${t.endpoint.host}/${t.endpoint.path}:${tag}`,
        sourceDigest,
      },
    ],
    sink: t.storing,
    onBlob: blobEvent(opts),
  });
  return { destination, lookups: [fromCache] };
}

/**
 * A tag's image into the mirror. Blobs the store holds go from disk (an archiving job of the run
 * fetching one now is waited for); so do blobs in the mirror blob cache (another job sent them); the
 * rest stream from the source, through the cache for the jobs after this one.
 */
async function mirrorTarget(
  t: TagSyncContext,
  mirror: Mirror,
  planned: PlannedImage,
  tag: string,
  opts: JobOptions,
): Promise<Target> {
  const { store } = t;
  const cache = t.archiving ? undefined : await opts.cache?.();
  const fromStore: BlobLookup = async (d, signal) =>
    (await store.fetched(d.digest)) || (await store.hasBlob(d.digest))
      ? store.openBlob(d.digest, undefined, signal)
      : undefined;
  const throughCache: BlobLookup = async (d, signal) => {
    if (!cache) return undefined;
    const { body, hit } = await cache.through(d, () => planned.source.getBlob(d, signal));
    if (hit) opts.onBlob?.({ type: 'cached', digest: d.digest, size: d.size });
    return body;
  };
  const destination = await openRegistryDestination(t.ctx, mirror.ref, {
    tags: [tag],
    sink: mirror.sink,
    // Signed as the mirror's reference with its tag, as skopeo sync signs.
    sign: mirror.signer
      ? { signer: mirror.signer, identity: formatReference({ ...mirror.ref, tag, digest: undefined }) }
      : undefined,
  });
  return { destination, lookups: [fromStore, throughCache] };
}

/** The source's digest a stored version came from (a platform selection stores a different one). */
function sourceDigest(v: StoredVersion): string {
  return v.sourceDigest ?? v.descriptor.digest;
}

/** What the store made of a source digest (the tag's newest version), if it has it. */
function storedFor(v: StoredVersion | undefined, digest: string): string | undefined {
  return v && sourceDigest(v) === digest ? v.descriptor.digest : undefined;
}

/** Writes each newly stored version as a tarball (with .sha256) under `dir`: REPOSITORY/TAG@DIGEST.tar. */
export async function materialize(
  store: ArchiveStore,
  target: { dir: string; format: 'oci-archive' | 'docker-archive' },
  repository: string,
  outcomes: TagOutcome[],
  signal: AbortSignal | undefined,
): Promise<void> {
  const dir = join(target.dir, repository.replace(/[:/]/g, '_'));
  for (const o of outcomes) {
    if (o.archive !== 'stored') continue;
    try {
      const v = await store.latest(repository, o.tag);
      if (!v) continue;
      await mkdir(dir, { recursive: true });
      const file = join(dir, `${o.tag}@${v.descriptor.digest.slice(7, 19)}.tar`);
      // The archive is reproducible: a file already there is this one.
      if (!(await stat(file).catch(() => undefined))) {
        // The archive writers load when first needed, not at every start of the CLI.
        const { exportVersion } = await import('../transfer/export.js');
        await exportVersion(store, v.id, {
          output: file,
          format: target.format,
          all: target.format === 'oci-archive',
          signal,
        });
      }
      o.file = file;
    } catch (e) {
      o.action = 'failed';
      o.error = `stored, but writing its tarball failed: ${toStowageError(e).message}`;
    }
  }
}

function platformsOf(job: JobConfig): 'all' | ReturnType<typeof parsePlatform>[] {
  if (job.platforms === undefined || job.platforms === 'all') return 'all';
  return job.platforms.map(parsePlatform);
}

/** Which attachments a job carries, to the store and to its mirror alike. */
function referrersOf(job: JobConfig): ReferrerOptions {
  return { carry: job.referrers !== false, artifactTypes: job['referrer-types'] };
}

/** With preserve-digests, why a tag of this media type would fail (several platforms of an index). */
function digestWouldChange(job: JobConfig, mediaType: string): string | undefined {
  const platforms = job.platforms;
  if (!job['preserve-digests'] || platforms === undefined || platforms === 'all') return undefined;
  if (platforms.length < 2 || !isIndexMediaType(mediaType)) return undefined;
  return `${newIndexReason(platforms)}, not the source's; keep the whole index (platforms = "all") or choose one platform, or leave out preserve-digests`;
}

export function selectionOf(job: JobConfig): Selection {
  const platforms = platformsOf(job);
  return platforms === 'all' ? { all: true, platforms: [hostPlatform()] } : { platforms };
}
