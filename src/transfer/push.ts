/**
 * Restore and mirror: images from archives (ours, skopeo's, podman's, docker's) or from another
 * registry go into a registry, manifest digests intact wherever the source holds real manifests.
 * `stowage push` and `stowage copy` (registry destinations) are thin wrappers around this.
 *
 * docker-archive (before docker 25) holds no manifest, only configs and uncompressed layers: the layers
 * are gzipped deterministically (the same layer always gives the same bytes, hence the same digest)
 * while they are sent, and a Docker schema 2 manifest is built for them; its digest is new and reported
 * as such. Unless the manifest the image was pulled with is remembered and the registry has its
 * layers: then that image goes back as it was, digest intact (see engine/digest-cache.ts).
 */

import type { LayerCompression } from '../archive/compress.js';
import type { ProgressListener } from '../core/progress.js';
import { type BlobStats, emptyStats } from '../engine/blobs.js';
import { type PlannedImage, planOne, prepareCopy, rememberManifests, writeTo } from '../engine/copy.js';
import { DigestCache } from '../engine/digest-cache.js';
import type { PlannedReferrer, ReferrerOptions } from '../engine/referrers.js';
import { StowageError } from '../errors.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import { hostPlatform, type PlatformSpec } from '../image/platform.js';
import { loadSigner, type Signer } from '../policy/sign.js';
import { formatReference, type ImageReference } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import type { ArchiveStore } from '../store/archive-store.js';
import type { StoredVersion } from '../store/store.js';
import type { ArchiveSource, ListedImage } from '../transports/archive/source.js';
import {
  admitImage,
  isArchiveReference,
  openRegistryDestination,
  openSource,
  parseDestination as parseDestinationSpec,
} from '../transports/open.js';
import { StoreSource } from '../transports/store/source.js';

/** What a push or copy sent: blobs uploaded, found, mounted, and bytes. */
import { parseDestination, recordedNames, targetsFor } from './push-targets.js';

export type UploadStats = BlobStats;

export interface PushOptions {
  /** Sign each image pushed with this key (cosign's format, or PEM) and passphrase file, as skopeo does. */
  sign?: { keyPath: string; passphraseFile?: string | undefined } | undefined;
  /** Which attachments (signatures, attestations, SBOMs) go along from a registry source (default: all). */
  referrers?: ReferrerOptions | undefined;
  /** Push only this image of the archive: a name, "@N", or a digest. */
  image?: string | undefined;
  /** Every name the archive records for an image becomes a tag (default: the first). */
  allTags?: boolean | undefined;
  /** Inserted before each image's repository path when DEST is a registry or namespace. */
  prefix?: string | undefined;
  /** Choose one platform of an index instead of pushing it whole. */
  platform?: PlatformSpec | undefined;
  /** Keep a whole index (the default for archives; for registry sources only with this). */
  all?: boolean | undefined;
  concurrency?: number | undefined;
  chunkSize?: number | undefined;
  /** How a docker-archive's plain layers are compressed (--compress; default gzip level 6). */
  compress?: LayerCompression | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  /** Resolve the images and their targets, send nothing (--dry-run). */
  dryRun?: boolean | undefined;
  /** Fail, before anything is sent, where a digest would change (--preserve-digests). */
  preserveDigests?: boolean | undefined;
  /**
   * Told, before anything is sent, which images go where: a typo in a destination, or an archive's own
   * names taken as targets, shows before a tag is overwritten.
   */
  onTargets?: ((targets: { source: string; destinations: string[] }[]) => void) | undefined;
}

export interface PushedImage {
  /** Where it came from: the archive and image, or the source reference. */
  source: string;
  /** Every reference written, fully qualified. */
  destinations: string[];
  digest: string;
  mediaType: string;
  /**
   * True when the manifest was made by stowage (a docker-archive's, unless the one it was pulled with
   * came back): its digest is new.
   */
  newDigest: boolean;
  /** Attachments carried with it (signatures, attestations, SBOMs), digests intact. */
  referrers?: { digest: string; artifactType: string; tag?: string | undefined }[] | undefined;
}

/** What an image of an archive is called in results and messages. */
function imageLabel(what: string, img: ListedImage): string {
  return `${what}${img.names.length ? ` (${img.names.join(', ')})` : ''}`;
}

export interface PushResult {
  images: PushedImage[];
  stats: UploadStats;
  /** A plan only (--dry-run): nothing was sent. */
  dryRun?: boolean;
}

/** An archive's image planned: whole (an index kept), or one platform with --platform. */
async function planFrom(
  source: ArchiveSource,
  img: ListedImage,
  opts: PushOptions,
  what: string,
): Promise<PlannedImage> {
  const all = opts.platform ? false : (opts.all ?? true);
  try {
    return await planOne(
      { source, reference: img.descriptor.digest, names: { repoTags: [], annotations: {} }, label: what },
      { all, platforms: [opts.platform ?? hostPlatform()] },
      opts.signal,
    );
  } catch (e) {
    if (
      all &&
      e instanceof StowageError &&
      e.code === 'INVALID_ARCHIVE' &&
      /manifest .* is missing/.test(e.message)
    ) {
      throw new StowageError(
        'INVALID_ARCHIVE',
        `${what} is an index whose platforms are not all in the archive, so it cannot be pushed whole; push one platform with --platform (${e.message})`,
      );
    }
    throw e;
  }
}

/** Pushes the images of an archive (a path or TRANSPORT:PATH[:NAME]) to DEST. */
export async function push(
  ctx: Context,
  archive: string,
  dest: string,
  opts: PushOptions = {},
): Promise<PushResult> {
  // A wrong key or passphrase fails before anything is read or sent.
  const signer = opts.sign ? await loadSigner(opts.sign.keyPath, opts.sign.passphraseFile) : undefined;
  const opened = await openSource(ctx, archive, {
    archivesOnly: true,
    everyImage: true,
    image: opts.image,
    signal: opts.signal,
  });
  const source = opened.archive!;
  // A docker-archive's plain layers are compressed for the registry: what earlier pushes made of them
  // is remembered, so pushing the same archive again compresses nothing the registry has; and the
  // manifests pushed are remembered for a docker-archive made of them later.
  // A dry run reads it too (whether an image would go back as it was) and saves nothing.
  const digestCache = await DigestCache.openDefault();
  try {
    for (const image of opened.images) await admitImage(ctx, opened, image, opts.signal);
    const chosen = opened.images.map((i) => i.listed!);
    const destination = parseDestination(dest, chosen.length);
    const jobs = chosen.map((img) => ({
      img,
      index: source.images.indexOf(img),
      targets: targetsFor(img, source.images.indexOf(img), destination, opts, source.access.path),
    }));
    // Every destination is checked (blocked registries, credentials) before anything is sent.
    for (const j of jobs) for (const r of j.targets) await ctx.client(r);
    opts.onTargets?.(
      jobs.map((j) => ({
        source: imageLabel(`${source.description} @${j.index}`, j.img),
        destinations: j.targets.map(formatReference),
      })),
    );
    const stats = emptyStats();
    const images: PushedImage[] = [];
    for (const { img, index, targets } of jobs) {
      const what = `${source.description} @${index}`;
      let planned = await planFrom(source, img, opts, what);
      const synthesized =
        source.format === 'docker-archive' &&
        !isIndexMediaType(planned.plan.root.descriptor.mediaType) &&
        source.synthesizedManifests;
      // A dry run gets the plan back as it was, checked (see uploadTo).
      planned = await restoreImage(ctx, { planned, img, targets }, { ...opts, signer, digestCache }, stats);
      images.push({
        source: imageLabel(what, img),
        destinations: targets.map(formatReference),
        digest: planned.plan.root.descriptor.digest,
        mediaType: planned.plan.root.descriptor.mediaType,
        // A dry run converts nothing; a restore made a manifest unless the original came back.
        newDigest: opts.dryRun ? synthesized : planned.converted,
      });
    }
    return { images, stats, ...(opts.dryRun ? { dryRun: true } : {}) };
  } finally {
    await opened.close();
  }
}

/** What a result says of an attachment carried. */
function referrerSummary(r: PlannedReferrer): {
  digest: string;
  artifactType: string;
  tag?: string | undefined;
} {
  return {
    digest: r.document.descriptor.digest,
    artifactType: r.artifactType,
    ...(r.tag ? { tag: r.tag } : {}),
  };
}

/** Targets grouped by repository: each repository is one destination, with its tags. */
function byRepository(targets: ImageReference[]): ImageReference[][] {
  const groups = new Map<string, ImageReference[]>();
  for (const t of targets) {
    const key = `${t.domain}/${t.path}`;
    groups.set(key, [...(groups.get(key) ?? []), t]);
  }
  return [...groups.values()];
}

/** Writes one planned image into each repository its targets name; the blobs' counts go into `stats`. */
async function uploadTo(
  ctx: Context,
  planned: PlannedImage,
  targets: ImageReference[],
  opts: PushOptions & {
    verifyExisting?: boolean | undefined;
    signer?: Signer | undefined;
    digestCache?: DigestCache | undefined;
  },
  stats: UploadStats,
): Promise<PlannedImage> {
  const settings = { concurrency: opts.concurrency ?? 4, signal: opts.signal, onProgress: opts.onProgress };
  const destinations = [];
  for (const refs of byRepository(targets)) {
    destinations.push(
      await openRegistryDestination(ctx, refs[0]!, {
        tags: refs.map((r) => r.tag!).filter(Boolean),
        verifyExisting: opts.verifyExisting,
        stats,
        chunkSize: opts.chunkSize,
        // Signed as skopeo signs: the destination reference, with its tag.
        sign: opts.signer ? { signer: opts.signer, identity: formatReference(refs[0]!) } : undefined,
      }),
    );
  }
  // Layers in the image's origin repository count as there: mounted, the manifest goes back as it was.
  for (const d of destinations) d.mountFromOrigin(planned.origin);
  // A docker-archive's plain layers are compressed once here, for every repository: sent while they
  // are compressed where there is one repository, through a scratch directory where there are more.
  const [only] = destinations;
  const prepared = await prepareCopy(
    [planned],
    { compressedLayers: true, singlePlatform: false, maxImages: 1, referrers: true },
    {
      ...settings,
      referrers: opts.referrers,
      digestCache: opts.digestCache,
      compress: opts.compress,
      stream: destinations.length === 1 && only ? only.streamBlob.bind(only) : undefined,
      has: destinations.length === 1 && only ? only.hasBlob.bind(only) : undefined,
      read: destinations.length === 1 && only ? only.readHeld.bind(only) : undefined,
      dryRun: opts.dryRun,
      preserveDigests: opts.preserveDigests,
    },
  );
  try {
    // A dry run stops here: the plan checked (--preserve-digests included), nothing converted or sent.
    if (opts.dryRun) return prepared.images[0]!;
    for (const destination of destinations) await writeTo(destination, prepared, settings);
    rememberManifests(prepared.images, opts.digestCache);
    await opts.digestCache?.save();
    return prepared.images[0]!;
  } finally {
    await prepared.cleanup();
  }
}

/**
 * Uploads one image of an archive to its targets; returns what went up (a docker-archive's made-up
 * manifest, with its layers gzipped, when the archive holds plain layers).
 */
async function restoreImage(
  ctx: Context,
  image: { planned: PlannedImage; img: ListedImage; targets: ImageReference[] },
  opts: PushOptions & { signer?: Signer | undefined; digestCache?: DigestCache | undefined },
  stats: UploadStats,
): Promise<PlannedImage> {
  const { img, targets } = image;
  // Restoring into the registry the image came from (under another name): its recorded repository
  // there is the natural place to mount blobs from.
  const origin = recordedNames(img).full.find((n) => targets.some((t) => t.domain === n.domain));
  const planned: PlannedImage = {
    ...image.planned,
    origin: origin ? { host: ctx.endpoint(origin).host, repository: ctx.endpoint(origin).path } : undefined,
  };
  // A damaged or incomplete archive fails even where the registry already has its blobs.
  return uploadTo(ctx, planned, targets, { ...opts, verifyExisting: true }, stats);
}

/**
 * Pushes a stored version to DEST (registry/repository:tag), read from the store by its interface: the
 * whole version (an index kept whole), digests intact.
 */
export async function pushVersion(
  ctx: Context,
  store: ArchiveStore,
  version: StoredVersion,
  /** registry/repository:tag, parsed (and checked against the service's rules) by the caller. */
  dest: ImageReference,
  opts: Pick<PushOptions, 'concurrency' | 'chunkSize' | 'signal' | 'onProgress' | 'compress'> = {},
): Promise<PushResult> {
  if (!dest.tag || dest.digest)
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${formatReference(dest)} is not a registry/repository:tag to push to`,
    );
  const label = `the archive store (version ${version.id})`;
  const planned = await planOne(
    {
      source: new StoreSource(store, version),
      reference: version.descriptor.digest,
      names: { repoTags: [], annotations: {} },
      label,
    },
    { all: true, platforms: [hostPlatform()] },
    opts.signal,
  );
  const stats = emptyStats();
  // The store checked every blob on its way in: what the registry has already is not read again.
  await uploadTo(ctx, planned, [dest], opts, stats);
  return {
    images: [
      {
        source: `${label}: ${version.repository}:${version.tag}`,
        destinations: [formatReference(dest)],
        digest: planned.plan.root.descriptor.digest,
        mediaType: planned.plan.root.descriptor.mediaType,
        newDigest: false,
      },
    ],
    stats,
  };
}

/**
 * Copies one image to a registry: from another registry (streamed, no local disk; mounted when both
 * are repositories of the same registry) or from an archive. `srcCtx` and `dstCtx` may differ in
 * credentials and TLS settings.
 */
export async function copyToRegistry(
  srcCtx: Context,
  dstCtx: Context,
  src: string,
  dst: string,
  opts: PushOptions = {},
): Promise<PushResult> {
  if (isArchiveReference(src)) return push(dstCtx, src, dst, opts);
  const d = parseDestinationSpec(dst);
  if (d.kind !== 'registry')
    throw new StowageError('INTERNAL', 'copyToRegistry needs a registry destination');
  const destination = parseDestination(formatReference(d.ref), 1);
  const signer = opts.sign ? await loadSigner(opts.sign.keyPath, opts.sign.passphraseFile) : undefined;
  const opened = await openSource(srcCtx, src, { signal: opts.signal });
  try {
    const image = opened.images[0]!;
    await admitImage(srcCtx, opened, image, opts.signal);
    const ref = image.ref!;
    const tag = destination.ref.tag ?? ref.tag;
    if (!tag) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${src} names no tag, so ${dst} needs one (${formatReference({ ...destination.ref, tag: 'TAG' })})`,
      );
    }
    const target = { ...destination.ref, tag };
    await dstCtx.client(target);
    opts.onTargets?.([{ source: image.asked, destinations: [formatReference(target)] }]);
    const planned = await planOne(
      {
        source: opened.source,
        reference: image.reference,
        names: { repoTags: [], annotations: {} },
        label: image.asked,
        origin: image.origin,
      },
      { all: opts.all ?? false, platforms: [opts.platform ?? hostPlatform()] },
      opts.signal,
    );
    const stats = emptyStats();
    const sent = await uploadTo(dstCtx, planned, [target], { ...opts, signer }, stats);
    return {
      images: [
        {
          source: image.asked,
          destinations: [formatReference(target)],
          digest: planned.plan.root.descriptor.digest,
          mediaType: planned.plan.root.descriptor.mediaType,
          newDigest: false,
          ...(sent.referrers?.length ? { referrers: sent.referrers.map(referrerSummary) } : {}),
        },
      ],
      stats,
      ...(opts.dryRun ? { dryRun: true } : {}),
    };
  } finally {
    await opened.close();
  }
}
