/**
 * A stored version and how it is spelled in the store's index.json: the annotations each entry
 * carries, and the version's id.
 */
import { createHash } from 'node:crypto';
import type { Descriptor } from '../image/schemas.js';

export const ANNOTATION = {
  refName: 'org.opencontainers.image.ref.name',
  imageName: 'io.containerd.image.name',
  repository: 'io.stowage.repository',
  tag: 'io.stowage.tag',
  source: 'io.stowage.source',
  sourceDigest: 'io.stowage.source.digest',
  taken: 'io.stowage.taken',
  platforms: 'io.stowage.platforms',
  archiveSha256: 'io.stowage.archive.sha256',
  archiveSize: 'io.stowage.archive.size',
  /** What is attached to the version (signatures, SBOMs): a JSON list of StoredAttachment. */
  referrers: 'io.stowage.referrers',
  /** Stored by the registry's pull-through: only what clients asked for may be held (see distribution/). */
  pulledThrough: 'io.stowage.pulled-through',
  /** The version's id, so a reader never has to compute it again. */
  id: 'io.stowage.id',
} as const;

/** Something kept attached to a stored version: a signature, an attestation, an SBOM. */
export interface StoredAttachment {
  /** Its manifest, with its artifactType. */
  descriptor: Descriptor;
  /** cosign's tag it was found under; absent for an OCI referrer (its manifest names its subject). */
  tag?: string | undefined;
}

/** One stored version of a tag. */
export interface StoredVersion {
  /** Stable id: the first 12 hex digits of sha256("repository:tag@digest"); stored, never recomputed on a read. */
  id: string;
  repository: string;
  tag: string;
  descriptor: Descriptor;
  source: string;
  /** The digest the source served for the tag, when the stored one differs (platforms chosen). */
  sourceDigest?: string | undefined;
  /** ISO time the version was taken. */
  taken: string;
  platforms: string[];
  /** sha256 and size of the version's oci-archive, once computed. */
  archive?: { sha256: string; size: number } | undefined;
  /** What is kept attached to it, in the order found. */
  referrers?: StoredAttachment[] | undefined;
  /**
   * Came in through the registry's pull-through: an index may be held without the platforms no client
   * asked for, and an image without the blobs none fetched.
   */
  pulledThrough?: boolean | undefined;
}

export function versionId(repository: string, tag: string, digest: string): string {
  return createHash('sha256').update(`${repository}:${tag}@${digest}`).digest('hex').slice(0, 12);
}
