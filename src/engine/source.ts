import type { Descriptor, ManifestResponse } from '../image/schemas.js';

/**
 * Something attached to a manifest: an OCI 1.1 referrer (a manifest whose `subject` names it: an SBOM,
 * an attestation, a signature), or a manifest under one of cosign's tags for it (sha256-HEX.sig, .att,
 * .sbom).
 */
export interface ReferrerEntry {
  /** The referrer's manifest, with its artifactType where the listing gives it. */
  descriptor: Descriptor;
  /** cosign's tag it is found under; absent for an OCI referrer. */
  tag?: string | undefined;
}

/** Where images come from: a registry, an archive or layout, the store. */
export interface ImageSource {
  /** Human-readable name for messages, e.g. 127.0.0.1:5000/library/alpine. */
  readonly description: string;
  /** A manifest or index by tag or digest, digest-verified. */
  getManifest(reference: string, signal?: AbortSignal): Promise<ManifestResponse>;
  /** A blob's bytes as a stream; the caller verifies the digest while consuming it. */
  getBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** A blob's last `length` bytes, where that is cheap (a range request, a positioned read); else undefined. */
  getBlobTail?(descriptor: Descriptor, length: number, signal?: AbortSignal): Promise<Buffer | undefined>;
  /**
   * A small blob (a config) read into memory, digest-checked, and kept: a later getBlob of it is served
   * from memory, so reading it while planning costs no second request. Where absent, getBlob is used.
   */
  readSmallBlob?(descriptor: Descriptor, signal?: AbortSignal): Promise<Buffer>;
  /**
   * Checks a blob against its digest without streaming it through this thread, where the source can (a
   * large blob of an archive file: a worker thread hashes it in place). True when checked; false when
   * the caller must read it itself; DIGEST_MISMATCH when it is damaged.
   */
  checkBlob?(descriptor: Descriptor, signal?: AbortSignal): Promise<boolean>;
  /**
   * The manifests are stowage's own, made up for an archive that holds none (a docker-archive before
   * docker 25): the digests it reports are not the image's original ones.
   */
  readonly synthesizedManifests?: boolean;
  /** What is attached to a manifest (see ReferrerEntry); absent where the source cannot hold any. */
  referrers?(digest: string, signal?: AbortSignal): Promise<ReferrerEntry[]>;
  close(): Promise<void>;
}
