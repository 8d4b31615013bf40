/**
 * The sync engine: for each job, the chosen tags of a source repository go into the archive store
 * and/or a mirror repository, fetching only what changed. A tag whose digest (from a HEAD request) is
 * already the newest stored version, or already at the mirror, costs one HEAD and nothing else; a blob
 * the store holds is never fetched again (the mirror is fed from the store when it can). One failing
 * tag does not stop the others; each job ends with retention, the run with a blob garbage collection.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { JobConfig, StowageConfig } from '../config/stowage.js';
import {
  type BlobLookup,
  type CopyImage,
  copyPlanned,
  type PlannedImage,
  planOne,
  type Selection,
} from '../copy/copy.js';
import type { BlobOutcome, BlobSink } from '../copy/destination.js';
import { DigestCache } from '../copy/digest-cache.js';
import { newIndexReason } from '../copy/preserve.js';
import type { ReferrerOptions } from '../copy/referrers.js';
import type { ImageSource } from '../copy/source.js';
import { mapLimited } from '../core/limiter.js';
import { StowageError, toStowageError } from '../errors.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import { hostPlatform, parsePlatform } from '../image/platform.js';
import type { Descriptor } from '../image/schemas.js';
import { loadSigner, type Signer } from '../policy/sign.js';
import { admit } from '../policy/verify.js';
import {
  formatReference,
  type ImageReference,
  parseRepository,
  repositoryName,
} from '../reference/reference.js';
import type { RegistryClient } from '../registry/client.js';
import type { Context } from '../registry/context.js';
import { openStore } from '../store/open.js';
import { retentionVictims } from '../store/retention.js';
import { type ArchiveStore, repositoryVersions, type StoredVersion } from '../store/store.js';
import { openRegistryDestination } from '../transports/open.js';
import { RegistrySource } from '../transports/registry/source.js';
import { RegistrySink } from '../transports/registry/upload.js';
import { StoreDestination, storeSink } from '../transports/store/destination.js';
import { BlobCache } from './blob-cache.js';
import { expandPattern, isRepositoryPattern } from './namespace.js';
import { applyPrune, type MirrorDeletion, planPrune } from './prune.js';
import { selectTags } from './select.js';

/** Tags of one repository synced at once. */
const TAG_CONCURRENCY = 8;
/** Repositories of one pattern job synced at once (the registry's own limits bound the requests). */
const REPOSITORY_CONCURRENCY = 4;

export type TagAction = 'fetched' | 'skipped' | 'failed' | 'would-fetch' | 'would-skip' | 'would-fail';

export interface TagOutcome {
  tag: string;
  action: TagAction;
  digest?: string | undefined;
  /** What happened at each destination. */
  archive?: 'stored' | 'current' | 'would-store' | undefined;
  /** The tarball written for the new version (with `materialize`). */
  file?: string | undefined;
  mirror?: 'pushed' | 'current' | 'would-push' | undefined;
  /** Bytes of blobs fetched from the source for this tag. */
  fetchedBytes: number;
  error?: string | undefined;
  /** The error's stable code (StowageError), with `error`. */
  code?: string | undefined;
}

export interface JobReport {
  name: string;
  /** The repository synced (one of those a pattern found, for a pattern job). */
  source: string;
  /** The job's source pattern, when the repository is one it found (HOST/team/**). */
  pattern?: string | undefined;
  /** Where the repository went, when the job mirrors. */
  mirror?: string | undefined;
  tags: TagOutcome[];
  pruned: { id: string; tag: string; digest: string; taken: string }[];
  /** Mirror tags gone from the source, deleted (prune = true), or to be deleted in a dry run. */
  mirrorDeleted: MirrorDeletion[];
  error?: string | undefined;
  /** The error's stable code (StowageError), with `error`. */
  code?: string | undefined;
}

export interface SyncReport {
  dryRun: boolean;
  store: string;
  jobs: JobReport[];
  fetchedBytes: number;
  failed: number;
  garbage?: { blobs: number; bytes: number } | undefined;
}

export interface BlobEvent {
  type: 'planned' | 'fetched' | 'cached';
  digest: string;
  size: number;
}

export interface SyncOptions {
  /** The store to use (default: the file-system store at config.storePath). */
  store?: ArchiveStore | undefined;
  /** Only these jobs (by name). */
  jobs?: string[] | undefined;
  dryRun?: boolean | undefined;
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onEvent?: ((e: { job: string; repository: string; tag: string; outcome: TagOutcome }) => void) | undefined;
  /** Blobs as they are stored: planned (per tag), fetched, or found in the store already. */
  onBlob?: ((e: BlobEvent) => void) | undefined;
  /** The mirror blob cache to share (default: opened from config.cache when a job mirrors). */
  blobCache?: BlobCache | undefined;
}

/** A job's mirror: its registry's first answer (shared by the tags), client, repository, and the sink its tags share. */
interface Mirror {
  /** What signs the images sent there (the job's key), if anything. */
  signer?: Signer | undefined;
  ready: Promise<unknown>;
  client: RegistryClient;
  repo: string;
  ref: ReturnType<typeof parseRepository>;
  sink: RegistrySink;
}

/** What a job's tags are run with: the options, and the mirror blob cache, opened on first use. */
type JobOptions = SyncOptions & {
  cache?: (() => Promise<BlobCache | undefined>) | undefined;
  /** Where each image's manifest is remembered (see copy/digest-cache.ts); saved once, at the end. */
  digestCache?: DigestCache | undefined;
};

function platformsOf(job: JobConfig): 'all' | ReturnType<typeof parsePlatform>[] {
  if (job.platforms === undefined || job.platforms === 'all') return 'all';
  return job.platforms.map(parsePlatform);
}

/** The job's signing key, opened once for all its tags (a wrong passphrase fails the job before any tag). */
async function mirrorSigner(job: JobConfig): Promise<Signer | undefined> {
  const key = job['sign-by-sigstore-private-key'];
  return key ? loadSigner(key, job['sign-passphrase-file']) : undefined;
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

function selectionOf(job: JobConfig): Selection {
  const platforms = platformsOf(job);
  return platforms === 'all' ? { all: true, platforms: [hostPlatform()] } : { platforms };
}

export async function sync(ctx: Context, config: StowageConfig, opts: SyncOptions = {}): Promise<SyncReport> {
  const unknown = (opts.jobs ?? []).filter((n) => !config.jobs.some((j) => j.name === n));
  if (unknown.length) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `no job named ${unknown.join(', ')} in ${config.path ?? 'the configuration'}; it has ${config.jobs.map((j) => j.name).join(', ') || 'none'}`,
    );
  }
  const jobs = opts.jobs?.length ? config.jobs.filter((j) => opts.jobs!.includes(j.name)) : config.jobs;
  const store = opts.store ?? (await openStore(config, { sweep: !opts.dryRun, create: !opts.dryRun }));
  try {
    return await runSync(ctx, config, opts, store, jobs);
  } finally {
    // What the run recorded reaches index.json, for skopeo and umoci, once per run (not per version).
    if (!opts.dryRun) await store.flush?.();
    // A store this run opened is this run's to close (the replicated one holds connections).
    if (!opts.store) await store.close?.();
  }
}

async function runSync(
  ctx: Context,
  config: StowageConfig,
  opts: SyncOptions,
  store: ArchiveStore,
  jobs: JobConfig[],
): Promise<SyncReport> {
  // Jobs that only mirror share one blob cache, so a blob two of them send is fetched once. It is opened
  // (its directory read) when the first blob has to be sent: a run with nothing to send never reads it.
  let opened: Promise<BlobCache | undefined> | undefined;
  const blobCache = (): Promise<BlobCache | undefined> => {
    opened ??= opts.blobCache
      ? Promise.resolve(opts.blobCache)
      : !opts.dryRun && config.cache.maxBytes > 0 && jobs.some((j) => j.mirror && j.archive === false)
        ? BlobCache.open(config.cache.path, config.cache.maxBytes)
        : Promise.resolve(undefined);
    return opened;
  };
  const digestCache = opts.dryRun ? undefined : await DigestCache.openDefault();
  const jobOpts: JobOptions = { ...opts, cache: blobCache, digestCache };
  const report: SyncReport = {
    dryRun: !!opts.dryRun,
    store: config.storePath,
    jobs: [],
    fetchedBytes: 0,
    failed: 0,
  };
  // Jobs run side by side (a mirroring job and an archiving job together); tags within a job in turn.
  await Promise.all(
    jobs.map(async (job) => {
      report.jobs.push(...(await runJob(ctx, store, config, job, jobOpts)));
    }),
  );
  await digestCache?.save();
  // In the configuration's order, a pattern's repositories by name.
  const order = new Map(jobs.map((j, i) => [j.name, i]));
  report.jobs.sort(
    (a, b) =>
      order.get(a.name)! - order.get(b.name)! || (a.source < b.source ? -1 : a.source > b.source ? 1 : 0),
  );
  for (const j of report.jobs) {
    report.fetchedBytes += j.tags.reduce((n, t) => n + t.fetchedBytes, 0);
    report.failed += j.tags.filter((t) => t.action === 'failed').length + (j.error ? 1 : 0);
  }
  if (!opts.dryRun && report.jobs.some((j) => j.pruned.length > 0))
    report.garbage = await store.collectGarbage();
  return report;
}

/**
 * A job: one repository, or each repository its pattern finds in the catalog (several at a time, each
 * with a report of its own). A catalog that cannot be read fails the job as a whole.
 */
async function runJob(
  ctx: Context,
  store: ArchiveStore,
  config: StowageConfig,
  job: JobConfig,
  opts: JobOptions,
): Promise<JobReport[]> {
  if (!isRepositoryPattern(job.source)) return [await runRepositoryJob(ctx, store, config, job, opts)];
  let repositories: JobConfig[];
  try {
    repositories = await expandPattern(ctx, config, job, opts.signal);
  } catch (e) {
    const err = toStowageError(e);
    return [
      {
        name: job.name,
        source: job.source,
        pattern: job.source,
        tags: [],
        pruned: [],
        mirrorDeleted: [],
        error: err.message,
        code: err.code,
      },
    ];
  }
  return mapLimited(repositories, REPOSITORY_CONCURRENCY, async (one) => ({
    ...(await runRepositoryJob(ctx, store, config, one, opts)),
    pattern: job.source,
  }));
}

async function runRepositoryJob(
  ctx: Context,
  store: ArchiveStore,
  config: StowageConfig,
  job: JobConfig,
  opts: JobOptions,
): Promise<JobReport> {
  const report: JobReport = {
    name: job.name,
    source: job.source,
    ...(job.mirror ? { mirror: job.mirror } : {}),
    tags: [],
    pruned: [],
    mirrorDeleted: [],
  };
  const archiving = job.archive !== false;
  try {
    const parsed = parseRepository(job.source);
    // The mirror's client, and its first request (which finds its scheme and auth), go ahead while the
    // source lists its tags. That one answer serves every tag: a mirror that cannot be reached fails
    // them all at once, rather than each tag waiting out its own retries.
    const mirrorClient = job.mirror ? ctx.client(parseRepository(job.mirror)) : undefined;
    const mirrorReady = mirrorClient?.then(({ client }) => client.ping(opts.signal));
    mirrorReady?.catch(() => {});
    await ctx.withCandidates(parsed, (ref) =>
      ctx.pullFrom(ref, async (client, endpoint) => {
        const repository = repositoryName(ref);
        report.source = repository;
        const available = job.tags ? job.tags : await client.listTags(endpoint.path, opts.signal);
        const tags = selectTags(available, job);
        const source = new RegistrySource(client, endpoint.path);
        // The listing is in hand: attachments are looked up in it, not listed again.
        if (!job.tags) source.useTags(available);
        let mirror: Mirror | undefined;
        if (mirrorClient) {
          const { client: mc, endpoint: me } = await mirrorClient;
          mirror = {
            signer: await mirrorSigner(job),
            ready: mirrorReady!,
            client: mc,
            repo: me.path,
            ref: parseRepository(job.mirror!),
            sink: new RegistrySink(
              { client: mc, host: me.host, repo: me.path },
              { locations: ctx.blobLocations },
            ),
          };
        }
        // Tags in parallel (a few at a time); blobs they share are fetched and sent once (the job's
        // sinks remember what they hold).
        const storing = storeSink(store);
        // What the store has of each tag, read once for the repository (one query on PostgreSQL).
        const newest =
          archiving || mirror ? await store.newestByTag(repository) : new Map<string, StoredVersion>();
        const shared = {
          ctx,
          ref,
          store,
          storing,
          newest,
          source,
          repository,
          endpoint,
          job,
          archiving,
          mirror,
        };
        report.tags = await mapLimited(tags, TAG_CONCURRENCY, async (tag) => {
          const outcome = await syncTag(shared, tag, opts);
          opts.onEvent?.({ job: job.name, repository, tag, outcome });
          return outcome;
        });
        if (archiving && config.materialize) {
          await materialize(store, config.materialize, repository, report.tags, opts.signal);
        }
        if (archiving) {
          const rule = job.retention ?? config.retention;
          const mine = await repositoryVersions(store, repository);
          const victims = retentionVictims(mine, rule);
          report.pruned = victims.map((v) => ({
            id: v.id,
            tag: v.tag,
            digest: v.descriptor.digest,
            taken: v.taken,
          }));
          if (!opts.dryRun && victims.length) await store.removeVersions(victims.map((v) => v.id));
        }
        if (mirror && job.prune) {
          // Gone from the source means from its whole listing, not from the tags this job selects.
          const sourceTags = job.tags ? await client.listTags(endpoint.path, opts.signal) : available;
          const plan = await planPrune(mirror, sourceTags, opts.signal);
          report.mirrorDeleted = opts.dryRun ? plan : await applyPrune(mirror, plan, opts.signal);
        }
      }),
    );
  } catch (e) {
    const err = toStowageError(e);
    report.error = err.message;
    report.code = err.code;
  }
  return report;
}

/** What every tag of a job shares: where from, where to, and the blobs already on their way. */
interface TagSyncContext {
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

async function syncTag(t: TagSyncContext, tag: string, opts: JobOptions): Promise<TagOutcome> {
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
    if (archiving && !archiveCurrent) {
      await storeTag(t, planned, { tag, sourceDigest: head.digest }, opts);
      outcome.archive = 'stored';
    }
    if (mirror && !mirrorCurrent) {
      await mirrorTag(t, mirror, planned, tag, opts);
      outcome.mirror = 'pushed';
    }
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
async function storeTag(
  t: TagSyncContext,
  planned: PlannedImage,
  version: { tag: string; sourceDigest: string },
  opts: JobOptions,
): Promise<void> {
  for (const b of planned.plan.blobs) opts.onBlob?.({ type: 'planned', digest: b.digest, size: b.size });
  const fromCache: BlobLookup = async (d) => (await opts.cache?.())?.lookup(d);
  const destination = new StoreDestination(t.store, {
    labels: [
      {
        repository: t.repository,
        tag: version.tag,
        source: `${t.endpoint.host}/${t.endpoint.path}:${version.tag}`,
        sourceDigest: version.sourceDigest,
      },
    ],
    sink: t.storing,
    onBlob: blobEvent(opts),
  });
  await copyPlanned([planned], destination, {
    concurrency: opts.concurrency ?? 4,
    signal: opts.signal,
    lookups: [fromCache],
    referrers: referrersOf(t.job),
    digestCache: opts.digestCache,
    preserveDigests: t.job['preserve-digests'],
  });
}

/**
 * A tag's image into the mirror. Blobs the store holds go from disk (an archiving job of the run
 * fetching one now is waited for); so do blobs in the mirror blob cache (another job sent them); the
 * rest stream from the source, through the cache for the jobs after this one.
 */
async function mirrorTag(
  t: TagSyncContext,
  mirror: Mirror,
  planned: PlannedImage,
  tag: string,
  opts: JobOptions,
): Promise<void> {
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
  await copyPlanned([planned], destination, {
    concurrency: opts.concurrency ?? 4,
    signal: opts.signal,
    lookups: [fromStore, throughCache],
    referrers: referrersOf(t.job),
    digestCache: opts.digestCache,
    preserveDigests: t.job['preserve-digests'],
  });
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
async function materialize(
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
