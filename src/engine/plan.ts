import { readSmallBlob } from '../archive/docker-archive.js';
import { StowageError } from '../errors.js';
import { sha256Digest } from '../image/digest.js';
import { parseConfig, parseIndex, parseManifest } from '../image/documents.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from '../image/mediatypes.js';
import { formatPlatform, type PlatformSpec, selectPlatform } from '../image/platform.js';
import type { Descriptor, ImageManifest } from '../image/schemas.js';
import type { ImageSource } from './source.js';

export interface PlannedDocument {
  descriptor: Descriptor;
  bytes: Buffer;
}

/** Everything one copy moves: the manifest documents (small, in memory) and the blobs (streamed). */
export interface ImagePlan {
  /** The document the destination names: an index (--all) or one image manifest. */
  root: PlannedDocument;
  /** Every manifest and index, the root included. */
  documents: PlannedDocument[];
  /** Configs and layers, unique by digest, in digest order. */
  blobs: Descriptor[];
  /** Platforms of the images included. */
  platforms: string[];
}

export interface PlanOptions {
  /** Keep the whole index. */
  all?: boolean;
  /** Choose this platform from an index (default: the host's). */
  platform: PlatformSpec;
  signal?: AbortSignal | undefined;
}

/**
 * Resolves a reference on a source into the documents and blobs to copy. With `all`, an index is
 * kept whole (digest intact); otherwise one platform's manifest is chosen from it.
 */
export async function planImage(
  source: ImageSource,
  reference: string,
  opts: PlanOptions,
): Promise<ImagePlan> {
  const signal = opts.signal;
  const top = await source.getManifest(reference, signal);
  const topDesc: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length };
  const documents = new Map<string, PlannedDocument>();
  const blobs = new Map<string, Descriptor>();
  const platforms: string[] = [];

  const addImage = async (desc: Descriptor, bytes: Buffer, platformHint?: string) => {
    const m = parseManifest(bytes, `manifest ${desc.digest} of ${source.description}`);
    documents.set(desc.digest, { descriptor: desc, bytes });
    for (const b of [m.config, ...m.layers]) {
      if (!blobs.has(b.digest))
        blobs.set(b.digest, { mediaType: b.mediaType, digest: b.digest, size: b.size });
    }
    if (platformHint) platforms.push(platformHint);
    return m;
  };

  const fetchChild = async (d: Descriptor) => {
    const child = await source.getManifest(d.digest, signal);
    if (child.bytes.length !== d.size) {
      throw new StowageError(
        'DIGEST_MISMATCH',
        `manifest ${d.digest} of ${source.description} is ${child.bytes.length} bytes, the index declares ${d.size}`,
      );
    }
    return child;
  };

  let root: PlannedDocument;
  if (isIndexMediaType(top.mediaType)) {
    const index = parseIndex(top.bytes, `index ${top.digest} of ${source.description}`);
    if (opts.all) {
      root = { descriptor: topDesc, bytes: top.bytes };
      documents.set(top.digest, root);
      const children = await Promise.all(
        index.manifests.map(async (d) => ({ d, child: await fetchChild(d) })),
      );
      for (const { d, child } of children) {
        if (isIndexMediaType(child.mediaType)) {
          throw new StowageError(
            'UNSUPPORTED',
            `index ${top.digest} nests another index (${d.digest}); nested indexes are not supported yet`,
          );
        }
        await addImage({ ...d, mediaType: child.mediaType }, child.bytes, formatPlatform(d.platform));
      }
    } else {
      const chosen = selectPlatform(index.manifests, opts.platform, `${source.description}:${reference}`);
      const child = await fetchChild(chosen);
      const desc: Descriptor = { mediaType: child.mediaType, digest: child.digest, size: child.bytes.length };
      await addImage(desc, child.bytes, formatPlatform(chosen.platform));
      root = { descriptor: desc, bytes: child.bytes };
    }
  } else if (isManifestMediaType(top.mediaType)) {
    root = { descriptor: topDesc, bytes: top.bytes };
    const manifest = await addImage(topDesc, top.bytes);
    // One image, no index to say its platform: its config does (results, the store and the API list it).
    const platform = await configPlatform(source, manifest, signal);
    if (platform) platforms.push(platform);
  } else {
    throw new StowageError(
      'UNSUPPORTED',
      `${source.description}:${reference} has media type "${top.mediaType}", which is not an image manifest or index`,
    );
  }
  const sorted = [...blobs.values()].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  return {
    root,
    documents: [...documents.values()],
    blobs: sorted.filter((b) => !documents.has(b.digest)),
    platforms,
  };
}

/** A config (or another small blob) of a source in memory, digest-checked. */
export function readConfig(source: ImageSource, d: Descriptor, signal?: AbortSignal): Promise<Buffer> {
  return source.readSmallBlob
    ? source.readSmallBlob(d, signal)
    : readSmallBlob((desc, s) => source.getBlob(desc, s), d, signal ?? new AbortController().signal);
}

/** The platform an image's config names (undefined for an artifact, whose config is not an image's). */
async function configPlatform(
  source: ImageSource,
  manifest: ImageManifest,
  signal: AbortSignal | undefined,
): Promise<string | undefined> {
  const d = manifest.config;
  if (d.mediaType !== MediaType.OciConfig && d.mediaType !== MediaType.DockerConfig) return undefined;
  const bytes = await readConfig(source, d, signal);
  const config = parseConfig(bytes, `config ${d.digest} of ${source.description}`);
  if (!config.os || !config.architecture) return undefined;
  return formatPlatform({
    os: String(config.os),
    architecture: String(config.architecture),
    ...(config.variant ? { variant: String(config.variant) } : {}),
  });
}

/** Several platforms chosen from an index: a new index naming just those (same media type). */
export async function planPlatforms(
  source: ImageSource,
  reference: string,
  platforms: PlatformSpec[],
  signal: AbortSignal | undefined,
): Promise<{ plan: ImagePlan; newIndex: boolean }> {
  const top = await source.getManifest(reference, signal);
  if (!isIndexMediaType(top.mediaType)) {
    return { plan: await planImage(source, reference, { platform: platforms[0]!, signal }), newIndex: false };
  }
  const index = parseIndex(top.bytes, `index ${top.digest} of ${source.description}`);
  const chosen: Descriptor[] = [];
  for (const p of platforms) {
    const d = selectPlatform(index.manifests, p, `${source.description}:${reference}`);
    if (!chosen.some((c) => c.digest === d.digest)) chosen.push(d);
  }
  const bytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: top.mediaType, manifests: chosen }),
  );
  const root = {
    descriptor: { mediaType: top.mediaType, digest: sha256Digest(bytes), size: bytes.length },
    bytes,
  };
  const documents: PlannedDocument[] = [root];
  const blobs = new Map<string, Descriptor>();
  for (const d of chosen) {
    const child = await source.getManifest(d.digest, signal);
    documents.push({
      descriptor: { mediaType: child.mediaType, digest: d.digest, size: child.bytes.length },
      bytes: child.bytes,
    });
    const m = parseManifest(child.bytes, `manifest ${d.digest} of ${source.description}`);
    for (const b of [m.config, ...m.layers])
      blobs.set(b.digest, { mediaType: b.mediaType, digest: b.digest, size: b.size });
  }
  return {
    plan: {
      root,
      documents,
      blobs: [...blobs.values()].sort((a, b) => (a.digest < b.digest ? -1 : 1)),
      platforms: chosen.map((d) => formatPlatform(d.platform)),
    },
    newIndex: true,
  };
}
