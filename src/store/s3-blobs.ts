/**
 * The store's blobs in an S3-compatible bucket (issue 22): content-addressed keys PREFIX/blobs/sha256/HEX,
 * as in an OCI layout, so a bucket reads like one.
 *
 * A blob goes up in one PUT that is verified by the server and created once: its sha256 is the
 * request's signed payload hash (x-amz-content-sha256), so S3 refuses a body that does not hash to it
 * and creates nothing (radosgw answers XAmzContentSHA256Mismatch), and If-None-Match: * refuses to
 * replace a key another writer created first. No temporary key, no copy, and no hash on this side:
 * the digest check costs the client nothing. Blobs over the 5 GiB a single PUT takes go up in parts.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { StowageError } from '../errors.js';
import { DigestVerifier, digestAlgorithm, digestHex } from '../image/digest.js';
import type { Descriptor } from '../image/schemas.js';

export interface S3Location {
  /** http(s)://host:port of the S3 endpoint. */
  endpoint: string;
  bucket: string;
  /** Key prefix ("" or ending in "/"): several stores can share a bucket. */
  prefix: string;
  region: string;
  /** Path-style requests (bucket in the path): radosgw, MinIO; AWS takes either. */
  pathStyle: boolean;
  credentials: { accessKeyId: string; secretAccessKey: string };
}

/** A stored blob, as listed (for garbage collection: its age gives the grace period). */
export interface ListedBlob {
  digest: string;
  size: number;
  modified: Date;
}

/** The largest blob sent in one PUT (S3's limit); larger ones go up in parts. */
const SINGLE_PUT_MAX = 5 * 1024 ** 3;

type S3Error = Error & { name: string; $metadata?: { httpStatusCode?: number } };

function status(e: unknown): number | undefined {
  return (e as S3Error).$metadata?.httpStatusCode;
}

const QUIET = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

export class S3Blobs {
  private readonly client: S3Client;

  private readonly singlePutMax: number;
  private readonly partSize: number;

  constructor(
    readonly location: S3Location,
    opts: {
      client?: S3Client | undefined;
      /** Blobs larger go up in parts (default 5 GiB, S3's limit for one PUT). */
      singlePutMax?: number | undefined;
      /** Part size for those (default 64 MiB; S3's minimum is 5 MiB). */
      partSize?: number | undefined;
    } = {},
  ) {
    this.singlePutMax = opts.singlePutMax ?? SINGLE_PUT_MAX;
    this.partSize = opts.partSize ?? 64 * 1024 * 1024;
    const config: S3ClientConfig = {
      endpoint: location.endpoint,
      region: location.region,
      forcePathStyle: location.pathStyle,
      credentials: location.credentials,
      // The SDK's default streamed checksums are refused by radosgw (411) and would hash every byte
      // a second time; the signed payload hash already covers the body.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // Without a logger of its own the SDK writes to the console ("An error was encountered in a
      // non-retryable streaming request."), past the service's JSON log; what failed reaches the
      // caller as its error, naming the bucket and the blob.
      logger: QUIET,
    };
    this.client = opts.client ?? new S3Client(config);
  }

  /** Where the store is, for messages: the bucket and prefix, never the credentials. */
  get description(): string {
    return `s3://${this.location.bucket}/${this.location.prefix}`;
  }

  key(digest: string): string {
    return `${this.location.prefix}blobs/sha256/${digestHex(digest)}`;
  }

  async size(digest: string): Promise<number | undefined> {
    try {
      const r = await this.client.send(
        new HeadObjectCommand({ Bucket: this.location.bucket, Key: this.key(digest) }),
      );
      return r.ContentLength;
    } catch (e) {
      if (status(e) === 404) return undefined;
      throw this.failure(e, `blob ${digest}`);
    }
  }

  async has(digest: string): Promise<boolean> {
    return (await this.size(digest)) !== undefined;
  }

  /** A blob's bytes (the whole blob, or `start`..`end` inclusive), streamed. */
  async open(
    digest: string,
    range?: { start: number; end: number },
    signal?: AbortSignal,
  ): Promise<AsyncIterable<Uint8Array>> {
    try {
      return await this.get(this.key(digest), range, signal);
    } catch (e) {
      if (status(e) === 404) throw new StowageError('NOT_FOUND', `${this.description} has no blob ${digest}`);
      throw this.failure(e, `blob ${digest}`);
    }
  }

  /** An object's bytes (all, or `start`..`end` inclusive), streamed; errors as the SDK throws them. */
  private async get(
    key: string,
    range: { start: number; end: number } | undefined,
    signal: AbortSignal | undefined,
  ): Promise<AsyncIterable<Uint8Array>> {
    const r = await this.client.send(
      new GetObjectCommand({
        Bucket: this.location.bucket,
        Key: key,
        ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
      }),
      signal ? { abortSignal: signal } : {},
    );
    return r.Body as Readable;
  }

  /**
   * Stores a blob, verified by the server as it arrives (see the top). One already there is not sent
   * again, but the bytes offered are still checked here: a damaged upload is an error whatever the
   * store holds. Returns whether it was written.
   */
  async put(
    d: Descriptor,
    body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<'written' | 'present'> {
    if (digestAlgorithm(d.digest) !== 'sha256') {
      throw new StowageError('UNSUPPORTED', `blob ${d.digest}: the S3 store keeps sha256 blobs only`);
    }
    if (await this.has(d.digest)) {
      await drainVerified(body, d);
      return 'present';
    }
    if (d.size > this.singlePutMax) return this.putInParts(d, body);
    const guarded = guard(Readable.from(body));
    const cmd = new PutObjectCommand({
      Bucket: this.location.bucket,
      Key: this.key(d.digest),
      Body: guarded.stream,
      ContentLength: d.size,
      IfNoneMatch: '*',
    });
    withPayloadHash(cmd, digestHex(d.digest));
    try {
      await this.client.send(cmd, { abortSignal: guarded.signal });
      return 'written';
    } catch (e) {
      // What the source failed with, where it did: the upload failed because of it.
      if (guarded.error()) throw guarded.error();
      // Another writer created it first: the same bytes, by its key.
      if (status(e) === 412) return 'present';
      if ((e as S3Error).name === 'XAmzContentSHA256Mismatch') {
        throw new StowageError('DIGEST_MISMATCH', `blob ${d.digest}: its bytes do not hash to its digest`);
      }
      throw this.failure(e, `blob ${d.digest}`);
    } finally {
      guarded.release();
    }
  }

  /**
   * A blob over 5 GiB: in parts (lib-storage), hashed here as it goes (parts are not signed with the
   * blob's digest), and the upload completed only when the whole matches; aborted otherwise.
   */
  private async putInParts(
    d: Descriptor,
    body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<'written'> {
    const verifier = new DigestVerifier(d.digest, d.size, `blob ${d.digest}`);
    async function* checked(): AsyncGenerator<Uint8Array> {
      for await (const c of body) {
        verifier.update(c);
        yield c;
      }
      // Thrown before the last part is handed over: the upload is aborted, nothing is created.
      verifier.finish();
    }
    const guarded = guard(Readable.from(checked()));
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.location.bucket, Key: this.key(d.digest), Body: guarded.stream },
      partSize: this.partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    guarded.signal.addEventListener('abort', () => void upload.abort().catch(() => {}), { once: true });
    try {
      await upload.done();
      return 'written';
    } catch (e) {
      const cause = guarded.error() ?? e;
      if (cause instanceof StowageError) throw cause;
      throw this.failure(cause, `blob ${d.digest}`);
    } finally {
      guarded.release();
    }
  }

  /** Every blob, with its size and when it was written. */
  async *list(): AsyncGenerator<ListedBlob> {
    const prefix = `${this.location.prefix}blobs/sha256/`;
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) {
        const hex = o.Key?.slice(prefix.length) ?? '';
        if (!/^[0-9a-f]{64}$/.test(hex)) continue;
        yield { digest: `sha256:${hex}`, size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** Deletes blobs, 1000 to a request (S3's limit). */
  async delete(digests: string[]): Promise<void> {
    for (let i = 0; i < digests.length; i += 1000) {
      const Objects = digests.slice(i, i + 1000).map((d) => ({ Key: this.key(d) }));
      const r = await this.client.send(
        new DeleteObjectsCommand({ Bucket: this.location.bucket, Delete: { Objects, Quiet: true } }),
      );
      const failed = r.Errors?.[0];
      if (failed) {
        throw new StowageError('IO', `${this.description}: deleting ${failed.Key} failed: ${failed.Code}`);
      }
    }
  }

  /**
   * Stores a file under PREFIX/NAME (a rendition, not a blob), its sha256 checked by S3 as it arrives
   * and kept in the object's metadata.
   */
  async putFile(name: string, path: string, size: number, sha256: string): Promise<void> {
    const guarded = guard(createReadStream(path, { highWaterMark: 1 << 20 }));
    const cmd = new PutObjectCommand({
      Bucket: this.location.bucket,
      Key: `${this.location.prefix}${name}`,
      Body: guarded.stream,
      ContentLength: size,
      Metadata: { sha256 },
    });
    withPayloadHash(cmd, sha256);
    try {
      await this.client.send(cmd, { abortSignal: guarded.signal });
    } catch (e) {
      throw this.failure(guarded.error() ?? e, name);
    } finally {
      guarded.release();
    }
  }

  /** Size and recorded sha256 of PREFIX/NAME, if it exists. */
  async headFile(name: string): Promise<{ size: number; sha256: string } | undefined> {
    try {
      const r = await this.client.send(
        new HeadObjectCommand({ Bucket: this.location.bucket, Key: `${this.location.prefix}${name}` }),
      );
      const sha256 = r.Metadata?.sha256;
      return sha256 && r.ContentLength !== undefined ? { size: r.ContentLength, sha256 } : undefined;
    } catch (e) {
      if (status(e) === 404) return undefined;
      throw this.failure(e, name);
    }
  }

  /** Bytes start..end (inclusive) of PREFIX/NAME, streamed. */
  async openFile(
    name: string,
    range: { start: number; end: number },
    signal?: AbortSignal,
  ): Promise<AsyncIterable<Uint8Array>> {
    try {
      return await this.get(`${this.location.prefix}${name}`, range, signal);
    } catch (e) {
      throw this.failure(e, name);
    }
  }

  /** The names of the "folders" right under PREFIX/NAMEPREFIX (the versions that have renditions). */
  async listFolders(namePrefix: string): Promise<string[]> {
    const prefix = `${this.location.prefix}${namePrefix}`;
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.location.bucket,
          Prefix: prefix,
          Delimiter: '/',
          ContinuationToken: token,
        }),
      );
      for (const p of page.CommonPrefixes ?? []) if (p.Prefix) out.push(p.Prefix.slice(prefix.length, -1));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Deletes every object under PREFIX/NAMEPREFIX (a version's renditions). */
  async deleteFiles(namePrefix: string): Promise<void> {
    const prefix = `${this.location.prefix}${namePrefix}`;
    const page = await this.client.send(
      new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: prefix }),
    );
    const Objects = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
    if (Objects.length === 0) return;
    await this.client.send(
      new DeleteObjectsCommand({ Bucket: this.location.bucket, Delete: { Objects, Quiet: true } }),
    );
  }

  /**
   * Aborts multipart uploads of blobs begun longer ago than `olderThanMs`: left by a replica that died
   * mid-upload, their parts are invisible but stored (and billed). Returns how many were aborted.
   */
  async abortStaleUploads(olderThanMs: number): Promise<number> {
    const prefix = `${this.location.prefix}blobs/sha256/`;
    let n = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: this.location.bucket,
          Prefix: prefix,
          KeyMarker: keyMarker,
          UploadIdMarker: uploadIdMarker,
        }),
      );
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || Date.now() - (u.Initiated?.getTime() ?? 0) <= olderThanMs) continue;
        await this.client.send(
          new AbortMultipartUploadCommand({ Bucket: this.location.bucket, Key: u.Key, UploadId: u.UploadId }),
        );
        n++;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return n;
  }

  close(): void {
    this.client.destroy();
  }

  /** An S3 failure as a StowageError naming the bucket and what was asked, never the credentials. */
  private failure(e: unknown, what: string): StowageError {
    const err = e as S3Error;
    const code = status(e);
    const retryable = code === undefined || code >= 500 || code === 429;
    return new StowageError(
      code === 403 ? 'UNAUTHORIZED' : 'IO',
      `${this.description}: ${what}: ${err.name}${code ? ` (HTTP ${code})` : ''}`,
      { cause: e, retryable },
    );
  }
}

/**
 * Sends `hex` (the body's sha256) as the request's signed payload hash: the signer takes one already in
 * the headers as it is, and S3 refuses a body that does not hash to it.
 */
function withPayloadHash(cmd: PutObjectCommand, hex: string): void {
  cmd.middlewareStack.add(
    (next) => async (args) => {
      (args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] = hex;
      return next(args);
    },
    { step: 'build', name: 'stowageSha256AsPayloadHash' },
  );
}

/** Reads a body through, checking it is the blob; DIGEST_MISMATCH otherwise. */
async function drainVerified(
  body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  d: Descriptor,
): Promise<void> {
  const v = new DigestVerifier(d.digest, d.size, `blob ${d.digest}`);
  for await (const c of body) v.update(c);
  v.finish();
}

/**
 * A body handed to the SDK, made safe to hand over: its error (the source failing, or the SDK
 * destroying it once it gives up) is kept instead of reaching the process as an unhandled 'error'
 * event, which would take the whole replica down with it; release() ends it once the request is
 * over either way, so the source behind it is not left waiting.
 */
function guard(stream: Readable): {
  stream: Readable;
  /** Aborted when the source fails: a request still waiting for the body's last bytes ends at once. */
  signal: AbortSignal;
  error(): StowageError | undefined;
  release(): void;
} {
  let failed: StowageError | undefined;
  const abort = new AbortController();
  stream.on('error', (e) => {
    // The SDK aborting its own request destroys the body with a plain error: not the source's fault.
    if (!(e instanceof StowageError)) return;
    failed ??= e;
    abort.abort(e);
  });
  return {
    stream,
    signal: abort.signal,
    error: () => failed,
    release: () => {
      if (!stream.destroyed) stream.destroy();
    },
  };
}
