/**
 * The replicated store (src/store/replicated.ts) with every engine really started: docker-registry as
 * the source, radosgw for the blobs, PostgreSQL for the index. A sync through one replica is listed by
 * another, whose export is byte for byte what `stowage pull` writes, and a sync through the other finds
 * nothing to fetch; GC keeps what versions reference and what is younger than its grace; radosgw
 * killed and restarted in the middle of a layer's upload (issue 33): the sync ends, the index names no
 * missing blob, GC leaves no orphan, and the next sync completes.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStowageConfig } from '../src/config/stowage.js';
import { Context } from '../src/registry/context.js';
import { nodeRunsPgBoss, PG_BOSS_NODE } from '../src/service/pg-job-rows.js';
import { BlobLeases } from '../src/store/blob-leases.js';
import { PgVersionIndex } from '../src/store/pg-index.js';
import { ReplicatedStore } from '../src/store/replicated.js';
import { S3Blobs, type S3Location } from '../src/store/s3-blobs.js';
import { sync } from '../src/sync/sync.js';
import { exportVersion } from '../src/transfer/export.js';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { startFaultProxy } from './harness/fault-proxy.js';
import { type RunningPostgres, startPostgres } from './harness/postgres.js';
import { run } from './harness/processes.js';
import { type RunningS3, s3Bucket, startRadosgw } from './harness/radosgw.js';
import { startService, TOKENS } from './harness/service.js';
import { buildTaggedRepo, pushTags } from './harness/tagged-repo.js';

const h = harness();
const plain = h.registries.plain;
let s3: RunningS3;
let db: RunningPostgres;
let location: S3Location;

beforeAll(async () => {
  [s3, db] = await Promise.all([startRadosgw(), startPostgres()]);
  location = await s3Bucket(s3, 'stowage-replicas');
}, 60_000);

afterAll(async () => {
  await Promise.all([s3?.stop(), db?.stop()]);
});

async function replica(gcGraceMs?: number, name?: string): Promise<ReplicatedStore> {
  const blobs = new S3Blobs(location);
  const index = await PgVersionIndex.open(db.url, { store: blobs.description });
  const leases = name ? new BlobLeases(index.connections, blobs.description, name, 'leases') : undefined;
  return new ReplicatedStore(blobs, index, { gcGraceMs, leases });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('the replicated store', () => {
  it('lists on one replica what another synced, and exports it byte for byte as stowage pull writes it', async () => {
    const w = await workdir('replicated-sync', insecureConf(plain.host));
    const ctx = await Context.create({ registriesConf: w.conf, env: w.env });
    const config = parseStowageConfig(
      `[[job]]\nname = "multi"\nsource = "${plain.host}/fixtures/multi"\ntags = ["v1"]\n`,
      'stowage.toml',
      w.env,
    );
    const a = await replica();
    const b = await replica();
    try {
      const report = await sync(ctx, config, { store: a });
      expect(report.failed).toBe(0);
      const listed = await b.versions();
      expect(listed.map((v) => `${v.repository}:${v.tag}`)).toEqual([`${plain.host}/fixtures/multi:v1`]);
      const out = join(w.dir, 'from-b.tar');
      await exportVersion(b, listed[0]!.id, { output: out });
      const pulled = join(w.dir, 'pulled.tar');
      const r = await stowage(['pull', '-q', `${plain.host}/fixtures/multi:v1`, '-o', pulled], {
        env: w.env,
      });
      expect(r.code, r.stderr).toBe(0);
      expect(await readFile(out)).toEqual(await readFile(pulled));
      const v = await stowage(['verify', out], { env: w.env });
      expect(v.code, v.stdout).toBe(0);
      expect(
        JSON.parse((await stowage(['inspect', '--json', out], { env: w.env })).stdout).images[0].digest,
      ).toBe(h.fixtures.images.multi!.digest);
      // A second sync through the other replica finds everything there: nothing fetched.
      const again = await sync(ctx, config, { store: b });
      expect(again.fetchedBytes).toBe(0);
    } finally {
      await a.close();
      await b.close();
      await ctx.close();
    }
  });

  it('collects only what no version references and is older than its grace', async () => {
    const store = await replica(60_000);
    try {
      const orphan = Buffer.from('a blob no version names');
      const d = {
        mediaType: 'application/octet-stream',
        digest: `sha256:${sha256(orphan)}`,
        size: orphan.length,
      };
      await store.putBlob(d, [orphan]);
      const kept = await store.referenced(await store.versions());
      expect(kept.size).toBeGreaterThan(0);
      // Young: kept, another replica may be about to name it.
      expect((await store.collectGarbage()).blobs).toBe(0);
      expect(await store.hasBlob(d.digest)).toBe(true);
      const eager = await replica(0);
      try {
        // Renditions go with their versions: one of a version the index no longer has is collected.
        const tar = join(await mkdtemp(join(h.dir, 'rendition-')), 'r.tar');
        await writeFile(tar, 'made');
        const made = { size: 4, sha256: sha256(Buffer.from('made')) };
        const blobs = new S3Blobs(location);
        const live = (await eager.versions())[0]!.id;
        await blobs.putFile(`renditions/${live}/docker-archive-linux-amd64.tar`, tar, made.size, made.sha256);
        await blobs.putFile(
          'renditions/0123456789ab/docker-archive-linux-amd64.tar',
          tar,
          made.size,
          made.sha256,
        );
        const freed = await eager.collectGarbage();
        expect(freed.blobs).toBe(1);
        expect(await eager.hasBlob(d.digest)).toBe(false);
        // Everything a version names is still there.
        for (const digest of kept) expect(await eager.hasBlob(digest)).toBe(true);
        expect(await blobs.listFolders('renditions/')).toEqual([live]);
        blobs.close();
      } finally {
        await eager.close();
      }
    } finally {
      await store.close();
    }
  });

  it('writes a blob two replicas fetch at once a single time, and GC spares a blob under a lease', async () => {
    const body = Buffer.from('a layer two replicas want at the same moment');
    const d = { mediaType: 'application/octet-stream', digest: `sha256:${sha256(body)}`, size: body.length };
    const a = await replica(0, 'lease-a');
    const b = await replica(0, 'lease-b');
    try {
      let opened = 0;
      const open = async () => {
        opened++;
        await new Promise((r) => setTimeout(r, 400));
        return (async function* () {
          yield body;
        })();
      };
      const outcomes = await Promise.all([a.fetchBlob(d, open), b.fetchBlob(d, open)]);
      expect(outcomes.sort()).toEqual(['fetched', 'shared']);
      expect(opened).toBe(1);
      // Unreferenced and without grace, but leased by a replica still writing it: kept.
      const orphan = Buffer.from('written, its version not added yet');
      const od = {
        mediaType: 'application/octet-stream',
        digest: `sha256:${sha256(orphan)}`,
        size: orphan.length,
      };
      const idx = await PgVersionIndex.open(db.url, { store: new S3Blobs(location).description });
      const writer = new BlobLeases(idx.connections, new S3Blobs(location).description, 'writer', 'leases');
      const lease = await writer.claim(od.digest, async () => false);
      await a.putBlob(od, [orphan]);
      await b.collectGarbage();
      expect(await b.hasBlob(od.digest)).toBe(true);
      await lease.release();
      await b.collectGarbage();
      expect(await b.hasBlob(od.digest)).toBe(false);
      expect(await b.hasBlob(d.digest)).toBe(false);
      await idx.close();
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('aborts in GC the multipart uploads a dead replica left', async () => {
    const admin = new S3Client({
      endpoint: location.endpoint,
      region: location.region,
      forcePathStyle: true,
      credentials: location.credentials,
    });
    const store = await replica(0);
    try {
      const Key = `${location.prefix}blobs/sha256/${'ab'.repeat(32)}`;
      await admin.send(new CreateMultipartUploadCommand({ Bucket: location.bucket, Key }));
      const listed = async () =>
        (await admin.send(new ListMultipartUploadsCommand({ Bucket: location.bucket }))).Uploads ?? [];
      expect((await listed()).map((u) => u.Key)).toContain(Key);
      await new Promise((r) => setTimeout(r, 1100));
      await store.collectGarbage();
      expect((await listed()).map((u) => u.Key)).not.toContain(Key);
    } finally {
      admin.destroy();
      await store.close();
    }
  });

  it('rides out radosgw restarted in the middle of an upload: the tag is stored or fails, the store holds, GC leaves no orphan', async () => {
    const w = await workdir('rgw-restart', '');
    const repo = await buildTaggedRepo(join(w.dir, 'repo'), {
      count: 1,
      baseKiB: 96 * 1024,
      ownKiB: 64,
      seed: 'rgw-restart',
    });
    await pushTags(repo.layout, repo.tags, `${plain.host}/rgw/restart`);
    const base = [...repo.blobs].find(([, size]) => size > 64 * 1024 * 1024)![0];
    // Blobs trickle (about 16 MiB/s), so the layer's multipart upload is under way for seconds.
    const proxy = await startFaultProxy({
      upstream: `http://${plain.host}`,
      fault: (req) =>
        req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')
          ? { kind: 'trickle', bytes: 256 * 1024, everyMs: 16 }
          : undefined,
    });
    await writeFile(w.conf, insecureConf(plain.host, proxy.host));
    const ctx = await Context.create({ registriesConf: w.conf, env: w.env });
    const config = parseStowageConfig(
      `[[job]]\nname = "restart"\nsource = "${proxy.host}/rgw/restart"\n`,
      'stowage.toml',
      w.env,
    );
    const admin = new S3Client({
      endpoint: location.endpoint,
      region: location.region,
      forcePathStyle: true,
      credentials: location.credentials,
    });
    const uploads = async () =>
      ((await admin.send(new ListMultipartUploadsCommand({ Bucket: location.bucket }))).Uploads ?? []).map(
        (u) => u.Key ?? '',
      );
    const gateway = await startFaultProxy({ upstream: location.endpoint, keepHost: true });
    const blobs = new S3Blobs({ ...location, endpoint: gateway.url });
    const store = new ReplicatedStore(
      blobs,
      await PgVersionIndex.open(db.url, { store: blobs.description }),
      {
        gcGraceMs: 0,
      },
    );
    /** Every blob a version names is in the bucket; returns the tags stored of this repository. */
    const whole = async () => {
      const versions = await store.versions();
      const need = await store.referenced(versions);
      const have = new Set<string>();
      for await (const b of new S3Blobs(location).list()) have.add(b.digest);
      expect([...need].filter((d) => !have.has(d))).toEqual([]);
      return {
        need,
        have,
        tags: versions.filter((v) => v.repository.endsWith('rgw/restart')).map((v) => v.tag),
      };
    };
    try {
      let ended = false;
      const running = sync(ctx, config, { store }).finally(() => {
        ended = true;
      });
      // The layer on its way to radosgw (its PUT seen by a proxy in front of it; the body streams as the
      // layer trickles in): the gateway dies.
      const hex = base.slice('sha256:'.length);
      for (let i = 0; !gateway.seen.some((r) => r.method === 'PUT' && r.path.includes(hex)); i++) {
        if (ended)
          throw new Error(`the sync ended before its upload was seen: ${JSON.stringify(await running)}`);
        if (i > 600) throw new Error("the layer's upload never began");
        await new Promise((r) => setTimeout(r, 100));
      }
      await s3.restartGateway(3000);
      // The sync ends on its own, the tag either stored (the upload retried) or failed, saying why.
      const report = await running;
      const tag = report.jobs[0]!.tags[0]!;
      expect(['fetched', 'failed']).toContain(tag.action);
      if (tag.action === 'failed') expect(tag.error).toMatch(/s3:\/\/stowage-replicas\//);
      await whole();
      // GC without grace: nothing is left that no version names, no upload half done.
      await new Promise((r) => setTimeout(r, 1100));
      await store.collectGarbage();
      const after = await whole();
      expect([...after.have].filter((d) => !after.need.has(d))).toEqual([]);
      expect((await uploads()).filter((k) => k.startsWith(location.prefix))).toEqual([]);
      // And the next sync completes it.
      const again = await sync(ctx, config, { store });
      expect(again.failed).toBe(0);
      expect((await whole()).tags).toEqual(repo.tags);
    } finally {
      admin.destroy();
      await store.close();
      await ctx.close();
      await proxy.close();
      await gateway.close();
    }
  }, 240_000);

  it('loses nothing when one replica prunes and collects while another syncs the same layers', async () => {
    // Layers trickle through a proxy, so a version's first blobs wait seconds in the bucket, named by
    // no version yet, while the other replica collects garbage again and again: only the grace period
    // (and the leases, for blobs still being written) keep them.
    const proxy = await startFaultProxy({
      upstream: `http://${plain.host}`,
      fault: (req) =>
        req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')
          ? { kind: 'trickle', bytes: 64 * 1024, everyMs: 20 }
          : undefined,
    });
    const w = await workdir('replicated-retention', insecureConf(plain.host, proxy.host));
    const repo = await buildTaggedRepo(join(w.dir, 'layout'), {
      count: 4,
      baseKiB: 512,
      ownKiB: 1024,
      seed: 'retention',
    });
    await pushTags(repo.layout, repo.tags, `${plain.host}/replicas/other`);
    // A's images: the same base layer, layers and configs of their own.
    const mine = await buildTaggedRepo(join(w.dir, 'layout-a'), {
      count: 4,
      baseKiB: 512,
      ownKiB: 1024,
      seed: 'retention',
      tagPrefix: '2.',
    });
    const ctx = await Context.create({ registriesConf: w.conf, env: w.env });
    const at = (prefix: string) => ({ ...location, prefix });
    const open = async (name: string, gcGraceMs: number) => {
      const blobs = new S3Blobs(at('retention/'));
      const index = await PgVersionIndex.open(db.url, { store: blobs.description });
      const leases = new BlobLeases(index.connections, blobs.description, name, 'leases');
      return new ReplicatedStore(blobs, index, { gcGraceMs, leases });
    };
    // The grace: longer than any one version's writes here.
    const a = await open('prune-a', 60_000);
    const b = await open('sync-b', 60_000);
    try {
      const configA = parseStowageConfig(
        `[retention]\nkeep-versions = 2\n\n[[job]]\nname = "moving"\nsource = "${proxy.host}/replicas/moving"\ntags = ["live"]\n`,
        'a.toml',
        w.env,
      );
      const configB = parseStowageConfig(
        `[[job]]\nname = "other"\nsource = "${plain.host}/replicas/other"\ntags = ${JSON.stringify(repo.tags)}\n`,
        'b.toml',
        w.env,
      );
      // A: the tag "live" moves four times, a sync each (retention keeps 2, then GC). B: syncs four
      // tags sharing their base layer with A's, then collects garbage until A is done.
      let aDone = false;
      const runA = (async () => {
        for (const tag of mine.tags) {
          await run('skopeo', [
            'copy',
            '--quiet',
            '--dest-tls-verify=false',
            `oci:${mine.layout}:${tag}`,
            `docker://${plain.host}/replicas/moving:live`,
          ]);
          expect((await sync(ctx, configA, { store: a })).failed).toBe(0);
        }
      })().finally(() => {
        aDone = true;
      });
      const runB = (async () => {
        expect((await sync(ctx, configB, { store: b })).failed).toBe(0);
        while (!aDone) {
          await b.collectGarbage();
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      await Promise.all([runA, runB]);
      const versions = await b.versions();
      expect(versions.filter((v) => v.repository.endsWith('/moving'))).toHaveLength(2);
      expect(versions.filter((v) => v.repository.endsWith('/other'))).toHaveLength(repo.tags.length);
      // Every blob of every version is there, and each version exports whole.
      for (const d of await b.referenced(versions)) expect(await b.hasBlob(d)).toBe(true);
      for (const v of versions) {
        const out = join(w.dir, `${v.id}.tar`);
        await exportVersion(a, v.id, { output: out });
        expect((await stowage(['verify', '-q', out], { env: w.env })).code).toBe(0);
      }
      // Once the writes are over, a collection without grace leaves nothing unreferenced.
      const sweeper = await open('sweeper', 0);
      try {
        await sweeper.collectGarbage();
        const keep = await sweeper.referenced(await sweeper.versions());
        const left: string[] = [];
        for await (const x of new S3Blobs(at('retention/')).list()) left.push(x.digest);
        expect(left.filter((d) => !keep.has(d))).toEqual([]);
        expect(left.length).toBe(keep.size);
      } finally {
        await sweeper.close();
      }
    } finally {
      await a.close();
      await b.close();
      await ctx.close();
      await proxy.close();
    }
  }, 180_000);

  it('is what stowage.toml names: sync, archives and export through [store.s3] and [server] database', async () => {
    const w = await workdir('replicated-cli', insecureConf(plain.host));
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      [
        '[store.s3]',
        `endpoint = "${s3.endpoint}"`,
        `bucket = "${location.bucket}"`,
        'prefix = "cli/"',
        '',
        '[server]',
        `database = "${db.url}"`,
        '',
        '[[job]]',
        'name = "small"',
        `source = "${plain.host}/fixtures/small"`,
        'tags = ["v1"]',
        '',
      ].join('\n'),
    );
    const env = { ...w.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    const synced = await stowage(['sync', '-q', '--config', config], { env });
    expect(synced.code, synced.stderr).toBe(0);
    const listed = JSON.parse((await stowage(['archives', '--json', '--config', config], { env })).stdout);
    const mine = listed.filter(
      (v: { repository: string }) => v.repository === `${plain.host}/fixtures/small`,
    );
    expect(mine).toHaveLength(1);
    const out = join(w.dir, 'exported.tar');
    const exported = await stowage(['archives', 'export', '-q', '--config', config, mine[0].id, '-o', out], {
      env,
    });
    expect(exported.code, exported.stderr).toBe(0);
    const pulled = join(w.dir, 'pulled.tar');
    expect(
      (await stowage(['pull', '-q', `${plain.host}/fixtures/small:v1`, '-o', pulled], { env })).code,
    ).toBe(0);
    expect(await readFile(out)).toEqual(await readFile(pulled));
    // Without the keys: a clear error naming where they come from, and no secret in it.
    const { AWS_SECRET_ACCESS_KEY: _, ...keyless } = env;
    const refused = await stowage(['archives', '--config', config], { env: keyless });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/AWS_SECRET_ACCESS_KEY/);
    expect(refused.stderr).not.toContain(s3.secretAccessKey);
  });

  it('stowage store migrate copies a local store into S3, digests, times and checksums intact, once', async () => {
    const w = await workdir('replicated-migrate', insecureConf(plain.host));
    const local = join(w.dir, 'local-store');
    const localConfig = join(w.dir, 'local.toml');
    await writeFile(
      localConfig,
      `[store]\npath = "${local}"\n\n[[job]]\nname = "small"\nsource = "${plain.host}/fixtures/small"\ntags = ["v1"]\n`,
    );
    expect((await stowage(['sync', '-q', '--config', localConfig], { env: w.env })).code).toBe(0);
    const localOut = join(w.dir, 'local.tar');
    const before = JSON.parse(
      (await stowage(['archives', '--json', '--config', localConfig], { env: w.env })).stdout,
    );
    expect(
      (
        await stowage(['archives', 'export', '-q', '--config', localConfig, before[0].id, '-o', localOut], {
          env: w.env,
        })
      ).code,
    ).toBe(0);
    const s3Config = join(w.dir, 's3.toml');
    await writeFile(
      s3Config,
      `[store.s3]\nendpoint = "${s3.endpoint}"\nbucket = "${location.bucket}"\nprefix = "migrated/"\n\n[server]\ndatabase = "${db.url}"\n`,
    );
    const env = { ...w.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    const first = await stowage(['store', 'migrate', '--from', local, '--config', s3Config, '--json'], {
      env,
    });
    expect(first.code, first.stderr).toBe(0);
    const report = JSON.parse(first.stdout);
    expect(report).toMatchObject({ versions: 1, added: 1 });
    expect(report.copied).toBe(report.blobs);
    const after = JSON.parse((await stowage(['archives', '--json', '--config', s3Config], { env })).stdout);
    // The same versions, the checksum the local export recorded included.
    const local2 = JSON.parse(
      (await stowage(['archives', '--json', '--config', localConfig], { env: w.env })).stdout,
    );
    expect(local2[0].archive.sha256).toBe(sha256(await readFile(localOut)));
    expect(after).toEqual(local2);
    const s3Out = join(w.dir, 's3.tar');
    const exported = await stowage(
      ['archives', 'export', '-q', '--config', s3Config, after[0].id, '-o', s3Out],
      { env },
    );
    expect(exported.code, exported.stderr).toBe(0);
    expect(sha256(await readFile(s3Out))).toBe(sha256(await readFile(localOut)));
    // Again: nothing to copy, nothing to add.
    const again = JSON.parse(
      (await stowage(['store', 'migrate', '--from', local, '--config', s3Config, '--json'], { env })).stdout,
    );
    expect(again).toMatchObject({ versions: 1, added: 0, copied: 0 });
    // Not a store: said so, nothing done.
    const wrong = await stowage(['store', 'migrate', '--from', w.dir, '--config', s3Config], { env });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain('is not a stowage store');
    // A configuration without S3: said so.
    const noS3 = await stowage(['store', 'migrate', '--from', local, '--config', localConfig], { env });
    expect(noS3.code).not.toBe(0);
    expect(noS3.stderr).toContain('[store.s3]');
  });

  it('stowage serve opens the shared store, says so in /readyz, and lists its versions (Node 22.12+; on Node 20 it says it needs a newer one)', async () => {
    const w = await workdir('replicated-serve', insecureConf(plain.host));
    const config = join(w.dir, 'stowage.toml');
    const state = join(w.dir, 'state');
    await writeFile(
      config,
      [
        '[store.s3]',
        `endpoint = "${s3.endpoint}"`,
        `bucket = "${location.bucket}"`,
        '',
        '[server]',
        `state = "${state}"`,
        `database = "${db.url}"`,
        '',
        '[[server.token]]',
        'name = "reader"',
        `sha256 = "${createHash('sha256').update(TOKENS.reader).digest('hex')}"`,
        'scopes = ["read"]',
        '',
      ].join('\n'),
    );
    const env = { ...w.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    if (!nodeRunsPgBoss()) {
      // Jobs shared through PostgreSQL need pg-boss, and so Node 22.12+: serve says so and stops.
      const refused = await stowage(['serve', '--config', config, '--listen', '127.0.0.1:0'], { env });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain(`needs Node ${PG_BOSS_NODE} or newer`);
      expect(refused.stderr).not.toContain(s3.secretAccessKey);
      return;
    }
    const service = await startService({
      dir: w.dir,
      env: { ...env, STOWAGE_REPLICA: 'solo' },
      config,
      store: '',
      state,
    });
    try {
      expect(await (await fetch(`${service.url}/readyz`)).json()).toEqual({
        status: 'ready',
        mode: { store: 's3', jobs: 'postgres', replica: 'solo' },
      });
      // What the first test synced through another replica, into the same bucket and prefix.
      const res = await fetch(`${service.url}/v1/archives`, {
        headers: { authorization: `Bearer ${TOKENS.reader}` },
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { archives: { repository: string }[] };
      expect(body.archives.map((a) => a.repository)).toContain(`${plain.host}/fixtures/multi`);
    } finally {
      expect(await service.stop()).toBe(0);
    }
  });
});
