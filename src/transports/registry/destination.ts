/**
 * A registry repository as a destination: blobs through the engine's blob loop into a RegistrySink,
 * then manifests with their exact bytes, children before the index, and the tags last, at commit, so a
 * failure never leaves a tag on an incomplete image.
 */
import { type BlobStats, copyBlobs, emptyStats, withRetries } from '../../engine/blobs.js';
import type {
  BlobOutcome,
  BlobProvider,
  DestinationNeeds,
  ImageDestination,
  ImageSet,
  ImageToWrite,
  WriteSettings,
} from '../../engine/destination.js';
import type { PlannedDocument } from '../../engine/plan.js';
import type { PlannedReferrer } from '../../engine/referrers.js';
import { StowageError } from '../../errors.js';
import {
  COSIGN_SIGNATURE_ANNOTATION,
  COSIGN_SIMPLE_SIGNING,
  cosignTag,
  digestTag,
} from '../../image/cosign.js';
import { sha256Digest } from '../../image/digest.js';
import { parseIndex, parseManifest } from '../../image/documents.js';
import { MediaType } from '../../image/mediatypes.js';
import type { Descriptor } from '../../image/schemas.js';
import { type Signer, simpleSigningPayload } from '../../policy/sign.js';
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
  /** Sign the image as `identity` (cosign's .sig, as skopeo --sign-by-sigstore-private-key writes it). */
  sign?: { signer: Signer; identity: string } | undefined;
}

export class RegistryDestination implements ImageDestination<BlobStats> {
  readonly needs: DestinationNeeds = {
    compressedLayers: true,
    singlePlatform: false,
    maxImages: 1,
    referrers: true,
  };
  readonly stats: BlobStats;
  private image: ImageToWrite | undefined;
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

  /** Has it, or can mount it from a repository of the same registry (the image's origin). */
  async hasBlob(d: Descriptor, signal: AbortSignal): Promise<boolean> {
    return (await this.sink.holder(d, signal)) !== undefined;
  }

  /** The bytes of a blob hasBlob found (for a registry that answers a mount with an upload instead). */
  async readHeld(d: Descriptor, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const from = await this.sink.holder(d, signal);
    if (!from) {
      throw new StowageError(
        'REGISTRY',
        `layer ${d.digest} was in ${this.sink.target.host} a moment ago and is gone; push again (it will be compressed)`,
      );
    }
    return (await this.sink.target.client.getBlob(from, d.digest, signal)).body;
  }

  /** Repositories of the destination's registry to mount from, known before anything is asked of it. */
  mountFromOrigin(origin: ImageToWrite['origin']): void {
    if (origin && origin.host === this.sink.target.host) this.sink.mountFrom.add(origin.repository);
  }

  streamBlob(
    open: () => Promise<AsyncIterable<Uint8Array>>,
    signal: AbortSignal,
  ): Promise<{ digest: string; size: number }> {
    return withRetries({ retries: this.opts.retries, signal }, `a layer to ${this.description}`, async () =>
      this.sink.putStream(await open(), signal),
    );
  }

  async write(set: ImageSet, provider: BlobProvider, settings: WriteSettings): Promise<void> {
    const image = set.images[0];
    if (!image) throw new StowageError('INTERNAL', 'no image to write');
    this.signal = settings.signal;
    this.mountFromOrigin(image.origin);
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
    this.image = image;
  }

  async commit(): Promise<BlobStats> {
    const image = this.image;
    if (!image) throw new StowageError('INTERNAL', `nothing was written to ${this.description}`);
    const root = image.root;
    if (this.opts.tags.length === 0) await this.putManifest(root, root.descriptor.digest);
    for (const t of this.opts.tags) await this.putManifest(root, t);
    await this.putReferrers(image.referrers);
    if (this.opts.sign) await this.addSignature(root.descriptor.digest, this.opts.sign);
    return this.stats;
  }

  /**
   * Adds a signature layer to the image's cosign signature manifest (sha256-HEX.sig), keeping the ones
   * it has: a simple-signing payload naming the digest as `identity`, its signature in the annotation.
   */
  private async addSignature(digest: string, how: { signer: Signer; identity: string }): Promise<void> {
    const { client, repo } = this.sink.target;
    const tag = cosignTag(digest);
    const payload = simpleSigningPayload(how.identity, digest);
    const layer: Descriptor = {
      mediaType: COSIGN_SIMPLE_SIGNING,
      digest: sha256Digest(payload),
      size: payload.length,
      annotations: { [COSIGN_SIGNATURE_ANNOTATION]: how.signer.sign(payload) },
    };
    const existing = await client.findManifest(repo, tag, this.signal);
    const layers = existing ? parseManifest(existing.bytes, `signature ${tag}`).layers : [];
    // ECDSA signatures differ each time: one for this payload is replaced, not added again.
    const kept = layers.filter((l) => l.digest !== layer.digest);
    const all = [...kept, layer];
    const config = Buffer.from(
      JSON.stringify({
        architecture: '',
        created: '0001-01-01T00:00:00Z',
        history: [{ created: '0001-01-01T00:00:00Z' }],
        os: '',
        rootfs: { type: 'layers', diff_ids: all.map((l) => l.digest) },
        config: {},
      }),
    );
    const configDesc = { mediaType: MediaType.OciConfig, digest: sha256Digest(config), size: config.length };
    const signal = this.signal ?? new AbortController().signal;
    for (const [d, bytes] of [
      [configDesc, config],
      [layer, payload],
    ] as const) {
      const body = async function* () {
        yield bytes;
      };
      await this.sink.put(d, async () => body(), signal);
    }
    const bytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: all }),
    );
    const descriptor = { mediaType: MediaType.OciManifest, digest: sha256Digest(bytes), size: bytes.length };
    await this.putManifest({ descriptor, bytes }, tag);
  }

  /**
   * Attachments go after the image they name: cosign's under their tags, OCI referrers by digest. A
   * registry with the referrers API indexes those itself; for one without (it does not answer
   * OCI-Subject), each subject's tag-schema index (sha256-HEX) gains them.
   */
  private async putReferrers(referrers: PlannedReferrer[]): Promise<void> {
    const unindexed = new Map<string, Descriptor[]>();
    for (const r of referrers) {
      const put = await this.putManifest(r.document, r.tag ?? r.document.descriptor.digest);
      if (r.tag || put.subjectIndexed) continue;
      unindexed.set(r.subject, [...(unindexed.get(r.subject) ?? []), r.document.descriptor]);
    }
    for (const [subject, descriptors] of unindexed) await this.addToTagSchema(subject, descriptors);
  }

  /** The subject's referrers tag-schema index, with `descriptors` added (those it lists already kept). */
  private async addToTagSchema(subject: string, descriptors: Descriptor[]): Promise<void> {
    const { client, repo } = this.sink.target;
    const tag = digestTag(subject);
    const existing = await client.findManifest(repo, tag, this.signal);
    const what = `referrers index ${tag} of ${this.description}`;
    const listed = existing ? (parseIndex(existing.bytes, what).manifests as Descriptor[]) : [];
    const added = descriptors.filter((d) => !listed.some((l) => l.digest === d.digest));
    if (added.length === 0) return;
    const bytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [...listed, ...added] }),
    );
    const descriptor = { mediaType: MediaType.OciIndex, digest: sha256Digest(bytes), size: bytes.length };
    await this.putManifest({ descriptor, bytes }, tag);
  }

  /** Nothing to undo: blobs no manifest names are the registry's to collect, and no tag moved. */
  async abort(): Promise<void> {}

  private putManifest(doc: PlannedDocument, reference: string): Promise<{ subjectIndexed: boolean }> {
    const { client, repo } = this.sink.target;
    return withRetries(
      { retries: this.opts.retries, signal: this.signal },
      `manifest ${doc.descriptor.digest}`,
      async () => {
        const put = await client.putManifest(
          repo,
          reference,
          doc.bytes,
          doc.descriptor.mediaType,
          this.signal,
        );
        if (put.digest !== doc.descriptor.digest) {
          throw new StowageError(
            'INTERNAL',
            `manifest ${doc.descriptor.digest} hashed to ${put.digest} on the way out; nothing was tagged`,
          );
        }
        return put;
      },
    );
  }
}
