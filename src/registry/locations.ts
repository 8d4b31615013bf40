/**
 * Where blobs are known to be, per registry host: digest -> the repositories seen holding it, so a blob
 * another repository of the same registry holds is mounted (one POST) instead of sent again.
 *
 * Learnt as blobs are written, found or mounted. With a directory (the CLI's and the service's
 * contexts: $XDG_CACHE_HOME/stowage/locations/) it is kept between runs, as containers/image keeps its
 * blob-info cache: the second `copy` of an image into a new repository of a registry that has its
 * layers mounts them all. An entry is only a hint: a registry checks a mount itself, and answers one it
 * cannot make (the blob is gone, the repository is not ours to read) with a plain upload.
 *
 * The directory holds 256 shards, one per first byte of the digest (ab.json), so a run reads only the
 * shards of the blobs it asks about and rewrites only those of the blobs it learnt: its cost follows
 * what it copies, not how much earlier runs have remembered.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/atomic.js';

/** Blobs remembered per shard (the most recently seen): 16,384 in all, about 8 KB a shard. */
const SHARD_BLOBS = 64;
/** Blobs held in memory: a sync of 10,000 tags sees more than a run needs to keep. */
const MEMORY_BLOBS = 2 * 256 * SHARD_BLOBS;
const MAX_REPOS = 3;
const FORMAT = 1;

/** A repository path by the distribution grammar: what may go into /v2/<name>/ from a file. */
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const DIGEST = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
/** host[:port], as registries.conf names a registry. */
const HOST = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$/;

/** [host, digest, repositories (newest first)], oldest entry first. */
type Entry = [string, string, string[]];

interface ShardFile {
  version: number;
  blobs: Entry[];
}

/** The shard a digest's entries live in: its first byte, as hex. */
const shardOf = (digest: string) => {
  const hex = digest.indexOf(':') + 1;
  return digest.slice(hex, hex + 2);
};

export class BlobLocations {
  /** `host digest` -> repositories, newest first; the map's order is the order they were learnt. */
  private readonly entries = new Map<string, string[]>();
  private readonly loaded = new Map<string, Promise<void>>();
  /** Per shard, the keys learnt since the last save. */
  private readonly dirty = new Map<string, Set<string>>();

  /** @param dir where they are kept between runs; without one, only for this object's life. */
  constructor(private readonly dir?: string | undefined) {}

  add(host: string, repo: string, digest: string): void {
    const key = `${host} ${digest}`;
    const repos = this.entries.get(key);
    if (repos?.[0] === repo) return;
    this.entries.delete(key);
    this.entries.set(key, [repo, ...(repos ?? []).filter((r) => r !== repo)].slice(0, MAX_REPOS));
    if (this.entries.size > MEMORY_BLOBS) this.entries.delete(this.entries.keys().next().value!);
    const shard = shardOf(digest);
    const keys = this.dirty.get(shard) ?? new Set<string>();
    this.dirty.set(shard, keys.add(key));
  }

  /** Other repositories of `host` known to hold `digest`, most recently seen first. */
  async candidates(host: string, digest: string, except: string): Promise<string[]> {
    await this.load(shardOf(digest));
    return (this.entries.get(`${host} ${digest}`) ?? []).filter((r) => r !== except);
  }

  /**
   * Writes the shards of what this run learnt, each merged into what its file has now (another run may
   * have written it meanwhile), atomically. A failure loses nothing but the next run's mounts.
   */
  async save(): Promise<void> {
    if (!this.dir || this.dirty.size === 0) return;
    const dir = this.dir;
    // Taken first: what is learnt while this writes makes the next save write again.
    const shards = [...this.dirty];
    this.dirty.clear();
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await Promise.all(shards.map(([shard, keys]) => this.saveShard(dir, shard, keys)));
    } catch {
      // A cache that cannot be written is no cache: the next run uploads what it would have mounted.
    }
  }

  private async saveShard(dir: string, shard: string, keys: Set<string>): Promise<void> {
    const file = join(dir, `${shard}.json`);
    const merged = await readShard(file, shard);
    for (const key of keys) {
      const mine = this.entries.get(key);
      if (mine) setNewer(merged, key, mine);
    }
    const blobs: Entry[] = [];
    for (const [key, repos] of merged) {
      const [host, digest] = key.split(' ') as [string, string];
      blobs.push([host, digest, repos]);
    }
    const body: ShardFile = { version: FORMAT, blobs: blobs.slice(-SHARD_BLOBS) };
    // Repository names of private registries: the user's own. A cache, so no fsync (it would wait for
    // the disk to take what the registry just wrote, where both share one).
    await writeFileAtomic(file, JSON.stringify(body), 0o600, { durable: false });
  }

  /** Reads a shard once, before its first lookup; what this run learnt before that stays newer. */
  private load(shard: string): Promise<void> {
    let p = this.loaded.get(shard);
    if (!p) {
      p = (async () => {
        if (!this.dir) return;
        for (const [key, repos] of await readShard(join(this.dir, `${shard}.json`), shard)) {
          const mine = this.entries.get(key);
          this.entries.set(key, mine ? union(mine, repos) : repos);
        }
      })();
      this.loaded.set(shard, p);
    }
    return p;
  }
}

/** Repositories newest first, `newer`'s before `older`'s, each once. */
function union(newer: string[], older: string[]): string[] {
  return [...newer, ...older.filter((r) => !newer.includes(r))].slice(0, MAX_REPOS);
}

/** Puts `key` last (newest) in `m`, its repositories merged with what `m` had. */
function setNewer(m: Map<string, string[]>, key: string, repos: string[]): void {
  const before = m.get(key) ?? [];
  m.delete(key);
  m.set(key, union(repos, before));
}

/** A shard file's entries; a missing, broken or foreign file is an empty one (it only costs uploads). */
async function readShard(file: string, shard: string): Promise<Map<string, string[]>> {
  const entries = new Map<string, string[]>();
  const text = await readFile(file, 'utf8').catch(() => undefined);
  if (!text) return entries;
  let parsed: Partial<ShardFile> | undefined;
  try {
    parsed = JSON.parse(text) as Partial<ShardFile>;
  } catch {
    return entries;
  }
  if (parsed?.version !== FORMAT || !Array.isArray(parsed.blobs)) return entries;
  for (const e of parsed.blobs.slice(-SHARD_BLOBS)) {
    if (!Array.isArray(e) || !Array.isArray(e[2])) continue;
    const [host, digest, repos] = e as unknown[];
    if (typeof host !== 'string' || !HOST.test(host) || typeof digest !== 'string' || !DIGEST.test(digest))
      continue;
    if (shardOf(digest) !== shard) continue;
    // Names go into request paths: only what the distribution grammar allows.
    const valid = (repos as unknown[]).filter(
      (r): r is string => typeof r === 'string' && REPOSITORY.test(r),
    );
    if (valid.length > 0) entries.set(`${host} ${digest}`, valid.slice(0, MAX_REPOS));
  }
  return entries;
}
