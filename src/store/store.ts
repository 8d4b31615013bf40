/**
 * The local archive store (the ArchiveStore of archive-store.ts on a file system): one OCI image layout
 * holding every version of every synced tag. Blobs are stored once, content-addressed, shared by all
 * versions of all repositories; each version (repository, tag, manifest digest) is an index.json entry
 * with annotations saying where it came from and when. skopeo, umoci and oras read the store as it is
 * (`oci:STORE:REPOSITORY:TAG` names a tag's newest version).
 *
 * Crash safety: a blob is written aside, fsynced and renamed into place before any index entry names
 * it. A change to the versions is a line appended to index.journal under the store's lock (fsynced),
 * folded into index.json (replaced atomically) at the end of a run (index-files.ts), so several
 * processes (CLI and service) can share a store. An interrupted sync leaves blobs no entry names; the
 * next sync reuses them, GC removes them.
 */

import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir, writeFileAtomic } from '../core/atomic.js';
import { partialPath, processAlive, sweepLeftovers, tmpPid, treeBytes } from '../core/partials.js';
import { FILE_READ_CHUNK } from '../core/streams.js';
import { StowageError } from '../errors.js';
import { DigestVerifier, digestHex } from '../image/digest.js';
import { MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { Descriptor } from '../image/schemas.js';
import type { ArchiveStore } from './archive-store.js';
import { type BundleHistory, LocalBundleHistory } from './bundle-history.js';
import { refuseNetworkFilesystem } from './filesystem.js';
import { IndexFiles, indexJson, type JournalOp } from './index-files.js';
import { BlobFetches, referencedBlobs } from './shared.js';
import { type StoredVersion, versionId } from './version.js';
import type { VersionPage, VersionQuery } from './version-index.js';

export { ANNOTATION, type StoredAttachment, type StoredVersion, versionId } from './version.js';
export type { VersionPage, VersionQuery } from './version-index.js';

const LOCK_STALE_MS = 10 * 60_000;
/** How much of index.json a page may read before the index is loaded whole instead (about 8,000 versions). */
const SCAN_BUDGET = 4 << 20;
/** An empty lock file (made by an older stowage killed between creating and writing it). */
const EMPTY_LOCK_STALE_MS = 5_000;

export class Store implements ArchiveStore {
  private constructor(readonly path: string) {
    this.files = new IndexFiles(path, path);
  }

  /**
   * Opens (creating if needed) the store at `path`. A writer (sync, the service) passes `sweep`: what
   * writers killed mid-blob left in .tmp goes, theirs alone, never a live one's. Readers (df, archives
   * export) leave it, so that df shows it.
   */
  static async open(
    path: string,
    opts: {
      sweep?: boolean;
      create?: boolean;
      /** Allow a network filesystem this host alone writes (see filesystem.ts). */
      networkFilesystemOneHost?: boolean | undefined;
    } = {},
  ): Promise<Store> {
    // A dry run looks at a store without making one: a store that does not exist holds nothing.
    if (opts.create === false && !(await stat(path).catch(() => undefined))) return new Store(path);
    await mkdir(join(path, 'blobs', 'sha256'), { recursive: true });
    await refuseNetworkFilesystem(path, { allow: opts.networkFilesystemOneHost });
    await mkdir(join(path, '.tmp'), { recursive: true });
    if (opts.sweep) await sweepLeftovers(join(path, '.tmp'), tmpPid);
    const layout = join(path, 'oci-layout');
    if (!(await stat(layout).catch(() => undefined))) {
      await writeFileAtomic(layout, '{"imageLayoutVersion":"1.0.0"}');
    }
    if (!(await stat(join(path, 'index.json')).catch(() => undefined))) {
      await writeFileAtomic(join(path, 'index.json'), indexJson([]));
    }
    const store = new Store(path);
    // A journal a crashed writer left: its versions go into index.json now (their blobs were durable
    // before each line was written), so other tools see them.
    if (opts.sweep) await store.flush();
    return store;
  }

  blobPath(digest: string): string {
    return join(this.path, 'blobs', 'sha256', digestHex(digest));
  }

  openBlob(
    digest: string,
    range?: { start: number; end: number },
    signal?: AbortSignal,
  ): AsyncIterable<Uint8Array> {
    return createReadStream(this.blobPath(digest), { ...range, highWaterMark: FILE_READ_CHUNK, signal });
  }

  async blobSize(digest: string): Promise<number | undefined> {
    const st = await stat(this.blobPath(digest)).catch(() => undefined);
    return st?.isFile() ? st.size : undefined;
  }

  async hasBlob(digest: string): Promise<boolean> {
    return (await stat(this.blobPath(digest)).catch(() => undefined))?.isFile() ?? false;
  }

  async readBlob(digest: string, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
    const p = this.blobPath(digest);
    const st = await stat(p).catch(() => undefined);
    if (!st) throw new StowageError('NOT_FOUND', `the store ${this.path} has no blob ${digest}`);
    if (st.size > limit) throw new StowageError('TOO_LARGE', `blob ${digest} is over ${limit} bytes`);
    return readFile(p);
  }

  /** Writes a blob from a stream, digest-checked; written aside, fsynced, then renamed into place. */
  async putBlob(d: Descriptor, body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    if (await this.hasBlob(d.digest)) {
      // Still checked: the bytes offered must be the blob (a damaged upload is an error whatever the
      // store already holds).
      const v = new DigestVerifier(d.digest, d.size, `blob ${d.digest}`);
      for await (const c of body) v.update(c);
      v.finish();
      return;
    }
    const tmp = partialPath(join(this.path, '.tmp', digestHex(d.digest)));
    const fh = await open(tmp, 'wx', 0o644);
    const v = new DigestVerifier(d.digest, d.size, `blob ${d.digest}`);
    try {
      let batch: Uint8Array[] = [];
      let n = 0;
      for await (const c of body) {
        v.update(c);
        batch.push(c);
        n += c.byteLength;
        if (n >= 1 << 20) {
          await fh.writev(batch);
          batch = [];
          n = 0;
        }
      }
      if (n) await fh.writev(batch);
      v.finish();
      await fh.datasync();
      await fh.close();
      await rename(tmp, this.blobPath(d.digest));
    } catch (e) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw this.full(e, `blob ${d.digest}`);
    }
  }

  /** A full disk named as the store's (the service shows the path as <store>), anything else as it is. */
  private full(e: unknown, what: string): unknown {
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') return e;
    return new StowageError(
      'IO',
      `no space left in the store ${this.path} while writing ${what}; free some space (stowage sync runs retention and removes unreferenced blobs) or move the store, then run again`,
      { cause: e },
    );
  }

  /** One fetch per blob in the process (see shared.ts). */
  private readonly fetches = new BlobFetches();

  fetchBlob(
    d: Descriptor,
    open: () => Promise<AsyncIterable<Uint8Array>>,
  ): Promise<'present' | 'shared' | 'fetched'> {
    return this.fetches.fetch(d, this, open);
  }

  fetched(digest: string): Promise<boolean> {
    return this.fetches.fetched(digest);
  }

  async putDocument(d: Descriptor, bytes: Buffer): Promise<void> {
    await this.putBlob(d, [bytes]);
  }

  /** `bundles/` beside index.json: OCI tools reading the layout pass over it. */
  bundles(): BundleHistory {
    return new LocalBundleHistory(join(this.path, 'bundles'));
  }

  /** The index (index.json and its journal), read once and kept; see index-files.ts. */
  private readonly files: IndexFiles;

  /** Every stored version, in index order (oldest first). */
  async versions(): Promise<StoredVersion[]> {
    return (await this.files.current()).all();
  }

  /** The newest version of repository:tag. */
  async latest(repository: string, tag: string): Promise<StoredVersion | undefined> {
    return (await this.files.current()).latest(repository, tag);
  }

  async newestByTag(repository: string): Promise<Map<string, StoredVersion>> {
    const newest = new Map<string, StoredVersion>();
    for (const v of (await this.files.current()).repositoryVersions(repository)) newest.set(v.tag, v);
    return newest;
  }

  async hasRepository(repository: string): Promise<boolean> {
    return (await this.files.current()).hasRepository(repository);
  }

  async repositories(): Promise<string[]> {
    return (await this.files.current()).repositories();
  }

  /**
   * One page of the versions (see VersionIndex.page). A process that has not read the index yet reads
   * index.json only as far as the page needs, where that is its first few MiB (the first pages of any
   * store); a deeper or filtered page loads the index, which later pages then use.
   */
  async page(q: VersionQuery): Promise<VersionPage> {
    if (!this.files.loaded && q.limit <= 1000) {
      const page = await this.files.scanPage(q, SCAN_BUDGET);
      if (page) return page;
    }
    return (await this.files.current()).page(q);
  }

  /** Finds a version by id (or a unique id prefix), or by repository:tag for its newest version. */
  async find(idOrName: string): Promise<StoredVersion> {
    const index = await this.files.current();
    const exact = index.get(idOrName);
    if (exact) return exact;
    const i = idOrName.lastIndexOf(':');
    const named = i > 0 ? index.latest(idOrName.slice(0, i), idOrName.slice(i + 1)) : undefined;
    if (named) return named;
    // A prefix of an id: short ones are what people type, so this scan is theirs alone.
    const byId = /^[0-9a-f]{1,11}$/.test(idOrName)
      ? index.all().filter((v) => v.id.startsWith(idOrName))
      : [];
    if (byId.length === 1) return byId[0]!;
    throw new StowageError(
      'NOT_FOUND',
      byId.length > 1
        ? `"${idOrName}" matches ${byId.length} versions; give more of the id`
        : `the store ${this.path} has no version "${idOrName}"; list them with stowage archives`,
    );
  }

  /**
   * Runs `fn` on the version list under the store's lock and records what changed (versions gone,
   * added or replaced) in the journal.
   */
  async update(
    fn: (versions: StoredVersion[]) => StoredVersion[] | Promise<StoredVersion[]>,
  ): Promise<StoredVersion[]> {
    return this.locked(async () => {
      const index = await this.files.current();
      const before = index.all();
      const next = await fn(before);
      const kept = new Set(next.map((v) => v.id));
      const ops: JournalOp[] = before.filter((v) => !kept.has(v.id)).map((v) => ({ remove: v.id }));
      for (const v of next) {
        const had = index.get(v.id);
        if (had !== v) ops.push(had ? { put: v } : { add: v });
      }
      await this.files.append(ops);
      return next;
    });
  }

  /** Adds a version (a tag that moved keeps its old versions); a version already there is left as it is. */
  async addVersion(v: Omit<StoredVersion, 'id'>): Promise<StoredVersion> {
    const version = { ...v, id: versionId(v.repository, v.tag, v.descriptor.digest) };
    // Versions that finish while the journal is being written go into the next append together.
    this.adding.push(version);
    this.addingWrite ??= this.locked(async () => {
      const batch = this.adding.splice(0);
      this.addingWrite = undefined;
      const index = await this.files.current();
      const seen = new Set<string>();
      const ops: JournalOp[] = [];
      for (const b of batch) {
        if (index.get(b.id) || seen.has(b.id)) continue;
        seen.add(b.id);
        ops.push({ add: b });
      }
      await this.files.append(ops).catch((e: unknown) => {
        throw this.full(e, 'its index');
      });
    });
    await this.addingWrite;
    return (await this.files.current()).get(version.id) ?? version;
  }

  private readonly adding: StoredVersion[] = [];
  private addingWrite: Promise<void> | undefined;

  async removeVersions(ids: string[]): Promise<void> {
    if (!ids.length) return;
    await this.locked(async () => {
      const index = await this.files.current();
      await this.files.append(ids.filter((id) => index.get(id)).map((id) => ({ remove: id })));
    });
  }

  /** Records a version's archive checksum (computed once; the archive is reproducible). */
  async recordArchive(id: string, archive: { sha256: string; size: number }): Promise<void> {
    await this.locked(async () => {
      const v = (await this.files.current()).get(id);
      if (v) await this.files.append([{ put: { ...v, archive } }]);
    });
  }

  /**
   * Folds the journal into index.json, so that other tools reading the store as an OCI layout see
   * every version. Sync runs, imports and close call it; it costs one write of the whole index.
   */
  async flush(): Promise<void> {
    if (await this.files.pending()) await this.locked(() => this.files.compact());
  }

  /**
   * Folds the journal into index.json where this process added or removed versions; a process that
   * only read, or only recorded a checksum (an export), leaves it for the next writer, so that closing
   * costs nothing in proportion to the store.
   */
  async close(): Promise<void> {
    if (this.files.namesChanged) await this.flush();
  }

  /** Digests of every blob the versions reference (documents included). */
  referenced(versions: StoredVersion[]): Promise<Set<string>> {
    return referencedBlobs(this, versions);
  }

  /** Deletes blobs no version references, and leftovers of interrupted writes. Returns bytes freed. */
  async collectGarbage(): Promise<{ blobs: number; bytes: number }> {
    return this.locked(async () => {
      const keep = await this.referenced(await this.versions());
      let blobs = 0;
      let bytes = 0;
      const dir = join(this.path, 'blobs', 'sha256');
      for (const name of await readdir(dir)) {
        if (keep.has(`sha256:${name}`)) continue;
        const p = join(dir, name);
        bytes += (await stat(p)).size;
        await unlink(p);
        blobs++;
      }
      const tmp = join(this.path, '.tmp');
      for (const name of await readdir(tmp)) {
        const p = join(tmp, name);
        const st = await stat(p).catch(() => undefined);
        // Another process may be writing it right now; only old leftovers go.
        const pid = tmpPid(name);
        const dead = pid === undefined ? Date.now() - (st?.mtimeMs ?? 0) > LOCK_STALE_MS : !processAlive(pid);
        if (st && dead) await rm(p, { force: true, recursive: true });
      }
      await syncDir(dir);
      return { blobs, bytes };
    });
  }

  /** Bytes on disk: all blobs, and what is being written (or was left by a writer killed) in .tmp. */
  async diskBytes(): Promise<number> {
    let n = 0;
    const dir = join(this.path, 'blobs', 'sha256');
    for (const name of await readdir(dir)) n += (await stat(join(dir, name))).size;
    return n + (await treeBytes(join(this.path, '.tmp')));
  }

  /**
   * An exclusive lock on the index: callers in this process queue on a promise chain, and the process
   * holds a lock file (its pid inside) against other processes. A lock left by a dead process (or older
   * than ten minutes) is taken over by renaming it aside first, so two processes never both take it.
   */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => this.withLockFile(fn));
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private queue: Promise<void> = Promise.resolve();

  private async withLockFile<T>(fn: () => Promise<T>): Promise<T> {
    const lock = join(this.path, '.lock');
    for (let attempt = 0; ; attempt++) {
      // The lock file appears with the pid already in it (written aside, then hard-linked into
      // place), so a process killed at any moment never leaves an empty lock nobody can judge.
      const mine = `${lock}.${process.pid}.${Math.random().toString(36).slice(2)}.new`;
      try {
        await writeFile(mine, `${process.pid}\n`);
        await link(mine, lock);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const text = await readFile(lock, 'utf8').catch(() => '');
        const owner = Number(text.trim());
        const st = await stat(lock).catch(() => undefined);
        // An empty lock is from a process killed while making it the old way (open, then write).
        const dead =
          (owner > 0 && !processAlive(owner)) ||
          (!(owner > 0) && st !== undefined && Date.now() - st.mtimeMs > EMPTY_LOCK_STALE_MS);
        if (dead || (st && Date.now() - st.mtimeMs > LOCK_STALE_MS)) {
          // Take the stale lock aside; if what was renamed is not what we judged stale, put it back.
          const aside = `${lock}.${process.pid}.${Math.random().toString(36).slice(2)}`;
          if (
            await rename(lock, aside).then(
              () => true,
              () => false,
            )
          ) {
            const moved = await readFile(aside, 'utf8').catch(() => '');
            if (moved === text) await unlink(aside).catch(() => {});
            else await rename(aside, lock).catch(() => {});
          }
          continue;
        }
        if (attempt > 600) {
          throw new StowageError(
            'IO',
            `the store ${this.path} is locked by process ${owner}; try again later`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      } finally {
        await unlink(mine).catch(() => {});
      }
    }
    try {
      return await fn();
    } finally {
      await unlink(lock).catch(() => {});
    }
  }
}
