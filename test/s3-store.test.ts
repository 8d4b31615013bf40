/**
 * The S3 store's blobs (src/store/s3-blobs.ts) against a real radosgw on loopback: verified by the
 * server as they arrive, created once under concurrent writers, read whole and by range, listed and
 * deleted; large blobs in parts, aborted when they do not hash to their digest.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StowageError } from '../src/errors.js';
import type { Descriptor } from '../src/image/schemas.js';
import { S3Blobs, type S3Location } from '../src/store/s3-blobs.js';
import { type RunningS3, s3Bucket, startRadosgw } from './harness/radosgw.js';

let s3: RunningS3;
let location: S3Location;

beforeAll(async () => {
  s3 = await startRadosgw();
  location = await s3Bucket(s3, 'stowage-store', 'team-a/');
}, 60_000);

afterAll(async () => {
  await s3?.stop();
});

const descriptor = (bytes: Buffer): Descriptor => ({
  mediaType: 'application/vnd.oci.image.layer.v1.tar',
  digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
  size: bytes.length,
});

async function* pieces(b: Buffer, piece = 256 * 1024): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < b.length; at += piece) yield b.subarray(at, at + piece);
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('blobs on S3', () => {
  it('stores a blob verified by the server, reads it whole and by range, and names damage', async () => {
    const blobs = new S3Blobs(location);
    try {
      const bytes = randomBytes(3 * 1024 * 1024 + 17);
      const d = descriptor(bytes);
      expect(await blobs.put(d, pieces(bytes))).toBe('written');
      expect(await blobs.size(d.digest)).toBe(bytes.length);
      expect((await collect(await blobs.open(d.digest))).equals(bytes)).toBe(true);
      const slice = await collect(await blobs.open(d.digest, { start: 1000, end: 1999 }));
      expect(slice.equals(bytes.subarray(1000, 2000))).toBe(true);
      // Again: not sent, but what is offered is still checked.
      expect(await blobs.put(d, pieces(bytes))).toBe('present');
      const damaged = Buffer.from(bytes);
      damaged[12345] = (damaged[12345] as number) ^ 0xff;
      await expect(blobs.put(d, pieces(damaged))).rejects.toThrow(/DIGEST|digest/);
      // A new blob whose bytes do not match its digest: S3 refuses it, nothing is created.
      const fresh = randomBytes(100_000);
      const fd = descriptor(fresh);
      const wrong = Buffer.from(fresh);
      wrong[0] = (wrong[0] as number) ^ 1;
      const err = await blobs.put(fd, pieces(wrong)).catch((e) => e);
      expect(err).toBeInstanceOf(StowageError);
      expect((err as StowageError).code).toBe('DIGEST_MISMATCH');
      expect(await blobs.has(fd.digest)).toBe(false);
    } finally {
      blobs.close();
    }
  });

  it('creates a blob once when several writers race for it', async () => {
    const writers = Array.from({ length: 4 }, () => new S3Blobs(location));
    try {
      const bytes = randomBytes(2 * 1024 * 1024);
      const d = descriptor(bytes);
      const outcomes = await Promise.all(writers.map((w) => w.put(d, pieces(bytes))));
      expect(outcomes.filter((o) => o === 'written')).toHaveLength(1);
      expect((await collect(await writers[0]!.open(d.digest))).equals(bytes)).toBe(true);
    } finally {
      for (const w of writers) w.close();
    }
  });

  it('sends a large blob in parts, and aborts one that does not hash to its digest', async () => {
    // Parts from 5 MiB up (S3's minimum), for blobs over 1 MiB here (5 GiB in use).
    const blobs = new S3Blobs(location, { singlePutMax: 1024 * 1024, partSize: 5 * 1024 * 1024 });
    try {
      const bytes = randomBytes(12 * 1024 * 1024);
      const d = descriptor(bytes);
      expect(await blobs.put(d, pieces(bytes))).toBe('written');
      expect((await collect(await blobs.open(d.digest))).equals(bytes)).toBe(true);
      const other = randomBytes(11 * 1024 * 1024);
      const od = descriptor(other);
      const bad = Buffer.from(other);
      bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
      await expect(blobs.put(od, pieces(bad))).rejects.toThrow(/DIGEST|digest/i);
      expect(await blobs.has(od.digest)).toBe(false);
    } finally {
      blobs.close();
    }
  });

  it('lists what it holds under its prefix, deletes, and says what failed without the secret', async () => {
    const blobs = new S3Blobs(location);
    const elsewhere = new S3Blobs({ ...location, prefix: 'team-b/' });
    try {
      const bytes = randomBytes(50_000);
      const d = descriptor(bytes);
      await blobs.put(d, pieces(bytes));
      const listed = [];
      for await (const b of blobs.list()) listed.push(b);
      expect(listed.find((b) => b.digest === d.digest)?.size).toBe(bytes.length);
      // Another prefix is another store.
      for await (const b of elsewhere.list()) expect(b.digest).not.toBe(d.digest);
      await blobs.delete([d.digest]);
      expect(await blobs.has(d.digest)).toBe(false);
      const secret = 'not-the-secret-at-all';
      const denied = new S3Blobs({
        ...location,
        credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: secret },
      });
      const err = await denied.has(d.digest).catch((e) => e);
      denied.close();
      expect(err).toBeInstanceOf(StowageError);
      expect((err as StowageError).message).toContain('s3://stowage-store/team-a/');
      expect((err as StowageError).message).not.toContain(secret);
      expect((err as StowageError).message).not.toContain(s3.secretAccessKey);
    } finally {
      blobs.close();
      elsewhere.close();
    }
  });

  it('fails an upload to a bucket that is not there, or from a source that breaks, without an unhandled error', async () => {
    const unhandled: unknown[] = [];
    const onError = (e: unknown) => unhandled.push(e);
    process.on('uncaughtException', onError);
    try {
      const missing = new S3Blobs({ ...location, bucket: 'no-such-bucket-here' });
      const bytes = randomBytes(2 * 1024 * 1024);
      async function* slowly(): AsyncGenerator<Uint8Array> {
        for await (const c of pieces(bytes, 64 * 1024)) {
          await new Promise((r) => setTimeout(r, 2));
          yield c;
        }
      }
      const err = await missing.put(descriptor(bytes), slowly()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StowageError);
      expect((err as StowageError).message).toContain('no-such-bucket-here');
      expect((err as StowageError).message).not.toContain(s3.secretAccessKey);
      missing.close();
      // The source fails halfway: its error is the upload's, and nothing is created.
      const blobs = new S3Blobs(location);
      const other = randomBytes(1024 * 1024);
      async function* breaks(): AsyncGenerator<Uint8Array> {
        yield other.subarray(0, 300_000);
        await new Promise((r) => setTimeout(r, 5));
        throw new StowageError('NETWORK', 'the registry dropped the connection');
      }
      const d = descriptor(other);
      await expect(blobs.put(d, breaks())).rejects.toThrow('the registry dropped the connection');
      expect(await blobs.has(d.digest)).toBe(false);
      blobs.close();
      await new Promise((r) => setTimeout(r, 200));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('uncaughtException', onError);
    }
  });
});
