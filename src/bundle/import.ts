/**
 * `stowage bundle import`: a bundle into a store or a registry. Everything is checked before anything
 * is written (checksums, the signature when a policy is given, and that every blob the bundle assumes
 * is at the destination: a delta whose base is missing is refused with the base's ids). Into a store,
 * blobs go first (each digest-checked, those already there passed over) and the versions last, with
 * their tags, times and attachments: an import killed midway leaves no version visible, and the next
 * one completes it. Into a registry, each version is pushed as `stowage push` pushes a stored version,
 * digests and attachments intact.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { TarAccess } from '../archive/access.js';
import { mapLimited } from '../core/limiter.js';
import type { ProgressListener } from '../core/progress.js';
import { StowageError } from '../errors.js';
import { verifyBytes } from '../image/digest.js';
import { MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { Policy } from '../policy/policy.js';
import { admitSignedFile } from '../policy/verify.js';
import { formatReference, type ImageReference, parseReference } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import type { ArchiveStore, BlobReader } from '../store/archive-store.js';
import type { StoredVersion } from '../store/version.js';
import { pushVersion } from '../transfer/push.js';
import { versionContents } from './closure.js';
import { type BundleManifest, type BundleVersion, shortId, storedVersionOf } from './manifest.js';
import { type BundleFiles, type OpenedBundle, openBundle } from './read.js';

export interface ImportOptions {
  /** Judge the bundle's signature (NAME.sig) by this policy's oci-archive requirements. */
  policy?: Policy | undefined;
  /** Where split parts are joined (default: the system's temporary directory). */
  tmpDir?: string | undefined;
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

export type ImportDestination =
  | { store: ArchiveStore }
  /** REGISTRY[/PREFIX]: each version goes to PREFIX/its repository's path below its source host. */
  | { registry: string; ctx: Context };

export interface ImportResult {
  id: string;
  name: string;
  versions: number;
  /** Versions already there (an import run again adds none). */
  present: number;
  blobs: number;
  /** Blobs written now, and those the destination had. */
  written: number;
  checked: string[];
  destinations?: string[] | undefined;
}

/** A bundle's blobs, read where they lie in its tar: what StoreSource reads a version through. */
class BundleBlobs implements BlobReader {
  constructor(private readonly access: TarAccess) {}

  private name(digest: string): string {
    return `blobs/sha256/${digest.slice(7)}`;
  }

  async blobSize(digest: string): Promise<number | undefined> {
    return this.access.size(this.name(digest));
  }

  async readBlob(digest: string, limit?: number): Promise<Buffer> {
    const bytes = await this.access.read(this.name(digest), limit ?? MAX_MANIFEST_BYTES, `blob ${digest}`);
    verifyBytes(bytes, digest, `blob ${digest} of the bundle`);
    return bytes;
  }

  openBlob(
    digest: string,
    range?: { start: number; end: number },
    signal?: AbortSignal,
  ): AsyncIterable<Uint8Array> {
    const access = this.access;
    const name = this.name(digest);
    return (async function* () {
      const extent = await access.extent(name);
      if (!extent) throw new StowageError('NOT_FOUND', `the bundle holds no blob ${digest}`);
      const start = extent.start + (range?.start ?? 0);
      const end = extent.start + (range ? range.end : extent.length - 1);
      if (end < start) return;
      yield* createReadStream(extent.file, { start, end, highWaterMark: 1 << 20, signal });
    })();
  }
}

/** Imports each bundle in turn (a full one, then its deltas). */
export async function importBundles(
  bundles: BundleFiles[],
  to: ImportDestination,
  opts: ImportOptions = {},
): Promise<ImportResult[]> {
  const out: ImportResult[] = [];
  for (const files of bundles) {
    const opened = await openBundle(files, opts);
    try {
      out.push(await importOne(opened, to, opts));
    } finally {
      await opened.close();
    }
  }
  return out;
}

async function importOne(b: OpenedBundle, to: ImportDestination, opts: ImportOptions): Promise<ImportResult> {
  if (opts.policy) {
    const signature = (await readFile(`${b.name}.sig`, 'utf8').catch(() => undefined))?.trim();
    await admitSignedFile(opts.policy, {
      transport: 'oci-archive',
      scopes: [resolve(b.name)],
      name: `bundle ${b.name}`,
      payload: b.manifestBytes,
      signature,
    });
    if (signature) b.checked.push('signature');
  }
  const access = await TarAccess.open(b.path);
  const blobs = new BundleBlobs(access);
  await checkCarried(b, blobs);
  return 'store' in to ? intoStore(b, blobs, to.store, opts) : intoRegistry(b, blobs, to, opts);
}

/** Every blob the manifest says is inside is inside, at its size. */
async function checkCarried(b: OpenedBundle, blobs: BundleBlobs): Promise<void> {
  for (const d of b.manifest.blobs) {
    const size = await blobs.blobSize(d.digest);
    if (size !== d.size)
      throw new StowageError(
        'INVALID_ARCHIVE',
        `${b.name}: blob ${d.digest} ${size === undefined ? 'is missing' : `is ${size} bytes, not ${d.size}`}; the bundle is damaged`,
      );
  }
}

/** The error for a delta whose base is not at the destination. */
async function missingBase(
  b: OpenedBundle,
  where: string,
  missing: string[],
  recorded?: Set<string>,
): Promise<StowageError> {
  const needed = b.manifest.bases.filter((id) => !recorded?.has(id));
  const ids = (needed.length ? needed : b.manifest.bases).map(shortId).join(', ');
  return new StowageError(
    'NOT_FOUND',
    `bundle ${shortId(b.id)} (${b.name}) builds on bundle${b.manifest.bases.length > 1 ? 's' : ''} ${ids || '(none recorded)'}: ` +
      `${missing.length} blob${missing.length > 1 ? 's' : ''} it assumes ${missing.length > 1 ? 'are' : 'is'} not in ${where} (first ${missing[0]}); import ${needed.length > 1 ? 'those' : 'that'} first. Nothing was written`,
  );
}

async function intoStore(
  b: OpenedBundle,
  blobs: BundleBlobs,
  store: ArchiveStore,
  opts: ImportOptions,
): Promise<ImportResult> {
  const m = b.manifest;
  const present = await mapLimited(m.assumes, 16, (d) => store.hasBlob(d.digest));
  const missing = m.assumes.filter((_, i) => !present[i]).map((d) => d.digest);
  if (missing.length) {
    const recorded = new Set((await store.bundles().list()).map((r) => r.id));
    throw await missingBase(b, 'the store', missing, recorded);
  }
  opts.onProgress?.({
    type: 'plan',
    blobs: m.blobs.length,
    totalBytes: m.blobs.reduce((n, d) => n + d.size, 0),
  });
  let written = 0;
  await mapLimited(m.blobs, opts.concurrency ?? 4, async (d) => {
    opts.onProgress?.({ type: 'blob-start', digest: d.digest, size: d.size });
    // Left by an import killed midway, or shared with what is stored: not written again.
    if (!(await store.hasBlob(d.digest))) {
      await store.putBlob(
        { mediaType: 'application/octet-stream', digest: d.digest, size: d.size },
        blobs.openBlob(d.digest, undefined, opts.signal),
      );
      written++;
    }
    opts.onProgress?.({ type: 'blob-done', digest: d.digest, size: d.size });
  });
  // The versions last: none is visible before every blob it needs is stored.
  let already = 0;
  for (const v of m.versions) {
    if (await hasVersion(store, v)) {
      already++;
      continue;
    }
    await store.addVersion(storedVersionOf(v));
  }
  await store.flush?.();
  await store.bundles().add(
    {
      id: b.id,
      kind: 'imported',
      at: new Date().toISOString(),
      file: b.name.split('/').pop()!,
      sha256: b.sha256,
      size: b.size,
      versions: m.versions.length,
      blobs: m.blobs.length,
      bytes: m.blobs.reduce((n, d) => n + d.size, 0),
      bases: m.bases,
      through: m.through,
    },
    b.manifestBytes,
  );
  return {
    id: b.id,
    name: b.name,
    versions: m.versions.length,
    present: already,
    blobs: m.blobs.length,
    written,
    checked: b.checked,
  };
}

async function hasVersion(store: ArchiveStore, v: BundleVersion): Promise<boolean> {
  try {
    const found = await store.find(v.id);
    return found.descriptor.digest === v.descriptor.digest;
  } catch (e) {
    if (e instanceof StowageError && e.code === 'NOT_FOUND') return false;
    throw e;
  }
}

/** Where a version goes in the registry: PREFIX/PATH, PATH its repository below the source host. */
export function registryTarget(prefix: string, v: Pick<BundleVersion, 'repository' | 'tag'>): ImageReference {
  const slash = v.repository.indexOf('/');
  const path =
    slash > 0 && /[.:]|^localhost$/.test(v.repository.slice(0, slash))
      ? v.repository.slice(slash + 1)
      : v.repository;
  return parseReference(`${prefix.replace(/\/+$/, '')}/${path}:${v.tag}`);
}

async function intoRegistry(
  b: OpenedBundle,
  blobs: BundleBlobs,
  to: { registry: string; ctx: Context },
  opts: ImportOptions,
): Promise<ImportResult> {
  const m = b.manifest;
  const versions: StoredVersion[] = m.versions.map((v) => ({ ...storedVersionOf(v), id: v.id }));
  const targets = m.versions.map((v) => registryTarget(to.registry, v));
  // Each version's blobs from its documents (always inside): those not inside must be in its repository.
  const inside = new Set(m.blobs.map((d) => d.digest));
  const contents = await versionContents(blobs, versions);
  const missing: string[] = [];
  for (const [i, c] of contents.entries()) {
    const ref = targets[i]!;
    const { client } = await to.ctx.client(ref);
    const outside = [...c.blobs.keys()].filter((d) => !inside.has(d));
    const there = await mapLimited(outside, 8, (d) => client.hasBlob(ref.path, d, opts.signal));
    for (const [j, d] of outside.entries()) if (!there[j]) missing.push(d);
  }
  if (missing.length) throw await missingBase(b, to.registry, missing);
  const destinations: string[] = [];
  for (const [i, v] of versions.entries()) {
    // Oldest first: the tag ends at its newest version; older ones stay pullable by digest.
    await pushVersion(to.ctx, blobs, v, targets[i]!, {
      concurrency: opts.concurrency,
      signal: opts.signal,
      onProgress: opts.onProgress,
    });
    destinations.push(`${formatReference(targets[i]!)}@${v.descriptor.digest}`);
  }
  return {
    id: b.id,
    name: b.name,
    versions: versions.length,
    present: 0,
    blobs: m.blobs.length,
    written: m.blobs.length,
    checked: b.checked,
    destinations,
  };
}

export type { BundleManifest };
