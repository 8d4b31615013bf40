/**
 * A job's end in PostgreSQL: its row and its last two events (state, end) in one transaction, so a
 * subscriber on any replica sees the end exactly when the API does.
 */
import { type Database, dbFailure } from '../db/postgres.js';
import { type Job, type JobProgress, type JobState, summary } from './job-system.js';
import { EVENTS_CHANNEL, type JobRow, toJob } from './pg-job-rows.js';

export interface JobEnd {
  store: string;
  id: string;
  /** The attempt ending it (undefined: a job still queued, canceled before any replica took it). */
  attempt?: number | undefined;
  progress?: JobProgress | undefined;
  state: JobState;
  result?: unknown;
  error?: Job['error'] | undefined;
  /** Takes server paths out of what is written (the result and the error are shown to API callers). */
  redact?: ((text: string) => string) | undefined;
}

/**
 * Ends a job in one statement (only if it is still queued, or running in this attempt): a job
 * another replica has since taken over is left to it, and undefined returned. Writes the state and
 * end events and notifies the subscribers.
 */
export async function endJob(db: Database, what: string, e: JobEnd): Promise<Job | undefined> {
  const redact = e.redact;
  const res = e.result !== undefined && redact ? JSON.parse(redact(JSON.stringify(e.result))) : e.result;
  const err = e.error && redact ? { ...e.error, message: redact(e.error.message) } : e.error;
  const c = await db.pool.connect();
  try {
    await c.query('begin');
    const ended = await c.query<JobRow>(
      `update stowage_jobs set state = $3, finished_at = now(), result = $4, error = $5,
         progress = coalesce($6, progress)
       where store = $1 and id = $2 and (($7::int is null and state = 'queued')
         or ($7::int is not null and state = 'running' and attempts = $7)) returning *`,
      [
        e.store,
        e.id,
        e.state,
        res === undefined ? null : JSON.stringify(res),
        err ?? null,
        e.progress ?? null,
        e.attempt ?? null,
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
      [e.id],
    );
    const n = last.rows[0]?.n ?? 0;
    await c.query(
      `insert into stowage_job_events (job_id, seq, type, data) values ($1, $2, 'state', $3), ($1, $4, 'end', $5)`,
      [e.id, n + 1, { state: e.state }, n + 2, summary(job)],
    );
    await c.query('select pg_notify($1, $2)', [EVENTS_CHANNEL, e.id]);
    await c.query('commit');
    return job;
  } catch (x) {
    await c.query('rollback').catch(() => {});
    throw dbFailure(what, x, 'ending a job');
  } finally {
    c.release();
  }
}

/** Drops the oldest finished jobs of a store beyond `keep` (their events go with them). */
export async function trimJobs(db: Database, what: string, store: string, keep: number): Promise<void> {
  try {
    await db.pool.query(
      `delete from stowage_jobs where id in (select id from stowage_jobs where store = $1
         and state in ('succeeded', 'failed', 'canceled') order by finished_at desc offset $2)`,
      [store, keep],
    );
  } catch (x) {
    throw dbFailure(what, x, 'trimming the job history');
  }
}
