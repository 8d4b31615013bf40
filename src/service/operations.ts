/**
 * What the service's jobs and requests do, on the same engine as the CLI: pulls into the archive
 * store (a pull is a one-off sync of the named tags, so blobs the store holds are never fetched
 * again), pushes of stored versions to a registry, syncs of configured jobs, uploads of archives into
 * the store, and the access rules that keep every request within what registries.conf and the
 * service's allow-list permit.
 */

import { createWriteStream } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { LayerCompression } from '../archive/compress.js';
import type { JobConfig } from '../config/stowage.js';
import { onlyResult } from '../engine/fan-out.js';
import { StowageError } from '../errors.js';
import { hostPlatform, parsePlatform } from '../image/platform.js';
import { needsSignatures, refuseOutright } from '../policy/verify.js';
import {
  formatReference,
  type ImageReference,
  parseReference,
  repositoryName,
  withDefaultTag,
} from '../reference/reference.js';
import { registrySpelling } from '../reference/transport.js';
import type { ArchiveStore } from '../store/archive-store.js';
import type { StoredVersion } from '../store/store.js';
import { ociArchiveView, viewSha256 } from '../store/view.js';
import { BlobCache } from '../sync/blob-cache.js';
import type { BlobEvent, SyncReport } from '../sync/report.js';
import { sync } from '../sync/sync.js';
import { copyImages, type ImageFrom } from '../transfer/copy-images.js';
import { pushVersion } from '../transfer/push.js';
import { admitImage, openRegistryImage, openSource } from '../transports/open.js';
import { StoreDestination, type VersionLabel } from '../transports/store/destination.js';
import { checkReachable, type Engine, parsePullReference } from './engine.js';
import { publishRefusal, publishSyncEnd, publishTag } from './events.js';
import { JobFailure, type JobRun } from './job-system.js';

export interface PullRequest {
  refs: string[];
  platforms?: 'all' | string[] | undefined;
}

export interface PulledArchive {
  id: string;
  repository: string;
  tag: string;
  digest: string;
  platforms: string[];
  taken: string;
  sha256: string;
  size: number;
  /** Whether it was fetched now (false: the store had this version already). */
  fetched: boolean;
}

/** Computes and records a version's oci-archive checksum if the store has none yet. */
export async function ensureChecksum(
  store: ArchiveStore,
  version: StoredVersion,
  signal?: AbortSignal,
): Promise<{ sha256: string; size: number }> {
  if (version.archive) return version.archive;
  const view = await ociArchiveView(store, version);
  const archive = { sha256: await viewSha256(view, signal), size: view.size };
  await store.recordArchive(version.id, archive);
  return archive;
}

/** Counts a stored blob for the metrics: fetched from a registry, or found in the store. */
function countBlob(engine: Engine, e: BlobEvent): void {
  if (e.type === 'fetched') {
    engine.counters.bytesPulled += e.size;
    engine.counters.blobCacheMisses++;
  } else if (e.type === 'cached') {
    engine.counters.blobCacheHits++;
  }
}

/** A pull job: each tag into the store (HEAD first; only missing blobs fetched). */
export async function runPull(
  engine: Engine,
  req: PullRequest,
  run: JobRun,
): Promise<{ archives: PulledArchive[] }> {
  const refs = req.refs.map((r) => parsePullReference(engine, r));
  const platforms = req.platforms ?? 'all';
  // One ad-hoc sync job per repository, its tags listed.
  const byRepo = new Map<string, string[]>();
  for (const ref of refs) {
    const source = formatReference({ ...ref, tag: undefined, digest: undefined });
    const tags = byRepo.get(source) ?? [];
    if (!tags.includes(ref.tag!)) tags.push(ref.tag!);
    byRepo.set(source, tags);
  }
  const jobs: JobConfig[] = [...byRepo].map(([source, tags], i) => ({
    name: `pull-${i}`,
    source,
    tags,
    platforms,
    archive: true,
  }));
  const progress = { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 };
  const report = await sync(
    engine.ctx,
    { ...engine.config, jobs, retention: {}, materialize: undefined },
    {
      store: engine.store,
      signal: run.signal,
      onEvent: (e) => {
        run.emit('tag', { repository: e.repository, ...e.outcome });
        publishTag(engine, run.job, e);
      },
      onBlob: (e) => {
        countBlob(engine, e);
        // Each blob's own state, for the console's per-blob bars.
        run.emit('blob', { digest: e.digest, size: e.size, state: e.type });
        if (e.type === 'planned') {
          progress.blobs++;
          progress.bytes += e.size;
        } else {
          progress.blobsDone++;
          progress.bytesDone += e.size;
        }
        run.progress(progress);
      },
    },
  );
  run.signal.throwIfAborted();
  const failures = report.jobs.flatMap((j) => [
    ...(j.error ? [{ code: j.code, message: j.error }] : []),
    ...j.tags
      .filter((t) => t.action === 'failed')
      .map((t) => ({ code: t.code, message: `${j.source}:${t.tag}: ${t.error}` })),
  ]);
  if (failures.length) {
    const code = (failures[0]!.code ?? 'REGISTRY') as StowageError['code'];
    throw new StowageError(code, failures.map((f) => f.message).join('; '));
  }
  const archives: PulledArchive[] = [];
  for (const j of report.jobs) {
    for (const t of j.tags) {
      const v = await engine.store.latest(j.source, t.tag);
      if (!v) throw new StowageError('INTERNAL', `${j.source}:${t.tag} was synced but is not in the store`);
      // repo:tag@digest pins the tag: it must still point at that digest.
      const pin = refs.find((r) => r.digest && repositoryName(r) === j.source && r.tag === t.tag)?.digest;
      const served = v.sourceDigest ?? v.descriptor.digest;
      if (pin && pin !== served && pin !== v.descriptor.digest) {
        throw new StowageError(
          'NOT_FOUND',
          `${j.source}:${t.tag} points at ${served}, not ${pin}; the version was stored as ${v.id} (pull without @digest to take it as it is)`,
        );
      }
      const archive = await ensureChecksum(engine.store, v, run.signal);
      archives.push({
        id: v.id,
        repository: v.repository,
        tag: v.tag,
        digest: v.descriptor.digest,
        platforms: v.platforms,
        taken: v.taken,
        sha256: archive.sha256,
        size: archive.size,
        fetched: t.action === 'fetched',
      });
    }
  }
  return { archives };
}

export interface PushRequest {
  archive: string;
  destination: string;
  /** How plain layers are compressed (checked when the request came in); default gzip. */
  compression?: LayerCompression | undefined;
}

/** A push job: a stored version to a registry, digests intact. */
export async function runPush(engine: Engine, req: PushRequest, run: JobRun): Promise<unknown> {
  const version = await engine.store.find(req.archive);
  const dest = destinationRef(engine, req.destination, version);
  const result = await pushVersion(engine.ctx, engine.store, version, dest, {
    compress: req.compression,
    signal: run.signal,
    onProgress: (e) => {
      const p = run.job.progress;
      if (e.type === 'plan') run.progress({ blobs: e.blobs, bytes: e.totalBytes });
      if (e.type === 'blob-done')
        run.progress({ bytesDone: p.bytesDone + e.size, blobsDone: p.blobsDone + 1 });
    },
  });
  engine.counters.bytesPushed += result.stats.bytes;
  return { archive: version.id, ...result };
}

/** DEST as registry/repository[:tag] (for a job's request); without a tag, the version's own. */
export function destinationFor(engine: Engine, destination: string, version?: StoredVersion): string {
  return formatReference(destinationRef(engine, destination, version));
}

/** DEST parsed as registry/repository[:tag], the version's tag by default, checked against the rules. */
export function destinationRef(engine: Engine, destination: string, version?: StoredVersion): ImageReference {
  const input = registrySpelling(destination);
  const ref = parseReference(input);
  if (ref.shortName || !input.includes('/')) {
    throw new StowageError(
      'INVALID_REFERENCE',
      `destination "${destination}" must be registry/repository[:tag], e.g. 127.0.0.1:5000/mirror/app:1.4`,
    );
  }
  if (ref.digest)
    throw new StowageError('INVALID_REFERENCE', `destination "${destination}" takes a tag, not a digest`);
  checkReachable(engine, ref);
  return { ...ref, tag: ref.tag ?? version?.tag };
}

/** A sync job: configured jobs (all, or those named). */
export async function runSync(engine: Engine, names: string[] | undefined, run: JobRun): Promise<SyncReport> {
  const { path, maxBytes } = engine.config.cache;
  engine.blobCache ??= maxBytes > 0 ? BlobCache.open(path, maxBytes) : Promise.resolve(undefined);
  engine.blobCache.catch(() => {
    engine.blobCache = undefined;
  });
  const report = await sync(engine.ctx, engine.config, {
    store: engine.store,
    blobCache: await engine.blobCache,
    jobs: names,
    signal: run.signal,
    onEvent: (e) => {
      run.emit('tag', { job: e.job, repository: e.repository, ...e.outcome });
      publishTag(engine, run.job, e);
    },
    onBlob: (e) => {
      countBlob(engine, e);
      // The job's progress, as a pull's: what the tags planned, and what arrived or was found.
      const p = run.job.progress;
      if (e.type === 'planned') run.progress({ blobs: p.blobs + 1, bytes: p.bytes + e.size });
      else run.progress({ blobsDone: p.blobsDone + 1, bytesDone: p.bytesDone + e.size });
    },
  }).catch((e: unknown) => {
    publishSyncEnd(engine, run.job, undefined, (e as Error).message);
    throw e;
  });
  // Canceled: the job's end says so; a sync that ran to its end tells its summary, failed tags or not.
  if (run.signal.aborted) publishSyncEnd(engine, run.job, report, 'the job was canceled');
  else publishSyncEnd(engine, run.job, report);
  if (report.failed > 0) throw new JobFailure(`${report.failed} tags or jobs failed; see the result`, report);
  return report;
}

/**
 * An uploaded archive (any format stowage reads) into the store: spooled to disk within `limit`
 * bytes, opened, every blob digest-checked on its way into the store. Each image becomes a version
 * named by the archive (or by `name`, for a one-image archive).
 */
export async function importUpload(
  engine: Engine,
  body: AsyncIterable<Uint8Array>,
  opts: { limit: number; name?: string | undefined; source: string; signal?: AbortSignal | undefined },
): Promise<StoredVersion[]> {
  return withSpooled(engine, body, { ...opts, what: 'archive' }, (spool) =>
    asUploadError(spool, () => storeUpload(engine, spool, opts)),
  );
}

/**
 * A request body spooled to a file of the service's own within `limit` bytes (an empty one refused),
 * given to `fn`, and removed after it whatever happens.
 */
export async function withSpooled<T>(
  engine: Engine,
  body: AsyncIterable<Uint8Array>,
  opts: { limit: number; what: 'archive' | 'bundle'; signal?: AbortSignal | undefined },
  fn: (spool: string) => Promise<T>,
): Promise<T> {
  await mkdir(engine.tmpDir, { recursive: true });
  const spool = join(engine.tmpDir, `upload-${process.pid}-${Math.random().toString(36).slice(2)}.tar`);
  try {
    let n = 0;
    const limited = async function* () {
      for await (const c of body) {
        n += c.byteLength;
        if (n > opts.limit) {
          throw new StowageError(
            'TOO_LARGE',
            `the ${opts.what} is over the upload limit of ${opts.limit} bytes (server.max-upload)`,
          );
        }
        yield c;
      }
    };
    await pipeline(limited, createWriteStream(spool, { flags: 'wx', mode: 0o600 }), { signal: opts.signal });
    if (n === 0)
      throw new StowageError(
        opts.what === 'archive' ? 'INVALID_ARCHIVE' : 'INVALID_ARGUMENT',
        `the request body is empty; send the ${opts.what} file as the body`,
      );
    return await fn(spool);
  } finally {
    await unlink(spool).catch(() => {});
  }
}

/**
 * Errors about an uploaded archive are the client's (422, INVALID_ARCHIVE: a blob that fails its digest
 * is a damaged upload, not a registry failure), and never show where the service spooled it.
 */
async function asUploadError<T>(spool: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof StowageError)) throw e;
    const message = e.message.replaceAll(spool, 'the uploaded archive');
    const code = e.code === 'DIGEST_MISMATCH' ? 'INVALID_ARCHIVE' : e.code;
    if (code === e.code && message === e.message) throw e;
    throw new StowageError(code, message, { cause: e });
  }
}

async function storeUpload(
  engine: Engine,
  spool: string,
  opts: { name?: string | undefined; source: string; signal?: AbortSignal | undefined },
): Promise<StoredVersion[]> {
  const opened = await openSource(engine.ctx, spool, {
    archivesOnly: true,
    everyImage: true,
    signal: opts.signal,
  });
  try {
    if (opts.name && opened.images.length !== 1) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `name= applies to a one-image archive; this one has ${opened.images.length}`,
      );
    }
    const images: ImageFrom[] = [];
    const labels: VersionLabel[] = [];
    for (const [i, img] of opened.images.entries()) {
      const label = opts.name ?? img.names.find((x) => x.includes('/'));
      if (!label) {
        throw new StowageError(
          'INVALID_ARGUMENT',
          `image @${i} of the archive records no repository name; give ?name=REGISTRY/REPOSITORY:TAG`,
        );
      }
      const ref = withDefaultTag(parseReference(label));
      if (ref.shortName)
        throw new StowageError(
          'INVALID_REFERENCE',
          `"${label}" names no registry; give REGISTRY/REPOSITORY:TAG`,
        );
      images.push({ opened, image: { ...img, asked: `image @${i} of the uploaded archive` } });
      labels.push({ repository: repositoryName(ref), tag: ref.tag!, source: opts.source });
    }
    // Every blob is digest-checked on its way into the store; each image becomes a version.
    const destination = new StoreDestination(engine.store, { labels, verifyExisting: true });
    const copied = await copyImages(images, [{ target: { destination } }], {
      selection: { all: true, platforms: [hostPlatform()] },
      concurrency: 4,
      signal: opts.signal,
      digestCache: false,
    });
    const r = onlyResult(copied);
    const added: StoredVersion[] = [];
    // The store's commit gives the versions it recorded.
    for (const version of (r.committed as StoredVersion[] | undefined) ?? []) {
      // The stored entry (an identical version already there keeps its own time and checksum).
      const stored = await engine.store.find(version.id);
      added.push({ ...stored, archive: await ensureChecksum(engine.store, stored, opts.signal) });
    }
    await engine.store.flush?.();
    return added;
  } finally {
    await opened.close();
  }
}

/** Validates a platforms list from a request. */
export function parsePlatforms(p: 'all' | string[] | undefined): 'all' | string[] | undefined {
  if (p === undefined || p === 'all') return p;
  for (const s of p) parsePlatform(s);
  return p;
}

/**
 * Admits a pull request's image by the trust policy before a job is made, so that a refusal is the
 * request's 403: a `reject` at once, signatures by resolving the tag and reading them (no layer).
 */
export async function admitPull(engine: Engine, ref: ImageReference, signal?: AbortSignal): Promise<void> {
  try {
    await admitPullRequest(engine, ref, signal);
  } catch (e) {
    if (e instanceof StowageError && e.code === 'POLICY_REJECTED') {
      publishRefusal(engine, '/stowage/api', {
        reference: formatReference(ref),
        reason: e.message,
        where: 'pull',
      });
    }
    throw e;
  }
}

async function admitPullRequest(engine: Engine, ref: ImageReference, signal?: AbortSignal): Promise<void> {
  const policy = await engine.ctx.policy();
  refuseOutright(policy, ref);
  if (!needsSignatures(policy, ref)) return;
  const opened = await openRegistryImage(engine.ctx, ref, signal);
  try {
    await admitImage(engine.ctx, opened, opened.images[0]!, signal);
  } finally {
    await opened.close();
  }
}
