/**
 * The copy engine: images from sources into one destination. It knows no transport: a registry, an
 * archive, a layout or the store are all an `ImageSource` or an `ImageDestination` to it.
 *
 *   plan       each image resolved on its source: the platforms chosen, an index kept whole or rebuilt
 *   adapt      converted to what the destination holds (plain layers gzipped for a registry), or refused
 *   merge      documents and blobs of every image, each once
 *   provide    each blob from the cheapest place: a converted file, the store or a cache, its source
 *   write      the destination writes the set (its blob loop, blobs.ts, or a format writer), then commits;
 *              on any failure it aborts, and nothing is left under the destination's names
 */
import { DEFAULT_COMPRESSION, type LayerCompression } from '../archive/compress.js';
import { StowageError } from '../errors.js';
import { parseManifest } from '../image/documents.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from '../image/mediatypes.js';
import type { PlatformSpec } from '../image/platform.js';
import type { Descriptor } from '../image/schemas.js';
import type {
  BlobProvider,
  DestinationNeeds,
  ImageDestination,
  ImageNames,
  ImageSet,
  WriteSettings,
} from './destination.js';
import type { DigestCache } from './digest-cache.js';
import { type ImagePlan, planImage, planPlatforms, readConfig } from './plan.js';
import { checkDigestsKept } from './preserve.js';
import { type ConvertedLayer, type Recompressed, recompressPlainLayers } from './recompress.js';
import { type PlannedReferrer, planReferrers, type ReferrerOptions } from './referrers.js';
import type { ImageSource } from './source.js';

/** Which platforms of an index are copied. */
export interface Selection {
  /** Keep an index whole, its digest intact. */
  all?: boolean | undefined;
  /** One platform (its manifest alone), or several (a new index naming just those). */
  platforms: PlatformSpec[];
}

/** One image to copy, as its caller names it. */
export interface CopyImage {
  source: ImageSource;
  /** A tag or digest on the source. */
  reference: string;
  names: ImageNames;
  /** What results and messages call it. */
  label: string;
  /** A registry repository known to hold its blobs (a destination in the same registry mounts from it). */
  origin?: { host: string; repository: string } | undefined;
}

/** An image resolved on its source, ready to be written. */
export interface PlannedImage extends CopyImage {
  plan: ImagePlan;
  /** The root is an index made by choosing platforms: its digest is not the source's. */
  newIndex: boolean;
  /** The root manifest was rewritten for the destination (layers recompressed): a new digest. */
  converted: boolean;
  /** What is attached to it and goes with it (found when the destination holds attachments). */
  referrers?: PlannedReferrer[] | undefined;
}

/** Looks a blob up somewhere cheaper than its source (the store, a cache); undefined if not there. */
export type BlobLookup = (
  d: Descriptor,
  signal: AbortSignal,
) => Promise<AsyncIterable<Uint8Array> | undefined>;

/** Resolves each image on its source under `selection`. */
export async function planImages(
  images: CopyImage[],
  selection: Selection,
  signal?: AbortSignal,
): Promise<PlannedImage[]> {
  const out: PlannedImage[] = [];
  for (const image of images) out.push(await planOne(image, selection, signal));
  return out;
}

export async function planOne(
  image: CopyImage,
  selection: Selection,
  signal?: AbortSignal,
): Promise<PlannedImage> {
  const { source, reference } = image;
  const [first] = selection.platforms;
  if (!first) throw new StowageError('INTERNAL', 'a selection names at least one platform');
  if (selection.all) {
    const plan = await planImage(source, reference, { all: true, platform: first, signal });
    return { ...image, plan, newIndex: false, converted: false };
  }
  if (selection.platforms.length > 1) {
    const { plan, newIndex } = await planPlatforms(source, reference, selection.platforms, signal);
    return { ...image, plan, newIndex, converted: false };
  }
  const plan = await planImage(source, reference, { platform: first, signal });
  return { ...image, plan, newIndex: false, converted: false };
}

/** A copy made ready for a destination: the set to write, the blob provider, and what to remove after. */
export interface PreparedCopy {
  images: PlannedImage[];
  set: ImageSet;
  notes: string[];
  provider: BlobProvider;
  cleanup(): Promise<void>;
}

/**
 * Adapts planned images to what a destination needs, merges them, and builds their blob provider.
 * With `dryRun`, nothing is converted (a conversion reads every layer): the plan is reported as it is.
 */
export async function prepareCopy(
  planned: PlannedImage[],
  needs: DestinationNeeds,
  opts: {
    concurrency: number;
    signal?: AbortSignal | undefined;
    lookups?: BlobLookup[] | undefined;
    dryRun?: boolean | undefined;
    referrers?: ReferrerOptions | undefined;
    /** Where earlier compressions of plain layers are remembered (see digest-cache.ts). */
    digestCache?: DigestCache | undefined;
    /**
     * How plain layers are compressed: for a destination that needs compressed layers, gzip unless
     * told otherwise (none keeps them plain); for others, only when given.
     */
    compress?: LayerCompression | undefined;
    /** The destination's streamBlob: converted layers go to it as they are made (see recompress.ts). */
    stream?: ImageDestination['streamBlob'] | undefined;
    /** The destination's hasBlob: an image pulled before may go back as it was (see recompress.ts). */
    has?: ImageDestination['hasBlob'] | undefined;
    /** The destination's readHeld: the bytes of a blob `has` found, if linking it fails. */
    read?: ImageDestination['readHeld'] | undefined;
    /** Fail, before anything is converted or written, where a digest would change. */
    preserveDigests?: boolean | undefined;
  },
): Promise<PreparedCopy> {
  checkFits(planned, needs);
  if (needs.plainLayers && opts.compress && opts.compress.format !== 'none') {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `a docker-archive holds its layers uncompressed (as docker load reads them), so --compress ${opts.compress.format} cannot apply; leave it out, or write an oci-archive`,
    );
  }
  const compression = opts.compress ?? (needs.compressedLayers ? DEFAULT_COMPRESSION : undefined);
  // Images the check found going back as they were pulled: not looked for a second time below.
  const originals = opts.preserveDigests
    ? await checkDigestsKept(planned, needs, {
        compression,
        askedFor: opts.compress !== undefined,
        cache: opts.digestCache,
        has: opts.has,
        read: opts.read,
        signal: opts.signal,
      })
    : new Map<PlannedImage, Recompressed>();
  const notes = needs.referrers ? [] : await leftBehind(planned, opts.referrers, opts.signal);
  if (needs.referrers) {
    // Attachments of the root and of every manifest under it (a signature is usually on the index).
    for (const p of planned) {
      const subjects = p.plan.documents.map((d) => d.descriptor.digest);
      p.referrers = await planReferrers(p.source, subjects, opts.referrers ?? {}, opts.signal);
    }
  }
  const converted = new Map<string, ConvertedLayer>();
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.splice(0)) await c();
  };
  const images: PlannedImage[] = [];
  try {
    for (const p of planned) {
      if (!compression || opts.dryRun) {
        images.push(p);
        continue;
      }
      const r =
        originals.get(p) ??
        (await recompressPlainLayers(p.plan, p.source, {
          concurrency: opts.concurrency,
          signal: opts.signal,
          cache: opts.digestCache,
          compression: opts.compress,
          stream: opts.stream,
          has: opts.has,
          read: opts.read,
        }));
      if (!r) {
        images.push(p);
        continue;
      }
      cleanups.push(r.cleanup);
      for (const [digest, layer] of r.files) converted.set(digest, layer);
      images.push({ ...p, plan: r.plan, converted: !r.original });
    }
  } catch (e) {
    await cleanup();
    throw e;
  }
  const set = mergeImages(images);
  const from = new Map<string, ImageSource>();
  for (const p of images) {
    const blobs = [...p.plan.blobs, ...(p.referrers ?? []).flatMap((r) => r.blobs)];
    for (const b of blobs) if (!from.has(b.digest)) from.set(b.digest, p.source);
  }
  const sourceOf = (d: Descriptor) => {
    const s = from.get(d.digest);
    if (!s) throw new StowageError('INTERNAL', `blob ${d.digest} is not part of this copy`);
    return s;
  };
  const provider: BlobProvider = {
    async open(d, signal) {
      const file = converted.get(d.digest);
      if (file) return file.open(signal);
      for (const lookup of opts.lookups ?? []) {
        const body = await lookup(d, signal);
        if (body) return body;
      }
      return sourceOf(d).getBlob(d, signal);
    },
    async tail(d, length, signal) {
      if (converted.has(d.digest)) return undefined;
      return sourceOf(d).getBlobTail?.(d, length, signal);
    },
    readSmall: (d, signal) => readConfig(sourceOf(d), d, signal),
    async check(d, signal) {
      const file = converted.get(d.digest);
      if (!file) return (await sourceOf(d).checkBlob?.(d, signal)) ?? false;
      await file.check(signal);
      return true;
    },
  };
  return { images, set, provider, cleanup, notes };
}

/**
 * For a destination that cannot hold attachments (docker-archive, dir:): what the images have attached
 * that stays behind, said once rather than dropped silently. One listing per image, nothing more read.
 */
async function leftBehind(
  planned: PlannedImage[],
  referrers: ReferrerOptions | undefined,
  signal: AbortSignal | undefined,
): Promise<string[]> {
  if (referrers?.carry === false) return [];
  const notes: string[] = [];
  for (const p of planned) {
    const list = (await p.source.referrers?.(p.plan.root.descriptor.digest, signal)) ?? [];
    if (list.length > 0) {
      notes.push(
        `${p.label} has ${list.length} attachment${list.length === 1 ? '' : 's'} (signatures, attestations, SBOMs) this format cannot hold; they were left out (oci-archive and oci: keep them)`,
      );
    }
  }
  return notes;
}

/** Refuses, before anything is read, what the destination cannot hold. */
function checkFits(planned: PlannedImage[], needs: DestinationNeeds): void {
  if (planned.length > needs.maxImages) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `the destination holds ${needs.maxImages === 1 ? 'one image' : `${needs.maxImages} images`}; ${planned.length} were given`,
    );
  }
  if (!needs.singlePlatform) return;
  const index = planned.find((p) => isIndexMediaType(p.plan.root.descriptor.mediaType));
  if (index) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${index.label} is an index of ${index.plan.platforms.length} platforms, and the destination holds one platform per image; choose one with --platform`,
    );
  }
}

/** The images' documents and blobs, each once; blobs in digest order. */
export function mergeImages(images: PlannedImage[]): ImageSet {
  const documents = new Map<string, Buffer>();
  const blobs = new Map<string, Descriptor>();
  for (const p of images) {
    for (const d of p.plan.documents) documents.set(d.descriptor.digest, d.bytes);
    for (const b of p.plan.blobs) if (!blobs.has(b.digest)) blobs.set(b.digest, b);
    for (const r of p.referrers ?? []) {
      documents.set(r.document.descriptor.digest, r.document.bytes);
      for (const b of r.blobs) if (!blobs.has(b.digest)) blobs.set(b.digest, b);
    }
  }
  return {
    images: images.map((p) => ({
      root: p.plan.root,
      documents: p.plan.documents,
      blobs: p.plan.blobs,
      platforms: p.plan.platforms,
      names: p.names,
      origin: p.origin,
      referrers: p.referrers ?? [],
    })),
    documents,
    blobs: [...blobs.values()]
      .filter((b) => !documents.has(b.digest))
      .sort((a, b) => compare(a.digest, b.digest)),
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Records, for each image config, the manifest it came with (see digest-cache.ts): a docker-archive
 * made of the image later can go back as it was. Converted images (new manifests) are not recorded.
 * The caller saves the cache (a sync once at its end, not once per tag).
 */
export async function rememberManifests(
  images: PlannedImage[],
  cache: DigestCache | undefined,
): Promise<void> {
  if (!cache) return;
  for (const p of images) {
    if (p.converted) continue;
    for (const doc of p.plan.documents) {
      if (!isManifestMediaType(doc.descriptor.mediaType)) continue;
      try {
        const m = parseManifest(doc.bytes, `manifest ${doc.descriptor.digest}`);
        // Images only: a signature's or an SBOM's manifest has a config of its own kind.
        if (m.config.mediaType !== MediaType.OciConfig && m.config.mediaType !== MediaType.DockerConfig)
          continue;
        cache.rememberManifest(m.config.digest, { mediaType: doc.descriptor.mediaType, bytes: doc.bytes });
      } catch {
        // Not a manifest this cache can use: nothing to remember.
      }
    }
  }
}

/** Writes a prepared copy into a destination and commits it; aborts the destination on any failure. */
export async function writeTo<C>(
  destination: ImageDestination<C>,
  prepared: PreparedCopy,
  settings: WriteSettings,
): Promise<C> {
  await destination.prepare?.(prepared.set);
  try {
    await destination.write(prepared.set, prepared.provider, settings);
    return await destination.commit();
  } catch (e) {
    await destination.abort();
    if (settings.signal?.aborted && !(e instanceof StowageError && e.code === 'ABORTED')) {
      throw new StowageError('ABORTED', `writing ${destination.description} was aborted`, { cause: e });
    }
    throw e;
  }
}
