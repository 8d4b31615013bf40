import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { END_OF_ARCHIVE, entryHeader, paddedSize } from './tar.js';
import { TarIndex } from './tar-reader.js';

const temp = tempDirs();

/** A plain tar of `files` in order, as docker save lays one out: large layers, then small documents. */
function tarOf(files: [string, Buffer][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, data] of files) {
    parts.push(entryHeader({ name, type: 'file', size: data.length }, 0));
    parts.push(data, Buffer.alloc(paddedSize(data.length) - data.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('TarIndex of a plain tar', () => {
  it('reads every entry back, small ones held from the indexing and large ones from the file', async () => {
    const files: [string, Buffer][] = [
      ['layer.tar', randomBytes(3 << 20)],
      ...Array.from(
        { length: 40 },
        (_, i) => [`doc${i}.json`, randomBytes(100 + i * 500)] as [string, Buffer],
      ),
      // Past what is kept of the read-ahead: read from the file again.
      ['late.tar', randomBytes(2 << 20)],
      ['manifest.json', Buffer.from('[{"Config":"c.json"}]')],
    ];
    const path = join(await temp('tar-index-'), 'a.tar');
    await writeFile(path, tarOf(files));
    const index = await TarIndex.open(path);
    expect([...index.entries.keys()]).toEqual(files.map(([n]) => n));
    for (const [name, data] of files) {
      const e = index.entries.get(name)!;
      expect(e.size).toBe(data.length);
      expect((await collect(index.stream(e))).equals(data)).toBe(true);
      if (data.length < 1 << 20) {
        const read = await index.read(e, 1 << 20, name);
        expect(read.equals(data)).toBe(true);
        // The caller's own copy: changing it changes nothing the index holds.
        read.fill(0);
        expect((await index.read(e, 1 << 20, name)).equals(data)).toBe(true);
      }
    }
  });

  it('still finds a tar cut short inside its small entries', async () => {
    const whole = tarOf([
      ['layer.tar', randomBytes(1 << 20)],
      ['config.json', randomBytes(3000)],
    ]);
    const path = join(await temp('tar-index-'), 'cut.tar');
    await writeFile(path, whole.subarray(0, (1 << 20) + 512 + 512 + 1000));
    await expect(TarIndex.open(path)).rejects.toThrow(/is truncated/);
  });
});
