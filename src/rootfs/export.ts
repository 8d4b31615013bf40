/**
 * `stowage export`: an image's layers applied in order into one root filesystem tarball, without
 * extracting anything to disk.
 *
 * Two passes over the layers. The first reads headers only (file contents stream past unread) and works
 * out the final tree (merge.ts). The second streams the layers again and writes each surviving entry
 * as it passes, file contents straight from the decompressor to the output; a layer with nothing left
 * to give is not read again, and reading stops once a layer's last survivor has passed. Registry layers
 * are kept in a spool directory between the passes, so no blob is fetched twice. Memory holds the tree
 * of headers, never a file's contents.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { finished } from 'node:stream/promises';
import { decompressed } from '../archive/decompress.js';
import { ArchiveHasher } from '../archive/hasher.js';
import { GarbageBudget } from '../archive/memory.js';
import { END_OF_ARCHIVE } from '../archive/tar.js';
import { AtomicFile, SyncAhead, sha256Line, writeFileAtomic } from '../core/atomic.js';
import { scratchDir } from '../core/partials.js';
import type { ProgressListener } from '../core/progress.js';
import { drained } from '../core/streams.js';
import { planImage, readConfig } from '../engine/plan.js';
import type { ImageSource } from '../engine/source.js';
import { StowageError } from '../errors.js';
import { DigestVerifier } from '../image/digest.js';
import { parseConfig, parseManifest } from '../image/documents.js';
import { hostPlatform, type PlatformSpec } from '../image/platform.js';
import type { Descriptor, ImageConfig, ImageManifest } from '../image/schemas.js';
import type { Context } from '../registry/context.js';
import { checkOutput } from '../transfer/pull.js';
import { admitImage, openSource } from '../transports/open.js';
import { type FsNode, type Inode, type LayerEntry, nodePath, RootfsMerger } from './merge.js';
import { type FsEntry, fsEntryHeader, padding, readTar } from './tar.js';

/** One image, resolved to a single platform's manifest and config. */
export interface ResolvedImage {
  /** What the user named, fully qualified where it was a registry reference. */
  reference: string;
  source: ImageSource;
  /** The source is a registry (its blobs cost a download each time they are read). */
  remote: boolean;
  manifestDigest: string;
  manifestMediaType: string;
  manifest: ImageManifest;
  configBytes: Buffer;
  config: ImageConfig;
  /** Names the image had (for archives), e.g. "registry/repo:tag". */
  names: string[];
  close(): Promise<void>;
}

/** Opens any transport reference and picks one platform's image. */
export async function resolveImage(
  ctx: Context,
  input: string,
  platform: PlatformSpec | undefined,
  signal?: AbortSignal,
): Promise<ResolvedImage> {
  const opened = await openSource(ctx, input, { signal });
  try {
    const image = opened.images[0]!;
    await admitImage(ctx, opened, image, signal);
    const { source } = opened;
    const plan = await planImage(source, image.reference, { platform: platform ?? hostPlatform(), signal });
    const root = plan.root;
    const manifest = parseManifest(root.bytes, `manifest ${root.descriptor.digest} of ${image.asked}`);
    const configBytes = await readConfig(source, manifest.config, signal);
    const config = parseConfig(configBytes, `config ${manifest.config.digest} of ${image.asked}`);
    return {
      reference: image.asked,
      source,
      remote: opened.archive === undefined,
      manifestDigest: root.descriptor.digest,
      manifestMediaType: root.descriptor.mediaType,
      manifest,
      configBytes,
      config,
      names: image.names,
      close: () => opened.close(),
    };
  } catch (e) {
    await opened.close();
    throw e;
  }
}

/** The layers of an image as plain tar streams, each digest-checked while read. */
export class LayerReader {
  private spool: Promise<string> | undefined;
  private readonly spooled = new Set<number>();
  private readonly checked = new Set<number>();
  /** Told of each layer's first read (the one that fetches and checks it), as a pull's blobs. */
  onProgress: ProgressListener | undefined;
  constructor(
    private readonly image: ResolvedImage,
    /** Where registry layers wait between passes (created on first use, removed by close). */
    private readonly spoolParent: string,
  ) {}

  get count(): number {
    return this.image.manifest.layers.length;
  }

  describe(i: number): string {
    const d = this.image.manifest.layers[i]!;
    return `layer ${i + 1} (${d.digest}) of ${this.image.reference}`;
  }

  /**
   * The plain tar bytes of layer `i`. The first read checks the digest (and spools a registry layer
   * for the reads after it); later reads are of the same checked bytes and are not hashed again.
   */
  async open(i: number, signal: AbortSignal | undefined): Promise<AsyncIterable<Uint8Array>> {
    const d: Descriptor = this.image.manifest.layers[i]!;
    if (this.spooled.has(i)) return decompressed(createReadStream(join(await this.spool!, String(i))));
    const controller = new AbortController();
    const body = await this.image.source.getBlob(d, signal ?? controller.signal);
    if (this.checked.has(i)) return decompressed(body);
    const verifier = new DigestVerifier(d.digest, d.size, this.describe(i));
    let sink: ReturnType<typeof createWriteStream> | undefined;
    if (this.image.remote) {
      this.spool ??= scratchDir(this.spoolParent, '.stowage-export-');
      sink = createWriteStream(join(await this.spool, String(i)));
    }
    const spooled = this.spooled;
    const done = this.checked;
    const progress = this.onProgress;
    async function* checked(): AsyncGenerator<Uint8Array> {
      progress?.({ type: 'blob-start', digest: d.digest, size: d.size });
      let told = 0;
      try {
        for await (const c of body) {
          verifier.update(c);
          if (sink && !sink.write(c)) await drained(sink);
          if (progress && verifier.bytes - told >= 1 << 20) {
            told = verifier.bytes;
            progress({ type: 'blob-progress', digest: d.digest, bytes: told, size: d.size });
          }
          yield c;
        }
        verifier.finish();
        progress?.({ type: 'blob-done', digest: d.digest, size: d.size });
        done.add(i);
        if (sink) {
          sink.end();
          await finished(sink);
          spooled.add(i);
        }
      } finally {
        sink?.destroy();
      }
    }
    return decompressed(checked());
  }

  async close(): Promise<void> {
    if (this.spool) await rm(await this.spool, { recursive: true, force: true });
  }
}

/** Layers read at once in the first pass. */
const SCAN_CONCURRENCY = 2;

export interface RootfsStats {
  /** Entries written (files, directories, links, devices). */
  entries: number;
  /** Bytes of file contents written. */
  contentBytes: number;
  /** Entries read from all layers in the first pass. */
  layerEntries: number;
}

function withName(entry: FsEntry, name: string): FsEntry {
  return { ...entry, name };
}

/**
 * The root filesystem as a tar stream. Deterministic: the same layers give the same bytes (entries in
 * layer order, each written where its final version passes; headers rebuilt from the layers' metadata).
 */
export async function* rootfsTar(
  layers: LayerReader,
  stats: RootfsStats,
  signal?: AbortSignal,
): AsyncGenerator<Buffer> {
  const merger = new RootfsMerger((l) => layers.describe(l));
  const budget = new GarbageBudget();
  // First pass: headers only, SCAN_CONCURRENCY layers at a time (decompression runs on libuv's pool).
  const lists: (LayerEntry[] | undefined)[] = [];
  let next = 0;
  const scan = async () => {
    while (next < layers.count) {
      const l = next++;
      const list: LayerEntry[] = [];
      let index = 0;
      for await (const ev of readTar(await layers.open(l, signal), layers.describe(l))) {
        if (ev.kind === 'entry') {
          list.push({ index: index++, entry: ev.entry });
          budget.entry();
        } else if (ev.kind === 'data') budget.spend(ev.chunk.byteLength);
      }
      lists[l] = list;
      signal?.throwIfAborted();
    }
  };
  await Promise.all(Array.from({ length: Math.min(SCAN_CONCURRENCY, layers.count) }, scan));
  for (let l = 0; l < layers.count; l++) {
    merger.addLayer(l, lists[l]!);
    lists[l] = undefined;
  }
  stats.layerEntries = merger.entries;
  const actions = merger.actions();

  /** The headers for `node` written as `entry`, after those of its parents not written yet. */
  const emit = (node: FsNode, entry: FsEntry): Buffer[] => {
    const chain: FsNode[] = [node];
    for (let p = node.parent; p?.parent; p = p.parent) if (!p.written) chain.push(p);
    return chain.reverse().map((n) => {
      n.written = true;
      stats.entries++;
      return fsEntryHeader(withName(n === node ? entry : n.entry, nodePath(n)));
    });
  };
  const writeNode = (node: FsNode): Buffer[] => (node.written ? [] : emit(node, node.entry));

  for (let l = 0; l < layers.count; l++) {
    const todo = actions.get(l);
    if (!todo || todo.size === 0) continue;
    let remaining = todo.size;
    let index = 0;
    let copying: Inode | undefined;
    let copied = 0;
    const events = readTar(await layers.open(l, signal), layers.describe(l));
    for await (const ev of events) {
      if (ev.kind === 'entry') {
        budget.entry();
        const act = todo.get(index++);
        if (!act) continue;
        remaining--;
        if ('names' in act) {
          const primary = act.names.values().next().value!;
          yield Buffer.concat(emit(primary, { ...act.entry, type: 'file', size: ev.entry.size }));
          copying = act;
          copied = 0;
        } else {
          const out = writeNode(act);
          if (out.length) yield Buffer.concat(out);
        }
      } else if (ev.kind === 'data') {
        budget.spend(ev.chunk.byteLength);
        if (copying) {
          copied += ev.chunk.byteLength;
          stats.contentBytes += ev.chunk.byteLength;
          yield ev.chunk as Buffer;
        }
      } else if (copying) {
        const names = [...copying.names];
        const primary = names[0]!;
        const out: Buffer[] = [padding(copied)];
        const target = nodePath(primary);
        for (const n of names.slice(1))
          out.push(...emit(n, { ...copying.entry, type: 'hardlink', size: 0, linkname: target }));
        copying = undefined;
        yield Buffer.concat(out);
        if (remaining === 0) break;
      } else if (remaining === 0) {
        break;
      }
    }
    signal?.throwIfAborted();
  }
  const rest: Buffer[] = [];
  for (const node of merger.unwritten()) rest.push(...writeNode(node));
  rest.push(END_OF_ARCHIVE);
  yield Buffer.concat(rest);
}

/** Gathers small writes into large ones (headers are 512 bytes; contents come in 1 MiB chunks). */
export async function* coalesce(input: AsyncIterable<Uint8Array>, size = 1 << 20): AsyncGenerator<Buffer> {
  let parts: Uint8Array[] = [];
  let n = 0;
  for await (const c of input) {
    parts.push(c);
    n += c.byteLength;
    if (n >= size) {
      yield parts.length === 1
        ? Buffer.from(parts[0]!.buffer, parts[0]!.byteOffset, n)
        : Buffer.concat(parts, n);
      parts = [];
      n = 0;
    }
  }
  if (n) yield Buffer.concat(parts, n);
}

export interface ExportOptions {
  /** File to write, or "-" for standard output. */
  output: string;
  platform?: PlatformSpec | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

export interface ExportResult extends RootfsStats {
  reference: string;
  digest: string;
  platform: string;
  layers: number;
  path: string;
  /** Bytes written. */
  size: number;
  sha256: string;
}

/** Writes an image's root filesystem as one tarball (with a `.sha256` beside it when it is a file). */
export async function exportRootfs(ctx: Context, input: string, opts: ExportOptions): Promise<ExportResult> {
  if (opts.output !== '-') await checkOutput(opts.output, true);
  const image = await resolveImage(ctx, input, opts.platform, opts.signal);
  const layers = new LayerReader(image, opts.output === '-' ? tmpdir() : dirname(resolve(opts.output)));
  layers.onProgress = opts.onProgress;
  const sizes = image.manifest.layers.map((l) => l.size);
  opts.onProgress?.({ type: 'plan', blobs: sizes.length, totalBytes: sizes.reduce((a, b) => a + b, 0) });
  const stats: RootfsStats = { entries: 0, contentBytes: 0, layerEntries: 0 };
  const hash = createHash('sha256');
  let size = 0;
  let sha256 = '';
  let parts: Buffer[] = [];
  let pending = 0;
  let file: AtomicFile | undefined;
  let syncAhead: SyncAhead | undefined;
  const flush = async () => {
    if (pending === 0) return;
    await file!.handle.writev(parts);
    syncAhead!.wrote(pending);
    size += pending;
    parts = [];
    pending = 0;
  };
  try {
    if (opts.output === '-') {
      let closed: Error | undefined;
      const onError = (e: Error) => {
        closed = e;
      };
      process.stdout.on('error', onError);
      try {
        for await (const c of coalesce(rootfsTar(layers, stats, opts.signal))) {
          hash.update(c);
          size += c.length;
          if (!process.stdout.write(c) && !closed) await drained(process.stdout);
          if (closed)
            throw new StowageError(
              'IO',
              `standard output closed before the root filesystem was written (${closed.message})`,
            );
        }
      } finally {
        process.stdout.off('error', onError);
      }
      sha256 = hash.digest('hex');
    } else {
      file = await AtomicFile.create(opts.output);
      syncAhead = new SyncAhead(file.handle);
      // The file's sha256 is computed on a worker thread that reads back what was written.
      const hasher = new ArchiveHasher(file.tmpPath, [{ start: 0, length: -1 }]);
      try {
        for await (const c of rootfsTar(layers, stats, opts.signal)) {
          parts.push(c);
          pending += c.length;
          if (pending >= 1 << 20) await flush();
          hasher.written(0, size);
        }
        await flush();
        hasher.close(0, size);
        sha256 = (await hasher.finish()).archive;
        await syncAhead.settle();
        await file.commit();
      } catch (e) {
        hasher.abort();
        await file.abort();
        throw e;
      }
    }
  } finally {
    await layers.close();
    await image.close();
  }
  if (opts.output !== '-') await writeFileAtomic(`${opts.output}.sha256`, sha256Line(sha256, opts.output));
  const c = image.config;
  return {
    reference: image.reference,
    digest: image.manifestDigest,
    platform: [c.os, c.architecture, c.variant].filter(Boolean).join('/'),
    layers: layers.count,
    path: opts.output,
    size,
    sha256,
    ...stats,
  };
}
