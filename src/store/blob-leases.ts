/**
 * Leases on blobs being written to the shared store (issue 22), one row per blob in PostgreSQL, so
 * that replicas pulling images that share a layer upload it once: the first takes the lease and
 * uploads; the others wait until the blob is in the bucket and count it as shared. A lease is renewed
 * while its upload runs and expires if its replica dies, so a dead replica blocks nobody for long.
 * Garbage collection never sweeps a blob under a live lease, whatever its age.
 */
import type pg from 'pg';
import { dbFailure } from '../db/postgres.js';

/**
 * How long a lease lives without renewal: a dead replica's upload is taken over after this (sooner
 * when its job is taken over: the job system drops a dead replica's leases).
 */
const LEASE_MS = 30_000;
/** How often a waiting replica looks again (for the blob, or for the lease to be free). */
const WAIT_MS = 250;

export interface Lease {
  /** The blob arrived while waiting: nothing to upload. */
  already: boolean;
  release(): Promise<void>;
}

export class BlobLeases {
  constructor(
    private readonly pool: pg.Pool,
    private readonly store: string,
    private readonly replica: string,
    private readonly what: string,
  ) {}

  /**
   * Takes the blob's lease, waiting while another replica holds it; `present` is asked meanwhile, and
   * a blob that arrived ends the wait.
   */
  async claim(digest: string, present: () => Promise<boolean>, signal?: AbortSignal): Promise<Lease> {
    for (;;) {
      if (await this.take(digest)) return this.held(digest);
      await new Promise((r) => setTimeout(r, WAIT_MS));
      signal?.throwIfAborted();
      if (await present()) return { already: true, release: async () => {} };
    }
  }

  /** Digests under a live lease (being written now): garbage collection keeps them. */
  async active(): Promise<Set<string>> {
    const r = await this.query<{ digest: string }>(
      'select digest from stowage_blob_leases where store = $1 and expires_at > now()',
      [this.store],
    );
    return new Set(r.rows.map((x) => x.digest));
  }

  /** Inserts the lease, or takes over an expired one; false while another holds it. */
  private async take(digest: string): Promise<boolean> {
    const r = await this.query(
      `insert into stowage_blob_leases (store, digest, replica, expires_at)
       values ($1, $2, $3, now() + $4 * interval '1 millisecond')
       on conflict (store, digest) do update set replica = excluded.replica, expires_at = excluded.expires_at
       where stowage_blob_leases.expires_at < now() returning digest`,
      [this.store, digest, this.replica, LEASE_MS],
    );
    return r.rowCount === 1;
  }

  private held(digest: string): Lease {
    const renew = setInterval(() => {
      void this.query(
        `update stowage_blob_leases set expires_at = now() + $4 * interval '1 millisecond'
         where store = $1 and digest = $2 and replica = $3`,
        [this.store, digest, this.replica, LEASE_MS],
      ).catch(() => {});
    }, LEASE_MS / 3);
    renew.unref();
    return {
      already: false,
      release: async () => {
        clearInterval(renew);
        await this.query(
          'delete from stowage_blob_leases where store = $1 and digest = $2 and replica = $3',
          [this.store, digest, this.replica],
        ).catch(() => {});
      },
    };
  }

  private async query<R extends pg.QueryResultRow>(
    text: string,
    values: unknown[],
  ): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (e) {
      throw dbFailure(this.what, e, 'leasing a blob');
    }
  }
}
