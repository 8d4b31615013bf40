/**
 * The store's versions held in memory, kept so that every question a sync or a listing asks costs
 * the same whatever the store holds: the newest version of a tag, a version by id, the next page of a
 * listing. Versions keep the order they were added in (oldest first), as index.json lists them.
 *
 * Removal leaves a hole in the ordered list (so positions, and with them page cursors, stay valid);
 * the holes are squeezed out once they are half of the list.
 */
import { StowageError } from '../errors.js';
import type { StoredVersion } from './version.js';

/** What a listing asks for: filters, and where the page starts. */
export interface VersionQuery {
  repository?: string | undefined;
  tag?: string | undefined;
  /** Only the newest version of each tag (true), or only older ones (false). */
  latest?: boolean | undefined;
  /** Versions whose repository:tag, id or digest contains this text (any case). */
  search?: string | undefined;
  /** The id of the last version of the previous page: the page starts after it. */
  after?: string | undefined;
  limit: number;
}

export interface VersionPage {
  versions: { version: StoredVersion; latest: boolean }[];
  /** The cursor of the next page (the last version's id), when there may be more. */
  next?: string | undefined;
}

export class VersionIndex {
  /** Every version in the order added; undefined where one was removed. */
  private slots: (StoredVersion | undefined)[] = [];
  private readonly position = new Map<string, number>();
  /** Positions of each tag's versions, oldest first, by repository then tag (no joined keys to keep). */
  private readonly byName = new Map<string, Map<string, number[]>>();
  /** Positions of each repository's versions, oldest first. */
  private readonly byRepository = new Map<string, number[]>();
  private holes = 0;

  constructor(versions: Iterable<StoredVersion> = []) {
    for (const v of versions) this.put(v);
  }

  get size(): number {
    return this.position.size;
  }

  /** Every version, oldest first. */
  all(): StoredVersion[] {
    const out: StoredVersion[] = [];
    for (const v of this.slots) if (v) out.push(v);
    return out;
  }

  get(id: string): StoredVersion | undefined {
    const p = this.position.get(id);
    return p === undefined ? undefined : this.slots[p];
  }

  latest(repository: string, tag: string): StoredVersion | undefined {
    const list = this.byName.get(repository)?.get(tag);
    return list?.length ? this.slots[list[list.length - 1]!] : undefined;
  }

  /** The tag's versions, oldest first. */
  versionsOf(repository: string, tag: string): StoredVersion[] {
    return (this.byName.get(repository)?.get(tag) ?? []).map((p) => this.slots[p]!);
  }

  /** The repository's versions, oldest first. */
  repositoryVersions(repository: string): StoredVersion[] {
    return (this.byRepository.get(repository) ?? []).map((p) => this.slots[p]!);
  }

  hasRepository(repository: string): boolean {
    return this.byRepository.has(repository);
  }

  repositories(): string[] {
    return [...this.byRepository.keys()];
  }

  isLatest(v: StoredVersion): boolean {
    return this.latest(v.repository, v.tag)?.id === v.id;
  }

  /** Adds a version at the end, or replaces the one with its id where it stands. */
  put(v: StoredVersion): void {
    const p = this.position.get(v.id);
    if (p !== undefined) {
      this.slots[p] = v;
      return;
    }
    const at = this.slots.length;
    this.slots.push(v);
    this.position.set(v.id, at);
    let tags = this.byName.get(v.repository);
    if (!tags) {
      tags = new Map();
      this.byName.set(v.repository, tags);
    }
    append(tags, v.tag, at);
    append(this.byRepository, v.repository, at);
  }

  remove(id: string): StoredVersion | undefined {
    const p = this.position.get(id);
    if (p === undefined) return undefined;
    const v = this.slots[p]!;
    this.slots[p] = undefined;
    this.position.delete(id);
    const tags = this.byName.get(v.repository);
    if (tags) {
      drop(tags, v.tag, p);
      if (!tags.size) this.byName.delete(v.repository);
    }
    drop(this.byRepository, v.repository, p);
    if (++this.holes > 1024 && this.holes * 2 > this.slots.length) this.squeeze();
    return v;
  }

  /**
   * One page of versions, oldest first. It reads only as far as the page needs: what comes before the
   * cursor is skipped by position, a repository's versions come from its own list.
   */
  page(q: VersionQuery): VersionPage {
    const limit = Math.max(1, q.limit);
    const positions = q.repository
      ? ((q.tag ? this.byName.get(q.repository)?.get(q.tag) : this.byRepository.get(q.repository)) ?? [])
      : undefined;
    const afterPos = q.after === undefined ? -1 : (this.position.get(q.after) ?? cursorGone(q.after));
    const search = q.search?.toLowerCase();
    const out: VersionPage['versions'] = [];
    const consider = (v: StoredVersion | undefined): boolean => {
      if (!v) return false;
      if (q.tag && v.tag !== q.tag) return false;
      if (search && !`${v.repository}:${v.tag} ${v.id} ${v.descriptor.digest}`.toLowerCase().includes(search))
        return false;
      const latest = this.isLatest(v);
      if (q.latest !== undefined && latest !== q.latest) return false;
      out.push({ version: v, latest });
      return out.length > limit;
    };
    if (positions) {
      for (let i = firstAfter(positions, afterPos); i < positions.length; i++)
        if (consider(this.slots[positions[i]!])) break;
    } else {
      for (let p = afterPos + 1; p < this.slots.length; p++) if (consider(this.slots[p])) break;
    }
    const more = out.length > limit;
    if (more) out.pop();
    return { versions: out, next: more ? out[out.length - 1]?.version.id : undefined };
  }

  /** Drops the holes left by removals; positions change, so every map is rebuilt. */
  private squeeze(): void {
    const live = this.all();
    this.slots = [];
    this.position.clear();
    this.byName.clear();
    this.byRepository.clear();
    this.holes = 0;
    for (const v of live) this.put(v);
  }
}

/** A cursor whose version was removed since: an error the caller can act on (every index says it so). */
export function cursorGone(id: string): never {
  throw new StowageError(
    'INVALID_ARGUMENT',
    `the listing cannot go on after version ${id}: it is no longer in the store; start again from the first page`,
  );
}

function append(map: Map<string, number[]>, key: string, p: number): void {
  const list = map.get(key);
  if (list) list.push(p);
  else map.set(key, [p]);
}

function drop(map: Map<string, number[]>, key: string, p: number): void {
  const list = map.get(key);
  if (!list) return;
  const i = list.lastIndexOf(p);
  if (i >= 0) list.splice(i, 1);
  if (!list.length) map.delete(key);
}

/** The first index in an ascending list whose value is above `p` (binary search). */
function firstAfter(list: number[], p: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]! <= p) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
