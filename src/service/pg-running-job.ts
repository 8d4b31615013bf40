/**
 * A job this replica is running, and its events on their way to PostgreSQL: written in batches (a
 * state change at once, progress at most every FLUSH_MS, the newest total replacing one not yet
 * written), each batch with the job's progress in one statement, then a NOTIFY for the subscribers.
 */
import type pg from 'pg';
import type { Job, JobEvent } from './job-system.js';
import { EVENTS_CHANNEL } from './pg-job-rows.js';

/** Events stored per job; progress past this only updates the job's row. */
const MAX_EVENTS = 2000;
/** How often a running job's pending events are written (progress comes faster; the newest wins). */
const FLUSH_MS = 250;

type Query = (text: string, values: unknown[]) => Promise<pg.QueryResult>;

export class RunningJob {
  readonly controller = new AbortController();
  /** Why it was aborted: a cancel, or this replica stopping (the job goes back to the queue). */
  reason?: 'cancel' | 'stopping' | undefined;
  private seq: number;
  private stored: number;
  private pending: JobEvent[] = [];
  private timer?: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly job: Job,
    /** Which delivery of the job this is (1 for the first). */
    readonly attempt: number,
    /** The last event already stored (an earlier attempt's). */
    lastSeq: number,
    private readonly query: Query,
  ) {
    this.seq = lastSeq;
    this.stored = lastSeq;
  }

  emit(type: string, data: unknown): void {
    const e: JobEvent = { seq: ++this.seq, type, data };
    const last = this.pending.at(-1);
    // Progress is a running total: one not yet written is replaced by the next.
    if (type === 'progress' && last?.type === 'progress') this.pending[this.pending.length - 1] = e;
    else if (type !== 'progress' || this.stored + this.pending.length < MAX_EVENTS) this.pending.push(e);
    if (type === 'state') void this.flush().catch(() => {});
    else this.timer ??= setTimeout(() => void this.flush().catch(() => {}), FLUSH_MS);
  }

  /** Writes the pending events and progress, then wakes the subscribers. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    // A write that failed (the database away) leaves its events pending for the next one.
    this.writing = this.writing
      .catch(() => {})
      .then(async () => {
        const events = this.pending.splice(0);
        if (events.length === 0) return;
        await this.query(
          `with e as (insert into stowage_job_events (job_id, seq, type, data)
             select $1, * from unnest($2::int[], $3::text[], $4::jsonb[]) on conflict do nothing)
           update stowage_jobs set progress = $5 where id = $1 and attempts = $6`,
          [
            this.job.id,
            events.map((e) => e.seq),
            events.map((e) => e.type),
            events.map((e) => JSON.stringify(e.data ?? null)),
            this.job.progress,
            this.attempt,
          ],
        ).catch((e) => {
          this.pending.unshift(...events);
          throw e;
        });
        this.stored += events.length;
        await this.query('select pg_notify($1, $2)', [EVENTS_CHANNEL, this.job.id]);
      });
    return this.writing;
  }
}
