/**
 * The other half of `ImageSource`: where images go. Every destination (a registry repository, an
 * oci-archive, a docker-archive, an OCI layout, a dir: layout, the archive store) says what it needs and
 * writes a whole image set from a blob provider; the engine (copy.ts) knows no destination by name.
 */
import type { ProgressListener } from '../core/progress.js';
import type { Descriptor } from '../image/schemas.js';
import type { DigestCache } from './digest-cache.js';
import type { PlannedDocument } from './plan.js';
import type { PlannedReferrer } from './referrers.js';

/** What an image is called where it is written. */
export interface ImageNames {
  /** Full "registry/repository:tag" names: a docker-archive's RepoTags. */
  repoTags: string[];
  /** Annotations of its entry in an OCI index.json (ref.name and containerd's name). */
  annotations: Record<string, string>;
}

/** One image as a destination writes it. */
export interface ImageToWrite {
  /** The manifest or index the destination names. */
  root: PlannedDocument;
  /** Every manifest and index of the image, the root included. */
  documents: PlannedDocument[];
  /** Its configs and layers, unique by digest, in digest order. */
  blobs: Descriptor[];
  platforms: string[];
  names: ImageNames;
  /** A repository of a registry known to hold its blobs (where they came from): a registry can mount from it. */
  origin?: { host: string; repository: string } | undefined;
  /** What is attached to it (signatures, attestations, SBOMs), where the destination holds them. */
  referrers: PlannedReferrer[];
}

/** Everything one copy writes: the images, and their documents and blobs merged (each once). */
export interface ImageSet {
  images: ImageToWrite[];
  /** Every manifest and index, by digest. */
  documents: Map<string, Buffer>;
  /** Every config and layer, unique by digest, in digest order. */
  blobs: Descriptor[];
}

/**
 * Where a blob's bytes come from. The engine's provider answers from the cheapest place that has the
 * blob (a converted layer on local disk, the store, a cache, then the image's source); it does not check
 * digests, the blob loop (blobs.ts) or the format writer does, as the bytes pass.
 */
export interface BlobProvider {
  open(d: Descriptor, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** A blob's last `length` bytes where the source gives them cheaply (a range request); else undefined. */
  tail(d: Descriptor, length: number, signal: AbortSignal): Promise<Buffer | undefined>;
  /** A small blob (a config) read into memory, digest-checked. */
  readSmall(d: Descriptor, signal: AbortSignal): Promise<Buffer>;
  /**
   * Checks the source holds the blob intact where that is cheaper than reading the blob through (a
   * converted layer: its plain source is hashed, not compressed again; a large blob of an archive file:
   * hashed in place by a worker thread); false where it is not.
   */
  check?(d: Descriptor, signal: AbortSignal): Promise<boolean>;
}

/** What a destination can hold: the engine adapts the images to it, or says why it cannot. */
export interface DestinationNeeds {
  /** Layers must be compressed (a registry): a docker-archive's plain tar layers are gzipped, giving a new manifest. */
  compressedLayers: boolean;
  /** Layers are written uncompressed whatever they were (docker-archive): a compression asked for cannot apply. */
  plainLayers?: boolean | undefined;
  /** One platform per image, no index (docker-archive). */
  singlePlatform: boolean;
  /** At most this many images (a dir: layout holds one). */
  maxImages: number;
  /** It holds what is attached to an image (signatures, attestations, SBOMs): they are looked for and carried. */
  referrers: boolean;
}

export interface WriteSettings {
  /** Blobs moved at once. */
  concurrency: number;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  /**
   * Where the copy remembers what it learned (see digest-cache.ts): a destination that checks layers
   * (a docker-archive's diff_ids) records them here, and skips the checks it finds done.
   */
  digestCache?: DigestCache | undefined;
}

export interface ImageDestination<Committed = unknown> {
  /** For messages: the path, or registry/repository. */
  readonly description: string;
  readonly needs: DestinationNeeds;
  /** Checks that need no bytes (credentials, blocked registries), before any source is read. */
  prepare?(set: ImageSet): Promise<void>;
  /** Writes the blobs and documents. Nothing is visible under the set's names until commit. */
  write(set: ImageSet, blobs: BlobProvider, settings: WriteSettings): Promise<void>;
  /**
   * Takes a blob whose digest is learned only at its end (a layer compressed while it is sent, instead
   * of into a scratch file first), where the destination can: a registry takes it as one streamed
   * upload. `open` gives the bytes, again on each attempt. Absent where a destination cannot.
   */
  streamBlob?(
    open: () => Promise<AsyncIterable<Uint8Array>>,
    signal: AbortSignal,
  ): Promise<{ digest: string; size: number }>;
  /**
   * Whether the destination has a blob already, or can link it without its bytes, where it can say
   * cheaply (a registry: HEAD, in the repository and the one it can mount from).
   */
  hasBlob?(d: Descriptor, signal: AbortSignal): Promise<boolean>;
  /** The bytes of a blob hasBlob said it has, for when linking it fails after all. */
  readHeld?(d: Descriptor, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** Makes the set visible: moves the archive into place, puts the tags, records the version. */
  commit(): Promise<Committed>;
  /** Removes what write left behind; never throws. */
  abort(): Promise<void>;
}

/**
 * How a blob reached a destination that takes blobs one at a time: its bytes written, there already,
 * linked from a sibling repository, or moved by this run for another image (the blob loop's own).
 */
export type BlobOutcome = 'written' | 'existing' | 'mounted' | 'shared';

/**
 * A destination that takes blobs one at a time (a registry repository, the store, an OCI layout): it
 * knows whether it has a blob already or can link it from a sibling, and opens the source only if not.
 */
export interface BlobSink {
  readonly description: string;
  /**
   * Puts one blob. `open` gives its bytes, digest-checked as they pass unless `verifies` (the sink
   * checks them itself); it is called only when the bytes are needed, and again on each attempt.
   */
  put(
    d: Descriptor,
    open: () => Promise<AsyncIterable<Uint8Array>>,
    signal: AbortSignal,
  ): Promise<BlobOutcome>;
  /** The sink checks digests itself (the store): the engine does not hash the bytes a second time. */
  readonly verifies?: boolean | undefined;
}
