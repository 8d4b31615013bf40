/**
 * `stowage import` and `stowage flatten`: a root filesystem tarball (or an image's exported root
 * filesystem, streamed) becomes a one-layer image.
 *
 * The layer is the input's entries rewritten with deterministic headers (fsEntryHeader), gzipped
 * deterministically, hashed both ways while it streams into a small OCI layout in a work directory;
 * the config and manifest are generated with a fixed key order; the layout then goes to its destination
 * through the same writers and pushers as every other image. Nothing from the input is ever created on
 * the host: entries are only read and rewritten.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { compressLayer, DEFAULT_COMPRESSION } from '../archive/compress.js';
import { decompressed } from '../archive/decompress.js';
import { OCI_LAYOUT_FILE, REF_NAME_ANNOTATION } from '../archive/oci-archive.js';
import { END_OF_ARCHIVE } from '../archive/tar.js';
import { plural } from '../core/figures.js';
import { preparePartial, scratchDir } from '../core/partials.js';
import type { ProgressListener } from '../core/progress.js';
import { StowageError } from '../errors.js';
import { sha256Digest } from '../image/digest.js';
import { MediaType } from '../image/mediatypes.js';
import { formatPlatform, hostPlatform, type PlatformSpec } from '../image/platform.js';
import type { ImageConfig } from '../image/schemas.js';
import { formatReference, parseReference, withDefaultTag } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import { copyImage } from '../transfer/copy.js';
import { checkOutput } from '../transfer/pull.js';
import { parseDestination } from '../transports/open.js';
import { type ContainerConfig, parseChanges } from './changes.js';
import { LayerReader, type RootfsStats, resolveImage, rootfsTar } from './export.js';
import { fsEntryHeader, padding, readTar } from './tar.js';

export type ManifestFormat = 'oci' | 'docker';

/**
 * A path inside the root, with "." and ".." resolved lexically; undefined when ".." climbs out.
 * Leading "/" is dropped: absolute names in a rootfs tarball are taken relative to its root, as docker does.
 */
export function confinedPath(name: string): string | undefined {
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) return undefined;
      out.pop();
    } else out.push(part);
  }
  return out.join('/');
}

/**
 * A rootfs tarball (plain, gzip or zstd) rewritten entry by entry with deterministic headers. Refuses
 * names and hard-link targets that climb out of the root with ".."; keeps symlink targets as they are
 * (absolute ones resolve inside the container) and device nodes and FIFOs (they are only headers here).
 */
export async function* rootfsFromTarball(
  input: AsyncIterable<Uint8Array>,
  what: string,
  stats: RootfsStats,
): AsyncGenerator<Buffer> {
  let size = 0;
  for await (const ev of readTar(decompressed(input), what)) {
    if (ev.kind === 'entry') {
      const e = ev.entry;
      const name = confinedPath(ev.raw);
      const hostile = (field: string, value: string) =>
        new StowageError(
          'INVALID_ARCHIVE',
          `${what}: entry "${ev.raw}" has ${field} "${value}" that climbs out of the root filesystem with ".."; fix the tarball (nothing was written)`,
        );
      if (name === undefined) throw hostile('the path', ev.raw);
      let linkname = e.linkname;
      if (e.type === 'hardlink') {
        const target = confinedPath(e.linkname);
        if (target === undefined || target === '') throw hostile('the hard link target', e.linkname);
        linkname = target;
      }
      stats.layerEntries++;
      size = e.size;
      if (name === '') continue; // the root directory itself
      stats.entries++;
      yield fsEntryHeader({ ...e, name, linkname });
    } else if (ev.kind === 'data') {
      stats.contentBytes += ev.chunk.byteLength;
      yield ev.chunk as Buffer;
    } else if (size > 0) {
      yield padding(size);
      size = 0;
    }
  }
  yield END_OF_ARCHIVE;
}

export interface BuiltLayer {
  digest: string;
  size: number;
  diffId: string;
  /** Bytes of the uncompressed tar. */
  tarBytes: number;
}

/** gzips a tar stream into the layout's blob directory, hashing both forms. */
async function writeLayer(tarStream: AsyncIterable<Buffer>, layoutDir: string): Promise<BuiltLayer> {
  const diff = createHash('sha256');
  const blob = createHash('sha256');
  let tarBytes = 0;
  let size = 0;
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const c of tarStream) {
      diff.update(c);
      tarBytes += c.length;
      yield c;
    }
  }
  const partial = await preparePartial(join(layoutDir, 'blobs', 'sha256', 'layer'));
  const fh = await open(partial, 'wx');
  try {
    for await (const c of compressLayer(counted(), DEFAULT_COMPRESSION)) {
      blob.update(c);
      size += c.byteLength;
      await fh.write(c);
    }
  } finally {
    await fh.close();
  }
  const digest = `sha256:${blob.digest('hex')}`;
  await rename(partial, join(layoutDir, 'blobs', 'sha256', digest.slice(7)));
  return { digest, size, diffId: `sha256:${diff.digest('hex')}`, tarBytes };
}

async function putJson(layoutDir: string, value: unknown): Promise<{ digest: string; size: number }> {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = sha256Digest(bytes);
  await writeFile(join(layoutDir, 'blobs', 'sha256', digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

/** The image config, every key in a fixed order. */
function imageConfig(
  base: { created: string; author?: string | undefined; platform: PlatformSpec & { osVersion?: string } },
  config: ContainerConfig,
  diffId: string,
  history: Record<string, string>,
): Record<string, unknown> {
  return {
    created: base.created,
    ...(base.author ? { author: base.author } : {}),
    architecture: base.platform.architecture,
    ...(base.platform.variant ? { variant: base.platform.variant } : {}),
    os: base.platform.os,
    ...(base.platform.osVersion ? { 'os.version': base.platform.osVersion } : {}),
    config,
    rootfs: { type: 'layers', diff_ids: [diffId] },
    history: [history],
  };
}

export interface BuiltImage {
  digest: string;
  mediaType: string;
  configDigest: string;
  layer: BuiltLayer;
  platform: string;
}

/** Writes layer, config, manifest and index.json (naming the image `name`) into an empty layout directory. */
async function buildLayout(
  layoutDir: string,
  tarStream: AsyncIterable<Buffer>,
  format: ManifestFormat,
  makeConfig: (diffId: string) => Record<string, unknown>,
): Promise<BuiltImage> {
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(layoutDir, 'oci-layout'), OCI_LAYOUT_FILE);
  const layer = await writeLayer(tarStream, layoutDir);
  const configJson = makeConfig(layer.diffId);
  const config = await putJson(layoutDir, configJson);
  const docker = format === 'docker';
  const mediaType = docker ? MediaType.DockerManifest : MediaType.OciManifest;
  const manifest = await putJson(layoutDir, {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: docker ? MediaType.DockerConfig : MediaType.OciConfig, ...config },
    layers: [
      {
        mediaType: docker ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip,
        digest: layer.digest,
        size: layer.size,
      },
    ],
  });
  await writeFile(
    join(layoutDir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [{ mediaType, ...manifest, annotations: { [REF_NAME_ANNOTATION]: 'image' } }],
    }),
  );
  const p = configJson as { os: string; architecture: string; variant?: string };
  return {
    digest: manifest.digest,
    mediaType,
    configDigest: config.digest,
    layer,
    platform: formatPlatform(p),
  };
}

/**
 * Checks a destination before any work: a registry reference must name its registry (a short name
 * would silently mean Docker Hub) and be allowed by registries.conf.
 */
async function checkDestination(ctx: Context, dest: string, how: string): Promise<void> {
  const t = parseDestination(dest);
  if (t.kind !== 'registry') return;
  if (t.ref.shortName) {
    throw new StowageError('INVALID_REFERENCE', `"${dest}" names no registry; ${how}`);
  }
  await ctx.client(t.ref);
}

/** A work directory beside the destination (so large layers stay on its disk), or in tmp for registries. */
async function workDirFor(dest: string): Promise<string> {
  const t = parseDestination(dest);
  if (t.kind === 'registry') return scratchDir(tmpdir(), '.stowage-image-');
  await checkOutput(t.path, t.format === 'oci-archive' || t.format === 'docker-archive');
  return scratchDir(dirname(resolve(t.path)), '.stowage-image-');
}

/**
 * Sends a built layout to `dest` (an archive or layout, TRANSPORT:PATH[:NAME], or a registry) and
 * says what was made. `name` is what an archive records when DEST names nothing itself; the result's
 * name is `name`, else where the image went.
 */
async function deliver(
  ctx: Context,
  layoutDir: string,
  dest: string,
  name: string | undefined,
  built: BuiltImage,
  stats: RootfsStats,
  opts: { signal?: AbortSignal | undefined; onProgress?: ProgressListener | undefined },
): Promise<ImportResult> {
  opts.signal?.throwIfAborted();
  // The built layout is copied like any source: to a registry as a push, to an archive as a pull.
  const outcome = await copyImage(ctx, ctx, `oci:${layoutDir}:image`, dest, {
    defaultName: name,
    nameAsGiven: false,
    signal: opts.signal,
    onProgress: opts.onProgress,
  });
  let destination: string;
  let sha256: string | undefined;
  if (outcome.kind === 'registry') {
    destination = outcome.result.images[0]!.destinations.join(', ');
  } else {
    const r = outcome.result;
    const d = parseDestination(dest);
    const recorded = (d.kind === 'archive' ? d.name : undefined) ?? (r.format === 'dir' ? undefined : name);
    destination = `${r.format}:${r.path}${recorded ? ` (${recorded})` : ''}`;
    sha256 = r.sha256;
  }
  return {
    name: name ?? destination,
    destination,
    digest: built.digest,
    mediaType: built.mediaType,
    config: built.configDigest,
    layer: built.layer,
    platform: built.platform,
    sha256,
    ...stats,
  };
}

/** Normalises NAME[:TAG] to a full reference (docker.io/library/NAME:latest for a bare name). */
export function imageName(name: string): string {
  return formatReference(withDefaultTag(parseReference(name)));
}

export interface ImportOptions {
  /** Dockerfile instructions applied to the config (CMD, ENV, ...). */
  changes?: string[] | undefined;
  message?: string | undefined;
  /** RFC 3339 creation time (default: SOURCE_DATE_EPOCH, else 1970-01-01T00:00:00Z). */
  created?: string | undefined;
  platform?: PlatformSpec | undefined;
  manifestFormat?: ManifestFormat | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

export interface ImportResult extends RootfsStats {
  /** The image's name (as recorded in an archive or pushed). */
  name: string;
  destination: string;
  digest: string;
  mediaType: string;
  config: string;
  layer: { digest: string; size: number; diffId: string; tarBytes: number };
  platform: string;
  sha256?: string | undefined;
}

/** The creation time: --created, SOURCE_DATE_EPOCH, or the epoch; always RFC 3339 in UTC. */
export function creationTime(created: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (created !== undefined) {
    const t = /^\d+$/.test(created) ? new Date(Number(created) * 1000) : new Date(created);
    if (Number.isNaN(t.getTime()))
      throw new StowageError(
        'INVALID_ARGUMENT',
        `--created "${created}" is not a time; give RFC 3339 (2024-05-01T12:00:00Z) or seconds since the epoch`,
      );
    return t.toISOString().replace(/\.000Z$/, 'Z');
  }
  const epoch = env.SOURCE_DATE_EPOCH;
  if (epoch && /^\d+$/.test(epoch))
    return new Date(Number(epoch) * 1000).toISOString().replace(/\.000Z$/, 'Z');
  return '1970-01-01T00:00:00Z';
}

/**
 * Imports a rootfs tarball (a path, or "-" for standard input) as a one-layer image named `name`, to
 * `dest` (TRANSPORT:PATH for an archive or layout; a registry reference to push).
 */
export async function importRootfs(
  ctx: Context,
  tarball: string,
  name: string,
  dest: string,
  opts: ImportOptions = {},
): Promise<ImportResult> {
  const config = parseChanges(opts.changes ?? [], {});
  const created = creationTime(opts.created);
  const fullName = imageName(name);
  await checkDestination(
    ctx,
    dest,
    'to push, give a registry reference (registry.internal.test:5000/team/tool:1.0); to write an archive, give -o PATH',
  );
  let input: AsyncIterable<Uint8Array>;
  if (tarball === '-') input = process.stdin;
  else {
    const s = await stat(tarball).catch(() => undefined);
    if (!s?.isFile())
      throw new StowageError(
        'NOT_FOUND',
        `${tarball} is not a file; give a root filesystem tarball (or - for stdin)`,
      );
    input = createReadStream(tarball);
  }
  const work = await workDirFor(dest);
  const stats: RootfsStats = { entries: 0, contentBytes: 0, layerEntries: 0 };
  try {
    const platform = opts.platform ?? hostPlatform();
    const built = await buildLayout(
      work,
      rootfsFromTarball(input, tarball === '-' ? 'standard input' : tarball, stats),
      opts.manifestFormat ?? 'oci',
      (diffId) =>
        imageConfig({ created, platform }, config, diffId, {
          created,
          created_by: 'stowage import',
          ...(opts.message ? { comment: opts.message } : {}),
        }),
    );
    return await deliver(ctx, work, dest, fullName, built, stats, opts);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface FlattenOptions extends Omit<ImportOptions, 'created' | 'platform'> {
  /** RFC 3339 creation time (default: the source image's). */
  created?: string | undefined;
  platform?: PlatformSpec | undefined;
}

export interface FlattenResult extends ImportResult {
  source: string;
  sourceDigest: string;
  sourceLayers: number;
}

/** The container config of a source image, as a plain object (keys as the source has them). */
function sourceContainerConfig(c: ImageConfig): ContainerConfig {
  return { ...(c.config ?? {}) } as ContainerConfig;
}

/**
 * Flattens an image: its root filesystem, streamed from the layers as `export` makes it, becomes the
 * single layer of a new image with the source's config (CMD, ENV, ...), written to `dest`.
 */
export async function flattenImage(
  ctx: Context,
  src: string,
  dest: string,
  opts: FlattenOptions = {},
): Promise<FlattenResult> {
  await checkDestination(
    ctx,
    dest,
    'give a registry reference (registry.internal.test:5000/team/app:flat) or an archive (oci-archive:PATH)',
  );
  const image = await resolveImage(ctx, src, opts.platform, opts.signal);
  const work = await workDirFor(dest).catch(async (e) => {
    await image.close();
    throw e;
  });
  const layers = new LayerReader(image, work);
  const stats: RootfsStats = { entries: 0, contentBytes: 0, layerEntries: 0 };
  try {
    const c = image.config;
    const config = parseChanges(opts.changes ?? [], sourceContainerConfig(c));
    const created =
      opts.created !== undefined ? creationTime(opts.created) : (c.created ?? creationTime(undefined));
    const platform = {
      os: c.os ?? 'linux',
      architecture: c.architecture ?? 'amd64',
      variant: c.variant,
      osVersion: (c as { 'os.version'?: string })['os.version'],
    };
    const format: ManifestFormat =
      opts.manifestFormat ?? (image.manifestMediaType === MediaType.DockerManifest ? 'docker' : 'oci');
    const built = await buildLayout(work, rootfsTar(layers, stats, opts.signal), format, (diffId) =>
      imageConfig({ created, author: c.author, platform }, config, diffId, {
        created,
        created_by: 'stowage flatten',
        comment: opts.message ?? `flattened from ${image.manifestDigest} (${plural(layers.count, 'layer')})`,
      }),
    );
    await layers.close();
    const made = await deliver(ctx, work, dest, image.names[0], built, stats, opts);
    return {
      source: image.reference,
      sourceDigest: image.manifestDigest,
      sourceLayers: layers.count,
      ...made,
      name: made.destination,
    };
  } finally {
    await layers.close();
    await image.close();
    await rm(work, { recursive: true, force: true });
  }
}
