/**
 * Directory writers: the OCI image layout (`oci:`) and skopeo's `dir:` layout. Blobs download in
 * parallel, each straight into its own file (written aside, digest-checked, synced, renamed), so a
 * blob file is either complete and verified or absent. A new directory appears only when complete; an
 * existing OCI layout gains the new blobs (those already present are not fetched again) and then a new
 * index.json, replaced atomically.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { syncDir, writeFileAtomic } from '../core/atomic.js';
import { preparePartial } from '../core/partials.js';
import { StowageError } from '../errors.js';
import { DigestVerifier, digestAlgorithm, digestHex } from '../image/digest.js';
import type { Descriptor } from '../image/schemas.js';
import {
  type ArchiveContent,
  type ArchiveImage,
  buildIndexJson,
  OCI_LAYOUT_FILE,
  REF_NAME_ANNOTATION,
  type WriteOptions,
} from './oci-archive.js';
import { runQueue } from './positioned.js';

export interface WrittenLayout {
  path: string;
  /** Blobs downloaded (those already in an existing layout are not). */
  fetched: number;
}

async function writeBlobFile(
  target: string,
  d: Descriptor,
  opts: WriteOptions,
  signal: AbortSignal,
): Promise<void> {
  const tmp = await preparePartial(target);
  const fh = await open(tmp, 'wx', 0o644);
  try {
    opts.onProgress?.({ type: 'blob-start', digest: d.digest, size: d.size });
    const verifier = new DigestVerifier(d.digest, d.size, `blob ${d.digest}`);
    let pos = 0;
    for await (const chunk of await opts.fetch(d, signal)) {
      verifier.update(chunk);
      await fh.write(chunk, 0, chunk.byteLength, pos);
      pos += chunk.byteLength;
    }
    verifier.finish();
    await fh.datasync();
    await fh.close();
    await rename(tmp, target);
    opts.onProgress?.({ type: 'blob-done', digest: d.digest, size: d.size });
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
}

async function isEmptyDir(path: string): Promise<boolean> {
  return (await readdir(path)).length === 0;
}

function allBlobs(content: ArchiveContent): { docs: [string, Buffer][]; blobs: Descriptor[] } {
  return {
    docs: [...content.documents],
    blobs: content.blobs.filter((b) => !content.documents.has(b.digest)),
  };
}

/** Writes (or adds to) an OCI image layout directory. */
export async function writeOciLayout(
  path: string,
  content: ArchiveContent,
  opts: WriteOptions,
): Promise<WrittenLayout> {
  const st = await stat(path).catch(() => undefined);
  if (st && !st.isDirectory())
    throw new StowageError('INVALID_ARGUMENT', `${path} exists and is not a directory`);
  const existing = st ? await stat(join(path, 'oci-layout')).catch(() => undefined) : undefined;
  if (st && !existing && !(await isEmptyDir(path))) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${path} is a directory that is not empty and not an OCI layout; give a new or empty directory`,
    );
  }
  // A new layout is built aside and renamed into place; an existing one is added to in place.
  const root = existing ? path : await preparePartial(path);
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  try {
    if (!existing) await mkdir(root);
    const { docs, blobs } = allBlobs(content);
    const algorithms = new Set([...docs.map(([d]) => d), ...blobs.map((b) => b.digest)].map(digestAlgorithm));
    for (const a of algorithms) await mkdir(join(root, 'blobs', a), { recursive: true });
    const blobPath = (digest: string) => join(root, 'blobs', digestAlgorithm(digest), digestHex(digest));
    const present = async (d: { digest: string; size: number }) =>
      (await stat(blobPath(d.digest)).catch(() => undefined))?.size === d.size;
    const missing: Descriptor[] = [];
    for (const b of blobs) if (!(await present(b))) missing.push(b);
    opts.onProgress?.({
      type: 'plan',
      blobs: missing.length,
      totalBytes: missing.reduce((n, b) => n + b.size, 0),
    });
    await runQueue(missing, opts.concurrency, controller, (b) =>
      writeBlobFile(blobPath(b.digest), b, opts, signal),
    );
    if (signal.aborted) throw new StowageError('ABORTED', 'aborted');
    for (const [digest, bytes] of docs) {
      if (!(await present({ digest, size: bytes.length }))) await writeFileAtomic(blobPath(digest), bytes);
    }
    for (const a of algorithms) await syncDir(join(root, 'blobs', a));
    let images: ArchiveImage[] = content.images;
    if (existing) {
      // Keep what the layout had, minus entries whose name is taken by a new image.
      const old = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as {
        manifests?: Descriptor[];
      };
      const newNames = new Set(content.images.map((i) => i.annotations[REF_NAME_ANNOTATION]).filter(Boolean));
      const kept = (old.manifests ?? [])
        .filter((d) => {
          const n = (d.annotations as Record<string, string> | undefined)?.[REF_NAME_ANNOTATION];
          return !(n && newNames.has(n));
        })
        .map((d) => ({
          descriptor: d,
          annotations: (d.annotations ?? {}) as Record<string, string>,
        }));
      images = [...kept, ...content.images];
    }
    await writeFileAtomic(join(root, 'oci-layout'), OCI_LAYOUT_FILE);
    await writeFileAtomic(join(root, 'index.json'), buildIndexJson(images));
    if (!existing) {
      if (st) await rm(path, { recursive: true });
      await rename(root, path);
      await syncDir(dirname(path));
    }
    return { path, fetched: missing.length };
  } catch (e) {
    controller.abort();
    if (!existing) await rm(root, { recursive: true, force: true });
    if (opts.signal?.aborted) throw new StowageError('ABORTED', `writing ${path} was aborted`);
    throw e;
  }
}

export const DIR_VERSION = 'Directory Transport Version: 1.1\n';

/**
 * Writes skopeo's dir: layout: manifest.json (the image's manifest, or the index with --all, then each
 * instance's manifest as <hex>.manifest.json), every config and layer as <hex>, and `version`. A dir:
 * holds one image; an existing dir: layout at the path is replaced.
 */
export async function writeDirLayout(
  path: string,
  content: ArchiveContent,
  opts: WriteOptions,
): Promise<WrittenLayout> {
  if (content.images.length !== 1) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `a dir: layout holds one image; ${content.images.length} were given`,
    );
  }
  const st = await stat(path).catch(() => undefined);
  if (st && !st.isDirectory())
    throw new StowageError('INVALID_ARGUMENT', `${path} exists and is not a directory`);
  const isDirLayout = st ? (await stat(join(path, 'version')).catch(() => undefined)) !== undefined : false;
  if (st && !isDirLayout && !(await isEmptyDir(path))) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${path} is a directory that is not empty and not a dir: layout; give a new or empty directory`,
    );
  }
  const root = await preparePartial(path);
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  try {
    await mkdir(root);
    const { docs, blobs } = allBlobs(content);
    opts.onProgress?.({
      type: 'plan',
      blobs: blobs.length,
      totalBytes: blobs.reduce((n, b) => n + b.size, 0),
    });
    await runQueue(blobs, opts.concurrency, controller, (b) =>
      writeBlobFile(join(root, digestHex(b.digest)), b, opts, signal),
    );
    if (signal.aborted) throw new StowageError('ABORTED', 'aborted');
    const rootDigest = content.images[0]!.descriptor.digest;
    for (const [digest, bytes] of docs) {
      const name = digest === rootDigest ? 'manifest.json' : `${digestHex(digest)}.manifest.json`;
      await writeFileAtomic(join(root, name), bytes);
    }
    await writeFileAtomic(join(root, 'version'), DIR_VERSION);
    await syncDir(root);
    if (st) {
      const old = `${root}.old`;
      await rename(path, old);
      await rename(root, path);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(root, path);
    }
    await syncDir(dirname(path));
    return { path, fetched: blobs.length };
  } catch (e) {
    controller.abort();
    await rm(root, { recursive: true, force: true });
    if (opts.signal?.aborted) throw new StowageError('ABORTED', `writing ${path} was aborted`);
    throw e;
  }
}
