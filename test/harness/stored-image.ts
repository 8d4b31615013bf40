/**
 * Images put straight into a store (blobs, then the version), for the in-process tests of what reads
 * the store (bundles): no registry, no engine, each blob's bytes chosen by the test.
 */
import { sha256Digest } from '../../src/image/digest.js';
import { MediaType } from '../../src/image/mediatypes.js';
import type { Descriptor } from '../../src/image/schemas.js';
import type { ArchiveStore } from '../../src/store/archive-store.js';
import type { StoredVersion } from '../../src/store/version.js';

async function put(store: ArchiveStore, bytes: Buffer, mediaType: string): Promise<Descriptor> {
  const d = { mediaType, digest: sha256Digest(bytes), size: bytes.length };
  await store.putBlob(d, [bytes]);
  return d;
}

/** repository:tag as an image of these layers (bytes), taken at `taken`; its stored version. */
export async function storeImage(
  store: ArchiveStore,
  o: { repository: string; tag: string; layers: Buffer[]; taken: string },
): Promise<StoredVersion> {
  const config = await put(
    store,
    Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', tag: o.tag })),
    MediaType.OciConfig,
  );
  const layers = [];
  for (const l of o.layers) layers.push(await put(store, l, MediaType.OciLayerGzip));
  const manifest = await put(
    store,
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers })),
    MediaType.OciManifest,
  );
  return store.addVersion({
    repository: o.repository,
    tag: o.tag,
    descriptor: manifest,
    source: `${o.repository}:${o.tag}`,
    taken: o.taken,
    platforms: ['linux/amd64'],
  });
}
