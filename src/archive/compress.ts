/**
 * Compression of the layers stowage makes itself (a docker-archive's plain layers going to a registry,
 * a rootfs import). The bytes must be the same on every machine and at every core count, because they
 * become digests that a second restore, another replica or a signature depends on.
 *
 * gzip is made the way pigz makes it: the layer is cut into fixed 1 MiB chunks, each chunk is deflated
 * on its own thread (libuv's pool, where Node's zlib runs) with the 32 KiB before it as dictionary, and
 * the pieces are joined into one gzip member; the CRC-32 runs over the plain bytes in order on the main
 * thread (zlib's crc32 is several GB/s). A chunk whose sample does not compress is written as stored
 * blocks instead: zlib's match search crawls over incompressible data (65 MB/s a core here, whatever
 * the level), and layers are mostly compressed files. Every choice depends on the chunk's bytes only, so
 * the output never depends on how many threads ran.
 */
import { availableParallelism } from 'node:os';
import type { Transform } from 'node:stream';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { Limiter } from '../core/limiter.js';
import { StowageError } from '../errors.js';
import { throughTransform } from './decompress.js';

export type LayerCompressionFormat = 'gzip' | 'zstd' | 'none';

/** How stowage compresses a layer it makes (`--compress`, `--compress-level`). */
export interface LayerCompression {
  format: LayerCompressionFormat;
  /** gzip 1-9 (default 1), zstd 1-19 (default 3); none has no level. */
  level?: number | undefined;
}

/**
 * gzip level 1, as crane (go-containerregistry's BestSpeed) makes layers: on real image files (Debian's
 * /usr, 517 MB) 2.6x the speed of level 6, for 209 MB of layers against 193 MB (skopeo's pgzip: 200 MB).
 */
export const DEFAULT_COMPRESSION: LayerCompression = { format: 'gzip', level: 1 };

const LEVELS: Record<LayerCompressionFormat, { min: number; max: number; default: number } | undefined> = {
  gzip: { min: 1, max: 9, default: 1 },
  zstd: { min: 1, max: 19, default: 3 },
  none: undefined,
};

/** The formats a layer may be compressed to, as every front end offers them. */
export const COMPRESSION_FORMATS = ['gzip', 'zstd', 'none'] as const satisfies LayerCompressionFormat[];

/** How the compression choices read in help, the API's document and errors: said once, here. */
export const COMPRESSION_HELP = {
  format: 'gzip (default; parallel, deterministic), zstd (Node.js 22.15+), none',
  level: (['gzip', 'zstd'] as const)
    .map((f) => `${f} ${LEVELS[f]!.min}-${LEVELS[f]!.max} (default ${LEVELS[f]!.default})`)
    .join(', '),
  /** The widest level range any format takes (the API checks the format's own with compressionFrom). */
  maxLevel: Math.max(...Object.values(LEVELS).map((r) => r?.max ?? 0)),
};

type ZstdEncoder = (o: object) => Transform;

/** Node's own zstd encoder (Node 22.15 and later); undefined on older Node. */
function zstdEncoder(): ZstdEncoder | undefined {
  return (zlib as unknown as { createZstdCompress?: ZstdEncoder }).createZstdCompress;
}

function requireZstd(): ZstdEncoder {
  const create = zstdEncoder();
  if (!create) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `zstd compression needs Node.js 22.15 or later (this is ${process.version}); use gzip, or run stowage on Node.js 24`,
    );
  }
  return create;
}

/**
 * Checks a compression a user asked for (a flag, an API field) and fills in its level. Errors name the
 * choice and what to use instead.
 */
export function parseCompression(format: string, level?: number | string | undefined): LayerCompression {
  if (format !== 'gzip' && format !== 'zstd' && format !== 'none') {
    throw new StowageError('INVALID_ARGUMENT', `unknown compression "${format}": use gzip, zstd or none`);
  }
  if (format === 'zstd') requireZstd();
  const range = LEVELS[format];
  if (level === undefined || level === '') return { format, level: range?.default };
  const n = Number(level);
  if (!range) throw new StowageError('INVALID_ARGUMENT', 'a compression level needs gzip or zstd, not none');
  if (!Number.isInteger(n) || n < range.min || n > range.max) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `compression level ${level} is out of range for ${format}: use ${range.min}-${range.max}`,
    );
  }
  return { format, level: n };
}

/**
 * The one rule for a compression asked for by its two parts, whoever asks (`--compress` and
 * `--compress-level`, the API's `compress` and `compressLevel`): a level alone means gzip at that
 * level; neither means the destination's default (undefined).
 */
export function compressionFrom(choice: {
  format?: string | undefined;
  level?: number | string | undefined;
}): LayerCompression | undefined {
  if (choice.format === undefined || choice.format === '') {
    return choice.level === undefined || choice.level === ''
      ? undefined
      : parseCompression('gzip', choice.level);
  }
  return parseCompression(choice.format, choice.level);
}

/**
 * What a compression's output depends on, as the digest cache keys it: the same key always gives the
 * same bytes. The chunked gzip's bytes depend on zlib's version; zstd's on libzstd's.
 */
export function compressionKey(c: LayerCompression): string {
  if (c.format === 'gzip') return `gzip-chunked-2 level-${c.level ?? 1} zlib-${process.versions.zlib}`;
  if (c.format === 'zstd') {
    const version = (process.versions as Record<string, string | undefined>).zstd ?? 'unknown';
    return `zstd-1 level-${c.level ?? 3} zstd-${version}`;
  }
  return 'none';
}

export interface CompressOptions {
  /** Chunks deflated at once (default: the cores, at most 8). The bytes are the same for any value. */
  workers?: number | undefined;
}

/** The layer's bytes compressed as `c` says (none: as they are). */
export function compressLayer(
  body: AsyncIterable<Uint8Array>,
  c: LayerCompression,
  opts: CompressOptions = {},
): AsyncIterable<Uint8Array> {
  if (c.format === 'gzip') return gzipChunked(body, { level: c.level ?? 1, workers: opts.workers });
  if (c.format === 'zstd') return zstdStream(body, c.level ?? 3);
  return body;
}

function zstdStream(body: AsyncIterable<Uint8Array>, level: number): AsyncIterable<Uint8Array> {
  const create = requireZstd();
  const params = { [(zlib.constants as Record<string, number>).ZSTD_c_compressionLevel ?? 100]: level };
  return throughTransform([], body[Symbol.asyncIterator](), create({ params, chunkSize: 1 << 20 }));
}

/** Plain bytes per chunk. Fixed: it shapes the output, so changing it changes every digest. */
export const GZIP_CHUNK = 1 << 20;
/** deflate's window: each chunk gets this much of the one before as dictionary. */
const WINDOW = 32 * 1024;
/**
 * A chunk is judged by four slices of this size spread over it: by their bytes' entropy first (a
 * histogram, microseconds), and only where that is in between by deflating them at level 1.
 */
const SAMPLE_SLICE = 16 * 1024;
const SAMPLE_SLICES = 4;
/** Bits per byte above which the sample is taken for random (compressed data, 64 KiB of it: ~7.997). */
const RANDOM_ENTROPY = 7.98;
/** Bits per byte below which deflate is sure to pay (text, binaries, tar headers). */
const REDUNDANT_ENTROPY = 7.2;
/** In between, the chunk is stored when level 1 does not shrink the sample below this fraction. */
const STORED_ABOVE = 0.95;
/** The largest stored block deflate allows. */
const STORED_MAX = 65535;

const deflateRaw = promisify(zlib.deflateRaw) as (b: Buffer, o: zlib.ZlibOptions) => Promise<Buffer>;

/** Default number of chunks in flight: the cores (Node's thread pool runs four unless told otherwise). */
export function defaultWorkers(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

/**
 * One gzip member of `body`, deflated a chunk per thread, `workers` chunks at a time: the header
 * (no name, mtime 0, OS 255 "unknown", as Go writes it), the chunks in order, the CRC-32 and length.
 */
export async function* gzipChunked(
  body: AsyncIterable<Uint8Array>,
  opts: { level: number; workers?: number | undefined },
): AsyncGenerator<Uint8Array> {
  const workers = Math.max(1, opts.workers ?? defaultWorkers());
  const xfl = opts.level === 9 ? 2 : opts.level === 1 ? 4 : 0;
  yield Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]);
  // Chunks deflating or waiting to be yielded, in order, with the buffer each was cut into.
  const queue: { job: Promise<Buffer>; buffer: Buffer<ArrayBuffer> }[] = [];
  // A chunk's buffer is free once its job and the next one (which took its end as dictionary) are
  // done: reused, instead of a new megabyte of garbage per chunk.
  const free: Buffer<ArrayBuffer>[] = [];
  let retired: Buffer<ArrayBuffer> | undefined;
  let crc = 0;
  let length = 0;
  let dictionary: Buffer | undefined;
  let chunk = Buffer.allocUnsafe(GZIP_CHUNK);
  let filled = 0;
  const dispatch = (final: boolean) => {
    const plain = chunk.subarray(0, filled);
    crc = zlib.crc32(plain, crc);
    length += filled;
    // Taken now: the job may start later, when `dictionary` is already the next chunk's.
    const before = dictionary;
    const job = deflateSlots().run(() => deflateChunk(plain, before, opts.level, final));
    // Handled now, awaited in order later: a chunk failing while an earlier one is awaited is no
    // unhandled rejection.
    job.catch(() => {});
    queue.push({ job, buffer: chunk });
    dictionary = plain.subarray(Math.max(0, filled - WINDOW));
    chunk = free.pop() ?? Buffer.allocUnsafe(GZIP_CHUNK);
    filled = 0;
  };
  // Bounded: adopted chunks (below) bring buffers of their own.
  const recycle = (b: Buffer<ArrayBuffer>) => {
    if (free.length < workers + 2) free.push(b);
  };
  const next = async (): Promise<Buffer> => {
    const head = queue.shift() as (typeof queue)[number];
    const out = await head.job;
    if (retired) recycle(retired);
    retired = head.buffer;
    return out;
  };
  for await (const c of body) {
    // A whole chunk's worth in one piece (a file read 1 MiB at a time from a layer's start) becomes the
    // chunk itself: no copy. A stream's chunk is the reader's once handed over, so it may be reused.
    const whole =
      c.byteLength === GZIP_CHUNK && (filled === 0 || filled === GZIP_CHUNK) ? ownedBuffer(c) : undefined;
    if (whole) {
      if (filled === GZIP_CHUNK) {
        dispatch(false);
        while (queue.length > workers) yield await next();
      }
      recycle(chunk);
      chunk = whole;
      filled = GZIP_CHUNK;
      continue;
    }
    for (let at = 0; at < c.byteLength; ) {
      // A full chunk is sent only once more bytes follow: the last chunk is deflated differently.
      if (filled === GZIP_CHUNK) {
        dispatch(false);
        while (queue.length > workers) yield await next();
      }
      const n = Math.min(c.byteLength - at, GZIP_CHUNK - filled);
      chunk.set(c.subarray(at, at + n), filled);
      filled += n;
      at += n;
    }
  }
  dispatch(true);
  while (queue.length > 0) yield await next();
  const trailer = Buffer.allocUnsafe(8);
  trailer.writeUInt32LE(crc >>> 0, 0);
  trailer.writeUInt32LE(length % 2 ** 32, 4);
  yield trailer;
}

/** `c` as a Buffer of its own ArrayBuffer (the whole of it), or undefined if it is a view of a larger one. */
function ownedBuffer(c: Uint8Array): Buffer<ArrayBuffer> | undefined {
  const b = c.buffer;
  if (!(b instanceof ArrayBuffer) || c.byteOffset !== 0 || b.byteLength !== c.byteLength) return undefined;
  return Buffer.from(b, 0, c.byteLength);
}

let slots: Limiter | undefined;

/**
 * Chunks deflating at once in the whole process: a restore compresses several layers together. One
 * more than the cores: with exactly one a core, each core waits idle while its finished chunk goes back
 * to the main thread and the next one comes out (measured on 2 cores: 154 MB/s of level-1 deflate with
 * 2 in flight, 198 MB/s with 3, the same core-seconds); more only cost memory.
 */
function deflateSlots(): Limiter {
  slots ??= new Limiter(defaultWorkers() + 1);
  return slots;
}

/**
 * One chunk as deflate blocks that a decoder reads straight on from the chunk before: ended by an empty
 * stored block (a sync flush, byte-aligned) unless it is the last, which carries the final-block bit.
 */
async function deflateChunk(
  plain: Buffer,
  dictionary: Buffer | undefined,
  level: number,
  final: boolean,
): Promise<Buffer> {
  if (await incompressible(plain)) return storedBlocks(plain, final);
  return deflateRaw(plain, {
    // Room for the whole output at once: with zlib's 16 KiB default a chunk goes back and forth between
    // the thread pool and the main thread a few dozen times. (The bytes do not depend on it.)
    chunkSize: plain.byteLength + (plain.byteLength >> 3) + 1024,
    level,
    // zlib's largest hash table: level 1 runs 10% faster for the same size (measured on Debian's /usr).
    memLevel: 9,
    strategy: zlib.constants.Z_DEFAULT_STRATEGY,
    ...(dictionary ? { dictionary } : {}),
    finishFlush: final ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
  });
}

/** Whether slices spread over the chunk look incompressible (chunks under 64 KiB: never). */
async function incompressible(plain: Buffer): Promise<boolean> {
  const sampled = SAMPLE_SLICE * SAMPLE_SLICES;
  if (plain.byteLength < sampled) return false;
  const step = Math.floor((plain.byteLength - SAMPLE_SLICE) / (SAMPLE_SLICES - 1));
  const sample = Buffer.allocUnsafe(sampled);
  for (let i = 0; i < SAMPLE_SLICES; i++) {
    plain.copy(sample, i * SAMPLE_SLICE, i * step, i * step + SAMPLE_SLICE);
  }
  const bits = entropy(sample);
  if (bits >= RANDOM_ENTROPY) return true;
  if (bits < REDUNDANT_ENTROPY) return false;
  const out = await deflateRaw(sample, { level: 1 });
  return out.byteLength > sampled * STORED_ABOVE;
}

/** Four histograms side by side: consecutive bytes land in different ones (see entropy). */
const counts = new Uint32Array(1024);

/**
 * Order-0 entropy of `bytes`, in bits per byte. The bytes are read four at a time as one 32-bit word,
 * each byte counted in its own histogram, summed at the end: one counter updated per byte in a row
 * makes each increment wait on the one before whenever two bytes repeat (1.7x slower in Node here).
 */
export function entropy(bytes: Uint8Array): number {
  counts.fill(0);
  const n = bytes.byteLength;
  const aligned = bytes.byteOffset % 4 === 0;
  const words = aligned ? new Uint32Array(bytes.buffer, bytes.byteOffset, n >>> 2) : new Uint32Array(0);
  for (let i = 0; i < words.length; i++) {
    const w = words[i] as number;
    (counts[w & 0xff] as number)++;
    (counts[256 + ((w >>> 8) & 0xff)] as number)++;
    (counts[512 + ((w >>> 16) & 0xff)] as number)++;
    (counts[768 + (w >>> 24)] as number)++;
  }
  for (let i = words.length * 4; i < n; i++) (counts[bytes[i] as number] as number)++;
  let bits = 0;
  for (let b = 0; b < 256; b++) {
    const k =
      (counts[b] as number) +
      (counts[256 + b] as number) +
      (counts[512 + b] as number) +
      (counts[768 + b] as number);
    if (k > 0) {
      const p = k / n;
      bits -= p * Math.log2(p);
    }
  }
  return bits;
}

/** `plain` as stored deflate blocks of at most 65535 bytes, each a 5-byte header and the bytes. */
function storedBlocks(plain: Buffer, final: boolean): Buffer {
  const blocks = Math.max(1, Math.ceil(plain.byteLength / STORED_MAX));
  const out = Buffer.allocUnsafe(plain.byteLength + 5 * blocks);
  let o = 0;
  for (let i = 0; i < blocks; i++) {
    const part = plain.subarray(i * STORED_MAX, (i + 1) * STORED_MAX);
    out[o] = final && i === blocks - 1 ? 1 : 0;
    out.writeUInt16LE(part.byteLength, o + 1);
    out.writeUInt16LE(~part.byteLength & 0xffff, o + 3);
    part.copy(out, o + 5);
    o += 5 + part.byteLength;
  }
  return out;
}
