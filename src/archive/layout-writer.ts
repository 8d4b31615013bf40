/**
 * Directory layouts: the OCI image layout (`oci:`) and skopeo's `dir:` layout, written a blob at a
 * time. Each blob goes straight into its own file (written aside, synced, renamed), so a blob file is
 * either complete or absent; whoever feeds it checks the digests as the bytes pass. A new directory is
 * built aside and appears only at commit; an existing OCI layout gains the new blobs (those present are
 * not written again) and, at commit, a new index.json, replaced atomically; an existing dir: layout is
 * replaced whole at commit.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { syncDir, writeFileAtomic } from '../core/atomic.js';
import { preparePartial } from '../core/partials.js';
import { StowageError } from '../errors.js';
import { digestAlgorithm, digestHex } from '../image/digest.js';
import type { Descriptor } from '../image/schemas.js';
import { type ArchiveImage, buildIndexJson, OCI_LAYOUT_FILE, REF_NAME_ANNOTATION } from './oci-archive.js';

export type LayoutKind = 'oci' | 'dir';

export const DIR_VERSION = 'Directory Transport Version: 1.1\n';

async function isEmptyDir(path: string): Promise<boolean> {
  return (await readdir(path)).length === 0;
}

/** A layout being written: put blobs and documents, then commit (or abort). */
export class LayoutWriter {
  private readonly dirs = new Set<string>();

  private constructor(
    readonly path: string,
    readonly kind: LayoutKind,
    /** Where the writing happens: the layout itself when it is an existing OCI layout, else a partial beside it. */
    private readonly root: string,
    /** What was at `path` before: nothing, a layout of this kind, or an empty directory. */
    private readonly before: 'none' | 'layout' | 'empty',
  ) {}

  /** Checks what is at `path` and starts a layout there. */
  static async begin(path: string, kind: LayoutKind): Promise<LayoutWriter> {
    const st = await stat(path).catch(() => undefined);
    if (st && !st.isDirectory())
      throw new StowageError('INVALID_ARGUMENT', `${path} exists and is not a directory`);
    const marker = kind === 'oci' ? 'oci-layout' : 'version';
    const isLayout = st ? (await stat(join(path, marker)).catch(() => undefined)) !== undefined : false;
    if (st && !isLayout && !(await isEmptyDir(path))) {
      const what = kind === 'oci' ? 'an OCI layout' : 'a dir: layout';
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${path} is a directory that is not empty and not ${what}; give a new or empty directory`,
      );
    }
    const before = !st ? 'none' : isLayout ? 'layout' : 'empty';
    // An existing OCI layout is added to in place; anything else is built aside.
    const inPlace = kind === 'oci' && before === 'layout';
    const root = inPlace ? path : await preparePartial(path);
    if (!inPlace) await mkdir(root);
    return new LayoutWriter(path, kind, root, before);
  }

  private blobPath(digest: string): string {
    return this.kind === 'oci'
      ? join(this.root, 'blobs', digestAlgorithm(digest), digestHex(digest))
      : join(this.root, digestHex(digest));
  }

  /** Whether the layout holds a blob of this size already (an existing OCI layout). */
  async has(d: { digest: string; size: number }): Promise<boolean> {
    return (await stat(this.blobPath(d.digest)).catch(() => undefined))?.size === d.size;
  }

  private async dirFor(digest: string): Promise<void> {
    if (this.kind !== 'oci') return;
    const alg = digestAlgorithm(digest);
    if (this.dirs.has(alg)) return;
    await mkdir(join(this.root, 'blobs', alg), { recursive: true });
    this.dirs.add(alg);
  }

  /** Writes one blob's bytes into its file (aside, synced, renamed). */
  async putBlob(d: Descriptor, body: AsyncIterable<Uint8Array>): Promise<void> {
    await this.dirFor(d.digest);
    const target = this.blobPath(d.digest);
    const tmp = await preparePartial(target);
    const fh = await open(tmp, 'wx', 0o644);
    try {
      let pos = 0;
      for await (const chunk of body) {
        await fh.write(chunk, 0, chunk.byteLength, pos);
        pos += chunk.byteLength;
      }
      await fh.datasync();
      await fh.close();
      await rename(tmp, target);
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw e;
    }
  }

  /**
   * Writes the documents and the index (or manifest.json), then moves the layout into place. `root` is
   * the digest of the document a dir: layout names manifest.json.
   */
  async commit(images: ArchiveImage[], documents: Map<string, Buffer>): Promise<void> {
    if (this.kind === 'dir') await this.commitDir(images, documents);
    else await this.commitOci(images, documents);
  }

  private async commitOci(images: ArchiveImage[], documents: Map<string, Buffer>): Promise<void> {
    for (const [digest, bytes] of documents) {
      if (!(await this.has({ digest, size: bytes.length }))) {
        await this.dirFor(digest);
        await writeFileAtomic(this.blobPath(digest), bytes);
      }
    }
    for (const a of this.dirs) await syncDir(join(this.root, 'blobs', a));
    let all = images;
    if (this.before === 'layout') {
      // Keep what the layout had, minus entries whose name is taken by a new image.
      const old = JSON.parse(await readFile(join(this.root, 'index.json'), 'utf8')) as {
        manifests?: Descriptor[];
      };
      const newNames = new Set(images.map((i) => i.annotations[REF_NAME_ANNOTATION]).filter(Boolean));
      const kept = (old.manifests ?? [])
        .filter((d) => {
          const n = (d.annotations as Record<string, string> | undefined)?.[REF_NAME_ANNOTATION];
          return !(n && newNames.has(n));
        })
        .map((d) => ({ descriptor: d, annotations: (d.annotations ?? {}) as Record<string, string> }));
      all = [...kept, ...images];
    }
    await writeFileAtomic(join(this.root, 'oci-layout'), OCI_LAYOUT_FILE);
    await writeFileAtomic(join(this.root, 'index.json'), buildIndexJson(all));
    if (this.root !== this.path) await this.moveIntoPlace();
  }

  private async commitDir(images: ArchiveImage[], documents: Map<string, Buffer>): Promise<void> {
    if (images.length !== 1) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `a dir: layout holds one image; ${images.length} were given`,
      );
    }
    const rootDigest = images[0]!.descriptor.digest;
    for (const [digest, bytes] of documents) {
      const name = digest === rootDigest ? 'manifest.json' : `${digestHex(digest)}.manifest.json`;
      await writeFileAtomic(join(this.root, name), bytes);
    }
    await writeFileAtomic(join(this.root, 'version'), DIR_VERSION);
    await syncDir(this.root);
    await this.moveIntoPlace();
  }

  /** The layout built aside replaces what was at `path` (an empty directory, or an old dir: layout). */
  private async moveIntoPlace(): Promise<void> {
    if (this.before !== 'none') {
      const old = `${this.root}.old`;
      await rename(this.path, old);
      await rename(this.root, this.path);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(this.root, this.path);
    }
    await syncDir(dirname(this.path));
  }

  /** Removes a layout built aside (an existing one keeps the complete blobs it gained); never throws. */
  async abort(): Promise<void> {
    if (this.root !== this.path) await rm(this.root, { recursive: true, force: true }).catch(() => {});
  }
}
