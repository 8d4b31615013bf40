/**
 * The store's version index in PostgreSQL (issue 22), shared by every replica: the same methods as the
 * local store's index.json, with the same meaning. A version is a row (its StoredVersion as jsonb) in
 * the order versions were added; read-modify-write (retention, pruning) runs in one transaction under
 * a transaction-scoped advisory lock, so two replicas never lose each other's changes. The schema is
 * created, and later migrated, on open under a session advisory lock: replicas starting together wait
 * for the first.
 */
import type pg from 'pg';
import { dbFailure, migrate, openPool } from '../db/postgres.js';
import { StowageError } from '../errors.js';
import { type StoredVersion, type VersionPage, type VersionQuery, versionId } from './store.js';
import { cursorGone } from './version-index.js';

/** The two-key advisory lock space of the index's per-store locks (the second key: the store). */
const INDEX_LOCK_SPACE = 0x73746f77;

export class PgVersionIndex {
  private constructor(
    private readonly pool: pg.Pool,
    readonly description: string,
    /** The store this index is of (its bucket and prefix): rows of other stores are never seen. */
    private readonly store: string,
  ) {}

  /**
   * Connects and brings the schema up to date. `description` names the store in messages (the
   * database's host and name, never its password).
   */
  static async open(
    connectionString: string,
    opts: { store: string; password?: string | undefined },
  ): Promise<PgVersionIndex> {
    const { pool, description } = openPool(connectionString, { password: opts.password });
    const index = new PgVersionIndex(pool, description, opts.store);
    try {
      await migrate({ pool, description });
    } catch (e) {
      await pool.end();
      throw index.failure(e, 'preparing its tables');
    }
    return index;
  }

  /** Every stored version, oldest first. */
  async versions(): Promise<StoredVersion[]> {
    const r = await this.query<{ version: StoredVersion }>(
      'select version from stowage_versions where store = $1 order by seq',
      [this.store],
    );
    return r.rows.map((x) => x.version);
  }

  async latest(repository: string, tag: string): Promise<StoredVersion | undefined> {
    const r = await this.query<{ version: StoredVersion }>(
      'select version from stowage_versions where store = $1 and repository = $2 and tag = $3 order by seq desc limit 1',
      [this.store, repository, tag],
    );
    return r.rows[0]?.version;
  }

  /**
   * One page of versions in the order added. The cursor is a version id; each row says whether it is
   * its tag's newest (no later row of the tag), answered by the (store, repository, tag, seq) index.
   */
  async page(q: VersionQuery): Promise<VersionPage> {
    const limit = Math.max(1, Math.min(q.limit, 1_000_000_000));
    let afterSeq = '0';
    if (q.after !== undefined) {
      const r = await this.query<{ seq: string }>(
        'select seq from stowage_versions where store = $1 and id = $2',
        [this.store, q.after],
      );
      afterSeq = r.rows[0]?.seq ?? cursorGone(q.after);
    }
    const search = q.search ? `%${q.search.toLowerCase().replace(/[%_\\]/g, (m) => `\\${m}`)}%` : null;
    const r = await this.query<{ version: StoredVersion; latest: boolean }>(
      // Newest of its tag: no later row of the tag (the by-tag index answers it), said once.
      `select version, latest from (
         select a.seq, a.version, not exists (
           select 1 from stowage_versions b
            where b.store = a.store and b.repository = a.repository and b.tag = a.tag and b.seq > a.seq
         ) as latest
         from stowage_versions a
         where a.store = $1 and a.seq > $2
           and ($3::text is null or a.repository = $3)
           and ($4::text is null or a.tag = $4)
           and ($5::text is null or lower(a.repository || ':' || a.tag || ' ' || a.id || ' ' || (a.version->'descriptor'->>'digest')) like $5)
       ) v
       where $6::boolean is null or latest = $6
       order by seq limit $7`,
      [this.store, afterSeq, q.repository ?? null, q.tag ?? null, search, q.latest ?? null, limit + 1],
    );
    const versions = r.rows.map((x) => ({ version: x.version, latest: x.latest }));
    const more = versions.length > limit;
    if (more) versions.pop();
    return { versions, next: more ? versions[versions.length - 1]?.version.id : undefined };
  }

  /** Whether the repository holds a version (the by-tag index answers it). */
  async hasRepository(repository: string): Promise<boolean> {
    const r = await this.query<{ one: number }>(
      'select 1 as one from stowage_versions where store = $1 and repository = $2 limit 1',
      [this.store, repository],
    );
    return r.rows.length > 0;
  }

  /** The repositories holding a version, each once (the by-tag index serves it). */
  async repositories(): Promise<string[]> {
    const r = await this.query<{ repository: string }>(
      'select distinct repository from stowage_versions where store = $1',
      [this.store],
    );
    return r.rows.map((x) => x.repository);
  }

  /** The newest version of each tag of a repository, in one query (the by-tag index serves it). */
  async newestByTag(repository: string): Promise<Map<string, StoredVersion>> {
    const r = await this.query<{ version: StoredVersion }>(
      'select distinct on (tag) version from stowage_versions where store = $1 and repository = $2 order by tag, seq desc',
      [this.store, repository],
    );
    return new Map(r.rows.map((x) => [x.version.tag, x.version]));
  }

  /** A version by id (or a unique id prefix), or by repository:tag for its newest. */
  async find(idOrName: string): Promise<StoredVersion> {
    const byId = await this.query<{ version: StoredVersion }>(
      "select version from stowage_versions where store = $1 and id like $2 || '%' order by seq limit 2",
      [this.store, idOrName.replace(/[%_\\]/g, '')],
    );
    if (byId.rows.length === 1) return byId.rows[0]!.version;
    const i = idOrName.lastIndexOf(':');
    if (i > 0) {
      const named = await this.latest(idOrName.slice(0, i), idOrName.slice(i + 1));
      if (named) return named;
    }
    throw new StowageError(
      'NOT_FOUND',
      byId.rows.length > 1
        ? `"${idOrName}" matches several versions; give more of the id`
        : `the store has no version "${idOrName}"; list them with stowage archives`,
    );
  }

  /** Adds a version; one already there (same repository, tag and digest) is left as it is. */
  async addVersion(v: Omit<StoredVersion, 'id'>): Promise<StoredVersion> {
    const version = { ...v, id: versionId(v.repository, v.tag, v.descriptor.digest) } as StoredVersion;
    await this.query(
      'insert into stowage_versions (store, id, repository, tag, version) values ($1, $2, $3, $4, $5) on conflict (store, id) do nothing',
      [this.store, version.id, version.repository, version.tag, JSON.stringify(version)],
    );
    return version;
  }

  /** Removes these versions; ids no longer there are passed over. */
  async removeVersions(ids: string[]): Promise<void> {
    if (ids.length)
      await this.query('delete from stowage_versions where store = $1 and id = any($2)', [this.store, ids]);
  }

  /** Records a version's archive checksum (computed once; the archive is reproducible). */
  async recordArchive(id: string, archive: { sha256: string; size: number }): Promise<void> {
    await this.query(
      `update stowage_versions set version = jsonb_set(version, '{archive}', $3::jsonb) where store = $1 and id = $2`,
      [this.store, id, JSON.stringify(archive)],
    );
  }

  /**
   * Runs `fn` on the version list and writes what it returns, in one transaction under the index's
   * lock: every replica's update sees the one before it. Versions it drops are deleted, new ones
   * added after the others, changed ones updated in place.
   */
  async update(
    fn: (versions: StoredVersion[]) => StoredVersion[] | Promise<StoredVersion[]>,
  ): Promise<StoredVersion[]> {
    const c = await this.pool.connect();
    try {
      await c.query('begin');
      // One lock per store: hashtext folds its name into the lock's second key.
      await c.query('select pg_advisory_xact_lock($1, hashtext($2))', [INDEX_LOCK_SPACE, this.store]);
      const before = (
        await c.query<{ version: StoredVersion }>(
          'select version from stowage_versions where store = $1 order by seq',
          [this.store],
        )
      ).rows.map((x) => x.version);
      const after = await fn(before);
      const kept = new Set(after.map((v) => v.id));
      const gone = before.filter((v) => !kept.has(v.id)).map((v) => v.id);
      if (gone.length) {
        await c.query('delete from stowage_versions where store = $1 and id = any($2)', [this.store, gone]);
      }
      // Only what `fn` added or replaced is written: a version it handed back as it was is that row.
      const unchanged = new Set(before);
      for (const v of after) {
        if (unchanged.has(v)) continue;
        await c.query(
          `insert into stowage_versions (store, id, repository, tag, version) values ($1, $2, $3, $4, $5)
           on conflict (store, id) do update set version = excluded.version`,
          [this.store, v.id, v.repository, v.tag, JSON.stringify(v)],
        );
      }
      await c.query('commit');
      return after;
    } catch (e) {
      await c.query('rollback').catch(() => {});
      throw e instanceof StowageError ? e : this.failure(e, 'updating its versions');
    } finally {
      c.release();
    }
  }

  /** The index's connections, which blob leases share. */
  get connections(): pg.Pool {
    return this.pool;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async query<R extends pg.QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (e) {
      throw this.failure(e, 'reading or writing its versions');
    }
  }

  /** A database failure naming the database (host and name) and what was being done, never a password. */
  private failure(e: unknown, doing: string): StowageError {
    return dbFailure(`the version index at ${this.description}`, e, doing);
  }
}
