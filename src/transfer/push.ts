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
import type { PlannedImage, Selection } from '../engine/copy.js';
import type { DigestCache } from '../engine/digest-cache.js';
import { firstFailure, withDigestCache } from '../engine/fan-out.js';
import type { PlannedReferrer, ReferrerOptions } from '../engine/referrers.js';
import { StowageError } from '../errors.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import { hostPlatform, type PlatformSpec } from '../image/platform.js';
import { loadSigner, type Signer } from '../policy/sign.js';
import { formatReference, type ImageReference } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import type { BlobReader } from '../store/archive-store.js';
import type { StoredVersion } from '../store/store.js';
import type { ListedImage } from '../transports/archive/source.js';
import {
  admitImage,
  isArchiveReference,
  type OpenedSource,
  openSource,
  parseDestination as parseDestinationSpec,
  type SourceImage,
  sourceTag,
} from '../transports/open.js';
import { StoreSource } from '../transports/store/source.js';
import { copyImages, type ImageFrom, type ImageTo } from './copy-images.js';
import { parseDestination, recordedNames, targetsFor } from './push-targets.js';

/** What a push or copy sent: blobs uploaded, found, mounted, and bytes. */
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
  /** How a docker-archive's plain layers are compressed (--compress; default gzip level 1). */
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
  try {
    // A docker-archive's plain layers are compressed for the registry: what earlier pushes made of
    // them is remembered, so pushing the same archive again compresses nothing the registry has; and
    // the manifests pushed are remembered for a docker-archive made of them later. One cache for the
    // archive's images, saved once; a dry run reads it (would an image go back as it was) and saves
    // nothing.
    return await withDigestCache(opts, (digestCache) =>
      pushImages(ctx, opened, dest, { ...opts, signer, digestCache }),
    );
  } finally {
    await opened.close();
  }
}

/** The archive's chosen images, admitted, each to its targets. */
async function pushImages(
  ctx: Context,
  opened: OpenedSource,
  dest: string,
  opts: PushOptions & { signer: Signer | undefined; digestCache: DigestCache },
): Promise<PushResult> {
  const source = opened.archive!;
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
    const image = opened.images.find((i) => i.listed === img)!;
    const synthesized = source.format === 'docker-archive' && source.synthesizedManifests;
    // A damaged or incomplete archive fails even where the registry already has its blobs.
    const planned = await sendTo(
      { opened, image: { ...image, asked: what }, origin: originIn(ctx, img, targets) },
      targets,
      { ...opts, stats, verifyExisting: true, ctx },
      opts.platform ? { platforms: [opts.platform] } : { all: opts.all ?? true, platforms: [hostPlatform()] },
    );
    const index_ = isIndexMediaType(planned.plan.root.descriptor.mediaType);
    images.push({
      source: imageLabel(what, img),
      destinations: targets.map(formatReference),
      digest: planned.plan.root.descriptor.digest,
      mediaType: planned.plan.root.descriptor.mediaType,
      // A dry run converts nothing; a restore made a manifest unless the original came back.
      newDigest: opts.dryRun ? synthesized && !index_ : planned.converted,
    });
  }
  return { images, stats, ...(opts.dryRun ? { dryRun: true } : {}) };
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
    const list = groups.get(key);
    if (list) list.push(t);
    else groups.set(key, [t]);
  }
  return [...groups.values()];
}

/**
 * Restoring into the registry an archive's image came from (under another name): its recorded
 * repository there is the natural place to mount blobs from.
 */
function originIn(
  ctx: Context,
  img: ListedImage,
  targets: ImageReference[],
): { host: string; repository: string } | undefined {
  const origin = recordedNames(img).full.find((n) => targets.some((t) => t.domain === n.domain));
  if (!origin) return undefined;
  const endpoint = ctx.endpoint(origin);
  return { host: endpoint.host, repository: endpoint.path };
}

/**
 * Sends one image into each repository its targets name (through the one entry point: a
 * docker-archive's plain layers are compressed once, for every repository); the first failure is
 * thrown once every repository was tried. Returns the image as sent.
 */
async function sendTo(
  from: ImageFrom,
  targets: ImageReference[],
  opts: PushOptions & {
    ctx: Context;
    stats: UploadStats;
    signer?: Signer | undefined;
    verifyExisting?: boolean | undefined;
    digestCache?: DigestCache | undefined;
  },
  selection: Selection,
): Promise<PlannedImage> {
  const to: ImageTo[] = byRepository(targets).map((refs) => ({
    registry: refs,
    ctx: opts.ctx,
    stats: opts.stats,
    verifyExisting: opts.verifyExisting,
    chunkSize: opts.chunkSize,
    signer: opts.signer,
  }));
  const r = await copyImages([from], to, {
    selection,
    concurrency: opts.concurrency ?? 4,
    signal: opts.signal,
    onProgress: opts.onProgress,
    referrers: opts.referrers,
    compress: opts.compress,
    dryRun: opts.dryRun,
    preserveDigests: opts.preserveDigests,
    digestCache: opts.digestCache,
  });
  const failed = firstFailure(r.outcomes);
  if (failed) throw failed;
  return r.images[0]!;
}

/**
 * Pushes a stored version to DEST (registry/repository:tag), read from the store by its interface: the
 * whole version (an index kept whole), digests intact.
 */
export async function pushVersion(
  ctx: Context,
  store: BlobReader,
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
  const source = new StoreSource(store, version);
  const image = { reference: version.descriptor.digest, asked: label, served: label, names: [] };
  const stats = emptyStats();
  try {
    // The store checked every blob on its way in: what the registry has already is not read again;
    // the trust policy admitted it then (no context: no second check).
    const planned = await sendTo(
      { opened: { source, images: [image], close: () => source.close() }, image },
      [dest],
      { ...opts, ctx, stats },
      { all: true, platforms: [hostPlatform()] },
    );
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
  } finally {
    await source.close();
  }
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
  const tag = destination.ref.tag ?? sourceTag(src);
  if (!tag) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${src} names no tag, so ${dst} needs one (${formatReference({ ...destination.ref, tag: 'TAG' })})`,
    );
  }
  const target = { ...destination.ref, tag };
  const stats = emptyStats();
  let told = false;
  const planned = await sendTo(
    {
      input: src,
      ctx: srcCtx,
      // Told once the source is open and admitted, before anything is sent.
      names: (image: SourceImage) => {
        if (!told) opts.onTargets?.([{ source: image.asked, destinations: [formatReference(target)] }]);
        told = true;
        return { repoTags: [], annotations: {} };
      },
    },
    [target],
    { ...opts, ctx: dstCtx, stats, signer },
    { all: opts.all ?? false, platforms: [opts.platform ?? hostPlatform()] },
  );
  return {
    images: [
      {
        source: planned.label,
        destinations: [formatReference(target)],
        digest: planned.plan.root.descriptor.digest,
        mediaType: planned.plan.root.descriptor.mediaType,
        newDigest: false,
        ...(planned.referrers?.length ? { referrers: planned.referrers.map(referrerSummary) } : {}),
      },
    ],
    stats,
    ...(opts.dryRun ? { dryRun: true } : {}),
  };
}
