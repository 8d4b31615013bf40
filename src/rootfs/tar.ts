/**
 * Tar entries with everything a filesystem needs (type, mode, owner, times, device numbers, link
 * targets, extended attributes), read as a stream and written back deterministically. The archive
 * writers in src/archive/tar.ts write fixed metadata; root filesystems need the real thing.
 *
 * The reader takes a byte stream (already decompressed) and yields events: an entry's header, then its
 * data in the chunks it arrived in (no copies), then the end of the entry. PAX and GNU long-name
 * headers are folded into the entry they describe; PAX values are kept as bytes, because extended
 * attributes (security.capability) are binary.
 */

import { BLOCK, paddedSize } from '../archive/tar.js';
import { checksumOk, cstring, parseNumber } from '../archive/tar-reader.js';
import { StowageError } from '../errors.js';

export type FsEntryType = 'file' | 'hardlink' | 'symlink' | 'directory' | 'char' | 'block' | 'fifo';

export interface FsEntry {
  /** Path without a leading "/" or "./"; directories without a trailing "/". */
  name: string;
  type: FsEntryType;
  /** Data bytes (files only; 0 for everything else). */
  size: number;
  /** Permission bits with setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Seconds since the epoch (whole seconds). */
  mtime: number;
  /** Symlink target, or the path a hard link names. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes: name (without the SCHILY.xattr. prefix) to value bytes, in archive order. */
  xattrs?: [string, Buffer][] | undefined;
}

export type TarEvent =
  | { kind: 'entry'; entry: FsEntry; raw: string }
  | { kind: 'data'; chunk: Uint8Array }
  | { kind: 'end' };

const TYPES: Record<string, FsEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
};
/** Types whose size field says nothing about data that follows (as Go's archive/tar reads them). */
const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);
const MAX_EXTENDED = 1 << 20;

/** PAX records as key -> raw value bytes (binary safe). */
function parsePax(data: Buffer, into: Map<string, Buffer>): void {
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = Number(data.toString('latin1', i, sp));
    if (!Number.isInteger(len) || len <= 0 || i + len > data.length) break;
    const eq = data.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= i + len) break;
    into.set(data.toString('utf8', sp + 1, eq), data.subarray(eq + 1, i + len - 1));
    i += len;
  }
}

/** Strips "./" and "/" prefixes, doubled and trailing slashes: the name as a path inside the root. */
export function cleanName(raw: string): string {
  return raw
    .replace(/\/+/g, '/')
    .replace(/^(\.?\/)+/, '')
    .replace(/(\/\.)+$/, '')
    .replace(/\/$/, '')
    .replace(/^\.$/, '');
}

/**
 * Reads a tar stream entry by entry. `what` names the stream in errors. Entry names are cleaned of
 * "./" and "/" prefixes; whether ".." is acceptable is the caller's decision (`raw` keeps the original).
 */
export async function* readTar(input: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<TarEvent> {
  const bad = (why: string) =>
    new StowageError('INVALID_ARCHIVE', `${what}: not a valid tar stream (${why})`);
  let pending: Buffer = Buffer.alloc(0);
  let position = 0;
  /** Data bytes still to pass on for the current entry, then padding to skip. */
  let data = 0;
  let padding = 0;
  let inEntry = false;
  let collect: { type: string; size: number } | undefined;
  const pax = new Map<string, Buffer>();
  const globalPax = new Map<string, Buffer>();
  let longName: string | undefined;
  let longLink: string | undefined;
  let ended = false;

  for await (const input_ of input) {
    let chunk = Buffer.isBuffer(input_)
      ? input_
      : Buffer.from(input_.buffer, input_.byteOffset, input_.byteLength);
    while (chunk.length > 0 && !ended) {
      if (data > 0) {
        const n = Math.min(data, chunk.length);
        yield { kind: 'data', chunk: chunk.subarray(0, n) };
        data -= n;
        position += n;
        chunk = chunk.subarray(n);
        if (data === 0) {
          inEntry = false;
          yield { kind: 'end' };
        }
        continue;
      }
      if (padding > 0) {
        const n = Math.min(padding, chunk.length);
        padding -= n;
        position += n;
        chunk = chunk.subarray(n);
        continue;
      }
      const need = collect ? paddedSize(collect.size) : BLOCK;
      if (pending.length + chunk.length < need) {
        pending = pending.length ? Buffer.concat([pending, chunk]) : Buffer.from(chunk);
        chunk = Buffer.alloc(0);
        continue;
      }
      let block: Buffer;
      if (pending.length) {
        const take = need - pending.length;
        block = Buffer.concat([pending, chunk.subarray(0, take)]);
        chunk = chunk.subarray(take);
        pending = Buffer.alloc(0);
      } else {
        block = chunk.subarray(0, need);
        chunk = chunk.subarray(need);
      }
      const at = position;
      position += need;
      if (collect) {
        const body = block.subarray(0, collect.size);
        if (collect.type === 'x') parsePax(body, pax);
        else if (collect.type === 'g') parsePax(body, globalPax);
        else if (collect.type === 'L') longName = cstring(body, 0, body.length);
        else if (collect.type === 'K') longLink = cstring(body, 0, body.length);
        collect = undefined;
        continue;
      }
      if (block.every((b) => b === 0)) {
        ended = true;
        break;
      }
      if (!checksumOk(block)) throw bad(`bad header checksum at offset ${at}`);
      const flag = String.fromCharCode(block[156]!);
      let size: number;
      try {
        size = parseNumber(block, 124, 12);
      } catch (e) {
        throw bad(`${(e as Error).message} at offset ${at}`);
      }
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        if (size > MAX_EXTENDED) throw bad(`extended header of ${size} bytes at offset ${at}`);
        collect = { type: flag, size };
        continue;
      }
      const ustar = block.toString('latin1', 257, 262) === 'ustar';
      const prefix = ustar ? cstring(block, 345, 155) : '';
      const base = cstring(block, 0, 100);
      const record = (k: string) => pax.get(k) ?? globalPax.get(k);
      const str = (k: string) => record(k)?.toString('utf8');
      const num = (k: string, fallback: number) => {
        const v = str(k);
        if (v === undefined) return fallback;
        const n = Number(v);
        if (!Number.isFinite(n) || n < 0) throw bad(`PAX ${k}="${v}" at offset ${at}`);
        return n;
      };
      const raw = str('path') ?? longName ?? (prefix ? `${prefix}/${base}` : base);
      const type = TYPES[flag];
      let entry: FsEntry | undefined;
      try {
        const xattrs: [string, Buffer][] = [];
        for (const [k, v] of [...globalPax, ...pax]) {
          if (k.startsWith('SCHILY.xattr.')) xattrs.push([k.slice(13), Buffer.from(v)]);
        }
        size = num('size', size);
        entry = type && {
          name: cleanName(raw),
          type,
          size: HEADER_ONLY.has(flag) ? 0 : size,
          mode: parseNumber(block, 100, 8) & 0o7777,
          uid: num('uid', parseNumber(block, 108, 8)),
          gid: num('gid', parseNumber(block, 116, 8)),
          uname: str('uname') ?? (ustar ? cstring(block, 265, 32) : ''),
          gname: str('gname') ?? (ustar ? cstring(block, 297, 32) : ''),
          mtime: Math.floor(num('mtime', parseNumber(block, 136, 12))),
          linkname: str('linkpath') ?? longLink ?? cstring(block, 157, 100),
          devmajor: ustar ? parseNumber(block, 329, 8) : 0,
          devminor: ustar ? parseNumber(block, 337, 8) : 0,
          ...(xattrs.length ? { xattrs } : {}),
        };
      } catch (e) {
        if (e instanceof StowageError) throw e;
        throw bad(`${(e as Error).message} at offset ${at}`);
      }
      pax.clear();
      longName = undefined;
      longLink = undefined;
      const dataSize = HEADER_ONLY.has(flag) ? 0 : size;
      if (!entry) {
        // Types a filesystem has no use for (GNU dumpdir, sparse, vendor extensions): skipped whole.
        data = 0;
        padding = paddedSize(dataSize);
        continue;
      }
      yield { kind: 'entry', entry, raw };
      inEntry = true;
      padding = paddedSize(dataSize) - dataSize;
      data = dataSize;
      if (data === 0) {
        inEntry = false;
        yield { kind: 'end' };
      }
    }
    if (ended) break;
  }
  if (position === 0 && pending.length === 0) throw bad('it is empty');
  if (!ended && (inEntry || data > 0 || collect || pending.length > 0))
    throw bad('it ends in the middle of an entry');
}

// ---- writing ----

/** Zero bytes for padding, shared (never written to). */
export const ZEROS = Buffer.alloc(BLOCK);

/** The zero padding that fills `size` bytes of data up to a whole block (a view of ZEROS). */
export function padding(size: number): Buffer {
  return ZEROS.subarray(0, paddedSize(size) - size);
}

function writeString(buf: Buffer, offset: number, length: number, value: string): void {
  Buffer.from(value, 'utf8').copy(buf, offset, 0, length);
}

function fitsOctal(value: number, length: number): boolean {
  return Number.isInteger(value) && value >= 0 && value < 8 ** (length - 1);
}

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  if (!fitsOctal(value, length)) {
    // base-256 (GNU) for sizes too large for octal
    buf[offset] = 0x80;
    let v = BigInt(Math.max(0, Math.floor(value)));
    for (let i = offset + length - 1; i > offset; i--) {
      buf[i] = Number(v & 0xffn);
      v >>= 8n;
    }
    return;
  }
  writeString(buf, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
}

const FLAGS: Record<FsEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
};

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function splitUstar(name: string): [string, string] | undefined {
  const n = Buffer.byteLength(name);
  if (n <= 100) return ['', name];
  const i = name.lastIndexOf('/', 155);
  if (i > 0 && Buffer.byteLength(name.slice(i + 1)) <= 100 && Buffer.byteLength(name.slice(0, i)) <= 155)
    return [name.slice(0, i), name.slice(i + 1)];
  return undefined;
}

function block(
  name: string,
  prefix: string,
  flag: string,
  e: Pick<
    FsEntry,
    'mode' | 'uid' | 'gid' | 'uname' | 'gname' | 'mtime' | 'linkname' | 'devmajor' | 'devminor'
  >,
  size: number,
): Buffer {
  // From Node's shared pool (a header per file would otherwise be an allocation of its own each).
  const h = Buffer.allocUnsafe(BLOCK).fill(0);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, e.mode & 0o7777);
  writeOctal(h, 108, 8, fitsOctal(e.uid, 8) ? e.uid : 0);
  writeOctal(h, 116, 8, fitsOctal(e.gid, 8) ? e.gid : 0);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, fitsOctal(e.mtime, 12) ? e.mtime : 0);
  h.fill(0x20, 148, 156);
  h.write(flag, 156, 'latin1');
  writeString(h, 157, 100, Buffer.byteLength(e.linkname) <= 100 ? e.linkname : '');
  writeString(h, 257, 6, 'ustar\0');
  writeString(h, 263, 2, '00');
  writeString(h, 265, 32, Buffer.byteLength(e.uname) <= 32 ? e.uname : '');
  writeString(h, 297, 32, Buffer.byteLength(e.gname) <= 32 ? e.gname : '');
  writeOctal(h, 329, 8, e.devmajor);
  writeOctal(h, 337, 8, e.devminor);
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const byte of h) sum += byte;
  writeString(h, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

/**
 * The header block(s) of an entry: ustar, preceded by a PAX header for what ustar cannot hold (long
 * names and link targets, large ids, extended attributes). The same entry always gives the same bytes.
 */
export function fsEntryHeader(e: FsEntry): Buffer {
  const name = e.type === 'directory' ? `${e.name}/` : e.name;
  const size = e.type === 'file' ? e.size : 0;
  const records: Buffer[] = [];
  const split = splitUstar(name);
  if (!split) records.push(paxRecord('path', Buffer.from(name)));
  if (Buffer.byteLength(e.linkname) > 100) records.push(paxRecord('linkpath', Buffer.from(e.linkname)));
  if (!fitsOctal(e.uid, 8)) records.push(paxRecord('uid', Buffer.from(String(e.uid))));
  if (!fitsOctal(e.gid, 8)) records.push(paxRecord('gid', Buffer.from(String(e.gid))));
  if (Buffer.byteLength(e.uname) > 32) records.push(paxRecord('uname', Buffer.from(e.uname)));
  if (Buffer.byteLength(e.gname) > 32) records.push(paxRecord('gname', Buffer.from(e.gname)));
  for (const [k, v] of e.xattrs ?? []) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
  const [prefix, base] = split ?? [
    '',
    Buffer.from(name)
      .subarray(-100)
      .toString('utf8')
      .replace(/^[^/]*\//, ''),
  ];
  const main = block(base, prefix, FLAGS[e.type], e, size);
  if (records.length === 0) return main;
  const paxData = Buffer.concat(records);
  const paxHeader = block(
    'PaxHeaders/entry',
    '',
    'x',
    { mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', mtime: 0, linkname: '', devmajor: 0, devminor: 0 },
    paxData.length,
  );
  return Buffer.concat([paxHeader, paxData, padding(paxData.length), main]);
}
