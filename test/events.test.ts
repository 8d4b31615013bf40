/**
 * Events end to end (issue 38): a real `stowage serve` syncing from a real docker-registry, its
 * webhooks delivered to HTTP receivers on loopback. Every event type is caused by the operation that
 * causes it (a sync storing, moving, pruning and mirroring; a tag the trust policy refuses; a bundle
 * made and imported; a pull through the registry), each body's signature checked by openssl; a receiver
 * that answers 500 then 200 gets each event once; one that never answers does not hold the sync back;
 * `stowage events --follow` waits for a version; a webhook outside the allow-list stops the start.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf } from './harness/cli.js';
import { run } from './harness/processes.js';
import {
  api,
  type RunningService,
  type ServiceDir,
  serviceDir,
  startService,
  waitJob,
} from './harness/service.js';
import { buildTaggedRepo, pushTags } from './harness/tagged-repo.js';
import { until } from './harness/until.js';

const h = harness();
const plain = h.registries.plain;
const exec = promisify(execFile);
const SECRET = 'events-test-secret-0123456789abcdef';

interface Received {
  headers: IncomingMessage['headers'];
  body: Buffer;
  status: number;
}

interface Receiver {
  url: string;
  got: Received[];
  server: Server;
}

const servers: Server[] = [];

/** An HTTP receiver on 127.0.0.1: answers with the next of `answers` (the last repeats; 0: never answers). */
async function receiver(answers: number[]): Promise<Receiver> {
  const got: Received[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const status = answers[Math.min(got.length, answers.length - 1)]!;
    got.push({ headers: req.headers, body: Buffer.concat(chunks), status });
    if (status === 0) return;
    res.writeHead(status).end(status === 200 ? 'ok' : 'try later');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, got, server };
}

interface Event {
  id: string;
  type: string;
  subject?: string;
  source: string;
  data: Record<string, unknown>;
}

const parse = (r: Received) => JSON.parse(r.body.toString()) as Event;

let d: ServiceDir;
let s: RunningService;
let all: Receiver;
let flaky: Receiver;
let silent: Receiver;
let binary: Receiver;
const id = Math.random().toString(36).slice(2, 8);
const app = `${plain.host}/events-${id}/app`;
const mirror = `${plain.host}/events-${id}/mirror`;
const signed = `${plain.host}/events-${id}/signed`;
const through = `${plain.host}/events-${id}/through`;
let layouts: Record<string, string>;

beforeAll(async () => {
  all = await receiver([200]);
  flaky = await receiver([500, 200]);
  silent = await receiver([0]);
  binary = await receiver([200]);
  const secretFile = join(h.dir, `events-secret-${id}`);
  await writeFile(secretFile, `${SECRET}\n`, { mode: 0o600 });
  d = await serviceDir(
    'events',
    insecureConf(plain.host),
    [
      `allow-registries = ["${plain.host}"]`,
      'webhook-hosts = ["127.0.0.1"]',
      '',
      '[server.registry]',
      'anonymous-pull = true',
      `pull-through = ["${plain.host}"]`,
      '',
      '[[server.webhook]]',
      'name = "all"',
      `url = "${all.url}"`,
      `secret-file = "${secretFile}"`,
      '',
      '[[server.webhook]]',
      'name = "flaky"',
      `url = "${flaky.url}"`,
      'events = ["version.stored"]',
      '',
      '[[server.webhook]]',
      'name = "silent"',
      `url = "${silent.url}"`,
      'timeout = "30s"',
      '',
      '[[server.webhook]]',
      'name = "binary"',
      `url = "${binary.url}?key=not-shown"`,
      'events = ["sync"]',
      'mode = "binary"',
      `secret-file = "${secretFile}"`,
      '',
      '[[job]]',
      'name = "mirrored"',
      `source = "${app}"`,
      `mirror = "${mirror}"`,
      'prune = true',
      'retention = { keep-versions = 1 }',
      '',
      '[[job]]',
      'name = "refused"',
      `source = "${signed}"`,
      '',
    ].join('\n'),
  );
  // Tags 1.0.0 and 1.1.0; a second build of 1.0.0 (other bytes) to move the tag to.
  const first = await buildTaggedRepo(join(d.dir, 'v1'), {
    count: 2,
    baseKiB: 64,
    ownKiB: 8,
    seed: `ev1-${id}`,
  });
  const second = await buildTaggedRepo(join(d.dir, 'v2'), {
    count: 1,
    baseKiB: 64,
    ownKiB: 8,
    seed: `ev2-${id}`,
  });
  layouts = { first: first.layout, second: second.layout };
  await pushTags(first.layout, ['1.0.0', '1.1.0'], app);
  await pushTags(first.layout, ['1.0.0'], signed);
  await pushTags(first.layout, ['1.1.0'], through);
  // The mirror has 1.1.0 already (left as it is) and a tag the source lacks (prune deletes it).
  await pushTags(first.layout, ['1.1.0'], mirror);
  await run('skopeo', [
    'copy',
    '--quiet',
    '--dest-tls-verify=false',
    `oci:${first.layout}:1.1.0`,
    `docker://${mirror}:stale`,
  ]);
  // The trust policy wants a signature on the signed repository, and there is none.
  const pub = join(d.dir, 'cosign.pub');
  const keyFile = join(d.dir, 'cosign.key');
  await run('openssl', ['ecparam', '-genkey', '-name', 'prime256v1', '-noout', '-out', keyFile]);
  await run('openssl', ['ec', '-in', keyFile, '-pubout', '-out', pub]);
  await mkdir(join(d.env.HOME!, '.config/containers'), { recursive: true });
  await writeFile(
    join(d.env.HOME!, '.config/containers/policy.json'),
    JSON.stringify({
      default: [{ type: 'insecureAcceptAnything' }],
      transports: { docker: { [signed]: [{ type: 'sigstoreSigned', keyPath: pub }] } },
    }),
  );
  s = await startService(d);
}, 120_000);

afterAll(async () => {
  await s?.stop();
  for (const x of servers) {
    x.closeAllConnections();
    x.close();
  }
});

async function sync(jobs: string[]): Promise<Record<string, unknown>> {
  const res = await api(s, 'admin', '/v1/syncs', { method: 'POST', json: { jobs } });
  expect(res.status).toBe(202);
  return waitJob(s, ((await res.json()) as { id: string }).id);
}

const types = (r: Receiver) => r.got.map((g) => parse(g).type);

describe('events and webhooks', () => {
  it('says what a sync did, as it did it, to each webhook that takes it', async () => {
    const job = await sync(['mirrored']);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    // The silent receiver is sent the first event and never answers: the sync ended regardless, and
    // its deliveries wait (in order) behind that one.
    await until('the silent receiver asked', () => (silent.got.length >= 1 ? true : undefined));
    const silentHistory = (await (
      await api(s, 'reader', '/v1/webhooks/silent/deliveries?limit=100')
    ).json()) as {
      deliveries: { state: string }[];
    };
    expect(silentHistory.deliveries.every((x) => x.state === 'pending')).toBe(true);

    // Move 1.0.0 upstream and sync again: a new version, the tag moved, the old one pruned.
    await pushTags(layouts.second!, ['1.0.0'], app);
    const again = await sync(['mirrored']);
    expect(again.state, JSON.stringify(again)).toBe('succeeded');
    await until('both syncs told', () =>
      types(all).filter((t) => t === 'io.stowage.sync.finished').length === 2 ? true : undefined,
    );
    const events = all.got.map(parse);
    const of = (type: string) => events.filter((e) => e.type === type);
    expect(
      of('io.stowage.version.stored')
        .map((e) => e.subject)
        .sort(),
    ).toEqual([`${app}:1.0.0`, `${app}:1.0.0`, `${app}:1.1.0`]);
    const moved = of('io.stowage.tag.moved');
    expect(moved.map((e) => e.subject)).toEqual([`${app}:1.0.0`]);
    const newest = of('io.stowage.version.stored').at(-1)!;
    expect(newest.data.previousDigest).toBe(moved[0]!.data.from);
    expect(newest.data.sourceDigest).toBe(moved[0]!.data.to);
    expect(newest.data.platforms).toEqual(['linux/amd64']);
    expect(newest.source).toBe(`/stowage/jobs/${again.id}`);
    expect(of('io.stowage.version.pruned').map((e) => [e.subject, e.data.digest])).toEqual([
      [`${app}:1.0.0`, moved[0]!.data.from],
    ]);
    // 1.0.0 written twice (new, then moved); 1.1.0 the mirror had already.
    expect(of('io.stowage.mirror.tag.written').map((e) => e.subject)).toEqual([
      `${mirror}:1.0.0`,
      `${mirror}:1.0.0`,
    ]);
    expect(of('io.stowage.mirror.tag.deleted').map((e) => e.subject)).toEqual([`${mirror}:stale`]);
    const finished = of('io.stowage.sync.finished').at(-1)!;
    const summary = (finished.data.jobs as { name: string; tags: { tag: string; action: string }[] }[])[0]!;
    expect(summary.name).toBe('mirrored');
    expect(summary.tags.map((t) => [t.tag, t.action]).sort()).toEqual([
      ['1.0.0', 'fetched'],
      ['1.1.0', 'skipped'],
    ]);
    // CloudEvents attributes on every one.
    for (const e of events) {
      expect(e).toMatchObject({ specversion: '1.0', datacontenttype: 'application/json' });
      expect(e.id).toMatch(/^[0-9a-f-]{36}$/);
    }
  }, 180_000);

  it('signs every body with HMAC-SHA256 of the secret, as openssl computes it', async () => {
    expect(all.got.length).toBeGreaterThan(5);
    for (const [i, g] of all.got.entries()) {
      const file = join(d.dir, `body-${i}.json`);
      await writeFile(file, g.body);
      const { stdout } = await exec('openssl', ['dgst', '-sha256', '-hmac', SECRET, '-hex', file]);
      expect(g.headers['stowage-signature']).toBe(`sha256=${stdout.trim().split('= ')[1]}`);
      expect(g.headers['content-type']).toMatch(/^application\/cloudevents\+json/);
    }
    // Binary mode: attributes as ce- headers, the data alone signed as the body; only sync events.
    expect(binary.got.length).toBe(2);
    for (const g of binary.got) {
      expect(g.headers['ce-type']).toBe('io.stowage.sync.finished');
      expect(g.headers['ce-specversion']).toBe('1.0');
      expect(JSON.parse(g.body.toString()).jobs).toBeDefined();
      const file = join(d.dir, 'binary-body.json');
      await writeFile(file, g.body);
      const { stdout } = await exec('openssl', ['dgst', '-sha256', '-hmac', SECRET, '-hex', file]);
      expect(g.headers['stowage-signature']).toBe(`sha256=${stdout.trim().split('= ')[1]}`);
    }
  });

  it('a receiver that answers 500, then 200, gets each event once, in order', async () => {
    const want = all.got.map(parse).filter((e) => e.type === 'io.stowage.version.stored');
    await until('the flaky receiver to catch up', () =>
      flaky.got.filter((g) => g.status === 200).length >= want.length ? true : undefined,
    );
    const accepted = flaky.got.filter((g) => g.status === 200).map((g) => parse(g).id);
    expect(accepted).toEqual(want.map((e) => e.id));
    // The first was sent twice (500, then 200), the rest once.
    expect(flaky.got.map((g) => g.status)).toEqual([500, ...want.map(() => 200)]);
    const history = (await (await api(s, 'reader', '/v1/webhooks/flaky/deliveries')).json()) as {
      deliveries: { state: string; attempts: number; status: number }[];
    };
    expect(history.deliveries.at(-1)).toMatchObject({ state: 'delivered', attempts: 2, status: 200 });
    expect(history.deliveries.every((x) => x.state === 'delivered')).toBe(true);
    const listed = (await (await api(s, 'reader', '/v1/webhooks')).json()) as {
      webhooks: { name: string; url: string; signed: boolean }[];
    };
    expect(listed.webhooks.map((w) => [w.name, w.signed])).toEqual([
      ['all', true],
      ['flaky', false],
      ['silent', false],
      ['binary', true],
    ]);
    expect(listed.webhooks[3]!.url).not.toContain('not-shown');
    // The attempts are counted for the metrics: the one retry, and every delivery.
    const metrics = await (await api(s, 'reader', '/metrics')).text();
    expect(metrics).toContain('stowage_webhook_attempts_total{webhook="flaky",outcome="retried"} 1');
    expect(metrics).toContain(
      `stowage_webhook_attempts_total{webhook="flaky",outcome="delivered"} ${want.length}`,
    );
  });

  it('tells of a tag the trust policy refused, and of the failed sync', async () => {
    const job = await sync(['refused']);
    expect(job.state).toBe('failed');
    await until('the failed sync told', () =>
      types(all).includes('io.stowage.sync.failed') ? true : undefined,
    );
    const refused = all.got.map(parse).filter((e) => e.type === 'io.stowage.signature.refused');
    expect(refused.map((e) => [e.subject, e.data.where])).toEqual([[`${signed}:1.0.0`, 'sync']]);
    expect(String(refused[0]!.data.reason)).toContain('signature');
    expect(String(refused[0]!.data.reason)).not.toContain(d.env.HOME!);
    const failed = all.got.map(parse).find((e) => e.type === 'io.stowage.sync.failed')!;
    expect(failed.data.failed).toBe(1);
  }, 60_000);

  it('tells of a bundle made and one imported', async () => {
    const res = await api(s, 'admin', '/v1/bundles', { method: 'POST', json: {} });
    const job = await waitJob(s, ((await res.json()) as { id: string }).id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const made = job.result as { id: string; file: string };
    const tar = await api(s, 'reader', `/v1/bundles/${made.id.slice(7, 19)}/content`);
    expect(tar.status).toBe(200);
    const bytes = Buffer.from(await tar.arrayBuffer());
    const imported = await api(s, 'admin', '/v1/bundles/imports', {
      method: 'POST',
      headers: { 'content-type': 'application/x-tar' },
      body: bytes,
    });
    expect(imported.status, await imported.clone().text()).toBe(201);
    const result = (await imported.json()) as { id: string; present: number; name: string };
    expect(result.id).toBe(made.id);
    expect(result.name).toBe('the uploaded bundle');
    await until('the bundle events', () =>
      types(all).includes('io.stowage.bundle.imported') ? true : undefined,
    );
    const bundles = all.got.map(parse).filter((e) => e.type.startsWith('io.stowage.bundle.'));
    expect(bundles.map((e) => [e.type, e.subject])).toEqual([
      ['io.stowage.bundle.created', made.id],
      ['io.stowage.bundle.imported', made.id],
    ]);
  }, 60_000);

  it('tells of a pull-through miss, and stowage events --follow waits for that version', async () => {
    const ref = `${new URL(s.url).host}/${plain.host.replace(':', '_')}/events-${id}/through:1.1.0`;
    // The follower first, from the newest event on: it prints the first version.stored of that tag, then exits.
    const newest = (await (await api(s, 'reader', '/v1/events?limit=1')).json()) as {
      events: { seq: number }[];
    };
    const follower = exec(
      process.execPath,
      [
        BIN,
        'events',
        '--follow',
        '--url',
        s.url,
        '--type',
        'version.stored',
        '--subject',
        `${through}:1.1.0`,
        '--count',
        '1',
        '--json',
        '--after',
        String(newest.events[0]!.seq),
      ],
      { env: { ...d.env, STOWAGE_TOKEN: 'stw_test-reader-token-0123456789' }, timeout: 60_000 },
    );
    // Pulled through by skopeo: the follower sees it whether its stream opened before or after.
    await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
    const { stdout } = await follower;
    const printed = JSON.parse(stdout.trim()) as Event & { seq: number };
    expect(printed.type).toBe('io.stowage.version.stored');
    expect(printed.data.kind).toBe('pull-through');
    expect(printed.seq).toBeGreaterThan(0);
    await until('the miss told', () =>
      types(all).includes('io.stowage.pullthrough.miss') ? true : undefined,
    );
    const miss = all.got.map(parse).find((e) => e.type === 'io.stowage.pullthrough.miss')!;
    expect(miss.subject).toBe(`${through}:1.1.0`);
    expect(miss.source).toBe('/stowage/registry');
    // The same events from the API, listed: every type of the catalogue was produced.
    const listed = (await (await api(s, 'reader', '/v1/events?limit=1000')).json()) as { events: Event[] };
    expect(new Set(listed.events.map((e) => e.type))).toEqual(
      new Set([
        'io.stowage.version.stored',
        'io.stowage.tag.moved',
        'io.stowage.version.pruned',
        'io.stowage.mirror.tag.written',
        'io.stowage.mirror.tag.deleted',
        'io.stowage.sync.finished',
        'io.stowage.sync.failed',
        'io.stowage.signature.refused',
        'io.stowage.bundle.created',
        'io.stowage.bundle.imported',
        'io.stowage.pullthrough.miss',
      ]),
    );
  }, 90_000);

  it('sends a delivery again on request (admin only)', async () => {
    const history = (await (await api(s, 'reader', '/v1/webhooks/all/deliveries?limit=1')).json()) as {
      deliveries: { id: number; event: string }[];
    };
    const last = history.deliveries[0]!;
    expect(
      (await api(s, 'reader', `/v1/webhooks/all/deliveries/${last.id}/retry`, { method: 'POST' })).status,
    ).toBe(403);
    const before = all.got.length;
    const res = await api(s, 'admin', `/v1/webhooks/all/deliveries/${last.id}/retry`, { method: 'POST' });
    expect(res.status).toBe(202);
    await until('the retry', () => (all.got.length > before ? true : undefined));
    expect(parse(all.got.at(-1)!).id).toBe(last.event);
  });

  it('refuses to start with a webhook whose host is outside the allow-list', async () => {
    const bad = await serviceDir(
      'events-blocked',
      insecureConf(plain.host),
      `allow-registries = ["${plain.host}"]\n\n[[server.webhook]]\nname = "outside"\nurl = "http://127.0.0.1:9/hook"\n`,
    );
    const e = await startService(bad).then(
      async (x) => {
        await x.stop();
        return undefined;
      },
      (err: Error) => err,
    );
    expect(e?.message).toContain('[[server.webhook]] "outside": 127.0.0.1:9 is in neither');
    expect(e?.message).toContain('webhook-hosts');
  });
});
