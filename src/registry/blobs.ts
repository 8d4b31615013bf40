/**
 * Reading blobs from a registry: streamed, watched for stalls and resumed with Range where they broke
 * off, their tails by Range (docker-archive's layout), and small ones (configs) kept in memory for the
 * client's life.
 */

import { StowageError } from '../errors.js';
import { MAX_MANIFEST_BYTES } from '../image/mediatypes.js';
import type { RegistryHttp } from './http.js';
import { StallError, watchStalls } from './stall.js';
import { readLimited } from './status.js';

export interface BlobResponse {
  body: AsyncIterable<Uint8Array>;
  /** Content-Length when the registry sent one. */
  size: number | undefined;
}

/** One open GET of a blob: its body, the controller that cuts it, and how to let go of the caller's signal. */
interface OpenBlob {
  body: AsyncIterable<Uint8Array>;
  size: number | undefined;
  cut: AbortController;
  /** Bytes at the start of `body` already passed on (a registry that ignored Range). */
  skip: number;
  release: () => void;
}

/** What a client keeps of small blobs read while planning (configs are a few KiB each). */
const MAX_KEPT_BYTES = 4 * 1024 * 1024;
/** What keeping one costs beside its bytes (the key, the map entry, the Buffer object). */
const KEPT_OVERHEAD = 512;

/** The blob-reading calls of a registry client. */
export class BlobReader {
  constructor(private readonly t: RegistryHttp) {}

  /**
   * GET a blob as a stream. The caller verifies the digest while consuming it. A body that stalls (see
   * StallRule) or breaks off is resumed where it stopped with a Range request, up to the retry count.
   */
  async getBlob(repo: string, digest: string, signal?: AbortSignal): Promise<BlobResponse> {
    const what = `blob ${digest} of ${this.t.host}/${repo}`;
    const first = await this.blobRequest(repo, digest, 0, signal, what);
    return { body: this.resumingBody(repo, digest, first, signal, what), size: first.size };
  }

  /** A blob's size by HEAD (Content-Length); undefined where the repository has no such blob. */
  async blobSize(repo: string, digest: string, signal?: AbortSignal): Promise<number | undefined> {
    const what = `blob ${digest} of ${this.t.host}/${repo}`;
    const res = await this.t.request({
      method: 'HEAD',
      path: `/v2/${repo}/blobs/${digest}`,
      scope: `repository:${repo}:pull`,
      signal,
      what,
    });
    await res.body.dump();
    if (res.statusCode === 404) return undefined;
    await this.t.check(res, what, [200]);
    const size = Number(res.headers['content-length']);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new StowageError('REGISTRY', `${this.t.host} answered a HEAD of ${what} without its length`);
    }
    return size;
  }

  /** One GET of a blob from `offset` on, with its own abort controller for the stall watch. */
  private async blobRequest(
    repo: string,
    digest: string,
    offset: number,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<OpenBlob> {
    const cut = new AbortController();
    // The caller's abort reaches this request through `cut`, by a listener removed as soon as the
    // request is over: a sync's one signal serves thousands of blob requests, and each would otherwise
    // leave a dependent signal behind until it is garbage-collected.
    const forward = () => cut.abort(signal?.reason);
    if (signal?.aborted) forward();
    signal?.addEventListener('abort', forward, { once: true });
    const release = () => signal?.removeEventListener('abort', forward);
    try {
      return await this.openBlob(repo, digest, offset, cut, release, what);
    } catch (e) {
      release();
      throw e;
    }
  }

  private async openBlob(
    repo: string,
    digest: string,
    offset: number,
    cut: AbortController,
    release: () => void,
    what: string,
  ): Promise<OpenBlob> {
    const res = await this.t.request({
      method: 'GET',
      path: `/v2/${repo}/blobs/${digest}`,
      scope: `repository:${repo}:pull`,
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      signal: cut.signal,
      what,
    });
    if (offset > 0 && res.statusCode === 206) {
      const start = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''))?.[1];
      if (Number(start) !== offset) {
        res.body.destroy();
        throw new StowageError('REGISTRY', `${this.t.host} answered a resumed ${what} with the wrong range`);
      }
      return { body: res.body, size: undefined, cut, skip: 0, release };
    }
    await this.t.check(res, what, [200], {
      notFound: () => `${what} not found (HTTP 404); the image in the registry is incomplete`,
    });
    const len = res.headers['content-length'];
    // A registry that ignores Range sends the whole blob again: the bytes already passed on are skipped.
    return { body: res.body, size: len === undefined ? undefined : Number(len), cut, skip: offset, release };
  }

  /**
   * A blob's bytes across as many requests as it takes: each is watched for stalls, and a stalled or
   * broken one is followed by a request for the rest. Transport errors that remain become NETWORK
   * errors naming the blob.
   */
  private async *resumingBody(
    repo: string,
    digest: string,
    first: OpenBlob,
    signal: AbortSignal | undefined,
    what: string,
  ): AsyncGenerator<Uint8Array> {
    let current = first;
    let offset = 0;
    for (let resumes = 0; ; resumes++) {
      try {
        let skip = current.skip;
        for await (let chunk of watchStalls(current.body, this.t.stall, current.cut)) {
          if (skip > 0) {
            const drop = Math.min(skip, chunk.byteLength);
            skip -= drop;
            chunk = chunk.subarray(drop);
            if (chunk.byteLength === 0) continue;
          }
          offset += chunk.byteLength;
          yield chunk;
        }
        current.release();
        return;
      } catch (e) {
        current.release();
        if (signal?.aborted) throw new StowageError('ABORTED', `${what}: aborted`);
        const stalled = e instanceof StallError;
        if (e instanceof StowageError) throw e;
        if (resumes >= this.t.retry.maxRetries) {
          if (stalled) {
            throw new StowageError(
              'NETWORK',
              `${what}: transfer stalled (${e.message}) ${resumes + 1} times; the registry or the network is too slow; raise the retries, or lower low-speed-limit / raise low-speed-time`,
              { cause: e, retryable: true },
            );
          }
          const err = this.t.connectionError(e);
          throw new StowageError(err.code, `${what}: transfer failed: ${err.message}`, { cause: e });
        }
        current = await this.blobRequest(repo, digest, offset, signal, what);
      }
    }
  }
  /**
   * The last `length` bytes of a blob of `size` bytes, with a Range request; undefined when the registry
   * does not answer with exactly that range (it may ignore Range: the body is then not read).
   */
  async getBlobTail(
    repo: string,
    digest: string,
    size: number,
    length: number,
    signal?: AbortSignal,
  ): Promise<Buffer | undefined> {
    if (size < length) return undefined;
    const res = await this.t.request({
      method: 'GET',
      path: `/v2/${repo}/blobs/${digest}`,
      scope: `repository:${repo}:pull`,
      headers: { range: `bytes=${size - length}-${size - 1}` },
      signal,
      what: `the end of blob ${digest} of ${this.t.host}/${repo}`,
    });
    if (res.statusCode !== 206) {
      res.body.destroy();
      return undefined;
    }
    const bytes = await readLimited(res.body, length, `the end of blob ${digest}`).catch(() => undefined);
    return bytes?.length === length ? bytes : undefined;
  }

  /**
   * Small blobs (configs) read while planning, kept for the client's life so that copying them, in
   * this job or another of the run, costs no second request. Bounded: the oldest go first.
   */
  private readonly kept = new Map<string, Buffer>();
  private keptBytes = 0;

  private readonly reading = new Map<string, Promise<Buffer>>();

  keptBlob(repo: string, digest: string): Buffer | undefined {
    return this.kept.get(`${repo}@${digest}`);
  }

  /**
   * A small blob, read once however many ask at once, checked by `verify`, then kept (see keptBlob).
   */
  readKept(
    repo: string,
    digest: string,
    signal: AbortSignal | undefined,
    verify: (b: Buffer) => void,
  ): Promise<Buffer> {
    const key = `${repo}@${digest}`;
    const kept = this.kept.get(key);
    if (kept) return Promise.resolve(kept);
    let p = this.reading.get(key);
    if (!p) {
      p = this.getBlobBytes(repo, digest, signal).then((bytes) => {
        verify(bytes);
        this.keep(key, bytes);
        return bytes;
      });
      this.reading.set(key, p);
      void p.finally(() => this.reading.delete(key)).catch(() => {});
    }
    return p;
  }

  private keep(key: string, bytes: Buffer): void {
    if (this.kept.has(key) || bytes.length > MAX_MANIFEST_BYTES) return;
    // A copy of its own size: a small Buffer is often a slice of an 8 KiB pool, which keeping the slice
    // would keep whole (10,000 configs of 300 bytes held 80 MB).
    const own = Buffer.allocUnsafeSlow(bytes.length);
    bytes.copy(own);
    this.kept.set(key, own);
    this.keptBytes += own.length + KEPT_OVERHEAD;
    for (const [k, b] of this.kept) {
      if (this.keptBytes <= MAX_KEPT_BYTES) break;
      this.kept.delete(k);
      this.keptBytes -= b.length + KEPT_OVERHEAD;
    }
  }

  /** Reads a small blob (a config) into memory with the manifest size limit. */
  async getBlobBytes(repo: string, digest: string, signal?: AbortSignal): Promise<Buffer> {
    const { body } = await this.getBlob(repo, digest, signal);
    return readLimited(body, MAX_MANIFEST_BYTES, `blob ${digest}`);
  }
}
