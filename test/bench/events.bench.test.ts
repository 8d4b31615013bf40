/**
 * Events benchmark (issue 38): the cost of publishing and delivering events as their number grows.
 * 1,000 and then 10,000 version.stored events are published into a bus with two webhooks, one to a
 * receiver on loopback that answers 200 and one to a receiver that never answers (its deliveries all
 * stay pending: the log's worst case), on the in-process log (STATE/events.json) and on PostgreSQL.
 * Prints, per size: the time until all are logged, until all reached the answering receiver, the CPU
 * of this process, its RSS growth, and the per-event cost ratio of 10,000 against 1,000 (1.0: flat).
 * skopeo has no events, so there is nothing to compare with; asserts only that every event arrived once.
 *
 *   npx vitest run --config test/bench/vitest.config.ts events
 */
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventBus } from '../../src/events/bus.js';
import type { EventLog } from '../../src/events/log.js';
import { MemoryEventLog } from '../../src/events/memory-log.js';
import { PgEventLog } from '../../src/events/pg-log.js';
import type { Webhook } from '../../src/events/webhooks.js';
import { type RunningPostgres, startPostgres } from '../harness/postgres.js';

const SIZES = [1000, 10_000];
let dir: string;
let db: RunningPostgres;
let ok: { server: Server; url: string; ids: Set<string>; count: () => number };
let silent: { server: Server; url: string };

async function listen(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-events-'));
  db = await startPostgres();
  const ids = new Set<string>();
  let count = 0;
  const l = await listen(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    ids.add((JSON.parse(Buffer.concat(chunks).toString()) as { id: string }).id);
    count++;
    res.writeHead(200).end();
  });
  ok = { ...l, ids, count: () => count };
  silent = await listen(() => {});
}, 120_000);

afterAll(async () => {
  for (const s of [ok?.server, silent?.server]) {
    s?.closeAllConnections();
    s?.close();
  }
  await db?.stop();
  await rm(dir, { recursive: true, force: true });
});

const hook = (name: string, url: string): Webhook => ({
  name,
  url: new URL(url),
  timeoutMs: 60_000,
  retryForMs: 3600_000,
  mode: 'structured',
});

interface Result {
  logged: number;
  delivered: number;
  cpu: number;
  rssMiB: number;
}

async function round(log: EventLog, n: number): Promise<Result> {
  const bus = new EventBus({ log, hooks: [hook('ok', ok.url), hook('silent', silent.url)], warn: () => {} });
  bus.start();
  const before = ok.count();
  const cpu0 = process.cpuUsage();
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    bus.publish({
      type: 'io.stowage.version.stored',
      source: '/stowage/jobs/bench',
      subject: `127.0.0.1:5000/bench/app:${i}`,
      data: {
        repository: '127.0.0.1:5000/bench/app',
        tag: String(i),
        digest: `sha256:${String(i).padStart(64, '0')}`,
      },
    });
  }
  await bus.flushed();
  const logged = (performance.now() - t0) / 1000;
  while (ok.count() - before < n) await new Promise((r) => setTimeout(r, 20));
  const delivered = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  const rssMiB = (process.memoryUsage().rss - rss0) / 1024 / 1024;
  await bus.close();
  return { logged, delivered, cpu: (c.user + c.system) / 1e6, rssMiB };
}

describe('events benchmark', () => {
  for (const kind of ['in-process', 'postgres'] as const) {
    it(`publishes and delivers 1,000 and 10,000 events (${kind} log)`, async () => {
      const results: Result[] = [];
      for (const [i, n] of SIZES.entries()) {
        const log =
          kind === 'in-process'
            ? new MemoryEventLog({ file: join(dir, `events-${i}.json`), keep: 100 })
            : await PgEventLog.open({ url: db.url, store: `s3://bench-${i}/`, replica: 'bench', keep: 100 });
        const r = await round(log, n);
        results.push(r);
        console.log(
          `${kind} ${n} events: logged in ${r.logged.toFixed(2)} s, delivered in ${r.delivered.toFixed(2)} s ` +
            `(${Math.round(n / r.delivered)}/s), ${r.cpu.toFixed(2)} core-s of this process, RSS +${r.rssMiB.toFixed(0)} MiB`,
        );
      }
      const [small, big] = results as [Result, Result];
      const ratio = (a: number, b: number) => (b / SIZES[1]! / (a / SIZES[0]!)).toFixed(2);
      console.log(
        `${kind}: per-event cost at 10,000 vs 1,000: logging ${ratio(small.logged, big.logged)}x, delivery ${ratio(small.delivered, big.delivered)}x, CPU ${ratio(small.cpu, big.cpu)}x`,
      );
      expect(ok.ids.size).toBe(ok.count());
    }, 900_000);
  }
});
