import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashFileRange } from './hasher.js';

let dir: string;
let file: string;
let bytes: Buffer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-hasher-'));
  file = join(dir, 'blobs');
  bytes = randomBytes(48 << 20);
  await writeFile(file, bytes);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('hashFileRange', () => {
  it('hashes ranges in place, more at once than there are workers, each its own bytes', async () => {
    const ranges: [number, number][] = [
      [0, 48 << 20],
      [1, 3],
      [12_345, (5 << 20) + 7],
      [(1 << 20) - 1, 2],
      [40 << 20, 8 << 20],
      [7, 0],
      [3 << 20, 16 << 20],
    ];
    const got = await Promise.all(ranges.map(([start, length]) => hashFileRange(file, start, length)));
    expect(got).toEqual(ranges.map(([start, length]) => sha(bytes.subarray(start, start + length))));
  });

  it('fails a range past the end of the file as an IO error, and the next check still works', async () => {
    await expect(hashFileRange(file, (48 << 20) - 10, 20)).rejects.toMatchObject({
      code: 'IO',
      message: expect.stringContaining('ends 10 bytes early'),
    });
    await expect(hashFileRange(join(dir, 'missing'), 0, 1)).rejects.toMatchObject({ code: 'IO' });
    expect(await hashFileRange(file, 5, 100)).toBe(sha(bytes.subarray(5, 105)));
  });

  it('ends an aborted check as ABORTED, and the next check still works', async () => {
    const before = new AbortController();
    before.abort();
    await expect(hashFileRange(file, 0, 10, before.signal)).rejects.toMatchObject({ code: 'ABORTED' });
    const during = new AbortController();
    const long = hashFileRange(file, 0, 48 << 20, during.signal);
    during.abort();
    await expect(long).rejects.toMatchObject({ code: 'ABORTED' });
    expect(await hashFileRange(file, 0, 48 << 20)).toBe(sha(bytes));
  });
});
