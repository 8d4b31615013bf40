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
import { gzipDeterministic } from '../archive/decompress.js';
import { Limiter } from '../core/limiter.js';
import { scratchDir } from '../core/partials.js';
import { sha256Digest } from '../image/digest.js';
import { isIndexMediaType, MediaType } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import { verified } from './blobs.js';
import { type DigestCache, deterministicGzip } from './digest-cache.js';
import { type ImagePlan, type PlannedDocument, parseManifest } from './plan.js';
import type { ImageSource } from './source.js';

const PLAIN_LAYER = new Set<string>(['application/vnd.docker.image.rootfs.diff.tar', MediaType.OciLayerTar]);

/** A converted layer: its compressed bytes, and a cheaper check of its source than compressing again. */
export interface ConvertedLayer {
  open(signal: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** Reads the plain layer through, digest-checked (a damaged archive fails without compressing). */
  check(signal: AbortSignal): Promise<void>;
}

export interface Recompressed {
  plan: ImagePlan;
  /** The gzipped layers, by their new digest. */
  files: Map<string, ConvertedLayer>;
  /** Removes the scratch directory. */
  cleanup(): Promise<void>;
}

/** The image with its plain layers gzipped; undefined when it has none (nothing to convert). */
export async function recompressPlainLayers(
  plan: ImagePlan,
  source: ImageSource,
  opts: { concurrency: number; signal?: AbortSignal | undefined; cache?: DigestCache | undefined },
): Promise<Recompressed | undefined> {
  const root = plan.root;
  if (isIndexMediaType(root.descriptor.mediaType)) return undefined;
  const manifest = parseManifest(root.bytes, `manifest ${root.descriptor.digest}`);
  const todo = manifest.layers.filter(
    (l, i, all) => PLAIN_LAYER.has(l.mediaType) && all.findIndex((x) => x.digest === l.digest) === i,
  );
  if (todo.length === 0) return undefined;
  const dir = await scratchDir(tmpdir(), 'stowage-push-');
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const gzipType =
      manifest.mediaType === MediaType.OciManifest ? MediaType.OciLayerGzip : MediaType.DockerLayerGzip;
    const compressed = new Map<string, { path?: string; plain: Descriptor; descriptor: Descriptor }>();
    const how = deterministicGzip();
    const limiter = new Limiter(Math.max(1, Math.min(opts.concurrency, todo.length)));
    await Promise.all(
      todo.map((l, i) =>
        limiter.run(async () => {
          // Compressed before: its digest is known, and the bytes are made again only if the
          // destination lacks the blob (streamed, checked against that digest as they go).
          const known = opts.cache?.get(l.digest, how);
          if (known) {
            compressed.set(l.digest, { plain: l, descriptor: { mediaType: gzipType, ...known } });
            return;
          }
          const path = join(dir, `${i}-${l.digest.slice(7, 19)}.gz`);
          const descriptor = await gzipInto(path, l, source, gzipType, opts.signal);
          opts.cache?.set(l.digest, how, { digest: descriptor.digest, size: descriptor.size });
          compressed.set(l.digest, { path, plain: l, descriptor });
        }),
      ),
    );
    await opts.cache?.save();
    const layers = manifest.layers.map(
      (l) =>
        compressed.get(l.digest)?.descriptor ?? { mediaType: l.mediaType, digest: l.digest, size: l.size },
    );
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: manifest.mediaType,
        config: {
          mediaType: manifest.config.mediaType,
          digest: manifest.config.digest,
          size: manifest.config.size,
        },
        layers,
      }),
    );
    const newRoot: PlannedDocument = {
      descriptor: { mediaType: root.descriptor.mediaType, digest: sha256Digest(bytes), size: bytes.length },
      bytes,
    };
    const blobs = [manifest.config, ...layers].map((d) => ({
      mediaType: d.mediaType,
      digest: d.digest,
      size: d.size,
    }));
    const files = new Map<string, ConvertedLayer>(
      [...compressed.values()].map((c) => [
        c.descriptor.digest,
        {
          open: async (signal: AbortSignal) =>
            c.path
              ? createReadStream(c.path, { highWaterMark: 1 << 20, signal })
              : gzipDeterministic(verified(await source.getBlob(c.plain, signal), c.plain)),
          check: async (signal: AbortSignal) => {
            for await (const _ of verified(await source.getBlob(c.plain, signal), c.plain));
          },
        },
      ]),
    );
    return {
      plan: {
        root: newRoot,
        documents: [newRoot],
        blobs: blobs.filter((b, i) => blobs.findIndex((x) => x.digest === b.digest) === i),
        platforms: plan.platforms,
      },
      files,
      cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** One plain layer, checked against its digest as it is read, gzipped into `path`. */
async function gzipInto(
  path: string,
  layer: Descriptor,
  source: ImageSource,
  mediaType: string,
  signal: AbortSignal | undefined,
): Promise<Descriptor> {
  const plain = verified(await source.getBlob(layer, signal), layer);
  const fh = await openFile(path, 'wx', 0o600);
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const c of gzipDeterministic(plain)) {
      hash.update(c);
      await fh.write(c);
      size += c.byteLength;
    }
  } finally {
    await fh.close();
  }
  return { mediaType, digest: `sha256:${hash.digest('hex')}`, size };
}
