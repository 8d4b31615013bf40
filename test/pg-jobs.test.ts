/**
 * Jobs shared by replicas (src/service/pg-jobs.ts) on a real PostgreSQL, three PgJobs in this process
 * standing for three replicas, with runners of the test's own: a job submitted on one is listed by the
 * others and its events streamed from them, identical requests share a job across replicas, a cancel
 * from one stops the job on the replica running it, a replica stopping hands its running job to
 * another, and history is kept to its limit. pg-boss needs Node 22.12+: on Node 20 the mode must say so.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job, JobEvent, JobRun, Runner } from '../src/service/job-system.js';
import { nodeRunsPgBoss, PG_BOSS_NODE } from '../src/service/pg-job-rows.js';
import { PgJobs } from '../src/service/pg-jobs.js';
import { type RunningPostgres, startPostgres } from './harness/postgres.js';
import { until } from './harness/until.js';

let db: RunningPostgres;

beforeAll(async () => {
  db = await startPostgres();
}, 60_000);

afterAll(async () => {
  await db?.stop();
});

/** Runners whose jobs wait for the test to let them go (or to abort them). */
function gatedRunners() {
  const started: JobRun[] = [];
  const gates = new Map<string, () => void>();
  const runner: Runner = (run) => {
    started.push(run);
    run.progress({ blobs: 2, bytes: 10 });
    run.emit('tag', { tag: 'v1', replicaSaw: run.job.id });
    return new Promise((resolve, reject) => {
      gates.set(run.job.id, () => resolve({ done: run.job.id }));
      run.signal.addEventListener('abort', () => reject(new Error('aborted')));
    });
  };
  return { started, gates, runners: { pull: runner, push: runner, sync: runner, bundle: runner } };
}

function replica(name: string, runners: ReturnType<typeof gatedRunners>['runners'], store = 's3://jobs/a/') {
  return PgJobs.open({
    url: db.url,
    store,
    replica: name,
    concurrency: 2,
    maxQueued: 10,
    keep: 3,
    runners,
    heartbeatSeconds: 10,
  });
}

describe.runIf(!nodeRunsPgBoss())('jobs in PostgreSQL on this Node', () => {
  it('refuse to start and name the Node they need', async () => {
    const err = await replica('r1', gatedRunners().runners).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(`needs Node ${PG_BOSS_NODE} or newer`);
    expect((err as Error).message).toContain(process.versions.node);
  });
});

describe.runIf(nodeRunsPgBoss())('jobs in PostgreSQL shared by replicas', () => {
  it('lists, streams, shares and cancels a job across replicas, and ends it once', async () => {
    const a = gatedRunners();
    const b = gatedRunners();
    const c = gatedRunners();
    const [ra, rb, rc] = await Promise.all([
      replica('a', a.runners),
      replica('b', b.runners),
      replica('c', c.runners),
    ]);
    try {
      const { job, shared } = await ra.submit('pull', { refs: ['x:1'] }, 'ci', 'pull:x:1');
      expect(shared).toBe(false);
      expect((await rb.get(job.id))?.kind).toBe('pull');
      // The same request on another replica while it is queued or running: the same job.
      const again = await rc.submit('pull', { refs: ['x:1'] }, 'ci', 'pull:x:1');
      expect(again).toMatchObject({ shared: true, job: { id: job.id } });

      // One replica runs it; its events reach a subscriber on another.
      const runner = await until('the job to start', () =>
        [a, b, c].find((r) => r.started.some((s) => s.job.id === job.id)),
      );
      expect([a, b, c].filter((r) => r.started.length > 0)).toHaveLength(1);
      const events: JobEvent[] = [];
      let ended = false;
      await rc.subscribe(
        job.id,
        0,
        (e) => events.push(e),
        () => {
          ended = true;
        },
      );
      await until('the running state', () => events.find((e) => e.type === 'tag'));
      const running = (await rb.get(job.id))!;
      expect(running.state).toBe('running');
      expect(['a', 'b', 'c']).toContain(running.replica);
      runner.gates.get(job.id)!();
      await until('the end event', () => ended || undefined);
      expect(events.map((e) => e.type)).toEqual(['state', 'state', 'progress', 'tag', 'state', 'end']);
      expect(events.map((e) => e.seq)).toEqual([...events.map((e) => e.seq)].sort((x, y) => x - y));
      expect(events.at(-1)!.data).toMatchObject({ id: job.id, state: 'succeeded', result: { done: job.id } });
      expect((await ra.get(job.id))?.progress).toMatchObject({ blobs: 2, bytes: 10 });

      // Finished: the key is free again, and a new request is a new job.
      const next = await rb.submit('pull', { refs: ['x:1'] }, 'ci', 'pull:x:1');
      expect(next.shared).toBe(false);
      const runs = await until('the second job to start', () =>
        [a, b, c].find((r) => r.started.some((s) => s.job.id === next.job.id)),
      );
      // Canceled from a replica that is not running it.
      const other = [ra, rb, rc].find((_, i) => [a, b, c][i] !== runs)!;
      await other.cancel(next.job.id);
      const canceled = await until('the cancel', async () => {
        const j = await ra.get(next.job.id);
        return j?.state === 'canceled' ? j : undefined;
      });
      expect(canceled.error?.code).toBe('ABORTED');
      // A subscriber after the end gets the whole story and the end at once.
      const replay: JobEvent[] = [];
      await rb.subscribe(
        next.job.id,
        0,
        (e) => replay.push(e),
        () => {},
      );
      expect(replay.at(-1)).toMatchObject({ type: 'end', data: { state: 'canceled' } });
      expect(await rc.counts()).toMatchObject({ pull: { succeeded: 1, canceled: 1, running: 0 } });
    } finally {
      await Promise.all([ra.shutdown(), rb.shutdown(), rc.shutdown()]);
    }
  }, 90_000);

  it('hands a running job to another replica when its own stops, and keeps deployments apart', async () => {
    const a = gatedRunners();
    const b = gatedRunners();
    const ra = await replica('stopping', a.runners, 's3://jobs/handover/');
    const { job } = await ra.submit('sync', { jobs: ['j'] }, 'ci', 'sync:["j"]');
    await until('the job to start on the first replica', () => a.started.length > 0 || undefined);
    // Another deployment in the same database never sees it.
    const stranger = await replica('stranger', gatedRunners().runners, 's3://jobs/other/');
    expect(await stranger.get(job.id)).toBeUndefined();
    expect(await stranger.list()).toEqual([]);
    await stranger.shutdown();

    await ra.shutdown();
    const rb = await replica('taker', b.runners, 's3://jobs/handover/');
    try {
      const run = await until('the second replica to take it', () =>
        b.started.find((r) => r.job.id === job.id),
      );
      b.gates.get(run.job.id)!();
      const done = await until('the job to succeed', async () => {
        const j = await rb.get(job.id);
        return j?.state === 'succeeded' ? j : undefined;
      });
      expect(done.replica).toBe('taker');
      const events: JobEvent[] = [];
      await rb.subscribe(
        job.id,
        0,
        (e) => events.push(e),
        () => {},
      );
      const states = events.filter((e) => e.type === 'state').map((e) => e.data as Record<string, unknown>);
      expect(states.map((s) => s.state)).toEqual(['queued', 'running', 'queued', 'running', 'succeeded']);
      expect(states[3]).toMatchObject({ replica: 'taker', resumed: true, attempt: 2 });
    } finally {
      await rb.shutdown();
    }
  }, 90_000);

  it('keeps the newest finished jobs up to keep-jobs, across replicas', async () => {
    const a = gatedRunners();
    const ra = await replica('keeper', a.runners, 's3://jobs/keep/');
    try {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const { job } = await ra.submit('push', { n: i }, 'ci');
        ids.push(job.id);
        const run = await until('it to start', () => a.started.find((r) => r.job.id === job.id));
        a.gates.get(run.job.id)!();
        await until('it to end', async () => ((await ra.get(job.id)) as Job | undefined)?.finishedAt);
      }
      const kept = await ra.list();
      expect(kept.map((j) => j.id)).toEqual(ids.slice(2).reverse());
    } finally {
      await ra.shutdown();
    }
  }, 90_000);
});
