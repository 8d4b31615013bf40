/**
 * What a version is made of: its documents (the manifest or index, each platform's manifest, the
 * manifests of what is attached to it), read into memory, and the blobs they name (configs, layers).
 */
import { mapLimited } from '../core/limiter.js';
import { isIndexMediaType, MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import type { BlobReader } from '../store/archive-store.js';
import type { StoredVersion } from '../store/version.js';
import type { BlobRef } from './manifest.js';

export interface VersionContent {
  /** Documents by digest: always carried, so each bundle can be planned and checked on its own. */
  documents: Map<string, Buffer>;
  /** Configs and layers by digest. */
  blobs: Map<string, BlobRef & { mediaType: string }>;
}

interface Doc {
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

/** The content of each version (in order), documents read once however many versions share them. */
export async function versionContents(
  store: BlobReader,
  versions: StoredVersion[],
  concurrency = 8,
): Promise<VersionContent[]> {
  const read = new Map<string, Promise<Buffer>>();
  const doc = (digest: string) => {
    let p = read.get(digest);
    if (!p) {
      p = store.readBlob(digest, MAX_MANIFEST_BYTES);
      read.set(digest, p);
    }
    return p;
  };
  return mapLimited(versions, concurrency, async (v) => {
    const content: VersionContent = { documents: new Map(), blobs: new Map() };
    const walk = async (d: Descriptor): Promise<void> => {
      if (content.documents.has(d.digest)) return;
      const bytes = await doc(d.digest);
      content.documents.set(d.digest, bytes);
      const parsed = JSON.parse(bytes.toString('utf8')) as Doc;
      if (isIndexMediaType(d.mediaType) || Array.isArray(parsed.manifests)) {
        for (const child of parsed.manifests ?? []) await walk(child);
        return;
      }
      for (const b of [...(parsed.config ? [parsed.config] : []), ...(parsed.layers ?? [])]) {
        // A foreign layer (Windows base layers) is fetched from its URLs, never stored.
        if (b.urls?.length) continue;
        content.blobs.set(b.digest, { digest: b.digest, size: b.size, mediaType: b.mediaType });
      }
    };
    await walk(v.descriptor);
    for (const r of v.referrers ?? []) await walk(r.descriptor);
    return content;
  });
}

/** Whether the store holds every blob of the content (a version the pull-through filled may not). */
export async function complete(store: BlobReader, c: VersionContent): Promise<boolean> {
  const sizes = await mapLimited([...c.blobs.values()], 16, (b) => store.blobSize(b.digest));
  return sizes.every((s) => s !== undefined);
}
