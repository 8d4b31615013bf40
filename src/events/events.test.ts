/**
 * Events in process: the catalogue's matching, the log's order and history, and deliveries to a real
 * HTTP receiver on loopback (retried after a 500, in order, a silent receiver cut at its timeout).
 */
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { until } from '../../test/harness/until.js';
import { EventBus } from './bus.js';
import { makeEvent, typeMatches, unknownEntries } from './event.js';
import { MAX_PENDING, MemoryEventLog } from './memory-log.js';
import { requestFor, resolveWebhooks, signature, type Webhook } from './webhooks.js';

const temp = tempDirs();

interface Received {
  headers: IncomingMessage['headers'];
  body: Buffer;
}

/** A receiver on 127.0.0.1 answering each request with the next of `answers` (the last repeats; 0: never answers). */
async function receiver(answers: number[]): Promise<{ url: string; got: Received[]; server: Server }> {
  const got: Received[] = [];
  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    got.push({ headers: req.headers, body: Buffer.concat(chunks) });
    const status = answers[Math.min(got.length - 1, answers.length - 1)]!;
    if (status === 0) return; // never answers
    res.writeHead(status, { 'content-type': 'text/plain' }).end(status >= 300 ? 'not now' : 'ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, got, server };
}

const servers: Server[] = [];
const buses: EventBus[] = [];
afterEach(async () => {
  for (const b of buses.splice(0)) await b.close();
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});

function hook(url: string, over: Partial<Webhook> = {}): Webhook {
  return { name: 'h', url: new URL(url), timeoutMs: 2000, retryForMs: 60_000, mode: 'structured', ...over };
}

function bus(hooks: Webhook[], log = new MemoryEventLog({ keep: 100 })): EventBus {
  const b = new EventBus({ log, hooks, warn: () => {} });
  buses.push(b);
  b.start();
  return b;
}

const stored = (tag: string) => ({
  type: 'io.stowage.version.stored' as const,
  source: '/stowage/jobs/j1',
  subject: `127.0.0.1:5000/app:${tag}`,
  data: { tag },
});

describe('event types', () => {
  it('takes types, prefixes of whole name parts, and names without io.stowage.', () => {
    expect(typeMatches(undefined, 'io.stowage.sync.failed')).toBe(true);
    expect(typeMatches(['sync'], 'io.stowage.sync.failed')).toBe(true);
    expect(typeMatches(['io.stowage.sync.failed'], 'io.stowage.sync.failed')).toBe(true);
    expect(typeMatches(['sync.finished'], 'io.stowage.sync.failed')).toBe(false);
    expect(typeMatches(['ver'], 'io.stowage.version.stored')).toBe(false);
    expect(typeMatches(['version.*'], 'io.stowage.version.pruned')).toBe(true);
    expect(unknownEntries(['version', 'sync.failed', 'verison.stored'])).toEqual(['verison.stored']);
  });

  it('refuses at start an events entry naming no type, a host outside the allow-list, a short secret', async () => {
    const dir = await temp('stowage-hooks-');
    const secret = join(dir, 'secret');
    await writeFile(secret, 'short\n');
    const base = { name: 'deploys', url: 'http://127.0.0.1:9/hook' };
    await expect(
      resolveWebhooks({ webhook: [{ ...base, events: ['verison'] }] }, () => true),
    ).rejects.toThrow(/"deploys".*"verison" names no event type/);
    await expect(resolveWebhooks({ webhook: [base] }, (h) => h !== '127.0.0.1:9')).rejects.toThrow(
      /127\.0\.0\.1:9 is in neither.*webhook-hosts/,
    );
    await expect(
      resolveWebhooks({ webhook: [{ ...base, 'secret-file': secret }] }, () => true),
    ).rejects.toThrow(/at least 16 characters/);
    await writeFile(secret, 'a-secret-of-enough-length\nignored\n');
    const [w] = await resolveWebhooks(
      { webhook: [{ ...base, 'secret-file': secret, timeout: '3s' }] },
      () => true,
    );
    expect(w!.secret!.toString()).toBe('a-secret-of-enough-length');
    expect(w!.timeoutMs).toBe(3000);
  });

  it('binary mode puts the attributes in ce- headers and the data alone in the body, both signed', () => {
    const e = makeEvent(stored('1.0'));
    const secret = Buffer.from('k'.repeat(20));
    const r = requestFor({ name: 'h', mode: 'binary', secret }, e, 7);
    expect(JSON.parse(r.body.toString())).toEqual({ tag: '1.0' });
    expect(r.headers['ce-type']).toBe('io.stowage.version.stored');
    expect(r.headers['ce-id']).toBe(e.id);
    expect(r.headers['ce-subject']).toBe('127.0.0.1:5000/app:1.0');
    expect(r.headers['stowage-signature']).toBe(signature(secret, r.body));
    const s = requestFor({ name: 'h', mode: 'structured', secret: undefined }, e, 7);
    expect(JSON.parse(s.body.toString())).toEqual(e);
    expect(s.headers['content-type']).toMatch(/^application\/cloudevents\+json/);
    expect(s.headers['stowage-signature']).toBeUndefined();
  });
});

describe('deliveries', () => {
  it('retries a receiver that answers 500, then delivers once; later events wait their turn', async () => {
    const r = await receiver([500, 200]);
    const b = bus([hook(r.url)]);
    b.publish(stored('1'));
    b.publish(stored('2'));
    await until('the receiver', () => (r.got.length >= 3 ? true : undefined));
    const tags = r.got.map((g) => (JSON.parse(g.body.toString()) as { data: { tag: string } }).data.tag);
    // The first event twice (500, then 200), then the second: order kept across the retry.
    expect(tags).toEqual(['1', '1', '2']);
    const settled = await until('the deliveries', async () => {
      const d = await b.log.history('h', 10);
      return d.every((x) => x.state === 'delivered') ? d : undefined;
    });
    expect(settled.map((d) => [d.subject, d.attempts, d.status])).toEqual([
      ['127.0.0.1:5000/app:2', 1, 200],
      ['127.0.0.1:5000/app:1', 2, 200],
    ]);
  });

  it('publishing never waits for a receiver that does not answer; the attempt is cut at the timeout', async () => {
    const r = await receiver([0]);
    const b = bus([hook(r.url, { timeoutMs: 300, retryForMs: 500 })]);
    b.publish(stored('1'));
    await b.flushed(); // logged at once, whatever the receiver does
    const failed = await until('the deliveries', async () => {
      const [d] = await b.log.history('h', 1);
      return d?.state === 'failed' ? d : undefined;
    });
    expect(failed.error).toBe('no answer within 0.3 s');
    expect(failed.attempts).toBeGreaterThanOrEqual(1);
  });

  it('keeps pending deliveries and the history across a restart, and sends a delivery again on request', async () => {
    const dir = await temp('stowage-events-');
    const file = join(dir, 'events.json');
    const down = hook('http://127.0.0.1:9/hook', { retryForMs: 3600_000 });
    const first = new MemoryEventLog({ file, keep: 100 });
    const b1 = new EventBus({ log: first, hooks: [down], warn: () => {} });
    b1.publish(stored('1'));
    await b1.flushed();
    await b1.close();
    // A webhook no longer configured has its saved deliveries dropped.
    const without = new MemoryEventLog({ file, keep: 100, webhooks: ['another'] });
    await without.load();
    expect(await without.next('h')).toBeUndefined();
    expect((await without.recent(5)).length).toBe(1);
    const r = await receiver([200]);
    const log = new MemoryEventLog({ file, keep: 100, webhooks: ['h'] });
    await log.load();
    const b2 = bus([hook(r.url)], log);
    await until('the receiver', () => (r.got.length === 1 ? true : undefined));
    const [d] = await until('the deliveries', async () => {
      const h = await b2.log.history('h', 5);
      return h[0]?.state === 'delivered' ? h : undefined;
    });
    const again = await b2.redeliver('h', d!.id);
    expect(again?.state).toBe('pending');
    await until('the receiver', () => (r.got.length === 2 ? true : undefined));
    expect(r.got[1]!.body.equals(r.got[0]!.body)).toBe(true);
    expect(await b2.redeliver('h', 999)).toBeUndefined();
  });

  it('stays bounded for a receiver gone for good: the stream keeps 1,000, a webhook 10,000 pending', async () => {
    const log = new MemoryEventLog({ keep: 2 });
    for (let i = 0; i < MAX_PENDING + 1; i++) await log.append(makeEvent(stored(String(i))), ['h']);
    expect((await log.recent(5000)).length).toBe(1000);
    expect((await log.since(MAX_PENDING - 1, 10)).map((e) => e.seq)).toEqual([MAX_PENDING, MAX_PENDING + 1]);
    const history = await log.history('h', 3);
    expect(history[0]!.subject).toBe(`127.0.0.1:5000/app:${MAX_PENDING}`);
    const dropped = (await log.history('h', MAX_PENDING + 5)).filter((d) => d.state === 'failed');
    expect(dropped.map((d) => [d.subject, d.error])).toEqual([
      ['127.0.0.1:5000/app:0', `dropped: more than ${MAX_PENDING} deliveries were waiting`],
    ]);
    // The oldest still waiting is the next, its event kept though the stream has let it go.
    expect((await log.next('h'))?.event.data).toEqual({ tag: '1' });
  });

  it('follows the stream from a seq, by type, in order', async () => {
    const b = bus([]);
    b.publish(stored('1'));
    b.publish({ type: 'io.stowage.sync.failed', source: '/stowage/jobs/j1', data: {} });
    await b.flushed();
    const seen: string[] = [];
    const stop = b.follow(0, ['version'], (e) => seen.push(`${e.seq} ${e.event.type}`));
    b.publish(stored('2'));
    await until('the receiver', () => (seen.length === 2 ? true : undefined));
    stop();
    expect(seen).toEqual(['1 io.stowage.version.stored', '3 io.stowage.version.stored']);
  });
});
