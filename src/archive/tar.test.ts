import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { END_OF_ARCHIVE, entryHeader, paddedSize } from './tar.js';

async function readEntries(buf: Buffer) {
  const extract = tar.extract();
  const entries: {
    name: string;
    type: string;
    size: number;
    mode: number;
    mtime: number;
    uid: number;
    data: string;
  }[] = [];
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => {
      entries.push({
        name: header.name,
        type: header.type ?? '',
        size: header.size ?? 0,
        mode: header.mode ?? 0,
        mtime: (header.mtime?.getTime() ?? -1) / 1000,
        uid: header.uid ?? -1,
        data: Buffer.concat(chunks).toString(),
      });
      next();
    });
  });
  const done = new Promise((resolve, reject) => {
    extract.on('finish', () => resolve(undefined));
    extract.on('error', reject);
  });
  Readable.from([buf]).pipe(extract);
  await done;
  return entries;
}

describe('deterministic tar headers', () => {
  it('writes headers that a tar reader accepts, with fixed fields', async () => {
    const data = Buffer.from('hello');
    const longName = `blobs/${'d'.repeat(120)}/${'f'.repeat(120)}`;
    const parts = [
      entryHeader({ name: 'dir', type: 'directory', size: 0 }, 0),
      entryHeader({ name: 'dir/file', type: 'file', size: data.length }, 1_700_000_000),
      data,
      Buffer.alloc(paddedSize(data.length) - data.length),
      entryHeader({ name: longName, type: 'file', size: 0 }, 0),
      END_OF_ARCHIVE,
    ];
    const entries = await readEntries(Buffer.concat(parts));
    expect(entries).toEqual([
      { name: 'dir/', type: 'directory', size: 0, mode: 0o755, mtime: 0, uid: 0, data: '' },
      { name: 'dir/file', type: 'file', size: 5, mode: 0o644, mtime: 1_700_000_000, uid: 0, data: 'hello' },
      { name: longName, type: 'file', size: 0, mode: 0o644, mtime: 0, uid: 0, data: '' },
    ]);
  });

  it('is the same bytes for the same entry', () => {
    const a = entryHeader({ name: 'blobs/sha256/abc', type: 'file', size: 12345 }, 0);
    const b = entryHeader({ name: 'blobs/sha256/abc', type: 'file', size: 12345 }, 0);
    expect(a.equals(b)).toBe(true);
    expect(a.length).toBe(512);
  });

  it('encodes sizes over 8 GiB in base-256', async () => {
    const h = entryHeader({ name: 'big', type: 'file', size: 9 * 1024 ** 3 }, 0);
    expect(h[124]).toBe(0x80);
    const extract = tar.extract();
    const size = await new Promise<number>((resolve) => {
      extract.on('entry', (header) => resolve(header.size ?? -1));
      extract.write(h);
    });
    expect(size).toBe(9 * 1024 ** 3);
  });
});
