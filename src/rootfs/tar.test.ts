import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { END_OF_ARCHIVE } from '../archive/tar.js';
import { cleanName, type FsEntry, fsEntryHeader, readTar } from './tar.js';

const base: FsEntry = {
  name: 'x',
  type: 'file',
  size: 0,
  mode: 0o644,
  uid: 0,
  gid: 0,
  uname: '',
  gname: '',
  mtime: 1_700_000_000,
  linkname: '',
  devmajor: 0,
  devminor: 0,
};

async function* chunks(buf: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function readAll(buf: Buffer, chunkSize: number): Promise<{ entry: FsEntry; data: string }[]> {
  const out: { entry: FsEntry; data: string }[] = [];
  for await (const ev of readTar(chunks(buf, chunkSize), 'test')) {
    if (ev.kind === 'entry') out.push({ entry: ev.entry, data: '' });
    else if (ev.kind === 'data') out[out.length - 1]!.data += Buffer.from(ev.chunk).toString();
  }
  return out;
}

describe('rootfs tar entries', () => {
  const long = `${'deep/'.repeat(40)}file-with-a-name-longer-than-a-hundred-bytes-${'n'.repeat(120)}`;
  const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0xff, 0xfe]);
  const entries: [FsEntry, string][] = [
    [{ ...base, name: 'dir', type: 'directory', mode: 0o1777 }, ''],
    [
      {
        ...base,
        name: long,
        size: 5,
        mode: 0o4755,
        uid: 3_000_000,
        gid: 70_000_000,
        uname: 'u'.repeat(40),
        xattrs: [['security.capability', cap]],
      },
      'hello',
    ],
    [{ ...base, name: 'l', type: 'symlink', linkname: `/${'t'.repeat(150)}`, mode: 0o777 }, ''],
    [{ ...base, name: 'h', type: 'hardlink', linkname: long }, ''],
    [{ ...base, name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 }, ''],
    [{ ...base, name: 'f', type: 'fifo' }, ''],
  ];
  const bytes = Buffer.concat([
    ...entries.flatMap(([e, d]) => {
      const pad = Buffer.alloc((512 - (d.length % 512)) % 512);
      return [fsEntryHeader(e), Buffer.from(d), pad];
    }),
    END_OF_ARCHIVE,
  ]);

  it('round-trips every field, binary extended attributes included, whatever the chunking', async () => {
    for (const size of [1, 7, 512, 100_000]) {
      const back = await readAll(bytes, size);
      expect(back.map((b) => b.data)).toEqual(entries.map(([, d]) => d));
      expect(back.map((b) => b.entry)).toEqual(entries.map(([e]) => e));
    }
  });

  it('writes headers GNU tar reads: long names, large ids, links and devices', () => {
    const listing = execFileSync('tar', ['--numeric-owner', '-tvf', '-'], {
      input: bytes,
      env: { TZ: 'UTC' },
    })
      .toString()
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/));
    expect(listing.map((l) => l[0])).toEqual([
      'drwxrwxrwt',
      '-rwsr-xr-x',
      'lrwxrwxrwx',
      'hrw-r--r--',
      'crw-rw-rw-',
      'prw-r--r--',
    ]);
    expect(listing[1]![1]).toBe('3000000/70000000');
    expect(listing[1]![5]).toBe(long);
    expect(listing[2]!.slice(5)).toEqual(['l', '->', `/${'t'.repeat(150)}`]);
    expect(listing[3]!.slice(5)).toEqual(['h', 'link', 'to', long]);
    expect(listing[4]![2]).toBe('1,3');
  });

  it('refuses a damaged header and a stream cut short', async () => {
    const bad = Buffer.from(bytes);
    bad[10] = bad[10]! ^ 0xff;
    await expect(readAll(bad, 512)).rejects.toThrow(
      /test: not a valid tar stream \(bad header checksum at offset 0\)/,
    );
    await expect(readAll(bytes.subarray(0, 1500), 512)).rejects.toThrow(/ends in the middle of an entry/);
    await expect(readAll(Buffer.alloc(0), 512)).rejects.toThrow(
      /test: not a valid tar stream \(it is empty\)/,
    );
  });

  it('cleans names', () => {
    expect(cleanName('./a//b/')).toBe('a/b');
    expect(cleanName('/abs')).toBe('abs');
    expect(cleanName('./')).toBe('');
    expect(cleanName('.')).toBe('');
  });
});
