/**
 * The archive store as an image source: a stored version's documents and blobs, read through the
 * ArchiveStore interface (not as an OCI layout path), so an export works the same on any store backend.
 */
import type { ImageSource, ReferrerEntry } from '../../engine/source.js';
import { StowageError } from '../../errors.js';
import { isCosignTagOf } from '../../image/cosign.js';
import { verifyBytes } from '../../image/digest.js';
import { MAX_MANIFEST_BYTES } from '../../image/mediatypes.js';
import type { Descriptor } from '../../image/schemas.js';
import { isDigest } from '../../reference/reference.js';
import type { ManifestResponse } from '../../registry/client.js';
import type { BlobReader } from '../../store/archive-store.js';
import type { StoredVersion } from '../../store/store.js';
import { documentMediaType } from '../archive/source.js';

export class StoreSource implements ImageSource {
  /** Never the store's path: results and messages may reach API clients. */
  readonly description = 'the archive store';

  constructor(
    readonly store: BlobReader,
    /** The version read: what is attached to it is found among its attachments. */
    readonly version?: StoredVersion | undefined,
  ) {}

  /** What the version keeps attached to a manifest: cosign's by tag, OCI referrers by their subject. */
  async referrers(digest: string): Promise<ReferrerEntry[]> {
    const out: ReferrerEntry[] = [];
    for (const r of this.version?.referrers ?? []) {
      if (r.tag) {
        if (isCosignTagOf(r.tag, digest)) out.push({ descriptor: r.descriptor, tag: r.tag });
        continue;
      }
      const doc = JSON.parse((await this.store.readBlob(r.descriptor.digest)).toString('utf8')) as {
        subject?: { digest?: string };
      };
      if (doc.subject?.digest === digest) out.push({ descriptor: r.descriptor });
    }
    return out;
  }

  async getManifest(reference: string): Promise<ManifestResponse> {
    if (!isDigest(reference)) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `the archive store is read by digest; "${reference}" is not one`,
      );
    }
    const bytes = await this.store.readBlob(reference, MAX_MANIFEST_BYTES).catch((e: unknown) => {
      if (e instanceof StowageError && e.code === 'NOT_FOUND')
        throw new StowageError('NOT_FOUND', `the archive store has no manifest ${reference}`);
      throw e;
    });
    verifyBytes(bytes, reference, `manifest ${reference} in the archive store`);
    return { bytes, digest: reference, mediaType: documentMediaType(bytes, `manifest ${reference}`) };
  }

  async getBlob(d: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    if ((await this.store.blobSize(d.digest)) === undefined) {
      throw new StowageError(
        'NOT_FOUND',
        `the archive store has no blob ${d.digest}: the version is incomplete`,
      );
    }
    return this.store.openBlob(d.digest, undefined, signal);
  }

  async getBlobTail(d: Descriptor, length: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    if (length <= 0 || length > d.size) return undefined;
    const parts: Buffer[] = [];
    for await (const c of this.store.openBlob(d.digest, { start: d.size - length, end: d.size - 1 }, signal))
      parts.push(Buffer.from(c));
    return Buffer.concat(parts);
  }

  async readSmallBlob(d: Descriptor): Promise<Buffer> {
    const bytes = await this.store.readBlob(d.digest, MAX_MANIFEST_BYTES);
    verifyBytes(bytes, d.digest, `blob ${d.digest} in the archive store`);
    return bytes;
  }

  async close(): Promise<void> {}
}
