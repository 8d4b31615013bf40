import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BlobCache } from './blob-cache.js';

const blob = (text: string) => {
  const bytes = Buffer.from(text.repeat(1024).slice(0, 1024));
  return {
    bytes,
    d: {
      mediaType: 'x',
      digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
      size: bytes.length,
    },
  };
};

async function* stream(b: Buffer): AsyncGenerator<Uint8Array> {
  yield b.subarray(0, 100);
  yield b.subarray(100);
}

async function drain(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

const dirs: string[] = [];
const tempDir = async () => {
  const dir = await mkdtemp(join(tmpdir(), 'blob-cache-'));
  dirs.push(dir);
  return dir;
};

afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('mirror blob cache', () => {
  it('keeps what passes through, evicts the least recently used past its bound, and survives a restart', async () => {
    const dir = await tempDir();
    const cache = await BlobCache.open(dir, 2500);
    const [a, b, c] = [blob('a'), blob('b'), blob('c')];
    expect(await drain(cache.tee(a.d, stream(a.bytes)))).toEqual(a.bytes);
    expect(await drain(cache.tee(b.d, stream(b.bytes)))).toEqual(b.bytes);
    // a is used again, so b is now the least recently used.
    expect(await drain((await cache.lookup(a.d))!)).toEqual(a.bytes);
    await drain(cache.tee(c.d, stream(c.bytes)));
    expect(cache.get(b.d)).toBeUndefined();
    expect(cache.size).toBe(2048);
    expect((await readdir(dir)).sort()).toEqual([a.d.digest.slice(7), c.d.digest.slice(7)].sort());
    // A new process finds what is there, and a leftover partial write is cleaned away.
    await writeFile(join(dir, `.${b.d.digest.slice(7)}.0000.partial`), 'half');
    const again = await BlobCache.open(dir, 2500);
    expect(again.size).toBe(2048);
    expect(await drain(again.get(c.d)!)).toEqual(c.bytes);
    expect((await readdir(dir)).some((n) => n.endsWith('.partial'))).toBe(false);
  });

  it('keeps nothing from a stream that was cut short or whose digest is wrong; not a blob bigger than the bound', async () => {
    const dir = await tempDir();
    const cache = await BlobCache.open(dir, 1500);
    const a = blob('a');
    for await (const _ of cache.tee(a.d, stream(a.bytes))) break;
    expect(cache.get(a.d)).toBeUndefined();
    const wrong = { ...a.d, digest: blob('z').d.digest };
    await expect(drain(cache.tee(wrong, stream(a.bytes)))).rejects.toThrow(/does not match/);
    expect(cache.get(wrong)).toBeUndefined();
    const big = await BlobCache.open(join(dir, 'small'), 1000);
    await drain(big.tee(a.d, stream(a.bytes)));
    expect(big.size).toBe(0);
    expect(await readdir(dir)).toEqual(['small']);
  });

  it('lets a second reader wait for a blob being written instead of fetching it again', async () => {
    const dir = await tempDir();
    const cache = await BlobCache.open(dir, 10_000);
    const a = blob('a');
    const it = cache.tee(a.d, stream(a.bytes))[Symbol.asyncIterator]();
    await it.next();
    const waiting = cache.lookup(a.d);
    for (let r = await it.next(); !r.done; r = await it.next());
    const hit = await waiting;
    expect(hit).toBeDefined();
    expect(await drain(hit!)).toEqual(a.bytes);
  });
});
