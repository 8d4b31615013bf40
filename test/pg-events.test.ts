/**
 * The event log replicas share (src/events/pg-log.ts) against a real PostgreSQL: one webhook's deliveries
 * are handed to one replica at a time (the lease), oldest first, taken over when its holder closes; a
 * replica hears of another's events; the history keeps the newest `keep`; a delivery sent again is a new
 * one behind those waiting; stores sharing a database stay apart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeEvent } from '../src/events/event.js';
import { PgEventLog } from '../src/events/pg-log.js';
import { type RunningPostgres, startPostgres } from './harness/postgres.js';

let server: RunningPostgres;
const logs: PgEventLog[] = [];

beforeAll(async () => {
  server = await startPostgres();
}, 60_000);

afterAll(async () => {
  for (const l of logs) await l.close().catch(() => {});
  await server?.stop();
});

async function open(replica: string, store = 's3://events/', keep = 3): Promise<PgEventLog> {
  const log = await PgEventLog.open({ url: server.url, store, replica, keep });
  logs.push(log);
  return log;
}

const event = (tag: string) =>
  makeEvent({
    type: 'io.stowage.version.stored',
    source: '/stowage/jobs/j',
    subject: `r:${tag}`,
    data: { tag },
  });

describe('the event log in PostgreSQL', () => {
  it('hands a webhook to one replica at a time, its deliveries oldest first, and the next replica after it leaves', async () => {
    const [a, b] = await Promise.all([open('a'), open('b')]);
    let heard = 0;
    b.onRemoteAppend(() => heard++);
    const first = event('1');
    const seq = await a.append(first, ['hook']);
    await a.append(event('2'), ['hook', 'other']);
    expect(await a.lastSeq()).toBe(seq + 1);
    // b hears of a's events (NOTIFY), and reads them in order.
    await expect.poll(() => heard).toBeGreaterThanOrEqual(1);
    expect((await b.since(seq - 1, 10)).map((e) => e.event.subject)).toEqual(['r:1', 'r:2']);

    const got = await a.next('hook', 60_000);
    expect(got?.event.id).toBe(first.id);
    // a holds the webhook: b is handed nothing of it, but may deliver another webhook's.
    expect(await b.next('hook', 60_000)).toBeUndefined();
    expect((await b.next('other', 60_000))?.event.subject).toBe('r:2');
    await a.settle({ ...got!.delivery, state: 'delivered', attempts: 1, status: 200 });
    expect((await a.next('hook', 60_000))?.event.subject).toBe('r:2');
    // a leaves: its lease goes with it, and b takes the webhook at once.
    await a.close();
    logs.splice(logs.indexOf(a), 1);
    expect((await b.next('hook', 60_000))?.event.subject).toBe('r:2');
  });

  it('takes over a lapsed lease, keeps the newest deliveries, and sends one again behind those waiting', async () => {
    const [a, b] = await Promise.all([open('a2', 's3://history/'), open('b2', 's3://history/')]);
    await a.append(event('x'), ['h']);
    expect(await a.next('h', 200)).toBeDefined();
    await new Promise((r) => setTimeout(r, 400));
    const taken = await b.next('h', 60_000);
    expect(taken?.event.subject).toBe('r:x');
    for (const tag of ['y', 'z', 'w']) await b.append(event(tag), ['h']);
    // Each delivered in turn; the history keeps the newest 3 (keep).
    for (let i = 0; i < 4; i++) {
      const n = await b.next('h', 60_000);
      await b.settle({ ...n!.delivery, state: 'delivered', attempts: 1, status: 204 });
    }
    const history = await b.history('h', 10);
    expect(history.map((d) => d.subject)).toEqual(['r:w', 'r:z', 'r:y']);
    expect(history.every((d) => d.state === 'delivered' && d.status === 204)).toBe(true);
    const again = await b.redeliver('h', history[2]!.id);
    expect(again).toMatchObject({ state: 'pending', subject: 'r:y', attempts: 0 });
    expect((await b.next('h', 60_000))?.delivery.id).toBe(again!.id);
    expect(await b.redeliver('h', 987654)).toBeUndefined();
    // Another store in the same database sees none of it.
    const other = await open('c2', 's3://elsewhere/');
    expect(await other.recent(10)).toEqual([]);
    expect(await other.next('h', 60_000)).toBeUndefined();
  });
});
