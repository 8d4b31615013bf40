import { describe, expect, it } from 'vitest';
import { type StoredVersion, versionId } from './version.js';
import { VersionIndex } from './version-index.js';

function version(repository: string, tag: string, n: number): StoredVersion {
  const digest = `sha256:${n.toString(16).padStart(64, '0')}`;
  return {
    id: versionId(repository, tag, digest),
    repository,
    tag,
    descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: 100 + n },
    source: `registry.test/${repository}:${tag}`,
    taken: new Date(Date.UTC(2026, 0, 1) + n * 1000).toISOString(),
    platforms: ['linux/amd64'],
  };
}

/** Every page of a query, followed by its cursors. */
function pages(index: VersionIndex, q: Omit<Parameters<VersionIndex['page']>[0], 'after'>): string[][] {
  const out: string[][] = [];
  let after: string | undefined;
  do {
    const page = index.page({ ...q, after });
    out.push(
      page.versions.map((x) => `${x.version.repository}:${x.version.tag}#${x.version.descriptor.size}`),
    );
    after = page.next;
  } while (after);
  return out;
}

describe('VersionIndex', () => {
  it('answers the newest version of a tag and a version by id, keeping the order added', () => {
    const a1 = version('team/app', '1', 1);
    const a2 = version('team/app', '1', 2);
    const b = version('team/db', '1', 3);
    const index = new VersionIndex([a1, b, a2]);
    expect(index.latest('team/app', '1')?.id).toBe(a2.id);
    expect(index.latest('team/app', '2')).toBeUndefined();
    expect(index.get(b.id)).toBe(b);
    expect(index.all().map((v) => v.id)).toEqual([a1.id, b.id, a2.id]);
    expect(index.isLatest(a1)).toBe(false);
    expect(index.repositoryVersions('team/app').map((v) => v.id)).toEqual([a1.id, a2.id]);
  });

  it('replaces a version where it stands and forgets a removed one everywhere', () => {
    const a1 = version('team/app', '1', 1);
    const a2 = version('team/app', '1', 2);
    const index = new VersionIndex([a1, a2]);
    index.put({ ...a1, archive: { sha256: 'f'.repeat(64), size: 9 } });
    expect(index.all().map((v) => v.id)).toEqual([a1.id, a2.id]);
    expect(index.get(a1.id)?.archive?.size).toBe(9);
    expect(index.remove(a2.id)?.id).toBe(a2.id);
    expect(index.latest('team/app', '1')?.id).toBe(a1.id);
    expect(index.remove(a2.id)).toBeUndefined();
    expect(index.size).toBe(1);
    index.remove(a1.id);
    expect(index.repositories()).toEqual([]);
  });

  it('pages through every version once, with filters, whatever the page size', () => {
    const all: StoredVersion[] = [];
    for (let i = 0; i < 50; i++) all.push(version(i % 2 ? 'team/app' : 'team/db', `t${i % 5}`, i));
    const index = new VersionIndex(all);
    for (const limit of [1, 7, 50, 100]) {
      expect(pages(index, { limit }).flat()).toHaveLength(50);
      const app = pages(index, { repository: 'team/app', limit }).flat();
      expect(app).toEqual(
        all
          .filter((v) => v.repository === 'team/app')
          .map((v) => `${v.repository}:${v.tag}#${v.descriptor.size}`),
      );
      expect(pages(index, { repository: 'team/app', tag: 't1', limit }).flat()).toHaveLength(5);
      // The newest of each of the 10 repository:tag names.
      expect(pages(index, { latest: true, limit }).flat()).toHaveLength(10);
      expect(pages(index, { latest: false, limit }).flat()).toHaveLength(40);
    }
    expect(pages(index, { search: 'TEAM/DB:T4', limit: 3 }).flat()).toHaveLength(5);
    expect(index.page({ search: all[7]!.id, limit: 10 }).versions.map((x) => x.version.id)).toEqual([
      all[7]!.id,
    ]);
  });

  it('keeps cursors valid across removals and the squeeze that follows many of them', () => {
    const all: StoredVersion[] = [];
    for (let i = 0; i < 3000; i++) all.push(version('team/app', `t${i}`, i));
    const index = new VersionIndex(all);
    const first = index.page({ limit: 10 });
    for (let i = 0; i < 2500; i++) index.remove(all[i]!.id);
    // The cursor names a version that is gone: the listing says so rather than skipping or repeating.
    expect(() => index.page({ limit: 10, after: first.next })).toThrow(/start again from the first page/);
    const page = index.page({ limit: 10 });
    expect(page.versions[0]?.version.id).toBe(all[2500]!.id);
    const next = index.page({ limit: 10, after: page.next });
    expect(next.versions[0]?.version.id).toBe(all[2510]!.id);
    expect(index.latest('team/app', 't2999')?.id).toBe(all[2999]!.id);
    expect(pages(index, { limit: 333 }).flat()).toHaveLength(500);
  });
});
