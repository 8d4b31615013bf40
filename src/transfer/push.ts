/**
 * Restore and mirror: images from archives (ours, skopeo's, podman's, docker's) or from another
 * registry go into a registry, manifest digests intact wherever the source holds real manifests.
 * `stowage push` and `stowage copy` (registry destinations) are thin wrappers around this.
 *
 * docker-archive (before docker 25) holds no manifest, only configs and uncompressed layers: the layers
 * are gzipped deterministically (the same layer always gives the same bytes, hence the same digest)
 * into temporary files, and a Docker schema 2 manifest is built for them; its digest is new and
 * reported as such.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open as openFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipDeterministic } from '../archive/decompress.js';
import { scratchDir } from '../core/partials.js';
import type { ProgressListener } from '../core/progress.js';
import { StowageError } from '../errors.js';
import { DigestVerifier, sha256Digest } from '../image/digest.js';
import { isIndexMediaType, MediaType } from '../image/mediatypes.js';
import { hostPlatform, type PlatformSpec } from '../image/platform.js';
import type { Descriptor } from '../image/schemas.js';
import {
  formatReference,
  type ImageReference,
  parseReference,
  withDefaultTag,
} from '../reference/reference.js';
import { archiveFormat, parseTransportReference } from '../reference/transport.js';
import { ArchiveSource, type ListedImage } from './archive-source.js';
import type { Context } from './context.js';
import { type ImagePlan, type PlannedDocument, parseManifest, planImage } from './plan.js';
import { RegistrySource } from './registry-source.js';
import type { ImageSource } from './source.js';
import { type BlobOpener, DEFAULT_CHUNK_SIZE, Uploader, type UploadStats } from './upload.js';

export interface PushOptions {
  /** Push only this image of the archive: a name, "@N", or a digest. */
  image?: string | undefined;
  /** Every name the archive records for an image becomes a tag (default: the first). */
  allTags?: boolean | undefined;
  /** Inserted before each image's repository path when DEST is a registry or namespace. */
  prefix?: string | undefined;
  /** Choose one platform of an index instead of pushing it whole. */
  platform?: PlatformSpec | undefined;
  /** Keep a whole index (the default for archives; for registry sources only with this). */
  all?: boolean | undefined;
  concurrency?: number | undefined;
  chunkSize?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  /** Resolve the images and their targets, send nothing (--dry-run). */
  dryRun?: boolean | undefined;
  /**
   * Told, before anything is sent, which images go where: a typo in a destination, or an archive's own
   * names taken as targets, shows before a tag is overwritten.
   */
  onTargets?: ((targets: { source: string; destinations: string[] }[]) => void) | undefined;
}

export interface PushedImage {
  /** Where it came from: the archive and image, or the source reference. */
  source: string;
  /** Every reference written, fully qualified. */
  destinations: string[];
  digest: string;
  mediaType: string;
  /** True when the manifest was made by stowage (docker-archive): its digest is new. */
  newDigest: boolean;
}

/** What an image of an archive is called in results and messages. */
function imageLabel(what: string, img: ListedImage): string {
  return `${what}${img.names.length ? ` (${img.names.join(', ')})` : ''}`;
}

export interface PushResult {
  images: PushedImage[];
  stats: UploadStats;
  /** A plan only (--dry-run): nothing was sent. */
  dryRun?: boolean;
}

const UNCOMPRESSED_LAYER = new Set<string>([
  'application/vnd.docker.image.rootfs.diff.tar',
  MediaType.OciLayerTar,
]);

/** How DEST is to be read: one repository (and tag), or a registry/namespace each image maps under. */
interface Destination {
  ref: ImageReference;
  /** DEST named a registry or namespace: images keep their own repository paths beneath it. */
  mapping: boolean;
}

function parseDestination(dest: string, images: number): Destination {
  const input = dest.startsWith('docker://') ? dest.slice(9) : dest;
  const slash = input.indexOf('/');
  if (slash < 0) {
    // A registry alone: "127.0.0.1:5000" or "registry.internal".
    const ref = parseReference(`${input}/x`);
    if (ref.shortName) {
      throw new StowageError(
        'INVALID_REFERENCE',
        `"${dest}" names no registry; give registry[/namespace] or registry/repository[:tag], e.g. registry.internal:5000/team/app:1.4`,
      );
    }
    return { ref: { ...ref, path: '' }, mapping: true };
  }
  const ref = parseReference(input);
  if (ref.shortName) {
    throw new StowageError(
      'INVALID_REFERENCE',
      `"${dest}" names no registry; push needs a fully qualified destination, e.g. registry.internal:5000/${ref.path}`,
    );
  }
  if (ref.digest) {
    throw new StowageError(
      'INVALID_REFERENCE',
      `"${dest}": a destination takes a tag, not a digest (the digest is the image's own)`,
    );
  }
  if (images > 1 && ref.tag) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${images} images cannot all go to one tag (${dest}); give a registry or namespace, or choose one image with --image`,
    );
  }
  return { ref, mapping: images > 1 };
}

const BARE_TAG = /^[\w][\w.-]{0,127}$/;

/** The references an archive records for an image: full names (with tags) and bare tags. */
function recordedNames(img: ListedImage): { full: ImageReference[]; tags: string[] } {
  const full: ImageReference[] = [];
  const tags: string[] = [];
  for (const n of img.names) {
    if (!n.includes('/') && BARE_TAG.test(n)) {
      tags.push(n);
      continue;
    }
    try {
      const ref = withDefaultTag(parseReference(n));
      full.push(ref);
      if (ref.tag) tags.push(ref.tag);
    } catch {
      // A name that is not a reference (a free-form ref.name): not usable as a destination.
    }
  }
  return { full, tags: [...new Set(tags)] };
}

/** Destination references for one image, grouped by repository. */
function targetsFor(
  img: ListedImage,
  index: number,
  dest: Destination,
  opts: PushOptions,
  what: string,
): ImageReference[] {
  const { full, tags } = recordedNames(img);
  const prefix = opts.prefix ?? '';
  if (!dest.mapping) {
    const chosen = dest.ref.tag ? [dest.ref.tag] : opts.allTags ? tags : tags.slice(0, 1);
    if (chosen.length === 0) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${what} @${index} records no tag; give one in the destination (${formatReference({ ...dest.ref, tag: 'TAG' })})`,
      );
    }
    return chosen.map((tag) => ({ ...dest.ref, tag }));
  }
  if (full.length === 0) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${what} @${index} records no repository name to map under ${formatReference(dest.ref)}; push it alone with --image @${index} and a destination repository:tag`,
    );
  }
  const names = opts.allTags ? full : full.slice(0, 1);
  const out: ImageReference[] = [];
  for (const n of names) {
    const path = [dest.ref.path, `${prefix}${n.path}`].filter(Boolean).join('/');
    out.push({ domain: dest.ref.domain, path, tag: n.tag, shortName: false });
  }
  // Bare tags (an OCI ref.name) go with the first repository.
  if (opts.allTags) {
    for (const t of tags) if (!out.some((o) => o.tag === t)) out.push({ ...out[0]!, tag: t });
  }
  return out;
}

/**
 * A docker-archive's made-up manifest, with its uncompressed layers gzipped into temporary files: the
 * new manifest and a blob opener that serves the compressed layers from there.
 */
async function recompress(
  plan: ImagePlan,
  source: ImageSource,
  concurrency: number,
  signal: AbortSignal | undefined,
): Promise<{ plan: ImagePlan; open: BlobOpener; cleanup: () => Promise<void> }> {
  const root = plan.root;
  const manifest = parseManifest(root.bytes, `manifest ${root.descriptor.digest}`);
  const open: BlobOpener = (d, s) => source.getBlob(d, s);
  if (!manifest.layers.some((l) => UNCOMPRESSED_LAYER.has(l.mediaType))) {
    return { plan, open, cleanup: async () => {} };
  }
  const dir = await scratchDir(tmpdir(), 'stowage-push-');
  const compressed = new Map<string, { path: string; descriptor: Descriptor }>();
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const oci = manifest.mediaType === MediaType.OciManifest;
    const gzipType = oci ? MediaType.OciLayerGzip : MediaType.DockerLayerGzip;
    const todo = manifest.layers.filter(
      (l, i, all) => UNCOMPRESSED_LAYER.has(l.mediaType) && all.indexOf(l) === i,
    );
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        const l = todo[next++]!;
        if (compressed.has(l.digest)) continue;
        const path = join(dir, `${compressed.size}-${l.digest.slice(7, 19)}.gz`);
        const verifier = new DigestVerifier(l.digest, l.size, `layer ${l.digest}`);
        const checked = (async function* () {
          for await (const c of await source.getBlob(l, signal)) {
            verifier.update(c);
            yield c;
          }
          verifier.finish();
        })();
        const fh = await openFile(path, 'wx', 0o600);
        const hash = createHash('sha256');
        let size = 0;
        try {
          for await (const c of gzipDeterministic(checked)) {
            hash.update(c);
            await fh.write(c);
            size += c.byteLength;
          }
        } finally {
          await fh.close();
        }
        compressed.set(l.digest, {
          path,
          descriptor: { mediaType: gzipType, digest: `sha256:${hash.digest('hex')}`, size },
        });
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, todo.length)) }, worker));
    const layers = manifest.layers.map((l) => {
      const c = compressed.get(l.digest);
      return c ? c.descriptor : { mediaType: l.mediaType, digest: l.digest, size: l.size };
    });
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
    const descriptor: Descriptor = {
      mediaType: root.descriptor.mediaType,
      digest: sha256Digest(bytes),
      size: bytes.length,
    };
    const newRoot: PlannedDocument = { descriptor, bytes };
    const byNew = new Map([...compressed.values()].map((c) => [c.descriptor.digest, c.path]));
    const blobs = [manifest.config, ...layers].map((d) => ({
      mediaType: d.mediaType,
      digest: d.digest,
      size: d.size,
    }));
    return {
      plan: {
        root: newRoot,
        documents: [newRoot],
        blobs: blobs.filter((b, i) => blobs.findIndex((x) => x.digest === b.digest) === i),
        platforms: plan.platforms,
      },
      open: async (d, s) => {
        const path = byNew.get(d.digest);
        return path ? createReadStream(path, { highWaterMark: 1 << 20, signal: s }) : source.getBlob(d, s);
      },
      cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** One planned image to upload: its blobs' opener, where it goes, and a repository to mount from. */
interface ImageUpload {
  plan: ImagePlan;
  open: BlobOpener;
  targets: ImageReference[];
  mountFrom: { host: string; repo: string } | undefined;
}

/** Uploads one planned image to each of its destinations (grouped by repository). */
async function uploadImage(
  ctx: Context,
  { plan, open, targets, mountFrom }: ImageUpload,
  opts: PushOptions & { verifyExisting?: boolean },
  stats: UploadStats,
): Promise<void> {
  const byRepo = new Map<string, ImageReference[]>();
  for (const t of targets) {
    const key = `${t.domain}/${t.path}`;
    byRepo.set(key, [...(byRepo.get(key) ?? []), t]);
  }
  for (const refs of byRepo.values()) {
    const { client, endpoint } = await ctx.client(refs[0]!);
    const uploader = new Uploader(
      { client, host: endpoint.host, repo: endpoint.path },
      {
        locations: ctx.blobLocations,
        concurrency: opts.concurrency ?? 4,
        chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
        retries: ctx.retries,
        signal: opts.signal,
        onProgress: opts.onProgress,
        verifyExisting: opts.verifyExisting,
      },
    );
    const froms = mountFrom && mountFrom.host === endpoint.host ? [mountFrom.repo] : [];
    await uploader.blobs(plan.blobs, open, froms);
    const children = plan.documents.filter((d) => d.descriptor.digest !== plan.root.descriptor.digest);
    await uploader.manifests(children, plan.root, refs.map((r) => r.tag!).filter(Boolean));
    for (const k of ['uploaded', 'existing', 'mounted', 'bytes'] as const) stats[k] += uploader.stats[k];
  }
}

async function planFrom(
  source: ImageSource,
  digest: string,
  opts: PushOptions,
  what: string,
): Promise<ImagePlan> {
  const all = opts.platform ? false : (opts.all ?? true);
  try {
    return await planImage(source, digest, {
      all,
      platform: opts.platform ?? hostPlatform(),
      signal: opts.signal,
    });
  } catch (e) {
    if (
      all &&
      e instanceof StowageError &&
      e.code === 'INVALID_ARCHIVE' &&
      /manifest .* is missing/.test(e.message)
    ) {
      throw new StowageError(
        'INVALID_ARCHIVE',
        `${what} is an index whose platforms are not all in the archive, so it cannot be pushed whole; push one platform with --platform (${e.message})`,
      );
    }
    throw e;
  }
}

/** Pushes the images of an archive (a path or TRANSPORT:PATH[:NAME]) to DEST. */
export async function push(
  ctx: Context,
  archive: string,
  dest: string,
  opts: PushOptions = {},
): Promise<PushResult> {
  // An archive: TRANSPORT:PATH, or a path whatever it looks like (push takes nothing else).
  const t = /^(oci-archive|docker-archive|oci|dir):/.test(archive)
    ? parseTransportReference(archive)
    : { transport: 'archive' as const, path: archive };
  if (t.transport === 'docker') throw new StowageError('INVALID_ARGUMENT', `${archive} is not an archive`);
  const source = await ArchiveSource.open(t.path, archiveFormat(t));
  try {
    const name = opts.image ?? ('name' in t ? t.name : undefined);
    const chosen = name ? [source.select(name)] : source.images;
    const destination = parseDestination(dest, chosen.length);
    const jobs = chosen.map((img) => ({
      img,
      index: source.images.indexOf(img),
      targets: targetsFor(img, source.images.indexOf(img), destination, opts, t.path),
    }));
    // Every destination is checked (blocked registries, credentials) before anything is sent.
    for (const j of jobs) for (const r of j.targets) await ctx.client(r);
    opts.onTargets?.(
      jobs.map((j) => ({
        source: imageLabel(`${source.description} @${j.index}`, j.img),
        destinations: j.targets.map(formatReference),
      })),
    );
    const stats: UploadStats = { uploaded: 0, existing: 0, mounted: 0, bytes: 0 };
    const images: PushedImage[] = [];
    for (const { img, index, targets } of jobs) {
      const what = `${source.description} @${index}`;
      let plan = await planFrom(source, img.descriptor.digest, opts, what);
      const synthesized =
        source.format === 'docker-archive' &&
        !isIndexMediaType(plan.root.descriptor.mediaType) &&
        source.synthesizedManifests;
      if (!opts.dryRun)
        plan = await restoreImage(ctx, { source, img, plan, targets, synthesized }, opts, stats);
      images.push({
        source: imageLabel(what, img),
        destinations: targets.map(formatReference),
        digest: plan.root.descriptor.digest,
        mediaType: plan.root.descriptor.mediaType,
        newDigest: synthesized,
      });
    }
    return { images, stats, ...(opts.dryRun ? { dryRun: true } : {}) };
  } finally {
    await source.close();
  }
}

/**
 * Uploads one image of an archive to its targets; returns the plan that went up (a docker-archive's
 * made-up manifest, with its layers gzipped, when `synthesized`).
 */
async function restoreImage(
  ctx: Context,
  image: {
    source: ArchiveSource;
    img: ListedImage;
    plan: ImagePlan;
    targets: ImageReference[];
    synthesized: boolean;
  },
  opts: PushOptions,
  stats: UploadStats,
): Promise<ImagePlan> {
  const { source, img, targets } = image;
  let { plan } = image;
  let open: BlobOpener = (d, s) => source.getBlob(d, s);
  let cleanup = async () => {};
  if (image.synthesized)
    ({ plan, open, cleanup } = await recompress(plan, source, opts.concurrency ?? 4, opts.signal));
  // Restoring into the registry the image came from (under another name): its recorded repository
  // there is the natural place to mount blobs from.
  const origin = recordedNames(img).full.find((n) => targets.some((t) => t.domain === n.domain));
  try {
    await uploadImage(
      ctx,
      {
        plan,
        open,
        targets,
        mountFrom: origin ? { host: ctx.endpoint(origin).host, repo: ctx.endpoint(origin).path } : undefined,
      },
      // A damaged or incomplete archive fails even where the registry already has its blobs.
      { ...opts, verifyExisting: true },
      stats,
    );
  } finally {
    await cleanup();
  }
  return plan;
}

/**
 * Copies one image to a registry: from another registry (streamed, no local disk; mounted when both
 * are repositories of the same registry) or from an archive. `srcCtx` and `dstCtx` may differ in
 * credentials and TLS settings.
 */
export async function copyToRegistry(
  srcCtx: Context,
  dstCtx: Context,
  src: string,
  dst: string,
  opts: PushOptions = {},
): Promise<PushResult> {
  const s = parseTransportReference(src);
  if (s.transport === 'archive') return push(dstCtx, s.path, dst, opts);
  if (s.transport !== 'docker') {
    return push(dstCtx, src, dst, opts);
  }
  const d = parseTransportReference(dst);
  if (d.transport !== 'docker')
    throw new StowageError('INTERNAL', 'copyToRegistry needs a registry destination');
  const destination = parseDestination(formatReference(d.ref), 1);
  const parsed = withDefaultTag(s.ref);
  return srcCtx.withCandidates(parsed, (ref) =>
    srcCtx.pullFrom(ref, async (client, endpoint) => {
      const source = new RegistrySource(client, endpoint.path);
      const tag = destination.ref.tag ?? ref.tag;
      if (!tag) {
        throw new StowageError(
          'INVALID_ARGUMENT',
          `${src} names no tag, so ${dst} needs one (${formatReference({ ...destination.ref, tag: 'TAG' })})`,
        );
      }
      const target = { ...destination.ref, tag };
      await dstCtx.client(target);
      opts.onTargets?.([{ source: formatReference(ref), destinations: [formatReference(target)] }]);
      const plan = await planImage(source, ref.digest ?? ref.tag!, {
        all: opts.all ?? false,
        platform: opts.platform ?? hostPlatform(),
        signal: opts.signal,
      });
      const stats: UploadStats = { uploaded: 0, existing: 0, mounted: 0, bytes: 0 };
      if (!opts.dryRun)
        await uploadImage(
          dstCtx,
          {
            plan,
            open: (desc, sig) => source.getBlob(desc, sig),
            targets: [target],
            mountFrom: { host: endpoint.host, repo: endpoint.path },
          },
          opts,
          stats,
        );
      return {
        images: [
          {
            source: formatReference(ref),
            destinations: [formatReference(target)],
            digest: plan.root.descriptor.digest,
            mediaType: plan.root.descriptor.mediaType,
            newDigest: false,
          },
        ],
        stats,
        ...(opts.dryRun ? { dryRun: true } : {}),
      };
    }),
  );
}
