/**
 * What pg-jobs.ts keeps in PostgreSQL, as rows, and the rules it applies to them that need no database:
 * a row as the API's Job, which replicas vanished while running a job, and when a job is given up.
 */
import type pg from 'pg';
import type { Job, JobKind, JobProgress, JobState } from './job-system.js';

/** NOTIFY channels: a job's events were written; a job is to be canceled. */
export const EVENTS_CHANNEL = 'stowage_job_events';
export const CANCEL_CHANNEL = 'stowage_job_cancel';

/** The oldest Node pg-boss runs on. */
export const PG_BOSS_NODE = '22.12.0';

/** Deliveries of one job before it is given up (each replica death or stop costs one). */
export const MAX_ATTEMPTS = 5;
/**
 * Replicas that may die running one job before it is given up. A job whose replica vanished twice
 * (no goodbye: killed, out of memory, a crash) may be what kills them: a third would be the next to go.
 */
const MAX_LOST = 2;

export interface JobRow {
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

/** Whether this Node runs pg-boss. */
export function nodeRunsPgBoss(version = process.versions.node): boolean {
  const [a, b] = version.split('.').map(Number) as [number, number];
  const [x, y] = PG_BOSS_NODE.split('.').map(Number) as [number, number];
  return a > x || (a === x && b >= y);
}

export function toJob(row: JobRow): Job {
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

/**
 * The replicas that stopped beating while running a job, oldest first: a 'running' state event that
 * no 'queued' one follows (a replica that stops gracefully hands the job back with one).
 */
export async function lostReplicas(
  query: (
    text: string,
    values: unknown[],
  ) => Promise<pg.QueryResult<{ state: string; replica: string | null }>>,
  id: string,
): Promise<string[]> {
  const states = await query(
    `select data->>'state' as state, data->>'replica' as replica from stowage_job_events
     where job_id = $1 and type = 'state' order by seq`,
    [id],
  );
  return lostHolders(states.rows);
}

/**
 * The cron slot a schedule's message is for: pg-boss makes the message when the slot comes, so its
 * creation minute. Recorded on the sync it queues, so a delivery retried, or a slot delivered late into
 * the next minute, is told apart, and a slot never queues two syncs.
 */
export function cronSlot(createdOn: Date): string {
  return new Date(Math.floor(createdOn.getTime() / 60_000) * 60_000).toISOString();
}

/** Whether a sync of this job was queued for this cron slot already (by any replica, in any state). */
export async function scheduledAlready(
  query: (text: string, values: unknown[]) => Promise<pg.QueryResult>,
  store: string,
  name: string,
  slot: string,
): Promise<boolean> {
  const r = await query(
    `select 1 from stowage_jobs where store = $1 and requested_by = 'schedule'
       and request->>'slot' = $2 and request->'jobs' = $3::jsonb limit 1`,
    [store, slot, JSON.stringify([name])],
  );
  return (r.rowCount ?? 0) > 0;
}
