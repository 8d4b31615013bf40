import type { Descriptor } from '../image/schemas.js';
import type { ManifestResponse } from '../registry/client.js';

/** Where images come from. Registry now; archives and layouts implement the same interface. */
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
  close(): Promise<void>;
}
