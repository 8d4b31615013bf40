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
import type { JobWithMetadata, PgBoss } from 'pg-boss';
import { type Database, dbFailure, Listener, migrate, openPool, Probe } from '../db/postgres.js';
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
  progressReporter,
  type Schedule,
  syncKey,
  TERMINAL,
} from './job-system.js';
import { ensureQueue, newBoss } from './pg-boss.js';
import { endJob, trimJobs } from './pg-job-end.js';
import {
  CANCEL_CHANNEL,
  cronSlot,
  EVENTS_CHANNEL,
  giveUp,
  type JobRow,
  lostReplicas,
  nodeRunsPgBoss,
  PG_BOSS_NODE,
  scheduledAlready,
  toJob,
} from './pg-job-rows.js';
import { JobWatchers } from './pg-job-watchers.js';
import type { PgJobsOptions } from './pg-jobs-options.js';

export type { PgJobsOptions } from './pg-jobs-options.js';

import { RunningJob } from './pg-running-job.js';

/** How long a job's end is retried while the database is unreachable (a restart, a failover). */
const END_RETRY_MS = 120_000;

export class PgJobs implements JobSystem {
  readonly mode = 'postgres' as const;
  private readonly running = new Map<string, RunningJob>();
  /** Subscribers of jobs' events (SSE), read from the events table. */
  private readonly watchers: JobWatchers;
  /** This replica's LISTEN connection: new events for subscribers, cancels for running jobs. */
  private readonly listener: Listener;
  private readonly probe: Probe;
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
    this.watchers = new JobWatchers((text, values) => this.query<JobEvent>(text, values));
    this.listener = new Listener(db, [EVENTS_CHANNEL, CANCEL_CHANNEL], (channel, id) =>
      this.notified(channel, id),
    );
    this.probe = new Probe(db);
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
      const boss = await newBoss(opts, heartbeat);
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
    for (const name of [this.queue, this.scheduleQueue]) await ensureQueue(this.boss, name, heartbeat);
    await this.listener.start();
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
      { pollingIntervalSeconds: 2, notifyPollingIntervalSeconds: 2, includeMetadata: true },
      async ([job]) => {
        if (!job) return;
        // (includeMetadata gives createdOn; the explicit data type keeps the overload from seeing it.)
        const slot = cronSlot((job as JobWithMetadata<{ job: string }>).createdOn);
        const query = (text: string, values: unknown[]) => this.query(text, values);
        if (await scheduledAlready(query, this.opts.store, job.data.job, slot)) return;
        await this.submit('sync', { jobs: [job.data.job], slot }, 'schedule', syncKey([job.data.job]));
      },
    );
  }

  async unavailable(): Promise<string | undefined> {
    // Anonymous callers read this (/readyz): the database is not named.
    return (await this.probe.reachable())
      ? undefined
      : 'its PostgreSQL database is unreachable; it takes no jobs until the database is back';
  }

  private notified(channel: string, id: string): void {
    if (channel === CANCEL_CHANNEL) {
      const r = this.running.get(id);
      if (r && !r.reason) {
        r.reason = 'cancel';
        r.controller.abort();
      }
    } else {
      this.watchers.wake(id);
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
    return this.watchers.subscribe(id, from, listener, onEnd);
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
    this.watchers.close();
    for (const r of this.running.values()) {
      if (!r.reason) r.reason = 'stopping';
      r.controller.abort();
    }
    await this.boss.stop({ graceful: true, timeout: 30_000, close: true });
    this.listener.stop();
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
    const vanished =
      row.attempts > 1 ? await lostReplicas((text, values) => this.query(text, values), id) : [];
    await this.releaseLeasesOf(row, vanished.at(-1));
    const seq = await this.query<{ n: number | null }>(
      'select max(seq) as n from stowage_job_events where job_id = $1',
      [id],
    );
    const r = new RunningJob(job, row.attempts, seq.rows[0]?.n ?? 0, (text, values) =>
      this.query(text, values),
    );
    const given = giveUp(row.attempts, vanished);
    if (given) {
      await this.finish(r, 'failed', undefined, { code: 'INTERRUPTED', message: given });
      return;
    }
    this.running.set(id, r);
    const onLost = () => r.controller.abort();
    lost.addEventListener('abort', onLost);
    try {
      r.emit('state', {
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
   * A job taken over from a replica that stopped beating: that replica is gone, so the blob leases it
   * held (src/store/blob-leases.ts) are dropped now rather than left to expire, and this replica can
   * write those blobs at once.
   */
  private async releaseLeasesOf(row: JobRow, gone: string | undefined): Promise<void> {
    if (gone && gone !== row.replica) {
      await this.query('delete from stowage_blob_leases where replica = $1', [gone]).catch(() => {});
    }
  }

  private async run(r: RunningJob): Promise<void> {
    const { job, controller } = r;
    try {
      const result = await this.opts.runners[job.kind]({
        job,
        signal: controller.signal,
        emit: (type, data) => r.emit(type, data),
        progress: progressReporter(job, (type, data) => r.emit(type, data)),
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
  private async aborted(r: RunningJob): Promise<void> {
    if (r.reason === 'cancel') {
      await this.finish(r, 'canceled', undefined, {
        code: 'ABORTED',
        message: 'canceled; nothing partial was left',
      });
      return;
    }
    await r.flush();
    await this.query(
      `update stowage_jobs set state = 'queued', replica = null, progress = $4
       where store = $1 and id = $2 and attempts = $3 and state = 'running'`,
      [this.opts.store, r.job.id, r.attempt, r.job.progress],
    ).catch(() => {});
    r.emit('state', { state: 'queued', reason: 'the replica running it stopped; another takes it' });
    await r.flush();
    // Failing the delivery makes pg-boss retry it: another replica (or this one, restarted) takes it.
    throw new StowageError('UNAVAILABLE', 'this replica stopped while running the job');
  }

  /**
   * Records a job's end. The database may be gone for a moment (a restart): the end is tried again
   * for a while rather than lost, so the job is not run a second time for nothing once it is back.
   */
  private async finish(
    r: RunningJob,
    state: JobState,
    result?: unknown,
    error?: Job['error'],
  ): Promise<void> {
    const until = Date.now() + END_RETRY_MS;
    for (;;) {
      try {
        await r.flush();
        await this.end(r.job.id, r, state, result, error);
        return;
      } catch (e) {
        if (Date.now() > until || !this.accepting) throw e;
        this.opts.onWarning?.(`${toStowageError(e).message}; trying again to record job ${r.job.id}'s end`);
        await new Promise((ok) => setTimeout(ok, 2000));
      }
    }
  }

  /** Ends a job (see endJob), and tells the service; older finished jobs beyond `keep` go. */
  private async end(
    id: string,
    r: RunningJob | undefined,
    state: JobState,
    result?: unknown,
    error?: Job['error'],
  ): Promise<Job | undefined> {
    const job = await endJob(this.db, this.what, {
      store: this.opts.store,
      id,
      attempt: r?.attempt,
      progress: r?.job.progress,
      state,
      result,
      error,
      redact: this.opts.redact,
    });
    if (!job) return undefined;
    this.opts.onChange?.(job);
    await trimJobs(this.db, this.what, this.opts.store, this.opts.keep).catch(() => {});
    return job;
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
