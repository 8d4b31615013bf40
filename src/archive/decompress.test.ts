import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { MediaType } from '../image/mediatypes.js';
import { predictedPlainSize, SIZE_HINT_BYTES } from './decompress.js';

const tail = (b: Buffer) => b.subarray(b.length - SIZE_HINT_BYTES);
/** A blob end whose gzip trailer says `isize`. */
const ending = (isize: number) => {
  const b = Buffer.alloc(SIZE_HINT_BYTES);
  b.writeUInt32LE(isize, SIZE_HINT_BYTES - 4);
  return b;
};

describe('predictedPlainSize', () => {
  it('reads a gzip layer size from its trailer', () => {
    const tar = Buffer.concat([
      Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7919) % 251)),
      Buffer.alloc(1024),
    ]);
    const gz = gzipSync(tar);
    expect(predictedPlainSize(MediaType.OciLayerGzip, gz.length, tail(gz))).toBe(tar.length);
    expect(predictedPlainSize(MediaType.DockerLayerGzip, gz.length, tail(gz))).toBe(tar.length);
    // Smaller than the bytes it reads: no answer (the archive is then written in order).
    const tiny = gzipSync(Buffer.alloc(1024));
    expect(predictedPlainSize(MediaType.OciLayerGzip, tiny.length, tiny)).toBeUndefined();
  });

  it('adds back the multiples of 4 GiB the trailer drops, as far as the compressed size demands', () => {
    expect(predictedPlainSize(MediaType.OciLayerGzip, 5 * 2 ** 30, ending(1024))).toBe(2 * 2 ** 32 + 1024);
    expect(predictedPlainSize(MediaType.OciLayerGzip, 3 * 2 ** 30, ending(1024))).toBe(2 ** 32 + 1024);
    // 100 MiB of gzip may hold 4 GiB + 1 KiB (a ratio of 41), but 1 KiB is the smaller answer it allows.
    expect(predictedPlainSize(MediaType.OciLayerGzip, 1000, ending(1024))).toBe(1024);
  });

  it('says nothing where nothing sound can be said', () => {
    // 5000 bytes of gzip can neither hold 0 bytes nor 4 GiB.
    expect(predictedPlainSize(MediaType.OciLayerGzip, 5000, ending(0))).toBeUndefined();
    // An eStargz footer.
    const footer = ending(0);
    footer.write('STARGZ', 30, 'latin1');
    expect(predictedPlainSize(MediaType.OciLayerGzip, 50 << 20, footer)).toBeUndefined();
    // Not whole tar blocks.
    expect(predictedPlainSize(MediaType.OciLayerGzip, 500, ending(1000))).toBeUndefined();
    // No trailer, zstd, unknown types.
    expect(predictedPlainSize(MediaType.OciLayerGzip, 500, undefined)).toBeUndefined();
    expect(predictedPlainSize(MediaType.OciLayerZstd, 1024, ending(1024))).toBeUndefined();
    expect(predictedPlainSize('application/octet-stream', 1024, ending(1024))).toBeUndefined();
  });

  it('takes an uncompressed layer as its own size', () => {
    expect(predictedPlainSize(MediaType.OciLayerTar, 4096, undefined)).toBe(4096);
    expect(predictedPlainSize('application/vnd.docker.image.rootfs.diff.tar', 4096, undefined)).toBe(4096);
    expect(predictedPlainSize(MediaType.OciLayerTar, 4000, undefined)).toBeUndefined();
  });
});
