/**
 * The adaptor for destinations that hold compressed layers only (a registry): a docker-archive (before
 * docker 25) holds plain tar layers and no manifest, so its layers are gzipped deterministically (the
 * same layer always gives the same bytes, hence the same digest) into a scratch directory, and a new
 * manifest names them; its digest is new, and results say so.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open as openFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type CompressOptions,
  compressionKey,
  compressLayer,
  DEFAULT_COMPRESSION,
  defaultWorkers,
  type LayerCompression,
} from '../archive/compress.js';
import { Limiter } from '../core/limiter.js';
import { scratchDir, sweepScratch } from '../core/partials.js';
import { StowageError } from '../errors.js';
import { sha256Digest } from '../image/digest.js';
import { parseManifest } from '../image/documents.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import { verified } from './blobs.js';
import type { ImageDestination } from './destination.js';
import type { DigestCache } from './digest-cache.js';
import type { ImagePlan, PlannedDocument } from './plan.js';
import type { ImageSource } from './source.js';

const SCRATCH_PREFIX = 'stowage-push-';
const PLAIN_LAYER = new Set<string>(['application/vnd.docker.image.rootfs.diff.tar', MediaType.OciLayerTar]);

/** A converted layer: its compressed bytes, and a cheaper check of its source than compressing again. */
export interface ConvertedLayer {
  open(signal: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** Reads the plain layer through, digest-checked (a damaged archive fails without compressing). */
  check(signal: AbortSignal): Promise<void>;
}

export interface Recompressed {
  plan: ImagePlan;
  /** The plan is the image as it was pulled (its recorded manifest), digest intact: nothing converted. */
  original: boolean;
  /** The gzipped layers, by their new digest. */
  files: Map<string, ConvertedLayer>;
  /** Removes the scratch directory. */
  cleanup(): Promise<void>;
}

/** The image with its plain layers gzipped; undefined when it has none (nothing to convert). */
export async function recompressPlainLayers(
  plan: ImagePlan,
  source: ImageSource,
  opts: {
    concurrency: number;
    signal?: AbortSignal | undefined;
    cache?: DigestCache | undefined;
    /** How (default DEFAULT_COMPRESSION: gzip level 1); none leaves the layers plain. */
    compression?: LayerCompression | undefined;
    workers?: CompressOptions['workers'];
    /**
     * Sends a layer to the destination while it is compressed, its digest learned at the end (see
     * ImageDestination.streamBlob); without it, layers are compressed into a scratch directory first.
     */
    stream?: ImageDestination['streamBlob'] | undefined;
    /**
     * Asks the destination whether it has a blob: with it, and no compression asked for, an image whose
     * manifest the cache recorded comes back as it was where all its layers are (see originalImage).
     */
    has?: ImageDestination['hasBlob'] | undefined;
    /** The destination's readHeld: the bytes of a blob `has` found, if linking it fails. */
    read?: ImageDestination['readHeld'] | undefined;
  },
): Promise<Recompressed | undefined> {
  const root = plan.root;
  const compression = opts.compression ?? DEFAULT_COMPRESSION;
  // Nothing to do when asked to keep the layers plain.
  if (compression.format === 'none') return undefined;
  const todo = plainLayers(plan);
  if (todo.length === 0) return undefined;
  const manifest = parseManifest(root.bytes, `manifest ${root.descriptor.digest}`);
  if (!opts.compression) {
    const original = await originalImage(plan, source, opts);
    if (original) return original;
  }
  // Streamed layers need no scratch directory; those of killed runs are swept all the same.
  if (opts.stream) await sweepScratch(tmpdir(), SCRATCH_PREFIX);
  const dir = opts.stream ? undefined : await scratchDir(tmpdir(), SCRATCH_PREFIX);
  const cleanup = () => (dir ? rm(dir, { recursive: true, force: true }) : Promise.resolve());
  try {
    // docker's schema 2 has no zstd layer type: a zstd image is an OCI one (as podman and skopeo make it).
    const oci = root.descriptor.mediaType === MediaType.OciManifest || compression.format === 'zstd';
    const layerType =
      compression.format === 'zstd'
        ? MediaType.OciLayerZstd
        : oci
          ? MediaType.OciLayerGzip
          : MediaType.DockerLayerGzip;
    const compress = (body: AsyncIterable<Uint8Array>) =>
      compressLayer(body, compression, { workers: opts.workers });
    const compressed = new Map<string, { path?: string; plain: Descriptor; descriptor: Descriptor }>();
    const how = compressionKey(compression);
    // As many layers at once as there are cores: more only hold buffers while they wait for a thread.
    const limiter = new Limiter(
      Math.max(1, Math.min(opts.concurrency, todo.length, Math.max(2, defaultWorkers()))),
    );
    await Promise.all(
      todo.map((l, i) =>
        limiter.run(async () => {
          // Compressed before: its digest is known, and the bytes are made again only if the
          // destination lacks the blob (streamed, checked against that digest as they go).
          const known = opts.cache?.get(l.digest, how);
          if (known) {
            compressed.set(l.digest, { plain: l, descriptor: { mediaType: layerType, ...known } });
            return;
          }
          const signal = opts.signal ?? new AbortController().signal;
          const make = async () => compress(verified(await source.getBlob(l, signal), l));
          const path = dir ? join(dir, `${i}-${l.digest.slice(7, 19)}.gz`) : undefined;
          const made = path ? await writeHashed(path, await make()) : await opts.stream!(make, signal);
          opts.cache?.set(l.digest, how, made);
          compressed.set(l.digest, { path, plain: l, descriptor: { mediaType: layerType, ...made } });
        }),
      ),
    );
    await opts.cache?.save();
    const layers = manifest.layers.map(
      (l) =>
        compressed.get(l.digest)?.descriptor ?? { mediaType: l.mediaType, digest: l.digest, size: l.size },
    );
    const rewritten = rewrittenManifest(root.descriptor.mediaType, manifest.config, layers, oci);
    const files = new Map<string, ConvertedLayer>(
      [...compressed.values()].map((c) => [
        c.descriptor.digest,
        {
          open: async (signal: AbortSignal) =>
            c.path
              ? createReadStream(c.path, { highWaterMark: 1 << 20, signal })
              : compress(verified(await source.getBlob(c.plain, signal), c.plain)),
          check: (signal: AbortSignal) => checkPlain(source, c.plain, signal),
        },
      ]),
    );
    return {
      plan: singleManifestPlan(rewritten.root, rewritten.config, layers, plan.platforms),
      files,
      cleanup,
      original: false,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** The plain (uncompressed) layers of a single-manifest image, each once; none for an index. */
export function plainLayers(plan: ImagePlan): Descriptor[] {
  const root = plan.root;
  if (isIndexMediaType(root.descriptor.mediaType)) return [];
  const manifest = parseManifest(root.bytes, `manifest ${root.descriptor.digest}`);
  return manifest.layers.filter(
    (l, i, all) => PLAIN_LAYER.has(l.mediaType) && all.findIndex((x) => x.digest === l.digest) === i,
  );
}

/** The plan of a single-manifest image: its manifest, and its config and layers once each. */
function singleManifestPlan(
  root: PlannedDocument,
  config: Descriptor,
  layers: Descriptor[],
  platforms: string[],
): ImagePlan {
  const blobs: Descriptor[] = [];
  for (const d of [config, ...layers]) {
    if (!blobs.some((b) => b.digest === d.digest)) {
      blobs.push({ mediaType: d.mediaType, digest: d.digest, size: d.size });
    }
  }
  return { root, documents: [root], blobs, platforms };
}

/** A manifest for `layers` with the image's config (its media type made OCI's for an OCI manifest). */
function rewrittenManifest(
  rootType: string,
  config: Descriptor,
  layers: Descriptor[],
  oci: boolean,
): { root: PlannedDocument; config: Descriptor } {
  const mediaType = oci ? MediaType.OciManifest : rootType;
  const configType =
    oci && config.mediaType === MediaType.DockerConfig ? MediaType.OciConfig : config.mediaType;
  const newConfig = { mediaType: configType, digest: config.digest, size: config.size };
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: newConfig, layers }));
  return {
    root: { descriptor: { mediaType, digest: sha256Digest(bytes), size: bytes.length }, bytes },
    config: newConfig,
  };
}

/**
 * The image as it was pulled: a docker-archive keeps the config but not the manifest, and the cache
 * recorded the manifest that config came with. Where the destination has every layer that manifest
 * names (the registry the image came from, a mirror of it), that manifest goes back, digest intact, and
 * nothing is compressed or sent; the archive's layers are still read and checked (verifyExisting).
 * undefined where there is no record, it does not fit, or a layer is missing.
 */
export async function originalImage(
  plan: ImagePlan,
  source: ImageSource,
  opts: {
    signal?: AbortSignal | undefined;
    cache?: DigestCache | undefined;
    has?: ImageDestination['hasBlob'];
    read?: ImageDestination['readHeld'] | undefined;
  },
): Promise<Recompressed | undefined> {
  if (isIndexMediaType(plan.root.descriptor.mediaType)) return undefined;
  const synthesized = parseManifest(plan.root.bytes, `manifest ${plan.root.descriptor.digest}`);
  const recorded = opts.cache?.manifestFor(synthesized.config.digest);
  if (!recorded || !opts.has || !isManifestMediaType(recorded.mediaType)) return undefined;
  let original: ReturnType<typeof parseManifest>;
  try {
    original = parseManifest(recorded.bytes, 'a recorded manifest');
  } catch {
    return undefined;
  }
  // The config fixes the layers (its diff_ids), so a manifest naming it names them in this order.
  if (
    original.config.digest !== synthesized.config.digest ||
    original.layers.length !== synthesized.layers.length
  ) {
    return undefined;
  }
  const signal = opts.signal ?? new AbortController().signal;
  const has = opts.has;
  const present = await Promise.all(original.layers.map((l) => has(l, signal)));
  if (!present.every(Boolean)) return undefined;
  const root: PlannedDocument = {
    descriptor: {
      mediaType: recorded.mediaType,
      digest: sha256Digest(recorded.bytes),
      size: recorded.bytes.length,
    },
    bytes: recorded.bytes,
  };
  const files = new Map<string, ConvertedLayer>();
  for (const [i, l] of original.layers.entries()) {
    const plain = synthesized.layers[i] as Descriptor;
    const read = opts.read;
    files.set(l.digest, {
      open: async (s: AbortSignal) => {
        if (read) return read(l, s);
        throw new StowageError(
          'REGISTRY',
          `layer ${l.digest} was at the destination a moment ago and is gone; push again (it will be compressed)`,
        );
      },
      check: (s: AbortSignal) => checkPlain(source, plain, s),
    });
  }
  return {
    plan: singleManifestPlan(root, original.config, original.layers, plan.platforms),
    files,
    cleanup: async () => {},
    original: true,
  };
}

/** Checks a plain layer of the source against its digest: in place where the source can, else read through. */
async function checkPlain(source: ImageSource, plain: Descriptor, signal: AbortSignal): Promise<void> {
  if (await source.checkBlob?.(plain, signal)) return;
  for await (const _ of verified(await source.getBlob(plain, signal), plain));
}

/** Writes a stream into a new file at `path`, hashing it as it goes: its digest and size. */
async function writeHashed(
  path: string,
  body: AsyncIterable<Uint8Array>,
): Promise<{ digest: string; size: number }> {
  const fh = await openFile(path, 'wx', 0o600);
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const c of body) {
      hash.update(c);
      await fh.write(c);
      size += c.byteLength;
    }
  } finally {
    await fh.close();
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}
