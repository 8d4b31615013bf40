/**
 * Layer decompression, chosen from the bytes themselves (media types are not always right: docker save
 * calls a gzipped layer.tar a tar, and podman's zstd layers appear under docker names). gzip runs on
 * libuv's thread pool; zstd on Node's native decoder where it exists (Node 22.15+), fzstd otherwise.
 */
import { Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { drained } from '../core/streams.js';

export type Compression = 'gzip' | 'zstd' | 'none';

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function sniffCompression(head: Uint8Array): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  return 'none';
}

/** Bytes of a blob's end that `predictedPlainSize` reads. */
export const SIZE_HINT_BYTES = 64;

/** deflate's best ratio: no gzip stream is more than this many times smaller than its data. */
const MAX_DEFLATE_RATIO = 1032;

/**
 * The size a layer will have decompressed, foretold from its media type, its size and its last bytes,
 * or undefined where nothing sound can be said. A gzip stream ends with its length modulo 2^32 (ISIZE).
 * deflate never shrinks data by more than a factor of 1032, nor grows it by more than a few bytes per
 * 64 KiB, so the one ISIZE + k * 2^32 between those bounds is taken. A tar is whole 512-byte blocks, so
 * any other answer is no answer, and so is a stream that ends with an eStargz or stargz footer (a
 * gzip member of its own, whose length says nothing of the layer's). A layer that is not compressed is
 * its own size. It is a prediction: the writer that lays out an archive with it checks every byte count
 * and falls back to writing in order when one is wrong (a multi-member gzip of another kind, say).
 */
export function predictedPlainSize(
  mediaType: string,
  size: number,
  tail: Uint8Array | undefined,
): number | undefined {
  let plain: number;
  if (mediaType.endsWith('gzip')) {
    if (tail?.byteLength !== SIZE_HINT_BYTES) return undefined;
    const end = Buffer.from(tail.buffer, tail.byteOffset, tail.byteLength);
    if (end.includes('STARGZ')) return undefined;
    plain = end.readUInt32LE(SIZE_HINT_BYTES - 4);
    const floor = (size - 1024) / 1.001;
    while (plain < floor) plain += 2 ** 32;
    if (plain > size * MAX_DEFLATE_RATIO) return undefined;
  } else if (mediaType.endsWith('.tar')) {
    plain = size;
  } else {
    return undefined;
  }
  return plain > 0 && plain % 512 === 0 ? plain : undefined;
}

/** Output chunks of 1 MiB instead of zlib's 16 KiB: fewer, larger writes and hash updates downstream. */
const OUT_CHUNK = 1 << 20;
const IN_BATCH = 1 << 20;

async function decompressor(compression: Compression): Promise<Transform | undefined> {
  if (compression === 'gzip') return zlib.createGunzip({ chunkSize: OUT_CHUNK });
  if (compression !== 'zstd') return undefined;
  const native = (zlib as unknown as { createZstdDecompress?: (o: object) => Transform })
    .createZstdDecompress;
  if (native) return native({ chunkSize: OUT_CHUNK });
  const { Decompress } = await import('fzstd');
  let dec: InstanceType<typeof Decompress>;
  return new Transform({
    construct(cb) {
      dec = new Decompress((chunk) => this.push(chunk));
      cb();
    },
    transform(chunk: Buffer, _enc, cb) {
      try {
        dec.push(chunk);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
    flush(cb) {
      try {
        dec.push(new Uint8Array(0), true);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
  });
}

/**
 * The plain bytes of a stream that may be gzip- or zstd-compressed (or neither), judged by its first
 * bytes. `onCompression` learns which it was before the first plain byte is yielded. Corrupt input fails
 * with zlib's or fzstd's error; the caller names the blob.
 */
export async function* decompressed(
  body: AsyncIterable<Uint8Array>,
  onCompression?: (c: Compression) => void,
): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  let first = await it.next();
  // A magic number may straddle tiny first chunks; gather four bytes before deciding.
  let head: Uint8Array = first.done ? new Uint8Array(0) : first.value;
  while (!first.done && head.byteLength < 4) {
    first = await it.next();
    if (!first.done) head = Buffer.concat([head, first.value]);
  }
  const compression = sniffCompression(head);
  onCompression?.(compression);
  const dec = await decompressor(compression);
  if (!dec) {
    try {
      if (head.byteLength) yield head;
      if (first.done) return;
      for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
    } finally {
      await it.return?.();
    }
    return;
  }
  yield* throughTransform(head.byteLength ? [head] : [], first.done ? undefined : it, dec);
}

/**
 * Runs a stream through a zlib transform. Input goes to it in batches of 1 MiB: each write is a round
 * trip to the thread pool, and with network-sized chunks (64 KiB) the round trips, not the work, would
 * set the pace.
 */
export async function* throughTransform(
  prefix: Uint8Array[],
  it: AsyncIterator<Uint8Array> | undefined,
  dec: Transform,
): AsyncGenerator<Uint8Array> {
  const pump = (async () => {
    try {
      // Batches are copied into a few buffers used over and over: a new 1 MiB buffer per batch would
      // count against V8's external memory and bring on a full garbage collection every 64 MiB.
      const spare: Buffer<ArrayBuffer>[] = [];
      let buf = Buffer.allocUnsafe(IN_BATCH);
      let batched = 0;
      const send = async () => {
        const full = buf;
        const n = batched;
        buf = spare.pop() ?? Buffer.allocUnsafe(IN_BATCH);
        batched = 0;
        // zlib is done with a chunk when its write callback runs; the buffer is free again then.
        const ok = dec.write(full.subarray(0, n), () => spare.push(full));
        if (!ok) await drained(dec, ['error', 'close']);
      };
      const take = async (c: Uint8Array) => {
        for (let at = 0; at < c.byteLength; ) {
          const n = Math.min(c.byteLength - at, IN_BATCH - batched);
          buf.set(c.subarray(at, at + n), batched);
          batched += n;
          at += n;
          if (batched === IN_BATCH) await send();
        }
      };
      for (const c of prefix) await take(c);
      if (it) {
        for (let r = await it.next(); !r.done; r = await it.next()) {
          if (dec.destroyed) return;
          await take(r.value);
        }
      }
      if (batched) await send();
      dec.end();
    } catch (e) {
      dec.destroy(e as Error);
    }
  })();
  try {
    for await (const c of dec) yield c as Uint8Array;
  } finally {
    dec.destroy();
    await pump;
    await it?.return?.();
  }
}
