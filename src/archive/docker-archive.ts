/**
 * The docker-archive writer: the format of `docker save` (before v25), `podman save` and skopeo, with
 * uncompressed layers, manifest.json, repositories, and the legacy per-layer directories older docker
 * versions load. Several images may share one archive (layers stored once).
 *
 * The archive's layout depends on the layers' decompressed sizes, which a manifest does not give. Most
 * layers foretell theirs (a gzip stream ends with its length; predictedPlainSize): when every layer does,
 * the layout is computed up front as for the OCI formats, and every layer is decompressed in parallel
 * straight to its place. Otherwise, or when a prediction proves wrong, the archive is written front to
 * back: all metadata first, then each layer, its header written after its data once the size is known.
 * Downloads still run in parallel there: the layer being written streams straight from the network into
 * the archive; layers that arrive early wait in spool files beside the archive (usually never leaving
 * the page cache) and are decompressed from there in their turn.
 */
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { AtomicFile, SyncAhead } from '../core/atomic.js';
import { StowageError } from '../errors.js';
import { DigestVerifier, digestMismatch } from '../image/digest.js';
import { MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import { decompressed, predictedPlainSize, SIZE_HINT_BYTES } from './decompress.js';
import { type DockerArchiveImage, dockerMetadata, type LayerJob } from './docker-metadata.js';
import { ArchiveHasher, type HashSegment } from './hasher.js';
import { type BlobFetcher, type PreparedArchive, settleArchive, type WriteOptions } from './oci-archive.js';
import { PositionedWriter, runQueue, WRITE_BATCH } from './positioned.js';
import { archiveMtime, BLOCK, END_OF_ARCHIVE, entryHeader, paddedSize, type TarEntry } from './tar.js';

/** An append-only temporary file that can be read while it is still being written. */
class Spool {
  private written = 0;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private done = false;
  private failed: unknown;
  private wake: (() => void) | undefined;
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
  ) {}

  static async create(path: string): Promise<Spool> {
    return new Spool(path, await open(path, 'wx+', 0o600));
  }

  /** Appends a chunk; bytes reach the file (and the reader) in batches of WRITE_BATCH. */
  async append(chunk: Uint8Array): Promise<void> {
    this.pending.push(chunk);
    this.pendingBytes += chunk.byteLength;
    if (this.pendingBytes >= WRITE_BATCH) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.pendingBytes) return;
    const chunks = this.pending;
    const n = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    await this.fh.writev(chunks, this.written);
    this.written += n;
    this.wake?.();
  }

  async end(error?: unknown): Promise<void> {
    if (error === undefined) await this.flush();
    this.done = true;
    this.failed = error;
    this.wake?.();
  }

  async *read(): AsyncGenerator<Buffer> {
    let pos = 0;
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      if (this.failed) throw this.failed;
      if (pos < this.written) {
        const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, this.written - pos), pos);
        pos += bytesRead;
        yield Buffer.from(buf.subarray(0, bytesRead));
      } else if (this.done) {
        return;
      } else {
        await new Promise<void>((r) => {
          this.wake = r;
        });
        this.wake = undefined;
      }
    }
  }

  async dispose(): Promise<void> {
    await this.fh.close().catch(() => {});
    await unlink(this.path).catch(() => {});
  }
}

/**
 * Writes a docker-archive at `path` (atomically, with `path.sha256` beside it). Every layer is checked
 * twice: the downloaded bytes against the manifest's digest, the decompressed bytes against the
 * config's diff_id.
 */
export async function writeDockerArchive(
  path: string,
  images: DockerArchiveImage[],
  opts: WriteOptions,
): Promise<PreparedArchive> {
  const mtime = archiveMtime(opts.env);
  const { entries, layers } = dockerMetadata(images);
  const meta = metadataBytes(entries, mtime);
  const sizes = await plainSizes(layers, opts);
  if (sizes) {
    try {
      return await writeLaidOut(path, meta, layers, sizes, mtime, opts);
    } catch (e) {
      if (!(e instanceof SizeMisprediction)) throw e;
    }
  }
  return writeInOrder(path, meta, layers, mtime, opts);
}

/** The metadata entries' bytes, headers and padding included: the start of the archive. */
function metadataBytes(entries: [TarEntry, Buffer][], mtime: number): Buffer {
  const parts: Buffer[] = [];
  for (const [e, data] of entries) {
    parts.push(entryHeader(e, mtime));
    if (e.type === 'file') parts.push(data, Buffer.alloc(paddedSize(data.length) - data.length));
  }
  return Buffer.concat(parts);
}

/** A layer's tar header, which must fit one block. */
function layerHeader(layer: LayerJob, size: number, mtime: number): Buffer {
  const header = entryHeader({ name: layer.name, type: 'file', size }, mtime);
  if (header.length !== BLOCK)
    throw new StowageError('INTERNAL', `layer name ${layer.name} needs a long header`);
  return header;
}

/** The compressed bytes of a layer, counted into its digest check as they pass. */
async function* verified(body: AsyncIterable<Uint8Array>, check: DigestVerifier): AsyncGenerator<Uint8Array> {
  for await (const c of body) {
    check.update(c);
    yield c;
  }
}

/**
 * Whether a layer's decompressed bytes are hashed against its diff_id: not when this compressed layer
 * was checked to decompress to it before (its digest, checked as it is read, and gzip's CRC-32 vouch
 * for the same bytes).
 */
function needsDiffIdCheck(layer: LayerJob, opts: WriteOptions): boolean {
  return opts.diffIds?.get(layer.source.digest) !== layer.diffId;
}

/** Every checked layer's decompressed digest, as hashed while written, against the config's diff_ids. */
function checkDiffIds(layers: LayerJob[], hex: string[], opts: WriteOptions): void {
  for (const [i, layer] of layers.entries()) {
    const actual = `sha256:${hex[i]}`;
    if (actual !== layer.diffId) {
      throw digestMismatch(
        `layer ${layer.source.digest} uncompressed`,
        actual,
        layer.diffId,
        "the image config's diff_id does not describe this layer",
      );
    }
    opts.diffIds?.checked(layer.source.digest, layer.diffId);
  }
}

/** Thrown where a layer's decompressed size is not the one foretold: the archive is written in order instead. */
class SizeMisprediction extends Error {}

/** Every layer's foretold decompressed size, or undefined when one cannot be foretold. */
async function plainSizes(layers: LayerJob[], opts: WriteOptions): Promise<number[] | undefined> {
  const tail = opts.tail;
  if (!tail || layers.length === 0) return undefined;
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  const sizes: (number | undefined)[] = layers.map(() => undefined);
  await runQueue([...layers.entries()], opts.concurrency, controller, async ([i, { source: d }]) => {
    // A failed range request only costs the prediction; the download itself reports real errors.
    const end = d.mediaType.endsWith('gzip')
      ? await tail(d, SIZE_HINT_BYTES, signal).catch(() => undefined)
      : undefined;
    sizes[i] = predictedPlainSize(d.mediaType, d.size, end);
    if (sizes[i] === undefined) throw new SizeMisprediction();
  }).catch((e: unknown) => {
    if (!(e instanceof SizeMisprediction)) throw e;
  });
  return sizes.every((n) => n !== undefined) ? (sizes as number[]) : undefined;
}

/**
 * The archive laid out from foretold sizes: metadata, then each layer's header, data and padding, at
 * offsets known before any byte arrives. Layers download and decompress in parallel, each straight to its
 * place; the hasher follows in file order and hashes each layer's bytes on their own too (its diff_id).
 */
async function writeLaidOut(
  path: string,
  meta: Buffer,
  layers: LayerJob[],
  sizes: number[],
  mtime: number,
  opts: WriteOptions,
): Promise<PreparedArchive> {
  const segments: HashSegment[] = [{ start: 0, length: meta.length }];
  let end = meta.length;
  const placed = layers.map((layer, i) => {
    const size = sizes[i]!;
    const at = end;
    segments.push({ start: at, length: BLOCK });
    const segment = segments.length;
    segments.push({ start: at + BLOCK, length: size, own: needsDiffIdCheck(layer, opts) });
    const pad = paddedSize(size) - size;
    if (pad) segments.push({ start: at + BLOCK + size, length: pad });
    end = at + BLOCK + paddedSize(size);
    return { layer, size, at, segment, header: layerHeader(layer, size, mtime) };
  });
  segments.push({ start: end, length: END_OF_ARCHIVE.length });
  const file = await AtomicFile.create(path);
  const fh = file.handle;
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  let hasher: ArchiveHasher | undefined;
  try {
    // Everything but the layers' data goes down first; padding is zero already (truncate).
    await fh.truncate(end + END_OF_ARCHIVE.length);
    await fh.write(meta, 0, meta.length, 0);
    for (const p of placed) await fh.write(p.header, 0, BLOCK, p.at);
    await fh.write(END_OF_ARCHIVE, 0, END_OF_ARCHIVE.length, end);
    hasher = new ArchiveHasher(file.tmpPath, segments, {
      archive: opts.checksum !== false,
      separateParts: true,
    });
    const data = new Set(placed.map((p) => p.segment));
    for (const [i, seg] of segments.entries()) if (!data.has(i)) hasher.written(i, seg.length);
    const archiveHasher = hasher;
    const writeback = new SyncAhead(fh);
    opts.onProgress?.({
      type: 'plan',
      blobs: layers.length,
      totalBytes: layers.reduce((n, l) => n + l.source.size, 0),
    });
    await runQueue(placed, opts.concurrency, controller, async (p) => {
      const { source } = p.layer;
      opts.onProgress?.({ type: 'blob-start', digest: source.digest, size: source.size });
      const compressed = new DigestVerifier(source.digest, source.size, `layer ${source.digest}`);
      const out = new PositionedWriter(fh, p.at + BLOCK, writeback, (n) =>
        archiveHasher.written(p.segment, n),
      );
      for await (const c of decompressed(verified(await opts.fetch(source, signal), compressed))) {
        if (out.bytes + c.byteLength > p.size) throw new SizeMisprediction();
        if (await out.push(c)) {
          const bytes = compressed.bytes;
          opts.onProgress?.({ type: 'blob-progress', digest: source.digest, bytes, size: source.size });
        }
      }
      compressed.finish();
      if (out.bytes !== p.size) throw new SizeMisprediction();
      await out.flush();
      opts.onProgress?.({ type: 'blob-done', digest: source.digest, size: source.size });
    });
    await writeback.settle();
    const [{ archive: sha256, own }] = await Promise.all([archiveHasher.finish(), fh.datasync()]);
    checkDiffIds(
      layers.filter((l) => needsDiffIdCheck(l, opts)),
      own,
      opts,
    );
    opts.onProgress?.({ type: 'finalizing', path });
    return await settleArchive(file, { path, sha256, size: end + END_OF_ARCHIVE.length }, opts.defer);
  } catch (e) {
    controller.abort();
    hasher?.abort();
    await file.abort();
    if (opts.signal?.aborted) throw new StowageError('ABORTED', `writing ${path} was aborted`);
    throw e;
  }
}

/** The archive written front to back, each layer's header once its size is known (see the top). */
async function writeInOrder(
  path: string,
  meta: Buffer,
  layers: LayerJob[],
  mtime: number,
  opts: WriteOptions,
): Promise<PreparedArchive> {
  const file = await AtomicFile.create(path);
  const fh = file.handle;
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  const hasher = new ArchiveHasher(file.tmpPath, [{ start: 0, length: -1 }], {
    archive: opts.checksum !== false,
    separateParts: true,
  });
  const spools = new Map<number, Spool>();
  const writeback = new SyncAhead(fh);
  try {
    await fh.write(meta, 0, meta.length, 0);
    let pos = meta.length;
    hasher.written(0, pos);
    opts.onProgress?.({
      type: 'plan',
      blobs: layers.length,
      totalBytes: layers.reduce((n, l) => n + l.source.size, 0),
    });

    // Downloads start in layer order. A layer whose turn has come when its response arrives streams
    // straight into the archive; one that arrives early goes to a spool, read back (following the
    // download if it is still running) in its turn.
    let head = 0;
    const slots = layers.map(() => deferred<AsyncIterable<Uint8Array>>());
    for (const s of slots) s.promise.catch(() => {});
    let next = 0;
    let firstError: unknown;
    const fail = (e: unknown) => {
      firstError ??= e;
      controller.abort();
      for (const s of slots) s.reject(e);
    };
    const downloader = async () => {
      while (next < layers.length && !signal.aborted) {
        const i = next++;
        const layer = layers[i]!;
        try {
          opts.onProgress?.({ type: 'blob-start', digest: layer.source.digest, size: layer.source.size });
          const body = await opts.fetch(layer.source, signal);
          if (i === head) {
            // The writer consumes it; this download slot is busy until then.
            await new Promise<void>((resolve, reject) => slots[i]!.resolve(wrap(body, resolve, reject)));
          } else {
            const spool = await Spool.create(`${file.tmpPath}.layer${i}`);
            spools.set(i, spool);
            slots[i]!.resolve(spool.read());
            try {
              for await (const c of body) await spool.append(c);
              await spool.end();
            } catch (e) {
              await spool.end(e);
              throw e;
            }
          }
        } catch (e) {
          fail(e);
          return;
        }
      }
    };
    const downloads = Array.from(
      { length: Math.max(1, Math.min(opts.concurrency, layers.length)) },
      downloader,
    );

    const writer = async () => {
      for (; head < layers.length; head++) {
        const layer = layers[head]!;
        const body = await slots[head]!.promise;
        const compressed = new DigestVerifier(
          layer.source.digest,
          layer.source.size,
          `layer ${layer.source.digest}`,
        );
        const headerPos = pos;
        const dataStart = pos + BLOCK;
        // The uncompressed bytes are checked against the diff_id by the hasher as they are written.
        const tapped = needsDiffIdCheck(layer, opts);
        if (tapped) hasher.openTap(dataStart);
        const out = new PositionedWriter(fh, dataStart, writeback, (n) => {
          if (tapped) hasher.tapWritten(dataStart + n);
        });
        for await (const c of decompressed(verified(body, compressed))) {
          if (await out.push(c)) {
            opts.onProgress?.({
              type: 'blob-progress',
              digest: layer.source.digest,
              bytes: compressed.bytes,
              size: layer.source.size,
            });
          }
        }
        compressed.finish();
        await out.flush();
        const at = dataStart + out.bytes;
        const size = at - dataStart;
        const pad = paddedSize(size) - size;
        if (pad) await fh.write(Buffer.alloc(pad), 0, pad, at);
        await fh.write(layerHeader(layer, size, mtime), 0, BLOCK, headerPos);
        pos = dataStart + paddedSize(size);
        if (tapped) hasher.closeTap(at);
        hasher.written(0, pos);
        await spools.get(head)?.dispose();
        spools.delete(head);
        opts.onProgress?.({ type: 'blob-done', digest: layer.source.digest, size: layer.source.size });
      }
    };
    try {
      await writer();
    } catch (e) {
      fail(e);
    }
    await Promise.all(downloads);
    if (firstError !== undefined) throw firstError;
    await fh.write(END_OF_ARCHIVE, 0, END_OF_ARCHIVE.length, pos);
    pos += END_OF_ARCHIVE.length;
    await fh.truncate(pos);
    await writeback.settle();
    hasher.close(0, pos);
    const [{ archive: sha256, taps }] = await Promise.all([hasher.finish(), fh.datasync()]);
    checkDiffIds(
      layers.filter((l) => needsDiffIdCheck(l, opts)),
      taps,
      opts,
    );
    opts.onProgress?.({ type: 'finalizing', path });
    return await settleArchive(file, { path, sha256, size: pos }, opts.defer);
  } catch (e) {
    controller.abort();
    hasher.abort();
    for (const s of spools.values()) await s.dispose();
    await file.abort();
    if (opts.signal?.aborted) throw new StowageError('ABORTED', `writing ${path} was aborted`);
    throw e;
  }
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Passes a body through, reporting when it has been consumed (or failed). */
function wrap(
  body: AsyncIterable<Uint8Array>,
  done: () => void,
  failed: (e: unknown) => void,
): AsyncIterable<Uint8Array> {
  return (async function* () {
    try {
      yield* body;
      done();
    } catch (e) {
      failed(e);
      throw e;
    }
  })();
}

/** Reads a small blob (a config) fully, digest-checked. */
export async function readSmallBlob(fetch: BlobFetcher, d: Descriptor, signal: AbortSignal): Promise<Buffer> {
  if (d.size > MAX_MANIFEST_BYTES) {
    throw new StowageError(
      'TOO_LARGE',
      `config ${d.digest} is ${d.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`,
    );
  }
  const v = new DigestVerifier(d.digest, d.size, `config ${d.digest}`);
  const parts: Buffer[] = [];
  for await (const c of await fetch(d, signal)) {
    v.update(c);
    parts.push(Buffer.from(c));
  }
  v.finish();
  return Buffer.concat(parts);
}
