/**
 * The bundle history of a store shared by replicas: one row a bundle in PostgreSQL (the table of
 * migration 4), beside the version index of the same store.
 */
import type pg from 'pg';
import { dbFailure } from '../db/postgres.js';
import type { BundleHistory, BundleRecord } from './bundle-history.js';

export class PgBundleHistory implements BundleHistory {
  constructor(
    private readonly pool: pg.Pool,
    private readonly description: string,
    private readonly store: string,
  ) {}

  async add(record: BundleRecord, manifest: Buffer): Promise<void> {
    await this.query(
      `insert into stowage_bundles (store, id, kind, record, manifest) values ($1, $2, $3, $4, $5)
       on conflict (store, id, kind) do nothing`,
      [this.store, record.id, record.kind, JSON.stringify(record), manifest.toString('utf8')],
    );
  }

  async list(): Promise<BundleRecord[]> {
    const r = await this.query<{ record: BundleRecord }>(
      'select record from stowage_bundles where store = $1 order by seq',
      [this.store],
    );
    return r.rows.map((x) => x.record);
  }

  async manifest(id: string): Promise<Buffer | undefined> {
    const r = await this.query<{ manifest: string }>(
      'select manifest from stowage_bundles where store = $1 and id = $2 limit 1',
      [this.store, id],
    );
    return r.rows[0] ? Buffer.from(r.rows[0].manifest, 'utf8') : undefined;
  }

  private async query<R extends pg.QueryResultRow>(
    text: string,
    values: unknown[],
  ): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (e) {
      throw dbFailure(`the bundle history at ${this.description}`, e, 'reading or writing it');
    }
  }
}
