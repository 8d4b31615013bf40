/**
 * Sync and the archive store against a real registry, through a counting proxy: 20 tags sharing a base
 * layer are fetched once each blob, stored once on disk; a second run makes only HEAD requests; a moved
 * tag adds a version; retention prunes exactly what the plan said and GC frees the space; an export
 * equals `stowage pull`; a sync killed midway leaves a store `stowage verify` accepts and the next run
 * completes; mirroring and archiving jobs run together; an unreachable source fails its job only.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { buildImage, Layout } from './harness/fixtures.js';
import { run } from './harness/processes.js';
import { buildTaggedRepo, pushTags, type TaggedRepo } from './harness/tagged-repo.js';
import { deadPort } from './harness/tools.js';

const h = harness();
const plain = h.registries.plain;
const proxies: FaultProxy[] = [];
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

let repo: TaggedRepo;
const REPO = `${plain.host}/sync/app`;

beforeAll(async () => {
  repo = await buildTaggedRepo(join(h.dir, 'tagged-repo'), {
    count: 20,
    baseKiB: 2048,
    ownKiB: 64,
    seed: 'sync',
  });
  await pushTags(repo.layout, repo.tags, REPO);
}, 120_000);

const blobGets = (p: FaultProxy, from = 0) =>
  p.seen.slice(from).filter((s) => s.method === 'GET' && /\/blobs\/sha256:/.test(s.path));
const manifestGets = (p: FaultProxy, from = 0) =>
  p.seen.slice(from).filter((s) => s.method === 'GET' && /\/manifests\//.test(s.path));

describe('sync', () => {
  it('fetches each blob once, stores it once, and a second run only asks HEAD', async () => {
    const proxy = await startFaultProxy({ upstream: plain.url });
    proxies.push(proxy);
    const w = await workdir('sync-20', insecureConf(plain.host, proxy.host));
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${store}"\n\n[[job]]\nname = "app"\nsource = "${proxy.host}/sync/app"\n`,
    );

    // The plan first: all 20 would be fetched, nothing is written.
    const plan = await stowage(['sync', '--json', '--dry-run', '--config', config], { env: w.env });
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout).jobs[0].tags.map((t: { action: string }) => t.action)).toEqual(
      Array(20).fill('would-fetch'),
    );
    // Nothing written means nothing fetched either: no blob, no manifest GET (HEADs only), no store.
    expect(blobGets(proxy)).toEqual([]);
    expect(proxy.seen.filter((q) => q.method === 'GET' && q.path.includes('/manifests/'))).toEqual([]);
    expect(proxy.seen.filter((q) => q.method === 'HEAD' && q.path.includes('/manifests/')).length).toBe(20);
    expect(await readdir(w.dir)).not.toContain('store');
    // A mirror's plan asks the source and the mirror about every tag, 16 requests at once on one abort
    // signal: no listener leak, and no warning that says there is one.
    const mirrorConfig = join(w.dir, 'mirror.toml');
    await writeFile(
      mirrorConfig,
      `[store]\npath = "${store}-m"\n\n[[job]]\nname = "app"\nsource = "${proxy.host}/sync/app"\narchive = false\nmirror = "${plain.host}/sync-plan/app"\n`,
    );
    const mirrorPlan = await stowage(['sync', '--json', '--dry-run', '--config', mirrorConfig], {
      env: w.env,
    });
    expect(mirrorPlan).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(mirrorPlan.stdout).jobs[0].tags.map((t: { mirror: string }) => t.mirror)).toEqual(
      Array(20).fill('would-push'),
    );

    const first = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(first.code, first.stderr).toBe(0);
    const report = JSON.parse(first.stdout);
    expect(report.failed).toBe(0);
    // Every distinct blob fetched exactly once, and nothing else.
    const fetched = blobGets(proxy).map((s) => s.path.split('/blobs/')[1]);
    expect(fetched.length).toBe(new Set(fetched).size);
    expect(new Set(fetched)).toEqual(new Set(repo.blobs.keys()));
    const unique = [...repo.blobs.values()].reduce((a, b) => a + b, 0);
    expect(report.fetchedBytes).toBe(unique);
    // On disk: the unique blobs plus 20 small manifests, within 10%.
    const df = JSON.parse((await stowage(['df', '--json', '--config', config], { env: w.env })).stdout);
    expect(df.diskBytes).toBeGreaterThanOrEqual(unique);
    expect(df.diskBytes).toBeLessThan(unique * 1.1);
    // 20 archives of about 2.1 MiB each, against about 3.4 MiB stored.
    expect(df.logicalBytes).toBeGreaterThan(df.diskBytes * 10);
    // skopeo reads the store as the OCI layout it is.
    const viaSkopeo = await run('skopeo', ['inspect', '--raw', `oci:${store}:${proxy.host}/sync/app:1.7.0`]);
    expect(`sha256:${createHash('sha256').update(viaSkopeo.stdout).digest('hex')}`).toBe(
      repo.digests.get('1.7.0'),
    );

    const mark = proxy.seen.length;
    const connectionsBefore = proxy.connections;
    const second = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(second.code, second.stderr).toBe(0);
    expect(
      JSON.parse(second.stdout).jobs[0].tags.every((t: { action: string }) => t.action === 'skipped'),
    ).toBe(true);
    expect(blobGets(proxy, mark)).toEqual([]);
    expect(manifestGets(proxy, mark)).toEqual([]);
    expect(proxy.seen.slice(mark).filter((s) => s.method === 'HEAD')).toHaveLength(20);
    // The HEADs share kept-alive connections (undici would close one after every HEAD): a few
    // connections for the tags checked at once, not one per tag.
    expect(proxy.connections - connectionsBefore).toBeLessThan(15);

    // An export is byte for byte what `stowage pull` writes for the same image.
    const exported = join(w.dir, 'export.tar');
    const pulled = join(w.dir, 'pull.tar');
    expect(
      (
        await stowage(
          ['archives', 'export', '-q', '--config', config, `${proxy.host}/sync/app:1.3.0`, '-o', exported],
          { env: w.env },
        )
      ).code,
    ).toBe(0);
    expect(
      (await stowage(['pull', '-q', `${proxy.host}/sync/app:1.3.0`, '-o', pulled], { env: w.env })).code,
    ).toBe(0);
    expect(await readFile(exported)).toEqual(await readFile(pulled));
    const listed = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    expect(listed.map((v: { tag: string }) => v.tag).sort()).toEqual([...repo.tags].sort());
    const v13 = listed.find((v: { tag: string }) => v.tag === '1.3.0');
    expect(v13.archive.sha256).toBe((await readFile(`${exported}.sha256`, 'utf8')).split(' ')[0]);
  });

  it('keeps the old version when a tag moves; retention prunes what the plan said; GC frees it', async () => {
    const w = await workdir('sync-move', insecureConf(plain.host));
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    const repoName = `${plain.host}/sync/moving`;
    await pushTags(repo.layout, ['1.0.0', '1.1.0'], repoName);
    await writeFile(
      config,
      `[store]\npath = "${store}"\n\n[[job]]\nname = "moving"\nsource = "${repoName}"\n`,
    );
    expect((await stowage(['sync', '-q', '--config', config], { env: w.env })).code).toBe(0);

    // Move 1.0.0 to a new image with a big layer of its own.
    const other = new Layout(join(w.dir, 'other'));
    await other.init();
    const img = await buildImage(other, {
      architecture: 'amd64',
      layers: [[{ type: 'file', name: 'new.bin', content: { seed: 'moved', size: 1024 * 1024 } }]],
    });
    await writeFile(
      join(w.dir, 'other', 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...img.manifest,
            annotations: { 'org.opencontainers.image.ref.name': 'moved' },
          },
        ],
      }),
    );
    await run('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${join(w.dir, 'other')}:moved`,
      `docker://${repoName}:1.0.0`,
    ]);
    const again = JSON.parse((await stowage(['sync', '--json', '--config', config], { env: w.env })).stdout);
    expect(again.jobs[0].tags.map((t: { tag: string; action: string }) => `${t.tag} ${t.action}`)).toEqual([
      '1.1.0 skipped',
      '1.0.0 fetched',
    ]);
    const versions = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    const of100 = versions.filter((v: { tag: string }) => v.tag === '1.0.0');
    expect(of100.map((v: { descriptor: { digest: string } }) => v.descriptor.digest)).toEqual([
      repo.digests.get('1.0.0'),
      img.manifest.digest,
    ]);
    // The old version is still readable by name@time; the new one by name.
    const index = JSON.parse(await readFile(join(store, 'index.json'), 'utf8'));
    const names = index.manifests.map(
      (m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name'],
    );
    expect(names).toContain(`${repoName}:1.0.0`);
    expect(names.some((n: string) => n.startsWith(`${repoName}:1.0.0@`))).toBe(true);

    // Retention: the newest version of each tag only. The plan names the old 1.0.0; the run prunes it.
    await writeFile(
      config,
      `[store]\npath = "${store}"\n[retention]\nkeep-versions = 1\n\n[[job]]\nname = "moving"\nsource = "${repoName}"\n`,
    );
    const before = JSON.parse((await stowage(['df', '--json', '--config', config], { env: w.env })).stdout);
    expect(before.reclaimable.versions).toBe(1);
    const plan = JSON.parse(
      (await stowage(['sync', '--json', '--dry-run', '--config', config], { env: w.env })).stdout,
    );
    expect(plan.jobs[0].pruned.map((p: { id: string }) => p.id)).toEqual([of100[0].id]);
    const pruned = JSON.parse((await stowage(['sync', '--json', '--config', config], { env: w.env })).stdout);
    expect(pruned.jobs[0].pruned).toEqual(plan.jobs[0].pruned);
    const after = JSON.parse((await stowage(['df', '--json', '--config', config], { env: w.env })).stdout);
    expect(before.diskBytes - after.diskBytes).toBe(before.reclaimable.bytes);
    expect(pruned.garbage.bytes).toBe(before.reclaimable.bytes);
    expect((await stowage(['verify', `oci:${store}`], { env: w.env })).code).toBe(0);
  });

  it('survives being killed midway: the store verifies and the next sync completes', async () => {
    // One tag's own layer never arrives; the sync is killed while it waits, other tags stored.
    const manifest = JSON.parse(
      await readFile(join(repo.layout, 'blobs', 'sha256', repo.digests.get('1.7.0')!.slice(7)), 'utf8'),
    );
    const stuck = manifest.layers[1].digest as string;
    let hangs = 0;
    let hanging = true;
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) =>
        hanging && req.method === 'GET' && (req.url ?? '').endsWith(stuck) && ++hangs > 0
          ? { kind: 'hang' }
          : undefined,
    });
    proxies.push(proxy);
    const w = await workdir('sync-kill', insecureConf(plain.host, proxy.host));
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${store}"\n\n[[job]]\nname = "app"\nsource = "${proxy.host}/sync/app"\n`,
    );
    const child = spawn(process.execPath, [BIN, 'sync', '-q', '-j', '1', '--config', config], {
      env: w.env,
      stdio: 'ignore',
    });
    // Killed once the hanging download has started and at least one version is in the store (its
    // line in the index journal, fsynced: index.json gets it when the run ends).
    const stored = async () =>
      (await readFile(join(store, 'index.journal'), 'utf8').catch(() => '')).split('\n').filter(Boolean)
        .length;
    for (let i = 0; i < 600 && (hangs < 1 || (await stored()) === 0); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(hangs).toBe(1);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    hanging = false;
    const verified = await stowage(['verify', `oci:${store}`], { env: w.env });
    expect(verified.code, verified.stdout).toBe(0);
    const partial = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    expect(partial.length).toBeGreaterThan(0);
    expect(partial.length).toBeLessThan(20);
    // A lock file left empty (a process killed between creating and writing it) is judged stale too.
    await writeFile(join(store, '.lock'), '');
    const old = new Date(Date.now() - 60_000);
    await utimes(join(store, '.lock'), old, old);
    const rest = JSON.parse((await stowage(['sync', '--json', '--config', config], { env: w.env })).stdout);
    expect(
      rest.failed,
      JSON.stringify(rest.jobs[0].tags.filter((t: { action: string }) => t.action === 'failed').slice(0, 2)),
    ).toBe(0);
    expect(rest.jobs[0].tags.filter((t: { action: string }) => t.action === 'skipped')).toHaveLength(
      partial.length,
    );
    expect(
      JSON.parse((await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout),
    ).toHaveLength(20);
  });

  it('mirrors one source to two registries fetching each blob once, through a bounded blob cache', async () => {
    const proxy = await startFaultProxy({ upstream: plain.url });
    proxies.push(proxy);
    const tls = h.registries.tls;
    const w = await workdir('sync-cache', insecureConf(plain.host, proxy.host, tls.host));
    const config = join(w.dir, 'stowage.toml');
    const cacheDir = join(w.dir, 'cache');
    const jobs = (bound: string, suffix: string, cachePath = `${cacheDir}-${suffix}`) =>
      [
        `[store]\npath = "${join(w.dir, 'store')}"`,
        `[cache]\npath = "${cachePath}"\nmax-size = "${bound}"`,
        `[[job]]\nname = "to-plain"\nsource = "${proxy.host}/sync/app"\ntags = ["1.0.0", "1.1.0"]\narchive = false\nmirror = "${plain.host}/cached-${suffix}/app"`,
        `[[job]]\nname = "to-tls"\nsource = "${proxy.host}/sync/app"\ntags = ["1.0.0", "1.1.0"]\narchive = false\nmirror = "${tls.host}/cached-${suffix}/app"`,
      ].join('\n\n');
    await writeFile(config, jobs('3MiB', 'a'));
    const r = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    for (const j of report.jobs)
      expect(j.tags.map((t: { mirror: string }) => t.mirror)).toEqual(['pushed', 'pushed']);
    // Two destinations, yet every blob came from the source once: the second job's came from the cache.
    const gets = blobGets(proxy).map((g) => g.path);
    expect(gets.length).toBeGreaterThan(0);
    expect(new Set(gets).size).toBe(gets.length);
    for (const dest of [`${plain.host}/cached-a/app:1.1.0`, `${tls.host}/cached-a/app:1.1.0`]) {
      const raw = await run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${dest}`]);
      expect(`sha256:${createHash('sha256').update(raw.stdout).digest('hex')}`).toBe(
        repo.digests.get('1.1.0'),
      );
    }
    const cached = await readdir(`${cacheDir}-a`);
    expect(cached.length).toBe(new Set(gets).size);
    // A bound smaller than the shared 2 MiB base layer: it is not kept (fetched once per job), the
    // small blobs are, and the cache stays within its bound. The blob locations the first sync learnt
    // are forgotten, or the second would mount every blob from cached-a and fetch none.
    await rm(join(w.env.HOME!, '.cache/stowage/locations'), { recursive: true });
    await writeFile(config, jobs('1MiB', 'b'));
    const from = proxy.seen.length;
    const r2 = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(r2.code, r2.stderr).toBe(0);
    const gets2 = blobGets(proxy, from).map((g) => g.path);
    expect(gets2.length).toBe(new Set(gets2).size + 1);
    let total = 0;
    for (const f of await readdir(`${cacheDir}-b`)) total += (await stat(join(`${cacheDir}-b`, f))).size;
    expect(total).toBeGreaterThan(0);
    expect(total).toBeLessThanOrEqual(1024 * 1024);
    // With both mirrors current there is nothing to send, and the cache is not even opened: a cache
    // path that cannot be one (a file) does not matter.
    const notADir = join(w.dir, 'not-a-dir');
    await writeFile(notADir, 'x');
    await writeFile(config, jobs('1MiB', 'b', notADir));
    const r3 = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(r3.code, r3.stderr).toBe(0);
    for (const j of JSON.parse(r3.stdout).jobs)
      expect(j.tags.map((t: { action: string }) => t.action)).toEqual(['skipped', 'skipped']);
    // When there is something to send, such a cache fails the tags that need it, saying what to do.
    await writeFile(config, jobs('1MiB', 'c', notADir));
    const r4 = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(r4.code).toBe(13);
    const failedJobs = JSON.parse(r4.stdout).jobs;
    expect(failedJobs.flatMap((j: { tags: unknown[] }) => j.tags)).toHaveLength(4);
    for (const j of failedJobs)
      for (const t of j.tags)
        expect(t.error).toMatch(/mirror blob cache .*not-a-dir cannot be used.*\[cache\] path/);
  });

  it('asks a mirror that drops every connection once for all tags, not once per batch of tags', async () => {
    let connections = 0;
    const dropping = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((r) => dropping.listen(0, '127.0.0.1', r));
    try {
      const port = (dropping.address() as { port: number }).port;
      const w = await workdir(
        'sync-mirror-down',
        `${insecureConf(plain.host)}\n[[registry]]\nlocation = "127.0.0.1:${port}"\ninsecure = true\n`,
      );
      const config = join(w.dir, 'stowage.toml');
      await writeFile(
        config,
        `[store]\npath = "${join(w.dir, 'store')}"\n\n[[job]]\nname = "m"\nsource = "${REPO}"\narchive = false\nmirror = "127.0.0.1:${port}/m/app"\n`,
      );
      const r = await stowage(['sync', '--json', '--retry-times', '0', '--config', config], { env: w.env });
      expect(r.code).toBe(13);
      const tags = JSON.parse(r.stdout).jobs[0].tags;
      // All 20 tags (more than are checked at once) fail with the mirror's error ...
      expect(tags).toHaveLength(20);
      for (const t of tags) expect(t.error).toMatch(new RegExp(`registry 127\\.0\\.0\\.1:${port}`));
      // ... from one attempt at it (HTTPS, then HTTP, as it is insecure), not one per batch of tags.
      expect(connections).toBeGreaterThan(0);
      expect(connections).toBeLessThanOrEqual(2);
    } finally {
      await new Promise((r) => dropping.close(r));
    }
  });

  it('fetches a blob once per run across jobs: two archiving jobs, and an archiving and a mirroring one', async () => {
    const proxy = await startFaultProxy({ upstream: plain.url });
    proxies.push(proxy);
    const w = await workdir('sync-shared', insecureConf(plain.host, proxy.host));
    const config = join(w.dir, 'stowage.toml');
    const src = `${proxy.host}/sync/app`;
    await writeFile(
      config,
      [
        `[store]\npath = "${join(w.dir, 'store')}"`,
        `[cache]\npath = "${join(w.dir, 'cache')}"`,
        // 1.0.0 and 1.1.0 share their base layer; the mirroring job sends 1.0.0 again.
        `[[job]]\nname = "a"\nsource = "${src}"\ntags = ["1.0.0"]`,
        `[[job]]\nname = "b"\nsource = "${src}"\ntags = ["1.1.0"]`,
        `[[job]]\nname = "m"\nsource = "${src}"\ntags = ["1.0.0"]\narchive = false\nmirror = "${plain.host}/shared-mirror/app"`,
      ].join('\n\n'),
    );
    const r = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.jobs.map((j: { tags: { action: string }[] }) => j.tags[0]!.action)).toEqual([
      'fetched',
      'fetched',
      'fetched',
    ]);
    const gets = blobGets(proxy).map((g) => g.path);
    expect(gets.length).toBeGreaterThan(3);
    expect(gets.length).toBe(new Set(gets).size);
    const raw = await run('skopeo', [
      'inspect',
      '--tls-verify=false',
      '--raw',
      `docker://${plain.host}/shared-mirror/app:1.0.0`,
    ]);
    expect(`sha256:${createHash('sha256').update(raw.stdout).digest('hex')}`).toBe(repo.digests.get('1.0.0'));
  });

  it('runs a mirroring job and an archiving job together; an unreachable source fails its job only', async () => {
    const dead = await deadPort();
    const w = await workdir(
      'sync-jobs',
      `${insecureConf(plain.host)}\n[[registry]]\nlocation = "127.0.0.1:${dead}"\ninsecure = true\n`,
    );
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      [
        `[store]\npath = "${store}"\nmaterialize = "${join(w.dir, 'tarballs')}"`,
        `[[job]]\nname = "archive"\nsource = "${REPO}"\nsemver = ">=1.10.0"\nnewest = 3`,
        `[[job]]\nname = "mirror"\nsource = "${REPO}"\ntags = ["1.0.0", "1.1.0"]\narchive = false\nmirror = "${plain.host}/mirrored/app"`,
        `[[job]]\nname = "down"\nsource = "127.0.0.1:${dead}/gone/app"\ntags = ["1"]`,
      ].join('\n\n'),
    );
    const r = await stowage(['sync', '--json', '--retry-times', '0', '--config', config], { env: w.env });
    expect(r.code).toBe(13);
    const report = JSON.parse(r.stdout);
    const byName = Object.fromEntries(report.jobs.map((j: { name: string }) => [j.name, j]));
    expect(byName.archive.tags.map((t: { tag: string; archive: string }) => `${t.tag} ${t.archive}`)).toEqual(
      ['1.19.0 stored', '1.18.0 stored', '1.17.0 stored'],
    );
    expect(byName.mirror.tags.map((t: { tag: string; mirror: string }) => `${t.tag} ${t.mirror}`)).toEqual([
      '1.1.0 pushed',
      '1.0.0 pushed',
    ]);
    expect(byName.down.tags[0].action).toBe('failed');
    expect(byName.down.tags[0].error).toMatch(/cannot reach registry 127\.0\.0\.1:\d+/);
    const mirrored = await run('skopeo', [
      'inspect',
      '--tls-verify=false',
      '--raw',
      `docker://${plain.host}/mirrored/app:1.1.0`,
    ]);
    expect(`sha256:${createHash('sha256').update(mirrored.stdout).digest('hex')}`).toBe(
      repo.digests.get('1.1.0'),
    );
    const archived = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    expect(archived).toHaveLength(3);
    // materialize: each new version also as a tarball, its checksum beside it and recorded in the store.
    for (const t of byName.archive.tags) {
      const v = archived.find((x: { tag: string }) => x.tag === t.tag);
      expect(t.file).toBe(
        join(
          w.dir,
          'tarballs',
          REPO.replace(/[:/]/g, '_'),
          `${t.tag}@${v.descriptor.digest.slice(7, 19)}.tar`,
        ),
      );
      const line = await readFile(`${t.file}.sha256`, 'utf8');
      expect(line.split(' ')[0]).toBe(
        createHash('sha256')
          .update(await readFile(t.file))
          .digest('hex'),
      );
      expect(v.archive.sha256).toBe(line.split(' ')[0]);
    }
    // The mirror is current now: the next run of that job is HEADs only.
    const again = JSON.parse(
      (await stowage(['sync', '--json', '--config', config, 'mirror'], { env: w.env })).stdout,
    );
    expect(again.jobs[0].tags.map((t: { mirror: string }) => t.mirror)).toEqual(['current', 'current']);
    // A job name that does not exist is refused.
    const bad = await stowage(['sync', '--config', config, 'nope'], { env: w.env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('no job named nope');
  });
});
