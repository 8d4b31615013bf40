/**
 * A real PostgreSQL (Debian's 15) on loopback for tests: initdb into a temporary directory, pg_ctl
 * start on a free port with its socket in that directory, trust authentication for 127.0.0.1 only.
 * As root, the server runs as the postgres user (it refuses root), the directory handed to it.
 */
import { access, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, run } from './processes.js';

export interface RunningPostgres {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  /** Stops the server (fast shutdown: clients are cut off), keeping its data, and starts it again. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  stop(): Promise<void>;
}

const BIN_DIRS = ['/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/local/bin', '/usr/bin'];

async function pgBin(name: string): Promise<string> {
  for (const dir of BIN_DIRS) {
    const p = join(dir, name);
    if (
      await access(p).then(
        () => true,
        () => false,
      )
    )
      return p;
  }
  throw new Error(`${name} not found (install Debian's postgresql)`);
}

/** Runs a PostgreSQL program, as the postgres user when this process is root. */
async function pg(name: string, args: string[]): Promise<void> {
  const bin = await pgBin(name);
  if (process.getuid?.() === 0) await run('runuser', ['-u', 'postgres', '--', bin, ...args]);
  else await run(bin, args);
}

export async function startPostgres(): Promise<RunningPostgres> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-pg-'));
  if (process.getuid?.() === 0) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const uid = Number(stdout.trim());
    const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
    await chown(dir, uid, gid);
  }
  const data = join(dir, 'data');
  const port = await freePort();
  const stop = async () => {
    await pg('pg_ctl', ['-D', data, 'stop', '-m', 'immediate', '-s']).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  const start = () =>
    pg('pg_ctl', [
      '-D',
      data,
      '-w',
      '-s',
      '-l',
      join(dir, 'log'),
      '-o',
      `-k ${dir} -p ${port} -c listen_addresses=127.0.0.1 -c fsync=off`,
      'start',
    ]);
  const pause = () => pg('pg_ctl', ['-D', data, 'stop', '-m', 'fast', '-w', '-s']);
  try {
    await pg('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
    await start();
    return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, port, pause, resume: start, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
