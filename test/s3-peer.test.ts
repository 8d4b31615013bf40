/**
 * What the S3 store (issue 22) relies on, checked against the real radosgw the tests start: a blob's
 * PUT carries its sha256 as the signed payload hash, so the server refuses a body that does not match
 * it (nothing is created); If-None-Match: * creates a key once; ranged GETs serve a slice.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningS3, startRadosgw } from './harness/radosgw.js';

let s3: RunningS3;
let client: S3Client;
const Bucket = 'stowage-peer';

beforeAll(async () => {
  s3 = await startRadosgw();
  client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    // radosgw answers 411 to the SDK's default streamed checksums (PEERS.md).
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await client.send(new CreateBucketCommand({ Bucket }));
}, 60_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

/** A PUT whose signed payload hash is `sha256` (hex): the server checks the body against it. */
function putBlob(key: string, body: Buffer, sha256: string): Promise<string> {
  const cmd = new PutObjectCommand({
    Bucket,
    Key: key,
    Body: body,
    ContentLength: body.length,
    IfNoneMatch: '*',
  });
  cmd.middlewareStack.add(
    (next) => async (args) => {
      (args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] = sha256;
      return next(args);
    },
    { step: 'build', name: 'blobDigestAsPayloadHash' },
  );
  return client.send(cmd).then(
    () => 'created',
    (e: { name: string; $metadata?: { httpStatusCode?: number } }) =>
      `${e.name} ${e.$metadata?.httpStatusCode}`,
  );
}

describe('radosgw as the S3 store needs it', () => {
  it('verifies a body against its signed sha256 and creates a key once', async () => {
    const body = randomBytes(100_000);
    const hex = createHash('sha256').update(body).digest('hex');
    expect(await putBlob(`blobs/sha256/${hex}`, body, hex)).toBe('created');
    expect(await putBlob(`blobs/sha256/${hex}`, body, hex)).toBe('PreconditionFailed 412');
    const damaged = Buffer.from(body);
    damaged[5] = (damaged[5] as number) ^ 1;
    expect(await putBlob('blobs/sha256/damaged', damaged, hex)).toBe('XAmzContentSHA256Mismatch 400');
    const after = await client.send(new HeadObjectCommand({ Bucket, Key: 'blobs/sha256/damaged' })).then(
      () => 'exists',
      (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode,
    );
    expect(after).toBe(404);
    const got = await client.send(
      new GetObjectCommand({ Bucket, Key: `blobs/sha256/${hex}`, Range: 'bytes=10-19' }),
    );
    expect(Buffer.from(await got.Body!.transformToByteArray())).toEqual(body.subarray(10, 20));
  });
});
