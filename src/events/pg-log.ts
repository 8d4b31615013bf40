/**
 * The event log replicas share, in PostgreSQL. An event is written once, by the replica where it
 * happened, with one pending delivery per webhook that takes it; a NOTIFY wakes the other replicas
 * (their event streams, their deliverers). Each webhook's deliveries are attempted by one replica at a
 * time, the one holding its lease (renewed at every turn, taken over when it lapses: a replica that died
 * mid-delivery has that delivery sent again by another, so receivers dedupe by the event's id).
 */
import type pg from 'pg';
import { type Database, dbFailure, Listener, migrate, openPool } from '../db/postgres.js';
import type { CloudEvent } from './event.js';
import { type Delivery, type EventLog, KEEP_EVENTS, type LoggedEvent } from './log.js';

const CHANNEL = 'stowage_events';
/** Old events are removed once per this many appends, not at every one. */
const TRIM_EVERY = 200;

interface DeliveryRow {
  id: string;
  webhook: string;
  event: CloudEvent;
  state: Delivery['state'];
  attempts: number;
  status: number | null;
  error: string | null;
  next_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

function delivery(r: DeliveryRow): Delivery {
  return {
    id: Number(r.id),
    webhook: r.webhook,
    event: r.event.id,
    type: r.event.type,
    subject: r.event.subject,
    state: r.state,
    attempts: r.attempts,
    status: r.status ?? undefined,
    error: r.error ?? undefined,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    nextAt: r.next_at?.toISOString(),
  };
}

const DELIVERY_COLUMNS = `d.id, d.webhook, e.event, d.state, d.attempts, d.status, d.error, d.next_at, d.created_at, d.updated_at`;

export class PgEventLog implements EventLog {
  private readonly listeners: (() => void)[] = [];
  private readonly listener: Listener;
  private appends = 0;

  private constructor(
    private readonly db: Database,
    private readonly o: { store: string; replica: string; keep: number },
  ) {
    this.listener = new Listener(db, [CHANNEL], (_c, from) => {
      if (from !== o.replica) for (const l of this.listeners) l();
    });
  }

  static async open(o: {
    url: string;
    password?: string | undefined;
    store: string;
    replica: string;
    keep: number;
  }): Promise<PgEventLog> {
    const db = openPool(o.url, { password: o.password, max: 3 });
    try {
      await migrate(db);
    } catch (e) {
      await db.pool.end();
      throw dbFailure(db.description, e, 'opening the event log');
    }
    const log = new PgEventLog(db, o);
    await log.listener.start();
    return log;
  }

  private async query<R extends pg.QueryResultRow>(doing: string, text: string, values: unknown[]) {
    try {
      return await this.db.pool.query<R>(text, values);
    } catch (e) {
      throw dbFailure(this.db.description, e, doing);
    }
  }

  async append(event: CloudEvent, webhooks: string[]): Promise<number> {
    // One statement: the event, its deliveries, and the NOTIFY (sent when it commits).
    const r = await this.query<{ seq: string }>(
      'recording an event',
      `with e as (insert into stowage_events (store, event) values ($1, $2) returning seq),
            d as (insert into stowage_deliveries (store, webhook, event_seq, state, created_at, updated_at)
                  select $1, w, e.seq, 'pending', now(), now() from e, unnest($3::text[]) as w)
       select seq, pg_notify($4, $5) from e`,
      [this.o.store, event, webhooks, CHANNEL, this.o.replica],
    );
    if (++this.appends % TRIM_EVERY === 0) void this.trim().catch(() => {});
    return Number(r.rows[0]!.seq);
  }

  /** Events past the newest KEEP_EVENTS whose deliveries are all done (their history goes with them). */
  private async trim(): Promise<void> {
    await this.query(
      'trimming the event log',
      `delete from stowage_events e
        where e.store = $1
          and e.seq < (select seq from stowage_events where store = $1 order by seq desc offset $2 limit 1)
          and not exists (select 1 from stowage_deliveries d where d.event_seq = e.seq and d.state = 'pending')`,
      [this.o.store, KEEP_EVENTS],
    );
  }

  async since(seq: number, limit: number): Promise<LoggedEvent[]> {
    const r = await this.query<{ seq: string; event: CloudEvent }>(
      'reading events',
      'select seq, event from stowage_events where store = $1 and seq > $2 order by seq limit $3',
      [this.o.store, seq, limit],
    );
    return r.rows.map((x) => ({ seq: Number(x.seq), event: x.event }));
  }

  async recent(limit: number): Promise<LoggedEvent[]> {
    const r = await this.query<{ seq: string; event: CloudEvent }>(
      'reading events',
      'select seq, event from stowage_events where store = $1 order by seq desc limit $2',
      [this.o.store, limit],
    );
    return r.rows.map((x) => ({ seq: Number(x.seq), event: x.event })).reverse();
  }

  async lastSeq(): Promise<number> {
    const r = await this.query<{ seq: string | null }>(
      'reading events',
      'select max(seq) as seq from stowage_events where store = $1',
      [this.o.store],
    );
    return Number(r.rows[0]?.seq ?? 0);
  }

  async next(
    webhook: string,
    leaseMs: number,
  ): Promise<{ delivery: Delivery; event: CloudEvent } | undefined> {
    // The lease: taken when free or lapsed, renewed when ours; another replica's live lease: not ours to send.
    const lease = await this.query(
      'taking a webhook lease',
      `insert into stowage_webhook_leases (store, webhook, replica, expires_at)
       values ($1, $2, $3, now() + $4 * interval '1 millisecond')
       on conflict (store, webhook) do update set replica = excluded.replica, expires_at = excluded.expires_at
        where stowage_webhook_leases.replica = excluded.replica or stowage_webhook_leases.expires_at < now()
       returning replica`,
      [this.o.store, webhook, this.o.replica, leaseMs],
    );
    if (lease.rowCount === 0) return undefined;
    const r = await this.query<DeliveryRow>(
      'reading deliveries',
      `select ${DELIVERY_COLUMNS} from stowage_deliveries d join stowage_events e on e.seq = d.event_seq
        where d.store = $1 and d.webhook = $2 and d.state = 'pending' order by d.id limit 1`,
      [this.o.store, webhook],
    );
    const row = r.rows[0];
    return row ? { delivery: delivery(row), event: row.event } : undefined;
  }

  async settle(d: Delivery): Promise<void> {
    await this.query(
      'recording a delivery',
      `update stowage_deliveries set state = $2, attempts = $3, status = $4, error = $5, next_at = $6, updated_at = now()
        where id = $1`,
      [d.id, d.state, d.attempts, d.status ?? null, d.error ?? null, d.nextAt ?? null],
    );
    if (d.state === 'pending') return;
    // The history keeps the newest `keep` finished deliveries of the webhook.
    await this.query(
      'trimming the delivery history',
      `delete from stowage_deliveries
        where store = $1 and webhook = $2 and state <> 'pending'
          and id < (select id from stowage_deliveries where store = $1 and webhook = $2 and state <> 'pending'
                     order by id desc offset $3 limit 1)`,
      [this.o.store, d.webhook, this.o.keep - 1],
    );
  }

  async history(webhook: string, limit: number): Promise<Delivery[]> {
    const r = await this.query<DeliveryRow>(
      'reading deliveries',
      `select ${DELIVERY_COLUMNS} from stowage_deliveries d join stowage_events e on e.seq = d.event_seq
        where d.store = $1 and d.webhook = $2 order by d.id desc limit $3`,
      [this.o.store, webhook, limit],
    );
    return r.rows.map(delivery);
  }

  async redeliver(webhook: string, id: number): Promise<Delivery | undefined> {
    const r = await this.query<DeliveryRow>(
      'queueing a delivery again',
      `with n as (insert into stowage_deliveries (store, webhook, event_seq, state, created_at, updated_at)
                  select store, webhook, event_seq, 'pending', now(), now() from stowage_deliveries
                   where store = $1 and webhook = $2 and id = $3
                  returning *)
       select ${DELIVERY_COLUMNS} from n d join stowage_events e on e.seq = d.event_seq`,
      [this.o.store, webhook, id],
    );
    if (r.rows[0]) await this.query('waking replicas', 'select pg_notify($1, $2)', [CHANNEL, '']);
    return r.rows[0] ? delivery(r.rows[0]) : undefined;
  }

  onRemoteAppend(listener: () => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.listener.stop();
    // Our leases go, so another replica takes the webhooks at once rather than when they lapse.
    await this.db.pool
      .query('delete from stowage_webhook_leases where store = $1 and replica = $2', [
        this.o.store,
        this.o.replica,
      ])
      .catch(() => {});
    await this.db.pool.end();
  }
}
