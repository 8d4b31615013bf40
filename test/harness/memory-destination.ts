/**
 * A destination that keeps what it is given in memory, for in-process tests of the engine: it takes
 * blobs one at a time through the engine's blob loop, as a registry or a layout does.
 */
import { copyBlobs } from '../../src/engine/blobs.js';
import type {
  BlobOutcome,
  BlobProvider,
  BlobSink,
  DestinationNeeds,
  ImageDestination,
  ImageSet,
  WriteSettings,
} from '../../src/engine/destination.js';
import { StowageError } from '../../src/errors.js';

/** A destination that takes blobs one at a time into memory, like a registry or a layout would. */
export class MemoryDestination implements ImageDestination<ImageSet> {
  readonly description: string = 'memory';
  readonly stored = new Map<string, Buffer>();
  readonly events: string[] = [];
  /** Blobs it has already (answers 'existing'), or can link from a sibling ('mounted'). */
  readonly present = new Set<string>();
  readonly mountable = new Set<string>();
  /** Fail a blob's first put with a retryable error. */
  readonly flaky = new Set<string>();
  set: ImageSet | undefined;
  readonly sink: BlobSink;

  constructor(
    readonly needs: DestinationNeeds = {
      compressedLayers: false,
      singlePlatform: false,
      maxImages: 9,
      referrers: false,
    },
    readonly outcomes: BlobOutcome[] = [],
  ) {
    this.sink = {
      description: 'memory',
      put: async (d, open) => {
        if (this.present.has(d.digest)) return 'existing';
        if (this.mountable.has(d.digest)) return 'mounted';
        if (this.flaky.delete(d.digest))
          throw new StowageError('UNAVAILABLE', 'try again', { retryable: true });
        const parts: Buffer[] = [];
        for await (const c of await open()) parts.push(Buffer.from(c));
        this.stored.set(d.digest, Buffer.concat(parts));
        return 'written';
      },
    };
  }

  async write(set: ImageSet, provider: BlobProvider, settings: WriteSettings): Promise<void> {
    this.events.push('write');
    await copyBlobs(this.sink, set.blobs, provider, {
      ...settings,
      retries: 2,
      onBlob: (_d, o) => this.outcomes.push(o),
    });
    this.set = set;
  }

  async commit(): Promise<ImageSet> {
    this.events.push('commit');
    return this.set!;
  }

  async abort(): Promise<void> {
    this.events.push('abort');
  }
}
