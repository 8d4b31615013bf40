/**
 * What the registry serves, read from the archive store: manifests by tag, version tag, cosign tag or
 * digest; tag and repository listings a page at a time; the referrers of a manifest. Every answer is
 * from the store's index and its blobs, the same on every replica.
 */
import { MAX_MANIFEST_BYTES, MediaType } from '../image/mediatypes.js';
import type { ArchiveStore } from '../store/archive-store.js';
import { repositoryVersions } from '../store/archive-store.js';
import type { StoredAttachment, StoredVersion } from '../store/version.js';
import { cosignSubject, parseVersionTag, servedName } from './names.js';

const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

export interface Manifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
}

/**
 * The manifest `reference` names in the repository: a digest; a tag (its newest version); `TAG--ID`
 * (an older version); a cosign attachment's tag. Undefined when there is none.
 */
export async function findManifest(
  store: ArchiveStore,
  repository: string,
  reference: string,
): Promise<Manifest | undefined> {
  if (isDigest(reference)) return document(store, reference);
  const newest = await store.latest(repository, reference);
  if (newest) return document(store, newest.descriptor.digest, newest.descriptor.mediaType);
  const older = await olderVersion(store, repository, reference);
  if (older) return document(store, older.descriptor.digest, older.descriptor.mediaType);
  if (cosignSubject(reference)) {
    const found = (await attachments(store, repository)).find((a) => a.tag === reference);
    if (found) return document(store, found.descriptor.digest, found.descriptor.mediaType);
  }
  return undefined;
}

async function olderVersion(
  store: ArchiveStore,
  repository: string,
  reference: string,
): Promise<StoredVersion | undefined> {
  const named = parseVersionTag(reference);
  if (!named) return undefined;
  const v = await store.find(named.id).catch(() => undefined);
  return v && v.id === named.id && v.repository === repository && v.tag === named.tag ? v : undefined;
}

/** A stored document that is a manifest or an index (a layer or config digest is not one). */
async function document(
  store: ArchiveStore,
  digest: string,
  mediaType?: string,
): Promise<Manifest | undefined> {
  const size = await store.blobSize(digest);
  if (size === undefined || size > MAX_MANIFEST_BYTES) return undefined;
  const bytes = await store.readBlob(digest, MAX_MANIFEST_BYTES);
  const type = mediaType ?? manifestType(bytes);
  return type ? { digest, mediaType: type, bytes } : undefined;
}

/** The media type a manifest says it is, or what its shape says; undefined when it is not a manifest. */
export function manifestType(bytes: Buffer): string | undefined {
  let doc: { schemaVersion?: unknown; mediaType?: unknown; manifests?: unknown; layers?: unknown };
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null || doc.schemaVersion !== 2) return undefined;
  if (typeof doc.mediaType === 'string') return doc.mediaType;
  if (Array.isArray(doc.manifests)) return MediaType.OciIndex;
  if (Array.isArray(doc.layers)) return MediaType.OciManifest;
  return undefined;
}

/**
 * Whether a client's Accept header takes `mediaType`. No Accept, a wildcard, or one that names no
 * manifest type at all (some clients send only application/json) takes anything, as registries do.
 */
export function accepts(accept: string | undefined, mediaType: string): boolean {
  if (!accept) return true;
  const types = accept.split(',').map((t) => t.split(';')[0]!.trim().toLowerCase());
  if (types.includes('*/*') || types.includes(mediaType)) return true;
  return !types.some((t) => t.includes('manifest') || t.includes('image.index'));
}

/** Every attachment of the repository's versions. */
async function attachments(store: ArchiveStore, repository: string): Promise<StoredAttachment[]> {
  return (await repositoryVersions(store, repository)).flatMap((v) => v.referrers ?? []);
}

/** A page of a sorted list, as the spec's `n` and `last` ask (`n` absent: all after `last`). */
export function pageOf(sorted: string[], n: number | undefined, last: string | undefined) {
  let start = 0;
  if (last !== undefined) {
    // The first name after `last`, which need not be in the list itself.
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid]! <= last) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  const end = n === undefined ? sorted.length : Math.min(sorted.length, start + n);
  return { items: sorted.slice(start, end), more: end < sorted.length };
}

/** The served tags of a repository: each tag's newest version (older ones answer to TAG--ID). */
export async function tagsOf(store: ArchiveStore, repository: string): Promise<string[]> {
  return [...(await store.newestByTag(repository)).keys()].sort(codeOrder);
}

/** Every served repository name, sorted. */
export async function catalog(store: ArchiveStore): Promise<string[]> {
  return (await store.repositories()).map(servedName).sort(codeOrder);
}

/** Sorted by code unit, as the spec's lexical order and `last` compare. */
function codeOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A descriptor of a referrer, as the referrers API lists it. */
export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/**
 * The manifests whose subject is `digest` in the repository: OCI referrers and cosign's tagged
 * attachments (whose tag names their subject), each once, in the order stored.
 */
export async function referrersOf(
  store: ArchiveStore,
  repository: string,
  digest: string,
): Promise<ReferrerDescriptor[]> {
  const seen = new Set<string>();
  const out: ReferrerDescriptor[] = [];
  for (const a of await attachments(store, repository)) {
    if (seen.has(a.descriptor.digest)) continue;
    const subject = a.tag ? cosignSubject(a.tag) : await subjectOf(store, a.descriptor.digest);
    if (subject !== digest) continue;
    seen.add(a.descriptor.digest);
    const doc = await store.readBlob(a.descriptor.digest, MAX_MANIFEST_BYTES);
    out.push(describe(a, JSON.parse(doc.toString('utf8'))));
  }
  return out;
}

async function subjectOf(store: ArchiveStore, digest: string): Promise<string | undefined> {
  const doc = JSON.parse((await store.readBlob(digest, MAX_MANIFEST_BYTES)).toString('utf8')) as {
    subject?: { digest?: string };
  };
  return doc.subject?.digest;
}

/** artifactType as the spec says: the manifest's own, else its config's media type. */
function describe(
  a: StoredAttachment,
  doc: { artifactType?: string; config?: { mediaType?: string }; annotations?: Record<string, string> },
): ReferrerDescriptor {
  const artifactType = doc.artifactType ?? a.descriptor.artifactType ?? doc.config?.mediaType;
  return {
    mediaType: a.descriptor.mediaType,
    digest: a.descriptor.digest,
    size: a.descriptor.size,
    ...(artifactType ? { artifactType } : {}),
    ...(doc.annotations ? { annotations: doc.annotations } : {}),
  };
}
