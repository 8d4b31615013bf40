/**
 * The mirror blob cache: blobs that pass through on their way from a source registry to a mirror are
 * kept, content-addressed, so that another job (another mirror of the same source, or another source
 * sharing a base layer) sends them from disk instead of fetching them again. Bounded in bytes; the
 * least recently used blobs are evicted first. It persists between runs (last use is the file's mtime)
 * and is safe to share between the jobs of a run and of the service: a blob appears under its digest
 * only once written in full and digest-checked.
 *
 * Blobs the archive store holds never come here: the store is the cache for archiving jobs.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { runQueue } from '../archive/positioned.js';
import { DEFAULT_BLOB_CACHE_BYTES } from '../config/stowage.js';
import { partialPath, partialPid, processAlive } from '../core/partials.js';
import { drained } from '../core/streams.js';
import { StowageError } from '../errors.js';
import { DigestVerifier } from '../image/digest.js';
import type { Descriptor } from '../image/schemas.js';

/** Files looked at once when the cache is opened. */
const SCAN_CONCURRENCY = 16;

/** How long others wait for a blob being written that makes no progress. */
const STALL_MS = 30_000;

export interface BlobCacheStats {
  hits: number;
  misses: number;
  stored: number;
  evicted: number;
}

export class BlobCache {
  /** digest hex -> size, in least-recently-used-first order (a Map keeps insertion order). */
  private readonly entries = new Map<string, number>();
  private bytes = 0;
  /** Blobs being written now: resolves when done (true if kept), so others wait instead of fetching. */
  private readonly inflight = new Map<string, { done: Promise<boolean>; progress: number }>();
  readonly stats: BlobCacheStats = { hits: 0, misses: 0, stored: 0, evicted: 0 };

  private constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  /** Opens (creating) the cache directory; what an earlier run left is kept, oldest use first. */
  static async open(dir: string, maxBytes = DEFAULT_BLOB_CACHE_BYTES): Promise<BlobCache> {
    const cache = new BlobCache(dir, maxBytes);
    let names: string[];
    try {
      await mkdir(dir, { recursive: true });
      names = await readdir(dir);
    } catch (e) {
      throw new StowageError(
        'INVALID_CONFIG',
        `the mirror blob cache ${dir} cannot be used (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); set [cache] path to a directory stowage may write, or max-size = "0B" to turn the cache off`,
        { cause: e },
      );
    }
    const found: { hex: string; size: number; used: number }[] = [];
    // Looked at several at a time: a full cache holds thousands of blobs. Nothing here throws.
    await runQueue(names, SCAN_CONCURRENCY, new AbortController(), async (name) => {
      const path = join(dir, name);
      if (!/^[0-9a-f]{64}$/.test(name)) {
        // A write an earlier process did not finish (not one another process is doing now).
        const pid = partialPid(name);
        if (name.endsWith('.partial') && (pid === undefined || !processAlive(pid)))
          await unlink(path).catch(() => {});
        return;
      }
      const s = await stat(path).catch(() => undefined);
      if (s?.isFile()) found.push({ hex: name, size: s.size, used: s.mtimeMs });
    });
    found.sort((a, b) => a.used - b.used || (a.hex < b.hex ? -1 : 1));
    for (const f of found) {
      cache.entries.set(f.hex, f.size);
      cache.bytes += f.size;
    }
    await cache.evict();
    return cache;
  }

  get size(): number {
    return this.bytes;
  }

  private path(hex: string): string {
    return join(this.dir, hex);
  }

  /**
   * The blob's bytes from the cache (marking it used), or undefined. A blob another job is passing
   * through right now is waited for rather than fetched a second time.
   */
  async lookup(d: Descriptor): Promise<AsyncIterable<Uint8Array> | undefined> {
    const hex = d.digest.slice(7);
    for (let w = this.inflight.get(hex); w; w = this.inflight.get(hex)) {
      // A writer that stalls (its upload dropped the stream unread) is not waited for long.
      if (Date.now() - w.progress > STALL_MS) break;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([w.done, new Promise((r) => (timer = setTimeout(r, 1000)))]);
      clearTimeout(timer);
    }
    return this.get(d);
  }

  /** The blob's bytes from the cache (marking it used), or undefined. */
  get(d: Descriptor): AsyncIterable<Uint8Array> | undefined {
    const hex = d.digest.startsWith('sha256:') ? d.digest.slice(7) : undefined;
    if (!hex || !this.entries.has(hex)) {
      this.stats.misses++;
      return undefined;
    }
    this.stats.hits++;
    const size = this.entries.get(hex)!;
    this.entries.delete(hex);
    this.entries.set(hex, size);
    const now = new Date();
    void utimes(this.path(hex), now, now).catch(() => {});
    return createReadStream(this.path(hex));
  }

  /**
   * The blob from the cache, or else from `fetch` with its bytes kept as they pass: one call per
   * blob needed, so that jobs wanting the same blob at once fetch it once (the others wait for it).
   */
  async through(
    d: Descriptor,
    fetch: () => Promise<AsyncIterable<Uint8Array>>,
  ): Promise<{ body: AsyncIterable<Uint8Array>; hit: boolean }> {
    const hit = await this.lookup(d);
    if (hit) return { body: hit, hit: true };
    // No await between the lookup and the claim: a second caller now waits for this one.
    const claim = this.claim(d);
    try {
      return { body: this.tee(d, await fetch(), claim), hit: false };
    } catch (e) {
      claim?.release(false);
      throw e;
    }
  }

  private claim(
    d: Descriptor,
  ): { state: { done: Promise<boolean>; progress: number }; release(kept: boolean): void } | undefined {
    const hex = d.digest.startsWith('sha256:') ? d.digest.slice(7) : undefined;
    if (!hex || d.size > this.maxBytes || this.entries.has(hex) || this.inflight.has(hex)) return undefined;
    let settle: (kept: boolean) => void = () => {};
    const state = { done: new Promise<boolean>((r) => (settle = r)), progress: Date.now() };
    this.inflight.set(hex, state);
    return {
      state,
      release: (kept: boolean) => {
        if (this.inflight.get(hex) === state) this.inflight.delete(hex);
        settle(kept);
      },
    };
  }

  /**
   * Passes `body` through unchanged while writing it to the cache; the blob is kept only if all of it
   * passed and its digest checks. A blob larger than the whole cache is not kept.
   */
  tee(
    d: Descriptor,
    body: AsyncIterable<Uint8Array>,
    claimed: ReturnType<BlobCache['claim']> = this.claim(d),
  ): AsyncIterable<Uint8Array> {
    if (!claimed) return body;
    const hex = d.digest.slice(7);
    const { state, release } = claimed;
    const tmp = partialPath(join(this.dir, hex));
    const cache = this;
    let started = false;
    const gen = (async function* () {
      started = true;
      const out = createWriteStream(tmp);
      // The cache failing (a full disk) is never the blob's failure: it passes on, just not kept.
      let failed = false;
      out.on('error', () => {
        failed = true;
      });
      const verifier = new DigestVerifier(d.digest, d.size, `blob ${d.digest}`);
      let complete = false;
      try {
        for await (const c of body) {
          verifier.update(c);
          state.progress = Date.now();
          if (!failed && !out.write(c)) await drained(out);
          yield c;
        }
        verifier.finish();
        complete = !failed;
      } finally {
        out.end();
        await finished(out).catch(() => {});
        if (complete) await cache.add(hex, d.size, tmp);
        else await unlink(tmp).catch(() => {});
        release(complete);
      }
    })();
    // A consumer that never starts (an upload skipped after all) must not leave others waiting.
    return {
      [Symbol.asyncIterator]() {
        const it = gen[Symbol.asyncIterator]();
        return {
          next: () => it.next(),
          return: async (v?: unknown) => {
            if (!started) release(false);
            return it.return(v as undefined);
          },
        };
      },
    };
  }

  private async add(hex: string, size: number, tmp: string): Promise<void> {
    try {
      await rename(tmp, this.path(hex));
    } catch {
      await unlink(tmp).catch(() => {});
      return;
    }
    if (!this.entries.has(hex)) {
      this.bytes += size;
      this.stats.stored++;
    }
    this.entries.delete(hex);
    this.entries.set(hex, size);
    await this.evict();
  }

  /** Removes least recently used blobs until the cache fits its bound. */
  private async evict(): Promise<void> {
    for (const [hex, size] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(hex);
      this.bytes -= size;
      this.stats.evicted++;
      await unlink(this.path(hex)).catch(() => {});
    }
  }
}
