/**
 * Jobs shared by replicas (issue 22): the same JobSystem as the in-process JobManager, kept in
 * PostgreSQL so that any replica lists, streams and cancels any job, a schedule fires once across
 * them all, and a job whose replica dies is finished by another.
 *
 * Two layers, each doing what it is good at:
 * - pg-boss delivers: one queue message per job, taken by one replica (SKIP LOCKED), its heartbeat
 *   refreshed while the job runs; a replica that stops beating (SIGKILL, a lost host) has its job
 *   failed by the monitor and retried, so another replica takes it. Its cron schedules fire once per
 *   slot across every instance.
 * - Our own tables are what the API shows (stowage_jobs, stowage_job_events): the job as the
 *   in-process manager has it, and its events in order for Server-Sent Events from any replica, woken
 *   by LISTEN/NOTIFY. A unique index over the keys of queued and running jobs makes identical
 *   requests share one job across replicas, and the row and its queue message are written in one
 *   transaction, so neither exists without the other.
 *
 * pg-boss needs Node 22.12 or newer; it is loaded only when this mode is asked for (see open()).
 */
import { createHash, randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { PgBoss } from 'pg-boss';
import { type Database, dbFailure, migrate, openPool } from '../db/postgres.js';
import { StowageError, toStowageError } from '../errors.js';
import {
  emptyCounts,
  type Job,
  type JobEvent,
  JobFailure,
  type JobFilter,
  type JobKind,
  type JobProgress,
  type JobState,
  type JobSystem,
  type Runner,
  type Schedule,
  summary,
  syncKey,
  TERMINAL,
} from './jobs.js';

/** The oldest Node pg-boss runs on. */
export const PG_BOSS_NODE = '22.12.0';

/** Deliveries of one job before it is given up (each replica death or stop costs one). */
const MAX_ATTEMPTS = 5;
/**
 * Replicas that may die running one job before it is given up. A job whose replica vanished twice
 * (no goodbye: killed, out of memory, a crash) may be what kills them: a third would be the next to go.
 */
const MAX_LOST = 2;
/** Events stored per job; progress past this only updates the job's row. */
const MAX_EVENTS = 2000;
/** How often a running job's pending events are written (progress comes faster; the newest wins). */
const FLUSH_MS = 250;
/** Subscribers read the table this often even without a notification (a listener reconnecting). */
const BACKSTOP_MS = 3000;
/** How long a job's end is retried while the database is unreachable (a restart, a failover). */
const END_RETRY_MS = 120_000;
/** /readyz asks the database at most this often. */
const PROBE_MS = 1000;
const EVENTS_CHANNEL = 'stowage_job_events';
const CANCEL_CHANNEL = 'stowage_job_cancel';

export interface PgJobsOptions {
  url: string;
  password?: string | undefined;
  /** The store the jobs are of (its bucket and prefix): one database can hold several deployments. */
  store: string;
  /** This replica's name, recorded on the jobs it runs. */
  replica: string;
  concurrency: number;
  maxQueued: number;
  keep: number;
  runners: Record<JobKind, Runner>;
  /** Seconds a running job may go without its replica's heartbeat before another takes it (>= 10). */
  heartbeatSeconds?: number | undefined;
  onChange?: ((job: Job) => void) | undefined;
  redact?: ((text: string) => string) | undefined;
  /** Warnings from the queue library (a lost connection, clock skew). */
  onWarning?: ((message: string) => void) | undefined;
}

interface JobRow {
  id: string;
  kind: JobKind;
  state: JobState;
  request: unknown;
  requested_by: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  progress: JobProgress;
  result: unknown;
  error: Job['error'] | null;
  replica: string | null;
  attempts: number;
}

/** A job this replica is running. */
interface Running {
  job: Job;
  attempt: number;
  controller: AbortController;
  /** Why it was aborted: a cancel, or this replica stopping (the job goes back to the queue). */
  reason?: 'cancel' | 'stopping' | undefined;
  seq: number;
  stored: number;
  pending: JobEvent[];
  timer?: NodeJS.Timeout | undefined;
  writing: Promise<void>;
}

interface Watcher {
  id: string;
  last: number;
  listener: (e: JobEvent) => void;
  onEnd: () => void;
  ended: boolean;
  reading: Promise<void>;
}

/** Whether this Node runs pg-boss. */
export function nodeRunsPgBoss(version = process.versions.node): boolean {
  const [a, b] = version.split('.').map(Number) as [number, number];
  const [x, y] = PG_BOSS_NODE.split('.').map(Number) as [number, number];
  return a > x || (a === x && b >= y);
}

export class PgJobs implements JobSystem {
  readonly mode = 'postgres' as const;
  private readonly running = new Map<string, Running>();
  private readonly watchers = new Map<string, Set<Watcher>>();
  private listener?: pg.PoolClient | undefined;
  private backstop?: NodeJS.Timeout | undefined;
  private accepting = true;
  private readonly queue: string;
  private readonly scheduleQueue: string;
  private readonly what: string;

  private constructor(
    private readonly db: Database,
    private readonly boss: PgBoss,
    private readonly opts: PgJobsOptions,
  ) {
    // Queue names per store, so deployments sharing a database never take each other's jobs.
    const space = createHash('sha256').update(opts.store).digest('hex').slice(0, 12);
    this.queue = `stowage-jobs-${space}`;
    this.scheduleQueue = `stowage-schedules-${space}`;
    this.what = `the job system at ${db.description}`;
  }

  /** Connects, migrates (ours and pg-boss's, each under its lock), and starts taking jobs. */
  static async open(opts: PgJobsOptions): Promise<PgJobs> {
    if (!nodeRunsPgBoss()) {
      throw new StowageError(
        'INVALID_CONFIG',
        `[server] database keeps jobs in PostgreSQL through pg-boss, which needs Node ${PG_BOSS_NODE} or newer; this is Node ${process.versions.node}: run stowage serve on Node 22 or 24 LTS, or remove [store.s3] and [server] database to run jobs in process`,
      );
    }
    const db = openPool(opts.url, { password: opts.password, max: opts.concurrency + 4 });
    const heartbeat = Math.max(10, opts.heartbeatSeconds ?? 30);
    let started: PgBoss | undefined;
    try {
      await migrate(db);
      const { PgBoss } = await import('pg-boss');
      const boss = new PgBoss({
        connectionString: opts.url,
        ...(opts.password !== undefined ? { password: opts.password } : {}),
        max: opts.concurrency + 3,
        useListenNotify: true,
        instanceName: opts.replica,
        // The monitor fails jobs whose heartbeat stopped; it runs this often, so a dead replica's job
        // is taken over within about two heartbeats.
        superviseIntervalSeconds: heartbeat,
        monitorIntervalSeconds: heartbeat,
        cronMonitorIntervalSeconds: 10,
        openTelemetry: { enabled: false },
      });
      boss.on('error', (e: Error) => opts.onWarning?.(`pg-boss: ${e.message}`));
      boss.on('warning', (w: { message: string }) => opts.onWarning?.(`pg-boss: ${w.message}`));
      const jobs = new PgJobs(db, boss, opts);
      await boss.start();
      started = boss;
      await jobs.prepare(heartbeat);
      return jobs;
    } catch (e) {
      // A start that got halfway (queues or LISTEN failing) must not leave pg-boss's timers running.
      await started?.stop({ graceful: false, close: true }).catch(() => {});
      await db.pool.end().catch(() => {});
      throw dbFailure(`the job system at ${db.description}`, e, 'starting');
    }
  }

  private async prepare(heartbeat: number): Promise<void> {
    const queueOptions = {
      retryLimit: MAX_ATTEMPTS,
      retryDelay: 1,
      heartbeatSeconds: heartbeat,
      // A long pull is alive while its heartbeat is; this only bounds one that hangs with it.
      expireInSeconds: 23 * 3600,
      notify: true,
    };
    for (const name of [this.queue, this.scheduleQueue]) {
      if (await this.boss.getQueue(name)) await this.boss.updateQueue(name, queueOptions);
      else await this.boss.createQueue(name, queueOptions);
    }
    await this.listen();
    await this.boss.work<{ id: string }>(
      this.queue,
      // Polled as well as notified: a retried job (its replica gone) sends no notification.
      {
        localConcurrency: this.opts.concurrency,
        batchSize: 1,
        pollingIntervalSeconds: 2,
        notifyPollingIntervalSeconds: 2,
      },
      async ([job]) => {
        if (job) await this.deliver(job.data.id, job.signal);
      },
    );
    await this.boss.work<{ job: string }>(
      this.scheduleQueue,
      { pollingIntervalSeconds: 2, notifyPollingIntervalSeconds: 2 },
      async ([job]) => {
        if (!job) return;
        await this.submit('sync', { jobs: [job.data.job] }, 'schedule', syncKey([job.data.job]));
      },
    );
    this.backstop = setInterval(() => {
      for (const set of this.watchers.values()) for (const w of set) this.catchUp(w);
    }, BACKSTOP_MS);
    this.backstop.unref();
  }

  /** One connection of this replica's LISTENs: new events for subscribers, cancels for running jobs. */
  private async listen(): Promise<void> {
    const client = await this.db.pool.connect();
    client.on('notification', (n) => this.notified(n.channel, n.payload ?? ''));
    client.on('error', () => {
      // The backstop keeps subscribers going meanwhile; reconnect for cancels and prompt events.
      client.release(true);
      this.listener = undefined;
      this.relisten();
    });
    await client.query(`listen ${EVENTS_CHANNEL}`);
    await client.query(`listen ${CANCEL_CHANNEL}`);
    this.listener = client;
  }

  /** Listens again once the database is back: tried every 2 s for as long as this replica runs. */
  private relisten(): void {
    if (!this.accepting) return;
    setTimeout(() => void this.listen().catch(() => this.relisten()), 2000).unref();
  }

  private probed: { at: number; why: Promise<string | undefined> } | undefined;

  async unavailable(): Promise<string | undefined> {
    const now = Date.now();
    if (!this.probed || now - this.probed.at > PROBE_MS) {
      this.probed = {
        at: now,
        why: this.db.pool.query('select 1').then(
          () => undefined,
          // Anonymous callers read this: the database is not named.
          () => 'its PostgreSQL database is unreachable; it takes no jobs until the database is back',
        ),
      };
    }
    return this.probed.why;
  }

  private notified(channel: string, id: string): void {
    if (channel === CANCEL_CHANNEL) {
      const r = this.running.get(id);
      if (r && !r.reason) {
        r.reason = 'cancel';
        r.controller.abort();
      }
    } else {
      for (const w of this.watchers.get(id) ?? []) this.catchUp(w);
    }
  }

  async submit(
    kind: JobKind,
    request: unknown,
    requestedBy: string,
    key?: string,
  ): Promise<{ job: Job; shared: boolean }> {
    if (!this.accepting)
      throw new StowageError('UNAVAILABLE', 'the service is shutting down; try again later');
    const c = await this.db.pool.connect();
    try {
      await c.query('begin');
      if (key) {
        const existing = await this.activeByKey(c, key);
        if (existing) {
          await c.query('commit');
          return { job: existing, shared: true };
        }
      }
      const queued = await c.query<{ n: string }>(
        `select count(*) as n from stowage_jobs where store = $1 and state = 'queued'`,
        [this.opts.store],
      );
      if (Number(queued.rows[0]!.n) >= this.opts.maxQueued) {
        throw new StowageError(
          'RATE_LIMITED',
          `${queued.rows[0]!.n} jobs are waiting already (server.max-queued); try again when some have finished`,
        );
      }
      const id = `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
      const progress: JobProgress = { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 };
      // A replica submitting the same key at the same moment wins the unique index; this one shares.
      const inserted = await c.query<JobRow>(
        `insert into stowage_jobs (store, id, kind, state, request, requested_by, key, created_at, progress)
         values ($1, $2, $3, 'queued', $4, $5, $6, now(), $7)
         on conflict (store, key) where state in ('queued', 'running') do nothing returning *`,
        [this.opts.store, id, kind, JSON.stringify(request), requestedBy, key ?? null, progress],
      );
      const row = inserted.rows[0];
      if (!row) {
        const existing = key ? await this.activeByKey(c, key) : undefined;
        await c.query('commit');
        if (!existing) throw new StowageError('INTERNAL', 'a job with this key came and went; try again');
        return { job: existing, shared: true };
      }
      await c.query(
        `insert into stowage_job_events (job_id, seq, type, data) values ($1, 1, 'state', '{"state":"queued"}')`,
        [id],
      );
      // The queue message commits with the row: a job is never listed without being delivered.
      await this.boss.send(
        this.queue,
        { id },
        { db: { executeSql: (text, values) => c.query(text, values) } },
      );
      await c.query('commit');
      const job = toJob(row);
      this.opts.onChange?.(job);
      return { job, shared: false };
    } catch (e) {
      await c.query('rollback').catch(() => {});
      throw dbFailure(this.what, e, 'queueing a job');
    } finally {
      c.release();
    }
  }

  private async activeByKey(c: pg.PoolClient, key: string): Promise<Job | undefined> {
    const r = await c.query<JobRow>(
      `select * from stowage_jobs where store = $1 and key = $2 and state in ('queued', 'running')`,
      [this.opts.store, key],
    );
    return r.rows[0] ? toJob(r.rows[0]) : undefined;
  }

  async get(id: string): Promise<Job | undefined> {
    const r = await this.query<JobRow>('select * from stowage_jobs where store = $1 and id = $2', [
      this.opts.store,
      id,
    ]);
    return r.rows[0] ? toJob(r.rows[0]) : undefined;
  }

  async list(filter: JobFilter = {}): Promise<Job[]> {
    const r = await this.query<JobRow>(
      `select * from stowage_jobs where store = $1 and ($2::text is null or kind = $2)
       and ($3::text is null or state = $3) order by created_at desc, id desc limit $4`,
      [this.opts.store, filter.kind ?? null, filter.state ?? null, filter.limit ?? this.opts.keep],
    );
    return r.rows.map(toJob);
  }

  async counts(): Promise<Record<JobKind, Record<JobState, number>>> {
    const out = emptyCounts();
    const r = await this.query<{ kind: JobKind; state: JobState; n: string }>(
      'select kind, state, count(*) as n from stowage_jobs where store = $1 group by kind, state',
      [this.opts.store],
    );
    for (const row of r.rows) if (out[row.kind]) out[row.kind][row.state] = Number(row.n);
    return out;
  }

  /** A queued job ends here; a running one is told (NOTIFY) and ends on its replica once cleaned up. */
  async cancel(id: string): Promise<Job> {
    const job = await this.get(id);
    if (!job) throw new StowageError('NOT_FOUND', `no job ${id}`);
    if (TERMINAL.has(job.state)) return job;
    if (job.state === 'queued') {
      const ended = await this.end(job.id, undefined, 'canceled', undefined, {
        code: 'ABORTED',
        message: 'canceled before it started',
      });
      if (ended) return ended;
    }
    await this.query('select pg_notify($1, $2)', [CANCEL_CHANNEL, id]);
    return (await this.get(id)) ?? job;
  }

  async subscribe(
    id: string,
    from: number,
    listener: (e: JobEvent) => void,
    onEnd: () => void,
  ): Promise<() => void> {
    const job = await this.get(id);
    if (!job) throw new StowageError('NOT_FOUND', `no job ${id}`);
    const w: Watcher = { id, last: from, listener, onEnd, ended: false, reading: Promise.resolve() };
    const set = this.watchers.get(id) ?? new Set();
    this.watchers.set(id, set);
    set.add(w);
    this.catchUp(w);
    await w.reading;
    return () => this.unwatch(w);
  }

  private unwatch(w: Watcher): void {
    const set = this.watchers.get(w.id);
    set?.delete(w);
    if (set?.size === 0) this.watchers.delete(w.id);
  }

  /** Reads a subscriber's events past the last it had, in order; the end event ends it. */
  private catchUp(w: Watcher): void {
    w.reading = w.reading.then(async () => {
      if (w.ended) return;
      const r = await this.query<JobEvent>(
        'select seq, type, data from stowage_job_events where job_id = $1 and seq > $2 order by seq',
        [w.id, w.last],
      ).catch(() => undefined);
      for (const e of r?.rows ?? []) {
        w.last = e.seq;
        w.listener(e);
        if (e.type === 'end') {
          w.ended = true;
          this.unwatch(w);
          w.onEnd();
          return;
        }
      }
    });
  }

  /** pg-boss fires the schedule queue once per slot across replicas; its worker queues the sync. */
  async schedule(schedules: Schedule[], onError: (job: string, e: Error) => void): Promise<void> {
    const wanted = new Set(schedules.map((s) => s.job));
    for (const s of await this.boss.getSchedules(this.scheduleQueue)) {
      // Schedules this configuration no longer has (replicas share one stowage.toml).
      if (s.key && !wanted.has(s.key)) await this.boss.unschedule(this.scheduleQueue, s.key);
    }
    for (const s of schedules) {
      try {
        await this.boss.schedule(this.scheduleQueue, s.cron, { job: s.job }, { key: s.job });
      } catch (e) {
        onError(s.job, e as Error);
      }
    }
  }

  /**
   * Stops taking jobs and aborts this replica's running ones, which go back to the queue for the
   * other replicas (queued ones stay queued: they are not this replica's).
   */
  async shutdown(): Promise<void> {
    this.accepting = false;
    clearInterval(this.backstop);
    for (const r of this.running.values()) {
      if (!r.reason) r.reason = 'stopping';
      r.controller.abort();
    }
    await this.boss.stop({ graceful: true, timeout: 30_000, close: true });
    this.listener?.release(true);
    this.listener = undefined;
    await this.db.pool.end();
  }

  /** A delivery from the queue: claims the job, runs it, records its end. */
  private async deliver(id: string, lost: AbortSignal): Promise<void> {
    // Stopping: the delivery fails, and pg-boss gives it to another replica.
    if (!this.accepting) throw new StowageError('UNAVAILABLE', 'this replica is stopping');
    const claimed = await this.query<JobRow>(
      `update stowage_jobs set state = 'running', replica = $3, attempts = attempts + 1,
         started_at = coalesce(started_at, now())
       where store = $1 and id = $2 and state in ('queued', 'running') returning *`,
      [this.opts.store, id, this.opts.replica],
    );
    const row = claimed.rows[0];
    if (!row) return; // Canceled while queued, or already ended.
    const job = toJob(row);
    const vanished = row.attempts > 1 ? await this.lostReplicas(id) : [];
    await this.releaseLeasesOf(row, vanished.at(-1));
    const seq = await this.query<{ n: number | null }>(
      'select max(seq) as n from stowage_job_events where job_id = $1',
      [id],
    );
    const r: Running = {
      job,
      attempt: row.attempts,
      controller: new AbortController(),
      seq: seq.rows[0]?.n ?? 0,
      stored: seq.rows[0]?.n ?? 0,
      pending: [],
      writing: Promise.resolve(),
    };
    const given = giveUp(row.attempts, vanished);
    if (given) {
      await this.finish(r, 'failed', undefined, { code: 'INTERRUPTED', message: given });
      return;
    }
    this.running.set(id, r);
    const onLost = () => r.controller.abort();
    lost.addEventListener('abort', onLost);
    try {
      this.emit(r, 'state', {
        state: 'running',
        replica: this.opts.replica,
        ...(row.attempts > 1 ? { attempt: row.attempts, resumed: true } : {}),
      });
      this.opts.onChange?.(job);
      await this.run(r);
    } finally {
      lost.removeEventListener('abort', onLost);
      this.running.delete(id);
    }
  }

  /**
   * The replicas that stopped beating while running this job, oldest first: a 'running' state event
   * that no 'queued' one follows (a replica that stops gracefully hands the job back with one).
   */
  private async lostReplicas(id: string): Promise<string[]> {
    const states = await this.query<{ state: string; replica: string | null }>(
      `select data->>'state' as state, data->>'replica' as replica from stowage_job_events
       where job_id = $1 and type = 'state' order by seq`,
      [id],
    );
    return lostHolders(states.rows);
  }

  /**
   * A job taken over from a replica that stopped beating: that replica is gone, so the blob leases it
   * held (src/store/blob-leases.ts) are dropped now rather than left to expire, and this replica can
   * write those blobs at once.
   */
  private async releaseLeasesOf(row: JobRow, gone: string | undefined): Promise<void> {
    if (gone && gone !== row.replica) {
      await this.query('delete from stowage_blob_leases where replica = $1', [gone]).catch(() => {});
    }
  }

  private async run(r: Running): Promise<void> {
    const { job, controller } = r;
    try {
      const result = await this.opts.runners[job.kind]({
        job,
        signal: controller.signal,
        emit: (type, data) => this.emit(r, type, data),
        progress: (p) => {
          Object.assign(job.progress, p);
          this.emit(r, 'progress', { ...job.progress });
        },
      });
      if (controller.signal.aborted) await this.aborted(r);
      else await this.finish(r, 'succeeded', result);
    } catch (e) {
      if (controller.signal.aborted) {
        await this.aborted(r);
      } else {
        const err = toStowageError(e);
        const result = e instanceof JobFailure ? e.result : undefined;
        await this.finish(r, 'failed', result, { code: err.code, message: err.message });
      }
    }
  }

  /** Canceled: the job ends. This replica stopping or losing the job: it goes back to the queue. */
  private async aborted(r: Running): Promise<void> {
    if (r.reason === 'cancel') {
      await this.finish(r, 'canceled', undefined, {
        code: 'ABORTED',
        message: 'canceled; nothing partial was left',
      });
      return;
    }
    await this.flush(r);
    await this.query(
      `update stowage_jobs set state = 'queued', replica = null, progress = $4
       where store = $1 and id = $2 and attempts = $3 and state = 'running'`,
      [this.opts.store, r.job.id, r.attempt, r.job.progress],
    ).catch(() => {});
    this.emit(r, 'state', { state: 'queued', reason: 'the replica running it stopped; another takes it' });
    await this.flush(r);
    // Failing the delivery makes pg-boss retry it: another replica (or this one, restarted) takes it.
    throw new StowageError('UNAVAILABLE', 'this replica stopped while running the job');
  }

  /**
   * Records a job's end. The database may be gone for a moment (a restart): the end is tried again
   * for a while rather than lost, so the job is not run a second time for nothing once it is back.
   */
  private async finish(r: Running, state: JobState, result?: unknown, error?: Job['error']): Promise<void> {
    const until = Date.now() + END_RETRY_MS;
    for (;;) {
      try {
        await this.flush(r);
        await this.end(r.job.id, r, state, result, error);
        return;
      } catch (e) {
        if (Date.now() > until || !this.accepting) throw e;
        this.opts.onWarning?.(`${toStowageError(e).message}; trying again to record job ${r.job.id}'s end`);
        await new Promise((ok) => setTimeout(ok, 2000));
      }
    }
  }

  /**
   * Ends a job in one statement (only if it is still queued, or running in this attempt): a job
   * another replica has since taken over is left to it. Writes the state and end events.
   */
  private async end(
    id: string,
    r: Running | undefined,
    state: JobState,
    result?: unknown,
    error?: Job['error'],
  ): Promise<Job | undefined> {
    const redact = this.opts.redact;
    const res = result !== undefined && redact ? JSON.parse(redact(JSON.stringify(result))) : result;
    const err = error && redact ? { ...error, message: redact(error.message) } : error;
    const c = await this.db.pool.connect();
    try {
      await c.query('begin');
      const ended = await c.query<JobRow>(
        `update stowage_jobs set state = $3, finished_at = now(), result = $4, error = $5,
           progress = coalesce($6, progress)
         where store = $1 and id = $2 and (($7::int is null and state = 'queued')
           or ($7::int is not null and state = 'running' and attempts = $7)) returning *`,
        [
          this.opts.store,
          id,
          state,
          res === undefined ? null : JSON.stringify(res),
          err ?? null,
          r ? r.job.progress : null,
          r ? r.attempt : null,
        ],
      );
      const row = ended.rows[0];
      if (!row) {
        await c.query('rollback');
        return undefined;
      }
      const job = toJob(row);
      const last = await c.query<{ n: number | null }>(
        'select max(seq) as n from stowage_job_events where job_id = $1',
        [id],
      );
      const n = last.rows[0]?.n ?? 0;
      await c.query(
        `insert into stowage_job_events (job_id, seq, type, data) values ($1, $2, 'state', $3), ($1, $4, 'end', $5)`,
        [id, n + 1, { state }, n + 2, summary(job)],
      );
      await c.query('select pg_notify($1, $2)', [EVENTS_CHANNEL, id]);
      await c.query('commit');
      this.opts.onChange?.(job);
      await this.trim().catch(() => {});
      return job;
    } catch (e) {
      await c.query('rollback').catch(() => {});
      throw dbFailure(this.what, e, 'ending a job');
    } finally {
      c.release();
    }
  }

  /** Drops the oldest finished jobs beyond `keep` (their events go with them). */
  private async trim(): Promise<void> {
    await this.query(
      `delete from stowage_jobs where id in (select id from stowage_jobs where store = $1
         and state in ('succeeded', 'failed', 'canceled') order by finished_at desc offset $2)`,
      [this.opts.store, this.opts.keep],
    );
  }

  private emit(r: Running, type: string, data: unknown): void {
    const e: JobEvent = { seq: ++r.seq, type, data };
    const last = r.pending.at(-1);
    // Progress is a running total: one not yet written is replaced by the next.
    if (type === 'progress' && last?.type === 'progress') r.pending[r.pending.length - 1] = e;
    else if (type !== 'progress' || r.stored + r.pending.length < MAX_EVENTS) r.pending.push(e);
    if (type === 'state') void this.flush(r).catch(() => {});
    else r.timer ??= setTimeout(() => void this.flush(r).catch(() => {}), FLUSH_MS);
  }

  /** Writes a running job's pending events and progress, then wakes the subscribers. */
  private flush(r: Running): Promise<void> {
    clearTimeout(r.timer);
    r.timer = undefined;
    // A write that failed (the database away) leaves its events pending for the next one.
    r.writing = r.writing
      .catch(() => {})
      .then(async () => {
        const events = r.pending.splice(0);
        if (events.length === 0) return;
        await this.query(
          `with e as (insert into stowage_job_events (job_id, seq, type, data)
           select $1, * from unnest($2::int[], $3::text[], $4::jsonb[]) on conflict do nothing)
         update stowage_jobs set progress = $5 where id = $1 and attempts = $6`,
          [
            r.job.id,
            events.map((e) => e.seq),
            events.map((e) => e.type),
            events.map((e) => JSON.stringify(e.data ?? null)),
            r.job.progress,
            r.attempt,
          ],
        ).catch((e) => {
          r.pending.unshift(...events);
          throw e;
        });
        r.stored += events.length;
        await this.query('select pg_notify($1, $2)', [EVENTS_CHANNEL, r.job.id]);
      });
    return r.writing;
  }

  private async query<R extends pg.QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>> {
    try {
      return await this.db.pool.query<R>(text, values);
    } catch (e) {
      throw dbFailure(this.what, e, 'reading or writing jobs');
    }
  }
}

function toJob(row: JobRow): Job {
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    request: row.request,
    requestedBy: row.requested_by,
    createdAt: row.created_at.toISOString(),
    ...(row.started_at ? { startedAt: row.started_at.toISOString() } : {}),
    ...(row.finished_at ? { finishedAt: row.finished_at.toISOString() } : {}),
    progress: row.progress,
    ...(row.result !== null && row.result !== undefined ? { result: row.result } : {}),
    ...(row.error ? { error: row.error } : {}),
    ...(row.replica ? { replica: row.replica } : {}),
  };
}

/** Of a job's state events in order, the holders that no 'queued' (a graceful hand-back) followed. */
export function lostHolders(states: readonly { state: string; replica: string | null }[]): string[] {
  const lost: string[] = [];
  let holder: string | undefined;
  for (const s of states) {
    if (s.state === 'running') {
      if (holder !== undefined) lost.push(holder);
      holder = s.replica ?? '?';
    } else {
      holder = undefined;
    }
  }
  if (holder !== undefined) lost.push(holder);
  return lost;
}

/** Why a job is not run again on this delivery, or undefined to run it. */
export function giveUp(attempts: number, lost: readonly string[]): string | undefined {
  if (lost.length >= MAX_LOST) {
    return `the replicas running this job (${lost.join(', ')}) stopped without finishing it ${lost.length} times; it is not started again, since it may be what stops them: read those replicas' logs, then start it again`;
  }
  if (attempts > MAX_ATTEMPTS)
    return `the replicas running this job stopped ${MAX_ATTEMPTS} times; start it again`;
  return undefined;
}
