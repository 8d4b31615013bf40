import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { gunzipSync, inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { StowageError } from '../errors.js';
import {
  compressionKey,
  compressLayer,
  entropy,
  GZIP_CHUNK,
  gzipChunked,
  parseCompression,
} from './compress.js';

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

/** The bytes handed over in pieces of `piece` (a network's or a tar reader's sizes, not the chunk's). */
async function* pieces(b: Buffer, piece = 64 * 1024 + 17): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < b.length; at += piece) yield b.subarray(at, at + piece);
}

/** Text-like bytes that deflate shrinks a good deal, but not to nothing. */
function words(size: number, seed = 1): Buffer {
  const vocab = ['layer', 'tar', 'usr', 'lib', 'bin', 'etc', 'share', 'python3', 'so', 'conf', '\n', ' '];
  const out = Buffer.alloc(size);
  let x = seed;
  for (let at = 0; at < size; ) {
    x = (x * 1103515245 + 12345) >>> 0;
    const w = vocab[(x >>> 16) % vocab.length] as string;
    at += out.write(w, at);
  }
  return out;
}

const gzip = (b: Buffer, workers: number, level = 6) => collect(gzipChunked(pieces(b), { level, workers }));

describe('gzipChunked', () => {
  it('makes one gzip member that zlib and gzip(1) read back, with the right CRC and length', async () => {
    // Mixed: compressible chunks, random (stored) chunks, and a short last chunk.
    const plain = Buffer.concat([
      words(GZIP_CHUNK * 2 + 5000),
      randomBytes(GZIP_CHUNK * 2),
      words(70_000, 7),
    ]);
    const gz = await gzip(plain, 2);
    expect(gz.subarray(0, 4)).toEqual(Buffer.from([0x1f, 0x8b, 8, 0]));
    expect(gz[9]).toBe(0xff);
    expect(gunzipSync(gz).equals(plain)).toBe(true);
    const viaGzip = execFileSync('gzip', ['-dc'], { input: gz, maxBuffer: 64 << 20 });
    expect(viaGzip.equals(plain)).toBe(true);
    // Random chunks cost a few bytes per 64 KiB, words far less than their size.
    expect(gz.length).toBeLessThan(GZIP_CHUNK * 2 * 1.001 + plain.length / 2);
  });

  it('gives the same bytes with 1 and 4 workers, and for any input piece size', async () => {
    const plain = Buffer.concat([randomBytes(GZIP_CHUNK + 3), words(3 * GZIP_CHUNK, 3)]);
    const one = await gzip(plain, 1);
    const four = await gzip(plain, 4);
    expect(createHash('sha256').update(four).digest('hex')).toBe(
      createHash('sha256').update(one).digest('hex'),
    );
    const oddPieces = await collect(gzipChunked(pieces(plain, 999), { level: 6, workers: 3 }));
    expect(oddPieces.equals(one)).toBe(true);
  });

  it('takes a whole chunk handed over in one buffer as it is, with the same bytes out', async () => {
    const plain = Buffer.concat([
      words(2 * GZIP_CHUNK, 5),
      randomBytes(2 * GZIP_CHUNK),
      words(GZIP_CHUNK, 6),
    ]);
    const expected = await collect(gzipChunked(pieces(plain, 999), { level: 1, workers: 2 }));
    // Each chunk in a buffer of its own (as a file read 1 MiB at a time gives them), then a mix: whole
    // chunks after a part of one, and a part after whole ones.
    const own = (b: Buffer) => Buffer.from(b);
    async function* whole(): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < plain.length; at += GZIP_CHUNK) yield own(plain.subarray(at, at + GZIP_CHUNK));
    }
    async function* mixed(): AsyncGenerator<Uint8Array> {
      yield own(plain.subarray(0, GZIP_CHUNK));
      yield own(plain.subarray(GZIP_CHUNK, GZIP_CHUNK + 10));
      yield own(plain.subarray(GZIP_CHUNK + 10, 2 * GZIP_CHUNK + 10));
      yield own(plain.subarray(2 * GZIP_CHUNK + 10, 3 * GZIP_CHUNK));
      yield own(plain.subarray(3 * GZIP_CHUNK, 4 * GZIP_CHUNK));
      yield own(plain.subarray(4 * GZIP_CHUNK));
    }
    for (const body of [whole(), mixed()]) {
      const out = await collect(gzipChunked(body, { level: 1, workers: 2 }));
      expect(out.equals(expected)).toBe(true);
      expect(gunzipSync(out).equals(plain)).toBe(true);
    }
  });

  it('stores a chunk that does not compress, and deflates one that does', async () => {
    const random = randomBytes(GZIP_CHUNK);
    const stored = await gzip(Buffer.concat([random, random.subarray(0, 10)]), 2);
    // Header, then the first chunk as stored blocks: a 5-byte header (not final) and the bytes as they are.
    expect(stored[10]).toBe(0);
    expect(stored.readUInt16LE(11)).toBe(65535);
    expect(stored.subarray(15, 15 + 65535).equals(random.subarray(0, 65535))).toBe(true);
    const text = words(GZIP_CHUNK * 2);
    expect((await gzip(text, 2)).length).toBeLessThan(text.length / 3);
  });

  it('handles empty input and input of exactly whole chunks', async () => {
    expect(gunzipSync(await gzip(Buffer.alloc(0), 2)).length).toBe(0);
    const whole = words(GZIP_CHUNK * 2, 9);
    expect(gunzipSync(await gzip(whole, 2)).equals(whole)).toBe(true);
    const wholeRandom = randomBytes(GZIP_CHUNK * 2);
    const gz = await gzip(wholeRandom, 2);
    expect(gunzipSync(gz).equals(wholeRandom)).toBe(true);
    // The final chunk ends the deflate stream: nothing but the 8-byte trailer follows it.
    expect(inflateRawSync(gz.subarray(10, gz.length - 8)).equals(wholeRandom)).toBe(true);
  });

  it('uses the previous chunk as dictionary: a repeat across a chunk boundary costs almost nothing', async () => {
    const block = randomBytes(20_000);
    // The block straddles nothing: it ends chunk 0 and is repeated at the start of chunk 1.
    const first = Buffer.concat([words(GZIP_CHUNK - block.length), block]);
    const plain = Buffer.concat([first, block, words(100_000, 5)]);
    const gz = await gzip(plain, 2);
    const alone = await gzip(first, 2);
    expect(gunzipSync(gz).equals(plain)).toBe(true);
    // Without the dictionary the repeated 20 KB of random bytes would cost 20 KB again.
    expect(gz.length - alone.length).toBeLessThan(15_000);
  });
});

describe('entropy (what decides whether a chunk is deflated or stored)', () => {
  /** The textbook sum, one byte at a time: what the word-at-a-time count must agree with exactly. */
  function reference(bytes: Uint8Array): number {
    const n = new Map<number, number>();
    for (const b of bytes) n.set(b, (n.get(b) ?? 0) + 1);
    let bits = 0;
    for (let b = 0; b < 256; b++) {
      const k = n.get(b);
      if (k) bits -= (k / bytes.length) * Math.log2(k / bytes.length);
    }
    return bits;
  }

  it('gives 8 bits for every byte value once, 0 for one value, 1 for two halves', () => {
    expect(entropy(Uint8Array.from({ length: 256 }, (_, i) => i))).toBe(8);
    expect(entropy(Buffer.alloc(4096, 7))).toBe(0);
    expect(entropy(Buffer.concat([Buffer.alloc(1000, 1), Buffer.alloc(1000, 2)]))).toBe(1);
  });

  it('agrees exactly with a byte-at-a-time count, at any offset and any length', () => {
    const data = Buffer.concat([randomBytes(5000), words(5000)]);
    for (const [start, end] of [
      [0, 10_000],
      [1, 9_999],
      [3, 4_098],
      [2, 7],
      [0, 3],
      [5_000, 10_000],
    ] as const) {
      const slice = data.subarray(start, end);
      expect(entropy(slice)).toBe(reference(slice));
    }
  });
});

describe('compression choices', () => {
  it('checks formats and levels, naming what to use instead', () => {
    expect(parseCompression('gzip')).toEqual({ format: 'gzip', level: 1 });
    expect(parseCompression('gzip', '9')).toEqual({ format: 'gzip', level: 9 });
    expect(parseCompression('none')).toEqual({ format: 'none', level: undefined });
    expect(() => parseCompression('brotli')).toThrow(/use gzip, zstd or none/);
    expect(() => parseCompression('gzip', 12)).toThrow(/out of range for gzip: use 1-9/);
    expect(() => parseCompression('none', 3)).toThrow(StowageError);
  });

  it('keys the digest cache by everything the bytes depend on', () => {
    const a = compressionKey({ format: 'gzip', level: 6 });
    expect(a).toContain(process.versions.zlib);
    expect(compressionKey({ format: 'gzip', level: 9 })).not.toBe(a);
  });

  it('makes zstd on Node.js 22.15 and later, and says what to do on older Node', async () => {
    const native = 'createZstdCompress' in (await import('node:zlib'));
    if (!native) {
      expect(() => parseCompression('zstd')).toThrow(/needs Node.js 22.15 or later/);
      return;
    }
    const c = parseCompression('zstd', 5);
    const plain = words(3 * GZIP_CHUNK, 11);
    const out = await collect(compressLayer(pieces(plain), c));
    expect(out.subarray(0, 4)).toEqual(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    const zlib = (await import('node:zlib')) as unknown as { zstdDecompressSync(b: Buffer): Buffer };
    expect(zlib.zstdDecompressSync(out).equals(plain)).toBe(true);
    expect(compressionKey(c)).toMatch(/^zstd-1 level-5 zstd-/);
  });
});

describe('a compression asked for by its two parts (CLI flags, API fields)', () => {
  it('reads them by one rule: nothing is the default, a level alone is gzip, a bad pair is named', async () => {
    const { compressionFrom } = await import('./compress.js');
    expect(compressionFrom({})).toBeUndefined();
    expect(compressionFrom({ format: undefined, level: '' })).toBeUndefined();
    expect(compressionFrom({ level: 4 })).toEqual({ format: 'gzip', level: 4 });
    expect(compressionFrom({ format: 'gzip' })).toEqual({ format: 'gzip', level: 1 });
    expect(compressionFrom({ format: 'none' })).toEqual({ format: 'none', level: undefined });
    expect(() => compressionFrom({ format: 'none', level: 3 })).toThrow(/needs gzip or zstd/);
    expect(() => compressionFrom({ format: 'gzip', level: '12' })).toThrow(/use 1-9/);
    expect(() => compressionFrom({ format: 'brotli' })).toThrow(/unknown compression "brotli"/);
  });
});
