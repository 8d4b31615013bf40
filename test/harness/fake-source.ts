/**
 * An image source in memory for in-process tests of the engine, the transports and the API: documents
 * and blobs by digest, tags, a record of every blob read, and faults on demand (a damaged blob, a read
 * held until released).
 */
import { createHash } from 'node:crypto';
import type { ImageSource, ReferrerEntry } from '../../src/engine/source.js';
import { StowageError } from '../../src/errors.js';
import { MediaType } from '../../src/image/mediatypes.js';
import type { Descriptor, ManifestResponse } from '../../src/image/schemas.js';

export const AMD64 = { os: 'linux', architecture: 'amd64' };

export function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** An in-memory repository: documents and blobs by digest, tags, and a count of every blob read. */
export class FakeSource implements ImageSource {
  readonly description = 'fake';
  readonly docs = new Map<string, { bytes: Buffer; mediaType: string }>();
  readonly blobs = new Map<string, Buffer>();
  readonly tags = new Map<string, string>();
  readonly reads: string[] = [];
  /** Digests whose bytes come back damaged (the last byte flipped). */
  readonly damaged = new Set<string>();
  /** Digests whose read waits for this promise (to abort in the middle). */
  hold: Promise<void> | undefined;

  blob(content: string | Buffer, mediaType: string = MediaType.OciLayerGzip): Descriptor {
    const bytes = Buffer.isBuffer(content) ? content : Buffer.from(content);
    const digest = digestOf(bytes);
    this.blobs.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  }

  /** An image: a config naming its platform (and the layers' diff_ids, if given), and these layers. */
  image(
    tag: string,
    layers: Descriptor[],
    platform = AMD64,
    layerType?: string,
    diffIds: string[] = [],
  ): Descriptor {
    const config = this.blob(
      JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: diffIds } }),
      MediaType.OciConfig,
    );
    const manifest = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config,
      layers: layerType ? layers.map((l) => ({ ...l, mediaType: layerType })) : layers,
    };
    return this.document(tag, manifest, MediaType.OciManifest);
  }

  index(tag: string, children: { d: Descriptor; platform: typeof AMD64 }[]): Descriptor {
    const index = {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: children.map((c) => ({ ...c.d, platform: c.platform })),
    };
    return this.document(tag, index, MediaType.OciIndex);
  }

  private document(tag: string, doc: unknown, mediaType: string): Descriptor {
    const bytes = Buffer.from(JSON.stringify(doc));
    const digest = digestOf(bytes);
    this.docs.set(digest, { bytes, mediaType });
    this.tags.set(tag, digest);
    return { mediaType, digest, size: bytes.length };
  }

  async getManifest(reference: string): Promise<ManifestResponse> {
    const digest = this.tags.get(reference) ?? reference;
    const d = this.docs.get(digest);
    if (!d) throw new StowageError('NOT_FOUND', `no manifest ${reference}`);
    return { bytes: d.bytes, digest, mediaType: d.mediaType };
  }

  async getBlob(d: Descriptor): Promise<AsyncIterable<Uint8Array>> {
    const bytes = this.blobs.get(d.digest);
    if (!bytes) throw new StowageError('NOT_FOUND', `no blob ${d.digest}`);
    this.reads.push(d.digest);
    const out = Buffer.from(bytes);
    if (this.damaged.has(d.digest)) out[out.length - 1]! ^= 1;
    const hold = this.hold;
    return (async function* () {
      yield out.subarray(0, 1);
      await hold;
      yield out.subarray(1);
    })();
  }

  /** What is attached to each manifest (filled by attach()). */
  readonly attached = new Map<string, ReferrerEntry[]>();

  /**
   * An artifact attached to `subject`: an OCI referrer naming it (tag undefined), or a manifest under
   * one of cosign's tags for it (tag given, no subject field).
   */
  attach(subject: Descriptor, artifactType: string, content: string, tag?: string): Descriptor {
    const config = this.blob('{}', 'application/vnd.oci.empty.v1+json');
    const layer = this.blob(content, artifactType);
    const doc = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      ...(tag
        ? {}
        : {
            artifactType,
            subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
          }),
      config,
      layers: [layer],
    };
    const bytes = Buffer.from(JSON.stringify(doc));
    const digest = digestOf(bytes);
    this.docs.set(digest, { bytes, mediaType: MediaType.OciManifest });
    const d = { mediaType: MediaType.OciManifest, digest, size: bytes.length };
    const list = this.attached.get(subject.digest) ?? [];
    list.push(tag ? { descriptor: d, tag } : { descriptor: { ...d, artifactType } });
    this.attached.set(subject.digest, list);
    return d;
  }

  async referrers(digest: string): Promise<ReferrerEntry[]> {
    return this.attached.get(digest) ?? [];
  }

  async close(): Promise<void> {}
}
