/**
 * A registry repository as a destination: blobs through the engine's blob loop into a RegistrySink,
 * then manifests with their exact bytes, children before the index, and the tags last, at commit, so a
 * failure never leaves a tag on an incomplete image.
 */
import { type BlobStats, copyBlobs, emptyStats, withRetries } from '../../copy/blobs.js';
import type {
  BlobOutcome,
  BlobProvider,
  DestinationNeeds,
  ImageDestination,
  ImageSet,
  WriteSettings,
} from '../../copy/destination.js';
import type { PlannedDocument } from '../../copy/plan.js';
import { StowageError } from '../../errors.js';
import type { Descriptor } from '../../image/schemas.js';
import type { RegistrySink } from './upload.js';

export interface RegistryDestinationOptions {
  /** Tags the image goes under (none: by digest alone). */
  tags: string[];
  /** Attempts after the first for a blob or manifest that failed transiently. */
  retries: number;
  /** Check every blob against the source even where the registry has it (archives: see blobs.ts). */
  verifyExisting?: boolean | undefined;
  /** Counts added to (several destinations of one push share them). */
  stats?: BlobStats | undefined;
  onBlob?: ((d: Descriptor, outcome: BlobOutcome) => void) | undefined;
}

export class RegistryDestination implements ImageDestination<BlobStats> {
  readonly needs: DestinationNeeds = { compressedLayers: true, singlePlatform: false, maxImages: 1 };
  readonly stats: BlobStats;
  private root: PlannedDocument | undefined;
  private signal: AbortSignal | undefined;

  constructor(
    readonly sink: RegistrySink,
    private readonly opts: RegistryDestinationOptions,
  ) {
    this.stats = opts.stats ?? emptyStats();
  }

  get description(): string {
    return this.sink.description;
  }

  async write(set: ImageSet, provider: BlobProvider, settings: WriteSettings): Promise<void> {
    const image = set.images[0];
    if (!image) throw new StowageError('INTERNAL', 'no image to write');
    this.signal = settings.signal;
    if (image.origin && image.origin.host === this.sink.target.host)
      this.sink.mountFrom.add(image.origin.repository);
    await copyBlobs(
      this.sink,
      set.blobs,
      provider,
      {
        ...settings,
        retries: this.opts.retries,
        verifyExisting: this.opts.verifyExisting,
        onBlob: this.opts.onBlob,
      },
      this.stats,
    );
    for (const doc of image.documents) {
      if (doc.descriptor.digest !== image.root.descriptor.digest)
        await this.putManifest(doc, doc.descriptor.digest);
    }
    this.root = image.root;
  }

  async commit(): Promise<BlobStats> {
    const root = this.root;
    if (!root) throw new StowageError('INTERNAL', `nothing was written to ${this.description}`);
    if (this.opts.tags.length === 0) await this.putManifest(root, root.descriptor.digest);
    for (const t of this.opts.tags) await this.putManifest(root, t);
    return this.stats;
  }

  /** Nothing to undo: blobs no manifest names are the registry's to collect, and no tag moved. */
  async abort(): Promise<void> {}

  private putManifest(doc: PlannedDocument, reference: string): Promise<void> {
    const { client, repo } = this.sink.target;
    return withRetries(
      { retries: this.opts.retries, signal: this.signal },
      `manifest ${doc.descriptor.digest}`,
      async () => {
        const digest = await client.putManifest(
          repo,
          reference,
          doc.bytes,
          doc.descriptor.mediaType,
          this.signal,
        );
        if (digest !== doc.descriptor.digest) {
          throw new StowageError(
            'INTERNAL',
            `manifest ${doc.descriptor.digest} hashed to ${digest} on the way out; nothing was tagged`,
          );
        }
      },
    );
  }
}
