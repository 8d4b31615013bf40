/**
 * Writing to a registry: blob presence (HEAD), upload sessions (mount, monolithic PUT, PATCH chunks,
 * cancel) and manifests with their exact bytes.
 */
import type { Dispatcher } from 'undici';
import { StowageError } from '../errors.js';
import { digestMismatch, sha256Digest } from '../image/digest.js';
import type { RegistryHttp } from './http.js';

/** The scope a push needs on a repository (pull too: HEAD and mounts read). */
export function pushScope(repo: string): string {
  return `repository:${repo}:pull,push`;
}

/** Where an upload goes next, and the smallest chunk the registry accepts (OCI-Chunk-Min-Length). */
export interface UploadSession {
  location: URL;
  minChunk: number | undefined;
}

/** The writing calls of a registry client. */
export class Uploads {
  constructor(private readonly t: RegistryHttp) {}

  /** Whether the repository has a blob (HEAD). */
  async hasBlob(repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    const what = `blob ${digest} in ${this.t.host}/${repo}`;
    const res = await this.t.request({
      method: 'HEAD',
      path: `/v2/${repo}/blobs/${digest}`,
      scope: pushScope(repo),
      signal,
      what,
    });
    await res.body.dump();
    if (res.statusCode === 200) return true;
    if (res.statusCode === 404) return false;
    throw await this.t.failure(res, what);
  }

  /**
   * Starts a blob upload. With `mount`, first asks the registry to link the blob from another of its
   * repositories (one token for pull on that one and push on this one): `mounted` when it did, else
   * the upload session the registry opened instead.
   */
  async startUpload(
    repo: string,
    mount: { digest: string; from: string } | undefined,
    signal?: AbortSignal,
  ): Promise<{ mounted: true } | ({ mounted: false } & UploadSession)> {
    const what = `an upload to ${this.t.host}/${repo}`;
    const query = mount
      ? `?${new URLSearchParams({ mount: mount.digest, from: mount.from }).toString()}`
      : '';
    const res = await this.t.request({
      method: 'POST',
      path: `/v2/${repo}/blobs/uploads/${query}`,
      scope: mount ? `${pushScope(repo)} repository:${mount.from}:pull` : pushScope(repo),
      headers: { 'content-length': '0' },
      signal,
      what,
    });
    if (mount && res.statusCode === 201) {
      await res.body.dump();
      return { mounted: true };
    }
    await this.t.check(res, what, [202], {
      notFound: (detail) => `${this.t.host} refused ${what} (HTTP 404${detail})`,
    });
    await res.body.dump();
    return { mounted: false, ...(await this.session(res, what)) };
  }

  private async session(res: Dispatcher.ResponseData, what: string): Promise<UploadSession> {
    const location = res.headers.location;
    if (typeof location !== 'string' || !location) {
      throw new StowageError('REGISTRY', `${this.t.host} answered ${what} without a Location`);
    }
    const min = Number(res.headers['oci-chunk-min-length']);
    return {
      location: new URL(location, await this.t.ping()),
      minChunk: Number.isSafeInteger(min) && min > 0 ? min : undefined,
    };
  }

  /** Sends `length` bytes of an upload as one chunk (PATCH); returns where the next goes. */
  patchUpload(
    session: UploadSession,
    repo: string,
    start: number,
    length: number,
    body: AsyncIterable<Uint8Array> | Buffer,
    signal?: AbortSignal,
  ): Promise<UploadSession> {
    return this.patch(session, repo, body, signal, { start, length });
  }

  /**
   * Sends a whole upload as one streamed PATCH (no length, chunked transfer encoding), for bytes whose
   * size and digest are known only at their end (a layer compressed as it is sent, as skopeo does):
   * finishUpload then names the digest. Returns where the upload goes next.
   */
  streamUpload(
    session: UploadSession,
    repo: string,
    body: AsyncIterable<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<UploadSession> {
    return this.patch(session, repo, body, signal, undefined);
  }

  /** One PATCH of an upload: a range of known length, or (range undefined) a stream to its end. */
  private async patch(
    session: UploadSession,
    repo: string,
    body: AsyncIterable<Uint8Array> | Buffer,
    signal: AbortSignal | undefined,
    range: { start: number; length: number } | undefined,
  ): Promise<UploadSession> {
    const last = range ? range.start + range.length - 1 : 0;
    const what = range
      ? `bytes ${range.start}-${last} of an upload to ${this.t.host}/${repo}`
      : `a streamed upload to ${this.t.host}/${repo}`;
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (range) {
      headers['content-length'] = String(range.length);
      headers['content-range'] = `${range.start}-${last}`;
    }
    const res = await this.t.request({
      method: 'PATCH',
      path: '',
      url: session.location,
      scope: pushScope(repo),
      headers,
      body,
      signal,
      what,
    });
    await this.t.check(res, what, [202]);
    await res.body.dump();
    const next = await this.session(res, what);
    return { location: next.location, minChunk: next.minChunk ?? session.minChunk };
  }

  /** Completes an upload (PUT with ?digest=), with the final bytes as body (all of them, for a monolithic upload). */
  async finishUpload(
    session: UploadSession,
    repo: string,
    digest: string,
    length: number,
    body: AsyncIterable<Uint8Array> | Buffer | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    const what = `blob ${digest} to ${this.t.host}/${repo}`;
    const url = new URL(session.location);
    url.searchParams.set('digest', digest);
    const res = await this.t.request({
      method: 'PUT',
      path: '',
      url,
      scope: pushScope(repo),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) },
      body: body ?? Buffer.alloc(0),
      signal,
      what,
    });
    await this.t.check(res, what, [201], { refused: [400] });
    await res.body.dump();
    const got = res.headers['docker-content-digest'];
    if (typeof got === 'string' && got && got !== digest) {
      throw digestMismatch(what, got, digest, 'the registry stored something else');
    }
  }

  /** Abandons an upload (best effort: the registry garbage-collects it anyway). */
  async cancelUpload(session: UploadSession, repo: string): Promise<void> {
    try {
      const res = await this.t.request({
        method: 'DELETE',
        path: '',
        url: session.location,
        scope: pushScope(repo),
        what: `cancelling an upload to ${this.t.host}/${repo}`,
        signal: AbortSignal.timeout(10_000),
      });
      await res.body.dump();
    } catch {
      // Nothing to do: an upload left behind expires on the registry.
    }
  }

  /**
   * DELETEs a manifest by tag or digest: true when the registry did; false when it does not delete by
   * this kind of reference (docker-registry 2.8 refuses tags with 400/405 UNSUPPORTED, as the OCI
   * distribution spec lets it). A registry with deletion switched off answers 405 to a digest too: that
   * is an error naming what to switch on.
   */
  async deleteManifest(repo: string, reference: string, signal?: AbortSignal): Promise<boolean> {
    const byDigest = reference.includes(':');
    const what = `manifest ${this.t.host}/${repo}${byDigest ? '@' : ':'}${reference}`;
    const res = await this.t.request({
      method: 'DELETE',
      path: `/v2/${repo}/manifests/${reference}`,
      scope: `repository:${repo}:delete`,
      signal,
      what,
    });
    if (res.statusCode === 202 || res.statusCode === 200) {
      await res.body.dump();
      return true;
    }
    if (!byDigest && (res.statusCode === 400 || res.statusCode === 405)) {
      await res.body.dump();
      return false;
    }
    if (byDigest && res.statusCode === 405) {
      await res.body.dump();
      throw new StowageError(
        'DENIED',
        `${this.t.host} does not delete manifests (HTTP 405); its operator switches deletion on (docker-registry: storage.delete.enabled = true)`,
      );
    }
    throw await this.t.failure(res, `deleting ${what}`, {
      notFound: (detail) => `${what} is not there (HTTP 404${detail})`,
    });
  }

  /**
   * PUTs a manifest or index with its exact bytes; returns its digest, and whether the registry indexed
   * its `subject` for the referrers API (it answers OCI-Subject: one without the API does not).
   */
  async putManifest(
    repo: string,
    reference: string,
    bytes: Buffer,
    mediaType: string,
    signal?: AbortSignal,
  ): Promise<{ digest: string; subjectIndexed: boolean }> {
    const what = `manifest ${this.t.host}/${repo}${reference.includes(':') ? '@' : ':'}${reference}`;
    const res = await this.t.request({
      method: 'PUT',
      path: `/v2/${repo}/manifests/${reference}`,
      scope: pushScope(repo),
      headers: { 'content-type': mediaType },
      body: bytes,
      signal,
      what,
    });
    await this.t.check(res, what, [200, 201], { refused: [400, 404] });
    await res.body.dump();
    const digest = sha256Digest(bytes);
    const got = res.headers['docker-content-digest'];
    if (typeof got === 'string' && got && got !== digest) {
      throw digestMismatch(what, got, digest, 'the registry changed the manifest');
    }
    return { digest, subjectIndexed: res.headers['oci-subject'] !== undefined };
  }
}
