/**
 * Reads tar archives without extracting them: one pass over the headers builds an index of entries
 * (name, type, data offset, size), and entries are then streamed from their offsets. A gzipped tar is
 * read the same way through a decompressing pass (re-run from the start for each entry read).
 *
 * Hostile input is refused: names that are absolute or climb out with "..", duplicate entries, links
 * that leave the archive, corrupt headers.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { StowageError } from '../errors.js';
import { BLOCK, paddedSize } from './tar.js';

export type TarEntryKind = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarIndexEntry {
  name: string;
  kind: TarEntryKind;
  /** Offset of the entry's data in the (decompressed) tar stream. */
  offset: number;
  size: number;
  linkname?: string;
}

/** A NUL-terminated string field of a tar header. */
export function cstring(buf: Buffer, start: number, length: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end < 0 || end > start + length ? start + length : end);
}

/** A numeric field of a tar header: octal, or base-256 (GNU) when the high bit is set. */
export function parseNumber(buf: Buffer, start: number, length: number): number {
  if ((buf[start]! & 0x80) !== 0) {
    // base-256
    let v = 0n;
    for (let i = start + 1; i < start + length; i++) v = (v << 8n) | BigInt(buf[i]!);
    return Number(v);
  }
  const s = cstring(buf, start, length).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new Error(`bad number field "${s}"`);
  return Number.parseInt(s, 8);
}

/** Whether a header block's checksum field matches its bytes. */
export function checksumOk(h: Buffer): boolean {
  let stored: number;
  try {
    stored = parseNumber(h, 148, 8);
  } catch {
    return false;
  }
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum === stored;
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = Number(data.toString('latin1', i, sp));
    if (!Number.isInteger(len) || len <= 0) break;
    const record = data.toString('utf8', sp + 1, i + len - 1);
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    i += len;
  }
  return out;
}

/** Normalises an entry name; refuses absolute names and names that climb out with "..". */
export function safeEntryName(raw: string, archive: string): string {
  const name = raw
    .replace(/^(\.\/)+/, '')
    .replace(/\/+/g, '/')
    .replace(/\/$/, '');
  if (raw.startsWith('/') || name.split('/').some((p) => p === '..')) {
    throw new StowageError(
      'INVALID_ARCHIVE',
      `${archive}: entry "${raw}" has an absolute path or "..": refusing a hostile archive`,
    );
  }
  return name;
}

const KINDS: Record<string, TarEntryKind> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '5': 'directory',
  '2': 'symlink',
  '1': 'hardlink',
};

/** Sequential header parser over a byte stream: feed it chunks, it records entries. */
class HeaderScanner {
  readonly entries = new Map<string, TarIndexEntry>();
  private position = 0;
  /** Bytes to skip (entry data) before the next header. */
  private skip = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Collect this many bytes of data (PAX / GNU long name) instead of skipping. */
  private collect: { type: string; size: number } | undefined;
  private pax: Record<string, string> = {};
  private longName: string | undefined;
  private longLink: string | undefined;
  done = false;

  constructor(private readonly archive: string) {}

  private take(n: number): Buffer | undefined {
    if (this.pendingBytes < n) return undefined;
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.pending = rest.length ? [rest] : [];
    this.pendingBytes = rest.length;
    this.position += n;
    return out;
  }

  feed(chunk: Buffer): void {
    let c = chunk;
    while (!this.done && c.length > 0) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, c.length);
        this.skip -= n;
        this.position += n;
        c = c.subarray(n);
        continue;
      }
      this.pending.push(c);
      this.pendingBytes += c.length;
      c = Buffer.alloc(0);
      this.drain();
    }
  }

  /**
   * For a seekable reader: the data bytes to seek over before the next header, taken as skipped.
   * Only valid when the scanner is fed exactly one header block at a time.
   */
  seekPastData(): number {
    const n = this.skip;
    this.position += n;
    this.skip = 0;
    return n;
  }

  bad(why: string): StowageError {
    return new StowageError('INVALID_ARCHIVE', `${this.archive}: not a valid tar archive (${why})`);
  }

  private drain(): void {
    for (;;) {
      if (this.collect) {
        const padded = paddedSize(this.collect.size);
        const data = this.take(padded);
        if (!data) return;
        const body = data.subarray(0, this.collect.size);
        if (this.collect.type === 'x') this.pax = { ...this.pax, ...parsePax(body) };
        else if (this.collect.type === 'L') this.longName = cstring(body, 0, body.length);
        else if (this.collect.type === 'K') this.longLink = cstring(body, 0, body.length);
        this.collect = undefined;
        continue;
      }
      const headerStart = this.position;
      const h = this.take(BLOCK);
      if (!h) return;
      if (h.every((b) => b === 0)) {
        this.done = true;
        return;
      }
      if (!checksumOk(h)) throw this.bad(`bad header checksum at offset ${headerStart}`);
      const type = String.fromCharCode(h[156]!);
      let size: number;
      try {
        size = parseNumber(h, 124, 12);
      } catch (e) {
        throw this.bad(`${(e as Error).message} at offset ${headerStart}`);
      }
      if (type === 'x' || type === 'L' || type === 'K') {
        if (size > 1 << 20) throw this.bad(`extended header of ${size} bytes at offset ${headerStart}`);
        this.collect = { type, size };
        continue;
      }
      if (type === 'g') {
        this.skip = paddedSize(size);
        this.afterSkip();
        return;
      }
      const prefix = h.toString('latin1', 257, 262) === 'ustar' ? cstring(h, 345, 155) : '';
      const base = cstring(h, 0, 100);
      let rawName = this.pax.path ?? this.longName ?? (prefix ? `${prefix}/${base}` : base);
      const linkname = this.pax.linkpath ?? this.longLink ?? cstring(h, 157, 100);
      if (this.pax.size !== undefined) size = Number(this.pax.size);
      this.pax = {};
      this.longName = undefined;
      this.longLink = undefined;
      const kind = KINDS[type] ?? 'other';
      if (kind === 'directory') rawName = rawName.replace(/\/$/, '');
      const name = safeEntryName(rawName, this.archive);
      const dataSize = kind === 'file' ? size : 0;
      if (name !== '' && kind !== 'directory') {
        if (this.entries.has(name)) {
          throw new StowageError(
            'INVALID_ARCHIVE',
            `${this.archive}: entry "${name}" appears twice: refusing an ambiguous archive`,
          );
        }
        this.entries.set(name, {
          name,
          kind,
          offset: this.position,
          size: dataSize,
          ...(kind === 'symlink' || kind === 'hardlink' ? { linkname } : {}),
        });
      }
      this.skip = paddedSize(kind === 'file' || kind === 'other' ? size : 0);
      if (this.skip > 0) {
        this.afterSkip();
        return;
      }
    }
  }

  /** Moves buffered bytes past the data being skipped, then continues with headers. */
  private afterSkip(): void {
    const buffered = this.pending.length ? Buffer.concat(this.pending) : Buffer.alloc(0);
    this.pending = [];
    this.pendingBytes = 0;
    if (buffered.length) this.feed(buffered);
  }
}

function isGzip(magic: Buffer): boolean {
  return magic[0] === 0x1f && magic[1] === 0x8b;
}

/** A tar archive on disk (plain or gzipped), indexed by its headers. */
export class TarIndex {
  private constructor(
    readonly path: string,
    readonly gzipped: boolean,
    readonly entries: Map<string, TarIndexEntry>,
    /** Stretches of a plain tar read while indexing, kept: small entries in them are read from here. */
    private readonly readAhead: ReadAhead[] = [],
  ) {}

  static async open(path: string): Promise<TarIndex> {
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') throw new StowageError('NOT_FOUND', `archive ${path} does not exist`);
      throw new StowageError('IO', `cannot read archive ${path}: ${err.message}`, { cause: e });
    }
    const scanner = new HeaderScanner(path);
    const readAhead: ReadAhead[] = [];
    let gzipped = false;
    try {
      const magic = Buffer.alloc(2);
      await fh.read(magic, 0, 2, 0);
      gzipped = isGzip(magic);
      if (!gzipped) {
        // Plain tar: read header blocks only, seeking over the data. Each read takes READ_AHEAD bytes,
        // so the run of small entries a docker-archive ends with (manifest.json, the config, each
        // layer's json and VERSION) is one read instead of one per header, and their bytes are kept.
        const { size } = await fh.stat();
        let window: ReadAhead = { start: 0, bytes: Buffer.alloc(0) };
        let kept = 0;
        let pos = 0;
        while (!scanner.done && pos < size) {
          if (pos + BLOCK > window.start + window.bytes.length) {
            const buf = Buffer.allocUnsafe(Math.min(READ_AHEAD, size - pos));
            const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
            window = { start: pos, bytes: buf.subarray(0, bytesRead) };
            if (kept + bytesRead <= READ_AHEAD_KEPT) {
              readAhead.push(window);
              kept += bytesRead;
            }
            if (bytesRead < BLOCK) break;
          }
          const at = pos - window.start;
          scanner.feed(window.bytes.subarray(at, at + BLOCK));
          pos += BLOCK + scanner.seekPastData();
        }
        if (!scanner.done && scanner.entries.size === 0) throw scanner.bad('no tar header found');
        // The last entry's data (or a header) runs past the end of the file: it was cut short. An
        // archive that simply ends after its last entry, without the closing zero blocks, is read.
        if (!scanner.done && pos !== size) throw truncated(path, size);
      }
    } finally {
      await fh.close();
    }
    if (gzipped) {
      const stream = createReadStream(path).pipe(createGunzip());
      try {
        for await (const chunk of stream) {
          scanner.feed(chunk as Buffer);
          if (scanner.done) break;
        }
      } catch (e) {
        if (e instanceof StowageError) throw e;
        if ((e as NodeJS.ErrnoException).code === 'Z_BUF_ERROR') throw truncated(path, undefined);
        throw new StowageError(
          'INVALID_ARCHIVE',
          `${path}: the gzip stream is corrupt: ${(e as Error).message}`,
        );
      } finally {
        stream.destroy();
      }
    }
    return new TarIndex(path, gzipped, scanner.entries, readAhead);
  }

  /** The regular file an entry name leads to, following links inside the archive (never outside). */
  resolve(name: string): TarIndexEntry | undefined {
    let current = name;
    for (let depth = 0; depth < 16; depth++) {
      const e = this.entries.get(current);
      if (!e) return undefined;
      if (e.kind === 'file') return e;
      if (e.kind !== 'symlink' && e.kind !== 'hardlink') return undefined;
      const target =
        e.kind === 'symlink' && !e.linkname!.startsWith('/')
          ? [...current.split('/').slice(0, -1), ...e.linkname!.split('/')].join('/')
          : e.linkname!;
      const parts: string[] = [];
      for (const p of target.split('/')) {
        if (p === '' || p === '.') continue;
        if (p === '..') {
          if (parts.length === 0) {
            throw new StowageError(
              'INVALID_ARCHIVE',
              `${this.path}: "${name}" links to "${e.linkname}", outside the archive: refusing a hostile archive`,
            );
          }
          parts.pop();
        } else parts.push(p);
      }
      if (e.linkname!.startsWith('/') && e.kind === 'symlink') {
        throw new StowageError(
          'INVALID_ARCHIVE',
          `${this.path}: "${name}" links to the absolute path "${e.linkname}": refusing a hostile archive`,
        );
      }
      current = parts.join('/');
    }
    throw new StowageError('INVALID_ARCHIVE', `${this.path}: "${name}" is a link loop`);
  }

  /** An entry's bytes as a stream. */
  stream(entry: TarIndexEntry, signal?: AbortSignal): AsyncIterable<Buffer> {
    if (!this.gzipped) {
      if (entry.size === 0) return (async function* () {})();
      return createReadStream(this.path, {
        start: entry.offset,
        end: entry.offset + entry.size - 1,
        highWaterMark: 1 << 20,
        ...(signal ? { signal } : {}),
      });
    }
    const path = this.path;
    return (async function* () {
      const src = createReadStream(path, signal ? { signal } : {});
      const gunzip = src.pipe(createGunzip());
      let pos = 0;
      const end = entry.offset + entry.size;
      try {
        for await (const c of gunzip) {
          const chunk = c as Buffer;
          const s = Math.max(entry.offset - pos, 0);
          const e = Math.min(end - pos, chunk.length);
          pos += chunk.length;
          if (e > s) yield chunk.subarray(s, e);
          if (pos >= end) break;
        }
      } finally {
        src.destroy();
        gunzip.destroy();
      }
    })();
  }

  /** An entry's last `length` bytes, read in place; undefined for a gzipped archive (no cheap seek). */
  async tail(entry: TarIndexEntry, length: number): Promise<Buffer | undefined> {
    if (this.gzipped || entry.size < length) return undefined;
    return readAt(this.path, entry.offset + entry.size - length, length);
  }

  /** An entry's bytes in memory, refusing entries over `limit` bytes. */
  async read(entry: TarIndexEntry, limit: number, what: string): Promise<Buffer> {
    if (entry.size > limit) {
      throw new StowageError(
        'TOO_LARGE',
        `${this.path}: ${what} is ${entry.size} bytes, over the ${limit}-byte limit for documents read into memory`,
      );
    }
    const held = this.readAhead.find(
      (w) => entry.offset >= w.start && entry.offset + entry.size <= w.start + w.bytes.length,
    );
    // A copy: the caller may keep or change it.
    if (held)
      return Buffer.from(
        held.bytes.subarray(entry.offset - held.start, entry.offset - held.start + entry.size),
      );
    const parts: Buffer[] = [];
    for await (const c of this.stream(entry)) parts.push(c);
    return Buffer.concat(parts);
  }
}

/** Bytes of a plain tar read ahead while indexing, from `start`. */
interface ReadAhead {
  start: number;
  bytes: Buffer;
}

/** How much each header read takes. */
const READ_AHEAD = 64 * 1024;
/** At most this much read-ahead is kept for small entries; later stretches are read again. */
const READ_AHEAD_KEPT = 1 << 20;

/** `length` bytes of a file at `position` (fewer at its end). */
export async function readAt(path: string, position: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, position);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The error for an archive file that ends before its contents do. */
function truncated(path: string, size: number | undefined): StowageError {
  return new StowageError(
    'INVALID_ARCHIVE',
    `${path} is truncated: the file ends${size === undefined ? '' : ` at ${size} bytes,`} before the entries it holds; it was cut short (an interrupted copy or download): fetch it again`,
  );
}
