/**
 * The version index in PostgreSQL (src/store/pg-index.ts) against a real server: replicas opening it
 * together migrate it once; versions added and updated from several replicas at once are all kept, in
 * order; lookups and errors as the local store's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StowageError } from '../src/errors.js';
import { PgVersionIndex } from '../src/store/pg-index.js';
import type { StoredVersion } from '../src/store/store.js';
import { type RunningPostgres, startPostgres } from './harness/postgres.js';

let server: RunningPostgres;
const STORE = 's3://stowage-test/';

beforeAll(async () => {
  server = await startPostgres();
}, 60_000);

afterAll(async () => {
  await server?.stop();
});

function version(repository: string, tag: string, n: number): Omit<StoredVersion, 'id'> {
  const hex = n.toString(16).padStart(64, '0');
  return {
    repository,
    tag,
    descriptor: {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${hex}`,
      size: 100 + n,
    },
    source: `127.0.0.1:5000/${repository}:${tag}`,
    taken: new Date(Date.UTC(2026, 10, 1, 0, 0, n)).toISOString(),
    platforms: ['linux/amd64'],
  };
}

describe('the version index in PostgreSQL', () => {
  it('is migrated once when replicas open it together, and keeps what each adds, in order', async () => {
    const replicas = await Promise.all(
      [1, 2, 3].map(() => PgVersionIndex.open(server.url, { store: STORE })),
    );
    try {
      await Promise.all(
        replicas.map((r, i) =>
          (async () => {
            for (let n = 0; n < 10; n++) await r.addVersion(version(`team/app${i}`, 'v1', i * 100 + n));
          })(),
        ),
      );
      const all = await replicas[0]!.versions();
      expect(all).toHaveLength(30);
      // Each replica's versions in the order it added them.
      for (let i = 0; i < 3; i++) {
        const mine = all.filter((v) => v.repository === `team/app${i}`).map((v) => v.descriptor.size);
        expect(mine).toEqual(Array.from({ length: 10 }, (_, n) => 100 + i * 100 + n));
      }
      // The same version again is not a second one.
      await replicas[1]!.addVersion(version('team/app0', 'v1', 0));
      expect(await replicas[2]!.versions()).toHaveLength(30);
    } finally {
      for (const r of replicas) await r.close();
    }
  });

  it('serializes read-modify-write across replicas: no update is lost', async () => {
    const a = await PgVersionIndex.open(server.url, { store: STORE });
    const b = await PgVersionIndex.open(server.url, { store: STORE });
    try {
      const before = (await a.versions()).length;
      // Each update reads the list and appends a version numbered after what it saw: two replicas
      // doing so at once would collide on a number unless each sees the other's write.
      const append = (idx: PgVersionIndex) =>
        idx.update((list) => {
          const n = list.filter((v) => v.repository === 'team/counter').length;
          return [...list, { ...version('team/counter', `n${n}`, 1000 + n), id: `counter-${n}` }];
        });
      await Promise.all(Array.from({ length: 10 }, (_, i) => append(i % 2 ? a : b)));
      const after = await b.versions();
      expect(after).toHaveLength(before + 10);
      expect(after.filter((v) => v.repository === 'team/counter').map((v) => v.tag)).toEqual(
        Array.from({ length: 10 }, (_, n) => `n${n}`),
      );
      // Dropping versions in an update deletes them for every replica.
      await a.update((list) => list.filter((v) => v.repository !== 'team/counter'));
      expect((await b.versions()).some((v) => v.repository === 'team/counter')).toBe(false);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('finds by id, id prefix and repository:tag, records archives, and names what is missing', async () => {
    const idx = await PgVersionIndex.open(server.url, { store: STORE });
    try {
      const v = await idx.addVersion(version('team/find', '2.0', 4242));
      expect((await idx.find(v.id)).id).toBe(v.id);
      expect((await idx.find(v.id.slice(0, 8))).id).toBe(v.id);
      expect((await idx.find('team/find:2.0')).id).toBe(v.id);
      await idx.recordArchive(v.id, { sha256: 'ab'.repeat(32), size: 12345 });
      expect((await idx.latest('team/find', '2.0'))?.archive).toEqual({
        sha256: 'ab'.repeat(32),
        size: 12345,
      });
      const missing = await idx.find('team/none:1').catch((e) => e);
      expect(missing).toBeInstanceOf(StowageError);
      expect((missing as StowageError).code).toBe('NOT_FOUND');
    } finally {
      await idx.close();
    }
  });

  it('keeps the stores one database holds apart', async () => {
    const a = await PgVersionIndex.open(server.url, { store: 's3://bucket/team-a/' });
    const b = await PgVersionIndex.open(server.url, { store: 's3://bucket/team-b/' });
    try {
      const v = await a.addVersion(version('team/apart', '1', 7777));
      expect((await a.find(v.id)).id).toBe(v.id);
      expect(await b.versions()).toEqual([]);
      await expect(b.find(v.id)).rejects.toThrow(/no version/);
      // The registry's questions of a store: its repositories, one store's only.
      expect(await a.hasRepository('team/apart')).toBe(true);
      expect(await b.hasRepository('team/apart')).toBe(false);
      expect(await a.repositories()).toContain('team/apart');
      expect(await b.repositories()).toEqual([]);
      // An update of one store leaves the other's rows alone.
      await b.update(() => []);
      expect((await a.versions()).map((x) => x.id)).toEqual([v.id]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('names the database, never the password, when it cannot be reached', async () => {
    const secret = 'hunter2-not-a-real-password';
    const url = `postgres://stowage:${secret}@127.0.0.1:1/stowage`;
    const err = await PgVersionIndex.open(url, { store: STORE }).catch((e) => e);
    expect(err).toBeInstanceOf(StowageError);
    expect((err as StowageError).message).toContain('postgres://127.0.0.1:1/stowage');
    expect((err as StowageError).message).not.toContain(secret);
  });
  it('pages as the local store pages: filters, the newest of each tag, cursors, and a cursor gone', async () => {
    const index = await PgVersionIndex.open(server.url, { store: 's3://stowage-test/pages/' });
    try {
      for (let n = 0; n < 30; n++)
        await index.addVersion(version(n % 2 ? 'team/app' : 'team/db', `t${n % 3}`, n));
      const walk = async (q: Omit<Parameters<PgVersionIndex['page']>[0], 'after'>) => {
        const seen: number[] = [];
        let after: string | undefined;
        do {
          const page = await index.page({ ...q, after });
          seen.push(...page.versions.map((x) => x.version.descriptor.size - 100));
          after = page.next;
        } while (after);
        return seen;
      };
      expect(await walk({ limit: 7 })).toEqual(Array.from({ length: 30 }, (_, n) => n));
      expect(await walk({ repository: 'team/app', limit: 4 })).toEqual(
        Array.from({ length: 15 }, (_, n) => 2 * n + 1),
      );
      expect(await walk({ repository: 'team/app', tag: 't0', limit: 2 })).toEqual([3, 9, 15, 21, 27]);
      // The newest of each of the six repository:tag names, in the order added.
      expect(await walk({ latest: true, limit: 4 })).toEqual([24, 25, 26, 27, 28, 29]);
      expect(await walk({ search: 'TEAM/DB:T1', limit: 10 })).toEqual([4, 10, 16, 22, 28]);
      const first = await index.page({ limit: 1 });
      await index.update((all) => all.filter((v) => v.id !== first.next));
      await expect(index.page({ limit: 1, after: first.next })).rejects.toThrow(
        /start again from the first page/,
      );
    } finally {
      await index.close();
    }
  });
});
