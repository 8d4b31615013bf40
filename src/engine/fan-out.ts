/**
 * The engine's one way in: planned images written into one or more destinations (go-containerregistry's
 * MultiWrite, containers/image's copy.Image with several targets). Destinations that need the same
 * thing share one adaptation (a docker-archive's layers are compressed once, for every registry
 * repository); each destination is written in turn and fails on its own: the others still get the
 * images, and the result says which failed and why. The dry run and the digest cache's lifetime are
 * decided here, once, not by each caller.
 */
import type { LayerCompression } from '../archive/compress.js';
import { StowageError, toStowageError } from '../errors.js';
import {
  type BlobLookup,
  type CopyImage,
  type PlannedImage,
  type PreparedCopy,
  planImages,
  prepareCopy,
  rememberManifests,
  type Selection,
  writeTo,
} from './copy.js';
import type { BlobProvider, ImageDestination, ImageSet, WriteSettings } from './destination.js';
import { DigestCache } from './digest-cache.js';
import type { ReferrerOptions } from './referrers.js';

/** A copy into one destination: the fan-out's options, and where to look for blobs first. */
export interface CopyOptions extends Omit<FanOutOptions, 'digestCache'> {
  /** Places asked for a blob, in order, before its source. */
  lookups?: BlobLookup[] | undefined;
  /** Where earlier compressions are remembered (none unless given: the caller owns it). */
  digestCache?: DigestCache | undefined;
}

export interface CopyResult<Committed> {
  images: PlannedImage[];
  set: ImageSet;
  /** What the caller should be told once (attachments the destination cannot hold). */
  notes: string[];
  /** What the destination's commit returned (absent for a dry run). */
  committed?: Committed | undefined;
}

/** One place the images go, and where it looks for blobs before their source. */
export interface Target<C = unknown> {
  destination: ImageDestination<C>;
  /** Places asked for a blob, in order, before its source (the store, a cache), for this destination. */
  lookups?: BlobLookup[] | undefined;
}

export interface FanOutOptions extends Omit<WriteSettings, 'digestCache'> {
  /** Plan and adapt only: nothing is read beyond the documents, nothing written, the cache not saved. */
  dryRun?: boolean | undefined;
  referrers?: ReferrerOptions | undefined;
  compress?: LayerCompression | undefined;
  preserveDigests?: boolean | undefined;
  /**
   * Where compressions, diff_ids and manifests are remembered. A caller that passes one owns it (a sync
   * saves it once, after its last tag); false copies without one; absent, the default cache is opened
   * here and saved at the end (not on a dry run, which reads it only).
   */
  digestCache?: DigestCache | false | undefined;
}

/** How one destination fared. */
export type TargetOutcome<C = unknown> =
  | { destination: string; ok: true; committed?: C | undefined }
  | { destination: string; ok: false; error: StowageError };

export interface FanOutResult<C = unknown> {
  /** The images as written (converted where a destination needed it: the first group's). */
  images: PlannedImage[];
  set: ImageSet;
  notes: string[];
  /** One per target, in the order given. */
  outcomes: TargetOutcome<C>[];
}

/** Targets that need the same adaptation, in the order given. */
function groups<C>(targets: Target<C>[]): Target<C>[][] {
  const byNeeds = new Map<string, Target<C>[]>();
  for (const t of targets) {
    const key = JSON.stringify(t.destination.needs);
    const list = byNeeds.get(key);
    if (list) list.push(t);
    else byNeeds.set(key, [t]);
  }
  return [...byNeeds.values()];
}

/** The group's provider with a target's own lookups asked first. */
function providerFor(prepared: PreparedCopy, lookups: BlobLookup[] | undefined): BlobProvider {
  if (!lookups?.length) return prepared.provider;
  const base = prepared.provider;
  return {
    ...base,
    async open(d, signal) {
      for (const lookup of lookups) {
        const body = await lookup(d, signal);
        if (body) return body;
      }
      return base.open(d, signal);
    },
  };
}

/**
 * Adapts `planned` once per kind of destination and writes it into every target in turn. Throws only
 * for what stops every target (nothing to write, an abort); a target's own failure is in its outcome.
 */
export async function copyToEach<C>(
  planned: PlannedImage[],
  targets: Target<C>[],
  opts: FanOutOptions,
): Promise<FanOutResult<C>> {
  if (targets.length === 0) throw new StowageError('INTERNAL', 'a copy names at least one destination');
  if (opts.digestCache !== undefined) {
    const digestCache = opts.digestCache === false ? undefined : opts.digestCache;
    return fanOut(planned, targets, { ...opts, digestCache });
  }
  return withDigestCache({ dryRun: opts.dryRun }, (digestCache) =>
    fanOut(planned, targets, { ...opts, digestCache }),
  );
}

/**
 * Runs `fn` with the default digest cache, saved once at the end (not after a dry run, which only
 * reads it): for a caller of many copies (a sync's tags, an archive's images) that owns one for all.
 */
export async function withDigestCache<T>(
  opts: { dryRun?: boolean | undefined },
  fn: (cache: DigestCache) => Promise<T>,
): Promise<T> {
  const cache = await DigestCache.openDefault();
  try {
    return await fn(cache);
  } finally {
    if (!opts.dryRun) await cache.save();
  }
}

async function fanOut<C>(
  planned: PlannedImage[],
  targets: Target<C>[],
  opts: FanOutOptions & WriteSettings,
): Promise<FanOutResult<C>> {
  const outcomes = new Map<Target<C>, TargetOutcome<C>>();
  let first: { images: PlannedImage[]; set: ImageSet; notes: string[] } | undefined;
  for (const group of groups(targets)) {
    const [only] = group.length === 1 ? group : [];
    let prepared: PreparedCopy;
    try {
      // One destination: converted layers stream straight into it. Several: through scratch files,
      // compressed once for all of them.
      prepared = await prepareCopy(planned, group[0]!.destination.needs, {
        ...opts,
        stream: only?.destination.streamBlob?.bind(only.destination),
        has: only?.destination.hasBlob?.bind(only.destination),
        read: only?.destination.readHeld?.bind(only.destination),
      });
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      const error = toStowageError(e);
      for (const t of group) outcomes.set(t, { destination: t.destination.description, ok: false, error });
      continue;
    }
    try {
      first ??= { images: prepared.images, set: prepared.set, notes: prepared.notes };
      for (const t of group) outcomes.set(t, await writeOne(t, prepared, opts));
      if (!opts.dryRun && group.some((t) => outcomes.get(t)?.ok))
        rememberManifests(prepared.images, opts.digestCache);
    } finally {
      await prepared.cleanup();
    }
  }
  const ordered = targets.map((t) => outcomes.get(t)!);
  if (!first) throw firstFailure(ordered)!;
  return { ...first, outcomes: ordered };
}

async function writeOne<C>(
  target: Target<C>,
  prepared: PreparedCopy,
  opts: FanOutOptions & WriteSettings,
): Promise<TargetOutcome<C>> {
  const { destination } = target;
  try {
    if (opts.dryRun) {
      await destination.prepare?.(prepared.set);
      return { destination: destination.description, ok: true };
    }
    const committed = await writeTo(
      destination,
      { ...prepared, provider: providerFor(prepared, target.lookups) },
      opts,
    );
    return { destination: destination.description, ok: true, committed };
  } catch (e) {
    // An abort stops the copy, not just this destination.
    if (opts.signal?.aborted) throw e;
    return { destination: destination.description, ok: false, error: toStowageError(e) };
  }
}

/** The first failure among the outcomes, if any. */
export function firstFailure(outcomes: TargetOutcome[]): StowageError | undefined {
  for (const o of outcomes) if (!o.ok) return o.error;
  return undefined;
}

/** The result of a copy into one destination, or its failure thrown. */
export function onlyResult<C>(r: FanOutResult<C>): CopyResult<C> {
  const [o] = r.outcomes;
  if (!o) throw new StowageError('INTERNAL', 'a copy without an outcome');
  if (!o.ok) throw o.error;
  return { images: r.images, set: r.set, notes: r.notes, committed: o.committed };
}

/** Plans, adapts and writes images into one destination; throws its failure. */
export async function copy<C>(
  images: CopyImage[],
  destination: ImageDestination<C>,
  selection: Selection,
  opts: CopyOptions,
): Promise<CopyResult<C>> {
  return copyPlanned(await planImages(images, selection, opts.signal), destination, opts);
}

/** As copy(), for images planned already (a caller that reports the plan before writing). */
export async function copyPlanned<C>(
  planned: PlannedImage[],
  destination: ImageDestination<C>,
  opts: CopyOptions,
): Promise<CopyResult<C>> {
  const { lookups, ...rest } = opts;
  const r = await copyToEach(planned, [{ destination, lookups }], {
    ...rest,
    digestCache: opts.digestCache ?? false,
  });
  return onlyResult(r);
}
