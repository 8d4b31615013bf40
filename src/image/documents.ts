/**
 * The image documents a registry or an archive hands over, parsed and checked: manifests, indexes and
 * configs. Every reader (inspect, pull, push, copy, sync, verify, the store) parses them here, under
 * one rule, so nothing is accepted in one place that another refuses.
 */
import { StowageError } from '../errors.js';
import { MAX_MANIFEST_BYTES } from './mediatypes.js';
import {
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  imageConfigSchema,
  imageIndexSchema,
  imageManifestSchema,
} from './schemas.js';

function parseJson<T>(
  bytes: Buffer,
  schema: {
    safeParse(v: unknown): {
      success: boolean;
      data?: T;
      error?: { issues: { path: PropertyKey[]; message: string }[] };
    };
  },
  what: string,
): T {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new StowageError('INVALID_MANIFEST', `${what} is not valid JSON`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error!.issues[0]!;
    throw new StowageError(
      'INVALID_MANIFEST',
      `${what} is not a valid manifest: ${issue.path.join('.') || '(top)'}: ${issue.message}`,
    );
  }
  return r.data as T;
}

/**
 * An image manifest. Its config must be within the limit every document is read under (4 MiB): one
 * rule for inspect, pull, push, copy, sync and verify, so nothing is uploaded that verify would refuse.
 */
export function parseManifest(bytes: Buffer, what: string): ImageManifest {
  const m = parseJson<ImageManifest>(bytes, imageManifestSchema, what);
  if (m.config.size > MAX_MANIFEST_BYTES) {
    throw new StowageError(
      'TOO_LARGE',
      `${what} names a config of ${m.config.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit for configs and manifests; the image is not one stowage copies`,
    );
  }
  return m;
}

export function parseIndex(bytes: Buffer, what: string): ImageIndex {
  return parseJson<ImageIndex>(bytes, imageIndexSchema, what);
}

/** An image config (`what` names it, e.g. "config sha256:... of REF"); INVALID_MANIFEST if it is not one. */
export function parseConfig(bytes: Buffer, what: string): ImageConfig {
  try {
    return imageConfigSchema.parse(JSON.parse(bytes.toString('utf8')));
  } catch {
    throw new StowageError('INVALID_MANIFEST', `${what} is not a valid image config`);
  }
}
