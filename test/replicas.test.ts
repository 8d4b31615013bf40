/**
 * Three `stowage serve` replicas on one PostgreSQL and one radosgw bucket, every engine really started
 * (issue 22): a pull started on one is listed, streamed and downloaded from the others, byte for byte
 * what `stowage pull` writes; identical pulls on two replicas share one job; a schedule fires once a
 * minute across the three; a replica killed with SIGKILL mid-pull has its job finished by another,
 * the store verifying and no orphan left after GC; two replicas pulling images that share a base layer
 * fetch and upload it once; a pull whose every upload is reset (issue 33) fails once, naming the bucket,
 * every replica alive; a job two replicas died running is given up by the third; PostgreSQL stopped
 * for 20 s mid-sync: every replica says not ready meanwhile and lives, the sync ends, the index names
 * no missing blob, the next sync completes; a webhook all three send to gets each event once (issue 38). pg-boss needs Node 22.12+: on an older test runner the replicas run on the
 * Node 24 that scripts/setup.sh keeps in .node24/; replicated-store.test.ts checks that serve on Node 20
 * says it needs a newer one.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgVersionIndex } from '../src/store/pg-index.js';
import { ReplicatedStore } from '../src/store/replicated.js';
import { S3Blobs, type S3Location } from '../src/store/s3-blobs.js';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { pgBossNode } from './harness/node.js';
import { type RunningPostgres, startPostgres } from './harness/postgres.js';
import { run } from './harness/processes.js';
import { type RunningS3, s3Bucket, startRadosgw } from './harness/radosgw.js';
import { api, followEvents, type RunningService, startService, TOKENS, waitJob } from './harness/service.js';
import { buildTaggedRepo, pushTags } from './harness/tagged-repo.js';
import { until } from './harness/until.js';

const h = harness();
const plain = h.registries.plain;
/** pg-boss needs Node 22.12+: the runner's, or the Node 24 setup keeps in .node24/. */
const SERVE_NODE = pgBossNode();
let s3: RunningS3;
let db: RunningPostgres;
let location: S3Location;
/** Slows the large fixture's blobs (so a replica can be killed mid-pull) and counts every request. */
let proxy: FaultProxy;
/** radosgw as the replicas reach it: resets the connection of any upload of the poison blob. */
let s3proxy: FaultProxy;
/** Blobs slower still (about 1 MiB/s each): a sync that is still running when PostgreSQL stops. */
let slow: FaultProxy;
/** The hex digest of a blob whose every upload is cut off, or undefined. */
let poison: string | undefined;
let dir: string;
let env: NodeJS.ProcessEnv;
let replicas: RunningService[] = [];
/** A webhook receiver on loopback every replica sends to: each event must reach it once. */
let hook: { url: string; got: { id: string; type: string; source: string }[]; server: Server };

/** An HTTP receiver on 127.0.0.1 that answers 200 and keeps each CloudEvent's id, type and source. */
async function startReceiver(): Promise<typeof hook> {
  const got: (typeof hook)['got'] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const e = JSON.parse(Buffer.concat(chunks).toString()) as { id: string; type: string; source: string };
    got.push({ id: e.id, type: e.type, source: e.source });
    res.writeHead(200).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, got, server };
}

const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** One stowage.toml for every replica (only the state directory differs), as a deployment has it. */
async function replicaConfig(name: string): Promise<string> {
  const config = join(dir, `${name}.toml`);
  const tokens = (['admin', 'reader', 'puller'] as const).map(
    (n) =>
      `[[server.token]]\nname = "${n}"\nsha256 = "${sha256Hex(TOKENS[n])}"\nscopes = ["${n === 'admin' ? 'admin' : n === 'reader' ? 'read' : 'pull'}"${n === 'puller' ? ', "read"' : ''}]\n`,
  );
  await writeFile(
    config,
    [
      '[store.s3]',
      `endpoint = "${s3proxy.url}"`,
      `bucket = "${location.bucket}"`,
      `prefix = "${location.prefix}"`,
      '',
      '[server]',
      `state = "${join(dir, `state-${name}`)}"`,
      `database = "${db.url}"`,
      'job-heartbeat = "10s"',
      'concurrent-jobs = 1',
      '',
      '[server.registry]',
      'anonymous-pull = true',
      `pull-through = ["${proxy.host}"]`,
      '',
      ...tokens,
      '[[job]]',
      'name = "every-minute"',
      `source = "${plain.host}/fixtures/small"`,
      'tags = ["v1"]',
      'schedule = "* * * * *"',
      '',
      '[[server.webhook]]',
      'name = "once"',
      `url = "${hook.url}"`,
      '',
      '[[job]]',
      'name = "outage"',
      `source = "${slow.host}/replicas/outage"`,
      '',
    ].join('\n'),
  );
  return config;
}

async function startReplica(name: string): Promise<RunningService> {
  const config = await replicaConfig(name);
  const s = await startService({
    dir,
    env: { ...env, STOWAGE_REPLICA: name },
    config,
    store: '',
    state: join(dir, `state-${name}`),
    node: SERVE_NODE,
  });
  return s;
}

async function job(s: RunningService, id: string): Promise<Record<string, unknown>> {
  return (await (await api(s, 'reader', `/v1/jobs/${id}`)).json()) as Record<string, unknown>;
}

async function pull(s: RunningService, ref: string): Promise<{ id: string; shared: boolean }> {
  const res = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { ref } });
  expect(res.status, await res.clone().text()).toBe(202);
  return (await res.json()) as { id: string; shared: boolean };
}

/** A store on the same bucket and database, opened in the test to look at what the replicas wrote. */
async function inspector(gcGraceMs?: number): Promise<ReplicatedStore> {
  const blobs = new S3Blobs(location);
  return new ReplicatedStore(blobs, await PgVersionIndex.open(db.url, { store: blobs.description }), {
    gcGraceMs,
  });
}

describe.runIf(SERVE_NODE !== undefined)('three stowage serve replicas on PostgreSQL and S3', () => {
  beforeAll(async () => {
    [s3, db] = await Promise.all([startRadosgw(), startPostgres()]);
    location = await s3Bucket(s3, 'stowage-three', 'deploy/');
    const w = await workdir('replicas', '');
    dir = w.dir;
    proxy = await startFaultProxy({
      upstream: `http://${plain.host}`,
      // Blobs trickle (about 16 MiB/s): a pull of the large fixture lasts long enough to kill its
      // replica, and a second replica asks for a shared layer while the first still fetches it.
      fault: (req) =>
        req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')
          ? { kind: 'trickle', bytes: 256 * 1024, everyMs: 16 }
          : undefined,
    });
    slow = await startFaultProxy({
      upstream: `http://${plain.host}`,
      fault: (req) =>
        req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')
          ? { kind: 'trickle', bytes: 64 * 1024, everyMs: 60 }
          : undefined,
    });
    s3proxy = await startFaultProxy({
      upstream: s3.endpoint,
      keepHost: true,
      fault: (req) =>
        poison && req.method === 'PUT' && req.url?.includes(poison)
          ? { kind: 'drop-request', afterBytes: 1 }
          : undefined,
    });
    await writeFile(w.conf, insecureConf(plain.host, proxy.host, slow.host));
    env = { ...w.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    hook = await startReceiver();
    replicas = await Promise.all(['r0', 'r1', 'r2'].map(startReplica));
  }, 120_000);

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await Promise.all([s3?.stop(), db?.stop(), proxy?.close(), s3proxy?.close(), slow?.close()]);
    hook?.server.closeAllConnections();
    hook?.server.close();
  });

  it('says each replica is one of several on PostgreSQL in /readyz', async () => {
    for (const [i, r] of replicas.entries()) {
      expect(await (await fetch(`${r.url}/readyz`)).json()).toEqual({
        status: 'ready',
        mode: { store: 's3', jobs: 'postgres', replica: `r${i}` },
      });
    }
  });

  it('lists, streams and serves from every replica a pull started on one; identical pulls share it', async () => {
    const [r0, r1, r2] = replicas as [RunningService, RunningService, RunningService];
    const ref = `${plain.host}/fixtures/multi:v1`;
    const [first, second] = await Promise.all([pull(r0, ref), pull(r1, ref)]);
    expect(second.id).toBe(first.id);
    expect([first.shared, second.shared].sort()).toEqual([false, true]);
    const events = await followEvents(r2, first.id);
    expect(events.at(-1)).toMatchObject({ event: 'end', data: { id: first.id, state: 'succeeded' } });
    expect(events.map((e) => Number(e.id))).toEqual(events.map((e) => Number(e.id)).sort((a, b) => a - b));
    const done = await job(r1, first.id);
    expect(['r0', 'r1', 'r2']).toContain(done.replica);
    const archive = (done.result as { archives: { id: string; sha256: string }[] }).archives[0]!;
    const listed = (await (await api(r2, 'reader', '/v1/archives')).json()) as { archives: { id: string }[] };
    expect(listed.archives.map((a) => a.id)).toContain(archive.id);

    const pulled = join(dir, 'multi.tar');
    const r = await stowage(['pull', '-q', ref, '-o', pulled], { env });
    expect(r.code, r.stderr).toBe(0);
    const want = await readFile(pulled);
    for (const s of replicas) {
      const res = await api(s, 'reader', `/v1/archives/${archive.id}/content`);
      expect(res.status).toBe(200);
      // Compared by digest: a deep equality of megabytes costs vitest seconds.
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(want));
    }
    expect(archive.sha256).toBe(sha256(want));

    // A docker-archive made by one replica is kept in the bucket and served by the others as it is.
    const made = await api(r0, 'reader', `/v1/archives/${archive.id}/content?format=docker-archive`);
    expect(made.status).toBe(200);
    const docker = Buffer.from(await made.arrayBuffer());
    const etag = made.headers.get('etag');
    const kept = await new S3Blobs(location).headFile(
      `renditions/${archive.id}/docker-archive-linux-amd64.tar`,
    );
    expect(kept).toEqual({ size: docker.length, sha256: sha256(docker) });
    const ranged = await api(r2, 'reader', `/v1/archives/${archive.id}/content?format=docker-archive`, {
      headers: { range: 'bytes=512-1023' },
    });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get('etag')).toBe(etag);
    expect(Buffer.from(await ranged.arrayBuffer())).toEqual(docker.subarray(512, 1024));
    const dockerFile = join(dir, 'multi.docker.tar');
    await writeFile(dockerFile, docker);
    expect((await stowage(['verify', dockerFile, '--sha256', sha256(docker)], { env })).code).toBe(0);

    // Every series of a replica's metrics names the replica.
    const metrics = await (await api(r1, 'admin', '/metrics')).text();
    expect(metrics).toMatch(/^stowage_jobs\{[^}]*replica="r1"[^}]*\} \d+/m);
  }, 120_000);

  it('fetches a base layer two replicas need at once a single time', async () => {
    const repo = await buildTaggedRepo(join(dir, 'shared-base'), {
      count: 2,
      baseKiB: 24 * 1024,
      ownKiB: 64,
      seed: 'replicas-shared',
    });
    await pushTags(repo.layout, repo.tags, `${plain.host}/replicas/shared`);
    const [a, b] = await Promise.all([
      pull(replicas[0]!, `${proxy.host}/replicas/shared:${repo.tags[0]}`),
      pull(replicas[1]!, `${proxy.host}/replicas/shared:${repo.tags[1]}`),
    ]);
    const [ja, jb] = await Promise.all([waitJob(replicas[2]!, a.id), waitJob(replicas[2]!, b.id)]);
    expect([ja.state, jb.state]).toEqual(['succeeded', 'succeeded']);
    expect(ja.replica).not.toBe(jb.replica);
    // The base is the one blob bigger than 1 MiB: fetched once in all, by whichever replica came first.
    const base = [...repo.blobs].find(([, size]) => size > 1024 * 1024)![0];
    const gets = proxy.seen.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${base}`));
    expect(gets).toHaveLength(1);
    const store = await inspector();
    try {
      expect(await store.hasBlob(base)).toBe(true);
    } finally {
      await store.close();
    }
  }, 120_000);

  it('pulls a blob through two replicas at once from the upstream a single time, and serves it from S3 on a third', async () => {
    const repo = await buildTaggedRepo(join(dir, 'through-base'), {
      count: 1,
      baseKiB: 24 * 1024,
      ownKiB: 64,
      seed: 'replicas-through',
    });
    await pushTags(repo.layout, repo.tags, `${plain.host}/replicas/through`);
    const name = `${proxy.host.replace(':', '_')}/replicas/through`;
    const manifest = await fetch(`${replicas[0]!.url}/v2/${name}/manifests/${repo.tags[0]}`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(manifest.status).toBe(200);
    const base = [...repo.blobs].find(([, size]) => size > 1024 * 1024)![0];
    // Two replicas asked for the base at once (the second knows nothing of the manifest: a HEAD
    // upstream gives it the size); the upstream trickles, so the fetches overlap.
    const bodies = await Promise.all(
      [replicas[0]!, replicas[1]!].map(async (r) => {
        const res = await fetch(`${r.url}/v2/${name}/blobs/${base}`);
        expect(res.status).toBe(200);
        return Buffer.from(await res.arrayBuffer());
      }),
    );
    for (const b of bodies) expect(`sha256:${sha256(b)}`).toBe(base);
    const gets = proxy.seen.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${base}`));
    expect(gets).toHaveLength(1);
    // The third replica serves it from the bucket, and skopeo reads the image whole from it.
    const out = join(dir, 'through-layout');
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${new URL(replicas[2]!.url).host}/${name}:${repo.tags[0]}`,
      `oci:${out}:t`,
    ]);
    expect(proxy.seen.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${base}`))).toHaveLength(1);
  }, 120_000);

  it('delivers each event once across the three replicas, whichever replica it happened on', async () => {
    // The pulls above ran on two replicas and the pull-through on a third: all logged in PostgreSQL.
    const listed = await until('every event delivered', async () => {
      const { events } = (await (await api(replicas[2]!, 'reader', '/v1/events?limit=1000')).json()) as {
        events: { id: string; type: string; data: { job?: string } }[];
      };
      const got = new Set(hook.got.map((e) => e.id));
      return events.length > 0 && events.every((e) => got.has(e.id)) ? events : undefined;
    });
    const ids = hook.got.map((e) => e.id);
    expect(new Set(ids).size, 'an event was delivered twice').toBe(ids.length);
    const types = new Set(listed.map((e) => e.type));
    expect(types).toContain('io.stowage.version.stored');
    expect(types).toContain('io.stowage.pullthrough.miss');
    const ran = new Set<unknown>();
    for (const e of listed) if (e.data.job) ran.add((await job(replicas[0]!, e.data.job)).replica);
    expect(ran.size).toBeGreaterThanOrEqual(2);
    const { deliveries } = (await (
      await api(replicas[1]!, 'reader', '/v1/webhooks/once/deliveries?limit=1000')
    ).json()) as {
      deliveries: { state: string; attempts: number }[];
    };
    expect(deliveries.length).toBeGreaterThanOrEqual(listed.length);
    expect(deliveries.every((d) => d.attempts === 1)).toBe(true);
  }, 120_000);

  it('finishes on another replica a pull whose replica was killed, and leaves no orphan after GC', async () => {
    const ref = `${proxy.host}/fixtures/large:v1`;
    const { id } = await pull(replicas[0]!, ref);
    // The replica running it, once some of the large layer has arrived.
    const running = await until('the pull to be under way', async () => {
      const j = await job(replicas[0]!, id);
      const p = j.progress as { bytesDone: number };
      return j.state === 'running' && p.bytesDone > 0 ? j : undefined;
    });
    const victim = replicas.findIndex((_, i) => `r${i}` === running.replica);
    expect(victim).toBeGreaterThanOrEqual(0);
    await replicas[victim]!.stop('SIGKILL');
    const survivor = replicas.find((_, i) => i !== victim)!;

    const done = await until('another replica to finish it', async () => {
      const j = await job(survivor, id);
      return ['succeeded', 'failed', 'canceled'].includes(j.state as string) ? j : undefined;
    });
    expect(done.state, JSON.stringify(done.error)).toBe('succeeded');
    expect(done.replica).not.toBe(running.replica);
    const events = await followEvents(survivor, id);
    const resumed = events.find((e) => e.event === 'state' && (e.data as { resumed?: boolean }).resumed);
    expect(resumed?.data).toMatchObject({ state: 'running', replica: done.replica });

    // What the store holds is the image, whole: exported from the store, it verifies and is what
    // stowage pull writes.
    const archive = (done.result as { archives: { id: string }[] }).archives[0]!;
    const res = await api(survivor, 'reader', `/v1/archives/${archive.id}/content`);
    const served = join(dir, 'large-served.tar');
    await writeFile(served, Buffer.from(await res.arrayBuffer()));
    const verified = await stowage(['verify', served], { env });
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    const inspected = JSON.parse((await stowage(['inspect', '--json', served], { env })).stdout);
    expect(inspected.images[0].digest).toBe(h.fixtures.images.large!.digest);

    // No orphan: after a GC without grace (nothing else writes now), every blob in the bucket is one
    // a version references, and no upload is left half done.
    const store = await inspector(0);
    try {
      await store.collectGarbage();
      const keep = await store.referenced(await store.versions());
      const left = [];
      for await (const b of new S3Blobs(location).list()) left.push(b.digest);
      expect(left.filter((d) => !keep.has(d))).toEqual([]);
    } finally {
      await store.close();
    }
    // Back to three, for the tests after.
    replicas[victim] = await startReplica(`r${victim}`);
  }, 180_000);

  it('fires a schedule once a minute across the three replicas', async () => {
    const scheduled = async () => {
      const res = await api(replicas[0]!, 'reader', '/v1/jobs?kind=sync&limit=1000');
      const body = (await res.json()) as {
        jobs: { requestedBy: string; createdAt: string; state: string; request: { slot?: string } }[];
      };
      return body.jobs.filter((j) => j.requestedBy === 'schedule');
    };
    const first = await until('the schedule to fire', async () => (await scheduled())[0], 100_000);
    // Each scheduled sync names the cron slot it is for (a slot delivered late can be created in the
    // next minute: the slot, not the creation time, is what must be once).
    const slot = first.request.slot;
    expect(slot).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z$/);
    // Long enough for every replica's cron pass for that slot to have run.
    await new Promise((r) => setTimeout(r, 25_000));
    const inMinute = (await scheduled()).filter((j) => j.request.slot === slot);
    expect(inMinute).toHaveLength(1);
    const ran = await waitJob(replicas[1]!, (inMinute[0] as unknown as { id: string }).id);
    expect(ran.state).toBe('succeeded');
  }, 180_000);

  it('fails a pull whose every upload is reset once, naming the bucket, and every replica keeps serving', async () => {
    const repo = await buildTaggedRepo(join(dir, 'poison'), {
      count: 1,
      baseKiB: 512,
      ownKiB: 64,
      seed: 'poison',
    });
    await pushTags(repo.layout, repo.tags, `${plain.host}/replicas/poison`);
    poison = [...repo.blobs].find(([, size]) => size > 256 * 1024)![0].slice('sha256:'.length);
    try {
      const { id } = await pull(replicas[1]!, `${plain.host}/replicas/poison:${repo.tags[0]}`);
      const done = await waitJob(replicas[2]!, id);
      expect(done.state).toBe('failed');
      const error = done.error as { message: string };
      expect(error.message).toContain(`s3://${location.bucket}/${location.prefix}`);
      expect(error.message).toContain(poison);
      expect(error.message).not.toContain(s3.secretAccessKey);
      expect(error.message).not.toContain(dir);
      // Two more heartbeat periods: the failed job is never handed to another replica.
      await new Promise((r) => setTimeout(r, 25_000));
      const events = await followEvents(replicas[0]!, id);
      const runs = events.filter(
        (e) => e.event === 'state' && (e.data as { state: string }).state === 'running',
      );
      expect(runs).toHaveLength(1);
      expect((await job(replicas[0]!, id)).state).toBe('failed');
    } finally {
      poison = undefined;
    }
    for (const [i, r] of replicas.entries()) {
      expect([r.child.exitCode, r.child.signalCode], `replica r${i}`).toEqual([null, null]);
      expect((await fetch(`${r.url}/readyz`)).status).toBe(200);
    }
    // And they still do their work: a pull of something else succeeds.
    const after = await pull(replicas[1]!, `${plain.host}/fixtures/small:v1`);
    expect((await waitJob(replicas[0]!, after.id)).state).toBe('succeeded');
  }, 180_000);

  it('gives up a job after two replicas died running it, and the third lives on', async () => {
    // An image no replica holds yet, whose one big layer trickles through the proxy for seconds.
    const repo = await buildTaggedRepo(join(dir, 'doomed'), {
      count: 1,
      baseKiB: 128 * 1024,
      ownKiB: 64,
      seed: 'doomed',
    });
    await pushTags(repo.layout, repo.tags, `${plain.host}/replicas/doomed`);
    const { id } = await pull(replicas[0]!, `${proxy.host}/replicas/doomed:${repo.tags[0]}`);
    const killed: number[] = [];
    for (let round = 0; round < 2; round++) {
      const holder = await until(
        `the pull to be under way on a live replica (round ${round + 1})`,
        async () => {
          const j = await job(replicas.find((_, i) => !killed.includes(i))!, id);
          const p = j.progress as { bytesDone: number; bytes: number };
          const at = replicas.findIndex((_, i) => `r${i}` === j.replica);
          // Under way, and the big layer (most of the bytes) not in the store yet: a replica killed
          // after it was would leave the next one nothing to do but finish.
          const underWay = p.bytesDone > 0 && p.bytesDone < p.bytes / 2;
          return j.state === 'running' && underWay && at >= 0 && !killed.includes(at) ? at : undefined;
        },
      );
      await replicas[holder]!.stop('SIGKILL');
      killed.push(holder);
    }
    const third = replicas.findIndex((_, i) => !killed.includes(i));
    const done = await until('the third replica to give it up', async () => {
      const j = await job(replicas[third]!, id);
      return ['succeeded', 'failed', 'canceled'].includes(j.state as string) ? j : undefined;
    });
    expect(done.state).toBe('failed');
    const names = killed.map((i) => `r${i}`).join(', ');
    expect((done.error as { message: string }).message).toContain(
      `(${names}) stopped without finishing it 2 times`,
    );
    expect([replicas[third]!.child.exitCode, replicas[third]!.child.signalCode]).toEqual([null, null]);
    expect((await fetch(`${replicas[third]!.url}/readyz`)).status).toBe(200);
    for (const i of killed) replicas[i] = await startReplica(`r${i}`);
  }, 240_000);

  it('rides out PostgreSQL stopped for 20 s in the middle of a sync: not ready meanwhile, the sync ends, the store holds', async () => {
    const repo = await buildTaggedRepo(join(dir, 'outage'), {
      count: 4,
      baseKiB: 256,
      ownKiB: 6 * 1024,
      seed: 'outage',
    });
    await pushTags(repo.layout, repo.tags, `${plain.host}/replicas/outage`);
    const sync = async () => {
      const res = await api(replicas[0]!, 'admin', '/v1/syncs', {
        method: 'POST',
        json: { jobs: ['outage'] },
      });
      expect(res.status, await res.clone().text()).toBe(202);
      return ((await res.json()) as { id: string }).id;
    };
    const id = await sync();
    await until('the sync to be under way', async () => {
      const last = await job(replicas[1]!, id);
      if (['succeeded', 'failed'].includes(last.state as string))
        throw new Error(`ended: ${JSON.stringify(last)}`);
      return last.state === 'running' ? last : undefined;
    });
    // Its layers are arriving (a sync job reports no byte counts, only its end: issue 37).
    await new Promise((r) => setTimeout(r, 2000));
    await db.pause();
    // While it is away every replica says it is not ready, and why; none of them dies.
    const seen = new Set<string>();
    const end = Date.now() + 20_000;
    while (Date.now() < end) {
      for (const r of replicas) {
        const res = await fetch(`${r.url}/readyz`);
        const body = (await res.json()) as { reason?: string };
        if (res.status === 503 && body.reason?.includes('PostgreSQL database is unreachable'))
          seen.add(r.url);
        expect(body.reason ?? '').not.toContain(db.url);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(seen.size).toBe(3);
    await db.resume();
    for (const r of replicas) {
      await until('every replica to be ready again', async () =>
        (await fetch(`${r.url}/readyz`)).ok ? true : undefined,
      );
      expect([r.child.exitCode, r.child.signalCode]).toEqual([null, null]);
    }
    // The sync ends, one way or the other (tags whose versions could not be written fail).
    const ended = await until(
      'the sync to end',
      async () => {
        const j = await job(replicas[2]!, id);
        return ['succeeded', 'failed'].includes(j.state as string) ? j : undefined;
      },
      180_000,
    );
    expect(['succeeded', 'failed']).toContain(ended.state);
    // What the index holds is whole: every blob of every version is in the bucket.
    const consistent = async () => {
      const store = await inspector();
      try {
        const versions = await store.versions();
        const need = await store.referenced(versions);
        const have = new Set<string>();
        for await (const b of new S3Blobs(location).list()) have.add(b.digest);
        expect([...need].filter((d) => !have.has(d))).toEqual([]);
        return versions
          .filter((v) => v.repository.endsWith('replicas/outage'))
          .map((v) => v.tag)
          .sort();
      } finally {
        await store.close();
      }
    };
    await consistent();
    // And the next run completes it.
    const again = await waitJob(replicas[1]!, await sync());
    expect(again.state, JSON.stringify(again.error)).toBe('succeeded');
    expect(await consistent()).toEqual([...repo.tags].sort());
  }, 300_000);
});
