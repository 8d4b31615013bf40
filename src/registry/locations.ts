/**
 * Where blobs are known to be, per registry host: digest -> the repositories seen holding it, so a blob
 * another repository of the same registry holds is mounted (one POST) instead of sent again.
 *
 * Learnt as blobs are written, found or mounted. With a file (the CLI's and the service's contexts:
 * $XDG_CACHE_HOME/stowage/locations.json) it is kept between runs, as containers/image keeps its
 * blob-info cache: the second `copy` of an image into a new repository of a registry that has its
 * layers mounts them all. An entry is only a hint: a registry checks a mount itself, and answers one it
 * cannot make (the blob is gone, the repository is not ours to read) with a plain upload.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../core/atomic.js';

/**
 * Blobs remembered (the most recently seen), and repositories per blob. Every run that mounts reads
 * the whole file, so it stays small: about 120 bytes an entry, at most about 1.2 MB.
 */
const MAX_BLOBS = 10_000;
const MAX_REPOS = 3;
const FORMAT = 1;

/** A repository path by the distribution grammar: what may go into /v2/<name>/ from a file. */
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const DIGEST = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
/** host[:port], as registries.conf names a registry. */
const HOST = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$/;

/** [host, digest, repositories (newest first)], oldest entry first. */
type Entry = [string, string, string[]];

interface LocationsFile {
  version: number;
  blobs: Entry[];
}

export class BlobLocations {
  /** `host digest` -> repositories, newest first; the map's order is the order they were learnt. */
  private entries = new Map<string, string[]>();
  private loaded: Promise<void> | undefined;
  private dirty = false;

  /** @param file where they are kept between runs; without one, only for this object's life. */
  constructor(private readonly file?: string | undefined) {}

  add(host: string, repo: string, digest: string): void {
    const key = `${host} ${digest}`;
    const repos = this.entries.get(key);
    if (repos?.[0] === repo) return;
    this.entries.delete(key);
    this.entries.set(key, [repo, ...(repos ?? []).filter((r) => r !== repo)].slice(0, MAX_REPOS));
    // A sync of 10,000 tags sees more blobs than are kept: memory holds twice what the file does.
    if (this.entries.size > 2 * MAX_BLOBS) this.entries.delete(this.entries.keys().next().value!);
    this.dirty = true;
  }

  /** Other repositories of `host` known to hold `digest`, most recently seen first. */
  async candidates(host: string, digest: string, except: string): Promise<string[]> {
    await this.load();
    return (this.entries.get(`${host} ${digest}`) ?? []).filter((r) => r !== except);
  }

  /**
   * Writes what this run learnt, merged into what the file has now (another run may have written it
   * meanwhile), atomically. A failure loses nothing but the next run's mounts.
   */
  async save(): Promise<void> {
    if (!this.file || !this.dirty) return;
    // Cleared first: what is learnt while this writes makes the next save write again.
    this.dirty = false;
    const merged = merge(await readEntries(this.file), this.entries);
    const blobs: Entry[] = [];
    for (const [key, repos] of merged) {
      const [host, digest] = key.split(' ') as [string, string];
      blobs.push([host, digest, repos]);
    }
    const body: LocationsFile = { version: FORMAT, blobs: blobs.slice(-MAX_BLOBS) };
    try {
      await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
      // Repository names of private registries: the user's own. A cache, so no fsync (it would wait
      // for the disk to take what the registry just wrote, where both share one).
      await writeFileAtomic(this.file, JSON.stringify(body), 0o600, { durable: false });
    } catch {
      // A cache that cannot be written is no cache: the next run uploads what it would have mounted.
    }
  }

  /** Reads the file once, before the first lookup; what this run learnt before that stays newer. */
  private load(): Promise<void> {
    this.loaded ??= (async () => {
      if (!this.file) return;
      this.entries = merge(await readEntries(this.file), this.entries);
    })();
    return this.loaded;
  }
}

/** `older`'s entries, then `newer`'s on top (each blob's repositories: newer's first). */
function merge(older: Map<string, string[]>, newer: Map<string, string[]>): Map<string, string[]> {
  for (const [key, repos] of newer) {
    const before = older.get(key) ?? [];
    older.delete(key);
    older.set(key, [...repos, ...before.filter((r) => !repos.includes(r))].slice(0, MAX_REPOS));
  }
  return older;
}

/** The file's entries; a missing, broken or foreign file is an empty one (it only costs uploads). */
async function readEntries(file: string): Promise<Map<string, string[]>> {
  const entries = new Map<string, string[]>();
  const text = await readFile(file, 'utf8').catch(() => undefined);
  if (!text) return entries;
  let parsed: Partial<LocationsFile> | undefined;
  try {
    parsed = JSON.parse(text) as Partial<LocationsFile>;
  } catch {
    return entries;
  }
  if (parsed?.version !== FORMAT || !Array.isArray(parsed.blobs)) return entries;
  for (const e of parsed.blobs.slice(-MAX_BLOBS)) {
    if (!Array.isArray(e) || !Array.isArray(e[2])) continue;
    const [host, digest, repos] = e as unknown[];
    if (typeof host !== 'string' || !HOST.test(host) || typeof digest !== 'string' || !DIGEST.test(digest))
      continue;
    // Names go into request paths: only what the distribution grammar allows.
    const valid = (repos as unknown[]).filter(
      (r): r is string => typeof r === 'string' && REPOSITORY.test(r),
    );
    if (valid.length > 0) entries.set(`${host} ${digest}`, valid.slice(0, MAX_REPOS));
  }
  return entries;
}
