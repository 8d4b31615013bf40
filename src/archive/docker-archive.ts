/**
 * The docker-archive writer: the format of `docker save` (before v25), `podman save` and skopeo, with
 * uncompressed layers, manifest.json, repositories, and the legacy per-layer directories older docker
 * versions load. Several images may share one archive (layers stored once).
 *
 * Layer sizes are known only after decompression, so the layout cannot be computed up front as for OCI
 * formats. Instead the archive is written front to back: all metadata first (its size is known), then
 * each layer, its header written after its data once the size is known. Downloads still run in
 * parallel: the layer being written streams straight from the network into the archive; layers that
 * arrive early wait in spool files beside the archive (usually never leaving the page cache) and are
 * decompressed from there in their turn.
 */
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { StowageError } from '../errors.js';
import { DigestVerifier, digestHex, digestMismatch, sha256Digest } from '../image/digest.js';
import { MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { Descriptor, ImageConfig, ImageManifest } from '../image/schemas.js';
import { AtomicFile, SyncAhead, sha256Line, writeFileAtomic } from './atomic.js';
import { decompressed } from './decompress.js';
import { ArchiveHasher } from './hasher.js';
import type { BlobFetcher, WriteOptions, WrittenArchive } from './oci-archive.js';
import { archiveMtime, BLOCK, END_OF_ARCHIVE, entryHeader, paddedSize, type TarEntry } from './tar.js';

export interface DockerArchiveImage {
  manifest: ImageManifest;
  config: { descriptor: Descriptor; bytes: Buffer; parsed: ImageConfig };
  /** RepoTags: "registry/repository:tag". */
  repoTags: string[];
}

interface LayerJob {
  diffId: string;
  source: Descriptor;
  name: string;
}

/** The legacy layer IDs (one per layer of each image, chained by parent), as a pure function of the image. */
function legacyLayers(image: DockerArchiveImage): { id: string; parent?: string; diffId: string }[] {
  const out: { id: string; parent?: string; diffId: string }[] = [];
  let chain = '';
  let parent: string | undefined;
  for (const diffId of image.config.parsed.rootfs?.diff_ids ?? []) {
    chain = chain ? sha256Digest(`${chain} ${diffId}`) : diffId;
    const id = digestHex(sha256Digest(`${parent ?? ''}\n${chain}`));
    out.push({ id, ...(parent ? { parent } : {}), diffId });
    parent = id;
  }
  return out;
}

function splitRepoTag(t: string): [string, string] {
  const i = t.lastIndexOf(':');
  return i > t.lastIndexOf('/') ? [t.slice(0, i), t.slice(i + 1)] : [t, 'latest'];
}

/** The archive's metadata entries (everything but layer data), in archive order, with their bytes. */
export function dockerMetadata(images: DockerArchiveImage[]): {
  entries: [TarEntry, Buffer][];
  layers: LayerJob[];
} {
  const entries: [TarEntry, Buffer][] = [];
  const file = (name: string, data: Buffer) =>
    entries.push([{ name, type: 'file', size: data.length }, data]);
  const layers = new Map<string, LayerJob>();
  const manifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  const seenConfigs = new Set<string>();
  const seenLegacy = new Set<string>();
  const legacy: [TarEntry, Buffer][] = [];
  for (const image of images) {
    const diffIds = image.config.parsed.rootfs?.diff_ids ?? [];
    if (diffIds.length !== image.manifest.layers.length) {
      throw new StowageError(
        'INVALID_MANIFEST',
        `image ${image.config.descriptor.digest}: the config lists ${diffIds.length} diff_ids for ${image.manifest.layers.length} layers`,
      );
    }
    const configName = `${digestHex(image.config.descriptor.digest)}.json`;
    if (!seenConfigs.has(configName)) {
      seenConfigs.add(configName);
      file(configName, image.config.bytes);
    }
    const layerNames = diffIds.map((diffId, i) => {
      const name = `${digestHex(diffId)}.tar`;
      if (!layers.has(diffId)) layers.set(diffId, { diffId, source: image.manifest.layers[i]!, name });
      return name;
    });
    const existing = manifest.find((m) => m.Config === configName);
    if (existing) existing.RepoTags.push(...image.repoTags.filter((t) => !existing.RepoTags.includes(t)));
    else manifest.push({ Config: configName, RepoTags: [...image.repoTags], Layers: layerNames });
    const chain = legacyLayers(image);
    const top = chain.at(-1);
    for (const [i, l] of chain.entries()) {
      if (seenLegacy.has(l.id)) continue;
      seenLegacy.add(l.id);
      const json: Record<string, unknown> = { id: l.id, ...(l.parent ? { parent: l.parent } : {}) };
      if (i === chain.length - 1) {
        const c = image.config.parsed as Record<string, unknown>;
        for (const k of [
          'architecture',
          'config',
          'container',
          'container_config',
          'created',
          'docker_version',
          'os',
        ]) {
          if (c[k] !== undefined) json[k] = c[k];
        }
      }
      legacy.push([{ name: `${l.id}/VERSION`, type: 'file', size: 3 }, Buffer.from('1.0')]);
      const jb = Buffer.from(JSON.stringify(json));
      legacy.push([{ name: `${l.id}/json`, type: 'file', size: jb.length }, jb]);
      legacy.push([
        { name: `${l.id}/layer.tar`, type: 'symlink', size: 0, linkname: `../${digestHex(l.diffId)}.tar` },
        Buffer.alloc(0),
      ]);
    }
    if (top) {
      for (const t of image.repoTags) {
        const [name, tag] = splitRepoTag(t);
        repositories[name] = { ...repositories[name], [tag]: top.id };
      }
    }
  }
  entries.push(...legacy);
  file('manifest.json', Buffer.from(JSON.stringify(manifest)));
  const repoJson: Record<string, Record<string, string>> = {};
  for (const name of Object.keys(repositories).sort()) {
    const tags = repositories[name]!;
    repoJson[name] = Object.fromEntries(
      Object.keys(tags)
        .sort()
        .map((t) => [t, tags[t]!]),
    );
  }
  file('repositories', Buffer.from(JSON.stringify(repoJson)));
  return { entries, layers: [...layers.values()] };
}

/** Bytes per write to the archive and to spools. */
const WRITE_BATCH = 1 << 20;

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
): Promise<WrittenArchive> {
  const mtime = archiveMtime(opts.env);
  const { entries, layers } = dockerMetadata(images);
  const file = await AtomicFile.create(path);
  const fh = file.handle;
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  const hasher = new ArchiveHasher(file.tmpPath, [{ start: 0, length: -1 }]);
  const spools = new Map<number, Spool>();
  const writeback = new SyncAhead(fh);
  let checksumWritten = false;
  try {
    const meta: Buffer[] = [];
    for (const [e, data] of entries) {
      meta.push(entryHeader(e, mtime));
      if (e.type === 'file') meta.push(data, Buffer.alloc(paddedSize(data.length) - data.length));
    }
    const metaBuf = Buffer.concat(meta);
    await fh.write(metaBuf, 0, metaBuf.length, 0);
    let pos = metaBuf.length;
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
        let at = dataStart;
        let batch: Buffer[] = [];
        let batchBytes = 0;
        // The uncompressed bytes are checked against the diff_id by the hasher as they are written.
        hasher.openTap(dataStart);
        const flush = async () => {
          if (!batchBytes) return;
          await fh.writev(batch, at);
          at += batchBytes;
          writeback.wrote(batchBytes);
          hasher.tapWritten(at);
          batch = [];
          batchBytes = 0;
        };
        const counted = (async function* () {
          for await (const c of body) {
            compressed.update(c);
            yield c;
          }
        })();
        const plain = decompressed(counted);
        for await (const c of plain) {
          batch.push(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
          batchBytes += c.byteLength;
          if (batchBytes >= WRITE_BATCH) {
            await flush();
            opts.onProgress?.({
              type: 'blob-progress',
              digest: layer.source.digest,
              bytes: compressed.bytes,
              size: layer.source.size,
            });
          }
        }
        compressed.finish();
        await flush();
        const size = at - dataStart;
        const pad = paddedSize(size) - size;
        if (pad) await fh.write(Buffer.alloc(pad), 0, pad, at);
        const header = entryHeader({ name: layer.name, type: 'file', size }, mtime);
        if (header.length !== BLOCK)
          throw new StowageError('INTERNAL', `layer name ${layer.name} needs a long header`);
        await fh.write(header, 0, BLOCK, headerPos);
        pos = dataStart + paddedSize(size);
        hasher.closeTap(at);
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
    for (const [i, layer] of layers.entries()) {
      const actual = `sha256:${taps[i]}`;
      if (actual !== layer.diffId) {
        throw digestMismatch(
          `layer ${layer.source.digest} uncompressed`,
          actual,
          layer.diffId,
          "the image config's diff_id does not describe this layer",
        );
      }
    }
    opts.onProgress?.({ type: 'finalizing', path });
    await writeFileAtomic(`${path}.sha256`, sha256Line(sha256, path));
    checksumWritten = true;
    await file.commit({ synced: true });
    return { path, sha256, size: pos };
  } catch (e) {
    controller.abort();
    hasher.abort();
    for (const s of spools.values()) await s.dispose();
    await file.abort();
    if (checksumWritten) await unlink(`${path}.sha256`).catch(() => {});
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
