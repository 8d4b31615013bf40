/**
 * The bundle manifest (`stowage-bundle.json` inside every bundle): which versions the bundle holds,
 * which blobs it carries, which blobs it assumes the far side already has, and the bundles that carried
 * them. Its sha256 is the bundle's id. It is written with a fixed key order and no time of its own
 * (the newest version's time stands for "when"), so the same store state gives the same bytes.
 */
import { z } from 'zod';
import { StowageError } from '../errors.js';
import { sha256Digest } from '../image/digest.js';
import type { StoredAttachment, StoredVersion } from '../store/version.js';

export const BUNDLE_MEDIA_TYPE = 'application/vnd.stowage.bundle.v1+json';
/** The manifest's name inside the bundle's tar, right after the OCI layout's own two files. */
export const BUNDLE_FILE = 'stowage-bundle.json';

/** Which versions a bundle takes: every one (since its base), or only the newest of each tag. */
export type VersionChoice = 'all' | 'newest';

const descriptorSchema = z.object({
  mediaType: z.string(),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
  artifactType: z.string().optional(),
});

const blobSchema = z.object({
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
});

const versionSchema = z.object({
  id: z.string().regex(/^[0-9a-f]{12}$/),
  repository: z.string().min(1),
  tag: z.string().min(1),
  descriptor: descriptorSchema,
  source: z.string(),
  sourceDigest: z.string().optional(),
  taken: z.string(),
  platforms: z.array(z.string()),
  referrers: z.array(z.object({ descriptor: descriptorSchema, tag: z.string().optional() })).optional(),
});

const manifestSchema = z.object({
  mediaType: z.literal(BUNDLE_MEDIA_TYPE),
  selection: z.object({
    versions: z.enum(['all', 'newest']),
    repository: z.string().optional(),
    tag: z.string().optional(),
    jobs: z.array(z.string()).optional(),
  }),
  /** The newest time a version of it was taken: what a later `--since` of this bundle starts after. */
  through: z.string(),
  /** The bundles it builds on (its base and theirs), by id, oldest first. */
  bases: z.array(z.string()),
  versions: z.array(versionSchema),
  /** The blobs inside it, in digest order. */
  blobs: z.array(blobSchema),
  /** The blobs its versions need that its bases carried: they must be at the far side already. */
  assumes: z.array(blobSchema),
});

export type BundleVersion = z.infer<typeof versionSchema>;
export type BundleManifest = z.infer<typeof manifestSchema>;
export interface BlobRef {
  digest: string;
  size: number;
}

/** A stored version as the bundle records it (the store's own spelling, less what the store computed). */
export function bundleVersion(v: StoredVersion): BundleVersion {
  const d = v.descriptor;
  return {
    id: v.id,
    repository: v.repository,
    tag: v.tag,
    descriptor: {
      mediaType: d.mediaType,
      digest: d.digest,
      size: d.size,
      ...(d.artifactType ? { artifactType: d.artifactType } : {}),
    },
    source: v.source,
    ...(v.sourceDigest ? { sourceDigest: v.sourceDigest } : {}),
    taken: v.taken,
    platforms: [...v.platforms],
    ...(v.referrers?.length ? { referrers: v.referrers.map(attachment) } : {}),
  };
}

function attachment(r: StoredAttachment): StoredAttachment {
  const d = r.descriptor;
  return {
    descriptor: {
      mediaType: d.mediaType,
      digest: d.digest,
      size: d.size,
      ...(d.artifactType ? { artifactType: d.artifactType } : {}),
    },
    ...(r.tag ? { tag: r.tag } : {}),
  };
}

/** The version a bundle entry adds to a store: its tag, time, source and attachments as they were. */
export function storedVersionOf(v: BundleVersion): Omit<StoredVersion, 'id'> {
  return {
    repository: v.repository,
    tag: v.tag,
    descriptor: v.descriptor,
    source: v.source,
    sourceDigest: v.sourceDigest,
    taken: v.taken,
    platforms: v.platforms,
    referrers: v.referrers,
  };
}

/** The manifest's bytes: keys in the order the schema lists them, one line. */
export function manifestBytes(m: BundleManifest): Buffer {
  return Buffer.from(`${JSON.stringify(manifestSchema.parse(m))}\n`);
}

export function bundleId(bytes: Buffer): string {
  return sha256Digest(bytes);
}

/** A bundle id as people read it: its first 12 hex digits. */
export function shortId(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}

/** Reads a manifest; `what` names where it came from in the error. */
export function parseManifest(bytes: Buffer, what: string): BundleManifest {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new StowageError('INVALID_ARCHIVE', `${what}: ${BUNDLE_FILE} is not JSON`);
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new StowageError(
      'INVALID_ARCHIVE',
      `${what}: ${BUNDLE_FILE} is not a stowage bundle manifest (${issue?.path.join('.') || 'top'}: ${issue?.message})`,
    );
  }
  return parsed.data;
}
