/**
 * Pull-through: the registry fills the store from the upstreams `[server.registry] pull-through`
 * names, as clients ask. A tag's manifest is fetched (through registries.conf, the gateway's
 * credentials and the trust policy) and stored as a version marked pulled through; an index is stored
 * whole, and only the platform manifests and blobs that clients then ask for are fetched, so a version
 * pulled through may be sparse. A blob is streamed to the client while it is written to the store
 * (one upstream read for both, see Relay), and fetched once however many ask for it at once. A tag is asked of the upstream again (one HEAD)
 * once `tag-ttl` has passed; while the upstream cannot be reached, what the store holds is served.
 */

import { StowageError } from '../errors.js';
import type { ImageReference } from '../reference/reference.js';
import { formatReference, parseReference } from '../reference/reference.js';
import type { Engine } from '../service/engine.js';
import { publishPulledThrough, publishPullThroughMiss, publishRefusal } from '../service/events.js';
import type { StoredVersion } from '../store/version.js';
import { admitImage, openSource } from '../transports/open.js';
import { type Manifest, manifestType } from './content.js';

export interface PullThroughOptions {
  engine: Pick<Engine, 'ctx' | 'store' | 'counters' | 'events' | 'redact'>;
  /** The upstream registries (hosts as references spell them: `127.0.0.1:5000`, `docker.io`). */
  hosts: string[];
  tagTtlMs: number;
  /** Says what the service did that an operator should know (an upstream down, a stale answer). */
  warn: (message: string, fields: Record<string, unknown>) => void;
  now?: () => number;
  /** How long a tag's HEAD may take before the stored version is served (default HEAD_TIMEOUT_MS). */
  headTimeoutMs?: number | undefined;
}

/** How long the upstream may take to answer a tag's HEAD before the stored version is served. */
export const HEAD_TIMEOUT_MS = 3000;
/** Sizes kept at most before the map starts again (a size not kept costs one HEAD). */
const MAX_SIZES = 100_000;
/** After an upstream failed, how long stored versions are served without asking it again. */
const DOWN_PAUSE_MS = 15_000;

/** A blob on its way from the upstream: its size, and its bytes for this client. */
export interface PassingBlob {
  size: number | undefined;
  body: AsyncIterable<Uint8Array>;
}

export class PullThrough {
  /** When the upstream last agreed with what the store holds, by repository:tag (this replica's). */
  private readonly checked = new Map<string, number>();
  /** Upstreams that just failed a HEAD, until when the stored versions are served without asking. */
  private readonly downUntil = new Map<string, number>();
  /** Blob sizes from the manifests served, by digest (a blob's fetch needs its size; else a HEAD). */
  private readonly sizes = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly o: PullThroughOptions) {
    this.now = o.now ?? Date.now;
  }

  covers(repository: string): boolean {
    return this.o.hosts.includes(repository.slice(0, repository.indexOf('/')));
  }

  /** The manifest a tag names: the stored one while fresh, or the upstream's (stored on the way). */
  async tagManifest(
    repository: string,
    tag: string,
    stored: StoredVersion | undefined,
  ): Promise<Manifest | undefined> {
    const key = `${repository}:${tag}`;
    const agreed = this.checked.get(key);
    const { counters } = this.o.engine;
    if (stored && agreed !== undefined && this.now() - agreed < this.o.tagTtlMs) {
      counters.pullThroughHits++;
      return this.storedManifest(stored);
    }
    const host = repository.slice(0, repository.indexOf('/'));
    if (stored && (this.downUntil.get(host) ?? 0) > this.now()) {
      counters.pullThroughStale++;
      return this.storedManifest(stored);
    }
    let upstream: { digest: string } | undefined;
    try {
      upstream = await this.head(repository, tag);
      this.downUntil.delete(host);
    } catch (e) {
      // Each request for a while after would wait out the same failure: they get the store at once.
      this.downUntil.set(host, this.now() + DOWN_PAUSE_MS);
      if (!stored) throw e;
      counters.pullThroughStale++;
      this.o.warn('upstream unreachable: serving the stored version', {
        repository,
        tag,
        error: (e as Error).message,
      });
      return this.storedManifest(stored);
    }
    if (!upstream) return stored ? this.storedManifest(stored) : undefined;
    if (stored && (stored.descriptor.digest === upstream.digest || stored.sourceDigest === upstream.digest)) {
      this.checked.set(key, this.now());
      counters.pullThroughHits++;
      return this.storedManifest(stored);
    }
    counters.pullThroughMisses++;
    const m = await this.fetchManifest(repository, tag);
    const d = { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
    const version = await this.o.engine.store.addVersion({
      repository,
      tag,
      descriptor: d,
      source: `${repository}:${tag}`,
      taken: new Date(this.now()).toISOString(),
      platforms: platformsOf(m),
      pulledThrough: true,
    });
    await this.o.engine.store.flush?.();
    this.checked.set(key, this.now());
    publishPullThroughMiss(this.o.engine, {
      repository,
      tag,
      digest: m.digest,
      stored: stored !== undefined,
    });
    publishPulledThrough(this.o.engine, version, stored);
    return m;
  }

  /** A manifest by digest the store lacks (a platform of a stored index, say), fetched and kept. */
  async digestManifest(repository: string, digest: string): Promise<Manifest | undefined> {
    this.o.engine.counters.pullThroughMisses++;
    const m = await this.fetchManifest(repository, digest).catch((e: unknown) => {
      if (e instanceof StowageError && e.code === 'NOT_FOUND') return undefined;
      throw e;
    });
    if (m) publishPullThroughMiss(this.o.engine, { repository, digest, stored: false });
    return m;
  }

  /**
   * A blob the store lacks, from the upstream: streamed to this client as it is written into the
   * store. The store's fetchBlob makes it one fetch (in this process, and across replicas through the
   * shared store's blob leases); undefined when another request's fetch put it in the store instead,
   * or when the upstream has no such blob.
   */
  async blob(repository: string, digest: string): Promise<PassingBlob | undefined> {
    const { ctx, store, counters } = this.o.engine;
    const { client, endpoint } = await ctx.client(this.reference(repository, digest));
    const size = this.sizes.get(digest) ?? (await client.blobSize(endpoint.path, digest));
    if (size === undefined) return undefined;
    let hand!: (b: PassingBlob) => void;
    const handed = new Promise<PassingBlob>((resolve) => {
      hand = resolve;
    });
    const fetching = store.fetchBlob({ mediaType: 'application/octet-stream', digest, size }, async () => {
      counters.pullThroughMisses++;
      const res = await client.getBlob(endpoint.path, digest);
      const relay = new Relay(res.body);
      hand({ size, body: relay.client() });
      return relay.store();
    });
    fetching.catch((e: unknown) =>
      this.o.warn('a blob pulled through was not stored', {
        repository,
        digest,
        error: (e as Error).message,
      }),
    );
    return Promise.race([handed, fetching.then(() => undefined)]);
  }

  /** Notes the sizes a manifest gives its config and layers, which its blobs' fetches need. */
  remember(m: Manifest): void {
    let doc: { config?: { digest?: string; size?: number }; layers?: { digest?: string; size?: number }[] };
    try {
      doc = JSON.parse(m.bytes.toString('utf8'));
    } catch {
      return;
    }
    if (this.sizes.size > MAX_SIZES) this.sizes.clear();
    for (const d of [doc.config, ...(doc.layers ?? [])]) {
      if (typeof d?.digest === 'string' && Number.isSafeInteger(d.size)) this.sizes.set(d.digest, d.size!);
    }
  }

  /**
   * The upstream's digest for a tag. An upstream that does not answer within HEAD_TIMEOUT_MS counts
   * as unreachable: a client waiting on a cache is better served the stored version than the
   * retries' backoff (the HEAD itself goes on, and its answer is dropped).
   */
  private async head(repository: string, tag: string): Promise<{ digest: string } | undefined> {
    const ref = this.reference(repository, tag);
    const asking = this.o.engine.ctx
      .client(ref)
      .then(({ client, endpoint }) => client.headManifest(endpoint.path, tag));
    asking.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new StowageError(
              'UNAVAILABLE',
              `${repository} did not answer within ${HEAD_TIMEOUT_MS / 1000} s`,
            ),
          ),
        this.o.headTimeoutMs ?? HEAD_TIMEOUT_MS,
      );
    });
    try {
      return await Promise.race([asking, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Fetches a manifest through the engine's context, lets the trust policy see it, and stores it. */
  private async fetchManifest(repository: string, reference: string): Promise<Manifest> {
    const { ctx, store } = this.o.engine;
    const opened = await openSource(ctx, formatReference(this.reference(repository, reference)));
    try {
      const image = opened.images[0]!;
      await admitImage(ctx, opened, image).catch((e: unknown) => {
        if (e instanceof StowageError && e.code === 'POLICY_REJECTED') {
          publishRefusal(this.o.engine, '/stowage/registry', {
            reference: `${repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`,
            reason: e.message,
            where: 'pull-through',
          });
        }
        throw e;
      });
      const m = await opened.source.getManifest(image.reference);
      const mediaType = m.mediaType || manifestType(m.bytes) || 'application/vnd.oci.image.manifest.v1+json';
      await store.putDocument({ mediaType, digest: m.digest, size: m.bytes.length }, m.bytes);
      return { digest: m.digest, mediaType, bytes: m.bytes };
    } finally {
      await opened.close();
    }
  }

  private reference(repository: string, reference: string): ImageReference {
    const at = reference.startsWith('sha256:') ? '@' : ':';
    return parseReference(`${repository}${at}${reference}`);
  }

  private async storedManifest(v: StoredVersion): Promise<Manifest> {
    const bytes = await this.o.engine.store.readBlob(v.descriptor.digest);
    return { digest: v.descriptor.digest, mediaType: v.descriptor.mediaType, bytes };
  }
}

/** The platforms an index lists (an image manifest says its own in a config not yet fetched). */
function platformsOf(m: Manifest): string[] {
  try {
    const doc = JSON.parse(m.bytes.toString('utf8')) as {
      manifests?: { platform?: { os?: string; architecture?: string; variant?: string } }[];
    };
    return (doc.manifests ?? [])
      .map((x) => x.platform)
      .filter((p): p is { os: string; architecture: string; variant?: string } =>
        Boolean(p?.os && p.architecture),
      )
      .map((p) => [p.os, p.architecture, p.variant].filter(Boolean).join('/'));
  } catch {
    return [];
  }
}

/** How far the faster of the two readers of a relay may run ahead of the slower. */
const RELAY_SLACK_BYTES = 16 << 20;

/**
 * One upstream blob read once for two readers: the client and the store. Each gets every chunk as
 * it arrives; the upstream is read on while neither has more than RELAY_SLACK_BYTES waiting, so the
 * client is not held to the store's pace (its writes, its fsync) beyond that, nor the store to a
 * slow client's. A reader that goes away (a client hanging up, a store that failed) is no longer
 * waited for. The digest is checked by the store (and by every client, as registries' clients do):
 * a blob that is not what its digest says is never stored.
 */
export class Relay {
  private readonly readers = [new RelayReader(), new RelayReader()] as const;
  private started = false;

  constructor(
    private readonly source: AsyncIterable<Uint8Array>,
    private readonly slack = RELAY_SLACK_BYTES,
  ) {}

  /** The client's bytes. */
  client(): AsyncIterable<Uint8Array> {
    return this.reader(0);
  }

  /** The store's bytes. */
  store(): AsyncIterable<Uint8Array> {
    return this.reader(1);
  }

  private reader(i: 0 | 1): AsyncIterable<Uint8Array> {
    const r = this.readers[i];
    if (!this.started) {
      this.started = true;
      void this.pump();
    }
    return r.iterate();
  }

  private async pump(): Promise<void> {
    try {
      for await (const chunk of this.source) {
        for (const r of this.readers) r.push(chunk);
        for (;;) {
          const behind = this.readers.filter((r) => r.waiting > this.slack);
          if (!behind.length) break;
          await Promise.race(behind.map((r) => r.drained()));
        }
        if (this.readers.every((r) => r.gone)) return;
      }
      for (const r of this.readers) r.end();
    } catch (e) {
      for (const r of this.readers) r.fail(e as Error);
    }
  }
}

class RelayReader {
  private readonly queue: (Uint8Array | null | Error)[] = [];
  waiting = 0;
  gone = false;
  private wake: (() => void) | undefined;
  private readonly space = new Set<() => void>();

  push(item: Uint8Array): void {
    if (this.gone) return;
    this.queue.push(item);
    this.waiting += item.byteLength;
    this.notify();
  }

  end(): void {
    this.queue.push(null);
    this.notify();
  }

  fail(e: Error): void {
    this.queue.push(e);
    this.notify();
  }

  /** Resolves once this reader has taken a chunk, or gone. */
  drained(): Promise<void> {
    if (this.gone || this.waiting === 0) return Promise.resolve();
    return new Promise((r) => this.space.add(r));
  }

  async *iterate(): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const item = this.queue.shift();
        if (item === undefined) {
          await new Promise<void>((r) => {
            this.wake = r;
          });
          continue;
        }
        if (item === null) return;
        if (item instanceof Error) throw item;
        this.waiting -= item.byteLength;
        this.freed();
        yield item;
      }
    } finally {
      this.gone = true;
      this.queue.length = 0;
      this.waiting = 0;
      this.freed();
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private freed(): void {
    for (const r of this.space) r();
    this.space.clear();
  }
}
