/**
 * What the service does with one stored version: delete it, make its docker-archive for a platform
 * (kept as a rendition), say which trusted key verifies each of its signatures, and read what the
 * console shows beyond its index entry (annotations, labels).
 */
import { isNoSpace, StowageError } from '../errors.js';
import { parseConfig, parseIndex, parseManifest } from '../image/documents.js';
import { isIndexMediaType, MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import { hostPlatform, parsePlatform } from '../image/platform.js';
import { manifestSigner, trustedKeysFor } from '../policy/verify.js';
import { parseReference } from '../reference/reference.js';
import type { Rendition } from '../store/renditions.js';
import type { StoredVersion } from '../store/store.js';
import { exportVersion } from '../transfer/export.js';
import type { Engine } from './engine.js';

/** Removes a stored version and the blobs only it used. */
export async function deleteVersion(engine: Engine, id: string): Promise<StoredVersion> {
  const v = await engine.store.find(id);
  if (v.id !== id) throw new StowageError('NOT_FOUND', `no archive ${id}; give its whole id`);
  await engine.store.removeVersions([v.id]);
  await engine.store.collectGarbage();
  await engine.renditions.drop(v.id);
  return v;
}

const building = new Map<string, Promise<Rendition>>();

/**
 * A version's docker-archive (one platform): made once with the export path and kept with the
 * renditions (it is reproducible, so it never goes stale). Concurrent requests share the build.
 */
export function dockerArchive(
  engine: Engine,
  version: StoredVersion,
  platform: string | undefined,
  signal?: AbortSignal,
): Promise<Rendition> {
  const p = platform ? parsePlatform(platform) : hostPlatform();
  const name = `docker-archive-${[p.os, p.architecture, p.variant].filter(Boolean).join('-')}`;
  const key = `${version.id}/${name}`;
  let job = building.get(key);
  if (!job) {
    job = (async () => {
      const kept = await engine.renditions.get(version.id, name);
      if (kept) return kept;
      const path = await engine.renditions.workPath(version.id, name);
      const r = await exportVersion(engine.store, version.id, {
        output: path,
        format: 'docker-archive',
        platforms: [p],
        signal,
      }).catch((e) => {
        // Said as the service's, where its operator can act: not "the output", not a server path.
        if (!isNoSpace(e)) throw e;
        throw new StowageError(
          'IO',
          `no space left in the service's state directory ([server] state) while making the docker-archive of version ${version.id}; free some space there, then ask again (the oci-archive is served from the store meanwhile)`,
          { cause: e },
        );
      });
      return engine.renditions.keep(version.id, name, { path, size: r.size ?? 0, sha256: r.sha256 ?? '' });
    })();
    building.set(key, job);
    void job.finally(() => building.delete(key)).catch(() => {});
  }
  return job;
}

/**
 * For each cosign signature a version keeps: the trusted key (the service's policy.json) that verifies
 * it, where one does. Read from the store, nothing fetched.
 */
export async function versionSigners(engine: Engine, version: StoredVersion): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const sigs = (version.referrers ?? []).filter((r) => r.tag?.endsWith('.sig'));
  if (sigs.length === 0) return out;
  const keys = await trustedKeysFor(
    await engine.ctx.policy(),
    parseReference(`${version.repository}:${version.tag}`),
  );
  if (keys.length === 0) return out;
  for (const r of sigs) {
    const m = parseManifest(
      await engine.store.readBlob(r.descriptor.digest),
      `signature ${r.descriptor.digest}`,
    );
    const signer = await manifestSigner(keys, m, (layer) => engine.store.readBlob(layer.digest));
    if (signer) out.set(r.descriptor.digest, signer);
  }
  return out;
}

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
