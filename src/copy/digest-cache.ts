/**
 * What stowage's own compression made of a layer, kept between runs: the plain layer's digest and the
 * compression (its settings and the library's version, since the bytes depend on both: compressionKey) give the compressed
 * layer's digest and size. The compression is deterministic, so an entry never goes stale; a second
 * restore of the same docker-archive learns its digests here and compresses nothing the registry has.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../core/atomic.js';

export interface CompressedAs {
  digest: string;
  size: number;
}

/** Entries kept (the newest); each is about 200 bytes. */
const MAX_ENTRIES = 50_000;

export class DigestCache {
  private dirty = false;

  private constructor(
    readonly path: string,
    private readonly entries: Map<string, CompressedAs>,
  ) {}

  /** The cache beside the blob cache ($XDG_CACHE_HOME/stowage/digests.json); a broken file is started afresh. */
  static async open(path: string): Promise<DigestCache> {
    const entries = new Map<string, CompressedAs>();
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text) {
      try {
        for (const [k, v] of Object.entries(JSON.parse(text) as Record<string, CompressedAs>)) {
          if (typeof v?.digest === 'string' && Number.isSafeInteger(v.size)) entries.set(k, v);
        }
      } catch {
        // Not JSON (a crash before atomic writes, a hand edit): it only costs a compression.
      }
    }
    return new DigestCache(path, entries);
  }

  static defaultPath(cacheDir: string): string {
    return join(cacheDir, 'digests.json');
  }

  get(plain: string, how: string): CompressedAs | undefined {
    return this.entries.get(`${how} ${plain}`);
  }

  set(plain: string, how: string, value: CompressedAs): void {
    const key = `${how} ${plain}`;
    this.entries.delete(key);
    this.entries.set(key, value);
    this.dirty = true;
  }

  /** Writes the entries (the newest MAX_ENTRIES) atomically; a failure loses nothing but speed. */
  async save(): Promise<void> {
    if (!this.dirty) return;
    const all = [...this.entries];
    const kept = all.slice(Math.max(0, all.length - MAX_ENTRIES));
    try {
      await mkdir(dirname(this.path), { recursive: true });
      await writeFileAtomic(this.path, JSON.stringify(Object.fromEntries(kept)));
      this.dirty = false;
    } catch {
      // A cache that cannot be written is no cache: the next run compresses again.
    }
  }
}
