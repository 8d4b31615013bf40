/**
 * What the replicated mode (issue 22) relies on from PostgreSQL, checked against the real server the
 * tests start: a session advisory lock is held by one connection at a time (the store's lock across
 * hosts, in place of the pid file), and is released when its connection dies (a replica killed with
 * SIGKILL leaves no lock behind); LISTEN/NOTIFY reaches another connection (job events across replicas).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningPostgres, startPostgres } from './harness/postgres.js';

let server: RunningPostgres;

beforeAll(async () => {
  server = await startPostgres();
}, 60_000);

afterAll(async () => {
  await server?.stop();
});

async function connect(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: server.url });
  await c.connect();
  return c;
}

const tryLock = async (c: pg.Client, key: number) =>
  (await c.query<{ ok: boolean }>('select pg_try_advisory_lock($1) as ok', [key])).rows[0]?.ok;

describe('PostgreSQL as the replicas need it', () => {
  it('holds an advisory lock for one connection, and frees it when that connection dies', async () => {
    const a = await connect();
    const b = await connect();
    try {
      expect(await tryLock(a, 42)).toBe(true);
      expect(await tryLock(b, 42)).toBe(false);
      // The holder's connection ends without unlocking (a killed replica): the lock goes with it.
      a.on('error', () => {});
      const pid = (await a.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid;
      await b.query('select pg_terminate_backend($1)', [pid]);
      let free = false;
      for (let i = 0; i < 50 && !free; i++) {
        free = (await tryLock(b, 42)) === true;
        if (!free) await new Promise((r) => setTimeout(r, 20));
      }
      expect(free).toBe(true);
    } finally {
      await a.end().catch(() => {});
      await b.end();
    }
  });

  it('delivers a NOTIFY to another connection that listens', async () => {
    const listener = await connect();
    const sender = await connect();
    try {
      await listener.query('listen stowage_jobs');
      const got = new Promise<string | undefined>((resolve) => {
        listener.on('notification', (n) => resolve(n.payload));
      });
      await sender.query("select pg_notify('stowage_jobs', 'job 3x-abc: progress')");
      expect(await got).toBe('job 3x-abc: progress');
    } finally {
      await listener.end();
      await sender.end();
    }
  });
});
