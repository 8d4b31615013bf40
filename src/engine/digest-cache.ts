/**
 * What stowage has learned about layers, kept between runs ($XDG_CACHE_HOME/stowage/digests.json), so
 * a restore of a docker-archive (plain layers, no manifest) compresses as little as it can:
 *
 *   made       what stowage's own compression made of a plain layer: its digest and the compression's
 *              key (settings and library version: compressionKey) give the compressed digest and size.
 *              The compression is deterministic, so an entry never goes stale; a second restore of the
 *              same archive learns its digests here and compresses nothing the registry has.
 *   diff_ids   which diff_id each compressed layer was found to decompress to, when stowage wrote it
 *              into a docker-archive and checked it. Its compressed digest (checked on every read) and
 *              the gzip CRC-32 then vouch for the same plain bytes, so the next docker-archive with that
 *              layer skips the diff_id pass (a third sha256 pass, the costliest where sha256 is slow).
 *   manifests  the manifest each image config was pulled with (every pull, push and copy that moves a
 *              manifest records it). A docker-archive keeps the config but not the manifest: restoring it
 *              where that manifest's layers are already (the registry it came from, a mirror of it)
 *              puts back the original image, its digest intact, with nothing compressed or sent.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { defaultCachePath } from '../config/stowage.js';
import { writeFileAtomic } from '../core/atomic.js';

export interface CompressedAs {
  digest: string;
  size: number;
}

/** A manifest as a registry served it: its media type and exact bytes. */
export interface RecordedManifest {
  mediaType: string;
  bytes: Buffer;
}

/**
 * Entries kept of each kind (the newest). Every pull and push reads the whole file, so it stays small:
 * at most about 2 MB of made entries (200 bytes each), 1.5 MB of diff_ids and 2 MB of manifests.
 */
const MAX_MADE = 10_000;
const MAX_DIFF_IDS = 10_000;
const MAX_MANIFESTS = 1_000;
const FORMAT = 2;

interface CacheFile {
  version: number;
  made: Record<string, CompressedAs>;
  diffIds: Record<string, string>;
  manifests: Record<string, { mediaType: string; base64: string }>;
}

export class DigestCache {
  private dirty = false;

  private constructor(
    readonly path: string,
    private readonly made: Map<string, CompressedAs>,
    private readonly diffIds: Map<string, string>,
    private readonly manifests: Map<string, { mediaType: string; base64: string }>,
  ) {}

  /** The cache at `path`; a broken file, or one of another format, is started afresh. */
  static async open(path: string): Promise<DigestCache> {
    const made = new Map<string, CompressedAs>();
    const diffIds = new Map<string, string>();
    const manifests = new Map<string, { mediaType: string; base64: string }>();
    const text = await readFile(path, 'utf8').catch(() => undefined);
    try {
      const file = text ? (JSON.parse(text) as Partial<CacheFile>) : undefined;
      if (file?.version === FORMAT) {
        for (const [k, v] of Object.entries(file.made ?? {})) {
          if (typeof v?.digest === 'string' && Number.isSafeInteger(v.size)) made.set(k, v);
        }
        for (const [k, v] of Object.entries(file.diffIds ?? {})) if (typeof v === 'string') diffIds.set(k, v);
        for (const [k, v] of Object.entries(file.manifests ?? {})) {
          if (typeof v?.mediaType === 'string' && typeof v.base64 === 'string') manifests.set(k, v);
        }
      }
    } catch {
      // Not JSON (a crash before atomic writes, a hand edit): it only costs a compression.
    }
    return new DigestCache(path, made, diffIds, manifests);
  }

  static defaultPath(cacheDir: string): string {
    return join(cacheDir, 'digests.json');
  }

  /** The cache beside the blob cache: $XDG_CACHE_HOME/stowage/digests.json. */
  static openDefault(): Promise<DigestCache> {
    return DigestCache.open(DigestCache.defaultPath(dirname(defaultCachePath())));
  }

  get(plain: string, how: string): CompressedAs | undefined {
    return this.made.get(`${how} ${plain}`);
  }

  set(plain: string, how: string, value: CompressedAs): void {
    const key = `${how} ${plain}`;
    this.made.delete(key);
    this.made.set(key, value);
    this.dirty = true;
  }

  /** The diff_id a compressed layer was checked to decompress to, if it was. */
  diffIdOf(compressed: string): string | undefined {
    return this.diffIds.get(compressed);
  }

  rememberDiffId(compressed: string, diffId: string): void {
    if (this.diffIds.get(compressed) === diffId) return;
    this.diffIds.delete(compressed);
    this.diffIds.set(compressed, diffId);
    this.dirty = true;
  }

  /** The manifest `config` was last seen with, if any. */
  manifestFor(config: string): RecordedManifest | undefined {
    const m = this.manifests.get(config);
    return m ? { mediaType: m.mediaType, bytes: Buffer.from(m.base64, 'base64') } : undefined;
  }

  rememberManifest(config: string, manifest: RecordedManifest): void {
    const base64 = manifest.bytes.toString('base64');
    if (this.manifests.get(config)?.base64 === base64) return;
    this.manifests.delete(config);
    this.manifests.set(config, { mediaType: manifest.mediaType, base64 });
    // Only the newest are saved: a sync of 10,000 tags keeps no more than those in memory either.
    if (this.manifests.size > MAX_MANIFESTS) {
      this.manifests.delete(this.manifests.keys().next().value!);
    }
    this.dirty = true;
  }

  /** Writes the entries (the newest of each kind) atomically; a failure loses nothing but speed. */
  async save(): Promise<void> {
    if (!this.dirty) return;
    const newest = <T>(m: Map<string, T>, n: number) =>
      Object.fromEntries([...m].slice(Math.max(0, m.size - n)));
    const file: CacheFile = {
      version: FORMAT,
      made: newest(this.made, MAX_MADE),
      diffIds: newest(this.diffIds, MAX_DIFF_IDS),
      manifests: newest(this.manifests, MAX_MANIFESTS),
    };
    try {
      await mkdir(dirname(this.path), { recursive: true });
      // A cache: no fsync (see writeFileAtomic); a file lost to a power cut costs a compression.
      await writeFileAtomic(this.path, JSON.stringify(file), 0o644, { durable: false });
      this.dirty = false;
    } catch {
      // A cache that cannot be written is no cache: the next run compresses again.
    }
  }
}
