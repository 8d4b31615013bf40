import type { JobConfig, StowageConfig } from '../config/stowage.js';
import { mapLimited } from '../core/limiter.js';
import { DigestCache } from '../engine/digest-cache.js';
import { StowageError, toStowageError } from '../errors.js';
import { loadSigner, type Signer } from '../policy/sign.js';
import { parseRepository, repositoryName } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import { type ArchiveStore, repositoryVersions } from '../store/archive-store.js';
import { openStore } from '../store/open.js';
import { retentionVictims } from '../store/retention.js';
import type { StoredVersion } from '../store/store.js';
import { RegistrySource } from '../transports/registry/source.js';
import { RegistrySink } from '../transports/registry/upload.js';
import { storeSink } from '../transports/store/destination.js';
import { BlobCache } from './blob-cache.js';
import { expandPattern, isRepositoryPattern } from './namespace.js';
import { applyPrune, planPrune } from './prune.js';
import type { JobReport, SyncOptions, SyncReport } from './report.js';
import { selectTags } from './select.js';
import { type JobOptions, type Mirror, materialize, syncTag } from './tag.js';

/** Tags of one repository synced at once. */
const TAG_CONCURRENCY = 8;
/** Repositories of one pattern job synced at once (the registry's own limits bound the requests). */
const REPOSITORY_CONCURRENCY = 4;

/** The job's signing key, opened once for all its tags (a wrong passphrase fails the job before any tag). */
async function mirrorSigner(job: JobConfig): Promise<Signer | undefined> {
  const key = job['sign-by-sigstore-private-key'];
  return key ? loadSigner(key, job['sign-passphrase-file']) : undefined;
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
          opts.onEvent?.({ job: job.name, repository, tag, outcome, mirror: job.mirror });
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
