/**
 * pg-boss as pg-jobs.ts uses it: one instance per replica, and the queues it takes jobs from. pg-boss
 * needs Node 22.12 or newer and is an optional package: it is loaded here, only when asked for.
 */
import type { PgBoss } from 'pg-boss';
import { MAX_ATTEMPTS } from './pg-job-rows.js';

export interface BossOptions {
  url: string;
  password?: string | undefined;
  replica: string;
  concurrency: number;
  onWarning?: ((message: string) => void) | undefined;
}

/** A pg-boss instance for this replica (not started), its errors and warnings passed on as warnings. */
export async function newBoss(opts: BossOptions, heartbeat: number): Promise<PgBoss> {
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
  return boss;
}

/** Makes a queue, or brings an existing one's options up to date (a new heartbeat, say). */
export async function ensureQueue(boss: PgBoss, name: string, heartbeat: number): Promise<void> {
  const options = {
    retryLimit: MAX_ATTEMPTS,
    retryDelay: 1,
    heartbeatSeconds: heartbeat,
    // A long pull is alive while its heartbeat is; this only bounds one that hangs with it.
    expireInSeconds: 23 * 3600,
    notify: true,
  };
  if (await boss.getQueue(name)) await boss.updateQueue(name, options);
  else await boss.createQueue(name, options);
}
