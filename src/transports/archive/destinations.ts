/**
 * The archive formats as destinations: oci-archive and docker-archive files (each written by its format
 * writer, which lays the tarball out and fills it from the blob provider), and the OCI and dir: layouts
 * (filled by the engine's blob loop, a blob a file).
 */
import { writeDockerArchive } from '../../archive/docker-archive.js';
import type { DockerArchiveImage } from '../../archive/docker-metadata.js';
import type { ArchiveFormat } from '../../archive/formats.js';
import { LayoutWriter } from '../../archive/layout-writer.js';
import {
  type ArchiveImage,
  type PreparedArchive,
  REF_NAME_ANNOTATION,
  type WriteOptions,
  writeOciArchive,
} from '../../archive/oci-archive.js';
import { copyBlobs } from '../../engine/blobs.js';
import type {
  BlobOutcome,
  BlobProvider,
  BlobSink,
  DestinationNeeds,
  ImageDestination,
  ImageSet,
  WriteSettings,
} from '../../engine/destination.js';
import type { DigestCache } from '../../engine/digest-cache.js';
import { StowageError } from '../../errors.js';
import { parseConfig, parseManifest } from '../../image/documents.js';
import type { Descriptor } from '../../image/schemas.js';

/**
 * The index.json entries of a set: its images, then what is attached to them (signatures, SBOMs), in
 * digest order so the archive stays reproducible. An attachment found under one of cosign's tags keeps
 * the tag as its ref.name (oras and regclient list referrers in index.json the same way).
 */
export function indexEntries(set: ImageSet): ArchiveImage[] {
  const images = set.images.map((i) => ({ descriptor: i.root.descriptor, annotations: i.names.annotations }));
  const seen = new Set(images.map((i) => i.descriptor.digest));
  const attached: ArchiveImage[] = [];
  for (const r of set.images.flatMap((i) => i.referrers)) {
    if (seen.has(r.document.descriptor.digest)) continue;
    seen.add(r.document.descriptor.digest);
    const { mediaType, digest, size } = r.document.descriptor;
    attached.push({
      descriptor: { mediaType, digest, size, artifactType: r.artifactType },
      annotations: r.tag ? { [REF_NAME_ANNOTATION]: r.tag } : {},
    });
  }
  attached.sort((a, b) => (a.descriptor.digest < b.descriptor.digest ? -1 : 1));
  return [...images, ...attached];
}

/** What writing an archive or layout gave: the file's checksum and size (absent for directories). */
export interface WrittenOutput {
  path: string;
  sha256?: string | undefined;
  size?: number | undefined;
}

const MANY = Number.POSITIVE_INFINITY;

/** How an archive file is written. */
export interface ArchiveFileOptions {
  /** Write PATH.sha256 beside it (default); false skips a full pass over the archive (--no-checksum). */
  checksum?: boolean | undefined;
  /**
   * Remembers which diff_id each compressed layer was checked to decompress to (docker-archive); the
   * copy's own (WriteSettings.digestCache) is used where this is not given.
   */
  digestCache?: DigestCache | undefined;
}

function writerOptions(
  provider: BlobProvider,
  settings: WriteSettings,
  file: ArchiveFileOptions,
): WriteOptions {
  const cache = file.digestCache ?? settings.digestCache;
  return {
    checksum: file.checksum,
    diffIds: cache
      ? { get: (c) => cache.diffIdOf(c), checked: (c, d) => cache.rememberDiffId(c, d) }
      : undefined,
    fetch: (d, s) => provider.open(d, s),
    tail: (d, n, s) => provider.tail(d, n, s),
    concurrency: settings.concurrency,
    signal: settings.signal,
    onProgress: settings.onProgress,
    defer: true,
  };
}

/** A tarball written by a format writer, left aside until commit. */
abstract class ArchiveFileDestination implements ImageDestination<WrittenOutput> {
  abstract readonly needs: DestinationNeeds;
  private prepared: PreparedArchive | undefined;
  constructor(
    readonly path: string,
    private readonly options: ArchiveFileOptions = {},
  ) {}

  get description(): string {
    return this.path;
  }

  protected abstract writeFile(
    set: ImageSet,
    provider: BlobProvider,
    opts: WriteOptions,
  ): Promise<PreparedArchive>;

  async write(set: ImageSet, provider: BlobProvider, settings: WriteSettings): Promise<void> {
    this.prepared = await this.writeFile(set, provider, writerOptions(provider, settings, this.options));
  }

  async commit(): Promise<WrittenOutput> {
    const p = this.prepared;
    if (!p) throw new StowageError('INTERNAL', `nothing was written to ${this.path}`);
    await p.commit();
    return { path: p.path, sha256: p.sha256, size: p.size };
  }

  async abort(): Promise<void> {
    await this.prepared?.abort();
  }
}

export class OciArchiveDestination extends ArchiveFileDestination {
  readonly needs: DestinationNeeds = {
    compressedLayers: false,
    singlePlatform: false,
    maxImages: MANY,
    referrers: true,
  };

  protected writeFile(set: ImageSet, _provider: BlobProvider, opts: WriteOptions): Promise<PreparedArchive> {
    const content = { images: indexEntries(set), documents: set.documents, blobs: set.blobs };
    return writeOciArchive(this.path, content, opts);
  }
}

export class DockerArchiveDestination extends ArchiveFileDestination {
  readonly needs: DestinationNeeds = {
    compressedLayers: false,
    plainLayers: true,
    singlePlatform: true,
    maxImages: MANY,
    referrers: false,
  };

  protected async writeFile(
    set: ImageSet,
    provider: BlobProvider,
    opts: WriteOptions,
  ): Promise<PreparedArchive> {
    const signal = opts.signal ?? new AbortController().signal;
    const images: DockerArchiveImage[] = [];
    for (const image of set.images) {
      const what = `manifest ${image.root.descriptor.digest}`;
      const manifest = parseManifest(image.root.bytes, what);
      const bytes = await provider.readSmall(manifest.config, signal);
      const parsed = parseConfig(bytes, `config ${manifest.config.digest}`);
      images.push({
        manifest,
        config: { descriptor: manifest.config, bytes, parsed },
        repoTags: image.names.repoTags,
      });
    }
    return writeDockerArchive(this.path, images, opts);
  }
}

/** An OCI layout (`oci:`) or skopeo's dir: layout, filled a blob at a time. */
export class LayoutDestination implements ImageDestination<WrittenOutput> {
  readonly needs: DestinationNeeds;
  private writer: LayoutWriter | undefined;
  private set: ImageSet | undefined;

  constructor(
    readonly path: string,
    readonly kind: 'oci' | 'dir',
  ) {
    this.needs = {
      compressedLayers: false,
      singlePlatform: false,
      maxImages: kind === 'dir' ? 1 : MANY,
      // An OCI layout lists attachments in index.json; a dir: layout has nowhere to put them.
      referrers: kind === 'oci',
    };
  }

  get description(): string {
    return this.path;
  }

  async write(set: ImageSet, provider: BlobProvider, settings: WriteSettings): Promise<void> {
    this.set = set;
    const writer = await LayoutWriter.begin(this.path, this.kind);
    this.writer = writer;
    const sink: BlobSink = {
      description: this.path,
      put: async (d: Descriptor, open): Promise<BlobOutcome> => {
        if (await writer.has(d)) return 'existing';
        await writer.putBlob(d, await open());
        return 'written';
      },
    };
    await copyBlobs(sink, set.blobs, provider, { ...settings, retries: 0 });
  }

  async commit(): Promise<WrittenOutput> {
    if (!this.writer || !this.set) throw new StowageError('INTERNAL', `nothing was written to ${this.path}`);
    await this.writer.commit(indexEntries(this.set), this.set.documents);
    return { path: this.path };
  }

  async abort(): Promise<void> {
    await this.writer?.abort();
  }
}

/** The destination for an archive format at a path. */
export function archiveDestination(
  format: ArchiveFormat,
  path: string,
  opts: ArchiveFileOptions = {},
): ImageDestination<WrittenOutput> {
  switch (format) {
    case 'oci-archive':
      return new OciArchiveDestination(path, opts);
    case 'docker-archive':
      return new DockerArchiveDestination(path, opts);
    case 'oci':
    case 'dir':
      return new LayoutDestination(path, format);
  }
}
