/**
 * Full disks (issue 33): a store on a small tmpfs that fills up during a sync. The tag fails with an
 * error saying no space was left in the store, the store stays valid (`stowage verify`), nothing half
 * written is left once the next run has started, and the next sync completes once space is freed.
 * A service whose state directory fills: a docker-archive is refused naming the state directory (no
 * path), the oci-archive is still served, jobs still run. A mirror blob cache on a full disk: the
 * mirror still gets the image (the cache's write error took the process down before).
 * Tests run as root (as CI does), so they mount their own tmpfs.
 */
import { createHash } from 'node:crypto';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { api, serviceDir, startService, waitJob } from './harness/service.js';
import { withTmpfs } from './harness/tmpfs.js';

const h = harness();
const plain = h.registries.plain;

describe('a store on a full disk', () => {
  it('fails the tag saying so, verifies, and completes once space is freed', async () => {
    const w = await workdir('full-store', insecureConf(plain.host));
    await withTmpfs(join(w.dir, 'disk'), '320m', async (disk) => {
      const store = join(disk, 'store');
      const config = join(w.dir, 'stowage.toml');
      await writeFile(
        config,
        `[store]\npath = "${store}"\n\n[[job]]\nname = "large"\nsource = "${plain.host}/fixtures/large"\ntags = ["v1"]\n`,
      );
      // 300 MiB of the 320 taken: the 192 MiB image cannot fit.
      await run('dd', ['if=/dev/zero', `of=${join(disk, 'filler')}`, 'bs=1M', 'count=300', 'status=none']);
      const full = await stowage(['sync', '--config', config], { env: w.env });
      expect(full.code, full.stderr).toBe(13);
      expect(full.stdout).toMatch(
        /large\s+v1\s+failed\s.*no space left in the store .* while writing blob sha256:/,
      );
      expect((await stowage(['verify', `oci:${store}`], { env: w.env })).code).toBe(0);
      await rm(join(disk, 'filler'));
      const done = await stowage(['sync', '--json', '--config', config], { env: w.env });
      expect(done.code, done.stderr).toBe(0);
      expect(JSON.parse(done.stdout).jobs[0].tags[0]).toMatchObject({ action: 'fetched', archive: 'stored' });
      expect((await stowage(['verify', `oci:${store}`], { env: w.env })).code).toBe(0);
      // Nothing of the failed run is left in the store's scratch space.
      expect(await readdir(join(store, '.tmp'))).toEqual([]);
    });
  }, 120_000);
});

describe('a service whose state directory is full', () => {
  it('says so for what needs it, keeps serving downloads and jobs, and recovers once space is freed', async () => {
    const d = await serviceDir('full-state', insecureConf(plain.host));
    await withTmpfs(d.state, '8m', async (state) => {
      const service = await startService(d);
      try {
        const pulled = await api(service, 'puller', '/v1/pulls', {
          method: 'POST',
          json: { ref: `${plain.host}/fixtures/multi:v1` },
        });
        const job = await waitJob(service, ((await pulled.json()) as { id: string }).id);
        expect(job.state).toBe('succeeded');
        const id = (job.result as { archives: { id: string }[] }).archives[0]!.id;
        // The rest of the disk taken.
        await run('dd', ['if=/dev/zero', `of=${join(state, 'filler')}`, 'bs=64k', 'status=none']).catch(
          () => {},
        );

        // A docker-archive is made in the state directory: refused, saying why, naming no server path.
        const made = await api(service, 'reader', `/v1/archives/${id}/content?format=docker-archive`);
        expect(made.status).toBe(500);
        const { error } = (await made.json()) as { error: { code: string; message: string } };
        expect(error.code).toBe('IO');
        expect(error.message).toMatch(
          /no space left in the service's state directory \(\[server\] state\) while making the docker-archive of version [0-9a-f]{12}/,
        );
        expect(error.message).not.toContain(d.dir);
        expect(
          (await readdir(join(state, 'cache', id)).catch(() => [])).filter((n) => !n.endsWith('.sha256')),
        ).toEqual([]);
        // The oci-archive streams from the store: still served, whole.
        const oci = await api(service, 'reader', `/v1/archives/${id}/content`);
        expect(oci.status).toBe(200);
        const body = Buffer.from(await oci.arrayBuffer());
        expect(`sha256:${createHash('sha256').update(body).digest('hex')}`).toBe(
          oci.headers.get('etag')?.replaceAll('"', ''),
        );
        // Jobs still run into the store; the history that cannot be written is not the job's failure.
        const again = await api(service, 'puller', '/v1/pulls', {
          method: 'POST',
          json: { ref: `${plain.host}/fixtures/small:v1` },
        });
        expect(again.status).toBe(202);
        expect((await waitJob(service, ((await again.json()) as { id: string }).id)).state).toBe('succeeded');
        expect((await fetch(`${service.url}/readyz`)).status).toBe(200);

        // Space back: the docker-archive is made, and nothing of the failed attempt is in the way.
        await rm(join(state, 'filler'));
        const now = await api(service, 'reader', `/v1/archives/${id}/content?format=docker-archive`);
        expect(now.status).toBe(200);
        expect((await now.arrayBuffer()).byteLength).toBeGreaterThan(0);
      } finally {
        await service.stop();
      }
    });
  }, 120_000);
});

describe('a mirror blob cache on a full disk', () => {
  it('is passed by: the mirror gets the image whole, the cache keeps no partial file', async () => {
    // The mirror in another registry, so the layer passes through (within one it would be mounted).
    const tls = h.registries.tls;
    const w = await workdir('full-cache', insecureConf(plain.host, tls.host));
    await withTmpfs(join(w.dir, 'cache'), '4m', async (cache) => {
      const config = join(w.dir, 'stowage.toml');
      // The cache's bound is far above what its disk holds: the 192 MiB layer fills it partway.
      await writeFile(
        config,
        `[store]\npath = "${join(w.dir, 'store')}"\n\n[cache]\npath = "${join(cache, 'blobs')}"\nmax-size = "1GiB"\n\n[[job]]\nname = "large"\nsource = "${plain.host}/fixtures/large"\ntags = ["v1"]\nmirror = "${tls.host}/full-cache/large"\narchive = false\n`,
      );
      const r = await stowage(['sync', '--json', '--config', config], { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).jobs[0].tags[0]).toMatchObject({ action: 'fetched' });
      const mirrored = await run('skopeo', [
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${tls.host}/full-cache/large:v1`,
      ]);
      expect(`sha256:${createHash('sha256').update(mirrored.stdout).digest('hex')}`).toBe(
        h.fixtures.images.large!.digest,
      );
      expect((await readdir(join(cache, 'blobs'))).filter((n) => n.includes('partial'))).toEqual([]);
    });
  }, 120_000);
});
