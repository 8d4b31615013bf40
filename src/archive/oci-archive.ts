import { AtomicFile, SyncAhead } from '../core/atomic.js';
import type { ProgressListener } from '../core/progress.js';
import { StowageError } from '../errors.js';
import { DigestVerifier, digestAlgorithm, digestHex, digestMismatch } from '../image/digest.js';
import { MediaType } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import { ArchiveHasher, type HashSegment } from './hasher.js';
import { PositionedWriter, runQueue } from './positioned.js';
import { archiveMtime, END_OF_ARCHIVE, entryHeader, paddedSize, type TarEntry } from './tar.js';

/** Annotation keys that name an image in an OCI layout's index.json. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';

export interface ArchiveImage {
  /** The manifest or index the archive names. */
  descriptor: Descriptor;
  /** Annotations for its index.json entry (written in sorted key order). */
  annotations: Record<string, string>;
}

export interface ArchiveContent {
  images: ArchiveImage[];
  /** Manifests and indexes held in memory, by digest. */
  documents: Map<string, Buffer>;
  /** Blobs to stream (configs and layers), by digest. */
  blobs: Descriptor[];
  /** Files of the caller's own, written right after index.json (a bundle's manifest). */
  files?: { name: string; data: Buffer }[] | undefined;
}

export type BlobFetcher = (descriptor: Descriptor, signal: AbortSignal) => Promise<AsyncIterable<Uint8Array>>;
/** A blob's last `length` bytes, where the source can give them cheaply; else undefined. */
export type BlobTailFetcher = (
  descriptor: Descriptor,
  length: number,
  signal: AbortSignal,
) => Promise<Buffer | undefined>;

export interface WriteOptions {
  fetch: BlobFetcher;
  /** Lets docker-archive foretell layer sizes and lay the archive out up front (see docker-archive.ts). */
  tail?: BlobTailFetcher | undefined;
  /** Blobs downloaded at once. */
  concurrency: number;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  env?: NodeJS.ProcessEnv;
  /**
   * Leave the finished archive aside: the caller moves it into place with the result's commit() (or
   * removes it with abort()). Without it the archive is moved into place before the writer returns.
   */
  defer?: boolean | undefined;
  /** Hash the whole archive and write PATH.sha256 (default); false saves that pass (--no-checksum). */
  checksum?: boolean | undefined;
  /** docker-archive: layers checked against their diff_id before (see engine/digest-cache.ts). */
  diffIds?: KnownDiffIds | undefined;
}

/** Which diff_id a compressed layer was checked to decompress to; told of each one checked now. */
export interface KnownDiffIds {
  get(compressed: string): string | undefined;
  checked(compressed: string, diffId: string): void;
}

export interface WrittenArchive {
  path: string;
  /** sha256 (hex) of the whole archive file, also written to PATH.sha256; '' when not asked for. */
  sha256: string;
  size: number;
}

/** A finished archive, in place or (with `defer`) still aside. */
export interface PreparedArchive extends WrittenArchive {
  /** Writes PATH.sha256 and moves the archive into place. */
  commit(): Promise<void>;
  /** Removes the archive left aside; never throws. */
  abort(): Promise<void>;
}

/** Commits a finished archive now, or hands the commit to the caller (`defer`). */
export async function settleArchive(
  file: AtomicFile,
  written: WrittenArchive,
  defer: boolean | undefined,
): Promise<PreparedArchive> {
  const prepared = {
    ...written,
    commit: () => (written.sha256 ? file.commitWithChecksum(written.sha256) : file.commitWithoutChecksum()),
    abort: () => file.abort(),
  };
  if (!defer) await prepared.commit();
  return prepared;
}

/** Counts a blob's bytes as they arrive, against its declared size (its digest is checked elsewhere). */
class SizeCheck {
  bytes = 0;
  constructor(
    private readonly size: number,
    private readonly what: string,
  ) {}
  update(chunk: Uint8Array): void {
    this.bytes += chunk.byteLength;
    if (this.bytes > this.size) {
      throw new StowageError(
        'DIGEST_MISMATCH',
        `${this.what}: received more than the ${this.size} bytes its descriptor declares`,
      );
    }
  }
  finish(): void {
    if (this.bytes !== this.size) {
      throw new StowageError(
        'DIGEST_MISMATCH',
        `${this.what}: received ${this.bytes} bytes, the descriptor declares ${this.size}`,
      );
    }
  }
}

/** The blobs' digests, as the hasher computed them from the file, against their descriptors. */
function checkInPlace(blobs: Descriptor[], hex: string[]): void {
  for (const [i, blob] of blobs.entries()) {
    const actual = `sha256:${hex[i]}`;
    if (actual !== blob.digest) throw digestMismatch(`blob ${blob.digest}`, actual, blob.digest);
  }
}

/** The OCI image layout's index.json for these images, with a fixed key order. */
export function buildIndexJson(images: ArchiveImage[]): Buffer {
  const manifests = images.map(({ descriptor: d, annotations }) => {
    const entry: Record<string, unknown> = { mediaType: d.mediaType, digest: d.digest, size: d.size };
    // Attachments (signatures, SBOMs) say what they are, as the referrers listing does.
    if (d.artifactType) entry.artifactType = d.artifactType;
    const keys = Object.keys(annotations).sort();
    if (keys.length > 0) entry.annotations = Object.fromEntries(keys.map((k) => [k, annotations[k]]));
    return entry;
  });
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }));
}

export const OCI_LAYOUT_FILE = Buffer.from('{"imageLayoutVersion":"1.0.0"}');

function compareDigest(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The archive's layout, computed before any blob arrives. Entry order:
 *   oci-layout, index.json, the caller's files, blobs/, blobs/<alg>/ (each algorithm in order), then every blob
 *   (manifests, configs, layers alike) in digest order.
 */
export function layoutOciArchive(
  content: ArchiveContent,
  mtime: number,
): {
  entries: { header: Buffer; offset: number; data?: Buffer; blob?: Descriptor }[];
  size: number;
} {
  const indexJson = buildIndexJson(content.images);
  const all = new Map<string, { descriptor: Descriptor; data?: Buffer }>();
  for (const [digest, data] of content.documents) {
    all.set(digest, { descriptor: { mediaType: '', digest, size: data.length }, data });
  }
  for (const b of content.blobs) if (!all.has(b.digest)) all.set(b.digest, { descriptor: b });
  const sorted = [...all.values()].sort((a, b) => compareDigest(a.descriptor.digest, b.descriptor.digest));
  const algorithms = [...new Set(sorted.map((b) => digestAlgorithm(b.descriptor.digest)))].sort();

  const entries: { header: Buffer; offset: number; data?: Buffer; blob?: Descriptor }[] = [];
  let offset = 0;
  const push = (entry: TarEntry, data?: Buffer, blob?: Descriptor) => {
    const header = entryHeader(entry, mtime);
    entries.push({
      header,
      offset: offset + header.length,
      ...(data ? { data } : {}),
      ...(blob ? { blob } : {}),
    });
    offset += header.length + paddedSize(entry.type === 'file' ? entry.size : 0);
  };
  push({ name: 'oci-layout', type: 'file', size: OCI_LAYOUT_FILE.length }, OCI_LAYOUT_FILE);
  push({ name: 'index.json', type: 'file', size: indexJson.length }, indexJson);
  for (const f of content.files ?? []) push({ name: f.name, type: 'file', size: f.data.length }, f.data);
  push({ name: 'blobs', type: 'directory', size: 0 });
  for (const alg of algorithms) push({ name: `blobs/${alg}`, type: 'directory', size: 0 });
  for (const b of sorted) {
    const d = b.descriptor;
    const name = `blobs/${digestAlgorithm(d.digest)}/${digestHex(d.digest)}`;
    push({ name, type: 'file', size: d.size }, b.data, b.data ? undefined : d);
  }
  return { entries, size: offset + END_OF_ARCHIVE.length };
}

/**
 * Writes an oci-archive: the layout is computed first, then blobs are downloaded in parallel and each
 * is written straight to its final offset. Two worker threads follow the writes in file order, reading
 * them back from the page cache: one computes the archive's sha256, the other every blob's digest
 * (checked before the archive is moved into place), so the main thread only moves bytes; sizes are
 * checked as bytes stream in.
 * The file appears at `path` only when complete and verified, with `path.sha256` beside it; on failure
 * nothing is left behind.
 */
export async function writeOciArchive(
  path: string,
  content: ArchiveContent,
  opts: WriteOptions,
): Promise<PreparedArchive> {
  const { entries, size } = layoutOciArchive(content, archiveMtime(opts.env));
  const file = await AtomicFile.create(path);
  const fh = file.handle;
  const controller = new AbortController();
  let hasher: ArchiveHasher | undefined;
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  try {
    await fh.truncate(size);
    const segments: HashSegment[] = [];
    const pending: { blob: Descriptor; offset: number; segment: number; inPlace: boolean }[] = [];
    // Headers and in-memory documents first: one buffer per entry.
    for (const { header: h, offset, data, blob } of entries) {
      const headerStart = offset - h.length;
      if (blob) {
        await fh.write(h, 0, h.length, headerStart);
        segments.push({ start: headerStart, length: h.length });
        // A sha256 blob's digest is computed by a worker from the file (see the top); others here.
        const inPlace = digestAlgorithm(blob.digest) === 'sha256';
        pending.push({ blob, offset, segment: segments.length, inPlace });
        segments.push({ start: offset, length: blob.size, own: inPlace });
        const pad = paddedSize(blob.size) - blob.size;
        if (pad) segments.push({ start: offset + blob.size, length: pad });
      } else {
        const body = Buffer.alloc(h.length + paddedSize(data?.length ?? 0));
        h.copy(body);
        data?.copy(body, h.length);
        await fh.write(body, 0, body.length, headerStart);
        segments.push({ start: headerStart, length: body.length });
      }
    }
    const endOffset = size - END_OF_ARCHIVE.length;
    await fh.write(END_OF_ARCHIVE, 0, END_OF_ARCHIVE.length, endOffset);
    segments.push({ start: endOffset, length: END_OF_ARCHIVE.length });
    hasher = new ArchiveHasher(file.tmpPath, segments, {
      archive: opts.checksum !== false,
      separateParts: true,
    });
    // Everything but the blobs is on disk; the padding after each blob is zero already (truncate).
    const blobSegments = new Set(pending.map((p) => p.segment));
    for (const [i, seg] of segments.entries()) if (!blobSegments.has(i)) hasher.written(i, seg.length);
    const archiveHasher = hasher;

    const writeback = new SyncAhead(fh);

    const totalBytes = pending.reduce((n, p) => n + p.blob.size, 0);
    opts.onProgress?.({ type: 'plan', blobs: pending.length, totalBytes });

    const downloadOne = async (p: (typeof pending)[number]) => {
      const { blob } = p;
      opts.onProgress?.({ type: 'blob-start', digest: blob.digest, size: blob.size });
      const verifier = p.inPlace
        ? new SizeCheck(blob.size, `blob ${blob.digest}`)
        : new DigestVerifier(blob.digest, blob.size, `blob ${blob.digest}`);
      const body = await opts.fetch(blob, signal);
      const out = new PositionedWriter(fh, p.offset, writeback, (done) =>
        archiveHasher.written(p.segment, done),
      );
      for await (const chunk of body) {
        verifier.update(chunk);
        if (await out.push(chunk)) {
          opts.onProgress?.({
            type: 'blob-progress',
            digest: blob.digest,
            bytes: verifier.bytes,
            size: blob.size,
          });
        }
      }
      verifier.finish();
      await out.flush();
      opts.onProgress?.({ type: 'blob-done', digest: blob.digest, size: blob.size });
    };
    await runQueue(pending, opts.concurrency, controller, downloadOne);
    // Flush to disk while the hasher finishes its tail.
    await writeback.settle();
    const [{ archive: sha256, own }] = await Promise.all([archiveHasher.finish(), fh.datasync()]);
    checkInPlace(
      pending.filter((p) => p.inPlace).map((p) => p.blob),
      own,
    );
    opts.onProgress?.({ type: 'finalizing', path });
    return await settleArchive(file, { path, sha256, size }, opts.defer);
  } catch (e) {
    controller.abort();
    hasher?.abort();
    await file.abort();
    if (opts.signal?.aborted) throw new StowageError('ABORTED', `writing ${path} was aborted`);
    throw e;
  }
}
