/**
 * `stowage bundle create`: the chosen versions since a base, as one reproducible tar. It is an OCI
 * layout (oci-layout, index.json naming every version as the store does) with the bundle manifest
 * after index.json and only the blobs the base did not carry; a bundle with no base is a whole
 * oci-archive that skopeo reads. Written by the oci-archive writer (blobs in parallel at their final
 * offsets, checked, FILE.sha256 beside it), then split into parts and signed when asked, and recorded
 * in the store's bundle history.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { type ArchiveImage, writeOciArchive } from '../archive/oci-archive.js';
import { AtomicFile, sha256Line, writeFileAtomic } from '../core/atomic.js';
import { partialPath } from '../core/partials.js';
import type { ProgressListener } from '../core/progress.js';
import { StowageError } from '../errors.js';
import { loadSigner } from '../policy/sign.js';
import type { ArchiveStore } from '../store/archive-store.js';
import { refNames, versionAnnotations } from '../store/index-files.js';
import type { StoredVersion } from '../store/version.js';
import { complete, type VersionContent, versionContents } from './closure.js';
import {
  type BlobRef,
  BUNDLE_FILE,
  BUNDLE_MEDIA_TYPE,
  type BundleManifest,
  bundleId,
  bundleVersion,
  manifestBytes,
} from './manifest.js';
import { partName } from './read.js';
import { type Base, chooseVersions, resolveBase, type VersionFilter } from './select.js';

export interface CreateBundleOptions {
  output: string;
  /** A bundle file, a recorded bundle id, or a time (see select.ts). */
  since?: string | undefined;
  filter: VersionFilter;
  /** Write parts of at most this many bytes (FILE.001-of-N ...), each with its .sha256. */
  split?: number | undefined;
  /** Sign the bundle manifest (FILE.sig, as cosign sign-blob writes). */
  sign?: { keyPath: string; passphraseFile?: string | undefined } | undefined;
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  env?: NodeJS.ProcessEnv;
  /** The file name the store's history records (default: the output's). */
  recordAs?: string | undefined;
}

export interface BundleResult {
  id: string;
  /** The files written: the bundle (or its parts), then its .sha256 and .sig. */
  files: string[];
  sha256: string;
  size: number;
  versions: number;
  /** Blobs and their bytes inside the bundle; blobs it assumes the far side has. */
  blobs: number;
  bytes: number;
  assumes: number;
  bases: string[];
  /** Versions left out: held only in part (the registry's pull-through stored what clients asked for). */
  skipped: string[];
  signed: boolean;
}

/** The manifest and the archive's content for the chosen versions. */
function layOut(
  versions: StoredVersion[],
  contents: VersionContent[],
  base: Base,
  filter: VersionFilter,
): { manifest: BundleManifest; images: ArchiveImage[]; documents: Map<string, Buffer>; carried: BlobRef[] } {
  const documents = new Map<string, Buffer>();
  const needed = new Map<string, BlobRef>();
  for (const c of contents) {
    for (const [d, bytes] of c.documents) documents.set(d, bytes);
    for (const b of c.blobs.values()) needed.set(b.digest, { digest: b.digest, size: b.size });
  }
  const byDigest = (a: BlobRef, b: BlobRef) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0);
  // Documents always go: each bundle can then be planned and checked without its base at hand.
  const carried = [...needed.values()].filter((b) => !base.blobs.has(b.digest));
  for (const [digest, bytes] of documents) carried.push({ digest, size: bytes.length });
  carried.sort(byDigest);
  const assumes = [...needed.values()].filter((b) => base.blobs.has(b.digest));
  assumes.sort(byDigest);
  const through = versions.reduce((t, v) => (v.taken > t ? v.taken : t), base.after);
  const manifest: BundleManifest = {
    mediaType: BUNDLE_MEDIA_TYPE,
    selection: {
      versions: filter.versions,
      ...(filter.repository !== undefined ? { repository: filter.repository } : {}),
      ...(filter.tag !== undefined ? { tag: filter.tag } : {}),
      ...(filter.jobs?.length ? { jobs: filter.jobs.map((j) => j.name) } : {}),
    },
    through,
    bases: base.ids,
    versions: versions.map(bundleVersion),
    blobs: carried,
    assumes,
  };
  const names = refNames(versions);
  const images = versions.map((v, i) => ({
    descriptor: v.descriptor,
    annotations: versionAnnotations(v, names[i]!, { storeState: false }),
  }));
  return { manifest, images, documents, carried };
}

/** A bundle chosen and laid out, not yet written: its id is known before a byte of it is. */
export interface PlannedBundle {
  id: string;
  manifest: BundleManifest;
  bytes: Buffer;
  images: ArchiveImage[];
  documents: Map<string, Buffer>;
  carried: BlobRef[];
  skipped: string[];
}

/** Chooses the versions since the base and lays the bundle out. */
export async function planBundle(
  store: ArchiveStore,
  opts: Pick<CreateBundleOptions, 'since' | 'filter'> & { sinceFiles?: boolean },
): Promise<PlannedBundle> {
  const base = await resolveBase(store, opts.since, { files: opts.sinceFiles });
  const chosen = chooseVersions(await store.versions(), base, opts.filter);
  const allContents = await versionContents(store, chosen);
  const versions: StoredVersion[] = [];
  const contents: VersionContent[] = [];
  const skipped: string[] = [];
  for (const [i, v] of chosen.entries()) {
    // What the pull-through stored may lack platforms or layers no client asked for.
    if (v.pulledThrough && !(await complete(store, allContents[i]!))) {
      skipped.push(`${v.repository}:${v.tag} (${v.id})`);
      continue;
    }
    versions.push(v);
    contents.push(allContents[i]!);
  }
  if (versions.length === 0) {
    throw new StowageError(
      'NOT_FOUND',
      `no stored version ${base.label ? `since ${base.label} ` : ''}matches: there is nothing to bundle`,
    );
  }
  const laid = layOut(versions, contents, base, opts.filter);
  const bytes = manifestBytes(laid.manifest);
  return { id: bundleId(bytes), bytes, skipped, ...laid };
}

/** Chooses, lays out, writes (and splits, signs, records) a bundle. */
export async function createBundle(
  store: ArchiveStore,
  opts: CreateBundleOptions,
  planned?: PlannedBundle,
): Promise<BundleResult> {
  // A wrong key or passphrase fails before anything is written.
  const signer = opts.sign ? await loadSigner(opts.sign.keyPath, opts.sign.passphraseFile) : undefined;
  const { id, manifest, bytes, images, documents, carried, skipped } =
    planned ?? (await planBundle(store, opts));
  const blobs = carried
    .filter((b) => !documents.has(b.digest))
    .map((b) => ({ mediaType: 'application/octet-stream', digest: b.digest, size: b.size }));
  const split = opts.split !== undefined;
  const target = split ? partialPath(opts.output) : opts.output;
  const written = await writeOciArchive(
    target,
    { images, documents, blobs, files: [{ name: BUNDLE_FILE, data: bytes }] },
    {
      fetch: async (d, signal) => store.openBlob(d.digest, undefined, signal),
      concurrency: opts.concurrency ?? 4,
      signal: opts.signal,
      onProgress: opts.onProgress,
      env: opts.env,
    },
  );
  const files = split
    ? await splitInto(target, opts.output, opts.split!, written.sha256, opts.signal)
    : [opts.output, `${opts.output}.sha256`];
  if (signer) {
    await writeFileAtomic(`${opts.output}.sig`, `${signer.sign(bytes)}\n`);
    files.push(`${opts.output}.sig`);
  }
  const bytesCarried = carried.reduce((n, b) => n + b.size, 0);
  await store.bundles().add(
    {
      id,
      kind: 'created',
      at: new Date().toISOString(),
      file: opts.recordAs ?? basename(opts.output),
      sha256: written.sha256,
      size: written.size,
      versions: manifest.versions.length,
      blobs: carried.length,
      bytes: bytesCarried,
      bases: manifest.bases,
      through: manifest.through,
      ...(split ? { parts: files.filter((f) => !f.endsWith('.sha256')).length } : {}),
      ...(signer ? { signed: true } : {}),
    },
    bytes,
  );
  return {
    id,
    files,
    sha256: written.sha256,
    size: written.size,
    versions: manifest.versions.length,
    blobs: carried.length,
    bytes: bytesCarried,
    assumes: manifest.assumes.length,
    bases: manifest.bases,
    skipped,
    signed: !!signer,
  };
}

/**
 * Cuts the finished bundle at `whole` into parts of `size` bytes, each with its .sha256, and writes
 * OUTPUT.sha256 for the parts joined; the whole is removed. Parts appear only once all are written.
 */
async function splitInto(
  whole: string,
  output: string,
  size: number,
  sha256: string,
  signal?: AbortSignal,
): Promise<string[]> {
  const { size: length } = await stat(whole);
  const count = Math.max(1, Math.ceil(length / size));
  const written: { tmp: string; path: string }[] = [];
  const files: string[] = [];
  try {
    for (let n = 1; n <= count; n++) {
      const path = partName(output, n, count);
      const file = await AtomicFile.create(path);
      const h = createHash('sha256');
      const start = (n - 1) * size;
      const end = Math.min(length, start + size) - 1;
      try {
        for await (const c of createReadStream(whole, { start, end, highWaterMark: 1 << 20, signal })) {
          h.update(c as Buffer);
          await file.handle.write(c as Buffer);
        }
        await file.handle.sync();
        await file.handle.close();
      } catch (e) {
        await file.abort();
        throw e;
      }
      written.push({ tmp: file.tmpPath, path });
      await writeFile(`${path}.sha256`, sha256Line(h.digest('hex'), path));
      files.push(path, `${path}.sha256`);
    }
    for (const w of written) await rename(w.tmp, w.path);
    await writeFileAtomic(`${output}.sha256`, sha256Line(sha256, output));
    files.push(`${output}.sha256`);
    return files;
  } catch (e) {
    for (const w of written) await unlink(w.tmp).catch(() => {});
    for (const f of files) await unlink(f).catch(() => {});
    throw e;
  } finally {
    await unlink(whole).catch(() => {});
    await unlink(`${whole}.sha256`).catch(() => {});
  }
}
