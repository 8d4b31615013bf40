/**
 * A stored version exported as the same reproducible archive `stowage pull` writes for that image, and
 * its oci-archive sha256 recorded once computed.
 */
import type { ArchiveFormat } from '../archive/formats.js';
import type { ProgressListener } from '../core/progress.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import type { PlatformSpec } from '../image/platform.js';
import type { ArchiveStore } from '../store/archive-store.js';
import type { StoredVersion } from '../store/store.js';
import { StoreSource } from '../transports/store/source.js';
import { checkRequest, type PullResult, writeArchive } from './pull.js';

export interface ExportOptions {
  output: string;
  format?: ArchiveFormat | undefined;
  all?: boolean | undefined;
  platforms?: PlatformSpec[] | undefined;
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

export async function exportVersion(
  store: ArchiveStore,
  idOrName: string,
  opts: ExportOptions,
): Promise<PullResult & { version: StoredVersion }> {
  const version = await store.find(idOrName);
  const name = `${version.repository}:${version.tag}`;
  const pullOpts = {
    output: opts.output,
    format: opts.format,
    all: opts.all,
    platforms: opts.platforms,
    concurrency: opts.concurrency,
    signal: opts.signal,
    onProgress: opts.onProgress,
    name,
  };
  await checkRequest([name], opts.format ?? 'oci-archive', pullOpts);
  const source = new StoreSource(store, version);
  const served = `the archive store (version ${version.id})`;
  const image = { reference: version.descriptor.digest, asked: name, served, names: [] };
  let result: PullResult;
  try {
    // The trust policy admitted the version on its way into the store: no context, no second check.
    result = await writeArchive(
      [{ opened: { source, images: [image], close: () => source.close() }, image }],
      pullOpts,
    );
  } finally {
    await source.close();
  }
  // The whole version as an oci-archive: reproducible, so its checksum is recorded for good.
  const whole = !isIndexMediaType(version.descriptor.mediaType) || opts.all;
  if ((opts.format ?? 'oci-archive') === 'oci-archive' && whole && result.sha256 && !version.archive) {
    await store.recordArchive(version.id, { sha256: result.sha256, size: result.size ?? 0 });
  }
  return {
    ...result,
    reference: name,
    images: result.images.map((i) => ({
      ...i,
      reference: name,
      source: served,
    })),
    version,
  };
}
