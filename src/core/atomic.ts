import { type FileHandle, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { StowageError } from '../errors.js';
import { preparePartial } from './partials.js';

/**
 * A file written aside and renamed into place only when complete: readers never see a partial file
 * at `path`, and a failure leaves nothing behind.
 */
export class AtomicFile {
  private constructor(
    readonly path: string,
    readonly tmpPath: string,
    readonly handle: FileHandle,
  ) {}

  static async create(path: string, mode = 0o644): Promise<AtomicFile> {
    const tmpPath = await preparePartial(path);
    let handle: FileHandle;
    try {
      handle = await open(tmpPath, 'wx+', mode);
      // Exactly `mode` for files that hold secrets, whatever the umask.
      if (mode !== 0o644) await handle.chmod(mode);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why =
        err.code === 'ENOENT'
          ? 'its directory does not exist'
          : err.code === 'EACCES'
            ? 'permission denied'
            : err.message;
      throw new StowageError('IO', `cannot write ${path}: ${why}`, { cause: e });
    }
    return new AtomicFile(path, tmpPath, handle);
  }

  /**
   * fsync (unless the caller already did), rename into place, fsync the directory. `durable: false`
   * skips both fsyncs, for a cache: after a power cut it may be the old file or an empty one (which reads
   * as no cache), never a partial one at the path while the system runs.
   */
  async commit(opts: { synced?: boolean; durable?: boolean } = {}): Promise<void> {
    const durable = opts.durable ?? true;
    if (durable && !opts.synced) await this.handle.sync();
    await this.handle.close();
    await rename(this.tmpPath, this.path);
    if (durable) await syncDir(dirname(this.path));
  }

  /**
   * For an archive already synced: writes `path.sha256` (sha256sum -c's line), then moves the archive
   * into place. If the move fails, the checksum goes too, so neither is left without the other.
   */
  async commitWithChecksum(sha256: string): Promise<void> {
    const sumPath = `${this.path}.sha256`;
    await writeFileAtomic(sumPath, sha256Line(sha256, this.path));
    try {
      await this.commit({ synced: true });
    } catch (e) {
      await unlink(sumPath).catch(() => {});
      throw e;
    }
  }

  /**
   * Moves the file into place with no checksum beside it: a PATH.sha256 left by an earlier archive at
   * the same path would no longer match, so it goes first.
   */
  async commitWithoutChecksum(): Promise<void> {
    await unlink(`${this.path}.sha256`).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    await this.commit({ synced: true });
  }

  /** Removes the partial file; never throws. */
  async abort(): Promise<void> {
    await this.handle.close().catch(() => {});
    await unlink(this.tmpPath).catch(() => {});
  }
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r').catch(() => undefined);
  if (!fh) return;
  await fh.sync().catch(() => {});
  await fh.close();
}

/** Writes a small file atomically (write aside, fsync unless not `durable`, rename). */
export async function writeFileAtomic(
  path: string,
  data: string | Buffer,
  mode = 0o644,
  opts: { durable?: boolean } = {},
): Promise<void> {
  const f = await AtomicFile.create(path, mode);
  try {
    await f.handle.writeFile(data);
    await f.commit(opts);
  } catch (e) {
    await f.abort();
    throw e;
  }
}

/** The line `sha256sum -c` checks: "<hex>  <file name>". */
export function sha256Line(hex: string, path: string): string {
  return `${hex}  ${basename(path)}\n`;
}

/**
 * Starts writeback while a file is written: a datasync each time `every` (64 MiB) more bytes have been
 * written (one at a time), so the final fsync has little left to do. Errors surface at the final one.
 */
export class SyncAhead {
  private unsynced = 0;
  private syncing: Promise<void> | undefined;
  constructor(
    private readonly fh: FileHandle,
    private readonly every = 64 << 20,
  ) {}

  wrote(n: number): void {
    this.unsynced += n;
    if (this.unsynced < this.every || this.syncing) return;
    this.unsynced = 0;
    this.syncing = this.fh
      .datasync()
      .catch(() => {})
      .finally(() => {
        this.syncing = undefined;
      });
  }

  /** Waits for the datasync in flight, if any. */
  async settle(): Promise<void> {
    await this.syncing;
  }
}
