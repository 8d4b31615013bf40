/**
 * A stored version's oci-archive as a virtual file: the tar's layout is computed from the sizes the
 * store records (the same layout `stowage pull` and `stowage archives export` write, so the same bytes
 * and sha256), and any byte range of it is streamed from the headers, the documents and the blob files
 * without building the archive. This is what the service's download answers Range requests from.
 */
import { createHash } from 'node:crypto';
import { archiveAnnotations } from '../archive/names.js';
import { type ArchiveImage, layoutOciArchive, REF_NAME_ANNOTATION } from '../archive/oci-archive.js';
import { archiveMtime, END_OF_ARCHIVE, paddedSize } from '../archive/tar.js';
import { StowageError } from '../errors.js';
import { parseIndex, parseManifest } from '../image/documents.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import { parseReference, withDefaultTag } from '../reference/reference.js';
import type { ArchiveStore } from './archive-store.js';
import type { StoredVersion } from './store.js';

type Segment =
  | { start: number; length: number; kind: 'buffer'; data: Buffer }
  | { start: number; length: number; kind: 'blob'; digest: string }
  | { start: number; length: number; kind: 'zeros' };

export interface ArchiveView {
  size: number;
  /** Bytes [start, end] (inclusive, as in HTTP Range). */
  read(start: number, end: number, signal?: AbortSignal): AsyncGenerator<Buffer>;
}

const ZEROS = Buffer.alloc(64 * 1024);

/** The version's whole oci-archive (every platform it holds), named REPOSITORY:TAG. */
export async function ociArchiveView(
  store: ArchiveStore,
  version: StoredVersion,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ArchiveView> {
  const documents = new Map<string, Buffer>();
  const blobs = new Map<string, Descriptor>();
  const root = version.descriptor;
  const rootBytes = await store.readBlob(root.digest);
  documents.set(root.digest, rootBytes);
  const manifests: Buffer[] = [];
  if (isIndexMediaType(root.mediaType)) {
    for (const child of parseIndex(rootBytes, `index ${root.digest}`).manifests) {
      const bytes = await store.readBlob(child.digest);
      documents.set(child.digest, bytes);
      manifests.push(bytes);
    }
  } else {
    manifests.push(rootBytes);
  }
  // What is attached to the version goes in as `archives export` writes it: its manifests listed after
  // the image, in digest order, cosign's under their tags.
  const attached: ArchiveImage[] = [];
  for (const r of version.referrers ?? []) {
    if (documents.has(r.descriptor.digest)) continue;
    const bytes = await store.readBlob(r.descriptor.digest);
    documents.set(r.descriptor.digest, bytes);
    manifests.push(bytes);
    const { mediaType, digest, size, artifactType } = r.descriptor;
    attached.push({
      descriptor: { mediaType, digest, size, ...(artifactType ? { artifactType } : {}) },
      annotations: r.tag ? { [REF_NAME_ANNOTATION]: r.tag } : {},
    });
  }
  attached.sort((a, b) => (a.descriptor.digest < b.descriptor.digest ? -1 : 1));
  for (const bytes of manifests) {
    const m = parseManifest(bytes, `a manifest of version ${version.id}`);
    for (const b of [m.config, ...m.layers])
      blobs.set(b.digest, { mediaType: b.mediaType, digest: b.digest, size: b.size });
  }
  for (const b of blobs.values()) {
    if ((await store.blobSize(b.digest)) !== b.size) {
      throw new StowageError(
        'INVALID_ARCHIVE',
        `the store ${store.path} lacks blob ${b.digest} of version ${version.id} (or it has the wrong size); run stowage verify ${store.path}`,
      );
    }
  }
  const name = withDefaultTag(parseReference(`${version.repository}:${version.tag}`));
  const { entries, size } = layoutOciArchive(
    {
      images: [
        {
          descriptor: { mediaType: root.mediaType, digest: root.digest, size: root.size },
          annotations: archiveAnnotations(name),
        },
        ...attached,
      ],
      documents,
      blobs: [...blobs.values()].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0)),
    },
    archiveMtime(env),
  );
  const segments: Segment[] = [];
  let at = 0;
  type Part =
    | { kind: 'buffer'; length: number; data: Buffer }
    | { kind: 'blob'; length: number; digest: string }
    | { kind: 'zeros'; length: number };
  const add = (s: Part) => {
    if (s.length === 0) return;
    segments.push({ ...s, start: at });
    at += s.length;
  };
  for (const e of entries) {
    add({ kind: 'buffer', length: e.header.length, data: e.header });
    const length = e.data ? e.data.length : (e.blob?.size ?? 0);
    if (e.data) add({ kind: 'buffer', length, data: e.data });
    else if (e.blob) add({ kind: 'blob', length, digest: e.blob.digest });
    add({ kind: 'zeros', length: paddedSize(length) - length });
  }
  add({ kind: 'zeros', length: END_OF_ARCHIVE.length });
  if (at !== size) throw new StowageError('INTERNAL', `archive layout of ${version.id}: ${at} != ${size}`);
  return {
    size,
    async *read(start: number, end: number, signal?: AbortSignal) {
      for (const s of segments) {
        if (s.start + s.length <= start) continue;
        if (s.start > end) break;
        signal?.throwIfAborted();
        const from = Math.max(start, s.start) - s.start;
        const to = Math.min(end, s.start + s.length - 1) - s.start; // inclusive
        if (s.kind === 'buffer') {
          yield s.data.subarray(from, to + 1);
        } else if (s.kind === 'zeros') {
          for (let n = to + 1 - from; n > 0; n -= ZEROS.length)
            yield ZEROS.subarray(0, Math.min(n, ZEROS.length));
        } else {
          for await (const chunk of store.openBlob(s.digest, { start: from, end: to }, signal)) {
            yield Buffer.isBuffer(chunk)
              ? chunk
              : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          }
        }
      }
    },
  };
}

/** The sha256 (hex) of a view's bytes. */
export async function viewSha256(view: ArchiveView, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  for await (const c of view.read(0, view.size - 1, signal)) h.update(c);
  return h.digest('hex');
}
