/**
 * What every PostgreSQL user of stowage shares (the version index, the job system, blob leases): one
 * schema, brought up to date on open under a session advisory lock so replicas starting together wait
 * for the first, pools that survive the server ending a connection, and failures that name the
 * database (host and name) and never its password.
 */
import pg from 'pg';
import { StowageError } from '../errors.js';

/** Advisory lock keys (one 64-bit space per database): "stowage" in ASCII, then a purpose. */
const MIGRATION_LOCK = 0x73746f77_61676501n;

/** Each step brings the schema from its index to the next version; never edit one that shipped. */
const MIGRATIONS = [
  // 1. The version index. One database can hold several stores (a bucket and prefix each).
  `create table stowage_versions (
     seq bigserial primary key,
     store text not null,
     id text not null,
     repository text not null,
     tag text not null,
     version jsonb not null,
     unique (store, id)
   );
   create index stowage_versions_by_tag on stowage_versions (store, repository, tag, seq);`,
  // 2. Jobs and their events (the API's view; pg-boss delivers them), and leases on blobs being
  // written. Rows are per store, like the versions: deployments sharing a database stay apart.
  `create table stowage_jobs (
     store text not null,
     id text primary key,
     kind text not null,
     state text not null,
     request jsonb not null,
     requested_by text not null,
     key text,
     created_at timestamptz not null,
     started_at timestamptz,
     finished_at timestamptz,
     progress jsonb not null,
     result jsonb,
     error jsonb,
     replica text,
     attempts integer not null default 0
   );
   create unique index stowage_jobs_one_active on stowage_jobs (store, key)
     where state in ('queued', 'running');
   create index stowage_jobs_by_time on stowage_jobs (store, created_at desc);
   create table stowage_job_events (
     job_id text not null references stowage_jobs (id) on delete cascade,
     seq integer not null,
     type text not null,
     data jsonb not null,
     primary key (job_id, seq)
   );
   create table stowage_blob_leases (
     store text not null,
     digest text not null,
     replica text not null,
     expires_at timestamptz not null,
     primary key (store, digest)
   );`,
  // 3. The bundles made from a store or imported into it (see store/bundle-history.ts).
  `create table stowage_bundles (
     seq bigserial primary key,
     store text not null,
     id text not null,
     kind text not null,
     record jsonb not null,
     manifest text not null,
     unique (store, id, kind)
   );`,
  // 4. Events, their webhook deliveries, and which replica delivers each webhook's (see events/pg-log.ts).
  `create table stowage_events (
     seq bigserial primary key,
     store text not null,
     event jsonb not null
   );
   create index stowage_events_by_store on stowage_events (store, seq);
   create table stowage_deliveries (
     id bigserial primary key,
     store text not null,
     webhook text not null,
     event_seq bigint not null references stowage_events (seq) on delete cascade,
     state text not null,
     attempts integer not null default 0,
     status integer,
     error text,
     next_at timestamptz,
     created_at timestamptz not null,
     updated_at timestamptz not null
   );
   create index stowage_deliveries_pending on stowage_deliveries (store, webhook, id) where state = 'pending';
   create index stowage_deliveries_by_webhook on stowage_deliveries (store, webhook, id);
   create index stowage_deliveries_finished on stowage_deliveries (store, webhook, id) where state <> 'pending';
   create index stowage_deliveries_by_event on stowage_deliveries (event_seq);
   create table stowage_webhook_leases (
     store text not null,
     webhook text not null,
     replica text not null,
     expires_at timestamptz not null,
     primary key (store, webhook)
   );`,
];

export interface Database {
  pool: pg.Pool;
  /** postgres://HOST/NAME: for messages, never with a password. */
  description: string;
}

/** A pool on the database; nothing is queried yet. */
export function openPool(
  connectionString: string,
  opts: { password?: string | undefined; max?: number | undefined },
): Database {
  const url = new URL(connectionString);
  const description = `postgres://${url.host}${url.pathname}`;
  const pool = new pg.Pool({
    connectionString,
    password: opts.password,
    max: opts.max ?? 4,
    // A server that does not answer (a host gone, a firewall) fails a query in seconds, not never.
    connectionTimeoutMillis: 10_000,
  });
  // A connection the server ends (a restart, an admin) must not end the process with it.
  pool.on('error', () => {});
  return { pool, description };
}

/** Brings the schema up to date, under a lock: the first replica migrates, the others wait and find it done. */
export async function migrate(db: Database): Promise<void> {
  const c = await db.pool.connect();
  try {
    await c.query('select pg_advisory_lock($1)', [MIGRATION_LOCK.toString()]);
    await c.query('create table if not exists stowage_schema (version integer not null)');
    const row = (await c.query<{ version: number }>('select version from stowage_schema')).rows[0];
    let version = row?.version ?? 0;
    if (!row) await c.query('insert into stowage_schema (version) values (0)');
    if (version > MIGRATIONS.length) {
      throw new StowageError(
        'INVALID_CONFIG',
        `the database ${db.description} has schema version ${version}, newer than this stowage knows (${MIGRATIONS.length}); upgrade stowage`,
      );
    }
    for (; version < MIGRATIONS.length; version++) {
      await c.query('begin');
      await c.query(MIGRATIONS[version] as string);
      await c.query('update stowage_schema set version = $1', [version + 1]);
      await c.query('commit');
    }
  } catch (e) {
    await c.query('rollback').catch(() => {});
    throw e;
  } finally {
    await c.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()]).catch(() => {});
    c.release();
  }
}

/** A database failure naming what failed (the database's host and name) and what was being done. */
export function dbFailure(what: string, e: unknown, doing: string): StowageError {
  if (e instanceof StowageError) return e;
  const err = e as Error & { code?: string };
  const reason = err.code ? `${err.code} ${err.message}` : err.message;
  return new StowageError('IO', `${what}: ${doing}: ${reason}`, { cause: e, retryable: true });
}

/**
 * One connection LISTENing to some channels, for as long as it is started: when the server ends it (a
 * restart, a failover) it is taken again every 2 s until the database is back.
 */
export class Listener {
  private client: pg.PoolClient | undefined;
  private running = false;

  constructor(
    private readonly db: Database,
    private readonly channels: string[],
    private readonly onNotify: (channel: string, payload: string) => void,
  ) {}

  start(): Promise<void> {
    this.running = true;
    return this.connect();
  }

  private async connect(): Promise<void> {
    const client = await this.db.pool.connect();
    if (!this.running) {
      client.release();
      return;
    }
    client.on('notification', (n) => this.onNotify(n.channel, n.payload ?? ''));
    client.on('error', () => {
      client.release(true);
      this.client = undefined;
      this.again();
    });
    for (const c of this.channels) await client.query(`listen ${c}`);
    this.client = client;
  }

  stop(): void {
    this.running = false;
    this.client?.release(true);
    this.client = undefined;
  }

  private again(): void {
    if (!this.running) return;
    setTimeout(() => void this.connect().catch(() => this.again()), 2000).unref();
  }
}

/** Whether the database answers, asked at most once a second however often this is called. */
export class Probe {
  private last: { at: number; ok: Promise<boolean> } | undefined;

  constructor(
    private readonly db: Database,
    private readonly everyMs = 1000,
  ) {}

  reachable(): Promise<boolean> {
    const now = Date.now();
    if (!this.last || now - this.last.at > this.everyMs) {
      this.last = {
        at: now,
        ok: this.db.pool.query('select 1').then(
          () => true,
          () => false,
        ),
      };
    }
    return this.last.ok;
  }
}
