/**
 * The archive store as a destination: blobs through the engine's blob loop (one fetch per blob across
 * every job of the process, see Store.fetchBlob), documents, then at commit one version per image.
 */
import { copyBlobs } from '../../engine/blobs.js';
import type {
  BlobOutcome,
  BlobProvider,
  BlobSink,
  DestinationNeeds,
  ImageDestination,
  ImageSet,
  WriteSettings,
} from '../../engine/destination.js';
import { StowageError } from '../../errors.js';
import type { Descriptor } from '../../image/schemas.js';
import type { ArchiveStore } from '../../store/archive-store.js';
import type { StoredVersion } from '../../store/store.js';

/** What a version is recorded as, beside what the copy gives (descriptor, platforms). */
export interface VersionLabel {
  repository: string;
  tag: string;
  /** Where it came from: registry/repository:tag, or what uploaded it. */
  source: string;
  /** The digest the source served, where the stored one differs (platforms chosen). */
  sourceDigest?: string | undefined;
}

/** The store as a blob sink: it checks digests itself as it writes. */
export function storeSink(store: ArchiveStore): BlobSink {
  return {
    description: 'the archive store',
    verifies: true,
    async put(d, open): Promise<BlobOutcome> {
      // Another job's fetch of it ('shared' there) is, for this copy, a blob the store had.
      return (await store.fetchBlob(d, open)) === 'fetched' ? 'written' : 'existing';
    },
  };
}

export interface StoreDestinationOptions {
  /** One per image of the set, in order. */
  labels: VersionLabel[];
  /** The sink to share (a sync job's tags share one, so a blob they have in common is stored once). */
  sink?: BlobSink | undefined;
  onBlob?: ((d: Descriptor, outcome: BlobOutcome) => void) | undefined;
  /** Check blobs the store has already against the source too (an upload: a damaged archive is refused). */
  verifyExisting?: boolean | undefined;
}

export class StoreDestination implements ImageDestination<StoredVersion[]> {
  readonly needs: DestinationNeeds = {
    compressedLayers: false,
    singlePlatform: false,
    maxImages: Number.POSITIVE_INFINITY,
    // A version keeps what is attached to its image (signatures, SBOMs), exported and removed with it.
    referrers: true,
  };
  readonly description = 'the archive store';
  private set: ImageSet | undefined;

  constructor(
    readonly store: ArchiveStore,
    private readonly opts: StoreDestinationOptions,
  ) {}

  async prepare(set: ImageSet): Promise<void> {
    if (set.images.length !== this.opts.labels.length)
      throw new StowageError(
        'INTERNAL',
        `${set.images.length} images, ${this.opts.labels.length} version labels`,
      );
  }

  async write(set: ImageSet, provider: BlobProvider, settings: WriteSettings): Promise<void> {
    const sink = this.opts.sink ?? storeSink(this.store);
    await copyBlobs(sink, set.blobs, provider, {
      ...settings,
      retries: 0,
      onBlob: this.opts.onBlob,
      verifyExisting: this.opts.verifyExisting,
    });
    for (const image of set.images) {
      for (const d of image.documents) await this.store.putDocument(d.descriptor, d.bytes);
      for (const r of image.referrers) await this.store.putDocument(r.document.descriptor, r.document.bytes);
    }
    this.set = set;
  }

  /** Records the versions (a version identical to one stored keeps the stored one's time and checksum). */
  async commit(): Promise<StoredVersion[]> {
    const set = this.set;
    if (!set) throw new StowageError('INTERNAL', 'nothing was written to the archive store');
    const versions: StoredVersion[] = [];
    for (const [i, image] of set.images.entries()) {
      const label = this.opts.labels[i]!;
      versions.push(
        await this.store.addVersion({
          ...label,
          descriptor: image.root.descriptor,
          taken: new Date().toISOString(),
          platforms: image.platforms,
          ...(image.referrers.length
            ? {
                referrers: image.referrers.map((r) => ({
                  descriptor: r.document.descriptor,
                  ...(r.tag ? { tag: r.tag } : {}),
                })),
              }
            : {}),
        }),
      );
    }
    return versions;
  }

  /** Blobs no version names are removed by the next garbage collection; nothing else was written. */
  async abort(): Promise<void> {}
}
