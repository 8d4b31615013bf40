/**
 * What the console shows of a stored version beyond its index entry: the manifest's annotations and
 * each platform's image labels, read from the store's blobs (two or three small documents; an index's
 * platforms are read up to a few, not all of a 40-platform index).
 */

import { parseConfig, parseIndex, parseManifest } from '../copy/plan.js';
import { isIndexMediaType, MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { StoredVersion } from '../store/version.js';
import type { Engine } from './operations.js';

/** Platforms of an index whose labels are read. */
const LABELLED_PLATFORMS = 4;

export interface VersionDetails {
  annotations: Record<string, string>;
  /** Image labels by platform ("" for a single image). */
  labels: { platform: string; labels: Record<string, string> }[];
}

export async function versionDetails(engine: Engine, v: StoredVersion): Promise<VersionDetails> {
  const read = (digest: string) => engine.store.readBlob(digest, MAX_MANIFEST_BYTES);
  const top = await read(v.descriptor.digest);
  const what = `manifest ${v.descriptor.digest}`;
  if (!isIndexMediaType(v.descriptor.mediaType)) {
    const m = parseManifest(top, what);
    const config = parseConfig(await read(m.config.digest), `config ${m.config.digest}`);
    return {
      annotations: m.annotations ?? {},
      labels: [{ platform: '', labels: config.config?.Labels ?? {} }],
    };
  }
  const index = parseIndex(top, what);
  const labels: VersionDetails['labels'] = [];
  for (const d of index.manifests
    .filter((d) => d.platform && d.platform.os !== 'unknown')
    .slice(0, LABELLED_PLATFORMS)) {
    if (!(await engine.store.hasBlob(d.digest))) continue; // A platform not kept.
    const m = parseManifest(await read(d.digest), `manifest ${d.digest}`);
    const config = parseConfig(await read(m.config.digest), `config ${m.config.digest}`);
    const p = d.platform!;
    labels.push({
      platform: `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`,
      labels: config.config?.Labels ?? {},
    });
  }
  return { annotations: index.annotations ?? {}, labels };
}
