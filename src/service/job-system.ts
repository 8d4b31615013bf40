/**
 * The service's jobs as the API, the console and the metrics see them, whoever runs them: the
 * in-process queue (in-process-jobs.ts) on one machine, PostgreSQL (pg-jobs.ts) for replicas. The
 * job, its events, the runners that do the work, and the JobSystem both implement.
 */
import { RateWindow } from '../core/rate.js';
import { StowageError } from '../errors.js';

export type JobKind = 'pull' | 'push' | 'sync' | 'bundle';

export const JOB_KINDS: readonly JobKind[] = ['pull', 'push', 'sync', 'bundle'];

/** The API scope a kind of job needs (to start it, and to cancel it): a bundle is an operator's sync. */
export function scopeOf(kind: JobKind): 'pull' | 'push' | 'sync' {
  return kind === 'bundle' ? 'sync' : kind;
}

/** A job that failed with a result worth keeping (a sync with failed tags): the job keeps it. */
export class JobFailure extends StowageError {
  constructor(
    message: string,
    readonly result: unknown,
  ) {
    super('REGISTRY', message);
  }
}
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';

export const TERMINAL: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'canceled']);

export interface JobProgress {
  blobs: number;
  blobsDone: number;
  bytes: number;
  bytesDone: number;
}

export interface Job {
  id: string;
  kind: JobKind;
  state: JobState;
  /** The request as accepted (validated; never holds credentials). */
  request: unknown;
  /** Who asked: the API token's name, or "schedule". */
  requestedBy: string;
  createdAt: string;
  startedAt?: string | undefined;
  finishedAt?: string | undefined;
  progress: JobProgress;
  result?: unknown;
  error?: { code: string; message: string } | undefined;
  /** The replica running it, or that last ran it (replicas sharing PostgreSQL only). */
  replica?: string | undefined;
}

export interface JobEvent {
  /** Sequence number within the job, from 1 (the SSE id). */
  seq: number;
  type: string;
  data: unknown;
}

/** What a runner gets: where to report, and the signal that cancels it. */
export interface JobRun {
  job: Job;
  signal: AbortSignal;
  emit: (type: string, data: unknown) => void;
  progress: (p: Partial<JobProgress>) => void;
}

export type Runner = (run: JobRun) => Promise<unknown>;

/**
 * A runner's `progress`, as both job systems give it: the job's totals updated, and a `progress` event
 * of them with the rate and time left (core/rate.ts, the fields `--progress=json` writes), so the console
 * and a client of the event stream read the same figures as the CLI.
 */
export function progressReporter(
  job: Job,
  emit: (type: string, data: unknown) => void,
  now?: () => number,
): JobRun['progress'] {
  const rate = new RateWindow(now);
  return (p) => {
    const before = job.progress.bytesDone;
    Object.assign(job.progress, p);
    if (job.progress.bytesDone !== before) rate.moved(job.progress.bytesDone);
    emit('progress', { ...job.progress, ...rate.figures(job.progress.bytes) });
  };
}

type Awaitable<T> = T | Promise<T>;

export interface JobFilter {
  kind?: JobKind | undefined;
  state?: JobState | undefined;
  /** At most this many (the newest). */
  limit?: number | undefined;
}

/** A sync job of stowage.toml that runs on a cron schedule. */
export interface Schedule {
  job: string;
  cron: string;
}

/**
 * What the API and the server ask of jobs, whichever system keeps them: the in-process JobManager
 * (one service, history in a file) or PgJobs (replicas sharing PostgreSQL).
 */
export interface JobSystem {
  /** For /readyz and the logs. */
  readonly mode: 'in-process' | 'postgres';
  submit(
    kind: JobKind,
    request: unknown,
    requestedBy: string,
    key?: string,
  ): Awaitable<{ job: Job; shared: boolean }>;
  get(id: string): Awaitable<Job | undefined>;
  /** Newest first. */
  list(filter?: JobFilter): Awaitable<Job[]>;
  counts(): Awaitable<Record<JobKind, Record<JobState, number>>>;
  cancel(id: string): Awaitable<Job>;
  subscribe(
    id: string,
    from: number,
    listener: (e: JobEvent) => void,
    onEnd: () => void,
  ): Awaitable<() => void>;
  /**
   * Why this replica cannot take or report jobs now (its database unreachable), for /readyz; undefined
   * when it can. Absent: always can (jobs in process).
   */
  unavailable?(): Promise<string | undefined>;
  /** Queues a sync of each scheduled job when its cron expression fires (once, across replicas). */
  schedule(schedules: Schedule[], onError: (job: string, e: Error) => void): Awaitable<void>;
  shutdown(): Promise<void>;
}

/** The key that makes identical sync requests share one job. */
export function syncKey(names: string[] | undefined): string {
  return `sync:${JSON.stringify(names ?? null)}`;
}

/** Zero counts for every kind and state. */
export function emptyCounts(): Record<JobKind, Record<JobState, number>> {
  const out = {} as Record<JobKind, Record<JobState, number>>;
  for (const k of JOB_KINDS) {
    out[k] = { queued: 0, running: 0, succeeded: 0, failed: 0, canceled: 0 };
  }
  return out;
}

/** What the end event and a history entry say about a job. */
export function summary(job: Job): Record<string, unknown> {
  return {
    id: job.id,
    state: job.state,
    ...(job.result !== undefined ? { result: job.result } : {}),
    ...(job.error ? { error: job.error } : {}),
  };
}
