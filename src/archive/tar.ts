/**
 * Deterministic tar headers (POSIX ustar, PAX for what ustar cannot hold). We write headers
 * ourselves because the archive layout is computed before any blob arrives: every header is known
 * up front and blobs are written at their final offsets.
 *
 * Fixed fields: uid/gid 0, empty uname/gname, mtime from the caller (0 or SOURCE_DATE_EPOCH),
 * mode 0644 for files, 0755 for directories and 0777 for symlinks, devmajor/devminor empty.
 */
export const BLOCK = 512;

export type EntryType = 'file' | 'directory' | 'symlink';

export interface TarEntry {
  name: string;
  type: EntryType;
  size: number;
  /** Target of a symlink (at most 100 bytes). */
  linkname?: string;
}

export function paddedSize(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

function writeString(buf: Buffer, offset: number, length: number, value: string): void {
  const b = Buffer.from(value, 'utf8');
  if (b.length > length) throw new Error(`tar field too long: ${value}`);
  b.copy(buf, offset);
}

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  // length-1 octal digits and a NUL terminator.
  const s = value.toString(8).padStart(length - 1, '0');
  if (s.length > length - 1) {
    // base-256 (GNU/star) for values too large for octal; only size can reach this.
    buf[offset] = 0x80;
    let v = BigInt(value);
    for (let i = offset + length - 1; i > offset; i--) {
      buf[i] = Number(v & 0xffn);
      v >>= 8n;
    }
    return;
  }
  writeString(buf, offset, length, `${s}\0`);
}

const TYPE_FLAG = { file: '0', directory: '5', symlink: '2', pax: 'x' } as const;

function header(name: string, type: EntryType | 'pax', size: number, mtime: number, linkname = ''): Buffer {
  const h = Buffer.alloc(BLOCK);
  let prefix = '';
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const i = name.lastIndexOf('/', 155);
    prefix = name.slice(0, i);
    base = name.slice(i + 1);
  }
  writeString(h, 0, 100, base);
  writeOctal(h, 100, 8, type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, mtime);
  h.fill(0x20, 148, 156);
  h.write(TYPE_FLAG[type], 156, 'latin1');
  writeString(h, 157, 100, linkname);
  writeString(h, 257, 6, 'ustar\0');
  writeString(h, 263, 2, '00');
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const byte of h) sum += byte;
  writeString(h, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len)
    len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

function fitsUstar(name: string): boolean {
  const n = Buffer.byteLength(name);
  if (n <= 100) return true;
  const i = name.lastIndexOf('/', 155);
  return i > 0 && n - i - 1 <= 100 && Buffer.byteLength(name.slice(0, i)) <= 155;
}

/** The header block(s) for an entry: a ustar header, preceded by a PAX header when needed. */
export function entryHeader(entry: TarEntry, mtime: number): Buffer {
  const name = entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  const size = entry.type === 'file' ? entry.size : 0;
  const link = entry.linkname ?? '';
  if (fitsUstar(name)) return header(name, entry.type, size, mtime, link);
  const records = Buffer.from(paxRecord('path', name));
  const paxData = Buffer.alloc(paddedSize(records.length));
  records.copy(paxData);
  const short = name.slice(-99).replace(/^\/+/, '');
  return Buffer.concat([
    header('PaxHeaders/entry', 'pax', records.length, mtime),
    paxData,
    header(short, entry.type, size, mtime, link),
  ]);
}

/** Two zero blocks end the archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

/** The mtime for generated entries: SOURCE_DATE_EPOCH when set, else 0. */
export function archiveMtime(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.SOURCE_DATE_EPOCH;
  if (v && /^\d+$/.test(v)) return Number(v);
  return 0;
}
