/**
 * --preserve-digests (skopeo's flag): the copy fails, before anything is written, wherever the digest
 * that lands would not be the one the source names. The engine changes a digest in three places only,
 * and each is checked here rather than discovered halfway through a write:
 *
 *   a new index       several platforms chosen from an index make an index of their own
 *   compressed layers a docker-archive's plain layers gzipped for a registry make a new manifest,
 *                     unless the manifest the image was pulled with comes back (see originalImage)
 *   no manifest kept  a docker-archive destination keeps configs and plain layers, not manifests
 *
 * A docker-archive source pushed with its layers as they are (--compress none) keeps the digest its
 * manifest has when stowage reads the archive (what `stowage inspect` shows), as skopeo does.
 */
import type { LayerCompression } from '../archive/compress.js';
import { StowageError } from '../errors.js';
import type { PlannedImage } from './copy.js';
import type { DestinationNeeds, ImageDestination } from './destination.js';
import type { DigestCache } from './digest-cache.js';
import { originalImage, plainLayers, type Recompressed } from './recompress.js';

export interface PreserveCheck {
  /** How plain layers would be compressed for this destination (undefined: they are not). */
  compression: LayerCompression | undefined;
  /** The compression was asked for (--compress), not the destination's default. */
  askedFor: boolean;
  cache?: DigestCache | undefined;
  has?: ImageDestination['hasBlob'] | undefined;
  read?: ImageDestination['readHeld'] | undefined;
  signal?: AbortSignal | undefined;
}

const DROP = 'or leave out --preserve-digests';

/** Why several platforms chosen from an index lose its digest (also said by a sync's dry run). */
export function newIndexReason(platforms: string[]): string {
  return `choosing ${platforms.join(', ')} from its index makes a new index`;
}

/**
 * Throws, naming the image and what to do, where a planned image would land under another digest.
 * Returns the images that pass because they go back as they were pulled (the copy uses these as found).
 */
export async function checkDigestsKept(
  planned: PlannedImage[],
  needs: DestinationNeeds,
  opts: PreserveCheck,
): Promise<Map<PlannedImage, Recompressed>> {
  const originals = new Map<PlannedImage, Recompressed>();
  for (const p of planned) {
    const digest = p.plan.root.descriptor.digest;
    if (p.newIndex) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${p.label}: ${newIndexReason(p.plan.platforms)} (${digest}), not the source's; keep the whole index (copy --all, platforms = "all") or choose one platform, ${DROP}`,
      );
    }
    if (needs.plainLayers && !p.source.synthesizedManifests) {
      throw new StowageError(
        'UNSUPPORTED',
        `${p.label}: a docker-archive keeps no manifest, so its digest ${digest} cannot be kept there; write an oci-archive or an oci: layout (both keep it), ${DROP}`,
      );
    }
    if (!opts.compression || opts.compression.format === 'none') continue;
    if (plainLayers(p.plan).length === 0) continue;
    if (opts.askedFor) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${p.label}: --compress ${opts.compression.format} would give its plain layers new digests, and the image a new manifest; leave out --compress (or give --compress none), ${DROP}`,
      );
    }
    const original = await originalImage(p.plan, p.source, opts);
    if (original) {
      originals.set(p, original);
      continue;
    }
    const why = p.source.synthesizedManifests
      ? 'comes from a docker-archive, which holds no manifest, and stowage has no record of the one it was pulled with (or the destination lacks its layers)'
      : 'has plain (uncompressed) layers';
    throw new StowageError(
      'UNSUPPORTED',
      `${p.label} ${why}: its layers would be compressed for the destination under a new manifest; --compress none sends them as they are, keeping ${digest} (as skopeo does), ${DROP}`,
    );
  }
  return originals;
}
