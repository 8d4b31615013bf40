/**
 * Read access to the files of an image store, whether it is a directory (OCI layout, dir:) or a tar
 * archive (oci-archive, docker-archive). Names are relative, '/'-separated; nothing outside the store is
 * ever read: hostile names and links that leave it are refused.
 */
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { FILE_READ_CHUNK } from '../core/streams.js';
import { StowageError } from '../errors.js';
import { readAt, safeEntryName, TarIndex } from './tar-reader.js';

export interface FileAccess {
  /** The store's path, for messages. */
  readonly path: string;
  /** Size of a regular file, or undefined when there is none by that name. */
  size(name: string): Promise<number | undefined>;
  /** A file's bytes, refused over `limit`. */
  read(name: string, limit: number, what: string): Promise<Buffer>;
  stream(name: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** A file's last `length` bytes where they can be read in place, else undefined. */
  tail(name: string, length: number): Promise<Buffer | undefined>;
  /** Every regular file name (for format detection and listings). */
  names(): Promise<string[]>;
  /**
   * Where a regular file's bytes lie on disk: a file and a byte range of it (for a worker thread to hash
   * them in place); undefined where they are not stored as they are (a compressed tar) or not there.
   */
  extent(name: string): Promise<FileExtent | undefined>;
}

export interface FileExtent {
  file: string;
  start: number;
  length: number;
}

function tooLarge(path: string, what: string, size: number, limit: number): StowageError {
  return new StowageError(
    'TOO_LARGE',
    `${path}: ${what} is ${size} bytes, over the ${limit}-byte limit for documents read into memory`,
  );
}

function missing(path: string, name: string, what: string): StowageError {
  return new StowageError('INVALID_ARCHIVE', `${path}: ${what} (${name}) is missing`);
}

export class TarAccess implements FileAccess {
  private constructor(readonly index: TarIndex) {}

  static async open(path: string): Promise<TarAccess> {
    return new TarAccess(await TarIndex.open(path));
  }

  get path(): string {
    return this.index.path;
  }

  async size(name: string): Promise<number | undefined> {
    return this.index.resolve(safeEntryName(name, this.path))?.size;
  }

  async read(name: string, limit: number, what: string): Promise<Buffer> {
    const e = this.index.resolve(safeEntryName(name, this.path));
    if (!e) throw missing(this.path, name, what);
    if (e.size > limit) throw tooLarge(this.path, what, e.size, limit);
    return this.index.read(e, limit, what);
  }

  async stream(name: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const e = this.index.resolve(safeEntryName(name, this.path));
    if (!e) throw missing(this.path, name, 'blob');
    return this.index.stream(e, signal);
  }

  async tail(name: string, length: number): Promise<Buffer | undefined> {
    const e = this.index.resolve(safeEntryName(name, this.path));
    return e ? this.index.tail(e, length) : undefined;
  }

  async names(): Promise<string[]> {
    return [...this.index.entries.keys()];
  }

  async extent(name: string): Promise<FileExtent | undefined> {
    const e = this.index.resolve(safeEntryName(name, this.path));
    if (!e || this.index.gzipped) return undefined;
    return { file: this.index.path, start: e.offset, length: e.size };
  }
}

export class DirAccess implements FileAccess {
  private root: string | undefined;
  constructor(readonly path: string) {}

  /** The real path of `name`, which must be a regular file inside the directory. */
  private async locate(name: string): Promise<string | undefined> {
    this.root ??= await realpath(this.path);
    const full = join(this.path, safeEntryName(name, this.path));
    const st = await lstat(full).catch(() => undefined);
    if (!st) return undefined;
    const real = await realpath(full);
    if (real !== this.root && !real.startsWith(this.root + sep)) {
      throw new StowageError(
        'INVALID_ARCHIVE',
        `${this.path}: "${name}" is a link to ${real}, outside the directory: refusing it`,
      );
    }
    return (await stat(real)).isFile() ? real : undefined;
  }

  async size(name: string): Promise<number | undefined> {
    const p = await this.locate(name);
    return p ? (await stat(p)).size : undefined;
  }

  async read(name: string, limit: number, what: string): Promise<Buffer> {
    const p = await this.locate(name);
    if (!p) throw missing(this.path, name, what);
    const { size } = await stat(p);
    if (size > limit) throw tooLarge(this.path, what, size, limit);
    return readFile(p);
  }

  async stream(name: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const p = await this.locate(name);
    if (!p) throw missing(this.path, name, 'blob');
    return createReadStream(p, { highWaterMark: FILE_READ_CHUNK, ...(signal ? { signal } : {}) });
  }

  async tail(name: string, length: number): Promise<Buffer | undefined> {
    const p = await this.locate(name);
    if (!p) return undefined;
    const { size } = await stat(p);
    return size < length ? undefined : readAt(p, size - length, length);
  }

  async extent(name: string): Promise<FileExtent | undefined> {
    const p = await this.locate(name);
    return p ? { file: p, start: 0, length: (await stat(p)).size } : undefined;
  }

  async names(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string, depth: number) => {
      if (depth > 4) return;
      for (const d of await readdir(join(this.path, rel), { withFileTypes: true })) {
        const r = rel ? `${rel}/${d.name}` : d.name;
        if (d.isDirectory()) await walk(r, depth + 1);
        else out.push(r);
      }
    };
    await walk('', 0);
    return out;
  }
}
