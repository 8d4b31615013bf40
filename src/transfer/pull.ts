import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION, writeOciArchive } from '../archive/oci-archive.js';
import { StowageError } from '../errors.js';
import { hostPlatform, type PlatformSpec } from '../image/platform.js';
import {
  formatReference,
  type ImageReference,
  parseReference,
  withDefaultTag,
} from '../reference/reference.js';
import type { Context } from './context.js';
import { planImage } from './plan.js';
import type { ProgressListener } from './progress.js';
import { RegistrySource } from './registry-source.js';

export interface PullOptions {
  /** Archive path (oci-archive). */
  output: string;
  platform?: PlatformSpec | undefined;
  all?: boolean | undefined;
  /** Blobs downloaded at once (default 4). */
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

export interface PullResult {
  /** Fully qualified reference that was pulled. */
  reference: string;
  /** Where it came from (after registries.conf rewrites). */
  source: string;
  digest: string;
  mediaType: string;
  platforms: string[];
  path: string;
  /** sha256 of the archive file (hex). */
  sha256: string;
  size: number;
  blobs: number;
  /** Bytes of blobs and manifests in the archive. */
  contentBytes: number;
}

async function checkOutputDir(output: string): Promise<void> {
  const dir = dirname(resolve(output));
  const s = await stat(dir).catch(() => undefined);
  if (!s?.isDirectory()) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `cannot write ${output}: directory ${dir} does not exist; create it first`,
    );
  }
  const o = await stat(output).catch(() => undefined);
  if (o?.isDirectory())
    throw new StowageError('INVALID_ARGUMENT', `cannot write ${output}: it is a directory; give a file path`);
}

/** The names an archive records for a reference: tag as ref.name, the full name for containerd/podman. */
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

/** Pulls one image from a registry into a reproducible oci-archive. */
export async function pull(ctx: Context, input: string, opts: PullOptions): Promise<PullResult> {
  const parsed = withDefaultTag(parseReference(input));
  await checkOutputDir(opts.output);
  return ctx.withCandidates(parsed, async (ref) => {
    const { client, endpoint } = await ctx.client(ref);
    const source = new RegistrySource(client, endpoint.path);
    const reference = ref.digest ?? ref.tag!;
    const plan = await planImage(source, reference, {
      all: opts.all,
      platform: opts.platform ?? hostPlatform(),
      signal: opts.signal,
    });
    opts.onProgress?.({
      type: 'resolved',
      reference: formatReference(ref),
      digest: plan.root.descriptor.digest,
      mediaType: plan.root.descriptor.mediaType,
      platforms: plan.platforms,
    });
    const written = await writeOciArchive(
      opts.output,
      {
        images: [{ descriptor: plan.root.descriptor, annotations: archiveAnnotations(ref) }],
        documents: new Map(plan.documents.map((d) => [d.descriptor.digest, d.bytes])),
        blobs: plan.blobs,
      },
      {
        fetch: (d, signal) => source.getBlob(d, signal),
        concurrency: opts.concurrency ?? 4,
        signal: opts.signal,
        onProgress: opts.onProgress,
      },
    );
    return {
      reference: formatReference(ref),
      source: `${endpoint.host}/${endpoint.path}`,
      digest: plan.root.descriptor.digest,
      mediaType: plan.root.descriptor.mediaType,
      platforms: plan.platforms,
      path: written.path,
      sha256: written.sha256,
      size: written.size,
      blobs: plan.blobs.length + plan.documents.length,
      contentBytes:
        plan.blobs.reduce((n, b) => n + b.size, 0) + plan.documents.reduce((n, d) => n + d.bytes.length, 0),
    };
  });
}
