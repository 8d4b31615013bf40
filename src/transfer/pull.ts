/**
 * The copy engine's archive side: one or more images, from registries or from archives, into one
 * archive or layout in any format. `stowage pull` and `stowage copy` are thin wrappers around it.
 */

import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { LayerCompression } from '../archive/compress.js';
import type { ArchiveFormat } from '../archive/formats.js';
import { archiveAnnotations } from '../archive/names.js';
import { REF_NAME_ANNOTATION } from '../archive/oci-archive.js';
import type { ProgressListener } from '../core/progress.js';
import type { ImageNames } from '../engine/destination.js';
import { onlyResult } from '../engine/fan-out.js';
import type { ReferrerOptions } from '../engine/referrers.js';
import { StowageError } from '../errors.js';
import { hostPlatform, type PlatformSpec } from '../image/platform.js';
import { formatReference, parseReference, withDefaultTag } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import type { WrittenOutput } from '../transports/archive/destinations.js';
import type { SourceImage } from '../transports/open.js';
import { copyImages, type ImageFrom } from './copy-images.js';

export interface PullOptions {
  /** Destination path. */
  output: string;
  /** Destination format (default oci-archive). */
  format?: ArchiveFormat | undefined;
  /** More names for the one image of a docker-archive (skopeo's --additional-tag), after its own. */
  additionalTags?: string[] | undefined;
  /** One platform, or several (then a new index is written). Default: the host's. */
  platforms?: PlatformSpec[] | undefined;
  all?: boolean | undefined;
  /** Blobs downloaded at once (default 4). */
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  /** The name to record for the (single) image instead of its own: a reference, or a bare tag. */
  name?: string | undefined;
  /**
   * `name` came from the user's TRANSPORT:PATH:NAME: record it as ref.name exactly as given, as skopeo
   * does (otherwise ref.name is the tag alone, the store's views' convention).
   */
  nameAsGiven?: boolean | undefined;
  /** Plan only: resolve every image and say what would be written, write nothing. */
  dryRun?: boolean | undefined;
  /** Which attachments (signatures, attestations, SBOMs) go into the archive (default: all it can hold). */
  referrers?: ReferrerOptions | undefined;
  /** Write OUTPUT.sha256 beside an archive file (default); false saves a pass over it (--no-checksum). */
  checksum?: boolean | undefined;
  /** Compress plain layers (a docker-archive source's) for formats that hold compressed ones (--compress). */
  compress?: LayerCompression | undefined;
  /** Fail, before anything is written, where a digest would change (--preserve-digests). */
  preserveDigests?: boolean | undefined;
}

export interface PulledImage {
  /** What was asked for, fully qualified when it is a registry reference. */
  reference: string;
  /** Where it came from (after registries.conf rewrites), or the archive. */
  source: string;
  digest: string;
  mediaType: string;
  platforms: string[];
  /** The written index was made by selecting platforms; its digest is not the source's. */
  newIndex: boolean;
  /** The names the archive records for it. */
  names: string[];
}

export interface PullResult {
  /** Single-image summary (the first image), kept for the one-image case. */
  reference: string;
  source: string;
  digest: string;
  mediaType: string;
  platforms: string[];
  images: PulledImage[];
  format: ArchiveFormat;
  path: string;
  /** sha256 of the archive file (hex); absent for directory formats. */
  sha256?: string | undefined;
  size?: number | undefined;
  blobs: number;
  /** Bytes of blobs and manifests in the archive. */
  contentBytes: number;
  /** A plan only (--dry-run): nothing was written. */
  dryRun?: boolean | undefined;
  /** Said once: attachments the format could not hold. */
  notes?: string[] | undefined;
  /** Attachments written with the images (signatures, attestations, SBOMs). */
  referrers?: number | undefined;
}

/**
 * Checks that `output` can be written before any work: its directory exists, and a file output is not
 * an existing directory.
 */
export async function checkOutput(output: string, file: boolean): Promise<void> {
  const dir = dirname(resolve(output));
  const s = await stat(dir).catch(() => undefined);
  if (!s?.isDirectory()) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `cannot write ${output}: directory ${dir} does not exist; create it first`,
    );
  }
  const o = await stat(output).catch(() => undefined);
  if (o?.isDirectory() && file)
    throw new StowageError('INVALID_ARGUMENT', `cannot write ${output}: it is a directory; give a file path`);
}

/** How an image is named in the archive: by the registry reference, or by the names the archive records. */
function namesOf(image: SourceImage): ImageNames {
  if (image.ref) return { repoTags: image.names, annotations: archiveAnnotations(image.ref) };
  const full = image.names.find((n) => n.includes('/') || n.includes(':')) ?? image.names[0];
  if (!full) return { repoTags: [], annotations: {} };
  try {
    const ref = withDefaultTag(parseReference(full));
    return {
      repoTags: [formatReference({ ...ref, digest: undefined })],
      annotations: archiveAnnotations(ref),
    };
  } catch {
    return { repoTags: [], annotations: { [REF_NAME_ANNOTATION]: full } };
  }
}

/** The names `--name` (or DEST's NAME) gives the one image: a reference, or a bare tag. */
function namesFromOption(name: string, asGiven: boolean | undefined): ImageNames {
  if (!name.includes('/')) return { repoTags: [], annotations: { [REF_NAME_ANNOTATION]: name } };
  const ref = withDefaultTag(parseReference(name));
  // ref.name is the NAME exactly as given, as skopeo records it (so `skopeo inspect
  // oci-archive:FILE:NAME` finds it); the full reference goes in containerd's annotation.
  const annotations = archiveAnnotations(ref);
  if (asGiven) annotations[REF_NAME_ANNOTATION] = name;
  return { repoTags: [formatReference({ ...ref, digest: undefined })], annotations };
}

/** Refuses what the format cannot hold, before anything is read. */
export async function checkRequest(
  inputs: string[],
  format: ArchiveFormat,
  opts: PullOptions,
): Promise<void> {
  if (inputs.length === 0) throw new StowageError('INVALID_ARGUMENT', 'name at least one image to pull');
  if (opts.all && format === 'docker-archive') {
    throw new StowageError(
      'INVALID_ARGUMENT',
      'a docker-archive holds one platform per image, so --all cannot be written to it; use --format oci-archive, or choose with --platform',
    );
  }
  if (format === 'dir' && inputs.length > 1) {
    throw new StowageError('INVALID_ARGUMENT', `a dir: layout holds one image; ${inputs.length} were given`);
  }
  await checkOutput(opts.output, format === 'oci-archive' || format === 'docker-archive');
  if ((opts.platforms?.length ?? 0) > 1 && format === 'docker-archive') {
    throw new StowageError(
      'INVALID_ARGUMENT',
      'a docker-archive holds one platform per image; give one --platform',
    );
  }
}

/** Copies images (registry or archive references) into one archive or layout. */
export async function pull(ctx: Context, inputs: string[], opts: PullOptions): Promise<PullResult> {
  await checkRequest(inputs, opts.format ?? 'oci-archive', opts);
  return writeArchive(
    inputs.map((input) => ({ input, ctx })),
    opts,
  );
}

/** How the images are named in the archive: their own names, or those the options give the one image. */
function namingFor(
  count: number,
  format: ArchiveFormat,
  opts: PullOptions,
): (image: SourceImage) => ImageNames {
  if (opts.name !== undefined && count !== 1)
    throw new StowageError('INVALID_ARGUMENT', 'a destination name applies to one image only');
  if (opts.additionalTags?.length && (format !== 'docker-archive' || count !== 1)) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      '--additional-tag names the one image of a docker-archive (as skopeo does); this destination is not one',
    );
  }
  const extra = (opts.additionalTags ?? []).map((t) =>
    formatReference({ ...withDefaultTag(parseReference(t)), digest: undefined }),
  );
  return (image) => {
    const names = opts.name !== undefined ? namesFromOption(opts.name, opts.nameAsGiven) : namesOf(image);
    return extra.length ? { ...names, repoTags: [...new Set([...names.repoTags, ...extra])] } : names;
  };
}

/** Writes each image into one archive or layout (the request checked by checkRequest). */
export async function writeArchive(from: ImageFrom[], opts: PullOptions): Promise<PullResult> {
  const format = opts.format ?? 'oci-archive';
  const names = namingFor(from.length, format, opts);
  // Each image's manifest is remembered (a docker-archive of it can go back digest intact), and which
  // diff_id each layer decompressed to (the next docker-archive with it skips that pass): the engine
  // opens the digest cache for it.
  const copied = await copyImages(
    from.map((f) => ({ ...f, names })),
    [{ archive: format, path: opts.output, checksum: opts.checksum }],
    {
      selection: { all: opts.all, platforms: opts.platforms?.length ? opts.platforms : [hostPlatform()] },
      compress: opts.compress,
      preserveDigests: opts.preserveDigests,
      concurrency: opts.concurrency ?? 4,
      signal: opts.signal,
      onProgress: opts.onProgress,
      dryRun: opts.dryRun,
      referrers: opts.referrers,
    },
  );
  const r = onlyResult(copied);
  const written = r.committed as WrittenOutput | undefined;
  const images = r.images.map((p, i) => ({
    reference: p.label,
    source: copied.sources[i]!.served,
    digest: p.plan.root.descriptor.digest,
    mediaType: p.plan.root.descriptor.mediaType,
    platforms: p.plan.platforms,
    newIndex: p.newIndex,
    names: p.names.repoTags,
  }));
  const { reference, source, digest, mediaType, platforms } = images[0]!;
  const documents = [...r.set.documents.values()];
  const attached = r.set.images.reduce((n, i) => n + i.referrers.length, 0);
  return {
    reference,
    source,
    digest,
    mediaType,
    platforms,
    images,
    format,
    path: opts.output,
    sha256: written?.sha256,
    size: written?.size,
    blobs: r.set.blobs.length + documents.length,
    contentBytes: r.set.blobs.reduce((n, b) => n + b.size, 0) + documents.reduce((n, d) => n + d.length, 0),
    ...(opts.dryRun ? { dryRun: true } : {}),
    ...(r.notes.length ? { notes: r.notes } : {}),
    ...(attached ? { referrers: attached } : {}),
  };
}
