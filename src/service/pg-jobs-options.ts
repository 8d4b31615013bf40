/** What a replica's PostgreSQL job system is opened with (pg-jobs.ts). */
import type { Job, JobKind, Runner } from './job-system.js';

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
