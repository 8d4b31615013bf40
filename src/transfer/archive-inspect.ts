/**
 * `stowage inspect ARCHIVE`: what an archive or layout holds (images, names, platforms, digests,
 * sizes), read from its documents and configs only; layers are not read (that is `stowage verify`).
 */
import { stat } from 'node:fs/promises';
import { StowageError } from '../errors.js';
import { verifyBytes } from '../image/digest.js';
import { parseIndex, parseManifest } from '../image/documents.js';
import { isIndexMediaType, MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import { formatPlatform, hostPlatform, type PlatformSpec, selectPlatform } from '../image/platform.js';
import { type Descriptor, imageConfigSchema } from '../image/schemas.js';
import { type ArchiveFormat, ArchiveSource } from '../transports/archive/source.js';

export interface ManifestInfo {
  digest: string;
  mediaType: string;
  platform?: string | undefined;
  /** False when an index names a manifest the archive does not hold. */
  present: boolean;
  /** The config digest: the image ID podman and docker show. */
  config?: string | undefined;
  created?: string | undefined;
  layers?: number | undefined;
  /** Bytes of config and layers as stored in the archive. */
  size?: number | undefined;
}

export interface ArchiveImageInfo {
  /** Position in the archive: select it with NAME "@index". */
  index: number;
  names: string[];
  digest: string;
  mediaType: string;
  /** Image manifests: the image itself, or an index's children. */
  manifests: ManifestInfo[];
}

export interface ArchiveInfo {
  path: string;
  format: ArchiveFormat;
  /** Which producer's flavour, when it matters (docker save 25+). */
  variant?: string | undefined;
  /** Size of the archive file; absent for directories. */
  fileSize?: number | undefined;
  images: ArchiveImageInfo[];
}

// The CLI loads this module for inspect and verify: the argument parsing it needs comes with it.
export { isLocalArchiveArgument, parseArchiveArgument } from '../transports/open.js';

async function manifestInfo(source: ArchiveSource, d: Descriptor): Promise<ManifestInfo> {
  const info: ManifestInfo = {
    digest: d.digest,
    mediaType: d.mediaType,
    platform: d.platform ? formatPlatform(d.platform) : undefined,
    present: await source.has(d.digest, 'manifest'),
  };
  if (!info.present) return info;
  const m = parseManifest((await source.getManifest(d.digest)).bytes, `manifest ${d.digest}`);
  info.config = m.config.digest;
  info.layers = m.layers.length;
  info.size = m.config.size + m.layers.reduce((n, l) => n + l.size, 0);
  if (m.config.size <= MAX_MANIFEST_BYTES && (await source.has(m.config.digest))) {
    const bytes = await readAll(source, m.config);
    const config = imageConfigSchema.safeParse(JSON.parse(bytes.toString('utf8')));
    if (config.success) {
      info.created = config.data.created;
      if (!info.platform && config.data.os && config.data.architecture) {
        info.platform = formatPlatform({
          os: config.data.os,
          architecture: config.data.architecture,
          variant: config.data.variant,
        });
      }
    }
  }
  return info;
}

async function readAll(source: ArchiveSource, d: Descriptor): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of await source.getBlob(d)) parts.push(Buffer.from(c));
  const bytes = Buffer.concat(parts);
  verifyBytes(bytes, d.digest, `${source.description}: blob ${d.digest}`);
  return bytes;
}

export async function inspectArchive(
  path: string,
  opts: { format?: ArchiveFormat | undefined; name?: string | undefined } = {},
): Promise<ArchiveInfo> {
  const source = await ArchiveSource.open(path, opts.format);
  try {
    const st = await stat(path);
    const chosen = opts.name ? [source.select(opts.name)] : source.images;
    const images: ArchiveImageInfo[] = [];
    for (const img of chosen) {
      const d = img.descriptor;
      const manifests: ManifestInfo[] = [];
      if (isIndexMediaType(d.mediaType)) {
        const index = parseIndex((await source.getManifest(d.digest)).bytes, `index ${d.digest}`);
        for (const child of index.manifests) manifests.push(await manifestInfo(source, child));
      } else {
        manifests.push(await manifestInfo(source, { ...d, platform: undefined }));
      }
      images.push({
        index: source.images.indexOf(img),
        names: img.names,
        digest: d.digest,
        mediaType: d.mediaType,
        manifests,
      });
    }
    return {
      path,
      format: source.format,
      variant: source.variant,
      fileSize: st.isFile() ? st.size : undefined,
      images,
    };
  } finally {
    await source.close();
  }
}

/** The exact manifest bytes (--raw) or config bytes (--config) of one image of an archive. */
export async function archiveDocument(
  path: string,
  opts: {
    format?: ArchiveFormat | undefined;
    name?: string | undefined;
    what: 'raw' | 'config';
    platform?: PlatformSpec | undefined;
  },
): Promise<Buffer> {
  const source = await ArchiveSource.open(path, opts.format);
  try {
    const img = source.select(opts.name);
    const top = await source.getManifest(img.descriptor.digest);
    if (opts.what === 'raw') return top.bytes;
    let manifest = top;
    if (isIndexMediaType(top.mediaType)) {
      const index = parseIndex(top.bytes, `index ${top.digest}`);
      const chosen = selectPlatform(index.manifests, opts.platform ?? hostPlatform(), path);
      if (!(await source.has(chosen.digest, 'manifest'))) {
        throw new StowageError(
          'NOT_FOUND',
          `${path}: the ${formatPlatform(chosen.platform!)} manifest ${chosen.digest} is not in the archive`,
        );
      }
      manifest = await source.getManifest(chosen.digest);
    }
    const m = parseManifest(manifest.bytes, `manifest ${manifest.digest}`);
    if (m.config.size > MAX_MANIFEST_BYTES) {
      throw new StowageError('TOO_LARGE', `config ${m.config.digest} is over the 4 MiB limit`);
    }
    return await readAll(source, m.config);
  } finally {
    await source.close();
  }
}
