/**
 * A repository of a registry as an image source. `resolveRegistrySource` finds where a reference is
 * served (each short-name candidate in turn, and for each its mirrors before the primary, as
 * registries.conf says), and the source it returns keeps the endpoints after the one that served: a
 * manifest or blob that endpoint fails to give is asked of them, so no engine threads a fallback.
 */

import type { PullEndpoint } from '../../config/resolve.js';
import type { ImageSource, ReferrerEntry } from '../../engine/source.js';
import { StowageError } from '../../errors.js';
import { COSIGN_KINDS, COSIGN_SIMPLE_SIGNING, cosignSignatureLayers, cosignTag } from '../../image/cosign.js';
import { verifyBytes } from '../../image/digest.js';
import { parseManifest } from '../../image/documents.js';
import type { Descriptor } from '../../image/schemas.js';
import type { SigstoreSignature } from '../../policy/verify.js';
import { type ImageReference, withDefaultTag } from '../../reference/reference.js';
import type { ManifestResponse, RegistryClient } from '../../registry/client.js';
import { CANDIDATE_FAILURES, type Context } from '../../registry/context.js';

export class RegistrySource implements ImageSource {
  readonly description: string;
  /** The answer that chose this endpoint, kept so planning does not ask again. */
  private readonly primed = new Map<string, ManifestResponse>();
  private fallbackSources: Promise<RegistrySource[]> | undefined;

  constructor(
    readonly client: RegistryClient,
    readonly repository: string,
    /** Endpoints to ask, in order, for what this one fails to give (later mirrors, the primary). */
    private readonly fallbacks?: { ctx: Context; endpoints: PullEndpoint[] } | undefined,
  ) {
    this.description = `${client.host}/${repository}`;
  }

  async getManifest(reference: string, signal?: AbortSignal): Promise<ManifestResponse> {
    const primed = this.primed.get(reference);
    if (primed) {
      this.primed.delete(reference);
      return primed;
    }
    return this.withFallback(
      () => this.client.getManifest(this.repository, reference, signal),
      (s) => s.getManifest(reference, signal),
    );
  }

  /** Fetches `reference` and keeps the answer for the next getManifest of it. */
  async prime(reference: string, signal?: AbortSignal): Promise<ManifestResponse> {
    const m = await this.client.getManifest(this.repository, reference, signal);
    this.primed.set(reference, m);
    return m;
  }

  async getBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const kept = this.client.keptBlob(this.repository, descriptor.digest);
    if (kept)
      return (async function* () {
        yield kept;
      })();
    return this.withFallback(
      async () => (await this.client.getBlob(this.repository, descriptor.digest, signal)).body,
      (s) => s.getBlob(descriptor, signal),
    );
  }

  async readSmallBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<Buffer> {
    return this.client.readKept(this.repository, descriptor.digest, signal, (bytes) =>
      verifyBytes(bytes, descriptor.digest, `blob ${descriptor.digest} of ${this.description}`),
    );
  }

  getBlobTail(descriptor: Descriptor, length: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    return this.client.getBlobTail(this.repository, descriptor.digest, descriptor.size, length, signal);
  }

  /** The repository's tags, where a caller listed them (a sync job): attachments are looked up in them. */
  private tagList: Set<string> | undefined;

  /** The repository's tags as the caller just listed them: cosign's tags are looked up there, not asked. */
  useTags(tags: Iterable<string>): void {
    this.tagList = new Set(tags);
  }

  /**
   * What is attached to a manifest: OCI referrers (the referrers API, else the tag schema's index) and
   * cosign's tags for it (sha256-HEX.sig, .att, .sbom). Without a tag listing in hand, cosign's tags
   * are asked for by HEAD, so the cost of one image never depends on how many tags its repository
   * has (a listing of 50,000 tags is 50 pages).
   */
  async referrers(digest: string, signal?: AbortSignal): Promise<ReferrerEntry[]> {
    const tags = this.tagList;
    const [listed, cosign] = await Promise.all([
      this.client.referrersIndex(this.repository, digest, signal, { tags }),
      Promise.all(
        COSIGN_KINDS.map(async (kind) => {
          const tag = cosignTag(digest, kind);
          if (tags && !tags.has(tag)) return undefined;
          const head = await this.client.headManifest(this.repository, tag, signal);
          return head
            ? { descriptor: { mediaType: head.mediaType, digest: head.digest, size: head.size }, tag }
            : undefined;
        }),
      ),
    ]);
    const entries: ReferrerEntry[] = (listed?.manifests ?? []).map((descriptor) => ({ descriptor }));
    for (const c of cosign) if (c) entries.push(c);
    return entries;
  }

  /**
   * cosign's signatures of a manifest: the layers of the manifest tagged sha256-HEX.sig, each a
   * simple-signing payload with its signature in an annotation.
   */
  async signatures(digest: string, signal?: AbortSignal): Promise<SigstoreSignature[]> {
    const tag = cosignTag(digest);
    const m = await this.client.findManifest(this.repository, tag, signal);
    if (!m) return [];
    const manifest = parseManifest(m.bytes, `signature ${tag} of ${this.description}`);
    const out: SigstoreSignature[] = [];
    for (const { layer, signature } of cosignSignatureLayers(manifest)) {
      if (layer.mediaType !== COSIGN_SIMPLE_SIGNING) continue;
      out.push({ payload: await this.readSmallBlob(layer, signal), signature });
    }
    return out;
  }

  async close(): Promise<void> {}

  /** Runs `mine`; on a failure the next endpoint could fix, asks the fallbacks in order. */
  private async withFallback<T>(
    mine: () => Promise<T>,
    theirs: (s: RegistrySource) => Promise<T>,
  ): Promise<T> {
    try {
      return await mine();
    } catch (e) {
      if (
        !(e instanceof StowageError) ||
        !CANDIDATE_FAILURES.has(e.code) ||
        !this.fallbacks?.endpoints.length
      )
        throw e;
      for (const s of await this.fallbackList()) {
        try {
          return await theirs(s);
        } catch (f) {
          if (!(f instanceof StowageError) || !CANDIDATE_FAILURES.has(f.code)) throw f;
        }
      }
      throw e;
    }
  }

  private fallbackList(): Promise<RegistrySource[]> {
    const fb = this.fallbacks;
    this.fallbackSources ??= fb
      ? Promise.all(fb.endpoints.map(async (e) => new RegistrySource(await fb.ctx.clientFor(e), e.path)))
      : Promise.resolve([]);
    return this.fallbackSources;
  }
}

export interface ResolvedRegistryImage {
  source: RegistrySource;
  /** The candidate that served, fully qualified, with a tag unless it names a digest. */
  ref: ImageReference;
  /** The endpoint (mirror or primary) that served it. */
  endpoint: PullEndpoint;
  /** The digest the reference resolved to (an index's, for a multi-arch image): what signatures name. */
  digest: string;
}

/**
 * Finds where `ref` is served: short-name candidates in turn, each one's mirrors before its primary.
 * The first that answers for the reference is the source.
 */
export function resolveRegistrySource(
  ctx: Context,
  ref: ImageReference,
  signal?: AbortSignal,
): Promise<ResolvedRegistryImage> {
  return ctx.withCandidates(withDefaultTag(ref), (candidate) =>
    ctx.pullFrom(candidate, async (client, endpoint, later) => {
      const source = new RegistrySource(client, endpoint.path, { ctx, endpoints: later });
      const top = await source.prime(candidate.digest ?? candidate.tag!, signal);
      return { source, ref: candidate, endpoint, digest: top.digest };
    }),
  );
}
