/**
 * Archives and layouts as image sources: oci-archive and OCI layout directories (ours, skopeo's,
 * podman's, docker 25+'s), docker-archive (docker save before v25, podman save, skopeo) and skopeo's
 * dir: layout. Nothing is extracted: documents are read into memory (4 MiB limit), blobs are streamed
 * from their place in the archive, and every byte is digest-checked by the writer that consumes it.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { DirAccess, type FileAccess, TarAccess } from '../../archive/access.js';
import { sniffCompression } from '../../archive/decompress.js';
import type { ArchiveFormat } from '../../archive/formats.js';
import { hashFileRange } from '../../archive/hasher.js';
import { CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION } from '../../archive/oci-archive.js';
import type { ImageSource, ReferrerEntry } from '../../engine/source.js';
import { StowageError } from '../../errors.js';
import { isCosignTag, isCosignTagOf } from '../../image/cosign.js';
import {
  DigestVerifier,
  digestAlgorithm,
  digestHex,
  digestMismatch,
  sha256Digest,
} from '../../image/digest.js';
import { MAX_MANIFEST_BYTES, MediaType } from '../../image/mediatypes.js';
import { formatPlatform } from '../../image/platform.js';
import { type Descriptor, imageConfigSchema, imageIndexSchema } from '../../image/schemas.js';
import { isDigest } from '../../reference/reference.js';
import type { ManifestResponse } from '../../registry/client.js';

/** Blobs at least this large are checked in place by a worker thread (checkBlob). */
const IN_PLACE_CHECK_MIN = 4 << 20;

export { ARCHIVE_FORMATS, type ArchiveFormat } from '../../archive/formats.js';

/** One image (or index) an archive holds, with the names it records for it. */
export interface ListedImage {
  names: string[];
  descriptor: Descriptor;
  platform?: string | undefined;
}

function jsonOf(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new StowageError('INVALID_ARCHIVE', `${what} is not valid JSON`);
  }
}

/** The media type a manifest document declares, or the one its shape implies (OCI allows omitting it). */
export function documentMediaType(bytes: Buffer, what: string): string {
  const doc = jsonOf(bytes, what) as { mediaType?: unknown; manifests?: unknown; config?: unknown };
  if (typeof doc?.mediaType === 'string') return doc.mediaType;
  if (Array.isArray(doc?.manifests)) return MediaType.OciIndex;
  if (doc?.config) return MediaType.OciManifest;
  throw new StowageError('INVALID_ARCHIVE', `${what} is neither an image manifest nor an index`);
}

async function firstBytes(access: FileAccess, name: string, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  for await (const c of await access.stream(name)) {
    parts.push(Buffer.from(c));
    got += c.byteLength;
    if (got >= n) break;
  }
  return Buffer.concat(parts).subarray(0, n);
}

export class ArchiveSource implements ImageSource {
  readonly description: string;

  private constructor(
    readonly format: ArchiveFormat,
    readonly access: FileAccess,
    readonly images: ListedImage[],
    /** Documents made or read while opening, by digest. */
    private readonly documents: Map<string, Buffer>,
    /** Where a blob (or manifest) lives, by digest. */
    private readonly locate: (digest: string) => string | undefined,
    /** Extra facts for display: e.g. "docker 25+". */
    readonly variant?: string,
    /** What index.json lists beside the images: signatures, attestations, SBOMs. */
    readonly attachments: Descriptor[] = [],
  ) {
    this.description = `${format}:${access.path}`;
  }

  /**
   * Whether the manifests are stowage's own, made up from a docker-archive's manifest.json (docker save
   * before v25, podman, skopeo): their digests are not the original image's.
   */
  get synthesizedManifests(): boolean {
    return this.format === 'docker-archive' && this.variant === undefined;
  }

  /** Opens an archive or layout, detecting its format (or checking the one given). */
  static async open(path: string, expected?: ArchiveFormat): Promise<ArchiveSource> {
    const st = await stat(path).catch(() => undefined);
    if (!st) throw new StowageError('NOT_FOUND', `${path} does not exist`);
    let source: ArchiveSource;
    if (st.isDirectory()) {
      const access = new DirAccess(path);
      if ((await access.size('oci-layout')) !== undefined)
        source = await ArchiveSource.openOci(access, 'oci');
      else if (
        (await access.size('manifest.json')) !== undefined &&
        (await access.size('version')) !== undefined
      )
        source = await ArchiveSource.openDir(access);
      else
        throw new StowageError(
          'INVALID_ARCHIVE',
          `${path} is a directory but neither an OCI layout (no oci-layout file) nor a dir: layout (no version file)`,
        );
    } else {
      const access = await TarAccess.open(path);
      const names = new Set(await access.names());
      const oci = names.has('oci-layout') && names.has('index.json');
      const docker = names.has('manifest.json');
      // docker save 25+ writes both: an OCI layout, and manifest.json beside it. Read as asked
      // (oci-archive: the layout, as skopeo does), else as a docker-archive through its index.
      if (oci && expected === 'oci-archive') source = await ArchiveSource.openOci(access, 'oci-archive');
      else if (docker && !oci) source = await ArchiveSource.openDocker(access);
      else if (oci) source = await ArchiveSource.openOci(access, docker ? 'docker-archive' : 'oci-archive');
      else
        throw new StowageError(
          'INVALID_ARCHIVE',
          `${path} is a tar archive but holds neither manifest.json (docker-archive) nor oci-layout and index.json (oci-archive)`,
        );
    }
    if (expected && expected !== source.format) {
      throw new StowageError(
        'INVALID_ARCHIVE',
        `${path} is ${source.format === 'oci' ? 'an OCI layout' : `a ${source.format}`}, not ${expected}; use ${source.format}:${path}`,
      );
    }
    return source;
  }

  private static async openOci(access: FileAccess, format: ArchiveFormat): Promise<ArchiveSource> {
    const layout = jsonOf(
      await access.read('oci-layout', 4096, 'oci-layout'),
      `${access.path}: oci-layout`,
    ) as {
      imageLayoutVersion?: unknown;
    };
    if (typeof layout?.imageLayoutVersion !== 'string') {
      throw new StowageError('INVALID_ARCHIVE', `${access.path}: oci-layout has no imageLayoutVersion`);
    }
    const indexBytes = await access.read('index.json', MAX_MANIFEST_BYTES, 'index.json');
    const index = jsonOf(indexBytes, `${access.path}: index.json`) as { manifests?: unknown } | null;
    // docker save 25+ of an image by its id (no name) writes "manifests": null: no image is listed in
    // the layout, but manifest.json still lists it.
    const unlisted = index !== null && typeof index === 'object' && index.manifests === null;
    if (unlisted && format === 'docker-archive') return ArchiveSource.openDocker(access);
    const parsed = imageIndexSchema.safeParse(unlisted ? { ...index, manifests: [] } : index);
    if (!parsed.success) {
      throw new StowageError('INVALID_ARCHIVE', `${access.path}: index.json is not a valid OCI index`);
    }
    if (unlisted && (await access.size('manifest.json')) !== undefined) {
      throw new StowageError(
        'INVALID_ARCHIVE',
        `${access.path}: index.json lists no image (docker save of an image by its id writes none); read it as docker-archive:${access.path}`,
      );
    }
    // Attachments (signatures, SBOMs) are listed beside the images: they say their artifactType, or
    // carry one of cosign's tags as their name. They are not images of the archive.
    const isAttachment = (d: Descriptor) =>
      d.artifactType !== undefined ||
      isCosignTag((d.annotations as Record<string, string> | undefined)?.[REF_NAME_ANNOTATION] ?? '');
    const attachments = parsed.data.manifests.filter(isAttachment);
    const images: ListedImage[] = parsed.data.manifests
      .filter((d) => !isAttachment(d))
      .map((d) => {
        const a = (d.annotations ?? {}) as Record<string, string>;
        const names = [a[CONTAINERD_NAME_ANNOTATION], a[REF_NAME_ANNOTATION]].filter(
          (n, i, all): n is string => typeof n === 'string' && n !== '' && all.indexOf(n) === i,
        );
        return { names, descriptor: d, platform: d.platform ? formatPlatform(d.platform) : undefined };
      });
    const variant = format === 'docker-archive' ? 'docker save 25+ (OCI layout inside)' : undefined;
    return new ArchiveSource(
      format,
      access,
      images,
      new Map(),
      (digest) => `blobs/${digestAlgorithm(digest)}/${digestHex(digest)}`,
      variant,
      attachments,
    );
  }

  private static async openDir(access: FileAccess): Promise<ArchiveSource> {
    const top = await access.read('manifest.json', MAX_MANIFEST_BYTES, 'manifest.json');
    const digest = sha256Digest(top);
    const mediaType = documentMediaType(top, `${access.path}: manifest.json`);
    const documents = new Map([[digest, top]]);
    return new ArchiveSource(
      'dir',
      access,
      [{ names: [], descriptor: { mediaType, digest, size: top.length } }],
      documents,
      (d) => digestHex(d),
    );
  }

  private static async openDocker(access: FileAccess): Promise<ArchiveSource> {
    const raw = jsonOf(
      await access.read('manifest.json', MAX_MANIFEST_BYTES, 'manifest.json'),
      `${access.path}: manifest.json`,
    );
    if (!Array.isArray(raw) || raw.length === 0) {
      throw new StowageError('INVALID_ARCHIVE', `${access.path}: manifest.json lists no images`);
    }
    const documents = new Map<string, Buffer>();
    const paths = new Map<string, string>();
    const images: ListedImage[] = [];
    for (const [i, item] of (raw as Record<string, unknown>[]).entries()) {
      const what = `${access.path}: manifest.json entry ${i}`;
      if (typeof item?.Config !== 'string' || !Array.isArray(item.Layers)) {
        throw new StowageError('INVALID_ARCHIVE', `${what} has no Config or Layers`);
      }
      const configBytes = await access.read(item.Config, MAX_MANIFEST_BYTES, `config ${item.Config}`);
      const configDigest = sha256Digest(configBytes);
      const config = imageConfigSchema.safeParse(jsonOf(configBytes, `${access.path}: ${item.Config}`));
      if (!config.success)
        throw new StowageError('INVALID_ARCHIVE', `${what}: ${item.Config} is not an image config`);
      const diffIds = config.data.rootfs?.diff_ids ?? [];
      const layerPaths = item.Layers as unknown[];
      if (diffIds.length !== layerPaths.length) {
        throw new StowageError(
          'INVALID_ARCHIVE',
          `${what} lists ${layerPaths.length} layers, its config ${diffIds.length} diff_ids`,
        );
      }
      paths.set(configDigest, item.Config);
      const layers: Descriptor[] = [];
      let oci = false;
      for (const [j, p] of layerPaths.entries()) {
        if (typeof p !== 'string')
          throw new StowageError('INVALID_ARCHIVE', `${what}: layer ${j} is not a path`);
        const size = await access.size(p);
        if (size === undefined) throw new StowageError('INVALID_ARCHIVE', `${what}: layer ${p} is missing`);
        const compression = sniffCompression(await firstBytes(access, p, 4));
        let digest = diffIds[j]!;
        let mediaType = 'application/vnd.docker.image.rootfs.diff.tar';
        if (compression !== 'none') {
          // A compressed layer.tar: its digest is not recorded anywhere, so hash it once.
          const h = createHash('sha256');
          for await (const c of await access.stream(p)) h.update(c);
          digest = `sha256:${h.digest('hex')}`;
          mediaType = compression === 'gzip' ? MediaType.DockerLayerGzip : MediaType.OciLayerZstd;
          if (compression === 'zstd') oci = true;
        }
        paths.set(digest, p);
        layers.push({ mediaType, digest, size });
      }
      if (oci) {
        for (const l of layers) {
          if (l.mediaType === MediaType.DockerLayerGzip) l.mediaType = MediaType.OciLayerGzip;
          else if (l.mediaType === 'application/vnd.docker.image.rootfs.diff.tar')
            l.mediaType = MediaType.OciLayerTar;
        }
      }
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: oci ? MediaType.OciManifest : MediaType.DockerManifest,
          config: {
            mediaType: oci ? MediaType.OciConfig : MediaType.DockerConfig,
            size: configBytes.length,
            digest: configDigest,
          },
          layers,
        }),
      );
      const manifestDigest = sha256Digest(manifest);
      documents.set(manifestDigest, manifest);
      const names = Array.isArray(item.RepoTags)
        ? item.RepoTags.filter((t): t is string => typeof t === 'string')
        : [];
      images.push({
        names,
        descriptor: {
          mediaType: oci ? MediaType.OciManifest : MediaType.DockerManifest,
          digest: manifestDigest,
          size: manifest.length,
        },
        platform: formatPlatform({
          os: String(config.data.os ?? ''),
          architecture: String(config.data.architecture ?? ''),
          ...(config.data.variant ? { variant: String(config.data.variant) } : {}),
        }),
      });
    }
    return new ArchiveSource('docker-archive', access, images, documents, (d) => paths.get(d));
  }

  /**
   * The image `name` names: a recorded name (full reference or tag), an index ("@0"), a digest, or,
   * when the archive holds exactly one image, nothing at all.
   */
  select(name?: string): ListedImage {
    if (!name) {
      if (this.images.length === 1) return this.images[0]!;
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${this.access.path} holds ${this.images.length} images; name one (${this.describeChoices()})`,
      );
    }
    if (/^@\d+$/.test(name)) {
      const img = this.images[Number(name.slice(1))];
      if (img) return img;
    }
    if (isDigest(name)) {
      const img = this.images.find((i) => i.descriptor.digest === name);
      if (img) return img;
    }
    const matches = this.images.filter((i) =>
      i.names.some((n) => n === name || n.endsWith(`/${name}`) || n === `docker.io/library/${name}`),
    );
    if (matches.length === 1) return matches[0]!;
    throw new StowageError(
      'NOT_FOUND',
      `${this.access.path} holds no image named "${name}"${matches.length > 1 ? ' (ambiguous)' : ''}; it has ${this.describeChoices()}`,
    );
  }

  private describeChoices(): string {
    return this.images
      .map((img, i) => `@${i}${img.names.length ? ` ${img.names.join(', ')}` : ''}`)
      .join('; ');
  }

  /** Whether the archive holds a manifest or blob with this digest (without reading it). */
  async has(digest: string, kind: 'manifest' | 'blob' = 'blob'): Promise<boolean> {
    if (this.documents.has(digest)) return true;
    const path =
      this.format === 'dir' && kind === 'manifest'
        ? `${digestHex(digest)}.manifest.json`
        : this.locate(digest);
    return path !== undefined && (await this.access.size(path)) !== undefined;
  }

  async getManifest(reference: string): Promise<ManifestResponse> {
    const digest = isDigest(reference) ? reference : this.select(reference).descriptor.digest;
    let bytes = this.documents.get(digest);
    if (!bytes) {
      const path = this.format === 'dir' ? `${digestHex(digest)}.manifest.json` : this.locate(digest);
      if (!path)
        throw new StowageError('INVALID_ARCHIVE', `${this.access.path}: manifest ${digest} is missing`);
      bytes = await this.access.read(path, MAX_MANIFEST_BYTES, `manifest ${digest}`);
      const v = new DigestVerifier(
        digest,
        undefined,
        `${this.access.path}: manifest ${digest}`,
        'the archive is damaged',
      );
      v.update(bytes);
      v.finish();
    }
    const listed = this.images.find((i) => i.descriptor.digest === digest);
    const mediaType = listed?.descriptor.mediaType ?? documentMediaType(bytes, `manifest ${digest}`);
    return { bytes, mediaType, digest };
  }

  async getBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const path = this.locate(descriptor.digest);
    if (!path || (await this.access.size(path)) === undefined) {
      throw new StowageError(
        'INVALID_ARCHIVE',
        `${this.access.path}: blob ${descriptor.digest} is named by a manifest but missing from the archive`,
      );
    }
    return this.access.stream(path, signal);
  }

  async checkBlob(d: Descriptor, signal?: AbortSignal): Promise<boolean> {
    // Small blobs are as cheap to read here as to hand to a worker.
    if (d.size < IN_PLACE_CHECK_MIN || digestAlgorithm(d.digest) !== 'sha256') return false;
    const path = this.locate(d.digest);
    const where = path ? await this.access.extent(path) : undefined;
    if (!where) return false;
    const what = `${this.access.path}: blob ${d.digest}`;
    if (where.length !== d.size) {
      throw new StowageError(
        'DIGEST_MISMATCH',
        `${what}: it holds ${where.length} bytes, the descriptor declares ${d.size} (the archive is damaged)`,
      );
    }
    const actual = `sha256:${await hashFileRange(where.file, where.start, where.length, signal)}`;
    if (actual !== d.digest) throw digestMismatch(what, actual, d.digest, 'the archive is damaged');
    return true;
  }

  async getBlobTail(descriptor: Descriptor, length: number): Promise<Buffer | undefined> {
    const path = this.locate(descriptor.digest);
    return path ? this.access.tail(path, length) : undefined;
  }

  /** The subject of each OCI attachment, read once. */
  private subjects: Promise<Map<string, string | undefined>> | undefined;

  /** What the archive holds attached to a manifest: OCI referrers by their subject, cosign's by tag. */
  async referrers(digest: string): Promise<ReferrerEntry[]> {
    if (this.attachments.length === 0) return [];
    this.subjects ??= (async () => {
      const m = new Map<string, string | undefined>();
      for (const d of this.attachments) {
        const doc = jsonOf((await this.getManifest(d.digest)).bytes, `attachment ${d.digest}`) as {
          subject?: { digest?: string };
        };
        m.set(d.digest, doc.subject?.digest);
      }
      return m;
    })();
    const subjects = await this.subjects;
    const out: ReferrerEntry[] = [];
    for (const d of this.attachments) {
      const tag = (d.annotations as Record<string, string> | undefined)?.[REF_NAME_ANNOTATION];
      const { annotations: _, ...descriptor } = d;
      if (tag && isCosignTag(tag)) {
        if (isCosignTagOf(tag, digest)) out.push({ descriptor, tag });
      } else if (subjects.get(d.digest) === digest) {
        out.push({ descriptor });
      }
    }
    return out;
  }

  async close(): Promise<void> {}
}
