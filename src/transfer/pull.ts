/**
 * The copy engine's archive side: one or more images, from registries or from archives, into one
 * archive or layout in any format. `stowage pull` and `stowage copy` are thin wrappers around it.
 */
import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { type DockerArchiveImage, readSmallBlob, writeDockerArchive } from '../archive/docker-archive.js';
import { writeDirLayout, writeOciLayout } from '../archive/layout-writer.js';
import {
  type ArchiveImage,
  CONTAINERD_NAME_ANNOTATION,
  REF_NAME_ANNOTATION,
  writeOciArchive,
} from '../archive/oci-archive.js';
import type { ProgressListener } from '../core/progress.js';
import { StowageError } from '../errors.js';
import { hostPlatform, type PlatformSpec } from '../image/platform.js';
import { type Descriptor, imageConfigSchema } from '../image/schemas.js';
import {
  formatReference,
  type ImageReference,
  parseReference,
  withDefaultTag,
} from '../reference/reference.js';
import { archiveFormat, parseTransportReference } from '../reference/transport.js';
import { type ArchiveFormat, ArchiveSource } from './archive-source.js';
import type { Context } from './context.js';
import { type ImagePlan, parseManifest, planImage, planPlatforms } from './plan.js';
import { RegistrySource } from './registry-source.js';
import type { ImageSource } from './source.js';

export interface PullOptions {
  /** Destination path. */
  output: string;
  /** Destination format (default oci-archive). */
  format?: ArchiveFormat | undefined;
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

/** The names an OCI archive records for a reference: tag as ref.name, the full name for containerd/podman. */
export function archiveAnnotations(ref: ImageReference): Record<string, string> {
  const annotations: Record<string, string> = {};
  if (ref.tag) {
    annotations[REF_NAME_ANNOTATION] = ref.tag;
    annotations[CONTAINERD_NAME_ANNOTATION] = formatReference({ ...ref, digest: undefined });
  } else {
    annotations[CONTAINERD_NAME_ANNOTATION] = formatReference(ref);
  }
  return annotations;
}

interface Planned {
  plan: ImagePlan;
  source: ImageSource;
  image: PulledImage;
  /** Full "registry/repo:tag" names, for docker-archive RepoTags and OCI annotations. */
  repoTags: string[];
  annotations: Record<string, string>;
}

/** Copies images (registry or archive references) into one archive or layout. */
export async function pull(ctx: Context, inputs: string[], opts: PullOptions): Promise<PullResult> {
  const format = opts.format ?? 'oci-archive';
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
  const platforms = opts.platforms?.length ? opts.platforms : [hostPlatform()];
  if (platforms.length > 1 && format === 'docker-archive') {
    throw new StowageError(
      'INVALID_ARGUMENT',
      'a docker-archive holds one platform per image; give one --platform',
    );
  }
  const planned: Planned[] = [];
  const sources: ImageSource[] = [];
  try {
    for (const input of inputs) {
      const t = parseTransportReference(input);
      const planWith = async (source: ImageSource, reference: string) =>
        opts.all
          ? {
              plan: await planImage(source, reference, {
                all: true,
                platform: platforms[0]!,
                signal: opts.signal,
              }),
              newIndex: false,
            }
          : platforms.length > 1
            ? await planPlatforms(source, reference, platforms, opts.signal)
            : {
                plan: await planImage(source, reference, { platform: platforms[0]!, signal: opts.signal }),
                newIndex: false,
              };
      if (t.transport === 'docker') {
        const parsed = withDefaultTag(t.ref);
        const p = await ctx.withCandidates(parsed, (ref) =>
          ctx.pullFrom(ref, async (client, endpoint) => {
            const source = new RegistrySource(client, endpoint.path);
            const { plan, newIndex } = await planWith(source, ref.digest ?? ref.tag!);
            const full = formatReference({ ...ref, digest: undefined });
            return {
              plan,
              source,
              repoTags: ref.tag ? [full] : [],
              annotations: archiveAnnotations(ref),
              image: {
                reference: formatReference(ref),
                source: `${endpoint.host}/${endpoint.path}`,
                digest: plan.root.descriptor.digest,
                mediaType: plan.root.descriptor.mediaType,
                platforms: plan.platforms,
                newIndex,
                names: ref.tag ? [full] : [],
              },
            };
          }),
        );
        planned.push(p);
      } else {
        const source = await ArchiveSource.open(t.path, archiveFormat(t));
        sources.push(source);
        const listed = source.select('name' in t ? t.name : undefined);
        const { plan, newIndex } = await planWith(source, listed.descriptor.digest);
        const full = listed.names.find((n) => n.includes('/') || n.includes(':')) ?? listed.names[0];
        const annotations: Record<string, string> = {};
        let repoTags: string[] = [];
        if (full) {
          try {
            const ref = withDefaultTag(parseReference(full));
            Object.assign(annotations, archiveAnnotations(ref));
            repoTags = [formatReference({ ...ref, digest: undefined })];
          } catch {
            annotations[REF_NAME_ANNOTATION] = full;
          }
        }
        planned.push({
          plan,
          source,
          repoTags,
          annotations,
          image: {
            reference: input,
            source: source.description,
            digest: plan.root.descriptor.digest,
            mediaType: plan.root.descriptor.mediaType,
            platforms: plan.platforms,
            newIndex,
            names: repoTags,
          },
        });
      }
    }

    if (opts.name !== undefined) {
      if (planned.length !== 1)
        throw new StowageError('INVALID_ARGUMENT', 'a destination name applies to one image only');
      const p = planned[0]!;
      if (opts.name.includes('/')) {
        const ref = withDefaultTag(parseReference(opts.name));
        // ref.name is the NAME exactly as given, as skopeo records it (so `skopeo inspect
        // oci-archive:FILE:NAME` finds it); the full reference goes in containerd's annotation.
        p.annotations = archiveAnnotations(ref);
        if (opts.nameAsGiven) p.annotations[REF_NAME_ANNOTATION] = opts.name;
        p.repoTags = [formatReference({ ...ref, digest: undefined })];
      } else {
        p.annotations = { [REF_NAME_ANNOTATION]: opts.name };
        p.repoTags = [];
      }
      p.image.names = p.repoTags;
    }

    // Merge: documents and blobs unique by digest, each fetched from the first source that has it.
    const documents = new Map<string, Buffer>();
    const blobs = new Map<string, Descriptor>();
    const from = new Map<string, ImageSource>();
    for (const p of planned) {
      for (const d of p.plan.documents) documents.set(d.descriptor.digest, d.bytes);
      for (const b of p.plan.blobs) {
        if (!blobs.has(b.digest)) {
          blobs.set(b.digest, b);
          from.set(b.digest, p.source);
        }
      }
    }
    const fetch = (d: Descriptor, signal: AbortSignal) => from.get(d.digest)!.getBlob(d, signal);
    const tail = async (d: Descriptor, length: number, signal: AbortSignal) =>
      from.get(d.digest)!.getBlobTail?.(d, length, signal);
    const writeOpts = {
      fetch,
      tail,
      concurrency: opts.concurrency ?? 4,
      signal: opts.signal,
      onProgress: opts.onProgress,
    };
    const images: ArchiveImage[] = planned.map((p) => ({
      descriptor: p.plan.root.descriptor,
      annotations: p.annotations,
    }));
    const sortedBlobs = [...blobs.values()].sort((a, b) =>
      a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0,
    );
    const content = { images, documents, blobs: sortedBlobs };
    let sha256: string | undefined;
    let size: number | undefined;
    if (opts.dryRun) {
      // Nothing written: the summary below says what would have been.
    } else if (format === 'oci-archive') {
      ({ sha256, size } = await writeOciArchive(opts.output, content, writeOpts));
    } else if (format === 'oci') {
      await writeOciLayout(opts.output, content, writeOpts);
    } else if (format === 'dir') {
      await writeDirLayout(opts.output, content, writeOpts);
    } else {
      const dockerImages: DockerArchiveImage[] = [];
      const controller = new AbortController();
      for (const p of planned) {
        const manifest = parseManifest(p.plan.root.bytes, `manifest ${p.plan.root.descriptor.digest}`);
        const bytes = await readSmallBlob(fetch, manifest.config, opts.signal ?? controller.signal);
        const parsed = imageConfigSchema.safeParse(JSON.parse(bytes.toString('utf8')));
        if (!parsed.success) {
          throw new StowageError(
            'INVALID_MANIFEST',
            `config ${manifest.config.digest} is not a valid image config`,
          );
        }
        dockerImages.push({
          manifest,
          config: { descriptor: manifest.config, bytes, parsed: parsed.data },
          repoTags: p.repoTags,
        });
      }
      ({ sha256, size } = await writeDockerArchive(opts.output, dockerImages, writeOpts));
    }
    const first = planned[0]!.image;
    return {
      reference: first.reference,
      source: first.source,
      digest: first.digest,
      mediaType: first.mediaType,
      platforms: first.platforms,
      images: planned.map((p) => p.image),
      format,
      path: opts.output,
      sha256,
      size,
      blobs: sortedBlobs.length + documents.size,
      contentBytes:
        sortedBlobs.reduce((n, b) => n + b.size, 0) +
        [...documents.values()].reduce((n, d) => n + d.length, 0),
      ...(opts.dryRun ? { dryRun: true } : {}),
    };
  } finally {
    for (const s of sources) await s.close();
  }
}
